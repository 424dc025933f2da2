"""Viterbi decoding of one sequence with ``lax.scan``: the most probable state path.

``δ_1 = log π + ll_1``, ``δ_t(j) = max_i [δ_{t−1}(i) + log A_ij] + ll_t(j)``, in log space with the
running max subtracted at every step, so the comparisons keep full precision even when
``log p`` reaches −10⁶.  Padded positions (``t >= length``) are ignored and decoded as −1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array
from functional_dl.hmm._numerics import (finite_or_zero, safe_log,
                                         state_index_dtype)
from functional_dl.hmm import _batched_scans
from functional_dl.hmm._batching import batch_dispatched
from functional_dl.hmm._scans import has_nan, masked, path_log_prob
from functional_dl.hmm.model import HMM, check_inference_shapes, check_one_sequence, on_model


def _rescale(scores: Array) -> Array:
    """δ minus its best entry (unchanged when every entry is −inf)."""
    return scores - finite_or_zero(jnp.max(scores))


def _single_decode(first: Array, log_transition: Array, log_likelihoods: Array,
                   valid: Array | None) -> Array:
    """The Viterbi path of one sequence (T ≥ 2) from ``δ_1 = first`` (already rescaled)."""
    num_states = log_likelihoods.shape[1]
    # the narrowest integer type that holds a state: the backtracking loop below then touches
    # few enough bytes per step for XLA to compile it as one kernel
    index_dtype = state_index_dtype(num_states)
    state_indices = jnp.arange(num_states, dtype=index_dtype)

    def _step(scores, inputs):
        """δ_t and ψ_t; a padded step keeps δ and points every state to itself."""
        ll_t, valid_t, log_transition_t = inputs
        if log_transition_t is None:  # a constant matrix: closed over
            log_transition_t = log_transition
        best, pointers = _batched_scans.best_predecessors(scores, log_transition_t, index_dtype)
        new_scores = _rescale(best + ll_t)
        if valid_t is not None:
            new_scores = jnp.where(valid_t, new_scores, scores)
            pointers = jnp.where(valid_t, pointers, state_indices)
        return new_scores, pointers

    inputs = (log_likelihoods[1:], None if valid is None else valid[1:],
              log_transition if log_transition.ndim == 3 else None)
    last_scores, pointers = lax.scan(_step, first, inputs)
    last = jnp.argmax(last_scores).astype(index_dtype)

    def _backtrack(state, pointers_next):
        """z_t = ψ_{t+1}(z_{t+1}), read by a mask, not a gather (cheaper under vmap)."""
        previous = jnp.sum(jnp.where(state_indices == state, pointers_next, 0),
                           dtype=index_dtype)
        return previous, previous

    _, earlier = lax.scan(_backtrack, last, pointers, reverse=True)
    return jnp.concatenate([earlier, last[None]]).astype(jnp.result_type(int))


def _batch_decode(batch_size, in_batched, first, log_transition, log_likelihoods, valid):
    """``_single_decode`` for B sequences at once (``_batched_scans``)."""
    first = _batched_scans.with_batch_axis(first, in_batched[0], batch_size)
    valid = _batched_scans.with_batch_axis(valid, in_batched[3], batch_size)
    index_dtype = state_index_dtype(log_likelihoods.shape[-1])
    last_scores, pointers = _batched_scans.viterbi_loop(
        batch_size, first, log_transition, log_likelihoods, valid, index_dtype)
    last = jnp.argmax(last_scores, axis=1).astype(index_dtype)
    earlier = _batched_scans.backtrack_loop(last, pointers)
    return jnp.concatenate([earlier, last[:, None]], axis=1).astype(jnp.result_type(int))


# one sequence as written above; under vmap, large batches run the batch loops
_decode = batch_dispatched(_single_decode, _batch_decode, _batched_scans.use_batch_loops(1, 2))


@jax.jit
def most_likely_states(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                       length: Array | None = None) -> tuple[Array, Array]:
    """Viterbi: ``(argmax_z log p(z, x), max_z log p(z, x))``; padded states are −1.

    ``δ_1 = log π + ll_1``, ``δ_t(j) = max_i [δ_{t−1}(i) + log A_ij] + ll_t(j)`` and
    ``ψ_t(j) = argmax_i [δ_{t−1}(i) + log A_ij]`` in one forward scan (δ shifted by its max at
    every step: δ grows like ``log p``, and unshifted its comparisons would lose precision, in
    float32 0.06 nats at −10⁶, in float64 2e-6 at −10¹⁰), then ``z_L = argmax δ_L``
    and ``z_t = ψ_{t+1}(z_{t+1})`` by a reverse scan.  ``log_prob`` is summed along the
    decoded path.  Ties go to the lowest state index.  When no path is possible the
    log-probability is −inf and the states are arbitrary; a NaN in π, A or the (non-padded)
    log-likelihoods makes it NaN (the states are then arbitrary too).
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length,
                           time_varying=True)
    log_likelihoods, valid = masked(log_likelihoods, length)
    dtype = log_likelihoods.dtype
    log_transition = safe_log(transition_matrix).astype(dtype)
    num_steps, num_states = log_likelihoods.shape
    first = safe_log(initial_probs).astype(dtype) + log_likelihoods[0]
    if num_steps == 1:  # no loop (a scan of length 0 fails with jit disabled)
        states = jnp.argmax(first)[None].astype(jnp.result_type(int))
    else:
        states = _decode(_rescale(first), log_transition, log_likelihoods, valid)
    if valid is None:
        valid = jnp.ones((num_steps,), bool)
    log_prob = path_log_prob(initial_probs, log_transition, log_likelihoods, states, valid)
    # a comparison with NaN is False, so the scan skips NaN entries: report them as NaN
    poisoned = has_nan(initial_probs, transition_matrix, log_likelihoods)
    return jnp.where(valid, states, -1), jnp.where(poisoned, jnp.nan, log_prob)


_model_viterbi = on_model(most_likely_states)


def viterbi(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(states, log_prob)``: the most probable path and its joint ``log p(z_{1:L}, x_{1:L})``."""
    check_one_sequence(model, observations, length)
    return _model_viterbi(model, observations, length)
