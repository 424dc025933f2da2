"""Per-example normalization layers: ``LayerNorm``, ``RMSNorm``, ``GroupNorm``.

Each normalizes every example on its own (no batch statistics, no state), so they are
plain layers on the package's contract::

    init(key, input_shape)                      -> (output_shape, params)
    apply(params, x, *, key=None, train=False)  -> y

and behave the same in training and evaluation (``key`` and ``train`` are ignored).
Statistics are computed in float32 at least (a bfloat16/float16 ``dtype`` keeps its speed
in the matmuls around the layer, not in the variance); the output has ``dtype`` (``None``:
the promotion of ``x`` with the params).  Params are ``{"scale": γ, "bias": β}`` (ones,
zeros) of ``param_dtype``, either left out with ``use_scale=False`` / ``use_bias=False``.
Inside ``serial`` their entries are ``layer_norm_i``, ``rms_norm_i``, ``group_norm_i``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn.base import Layer, check_input_shape, check_params, dtype_options

__all__ = ["LayerNorm", "RMSNorm", "GroupNorm"]


def _epsilon(owner: str, epsilon: Any) -> float:
    """``epsilon`` as a float, checked to be finite and positive."""
    checks.positive(f"{owner}: epsilon", epsilon)
    return float(epsilon)


def _trailing_axes(owner: str, axes: Union[int, Sequence[int]]) -> tuple[int, ...]:
    """``axes`` checked to be trailing axes, as ``(-k, ..., -1)``."""
    values = (axes,) if not isinstance(axes, (tuple, list)) else axes
    try:
        values = tuple(sorted(checks.whole_number(f"{owner}: axes", a) for a in values))
    except TypeError as error:
        raise TypeError(f"{owner}: axes must be an int or a sequence of ints, got "
                        f"{axes!r}") from error
    if not values or values != tuple(range(-len(values), 0)):
        raise ValueError(f"{owner}: axes must be the trailing axes counted from the end "
                         f"(-1, or (-2, -1), ...), got {axes!r}")
    return values


def _affine_params(shape: Shape, use_scale: bool, use_bias: bool, param_dtype: Any) -> dict:
    """``{"scale": ones, "bias": zeros}`` of ``shape``, as far as they are used."""
    dtype = checks.float_dtype(param_dtype)
    params = {}
    if use_scale:
        params["scale"] = jnp.ones(shape, dtype)
    if use_bias:
        params["bias"] = jnp.zeros(shape, dtype)
    return params


def _check_x(owner: str, x: Any, params: PyTree, num_axes: int, min_rank: int,
             layout: str) -> None:
    """TypeError unless ``x`` is floating; ValueError unless its rank and trailing sizes fit."""
    checks.floating_dtype(f"{owner}: x", x)
    shape = tuple(jnp.shape(x))
    features = next((tuple(jnp.shape(p)) for p in params.values()), None)
    fits = len(shape) >= max(min_rank, num_axes) and (
        features is None or shape[len(shape) - num_axes:] == features)
    if not fits:
        sizes = features if features is not None else ("d",) * num_axes
        raise ValueError(f"{owner}: x must have shape "
                         f"{layout.format(', '.join(map(str, sizes)))}, got shape {shape}")


def _scale_and_shift(normalized: Array, params: PyTree, out_dtype: Any) -> Array:
    """``γ ⊙ normalized + β`` with the params broadcast explicitly (strict rank promotion)."""
    if "scale" in params:
        normalized = normalized * jnp.broadcast_to(
            params["scale"].astype(normalized.dtype), normalized.shape)
    if "bias" in params:
        normalized = normalized + jnp.broadcast_to(
            params["bias"].astype(normalized.dtype), normalized.shape)
    return normalized.astype(out_dtype)


def _norm_layer(owner: str, name: str, num_axes: int, use_scale: bool, use_bias: bool,
                param_dtype: Any, dtype: Any, normalize: Callable[[Array], Array], *,
                min_rank: int = 1, layout: str = "(..., {})",
                check_features: Optional[Callable[[int], None]] = None) -> Layer:
    """A layer ``y = γ ⊙ normalize(x) + β`` with ``γ, β`` over the last ``num_axes`` axes."""
    names = [n for n, used in (("scale", use_scale), ("bias", use_bias)) if used]

    def init(key: PRNGKey, input_shape: Shape):
        del key
        shape = check_input_shape(owner, input_shape, min_rank=max(num_axes, min_rank),
                                  known_from=-num_axes)
        if check_features is not None:
            check_features(shape[-1])
        return shape, _affine_params(shape[-num_axes:], use_scale, use_bias, param_dtype)

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del key, train
        check_params(owner, params, names, name)
        _check_x(owner, x, params, num_axes, min_rank, layout)
        if check_features is not None:
            check_features(jnp.shape(x)[-1])
        out_dtype = dtype or jnp.result_type(x, *params.values())
        # float32 at least: a half-precision variance loses most of its digits
        stats_dtype = jnp.promote_types(out_dtype, jnp.float32)
        normalized = normalize(jnp.asarray(x).astype(stats_dtype))
        return _scale_and_shift(normalized, params, out_dtype)

    return Layer(init, apply, name)


def _mean_and_variance(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """Mean and biased variance (divided by the count) over ``axes``, kept for broadcasting."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    return mean, jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)


