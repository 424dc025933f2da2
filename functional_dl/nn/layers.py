"""Stax-style layers as pure functions: ``Layer(init, apply)``.

The contract, stated once:

    init(key, input_shape)                      -> (output_shape, params)
    apply(params, x, *, key=None, train=False)  -> y

* ``input_shape`` includes the batch axis, which may be unknown: ``(-1, 64)``.  ``init``
  never looks at the batch size, so the output shape keeps the ``-1``.
* ``params`` is a dict with readable names (``{"w": ..., "b": ...}``); layers without
  parameters return ``{}``.
* ``key`` is only used by random layers (``Dropout``) and only when ``train=True``;
  ``train`` is a Python bool (static under ``jit``: close over it or mark it static).
* ``apply`` is a pure function of its arguments: it works under ``jit``, ``grad`` and
  ``vmap``.  Dense layers and activations act on the last axis and accept any leading axes
  (a single example ``(n_in,)`` included), so ``vmap`` over examples works directly.

``Layer`` (:mod:`functional_dl.nn.base`) is a pair that unpacks like stax's,
``init, apply = Dense(10)``, and carries the ``name`` its params get inside ``serial``.
Layer factories (``Dense``, ``Dropout``) are called.  The activations (functions ``relu``,
``elu``, ... and layers ``Relu``, ``Elu``, ...) live in :mod:`functional_dl.nn.activations`
and are importable from here too.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn import initializers
from functional_dl.nn.activations import (  # noqa: F401  (re-exported: their old home)
    ACTIVATIONS, Celu, Elu, Gelu, Glu, HardTanh, LeakyRelu, LogSigmoid, LogSoftmax, Relu,
    Relu6, Selu, Sigmoid, Silu, Softmax, Softplus, Swish, Tanh, celu, elementwise, elu, gelu,
    glu, hard_tanh, leaky_relu, log_sigmoid, log_softmax, relu, relu6, selu, sigmoid, silu,
    softmax, softplus, swish, tanh)
from functional_dl.nn.base import Layer, dtype_options, matmul_features, named, promote

__all__ = [
    "Layer",
    "named",
    "layer_name",
    "Dense",
    "Dropout",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Gelu",
    "Softmax",
    "LogSoftmax",
    "relu",
    "sigmoid",
    "tanh",
    "gelu",
    "softmax",
    "log_softmax",
    "elementwise",
    "ACTIVATIONS",
    "Elu", "LeakyRelu", "Selu", "Silu", "Swish", "Softplus", "HardTanh", "LogSigmoid",
    "Celu", "Glu", "Relu6",
    "elu", "leaky_relu", "selu", "silu", "swish", "softplus", "hard_tanh", "log_sigmoid",
    "celu", "glu", "relu6",
]


def layer_name(layer: Layer) -> str:
    """The name ``serial`` gives ``layer``'s params (``"layer"`` for a foreign pair)."""
    return layer.name if isinstance(layer, Layer) else "layer"


def _is_positive_int(value) -> bool:
    """A Python or NumPy integer ``>= 1`` (``bool`` excluded)."""
    return (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
            and value >= 1)


def _check_input_shape(name: str, input_shape: Shape, min_rank: int = 1) -> Shape:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: input_shape must be a tuple of ints, "
                        f"got {input_shape!r}") from error
    if len(shape) < min_rank:
        raise ValueError(f"{name}: input_shape must have at least {min_rank} axes, got {shape}")
    if any(s < 1 and s != -1 for s in shape):
        raise ValueError(f"{name}: input_shape sizes must be positive (or -1 for unknown), "
                         f"got {shape}")
    return shape


# ---------------------------------------------------------------------------- Dense


