"""The loops of ``_scans`` written for a batch of B sequences at once (batch axis first).

``_scans`` writes each loop for one sequence; under ``vmap`` these versions replace them when
the batch is large enough (``_batching.batch_dispatched``; ``use_batch_loops`` decides).  Each
computes exactly the recursion of its single-sequence twin, for all sequences at once:

- the arrays keep the batch axis first, ``(B, T, K)``, and the loop reads step t of them in
  place (a ``(B, K)`` slice) instead of scanning over a time-major copy: under ``vmap`` a
  scan over a ``(T, K)`` input moves the batch axis second, a transpose of the whole input;
- the results are written in place into ``(B, T, K)`` buffers carried by the loop (stacked
  ``(T, B, K)`` outputs would need another transpose);
- the step's matrix product is one ``(B, K) · (K, K)`` ``dot`` (K multiply-adds for K ≤ 4);
- the exponentials ``b̃_t = exp(ll_t − m_t)`` are formed inside the loop, one ``(B, K)`` slice
  at a time, instead of as a ``(B, T, K)`` array written before it;
- the forward loop shifts by the best *reachable* state at every step (``_scans``' careful
  loop), which costs a few elementwise operations and needs no fallback: a ``cond`` that
  might rerun the batch would copy its ``(B, T, K)`` operands on every call.

Only a constant ``(K, K)`` transition matrix shared by the batch takes these loops (a
time-varying or per-sequence one is batched by ``vmap`` of the single-sequence loop).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array
from functional_dl.hmm._numerics import finite_or_zero, safe_norm, scaled_likelihoods

# Smallest B·K for which the batch loops beat vmap of the single-sequence ones (measured on
# a 2-core CPU, K = 4…32: the multiply-adds win up to B ≈ 64 at K = 8, the dot from B ≈ 128).
BATCH_LOOP_MIN_SIZE = 1024
# Up to this many states a Viterbi step (one sequence or a batch) is a running comparison
# over the predecessors (K elementwise steps); beyond it a (K, K) max and argmax per sequence.
MAX_RUNNING_COMPARISON_STATES = 64


def use_batch_loops(transition_arg: int, values_arg: int):
    """The ``use_batched`` rule of ``_batching.batch_dispatched`` for a function whose
    positional argument ``transition_arg`` is the transition matrix and ``values_arg`` the
    ``(T, K)`` values: batched values, a constant ``(K, K)`` matrix shared by the batch, and
    ``B·K >= BATCH_LOOP_MIN_SIZE`` (read when traced)."""

    def use(axis_size, in_batched, *args):
        transition_matrix, values = args[transition_arg], args[values_arg]
        return (bool(in_batched[values_arg]) and not in_batched[transition_arg]
                and transition_matrix.ndim == 2
                and axis_size * values.shape[-1] >= BATCH_LOOP_MIN_SIZE)

    return use


def _times(weights: Array, matrix: Array) -> Array:
    """``weights @ matrix`` for ``weights`` (B, K): K multiply-adds for K ≤ 4, where they beat
    the matrix library's call on this size, else a ``dot``."""
    num_states = weights.shape[1]
    if num_states > 4:
        return weights @ matrix
    total = weights[:, :1] * matrix[0][None]
    for i in range(1, num_states):
        total = total + weights[:, i:i + 1] * matrix[i][None]
    return total


def with_batch_axis(value: Array | None, batched: bool, batch_size: int) -> Array | None:
    """``value`` with a leading batch axis (broadcast when it is not batched; None stays)."""
    if value is None or batched:
        return value
    return jnp.broadcast_to(value, (batch_size,) + value.shape)


def forward_loop(batch_size: int, initial_probs: Array, transition_matrix: Array,
                 log_likelihoods: Array, initial_batched: bool) -> tuple[Array, Array]:
    """``(filtered (B, T, K), log_norms (B, T))`` of ``_scans._filter``.

    Every step shifts by the best state the prediction can reach (the careful loop of
    ``_scans``; here it costs only a few elementwise operations more than the fast one, so
    it needs no fallback): ``m_t = max {ll_t(k) : p̂_t(k) > 0}`` (0 if none is finite),
    ``j_t = p̂_t ⊙ exp(min(ll_t − m_t, 0))``, ``c_t = Σ_k j_t(k)``, ``α̂_t = j_t / c_t`` (0 when
    ``c_t = 0``), ``log_norms_t = log c_t + m_t``, ``p̂_{t+1} = α̂_t A``, ``p̂_1 = π``.
    """
    num_steps = log_likelihoods.shape[1]
    predicted = with_batch_axis(initial_probs, initial_batched, batch_size)
    info = jnp.finfo(log_likelihoods.dtype)
    lowest, tiny = float(info.min), float(info.tiny)

    def _step(carry, t):
        predicted, filtered_all = carry
        ll_t = lax.dynamic_index_in_dim(log_likelihoods, t, axis=1, keepdims=False)
        # scaled_likelihoods and normalize without their gradient guards (derivatives go
        # through the single-sequence loop): the same values, fewer operations per step
        # (an impossible step, every reachable entry −inf, shifts by `lowest` instead of 0:
        # its c_t is 0 either way)
        shift = jnp.max(jnp.where(predicted > 0, ll_t, -jnp.inf), axis=1, keepdims=True)
        shift = jnp.maximum(shift, lowest)
        joint = predicted * jnp.exp(jnp.minimum(ll_t - shift, 0.0))
        norm = jnp.sum(joint, axis=1)
        filtered = joint / jnp.maximum(norm, tiny)[:, None]  # 0 / tiny = 0 when c_t = 0
        # written in place into the (B, T, K) result: stacking (T, B, K) outputs would need
        # a transpose of the whole array afterwards
        filtered_all = lax.dynamic_update_index_in_dim(filtered_all, filtered, t, axis=1)
        return (_times(filtered, transition_matrix), filtered_all), jnp.log(norm) + shift[:, 0]

    (_, filtered), log_norms = lax.scan(
        _step, (predicted, jnp.zeros_like(log_likelihoods)), jnp.arange(num_steps))
    return filtered, log_norms.T


