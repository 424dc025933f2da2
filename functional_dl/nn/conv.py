"""Convolution layers on channels-last arrays: ``Conv`` (1-D, 2-D, 3-D), ``Conv2D`` and
``ConvTranspose`` (the ``Layer`` contract of :mod:`functional_dl.nn.base`).

The spatial rank ``r`` is ``len(kernel_size)``.  Inputs are ``(N, W, C)``, ``(N, H, W, C)``
or ``(N, D, H, W, C)`` (NWC, NHWC, NDHWC); one example without the batch axis is accepted
too, so ``vmap`` over examples works directly.  Kernels hold the spatial axes first, then
the input and output channels (WIO, HWIO, DHWIO).  Padding and output sizes follow the
rules of :mod:`functional_dl.nn._spatial`; with dilation ``d`` the window of ``k`` taps
covers ``k_eff = d (k - 1) + 1`` entries.

Cross-correlation (no kernel flip), with ``G = feature_group_count`` groups of
``C_g = C / G`` input and ``F_g = F / G`` output channels, output channel ``o`` reading
group ``g(o) = ⌊o / F_g⌋`` (``i`` and ``u`` are r-dimensional indices)::

    y[n, i, o] = b[o] + Σ_{u, c < C_g} x_pad[n, s ⊙ i + d ⊙ u, g(o) C_g + c] · w[u, c, o]

Depthwise convolution is ``feature_group_count = C`` (``F = m C`` for a channel
multiplier ``m``).  The pooling layers and ``Flatten`` live in :mod:`.pooling` (and are
importable from here as well).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn import initializers
from functional_dl.nn._spatial import (LAYOUTS, Padding, check_spatial_input,
                                       check_spatial_shape, conv_output_size, int_tuple,
                                       normalize_padding, window_tuple, with_batch)
from functional_dl.nn.base import Layer, check_params, dtype_options, promote
from functional_dl.nn.pooling import AvgPool, Flatten, MaxPool

__all__ = ["Conv", "Conv2D", "ConvTranspose", "conv_output_size",
           "MaxPool", "AvgPool", "Flatten"]

IntOrInts = Union[int, Sequence[int]]


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
    name, letters = LAYOUTS[rank]
    return name, letters + "IO", name


class _Spec:
    """The checked hyperparameters shared by ``Conv`` and ``ConvTranspose``."""

    def __init__(self, owner, features, kernel_size, strides, dilation, feature_group_count,
                 use_bias, w_init, b_init, dtype, param_dtype, default_rank):
        self.owner = owner
        self.features = checks.whole_number(f"{owner}: features", features, minimum=1)
        self.window = window_tuple(f"{owner}: kernel_size", kernel_size,
                                   default_rank=default_rank)
        self.rank = rank = len(self.window)
        self.strides = int_tuple(f"{owner}: strides", strides, rank)
        self.dilation = int_tuple(f"{owner}: dilation", dilation, rank)
        self.groups = checks.whole_number(f"{owner}: feature_group_count",
                                          feature_group_count, minimum=1)
        if self.features % self.groups:
            raise ValueError(f"{owner}: features ({self.features}) must be divisible by "
                             f"feature_group_count ({self.groups})")
        self.use_bias = checks.boolean(f"{owner}: use_bias", use_bias)
        self.w_init = initializers.glorot_normal() if w_init is None else w_init
        self.b_init = initializers.zeros() if b_init is None else b_init
        self.dtype, self.param_dtype = dtype_options(owner, dtype, param_dtype)
        self.names = ["w", "b"] if self.use_bias else ["w"]
        self.effective = tuple(d * (k - 1) + 1 for k, d in zip(self.window, self.dilation))

    def check_channels(self, channels: int) -> None:
        if channels % self.groups:
            raise ValueError(f"{self.owner}: the input's channels ({channels}) must be "
                             f"divisible by feature_group_count ({self.groups})")

    def make_params(self, key: PRNGKey, kernel_shape: Shape) -> dict:
        # user initializers may take (key, shape) only: the dtype goes in when one is set
        dtype = () if self.param_dtype is None else (self.param_dtype,)
        w_key, b_key = jax.random.split(key)
        params = {"w": self.w_init(w_key, kernel_shape, *dtype)}
        if self.use_bias:
            params["b"] = self.b_init(b_key, (self.features,), *dtype)
        return params

    def run(self, params: PyTree, x: Array, kind: str, channels_in: Callable[[Array], int],
            convolve: Callable[[Array, Array], Array]) -> Array:
        """Checks, dtype promotion, ``convolve(x, w)`` on a batch, and the bias."""
        check_params(self.owner, params, self.names, kind)
        w = params["w"]
        if jnp.ndim(w) != self.rank + 2:
            raise ValueError(f"{self.owner}: params['w'] must have {self.rank + 2} axes "
                             f"(spatial, in, out), got shape {jnp.shape(w)}")
        check_spatial_input(self.owner, x, self.rank, channels_in(w))
        arrays = promote(self.dtype, x, *(params[name] for name in self.names))

        def batched(images):
            y = convolve(images, arrays[1])
            return y + jnp.broadcast_to(arrays[2], y.shape) if self.use_bias else y
        return with_batch(arrays[0], self.rank, batched)


# ----------------------------------------------------------------------------------- Conv


def _conv(owner: str, features, kernel_size, strides, padding, dilation, feature_group_count,
          use_bias, w_init, b_init, dtype, param_dtype, default_rank) -> Layer:
    spec = _Spec(owner, features, kernel_size, strides, dilation, feature_group_count,
                 use_bias, w_init, b_init, dtype, param_dtype, default_rank)
    pad = normalize_padding(f"{owner}: padding", padding, spec.rank)
    pads = (pad,) * spec.rank if isinstance(pad, str) else pad

    def init(key: PRNGKey, input_shape: Shape):
        shape = check_spatial_shape(owner, input_shape, spec.rank)
        spec.check_channels(shape[-1])
        spatial = tuple(conv_output_size(n, k, s, p) for n, k, s, p
                        in zip(shape[1:-1], spec.effective, spec.strides, pads))
        params = spec.make_params(key, spec.window + (shape[-1] // spec.groups, spec.features))
        return (shape[0],) + spatial + (spec.features,), params

    def convolve(images: Array, w: Array) -> Array:
        return lax.conv_general_dilated(
            images, w, window_strides=spec.strides, padding=pad,
            rhs_dilation=spec.dilation, feature_group_count=spec.groups,
            dimension_numbers=_dimension_numbers(spec.rank))

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del key, train
        return spec.run(params, x, "conv", lambda w: w.shape[-2] * spec.groups, convolve)

    return Layer(init, apply, "conv")


def Conv(features: int, kernel_size: Sequence[int], strides: IntOrInts = 1,
         padding: Padding = "SAME", *, dilation: IntOrInts = 1,
         feature_group_count: int = 1, use_bias: bool = True,
         w_init: Optional[Callable] = None, b_init: Optional[Callable] = None,
         dtype: Any = None, param_dtype: Any = None) -> Layer:
    """Convolution over ``r = len(kernel_size)`` spatial axes (1, 2 or 3) with ``features``
    output channels; the formula is in the module docstring.

    ``kernel_size`` is a tuple (``(3,)``, ``(3, 3)``, ``(3, 3, 3)``); ``strides`` and
    ``dilation`` (the kernel's, "rhs" dilation) are an int or ``r`` ints; ``padding`` is
    ``"SAME"``, ``"VALID"``, an int, ``r`` ints (both sides) or ``r`` ``(before, after)``
    pairs.  The input's channels ``C`` and ``features`` must be divisible by
    ``feature_group_count``.

    Params: ``{"w": (*kernel_size, C / G, features), "b": (features,)}`` (no ``"b"`` with
    ``use_bias=False``); defaults ``w_init = glorot_normal()`` (fans include the receptive
    field), ``b_init = zeros()``.  ``dtype`` is the computation and output dtype (``None``:
    the promotion of ``x`` with the params), ``param_dtype`` the params' (``None``: the
    default float), so ``dtype=jnp.bfloat16`` computes in bfloat16 from float32 params.

    This is ``torch.nn.Conv{r}d(C, features, kernel_size, stride=strides, padding=p,
    dilation=dilation, groups=feature_group_count, bias=use_bias)`` on channels-first
    input, with ``weight = w.permute(r + 1, r, 0, ..., r - 1)`` (``(F, C / G, *k)``) and
    ``bias = b``; torch's symmetric int padding ``p`` is ``padding=p`` here, and torch's
    ``padding="same"`` (stride 1) is ``"SAME"`` here.  On ``lax.conv_general_dilated``.
    """
    return _conv("Conv", features, kernel_size, strides, padding, dilation,
                 feature_group_count, use_bias, w_init, b_init, dtype, param_dtype, None)


def Conv2D(features: int, kernel_size: IntOrInts, strides: IntOrInts = 1,
           padding: Padding = "SAME", w_init: Optional[Callable] = None,
           b_init: Optional[Callable] = None, *, dilation: IntOrInts = 1,
           feature_group_count: int = 1, use_bias: bool = True, dtype: Any = None,
           param_dtype: Any = None) -> Layer:
    """:func:`Conv` with a 2-D kernel on NHWC images (an int ``kernel_size`` ``k`` means
    ``(k, k)``).  Params ``{"w": (kh, kw, C / G, features), "b": (features,)}``."""
    return _conv("Conv2D", features, kernel_size, strides, padding, dilation,
                 feature_group_count, use_bias, w_init, b_init, dtype, param_dtype, 2)


# -------------------------------------------------------------------------- ConvTranspose


def _transpose_crops(owner: str, padding, output_padding, spec: _Spec):
    """The ``(before, after)`` entries cut from the full transposed output on each axis
    (negative: zeros added), as ``ConvTranspose``'s docstring defines them."""
    rank = spec.rank
    extra = int_tuple(f"{owner}: output_padding", output_padding, rank, minimum=0)
    if any(e >= max(s, d) for e, s, d in zip(extra, spec.strides, spec.dilation)):
        raise ValueError(f"{owner}: output_padding must be smaller than the stride or the "
                         f"dilation on each axis (as in torch), got {extra} for strides "
                         f"{spec.strides} and dilation {spec.dilation}")
    pad = normalize_padding(f"{owner}: padding", padding, rank)
    if pad == "VALID":
        crops = ((0, 0),) * rank
    elif pad == "SAME":
        # the adjoint of the SAME convolution from n·s entries down to n, which pads
        # max(k_eff - s, 0) in total, the smaller half before
        crops = tuple((max(k - s, 0) // 2, k - s - max(k - s, 0) // 2)
                      for k, s in zip(spec.effective, spec.strides))
    else:
        crops = pad
    return tuple((lo, hi - e) for (lo, hi), e in zip(crops, extra))


def ConvTranspose(features: int, kernel_size: Sequence[int], strides: IntOrInts = 1,
                  padding: Padding = 0, *, output_padding: IntOrInts = 0,
                  dilation: IntOrInts = 1, feature_group_count: int = 1,
                  use_bias: bool = True, w_init: Optional[Callable] = None,
                  b_init: Optional[Callable] = None, dtype: Any = None,
                  param_dtype: Any = None) -> Layer:
    """Transposed convolution (the adjoint of :func:`Conv` in ``x``), 1-D, 2-D or 3-D.

    Each input entry scatters a copy of the kernel scaled by it; with crops
    ``(lo, hi)`` taken off each axis of the full result, ``G`` groups and ``i``, ``u``
    r-dimensional indices::

        y[n, j, o] = b[o] + Σ_{i, u, c < C_g : s ⊙ i + d ⊙ u - lo = j}
                              x[n, i, g(o) C_g + c] · w[u, g(o) C_g + c, o - g(o) F_g]
        out = (n - 1) s + d (k - 1) + 1 - lo - hi          on each axis

    ``padding``: an int or ``r`` ints ``p`` (``lo = hi = p``, torch's ``padding``), ``r``
    ``(lo, hi)`` pairs, ``"VALID"`` (nothing cut) or ``"SAME"`` (``out = n s``: the
    adjoint of ``Conv(..., padding="SAME")`` on an input of ``n s`` entries).
    ``output_padding`` (an int or ``r`` ints, smaller than the stride or the dilation)
    adds that many entries at the end (``hi -= output_padding``), to reach sizes that a
    strided convolution maps to the same ``n``.

    Params: ``{"w": (*kernel_size, C, features / G), "b": (features,)}``; ``dtype`` and
    ``param_dtype`` as in :func:`Conv`.  This is ``torch.nn.ConvTranspose{r}d(C, features,
    kernel_size, stride=strides, padding=p, output_padding=output_padding,
    groups=feature_group_count, bias=use_bias, dilation=dilation)`` on channels-first input
    with ``weight = w.permute(r, r + 1, 0, ..., r - 1)`` (``(C, F / G, *k)``, no flip) and
    ``bias = b``.  Computed as a convolution of the input dilated by ``s`` with the
    spatially flipped kernel (``lax.conv_general_dilated``, ``lhs_dilation``).
    """
    owner = "ConvTranspose"
    spec = _Spec(owner, features, kernel_size, strides, dilation, feature_group_count,
                 use_bias, w_init, b_init, dtype, param_dtype, None)
    crops = _transpose_crops(owner, padding, output_padding, spec)
    rank, groups = spec.rank, spec.groups

    def output_size(n, k, s, crop):
        if n == -1:
            return -1
        out = (n - 1) * s + k - crop[0] - crop[1]
        if out < 1:
            raise ValueError(f"{owner}: padding {crop} leaves nothing of an axis of "
                             f"{(n - 1) * s + k} entries (input size {n})")
        return out

    def init(key: PRNGKey, input_shape: Shape):
        shape = check_spatial_shape(owner, input_shape, rank)
        spec.check_channels(shape[-1])
        spatial = tuple(output_size(n, k, s, c) for n, k, s, c
                        in zip(shape[1:-1], spec.effective, spec.strides, crops))
        params = spec.make_params(key, spec.window + (shape[-1], spec.features // groups))
        return (shape[0],) + spatial + (spec.features,), params

    def convolve(images: Array, w: Array) -> Array:
        # (*k, C, F_g) -> flipped (*k, C_g, F) with output channels grouped g-major,
        # the layout lax's grouped convolution reads
        kernel = jnp.flip(w, axis=tuple(range(rank)))
        channels_group, features_group = w.shape[-2] // groups, w.shape[-1]
        kernel = kernel.reshape(spec.window + (groups, channels_group, features_group))
        kernel = jnp.moveaxis(kernel, rank, rank + 1).reshape(
            spec.window + (channels_group, groups * features_group))
        pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(spec.effective, crops)]
        return lax.conv_general_dilated(
            images, kernel, window_strides=(1,) * rank, padding=pads,
            lhs_dilation=spec.strides, rhs_dilation=spec.dilation,
            feature_group_count=groups, dimension_numbers=_dimension_numbers(rank))

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del key, train
        return spec.run(params, x, "conv_transpose", lambda w: w.shape[-2], convolve)

    return Layer(init, apply, "conv_transpose")
