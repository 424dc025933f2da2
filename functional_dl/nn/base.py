"""The layer contract, stated once, and the kit every layer is written with.

A **layer** is a pair of pure functions::

    init(key, input_shape)                      -> (output_shape, params)
    apply(params, x, *, key=None, train=False)  -> y

* ``input_shape`` includes the batch axis, which may be unknown (``-1``); ``init`` never
  looks at the batch size, so the output shape keeps the ``-1``.
* ``params`` is a dict with readable names (``{"w": ..., "b": ...}``; ``serial`` keys its
  children's by name and count: ``{"dense_0": {...}}``); a layer without parameters
  returns ``{}``.
* ``key`` is used only by random layers (``Dropout``) and only when ``train=True``;
  ``train`` is a Python bool (static under ``jit``: close over it or mark it static).
* ``apply`` also takes ``rng=`` as another name for ``key=`` (the keyword stax's
  combinators pass), so every layer nests inside ``jax.example_libraries.stax``; other
  keywords (sequence ``lengths``, a mask) pass through to the layer's own ``apply``.
* ``apply`` is pure: it works under ``jit``, ``grad`` and ``vmap``.

:class:`Layer` is a tuple of two items, so it unpacks like stax's pair
(``init, apply = nn.Dense(10)``), and it carries the ``name`` that ``serial`` gives its
params (``"dense"`` -> ``"dense_0"``, ``"dense_1"``, ...).  Constructing one wraps ``apply``
so that it takes ``rng=`` and checks ``key`` and ``train``: a layer author writes only the
computation.  :func:`as_layer` turns any other ``(init, apply)`` pair (a stax layer, a
hand-written pair) into a ``Layer``.

Parameterized layers take keyword-only ``dtype=None`` (the computation dtype; ``None``
promotes the input with the parameters as ``jnp`` does) and ``param_dtype=None`` (the
parameters' dtype; ``None`` is the default float at ``init`` time): ``dtype=jnp.bfloat16``
computes in bfloat16 from float32 parameters.  :func:`dtype_options` and :func:`promote`
implement that; :func:`check_input_shape`, :func:`check_input` and :func:`check_params`
give the messages that name the layer and the shape it expects.

A layer with state besides its params (``BatchNorm``'s running statistics) is a
``StatefulLayer`` on a wider contract, ``init -> (output_shape, params, state)`` and
``apply(params, x, *, state, key, train) -> (y, new_state)``: :mod:`functional_dl.nn.state`.
"""
from __future__ import annotations

import functools
import inspect
import weakref
from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, Shape

__all__ = [
    "Layer", "as_layer", "named",
    "check_input_shape", "check_input", "check_params", "dtype_options", "promote",
]

# Applies already wrapped by ``_public_apply`` (so re-wrapping a layer is a no-op).
_PUBLIC_APPLIES: "weakref.WeakSet[Callable]" = weakref.WeakSet()


def _key_from(owner: str, key: Any, rng: Any) -> Optional[PRNGKey]:
    """``key`` or its stax spelling ``rng`` (not both), checked to be a PRNG key."""
    if rng is not None:
        if key is not None:
            raise ValueError(f"{owner}: pass the PRNG key as key= or as rng= (its stax "
                             f"name), not both")
        key = rng
    checks.prng_key(f"{owner}: key", key, allow_none=True)
    return key


def _check_train(owner: str, train: Any) -> None:
    """TypeError unless ``train`` is a bool (it selects the computation: static under jit)."""
    if not isinstance(train, (bool, np.bool_)):
        raise TypeError(f"{owner}: train must be a Python bool (it selects the computation, "
                        f"so it is static under jit), got {checks.describe(train)}")


def _public_apply(apply: Callable, name: str) -> Callable:
    """``apply`` taking ``rng=`` too, with ``key`` and ``train`` checked."""
    if apply in _PUBLIC_APPLIES:
        return apply

    @functools.wraps(apply)
    def public_apply(params, x, *, key=None, train=False, rng=None, **options):
        key = _key_from(name, key, rng)
        _check_train(name, train)
        return apply(params, x, key=key, train=bool(train), **options)
    _PUBLIC_APPLIES.add(public_apply)
    return public_apply