def backward_loop(batch_size: int, transition_matrix: Array, values: Array, valid: Array | None,
                  floor: float, support: Array | None = None) -> tuple[Array, Array | None]:
    """``(β (B, T, K), support shifts (B, T) or None)`` of ``_scans.backward_scan`` for B
    sequences.

    ``β_T ∝ 1``; ``v = b̃_{t+1} ⊙ β_{t+1}``, ``β_t = (v / max(v · colsum(A), floor)) Aᵀ``;
    uniform rows where ``t + 1`` is padding.  ``values`` is ``b̃`` itself, or, with
    ``support`` (B, T, K) given, the log-likelihoods, from which each step forms ``b̃_{t+1} =
    exp(min(ll_{t+1} − m_{t+1}, 0))`` on the support and 0 off it, ``m_{t+1}`` the best
    log-likelihood in the support (0 if none is finite; ``_numerics.scaled_likelihoods``),
    returned as the support shifts (row 0 included).  Forming ``b̃`` in the loop, one
    ``(B, K)`` slice at a time, is faster than reading a precomputed ``(B, T, K)`` array.
    """
    num_steps, num_states = values.shape[1:]
    uniform = jnp.full((batch_size, num_states), 1.0 / num_states, values.dtype)
    column_sums = jnp.sum(transition_matrix, axis=0)
    transposed = transition_matrix.T

    def _factors(t):
        values_t = lax.dynamic_index_in_dim(values, t, axis=1, keepdims=False)
        if support is None:
            return values_t, None
        support_t = lax.dynamic_index_in_dim(support, t, axis=1, keepdims=False)
        scaled, shift = scaled_likelihoods(values_t, support_t)
        return jnp.where(support_t, scaled, 0.0), shift

    def _step(carry, t):
        """β_t from β_{t+1} and b̃_{t+1}, for t = T − 2 down to 0."""
        next_backward, backward_all = carry
        scaled_next, shift_next = _factors(t + 1)
        weighted = scaled_next * next_backward
        norm = jnp.maximum(jnp.sum(weighted * column_sums[None], axis=1), floor)
        backward = _times(weighted / norm[:, None], transposed)
        if valid is not None:
            restart = ~lax.dynamic_index_in_dim(valid, t + 1, axis=1, keepdims=True)
            backward = jnp.where(restart, uniform, backward)
        # in place into the (B, T, K) result, as in forward_loop
        backward_all = lax.dynamic_update_index_in_dim(backward_all, backward, t, axis=1)
        return (backward, backward_all), shift_next

    last = jnp.broadcast_to(uniform[:, None], values.shape)  # row T − 1 stays uniform
    (_, backward), shifts = lax.scan(_step, (uniform, last), jnp.arange(num_steps - 1),
                                     reverse=True)
    if support is None:
        return backward, None
    return backward, jnp.concatenate([_factors(0)[1][:, None], shifts.T], axis=1)