def LayerNorm(epsilon: float = 1e-5, *, axes: Union[int, Sequence[int]] = -1,
              use_scale: bool = True, use_bias: bool = True, dtype: Any = None,
              param_dtype: Any = None) -> Layer:
    """Layer normalization over the trailing ``axes`` of each example::

        μ = mean_A x,    σ² = mean_A (x - μ)²          (biased; A = axes)
        y = γ ⊙ (x - μ) / √(σ² + ε) + β                 (ε inside the square root)

    ``γ`` (``"scale"``) and ``β`` (``"bias"``) have the shape of the normalized axes.
    ``x``: ``(..., d)`` for ``axes=-1``, ``(..., h, d)`` for ``axes=(-2, -1)``; ``y`` has its
    shape.  ``axes`` must be trailing axes counted from the end.

    Ba, Kiros & Hinton (2016), "Layer normalization".  This is
    ``torch.nn.LayerNorm(x.shape[axes], eps=epsilon)`` with ``weight = γ``, ``bias = β``
    (``use_scale=use_bias=False`` is its ``elementwise_affine=False``, ``use_bias=False`` its
    ``bias=False``).
    """
    epsilon = _epsilon("LayerNorm", epsilon)
    reduced = _trailing_axes("LayerNorm", axes)
    dtype, param_dtype = dtype_options("LayerNorm", dtype, param_dtype)

    def normalize(x: Array) -> Array:
        mean, variance = _mean_and_variance(x, reduced)
        return (x - mean) * jax.lax.rsqrt(variance + epsilon)

    return _norm_layer("LayerNorm", "layer_norm", len(reduced),
                       checks.boolean("LayerNorm: use_scale", use_scale),
                       checks.boolean("LayerNorm: use_bias", use_bias),
                       param_dtype, dtype, normalize)


def RMSNorm(epsilon: float = 1e-6, *, axes: Union[int, Sequence[int]] = -1,
            use_scale: bool = True, dtype: Any = None, param_dtype: Any = None) -> Layer:
    """Root-mean-square normalization over the trailing ``axes`` (no centering, no bias)::

        y = γ ⊙ x / √(mean_A x² + ε)                    (ε inside the square root)

    ``γ`` (``"scale"``, ones) has the shape of the normalized axes.

    Zhang & Sennrich (2019), "Root mean square layer normalization".  This is
    ``torch.nn.RMSNorm(x.shape[axes], eps=epsilon)`` with ``weight = γ``
    (``use_scale=False`` is its ``elementwise_affine=False``); torch's default ``eps=None``
    means the input dtype's machine epsilon, so pass ``eps`` explicitly to compare.
    """
    epsilon = _epsilon("RMSNorm", epsilon)
    reduced = _trailing_axes("RMSNorm", axes)
    dtype, param_dtype = dtype_options("RMSNorm", dtype, param_dtype)

    def normalize(x: Array) -> Array:
        mean_square = jnp.mean(jnp.square(x), axis=reduced, keepdims=True)
        return x * jax.lax.rsqrt(mean_square + epsilon)

    return _norm_layer("RMSNorm", "rms_norm", len(reduced),
                       checks.boolean("RMSNorm: use_scale", use_scale), False,
                       param_dtype, dtype, normalize)


def GroupNorm(num_groups: int, epsilon: float = 1e-5, *, use_scale: bool = True,
              use_bias: bool = True, dtype: Any = None, param_dtype: Any = None) -> Layer:
    """Group normalization of channels-last input ``x``: ``(N, ..., C)``.

    The ``C`` channels are split into ``G = num_groups`` consecutive groups of ``C / G``;
    for each example ``n`` and group ``g``, with ``S_g`` all its positions (every axis but
    ``N``) and the group's channels::

        μ = mean_{S_g} x,    σ² = mean_{S_g} (x - μ)²      (biased)
        y = γ_c (x - μ) / √(σ² + ε) + β_c                   (per channel c; ε inside the root)

    ``γ`` (``"scale"``) and ``β`` (``"bias"``) have shape ``(C,)``.  ``num_groups=1``
    normalizes each example over all of ``(..., C)``; ``num_groups=C`` is instance
    normalization.  The first axis is always the batch axis (one example is ``x[None]``).

    Wu & He (2018), "Group normalization".  This is ``torch.nn.GroupNorm(num_groups, C,
    eps=epsilon)`` with ``weight = γ``, ``bias = β`` (``use_scale=use_bias=False`` is its
    ``affine=False``), once torch's ``(N, C, ...)`` input is moved channels last.
    """
    num_groups = checks.whole_number("GroupNorm: num_groups", num_groups, minimum=1)
    epsilon = _epsilon("GroupNorm", epsilon)
    dtype, param_dtype = dtype_options("GroupNorm", dtype, param_dtype)

    def check_channels(channels: int) -> None:
        if channels % num_groups:
            raise ValueError(f"GroupNorm: num_groups ({num_groups}) must divide the number "
                             f"of channels C (the last axis), got C = {channels}")

    def normalize(x: Array) -> Array:
        grouped = x.reshape(x.shape[:-1] + (num_groups, x.shape[-1] // num_groups))
        reduced = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
        mean, variance = _mean_and_variance(grouped, reduced)
        return ((grouped - mean) * jax.lax.rsqrt(variance + epsilon)).reshape(x.shape)

    return _norm_layer("GroupNorm", "group_norm", 1,
                       checks.boolean("GroupNorm: use_scale", use_scale),
                       checks.boolean("GroupNorm: use_bias", use_bias),
                       param_dtype, dtype, normalize, min_rank=2, layout="(N, ..., {})",
                       check_features=check_channels)
