"""Weight initializers: factories that return ``init(key, shape, dtype=None) -> Array``.

``dtype=None`` means the default float: float32, or float64 inside ``jax.enable_x64(True)``.

Every name here is a factory (call it, then hand the result to a layer), e.g.
``Dense(128, w_init=he_normal(), b_init=zeros())``.

Fan sizes follow the usual convention for a weight of shape ``(..., n_in, n_out)``: the
last axis is the output, the one before it the input, and any leading axes form the
receptive field of a convolution kernel ``(kh, kw, c_in, c_out)``:

    fan_in  = n_in  · ∏ leading sizes        fan_out = n_out · ∏ leading sizes

=================  ===========================  ==================================
name               distribution                 variance
=================  ===========================  ==================================
glorot_uniform     U(-a, a), a = √(6/(fi+fo))   2 / (fan_in + fan_out)
glorot_normal      N(0, σ²)                     2 / (fan_in + fan_out)
he_uniform         U(-a, a), a = √(6/fi)        2 / fan_in
he_normal          N(0, σ²)                     2 / fan_in
lecun_normal       N(0, σ²)                     1 / fan_in
normal(stddev)     N(0, stddev²)                stddev²
zeros              0                            0
=================  ===========================  ==================================

References: Glorot & Bengio (2010), "Understanding the difficulty of training deep
feedforward neural networks"; He et al. (2015), "Delving deep into rectifiers";
LeCun et al. (1998), "Efficient BackProp".  The normal variants here are plain (not
truncated) normals with exactly the variance in the table.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from functional_dl._types import Array, PRNGKey

__all__ = [
    "Initializer",
    "fan_in_and_fan_out",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_normal",
    "normal",
    "zeros",
]

Initializer = Callable[..., Array]


def fan_in_and_fan_out(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(..., n_in, n_out)`` (see module doc)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(
            f"shape must have at least 2 axes (..., fan_in, fan_out) for a fan-based "
            f"initializer, got {shape}; use zeros() or normal() for biases")
    if any(s < 1 for s in shape):
        raise ValueError(f"shape must have positive sizes for a fan-based initializer, got {shape}")
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _float_dtype(dtype):
    """``dtype``, or the default float (float64 when x64 is enabled, else float32)."""
    if dtype is None:
        return jax.dtypes.canonicalize_dtype(jnp.float64)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must have non-negative sizes, got {shape}")
    return shape


def _uniform_with_variance(variance_of: Callable[[int, int], float]) -> Initializer:
    def init(key: PRNGKey, shape: Sequence[int], dtype=None) -> Array:
        dtype = _float_dtype(dtype)
        shape = _check_shape(shape)
        limit = math.sqrt(3.0 * variance_of(*fan_in_and_fan_out(shape)))  # Var U(-a,a) = a²/3
        return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)
    return init


def _normal_with_variance(variance_of: Callable[[int, int], float]) -> Initializer:
    def init(key: PRNGKey, shape: Sequence[int], dtype=None) -> Array:
        dtype = _float_dtype(dtype)
        shape = _check_shape(shape)
        stddev = math.sqrt(variance_of(*fan_in_and_fan_out(shape)))
        return stddev * jax.random.normal(key, shape, dtype)
    return init


def glorot_uniform() -> Initializer:
    """Glorot/Xavier uniform: ``U(-a, a)``, ``a = √(6 / (fan_in + fan_out))``."""
    return _uniform_with_variance(lambda fan_in, fan_out: 2.0 / (fan_in + fan_out))


def glorot_normal() -> Initializer:
    """Glorot/Xavier normal: ``N(0, 2 / (fan_in + fan_out))``."""
    return _normal_with_variance(lambda fan_in, fan_out: 2.0 / (fan_in + fan_out))


def he_uniform() -> Initializer:
    """He/Kaiming uniform: ``U(-a, a)``, ``a = √(6 / fan_in)`` (for ReLU networks)."""
    return _uniform_with_variance(lambda fan_in, fan_out: 2.0 / fan_in)


def he_normal() -> Initializer:
    """He/Kaiming normal: ``N(0, 2 / fan_in)`` (for ReLU networks)."""
    return _normal_with_variance(lambda fan_in, fan_out: 2.0 / fan_in)


def lecun_normal() -> Initializer:
    """LeCun normal: ``N(0, 1 / fan_in)``."""
    return _normal_with_variance(lambda fan_in, fan_out: 1.0 / fan_in)


def normal(stddev: float = 1e-2) -> Initializer:
    """``N(0, stddev²)`` for any shape (biases included)."""
    if not stddev >= 0:
        raise ValueError(f"stddev must be >= 0, got {stddev!r}")

    def init(key: PRNGKey, shape: Sequence[int], dtype=None) -> Array:
        dtype = _float_dtype(dtype)
        return stddev * jax.random.normal(key, _check_shape(shape), dtype)
    return init


def zeros() -> Initializer:
    """All zeros, any shape (the usual bias initializer); the key is ignored."""
    def init(key: PRNGKey, shape: Sequence[int], dtype=None) -> Array:
        dtype = _float_dtype(dtype)
        del key
        return jnp.zeros(_check_shape(shape), dtype)
    return init