class Layer(tuple):
    """``(init, apply)`` with a ``name``: the layer contract of the module docstring."""

    def __new__(cls, init: Callable, apply: Callable, name: str = "layer"):
        if not (callable(init) and callable(apply)):
            raise TypeError(f"Layer needs callable init and apply, got "
                            f"{checks.describe(init)} and {checks.describe(apply)}")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"Layer: name must be a Python identifier such as 'dense', "
                             f"got {name!r}")
        pair = super().__new__(cls, (init, cls._public_apply(apply, name)))
        pair.__dict__["name"] = name
        return pair

    # the wrapper of ``apply`` (``nn.state.StatefulLayer`` has its own, that asks for the state)
    _public_apply = staticmethod(_public_apply)

    def __setattr__(self, attribute, value):
        raise AttributeError("Layer is immutable; use nn.named(name, layer)")

    def __getnewargs__(self):
        return tuple(self) + (self.name,)

    @property
    def init(self) -> Callable:
        return self[0]

    @property
    def apply(self) -> Callable:
        return self[1]

    def __repr__(self) -> str:
        return f"Layer(name={self.name!r})"


def _foreign_apply(apply: Callable) -> Callable:
    """``apply`` called with the keywords its signature takes: ``key=`` (this package's
    convention) or ``rng=`` (stax's), and ``train=``; other keywords pass through."""
    try:
        parameters = inspect.signature(apply).parameters
    except (TypeError, ValueError):  # some builtins have no signature: pass nothing
        parameters = {}
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def takes(word: str) -> bool:
        parameter = parameters.get(word)
        named_ok = parameter is not None and parameter.kind in (
            inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return named_ok or any_keyword

    key_word = "key" if "key" in parameters else ("rng" if takes("rng") else None)
    pass_train = takes("train")

    def apply_foreign(params, x, *, key=None, train=False, **options):
        if pass_train:
            options["train"] = train
        if key_word is not None:
            options[key_word] = key
        return apply(params, x, **options)
    return apply_foreign


def as_layer(layer: Any, name: Optional[str] = None, *, owner: str = "as_layer") -> Layer:
    """``layer`` as a :class:`Layer` (itself when it already is one and ``name`` is None).

    Any other ``(init, apply)`` pair becomes a ``Layer`` named ``name`` (default
    ``"layer"``); its apply is called as :func:`_foreign_apply` says.  A foreign layer's own
    options stay as it was built: ``stax.Dropout(rate, mode)`` gets its key here but keeps
    its ``mode`` (and its ``rate`` is the *keep* probability), so build it with
    ``mode="test"`` for evaluation; ``train=`` does not reach it.
    """
    if isinstance(layer, Layer):   # type(layer): a stateful layer stays stateful
        return layer if name is None else type(layer)(layer.init, layer.apply, name)
    if not (isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer))):
        raise TypeError(f"{owner} must be an (init, apply) pair of functions, got "
                        f"{checks.describe(layer)}")
    init, apply = layer
    return Layer(init, _foreign_apply(apply), "layer" if name is None else name)


def named(name: str, layer: Any) -> Layer:
    """The same layer called ``name`` (its entries in ``serial``: ``name_0``, ``name_1``...)."""
    return as_layer(layer, name, owner="named: layer")


# ------------------------------------------------------------------ checks for layer authors