def best_predecessors(scores: Array, log_transition: Array, index_dtype) -> tuple[Array, Array]:
    """``(max_i s[…, i] + log A_ij, argmax_i …)`` for every j, for ``scores`` (K,) (one
    sequence) or (B, K); ties go to the lowest i.

    Up to ``MAX_RUNNING_COMPARISON_STATES`` a running comparison over i: elementwise work
    that XLA fuses into one kernel per loop step with the max and the argmax together (a
    variadic argmax reduction costs a separate kernel, several times slower at K = 32).
    """
    num_states = log_transition.shape[0]
    one_sequence = scores.ndim == 1
    if num_states > MAX_RUNNING_COMPARISON_STATES:
        candidates = scores[..., :, None] + (log_transition if one_sequence
                                             else log_transition[None])
        return (jnp.max(candidates, axis=-2),
                jnp.argmax(candidates, axis=-2).astype(index_dtype))

    def term(i):
        # a scalar weight for one sequence (slices with kept dimensions cost twice as much)
        weight = scores[i] if one_sequence else scores[:, i:i + 1]
        return weight + (log_transition[i] if one_sequence else log_transition[i][None])

    best = term(0)
    pointers = jnp.zeros(best.shape, index_dtype)
    for i in range(1, num_states):
        candidate = term(i)
        better = candidate > best  # strictly: ties keep the lower index
        best = jnp.where(better, candidate, best)
        pointers = jnp.where(better, jnp.asarray(i, index_dtype), pointers)
    return best, pointers


def viterbi_loop(batch_size: int, first: Array, log_transition: Array, log_likelihoods: Array,
                 valid: Array | None, index_dtype) -> tuple[Array, Array]:
    """``(last scores (B, K), pointers (T − 1, B, K))`` of the Viterbi forward scan.

    ``δ_t = rescale(max_i [δ_{t−1}(i) + log A_ij] + ll_t(j))``; a padded step keeps δ and
    points every state to itself.  The pointers stay time-major for ``backtrack_loop``.
    """
    num_steps, num_states = log_likelihoods.shape[1:]
    state_indices = jnp.arange(num_states, dtype=index_dtype)

    def _step(scores, t):
        ll_t = lax.dynamic_index_in_dim(log_likelihoods, t, axis=1, keepdims=False)
        best, pointers = best_predecessors(scores, log_transition, index_dtype)
        new_scores = best + ll_t
        top = jnp.max(new_scores, axis=1, keepdims=True)
        new_scores = new_scores - jnp.where(jnp.isfinite(top), top, 0.0)
        if valid is not None:
            valid_t = lax.dynamic_index_in_dim(valid, t, axis=1, keepdims=True)
            new_scores = jnp.where(valid_t, new_scores, scores)
            pointers = jnp.where(valid_t, pointers, state_indices)
        return new_scores, pointers

    return lax.scan(_step, first, jnp.arange(1, num_steps))


def backtrack_loop(last: Array, pointers: Array) -> Array:
    """``z (B, T − 1)`` before the last step: ``z_t = ψ_{t+1}(z_{t+1})`` for every sequence,
    read by a mask (no gather)."""
    state_indices = jnp.arange(pointers.shape[-1], dtype=pointers.dtype)

    def _step(state, pointers_next):
        previous = jnp.sum(jnp.where(state_indices[None] == state[:, None], pointers_next, 0),
                           axis=1, dtype=pointers.dtype)
        return previous, previous

    _, earlier = lax.scan(_step, last, pointers, reverse=True)
    return earlier.T


# ---------------------------------------------------------------- the batch rules of _scans
# (``batched(B, in_batched, *args)`` of ``batch_dispatched``: the arguments of the
# single-sequence function, batched ones with the batch axis first)

def filter_batch(batch_size, in_batched, initial_probs, transition_matrix, log_likelihoods,
                 valid):
    """``_scans._filter`` for B sequences: ``(filtered, log_norms, NaN marks)``.  In this loop
    a NaN (in ll, π or A) reaches ``c_t`` and every later one, so ``log_norms`` itself marks
    the NaN rows; no second pass over the log-likelihoods is needed."""
    filtered, log_norms = forward_loop(batch_size, initial_probs, transition_matrix,
                                       log_likelihoods, in_batched[0])
    return filtered, log_norms, log_norms


def backward_scan_batch(batch_size, in_batched, transition_matrix, scaled, valid):
    """``_scans.backward_scan`` for B sequences."""
    valid = with_batch_axis(valid, in_batched[2], batch_size)
    return backward_loop(batch_size, transition_matrix.astype(scaled.dtype), scaled, valid,
                         safe_norm(scaled.dtype))[0]


def backward_pass_batch(batch_size, in_batched, transition_matrix, log_likelihoods, support,
                        valid, scaled, shifts):
    """``_scans._backward_pass`` for B sequences: ``b̃`` formed inside the loop, on the
    support (no cond, which would copy its (B, T, K) operands), then once more,
    elementwise, for what smoothing reads."""
    valid = with_batch_axis(valid, in_batched[3], batch_size)
    support = with_batch_axis(support, in_batched[2], batch_size)
    backward, support_shifts = backward_loop(
        batch_size, transition_matrix.astype(log_likelihoods.dtype), log_likelihoods, valid,
        safe_norm(log_likelihoods.dtype), support)
    excess = log_likelihoods - support_shifts[..., None]
    # where, not minimum, as in scaled_likelihoods: off-support entries may exceed 0
    scaled = jnp.where(support, jnp.exp(jnp.where(excess > 0, 0.0, excess)), 0.0)
    return scaled, support_shifts, backward
