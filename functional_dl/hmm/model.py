"""The hidden Markov model as data, and its eager argument check.

``HMM(initial_probs, transition_matrix, emissions)`` with K hidden states:
``initial_probs[k] = p(z_1 = k)``, ``transition_matrix[i, j] = p(z_t = j | z_{t−1} = i)``, and
``emissions`` any emission model of ``functional_dl.hmm.emissions`` (``b_k(x) = p(x_t = x | z_t = k)``).
The joint probability of states and observations is

    p(z_{1:T}, x_{1:T}) = π_{z_1} b_{z_1}(x_1) Π_{t=2..T} A_{z_{t−1} z_t} b_{z_t}(x_t).

(The source text prints this formula garbled; the line above is the one implemented.)
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from functional_dl._types import Array
from functional_dl.hmm import _validation as v


class HMM(NamedTuple):
    """A K-state HMM; a pytree, so it can be jitted, vmapped, differentiated and checkpointed."""
    initial_probs: Array  # (K,)
    transition_matrix: Array  # (K, K), rows sum to 1
    emissions: Any  # an emission model with num_states == K

    @property
    def num_states(self) -> int:
        return self.initial_probs.shape[0]


_EMISSION_METHODS = ("log_likelihoods", "sufficient_stats", "m_step", "sample", "check")


def check(model: HMM, observations: Any = None, lengths: Any = None, *,
          lengths_name: str = "lengths") -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad argument; return None if all is well.

    Checks: ``initial_probs`` ``(K,)`` and ``transition_matrix`` ``(K, K)`` non-negative, finite,
    each row summing to 1 within 1e-4 relative; the emission model's K agrees; the emission
    model's own checks (e.g. categorical probabilities, symbols in ``[0, V)``, Gaussian D and
    positive-definite covariances) on the non-padded observations; ``lengths`` integers in
    ``[1, T]`` with the batch shape of ``observations``.

    ``observations`` is one sequence ``(T,) + event_shape`` (then ``lengths`` is None or a scalar)
    or a batch ``(B, T) + event_shape`` (then ``lengths`` is None or ``(B,)``); with
    ``observations=None`` only the parameters are checked.  Shape checks are
    static and run inside ``jit`` too; value checks run only on concrete (non-traced) arrays.
    ``lengths_name`` is the argument's name in messages (``length`` for one sequence).
    """
    if not isinstance(model, HMM):
        raise TypeError(f"model must be an HMM(initial_probs, transition_matrix, emissions), "
                        f"got {type(model).__name__}")
    emissions = model.emissions
    missing = [name for name in _EMISSION_METHODS if not hasattr(emissions, name)]
    if missing or not hasattr(emissions, "num_states"):
        raise TypeError(f"model.emissions must be an emission model (with num_states and "
                        f"{', '.join(_EMISSION_METHODS)}), got {type(emissions).__name__}")
    v.require_ndim("initial_probs", model.initial_probs, 1, "(K,)")
    num_states = v.shape_of(model.initial_probs)[0]
    if v.shape_of(model.transition_matrix) != (num_states, num_states):
        raise ValueError(f"transition_matrix must have shape (K, K) = {(num_states, num_states)} "
                         f"to match initial_probs, got {v.shape_of(model.transition_matrix)}")
    if emissions.num_states != num_states:
        raise ValueError(f"emissions must describe K = {num_states} states (from initial_probs), "
                         f"got {emissions.num_states}")
    v.check_probability_rows("initial_probs", model.initial_probs)
    v.check_probability_rows("transition_matrix", model.transition_matrix)
    if observations is None:
        emissions.check(None)
        return
    valid = _check_lengths(observations, lengths, emissions.event_ndim, lengths_name)
    emissions.check(observations, valid)


def _check_lengths(observations: Any, lengths: Any, event_ndim: int,
                   name: str = "lengths") -> np.ndarray | None:
    """Validate ``lengths`` (called ``name`` in messages); the mask of non-padded positions
    when concrete."""
    shape = v.shape_of(observations)
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
    if v.shape_of(lengths) != batch_shape:
        raise ValueError(f"{name} must have the batch shape of observations, {batch_shape}, "
                         f"got shape {v.shape_of(lengths)}")
    dtype = v.dtype_of(lengths)
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {dtype}")
    values = v.concrete_values(lengths)
    if values is None:
        return None
    if np.any(values[0] < 1) or np.any(values[0] > num_steps):
        raise ValueError(f"{name} must be in [1, T] = [1, {num_steps}], got "
                         f"{np.min(values[0])}..{np.max(values[0])}")
    return np.arange(num_steps) < values[0][..., None]


def check_one_sequence(model: HMM, observations: Any, length: Any = None) -> None:
    """``check`` for the single-sequence functions: ``observations`` must be ``(T,) + event_shape``."""
    event_ndim = getattr(model.emissions, "event_ndim", 0) if isinstance(model, HMM) else 0
    shape = v.shape_of(observations)
    if len(shape) > 1 + event_ndim:
        raise ValueError(f"observations must be one sequence with {1 + event_ndim} dimension(s) "
                         f"((T,) + event shape), got shape {shape}; use jax.vmap for a batch")
    check(model, observations, length, lengths_name="length")