def Dense(features: int, w_init: Optional[Callable] = None,
          b_init: Optional[Callable] = None, *, dtype: Any = None,
          param_dtype: Any = None) -> Layer:
    """Fully connected layer ``y = x W + b`` on the last axis.

    ``x``: ``(..., n_in)``; ``W``: ``(n_in, features)``; ``b``: ``(features,)``;
    ``y``: ``(..., features)`` (``features`` is ``Conv2D``'s name for its output size too).
    Params: ``{"w": W, "b": b}``.  Defaults: ``w_init = glorot_normal()``,
    ``b_init = zeros()``.

    ``param_dtype``: the dtype ``init`` stores ``W`` and ``b`` in (``None``: the
    initializers' default float; given, it is passed to them as ``init(key, shape, dtype)``).
    ``dtype``: the dtype of the computation and of ``y``; ``x``, ``W`` and ``b`` are cast
    to it first (``None``: their ``jnp`` promotion).  ``dtype=jnp.bfloat16`` with float32
    params is mixed precision: bfloat16 products, float32 params for the optimizer.
    This is ``torch.nn.Linear(n_in, features)`` with ``weight = Wᵀ``, ``bias = b``.
    """
    if not _is_positive_int(features):
        raise ValueError(f"Dense: features must be a positive int, got {features!r}")
    features = int(features)
    dtype, param_dtype = dtype_options("Dense", dtype, param_dtype)
    w_init = initializers.glorot_normal() if w_init is None else w_init
    b_init = initializers.zeros() if b_init is None else b_init
    # a hand-written init(key, shape) keeps working when no param_dtype is asked for
    dtype_argument = () if param_dtype is None else (param_dtype,)

    def init(key: PRNGKey, input_shape: Shape):
        shape = _check_input_shape("Dense", input_shape)
        if shape[-1] == -1:
            raise ValueError(f"Dense: the last axis of input_shape must be known, got {shape}")
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, (shape[-1], features), *dtype_argument),
                  "b": b_init(b_key, (features,), *dtype_argument)}
        return shape[:-1] + (features,), params

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del key, train
        if not (isinstance(params, dict) and {"w", "b"} <= set(params)):
            raise ValueError("Dense: params must be a dict {'w': W, 'b': b} (inside serial/mlp: "
                             "is this layer's 'dense_i' entry missing?), got "
                             f"{sorted(params) if isinstance(params, dict) else type(params)}")
        w, b = params["w"], params["b"]
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != w.shape[0]:
            raise ValueError(f"Dense: x must have shape (..., {w.shape[0]}) to match w of "
                             f"shape {w.shape}, got x shape {jnp.shape(x)}")
        x, w, b = promote(dtype, x, w, b)
        y = matmul_features(x, w)
        return y + jnp.broadcast_to(b, y.shape)

    return Layer(init, apply, "dense")


# -------------------------------------------------------------------------- Dropout


def Dropout(rate: float) -> Layer:
    """Inverted dropout; ``rate`` is the probability of **dropping** a unit.

    With ``train=True``: ``y = m ⊙ x / (1 - rate)``, ``m_i ~ Bernoulli(1 - rate)`` drawn
    from ``key`` (required unless ``rate = 0``), so ``E[y] = x``.  With ``train=False``:
    ``y = x`` (no rescaling at test time: training already divided by the keep
    probability).
    The mask has the full shape of ``x``; under ``vmap`` over examples, give each example
    its own key (``jax.random.split``), otherwise they all share one mask.

    This is standard inverted dropout (Srivastava et al., 2014): it adds no loss term, and
    the gradient flows through the kept units only, scaled by ``1 / (1 - rate)``.
    """
    if (isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real)
            or not 0 <= rate < 1):
        raise ValueError(f"Dropout: rate (the drop probability) must be a number in [0, 1), "
                         f"got {rate!r}")
    rate = float(rate)
    keep = 1.0 - rate

    def init(key: PRNGKey, input_shape: Shape):
        del key
        return _check_input_shape("Dropout", input_shape), {}

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del params
        if not train or rate == 0:
            return x
        if key is None:
            raise ValueError("Dropout: a PRNG key is needed when train=True; "
                             "pass key=jax.random.key(0) (or train=False for evaluation)")
        kept = jax.random.bernoulli(key, keep, jnp.shape(x))
        return jnp.where(kept, x / keep, jnp.zeros_like(x))

    return Layer(init, apply, "dropout")