def check_input_shape(owner: str, input_shape: Any, *, ranks: Optional[Sequence[int]] = None,
                      min_rank: int = 1, known_from: Optional[int] = None,
                      layout: str = "") -> Shape:
    """``input_shape`` as a tuple of ints (sizes >= 1, or -1 for unknown).

    ``ranks``/``min_rank`` bound its length (the message shows ``layout``, e.g.
    ``"NHWC (N, H, W, C)"``); ``known_from`` asks the axes from that index on to be known
    (``1``: all but the batch axis, ``-1``: the last one).
    """
    try:
        shape = tuple(int(size) for size in input_shape)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{owner}: input_shape must be a tuple of ints, got "
                        f"{input_shape!r}") from error
    if len(shape) < min_rank or (ranks is not None and len(shape) not in ranks):
        expected = layout or f"at least {min_rank} axes"
        raise ValueError(f"{owner}: input_shape must be {expected}, got {shape}")
    if any(size < 1 and size != -1 for size in shape):
        raise ValueError(f"{owner}: input_shape sizes must be positive (or -1 for unknown), "
                         f"got {shape}")
    if known_from is not None and any(size == -1 for size in shape[known_from:]):
        which = {1: "only the batch axis of input_shape may be unknown (-1)",
                 -1: "the last axis of input_shape must be known"}.get(
                     known_from, f"input_shape axes from {known_from} on must be known")
        raise ValueError(f"{owner}: {which}, got {shape}")
    return shape


def check_input(owner: str, x: Any, *, layout: str, ranks: Optional[Sequence[int]] = None,
                min_rank: int = 1, features: Optional[int] = None) -> None:
    """ValueError naming ``owner`` and the expected shape (``layout``, where ``{features}``
    stands for the size the last axis must have) unless ``x`` fits."""
    shape = tuple(jnp.shape(x))
    fits = (len(shape) >= min_rank and (ranks is None or len(shape) in ranks)
            and (features is None or (shape and shape[-1] == features)))
    if not fits:
        raise ValueError(f"{owner}: x must have shape {layout.format(features=features)}, "
                         f"got shape {shape}")


def check_params(owner: str, params: Any, names: Sequence[str], kind: str) -> None:
    """ValueError unless ``params`` is a dict holding ``names`` (``kind`` is the layer's
    name, for the hint about its entry inside ``serial``)."""
    if not (isinstance(params, dict) and set(names) <= set(params)):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{owner}: params must be a dict with keys {sorted(names)} (inside "
                         f"serial: is this layer's '{kind}_i' entry missing?), got {got}")


def dtype_options(owner: str, dtype: Any, param_dtype: Any) -> tuple[Any, Any]:
    """``(dtype, param_dtype)`` checked to be floating dtypes; ``None`` stays ``None``."""
    def resolve(value, name):
        return None if value is None else checks.float_dtype(value, name=f"{owner}: {name}")
    return resolve(dtype, "dtype"), resolve(param_dtype, "param_dtype")


def promote(dtype: Any, *arrays: Array) -> tuple[Array, ...]:
    """``arrays`` cast to ``dtype``, or to their common ``jnp.result_type`` when None."""
    target = jnp.result_type(*arrays) if dtype is None else dtype
    return tuple(jnp.asarray(array).astype(target) for array in arrays)


def matmul_features(x: Array, w: Array) -> Array:
    """``y = x W`` over the last axis: ``(..., n) · (n, m) -> (..., m)``, formed as one 2-D
    product ``(N, n) · (n, m)`` with ``N`` the product of the leading axes.

    The same numbers as ``x @ w``, but its gradient ``∂W = xᵀ ∂y`` is a plain 2-D product
    too: for ``x`` of rank 3, XLA:CPU (jax 0.10) transposes ``∂y`` and runs ``∂W`` off its
    fast matrix kernels, which made the backward pass of a ``(32, 128, 256) · (256, 1024)``
    layer 2.1× slower than the 2-D one (``benchmarks/mlp.py``'s transformer row).
    """
    if jnp.ndim(x) <= 2:
        return x @ w
    rows = int(np.prod(jnp.shape(x)[:-1]))
    return (x.reshape(rows, jnp.shape(x)[-1]) @ w).reshape(jnp.shape(x)[:-1] + (w.shape[-1],))
