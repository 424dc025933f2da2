"""Convolution, pooling and flattening layers on NHWC images (``Layer`` contract of
:mod:`functional_dl.nn.layers`).

Shapes: images are ``(batch, height, width, channels)``; a single image ``(H, W, C)`` is also
accepted by ``Conv2D``/``MaxPool``/``AvgPool`` (so ``vmap`` over examples works directly);
``Flatten`` always keeps the first axis, so a network that contains it is applied to a
batch (``x[None]`` for one example).
Kernels are ``(kh, kw, c_in, c_out)`` (HWIO).

Padding: ``"VALID"`` (no padding), ``"SAME"`` or explicit ``((top, bottom), (left, right))``
(an int ``p`` means ``((p, p), (p, p))``).  With stride ``s`` and window ``k``:

    VALID:     out = ⌊(n - k) / s⌋ + 1
    SAME:      out = ⌈n / s⌉; total padding max((out - 1) s + k - n, 0), the smaller half
               (⌊total/2⌋) before and the rest after
    explicit:  out = ⌊(n + before + after - k) / s⌋ + 1

Cross-correlation, as in every deep learning library (no kernel flip):

    y[n, i, j, o] = b[o] + Σ_{u, v, c} x_pad[n, i·s_h + u, j·s_w + v, c] · w[u, v, c, o]
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn import initializers
from functional_dl.nn.layers import Layer, _check_input_shape, _is_positive_int

__all__ = ["Conv2D", "MaxPool", "AvgPool", "Flatten", "conv_output_size"]

Padding = Union[str, int, Sequence[Sequence[int]]]
_NHWC = ("NHWC", "HWIO", "NHWC")


def _pair(name: str, value: Union[int, Sequence[int]]) -> tuple[int, int]:
    try:
        pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_positive_int(v) for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _normalize_padding(padding: Padding) -> Union[str, tuple[tuple[int, int], ...]]:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or "
                             f"((top, bottom), (left, right)), got {padding!r}")
        return padding.upper()
    if isinstance(padding, numbers.Integral):
        padding = ((padding, padding), (padding, padding))
    try:
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError) as error:
        raise ValueError(f"padding must be 'SAME', 'VALID', an int or "
                         f"((top, bottom), (left, right)), got {padding!r}") from error
    if len(pairs) != 2 or any(p < 0 for pair in pairs for p in pair):
        raise ValueError(f"padding must hold two non-negative (before, after) pairs, "
                         f"got {padding!r}")
    return pairs


def conv_output_size(size: int, window: int, stride: int, padding) -> int:
    """Output length of one spatial axis (formulas in the module docstring).

    ``padding`` is ``"SAME"``, ``"VALID"`` or a ``(before, after)`` pair; ``-1`` (unknown)
    stays ``-1``.
    """
    if size == -1:
        return -1
    if padding == "SAME":
        return -(-size // stride)
    before, after = (0, 0) if padding == "VALID" else padding
    out = (size + before + after - window) // stride + 1
    if out < 1:
        raise ValueError(f"window {window} does not fit an axis of size {size} with padding "
                         f"{padding}; the output would be empty")
    return out


def _check_nhwc(name: str, input_shape: Shape) -> Shape:
    shape = _check_input_shape(name, input_shape)
    if len(shape) != 4:
        raise ValueError(f"{name}: input_shape must be NHWC (4 axes), got {shape}")
    if any(s == -1 for s in shape[1:]):
        raise ValueError(f"{name}: only the batch axis of input_shape may be unknown, got {shape}")
    return shape


def _spatial_output_shape(name, input_shape, window, strides, padding, channels_out):
    shape = _check_nhwc(name, input_shape)
    batch, height, width, _ = shape
    pads = (padding, padding) if isinstance(padding, str) else padding
    return (batch,
            conv_output_size(height, window[0], strides[0], pads[0]),
            conv_output_size(width, window[1], strides[1], pads[1]),
            channels_out)


def _with_batch(name: str, x: Array, fn: Callable[[Array], Array]) -> Array:
    """Apply ``fn`` (written for NHWC) to NHWC input or to one HWC image."""
    if jnp.ndim(x) == 3:
        return fn(x[None])[0]
    if jnp.ndim(x) != 4:
        raise ValueError(f"{name}: x must be NHWC (4 axes) or one HWC image, "
                         f"got shape {jnp.shape(x)}")
    return fn(x)


# --------------------------------------------------------------------------- Conv2D


def Conv2D(features: int, kernel_size: Union[int, Sequence[int]],
           strides: Union[int, Sequence[int]] = 1, padding: Padding = "SAME",
           w_init: Optional[Callable] = None, b_init: Optional[Callable] = None) -> Layer:
    """2-D convolution (cross-correlation, NHWC) with ``features`` output channels.

    Params: ``{"w": (kh, kw, c_in, features), "b": (features,)}``; defaults
    ``w_init = glorot_normal()`` (fans include the receptive field), ``b_init = zeros()``.
    """
    if not _is_positive_int(features):
        raise ValueError(f"Conv2D: features must be a positive int, got {features!r}")
    features = int(features)
    window = _pair("Conv2D: kernel_size", kernel_size)
    stride = _pair("Conv2D: strides", strides)
    pad = _normalize_padding(padding)
    w_init = initializers.glorot_normal() if w_init is None else w_init
    b_init = initializers.zeros() if b_init is None else b_init

    def init(key: PRNGKey, input_shape: Shape):
        output_shape = _spatial_output_shape("Conv2D", input_shape, window, stride, pad, features)
        channels_in = int(input_shape[-1])  # known: checked by _spatial_output_shape
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, window + (channels_in, features)),
                  "b": b_init(b_key, (features,))}
        return output_shape, params

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del key, train
        if not (isinstance(params, dict) and {"w", "b"} <= set(params)):
            raise ValueError("Conv2D: params must be a dict {'w': kernel, 'b': bias} (inside "
                             "serial: is this layer's 'conv_i' entry missing?), got "
                             f"{sorted(params) if isinstance(params, dict) else type(params)}")
        w, b = params["w"], params["b"]
        if jnp.ndim(x) >= 1 and jnp.shape(x)[-1] != w.shape[2]:
            raise ValueError(f"Conv2D: x has {jnp.shape(x)[-1]} channels but the kernel of "
                             f"shape {w.shape} expects {w.shape[2]}")
        # lax.conv needs one dtype; promote as x @ w does in Dense (uint8 images with a
        # float32 kernel compute in float32, bfloat16 images with it too).
        dtype = jnp.result_type(x, w)

        def conv(images):
            y = lax.conv_general_dilated(images.astype(dtype), w.astype(dtype),
                                         window_strides=stride, padding=pad,
                                         dimension_numbers=_NHWC)
            return y + jnp.broadcast_to(b, y.shape)
        return _with_batch("Conv2D", x, conv)

    return Layer(init, apply, "conv")


# ---------------------------------------------------------------------------- pools


def _pool_layer(name: str, reduce: Callable, window_shape, strides, padding) -> Layer:
    window = _pair(f"{name}: window_shape", window_shape)
    stride = window if strides is None else _pair(f"{name}: strides", strides)
    pad = _normalize_padding(padding)
    if not isinstance(pad, str) and any(side >= size for (low, high), size in zip(pad, window)
                                        for side in (low, high)):
        # a window entirely in the padding would average nothing (0/0) or max to -inf
        raise ValueError(f"{name}: padding must be smaller than the window on each side, got "
                         f"padding {pad} for window {window}")

    def init(key: PRNGKey, input_shape: Shape):
        del key
        shape = _check_nhwc(name, input_shape)
        return _spatial_output_shape(name, shape, window, stride, pad, shape[-1]), {}

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del params, key, train
        return _with_batch(name, x, lambda images: reduce(images, window, stride, pad))

    return Layer(init, apply, name.lower())


def _window_args(window, stride, pad):
    dims, strides = (1,) + window + (1,), (1,) + stride + (1,)
    padding = pad if isinstance(pad, str) else ((0, 0),) + pad + ((0, 0),)
    return dims, strides, padding


def _max_pool(images, window, stride, pad):
    dims, strides, padding = _window_args(window, stride, pad)
    return lax.reduce_window(images, -jnp.inf, lax.max, dims, strides, padding)


def _avg_pool(images, window, stride, pad):
    dims, strides, padding = _window_args(window, stride, pad)
    # summed in float32 at least: uint8 sums wrap around, float16 ones overflow
    compute_dtype = jnp.promote_types(images.dtype, jnp.float32)
    out_dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else compute_dtype
    sums = lax.reduce_window(images.astype(compute_dtype), 0.0, lax.add, dims, strides, padding)
    if pad == "VALID":
        counts = math.prod(window)
    else:  # the number of real (non-padded) entries in each window
        ones = jnp.ones((1,) + images.shape[1:3] + (1,), compute_dtype)
        counts = lax.reduce_window(ones, 0.0, lax.add, dims, strides, padding)
    return (sums / counts).astype(out_dtype)


def MaxPool(window_shape: Union[int, Sequence[int]], strides=None,
            padding: Padding = "VALID") -> Layer:
    """Max over each ``window_shape`` window (per channel); ``strides`` default to the window.

    ``y[n, i, j, c] = max_{u, v} x_pad[n, i·s_h + u, j·s_w + v, c]`` (padding is ``-inf``).
    """
    return _pool_layer("MaxPool", _max_pool, window_shape, strides, padding)


def AvgPool(window_shape: Union[int, Sequence[int]], strides=None,
            padding: Padding = "VALID") -> Layer:
    """Mean over each window (per channel); ``strides`` default to the window.

    With padding, the mean is over the real entries only (padded zeros are not counted).
    """
    return _pool_layer("AvgPool", _avg_pool, window_shape, strides, padding)


# -------------------------------------------------------------------------- Flatten


def _flatten_init(key: PRNGKey, input_shape: Shape):
    del key
    shape = _check_input_shape("Flatten", input_shape, min_rank=1)
    rest = shape[1:]
    if any(s == -1 for s in rest):
        raise ValueError(f"Flatten: only the batch axis may be unknown, got {shape}")
    return (shape[0], math.prod(rest)), {}


def _flatten_apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
                   train: bool = False) -> Array:
    """``(batch, d1, d2, ...) -> (batch, d1·d2·...)`` (row-major)."""
    del params, key, train
    return jnp.reshape(x, (jnp.shape(x)[0], math.prod(jnp.shape(x)[1:])))  # also for N = 0


#: Flattens every axis but the first (the batch axis): ``(N, d1, d2, ...) -> (N, d1·d2·...)``.
#: It needs the batch axis to know what to keep; under ``vmap`` over single examples,
#: apply the network to ``x[None]`` (a batch of one) and take ``[0]``.
Flatten = Layer(_flatten_init, _flatten_apply, "flatten")
