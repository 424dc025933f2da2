"""Pooling and flattening layers on channels-last arrays (``Layer`` contract of
:mod:`functional_dl.nn.base`): ``MaxPool``, ``AvgPool`` (1-D, 2-D, 3-D windows),
``GlobalAvgPool``, ``GlobalMaxPool`` and ``Flatten``.

The spatial rank ``r`` of ``MaxPool``/``AvgPool`` is ``len(window_shape)``; an int window
``k`` means ``(k, k)`` (2-D).  Inputs are a batch ``(N, *spatial, C)`` (NWC, NHWC, NDHWC)
or one example ``(*spatial, C)``; every channel is pooled on its own.  Padding and output
sizes follow :mod:`functional_dl.nn._spatial` (``"VALID"``, ``"SAME"``, an int, ``r`` ints
or ``r`` ``(before, after)`` pairs); strides default to the window.  ``i`` and ``u`` below
are r-dimensional indices::

    max:      y[n, i, c] = max_u x_pad[n, s ⊙ i + u, c]          (padding is -inf)
    average:  y[n, i, c] = mean of x[n, s ⊙ i + u, c] over the window's real entries

The average leaves padded entries out of its count: ``torch.nn.AvgPool{r}d(k, stride,
padding, count_include_pad=False)``; the max is ``torch.nn.MaxPool{r}d(k, stride,
padding)``.  torch pads symmetrically by at most half the window; here any padding smaller
than the window is allowed.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn._spatial import (Padding, check_spatial_input, check_spatial_shape,
                                       conv_output_size, int_tuple, layout, normalize_padding,
                                       window_tuple, with_batch)
from functional_dl.nn.base import Layer, check_input, check_input_shape

__all__ = ["MaxPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool", "Flatten"]


def _pool_layer(name: str, reduce: Callable, window_shape, strides, padding) -> Layer:
    window = window_tuple(f"{name}: window_shape", window_shape)
    rank = len(window)
    stride = window if strides is None else int_tuple(f"{name}: strides", strides, rank)
    pad = normalize_padding(f"{name}: padding", padding, rank)
    if not isinstance(pad, str) and any(side >= size for (low, high), size in zip(pad, window)
                                        for side in (low, high)):
        # a window entirely in the padding would average nothing (0/0) or max to -inf
        raise ValueError(f"{name}: padding must be smaller than the window on each side, got "
                         f"padding {pad} for window {window}")
    pads = (pad,) * rank if isinstance(pad, str) else pad

    def init(key: PRNGKey, input_shape: Shape):
        del key
        shape = check_spatial_shape(name, input_shape, rank)
        spatial = tuple(conv_output_size(n, k, s, p)
                        for n, k, s, p in zip(shape[1:-1], window, stride, pads))
        return (shape[0],) + spatial + (shape[-1],), {}

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del params, key, train
        check_spatial_input(name, x, rank)
        return with_batch(x, rank, lambda batch: reduce(batch, window, stride, pad))

    return Layer(init, apply, name.lower())


def _window_args(window, stride, pad):
    dims, strides = (1,) + window + (1,), (1,) + stride + (1,)
    padding = pad if isinstance(pad, str) else ((0, 0),) + pad + ((0, 0),)
    return dims, strides, padding


def _lowest(dtype):
    """The identity of ``max`` in ``dtype``: ``-inf`` for floats, the least integer else
    (a Python scalar: lax differentiates its max and add windows only for those)."""
    if jnp.issubdtype(dtype, jnp.floating):
        return -float("inf")
    return int(jnp.iinfo(dtype).min)


def _max_pool(batch, window, stride, pad):
    dims, strides, padding = _window_args(window, stride, pad)
    return lax.reduce_window(batch, _lowest(batch.dtype), lax.max, dims, strides, padding)


def _mean_dtypes(dtype):
    """(the dtype a sum is taken in, the dtype of the mean)."""
    # float32 at least: uint8 sums wrap around, float16 ones overflow
    compute_dtype = jnp.promote_types(dtype, jnp.float32)
    return compute_dtype, (dtype if jnp.issubdtype(dtype, jnp.floating) else compute_dtype)


def _avg_pool(batch, window, stride, pad):
    dims, strides, padding = _window_args(window, stride, pad)
    compute_dtype, out_dtype = _mean_dtypes(batch.dtype)
    sums = lax.reduce_window(batch.astype(compute_dtype), 0.0, lax.add,
                             dims, strides, padding)
    if pad == "VALID":
        counts = math.prod(window)
    else:  # the number of real (non-padded) entries in each window
        ones = jnp.ones((1,) + batch.shape[1:-1] + (1,), compute_dtype)
        counts = lax.reduce_window(ones, 0.0, lax.add, dims, strides,
                                   padding)
    return (sums / counts).astype(out_dtype)


def MaxPool(window_shape, strides=None, padding: Padding = "VALID") -> Layer:
    """Max over each ``window_shape`` window (per channel); ``strides`` default to the window.

    ``y[n, i, c] = max_u x_pad[n, s ⊙ i + u, c]`` (padding is ``-inf``, the least integer
    for integer input).  ``torch.nn.MaxPool{r}d(window_shape, strides, padding)``.
    """
    return _pool_layer("MaxPool", _max_pool, window_shape, strides, padding)


def AvgPool(window_shape, strides=None, padding: Padding = "VALID") -> Layer:
    """Mean over each window (per channel); ``strides`` default to the window.

    With padding, the mean is over the real entries only (padded zeros are not counted):
    ``torch.nn.AvgPool{r}d(window_shape, strides, padding, count_include_pad=False)``.
    Sums are taken in float32 at least; integer input gives float32.
    """
    return _pool_layer("AvgPool", _avg_pool, window_shape, strides, padding)


# ------------------------------------------------------------------------- global pools


def _global_pool(name: str, kind: str, reduce: Callable, keepdims, spatial_rank) -> Layer:
    keepdims = checks.boolean(f"{name}: keepdims", keepdims)
    if spatial_rank is not None:
        spatial_rank = checks.whole_number(f"{name}: spatial_rank", spatial_rank, minimum=1,
                                           maximum=3)

    def spatial_axes(ndim: int) -> tuple[int, ...]:
        first = 1 if spatial_rank is None else ndim - 1 - spatial_rank
        return tuple(range(first, ndim - 1))

    def init(key: PRNGKey, input_shape: Shape):
        del key
        if spatial_rank is None:
            shape = check_input_shape(name, input_shape, min_rank=3,
                                      layout="(N, *spatial, C) (3 axes or more)")
        else:
            shape = check_input_shape(name, input_shape, ranks=(spatial_rank + 2,),
                                      layout=layout(spatial_rank))
        reduced = spatial_axes(len(shape))
        kept = tuple(1 if axis in reduced else size for axis, size in enumerate(shape))
        return (kept if keepdims else (shape[0], shape[-1])), {}

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del params, key, train
        if spatial_rank is None:
            check_input(name, x, min_rank=3, layout="(N, *spatial, C) (3 axes or more)")
        else:
            check_spatial_input(name, x, spatial_rank)
        return reduce(jnp.asarray(x), spatial_axes(jnp.ndim(x)), keepdims)

    return Layer(init, apply, kind)


def _global_mean(x, axes, keepdims):
    compute_dtype, out_dtype = _mean_dtypes(x.dtype)
    return jnp.mean(x.astype(compute_dtype), axis=axes, keepdims=keepdims).astype(out_dtype)


def GlobalAvgPool(*, keepdims: bool = False, spatial_rank: Optional[int] = None) -> Layer:
    """Mean over all spatial axes: ``y[n, c] = mean_i x[n, i, c]`` (per channel).

    ``(N, *spatial, C) -> (N, C)``, or ``(N, 1, ..., 1, C)`` with ``keepdims=True``.
    ``spatial_rank=None`` reduces every axis between the first (the batch axis) and the
    last, so the input needs its batch axis; ``spatial_rank=r`` reduces the ``r`` axes
    before the channels, so one example ``(*spatial, C)`` works too (``vmap``).
    ``torch.nn.functional.adaptive_avg_pool{r}d(x, 1)`` on channels-first input.
    Sums are taken in float32 at least; integer input gives float32.
    """
    return _global_pool("GlobalAvgPool", "global_avg_pool", _global_mean, keepdims, spatial_rank)


def GlobalMaxPool(*, keepdims: bool = False, spatial_rank: Optional[int] = None) -> Layer:
    """Max over all spatial axes: ``y[n, c] = max_i x[n, i, c]`` (per channel); shapes and
    ``spatial_rank`` as in :func:`GlobalAvgPool`.
    ``torch.nn.functional.adaptive_max_pool{r}d(x, 1)`` on channels-first input."""
    return _global_pool("GlobalMaxPool", "global_max_pool",
                        lambda x, axes, keepdims: jnp.max(x, axis=axes, keepdims=keepdims),
                        keepdims, spatial_rank)


# -------------------------------------------------------------------------- Flatten


def _flatten_init(key: PRNGKey, input_shape: Shape):
    del key
    shape = check_input_shape("Flatten", input_shape, min_rank=1, known_from=1)
    return (shape[0], math.prod(shape[1:])), {}


def _flatten_apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
                   train: bool = False) -> Array:
    """``(batch, d1, d2, ...) -> (batch, d1·d2·...)`` (row-major)."""
    del params, key, train
    return jnp.reshape(x, (jnp.shape(x)[0], math.prod(jnp.shape(x)[1:])))  # also for N = 0


#: Flattens every axis but the first (the batch axis): ``(N, d1, d2, ...) -> (N, d1·d2·...)``.
#: It needs the batch axis to know what to keep; under ``vmap`` over single examples,
#: apply the network to ``x[None]`` (a batch of one) and take ``[0]``.
Flatten = Layer(_flatten_init, _flatten_apply, "flatten")
