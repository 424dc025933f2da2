"""Shared arithmetic of the layers that slide a window over the spatial axes (``conv.py``,
``pooling.py``): argument parsing, padding, output sizes and channels-last layouts.

Arrays are channels-last: ``(N, W, C)``, ``(N, H, W, C)``, ``(N, D, H, W, C)`` for a spatial
rank of 1, 2, 3.  With stride ``s``, window ``k`` and (rhs) dilation ``d`` the window covers
``k_eff = d (k - 1) + 1`` entries, and one spatial axis of size ``n`` becomes:

    VALID:     out = ⌊(n - k_eff) / s⌋ + 1
    SAME:      out = ⌈n / s⌉; total padding max((out - 1) s + k_eff - n, 0), the smaller
               half (⌊total/2⌋) before and the rest after
    explicit:  out = ⌊(n + before + after - k_eff) / s⌋ + 1
"""
from __future__ import annotations

import numbers
from typing import Callable, Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np

from functional_dl._types import Array, Shape
from functional_dl.nn.base import check_input_shape

Padding = Union[str, int, Sequence[int], Sequence[Sequence[int]]]
PadPairs = tuple[tuple[int, int], ...]

#: spatial rank -> (name of the array layout, spatial axis letters)
LAYOUTS = {1: ("NWC", "W"), 2: ("NHWC", "HW"), 3: ("NDHWC", "DHW")}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def int_tuple(name: str, value, rank: int, *, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int, broadcast, or ``rank`` ints) as a tuple of ints ``>= minimum``."""
    try:
        items = (value,) * rank if _is_int(value) else tuple(value)
    except TypeError:
        items = ()
    if len(items) != rank or not all(_is_int(v) and v >= minimum for v in items):
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be a {bound} int or a sequence of {rank} such ints "
                         f"(one per spatial axis), got {value!r}")
    return tuple(int(v) for v in items)


def window_tuple(name: str, value, *, default_rank: Optional[int] = 2) -> tuple[int, ...]:
    """A window (``kernel_size``, ``window_shape``): 1 to 3 positive ints; its length is
    the spatial rank.  A bare int means ``default_rank`` axes of that size (TypeError
    where ``default_rank`` is None: the rank would be a guess)."""
    if _is_int(value):
        if default_rank is None:
            raise TypeError(f"{name} must be a sequence of 1, 2 or 3 ints (its length is the "
                            f"spatial rank: ({value},) for 1-D, ({value}, {value}) for 2-D), "
                            f"got the int {value!r}")
        return int_tuple(name, value, default_rank)
    try:
        rank = len(value)
    except TypeError:
        rank = 0
    if rank not in LAYOUTS:
        raise ValueError(f"{name} must be a sequence of 1, 2 or 3 positive ints (its length "
                         f"is the spatial rank), got {value!r}")
    return int_tuple(name, value, rank)


def normalize_padding(name: str, padding: Padding, rank: int) -> Union[str, PadPairs]:
    """``"SAME"``, ``"VALID"`` or ``rank`` ``(before, after)`` pairs of ints ``>= 0``.

    An int ``p`` pads every side by ``p``; ``rank`` ints pad both sides of their axis.
    """
    expected = (f"'SAME', 'VALID', an int, {rank} ints or {rank} (before, after) pairs of "
                f"non-negative ints")
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{name} must be {expected}, got {padding!r}")
        return padding.upper()
    if _is_int(padding):
        padding = (padding,) * rank
    try:
        pairs = tuple((p, p) if _is_int(p) else tuple(p) for p in padding)
    except TypeError:
        pairs = ()
    if (len(pairs) != rank or any(len(pair) != 2 for pair in pairs)
            or not all(_is_int(p) and p >= 0 for pair in pairs for p in pair)):
        raise ValueError(f"{name} must be {expected}, got {padding!r}")
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
    """The ``(before, after)`` padding of ``"SAME"`` (module docstring)."""
    total = max((-(-size // stride) - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def explicit_pads(padding: Union[str, PadPairs], sizes: Sequence[int],
                  windows: Sequence[int], strides: Sequence[int]) -> PadPairs:
    """The ``(before, after)`` pairs that ``padding`` stands for on these axes."""
    if padding == "VALID":
        return ((0, 0),) * len(sizes)
    if padding == "SAME":
        return tuple(same_pads(n, k, s) for n, k, s in zip(sizes, windows, strides))
    return tuple(padding)


def conv_output_size(size: int, window: int, stride: int, padding) -> int:
    """Output length of one spatial axis (formulas in the module docstring).

    ``window`` is the effective window ``k_eff``; ``padding`` is ``"SAME"``, ``"VALID"``
    or a ``(before, after)`` pair; ``-1`` (unknown) stays ``-1``.
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


def layout(rank: int, channels="C") -> str:
    """``"NHWC (N, H, W, C)"`` for ``rank = 2`` (``channels`` may name the size)."""
    name, letters = LAYOUTS[rank]
    return f"{name} ({', '.join(('N',) + tuple(letters) + (str(channels),))})"


def check_spatial_shape(owner: str, input_shape, rank: int) -> Shape:
    """``input_shape`` checked to be ``(N, *spatial, C)`` with all but ``N`` known."""
    return check_input_shape(owner, input_shape, ranks=(rank + 2,), known_from=1,
                             layout=layout(rank))


def check_spatial_input(owner: str, x, rank: int, channels=None) -> None:
    """ValueError unless ``x`` is one batch ``(N, *spatial, C)`` or one example
    ``(*spatial, C)`` (with ``C = channels`` when given)."""
    shape = tuple(jnp.shape(x))
    if len(shape) not in (rank + 1, rank + 2) or (channels is not None
                                                  and shape[-1] != channels):
        _, letters = LAYOUTS[rank]
        c = "C" if channels is None else f"C = {channels}"
        raise ValueError(f"{owner}: x must be a batch {layout(rank)} or one example "
                         f"({', '.join(tuple(letters) + ('C',))}), with {c} channels, "
                         f"got shape {shape}")


def with_batch(x: Array, rank: int, fn: Callable[[Array], Array]) -> Array:
    """``fn`` (written for a batch) applied to a batch, or to one example as a batch of one."""
    if jnp.ndim(x) == rank + 1:
        return fn(jnp.asarray(x)[None])[0]
    return fn(jnp.asarray(x))
