"""Eager argument checks for the HMM package (each names the argument it rejects).

Shape checks are static and run everywhere, inside ``jit`` too.  Value checks (signs, sums,
ranges, positive-definiteness) need concrete numbers, so they run only on arrays that are not
jit tracers; inside ``jit``, ``vmap`` or ``grad`` they are skipped.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from functional_dl._checks import is_concrete

ROW_SUM_RTOL = 1e-4


def shape_of(x: Any) -> tuple[int, ...]:
    """Shape of an array-like (``np.shape`` works for lists, NumPy and JAX arrays, tracers)."""
    return tuple(np.shape(x))


def dtype_of(x: Any) -> np.dtype:
    """Dtype of an array-like without converting tracers (``np.asarray`` only for lists)."""
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def require_ndim(name: str, x: Any, ndim: int, what: str) -> None:
    """Raise ``ValueError`` unless ``x`` has ``ndim`` dimensions; ``what`` names the axes."""
    if len(shape_of(x)) != ndim:
        raise ValueError(f"{name} must have shape {what}, got shape {shape_of(x)}")


def require_floating(name: str, x: Any) -> None:
    """Raise ``TypeError`` unless ``x`` has a real floating (or integer) dtype."""
    dtype = dtype_of(x)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")


def concrete_values(*arrays: Any) -> list[np.ndarray] | None:
    """NumPy copies of ``arrays`` when all are concrete, else None (value checks skipped)."""
    if not all(is_concrete(a) for a in arrays):
        return None
    return [np.asarray(a) for a in arrays]


def check_finite(name: str, x: Any) -> None:
    """Raise ``ValueError`` when a concrete array holds NaN or infinity."""
    values = concrete_values(x)
    if values is not None and not np.all(np.isfinite(values[0])):
        raise ValueError(f"{name} must be finite, got NaN or infinity")


def check_probability_rows(name: str, x: Any) -> None:
    """Raise ``ValueError`` unless every entry is >= 0 and every last-axis row sums to 1.

    The sum tolerance is relative, ``|sum - 1| <= 1e-4`` (float32 rounding of long rows stays
    well inside it).
    """
    values = concrete_values(x)
    if values is None:
        return
    probs = values[0].astype(np.float64)
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    if np.any(probs < 0):
        raise ValueError(f"{name} must be non-negative probabilities, got minimum {probs.min():.6g}")
    sums = probs.sum(axis=-1)
    worst = np.max(np.abs(sums - 1.0))
    if worst > ROW_SUM_RTOL:
        where = "" if probs.ndim == 1 else " along its last axis (each row)"
        raise ValueError(f"{name} must sum to 1{where} within {ROW_SUM_RTOL:g} relative, "
                         f"got sums {np.array2string(sums, precision=6)}")


def check_positive_definite(name: str, covariances: Any) -> None:
    """Raise ``ValueError`` unless each ``(D, D)`` matrix is symmetric positive-definite."""
    values = concrete_values(covariances)
    if values is None:
        return
    cov = values[0].astype(np.float64)
    if not np.all(np.isfinite(cov)):
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    scale = np.maximum(np.abs(cov).max(axis=(-2, -1), keepdims=True), np.finfo(np.float64).tiny)
    if np.any(np.abs(cov - np.swapaxes(cov, -1, -2)) > 1e-6 * scale):
        raise ValueError(f"{name} must be symmetric, got an asymmetric matrix")
    smallest = np.linalg.eigvalsh(cov)[..., 0]
    if np.any(smallest <= 0):
        bad = int(np.argmin(smallest))
        raise ValueError(f"{name} must be positive-definite, but {name}[{bad}] has smallest "
                         f"eigenvalue {smallest.min():.6g}")
