"""Model state: layers that carry arrays between calls besides their parameters.

Most layers are functions of ``(params, x)`` and stay exactly as :mod:`functional_dl.nn.base`
states them.  A few keep **state** that is not trained by gradients but updated by the
forward pass itself: ``BatchNorm``'s running mean and variance.  Such a layer is a
:class:`StatefulLayer`, a :class:`~functional_dl.nn.base.Layer` with a wider contract::

    init(key, input_shape)                             -> (output_shape, params, state)
    apply(params, x, *, state, key=None, train=False)  -> (y, new_state)

* ``state`` is a pytree of arrays (a dict with readable names, ``{"mean", "var"}``); it is
  passed in and returned, never stored: ``apply`` stays pure, so it jits, vmaps and shards
  like a stateless layer, and the caller decides what to keep.
* ``new_state`` has the structure, shapes and dtypes of ``state``.  With ``train=False`` a
  layer returns its state unchanged (evaluation does not move the running statistics).
* ``state`` is keyword-only and required: calling a stateful layer's ``apply`` without it
  (as a stateless combinator, ``stax.serial`` or a hand-written loop would) is a
  ``TypeError`` that says so, never a result computed from some default statistics.

Combinators (``serial``, ``parallel``, ``Residual``) are stateful exactly when one of their
layers is; then they thread the state through their layers and key it by the same names as
the params: ``{"batch_norm_0": {"mean", "var"}, "residual_0": {"batch_norm_0": ...}}``.
Layers without state get no entry (as parameter-free layers get no params entry), so a
model without stateful layers is built, called and trained exactly as before.  A state
that misses an entry reaches its layer as ``{}`` and the layer's check names the entry.

Training with state (``functional_dl.train``): the loss takes and returns it,
``loss_fn(params, model_state, batch, key) -> (loss, new_model_state)``, and
``make_train_step(..., has_state=True)``, ``evaluate(..., model_state=...)`` and
``fit(..., model_state=...)`` carry it; gradients flow into ``params`` only.

:func:`is_stateful` tells the two kinds apart; :func:`as_stateful` lifts a stateless layer
to the stateful contract (state ``{}``), for code that handles both alike.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn.base import Layer, _check_train, _key_from, as_layer

__all__ = ["StatefulLayer", "is_stateful", "as_stateful", "check_state"]

_MISSING = object()
_STATEFUL_APPLIES: "weakref.WeakSet[Callable]" = weakref.WeakSet()


def _missing_state(name: str) -> TypeError:
    return TypeError(
        f"{name} is a stateful layer: call apply(params, x, state=state, key=..., train=...) "
        f"with the state its init returned (init gives (output_shape, params, state)); it "
        f"returns (y, new_state).  Inside stax or another stateless combinator it cannot get "
        f"its state: build the model with nn.serial / nn.parallel / nn.Residual")


def _stateful_public_apply(apply: Callable, name: str) -> Callable:
    """``apply`` requiring ``state=``, taking ``rng=`` too, with ``key``, ``train`` and the
    ``(y, new_state)`` result checked."""
    if apply in _STATEFUL_APPLIES:
        return apply

    @functools.wraps(apply)
    def public_apply(params, x, *, state=_MISSING, key=None, train=False, rng=None,
                     **options):
        if state is _MISSING or state is None:
            raise _missing_state(name)
        key = _key_from(name, key, rng)
        _check_train(name, train)
        out = apply(params, x, state=state, key=key, train=bool(train), **options)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{name}: a stateful layer's apply must return (y, new_state), "
                            f"got {checks.describe(out)}")
        return out
    _STATEFUL_APPLIES.add(public_apply)
    return public_apply


class StatefulLayer(Layer):
    """``(init, apply)`` with a ``name``, on the stateful contract of the module docstring."""

    _public_apply = staticmethod(_stateful_public_apply)

    def __repr__(self) -> str:
        return f"StatefulLayer(name={self.name!r})"


def is_stateful(layer: Any) -> bool:
    """Whether ``layer`` follows the stateful contract (a :class:`StatefulLayer`)."""
    return isinstance(layer, StatefulLayer)


def as_stateful(layer: Any) -> StatefulLayer:
    """``layer`` on the stateful contract: itself if stateful, else with state ``{}``.

    The lifted init returns ``(output_shape, params, {})`` and the lifted apply
    ``(layer.apply(params, x, key=key, train=train), state)``.
    """
    if is_stateful(layer):
        return layer
    layer = as_layer(layer, owner="as_stateful: layer")

    def init(key: PRNGKey, input_shape: Shape):
        output_shape, params = layer.init(key, input_shape)
        return output_shape, params, {}

    def apply(params: PyTree, x: Array, *, state: PyTree, key=None, train=False, **options):
        return layer.apply(params, x, key=key, train=train, **options), state

    return StatefulLayer(init, apply, layer.name)


def check_state(owner: str, state: Any, names, kind: str) -> None:
    """ValueError unless ``state`` is a dict holding ``names`` (``kind`` is the layer's name,
    for the hint about its entry inside ``serial``)."""
    if not (isinstance(state, dict) and set(names) <= set(state)):
        got = sorted(state) if isinstance(state, dict) else checks.describe(state)
        raise ValueError(f"{owner}: state must be a dict with keys {sorted(names)} (the state "
                         f"its init returned; inside serial: is this layer's '{kind}_i' entry "
                         f"missing?), got {got}")
