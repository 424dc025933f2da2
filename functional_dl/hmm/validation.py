"""The checks an HMM entry point or an emission family needs beyond ``functional_dl.checks``.

Observations come as one sequence ``(T,) + event_shape`` or a batch ``(B, T) + event_shape``,
possibly padded: positions ``t >= length`` may hold anything and are never checked.  The
functions here take the boolean mask of non-padded positions (``valid``, shape ``(T,)`` or
``(B, T)``, or None when nothing is padded) that ``valid_positions`` returns, and, like
``functional_dl.checks``, run their value checks only on concrete arrays: under ``jit`` they
check shapes and dtypes and skip the values.

A family's ``check(observations, valid)`` is typically ``symbol_observations`` or
``vector_observations`` plus its own rule on ``observed_values``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from functional_dl import checks

__all__ = ["valid_positions", "observed_values", "symbol_observations", "vector_observations",
           "positive_entries"]


def valid_positions(observations: Any, lengths: Any, event_ndim: int, *,
                    name: str = "lengths") -> Optional[np.ndarray]:
    """Check ``lengths`` against ``observations``; return the mask of non-padded positions.

    ``lengths`` is None (nothing padded), or integers in ``[1, T]`` with the batch shape of
    ``observations`` (a scalar for one sequence, ``(B,)`` for a batch).  ``name`` is the
    argument's name in messages (``length`` for the single-sequence functions).  Returns None
    when ``lengths`` is None or traced.
    """
    shape = tuple(np.shape(observations))
    if len(shape) < 1 + event_ndim:
        hint = "; for scalar data use observations[..., None]" if event_ndim == 1 else ""
        raise ValueError(f"observations must have at least {1 + event_ndim} dimension(s) "
                         f"((T,) + event shape), got shape {shape}{hint}")
    leading = shape[:len(shape) - event_ndim]
    num_steps, batch_shape = leading[-1], leading[:-1]
    if num_steps < 1:
        raise ValueError(f"observations must hold at least one time step, got shape {shape}")
    if lengths is None:
        return None
    if tuple(np.shape(lengths)) != batch_shape:
        raise ValueError(f"{name} must have the batch shape of observations, {batch_shape}, "
                         f"got shape {tuple(np.shape(lengths))}")
    checks.integer_dtype(name, lengths)
    values = checks.concrete_values(lengths)
    if values is None:
        return None
    if np.any(values[0] < 1) or np.any(values[0] > num_steps):
        raise ValueError(f"{name} must be in [1, T] = [1, {num_steps}], got "
                         f"{np.min(values[0])}..{np.max(values[0])}")
    return np.arange(num_steps) < values[0][..., None]


def observed_values(observations: Any, valid: Optional[np.ndarray],
                    event_ndim: int) -> Optional[np.ndarray]:
    """The concrete observations at non-padded positions, ``(N,) + event_shape``; None if traced."""
    values = checks.concrete_values(observations)
    if values is None:
        return None
    shape = np.shape(values[0])
    flat = values[0].reshape((-1,) + shape[len(shape) - event_ndim:])
    return flat if valid is None else flat[np.reshape(valid, -1)]


def symbol_observations(observations: Any, valid: Optional[np.ndarray], num_symbols: int, *,
                        source: str = "emissions.probs") -> None:
    """Integer symbols in ``[0, num_symbols)`` at non-padded positions (``source`` names V's origin)."""
    checks.integer_dtype("observations", observations, what="integer symbols")
    if len(np.shape(observations)) < 1:
        raise ValueError("observations must have shape (T,) or (B, T), got a scalar")
    values = observed_values(observations, valid, 0)
    if values is None:
        return
    outside = values[(values < 0) | (values >= num_symbols)]
    if outside.size:
        raise ValueError(f"observations must be symbols in [0, {num_symbols}) (V from {source}), "
                         f"got {outside.min()}..{outside.max()}")


def vector_observations(observations: Any, valid: Optional[np.ndarray], num_features: int, *,
                        source: str = "means") -> None:
    """Real vectors ``(T, D)`` or ``(B, T, D)`` with ``D = num_features``, finite where not padded."""
    shape = tuple(np.shape(observations))
    if len(shape) < 2 or shape[-1] != num_features:
        raise ValueError(f"observations must have shape (T, D) or (B, T, D) with D = "
                         f"{num_features} (from {source}), got shape {shape}; "
                         "for scalar data use observations[..., None]")
    checks.real_dtype("observations", observations)
    values = observed_values(observations, valid, 1)
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError("observations must be finite at non-padded positions, got NaN or infinity")


def positive_entries(name: str, x: Any) -> None:
    """ValueError unless every entry of a concrete ``x`` is finite and ``> 0``."""
    values = checks.concrete_values(x)
    if values is not None and not np.all(np.isfinite(values[0]) & (values[0] > 0)):
        raise ValueError(f"{name} must be finite and > 0, got minimum {np.min(values[0]):.6g}")
