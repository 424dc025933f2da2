"""The input layouts of the fitting functions, and hmmlearn's concatenated one turned into
the padded one (``pad_sequences``).

With E the emission family's event shape, ``(observations, lengths)`` may be

- padded: ``(B, T) + E`` with ``lengths`` (B,) or None (all T);
- one sequence: ``(T,) + E`` with ``lengths`` None or a scalar;
- hmmlearn's concatenated layout: ``(N,) + E`` holding S sequences one after another, with
  ``lengths`` (S,) summing to N.

``as_batch`` turns each into the padded one; the checks run on concrete values (the
concatenated layout needs its lengths eagerly to know T_max).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array

__all__ = ["pad_sequences", "as_batch", "flat_steps"]

_CONCATENATED = ("hmmlearn's concatenated layout: observations (N,) + event shape holding "
                 "the sequences one after another, lengths (S,) of positive integers summing "
                 "to N")
_LAYOUTS = ("observations (B, T) + event shape with lengths (B,) or None (padded), "
            "(T,) + event shape with lengths None or a scalar (one sequence), or " + _CONCATENATED)


def pad_sequences(observations: Any, lengths: Any) -> tuple[Array, Array]:
    """``(padded (S, T_max) + rest, lengths (S,))`` from hmmlearn's concatenated layout.

    ``observations`` ``(N,) + rest`` holds S sequences one after another, ``lengths`` their
    lengths (positive integers summing to N).  Padded positions hold zeros (ignored by
    every function given ``lengths``).
    """
    values = np.asarray(observations)
    if values.ndim < 1:
        raise ValueError(f"observations must have a leading axis of N steps ({_CONCATENATED}), "
                         f"got a scalar")
    lengths_array = np.asarray(lengths)
    if lengths_array.ndim != 1 or lengths_array.size == 0:
        raise ValueError(f"lengths must have shape (S,) for {_CONCATENATED}; got shape "
                         f"{lengths_array.shape}")
    checks.integer_dtype("lengths", lengths_array)
    total = int(lengths_array.sum())
    if np.any(lengths_array < 1) or total != values.shape[0]:
        raise ValueError(f"lengths must be positive and sum to N = {values.shape[0]} (the "
                         f"leading axis of observations) in {_CONCATENATED}; got minimum "
                         f"{lengths_array.min()} and sum {total}")
    padded = np.zeros((lengths_array.size, int(lengths_array.max())) + values.shape[1:],
                      values.dtype)
    starts = np.concatenate([[0], np.cumsum(lengths_array)[:-1]])
    for index, (start, length) in enumerate(zip(starts, lengths_array)):
        padded[index, :length] = values[start:start + length]
    return jnp.asarray(padded), jnp.asarray(lengths_array)


def as_batch(observations: Any, lengths: Any, event_ndim: int) -> tuple[Any, Any]:
    """Any accepted layout (module docstring) as a padded batch ``(B, T) + E`` and its lengths."""
    if not hasattr(observations, "dtype"):
        observations = np.asarray(observations)
    if lengths is not None and not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    ndim, lengths_ndim = np.ndim(observations), None if lengths is None else np.ndim(lengths)
    if ndim == 1 + event_ndim:
        if lengths_ndim == 1:
            return pad_sequences(observations, lengths)
        if lengths_ndim in (None, 0):
            return observations[None], None if lengths is None else jnp.reshape(lengths, (1,))
    elif ndim == 2 + event_ndim and lengths_ndim in (None, 1):
        if lengths is not None and np.shape(lengths)[0] != np.shape(observations)[0]:
            raise ValueError(f"lengths must have shape (B,) = ({np.shape(observations)[0]},) for "
                             f"padded observations of shape {np.shape(observations)}, got "
                             f"{np.shape(lengths)}; the layouts accepted are {_LAYOUTS}"
                             + ("; for hmmlearn's (N, 1) symbols pass X[:, 0]"
                                if event_ndim == 0 else ""))
        return observations, lengths
    shape = np.shape(observations)
    raise ValueError(f"observations of shape {shape} and lengths of shape "
                     f"{None if lengths is None else np.shape(lengths)} match no layout; "
                     f"expected {_LAYOUTS}")


def flat_steps(batch: Any, lengths: Any, event_ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(observations (B·T,) + E, weights (B·T,))``: 1 for an observed step, 0 for padding."""
    values = np.asarray(batch)
    num_sequences, num_steps = values.shape[:2]
    if lengths is None:
        weights = np.ones((num_sequences, num_steps))
    else:
        weights = (np.arange(num_steps) < np.asarray(lengths)[:, None]).astype(np.float64)
    return values.reshape((-1,) + values.shape[2:]), weights.reshape(-1)
