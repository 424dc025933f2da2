"""Eager argument checks shared by the sub-packages.

Each raises ``ValueError`` (or ``TypeError``) with a message that names the argument and
says what was expected.  They run in Python on concrete values; on a tracer (inside ``jit``)
the value checks are skipped and only static properties (shape, dtype) are checked.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value that can be inspected eagerly (not a jit tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_in_range(name: str, value: Any, low: float, high: float, *,
                   low_closed: bool = True, high_closed: bool = False) -> None:
    """Raise ``ValueError`` unless ``low <= value < high`` (brackets set by the flags)."""
    if not is_concrete(value) or callable(value):
        return
    v = float(np.asarray(value))
    ok_low = v >= low if low_closed else v > low
    ok_high = v <= high if high_closed else v < high
    if not (ok_low and ok_high):
        lo = "[" if low_closed else "("
        hi = "]" if high_closed else ")"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")


def check_non_negative(name: str, value: Any) -> None:
    """Raise ``ValueError`` when a concrete scalar ``value`` is negative or NaN."""
    if not is_concrete(value) or callable(value):
        return
    v = float(np.asarray(value))
    if not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    """Raise ``ValueError`` when a concrete scalar ``value`` is not > 0."""
    if not is_concrete(value) or callable(value):
        return
    v = float(np.asarray(value))
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_key(name: str, key: Any, *, what: str = "this call") -> None:
    """Raise ``ValueError`` when a PRNG key is required but ``None`` was given."""
    if key is None:
        raise ValueError(f"{name}: a PRNG key is needed for {what}; pass {name}=jax.random.key(0)")
    dtype = getattr(key, "dtype", None)
    is_typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    is_raw = dtype == np.uint32 and np.ndim(key) >= 1  # legacy raw keys (any impl)
    if not (is_typed or is_raw):
        raise TypeError(f"{name} must be a PRNG key (jax.random.key(seed)), got "
                        f"{type(key).__name__} {getattr(key, 'dtype', '')}".rstrip())
