"""The loops of sequential HMM inference: fast forward pass, careful fallback, backward pass.

The transition matrix is ``(K, K)`` or time-varying ``(T − 1, K, K)`` (``A[t]`` takes ``z_t``
to ``z_{t+1}``); a constant one is closed over by the loops, a time-varying one is a loop
input (``per_step``).

Everything here works on a ``(T, K)`` matrix of log-likelihoods whose padded rows have been
set to 0 (``masked``) and returns unmasked quantities for ``inference`` to assemble.  The
masking and ``path_log_prob`` serve the parallel functions too.

The forward pass is scaled (Rabiner 1989): with ``b̃_t = exp(ll_t − m_t)``,

    α̂_1 ∝ π ⊙ b̃_1,   α̂_t ∝ (α̂_{t−1}ᵀ A) ⊙ b̃_t,   c_t = normaliser,
    log p(x_{1:T}) = Σ_t (log c_t + m_t).

Everything that does not need the recursion happens outside the loop, for all t at once:
the shifts ``m_t``, the exponentials, ``log c_t`` and the sum (one reduction, which rounds far
less than a running sum inside the loop), and the masking of padded steps.  The loop body is a product, a sum, a division and
``α̂ᵀ A`` (written out as K multiply-adds for small K: a ``dot`` call costs more than the work).

Two passes.  The fast pass shifts each row by its overall best state, ``m_t = max_k ll_t(k)``.
That underflows only when every state the chain can reach fits ``x_t`` far worse than one it
cannot reach (a chain stuck in a poorly fitting state beside an unreachable, well fitting
one: zeros in π, A or the emissions), or when ``x_t`` is impossible; a normaliser below
``√tiny`` (1e-19 in float32) flags it, and ``lax.cond`` then reruns the sequence with the
careful loop, which shifts by the best state the prediction can reach (``scaled_likelihoods``),
so the largest term of ``c_t`` is ``p_k·1`` and ``c_t`` cannot underflow while the true value
is positive.  Under ``vmap`` the flag is shared by the batch (``any_in_batch``), so a batch
runs the careful loop only if one of its sequences needs it.  The backward pass and the
smoother reuse the fast pass's ``b̃``: as it is when every state is possible at every step,
else restricted to the forward support (a new exponential only where the support's best
state is not the overall best).

Under ``vmap``, a large batch runs ``_batched_scans``' loops instead of these (``_filter``,
``_backward_pass``, ``backward_scan`` are ``_batching.batch_dispatched``); derivatives always
come from the loops here.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array
from functional_dl.hmm import _batched_scans
from functional_dl.hmm._batching import batch_dispatched, one_at_a_time
from functional_dl.hmm._numerics import (any_in_batch, finite_or_zero, last_axis_sum,
                                         normalize, safe_divide, safe_log, safe_norm,
                                         scaled_likelihoods, valid_mask, weighted_row_sum)


def masked(log_likelihoods: Array, length: Array | None) -> tuple[Array, Array | None]:
    """(log-likelihoods with padded rows set to 0, validity mask); no mask when ``length`` is None.

    Padded rows of 0 keep every loop step finite; their results are masked after the loop,
    so no step inside a loop tests for padding (``length=None`` skips even that, statically).
    """
    if length is None:
        return log_likelihoods, None
    valid = valid_mask(log_likelihoods.shape[0], length)
    return jnp.where(valid[:, None], log_likelihoods, 0.0), valid


def path_log_prob(initial_probs: Array, log_transition: Array, log_likelihoods: Array,
                  states: Array, valid: Array) -> Array:
    """``log π_{z_1} + ll_1(z_1) + Σ_{t<L} [log A_{z_{t−1} z_t} + ll_t(z_t)]`` summed directly.

    Summing the decoded path once is more accurate than the running Viterbi offsets, which
    accumulate one rounding per step.
    """
    num_steps = log_likelihoods.shape[0]
    if log_transition.ndim == 3:  # one matrix per step
        transitions = log_transition[jnp.arange(num_steps - 1), states[:-1], states[1:]]
    else:
        transitions = log_transition[states[:-1], states[1:]]
    steps = (transitions
             + log_likelihoods[jnp.arange(1, num_steps), states[1:]])
    return (safe_log(initial_probs)[states[0]] + log_likelihoods[0, states[0]]
            + jnp.sum(jnp.where(valid[1:], steps, 0.0)))


def has_nan(initial_probs: Array, transition_matrix: Array, maxima: Array) -> Array:
    """``nan_rows(...)[-1]``, whether any step (or π, A) holds a NaN, without the first-row
    search (one reduction: what a log-likelihood alone needs)."""
    if maxima.ndim == 2:
        maxima = jnp.max(maxima, axis=1)
    return (jnp.any(jnp.isnan(maxima)) | jnp.any(jnp.isnan(initial_probs))
            | jnp.any(jnp.isnan(transition_matrix)))


def nan_rows(initial_probs: Array, transition_matrix: Array, maxima: Array) -> Array:
    """``(T,)``: True from the first step whose (masked) log-likelihoods hold a NaN on; all
    True when π or A holds one.  ``maxima`` is ``max_k ll_t(k)`` for each t (or the ``(T, K)``
    log-likelihoods themselves): a row's maximum is NaN exactly when the row holds a NaN
    (XLA's max propagates NaN), and the loops compute it anyway.  NaN is never a
    probability: the results it touches are NaN (``−inf`` stays reserved for an impossible
    observation)."""
    if maxima.ndim == 2:
        maxima = jnp.max(maxima, axis=1)
    in_parameters = jnp.any(jnp.isnan(initial_probs)) | jnp.any(jnp.isnan(transition_matrix))
    rows = jnp.isnan(maxima)
    num_steps = rows.shape[0]
    # from the first such row on: an argmax, not a running sum (a cumsum over a vmapped
    # (B, T) array is a slow reduce-window on CPU)
    first = jnp.where(jnp.any(rows), jnp.argmax(rows), num_steps)
    return jnp.arange(num_steps) >= jnp.where(in_parameters, 0, first)


def per_step(transition_matrix: Array, num_steps: int) -> Array | None:
    """The loop input for the forward loop's transitions: None for a constant ``(K, K)``
    matrix (the loop closes over it, as before), else ``A[t]`` for each of the ``T`` steps of
    a time-varying ``(T − 1, K, K)`` one, the last step predicting nothing (the identity keeps
    the loop's shapes)."""
    if transition_matrix.ndim == 2:
        return None
    eye = jnp.eye(transition_matrix.shape[-1], dtype=transition_matrix.dtype)
    return jnp.concatenate([transition_matrix, eye[None]], axis=0)


def predict_all(filtered: Array, transition_matrix: Array) -> Array:
    """``p(z_{t+1} | x_{≤t}) = α̂_tᵀ A_t`` for all t < T − 1 at once, ``(T − 1, K)``."""
    if transition_matrix.ndim == 2:
        return filtered[:-1] @ transition_matrix.astype(filtered.dtype)
    return jnp.einsum("tk,tkj->tj", filtered[:-1], transition_matrix.astype(filtered.dtype))


def mask_rows(values: Array, valid: Array | None, fill=0.0) -> Array:
    """``values`` with the rows at padded positions replaced by ``fill``."""
    if valid is None:
        return values
    return jnp.where(valid.reshape(valid.shape + (1,) * (values.ndim - 1)), values, fill)


class ForwardPass(NamedTuple):
    """What the forward pass gives the smoother and the log-likelihood."""
    filtered: Array  # (T, K), padded rows 0
    log_likelihood: Array  # scalar
    shifts: Array  # (T,), m_t = max_k ll[t, k]: the shift of ``scaled``
    scaled: Array  # (T, K), exp(ll − m_t)


def _single_forward_scan(initial_probs: Array, transition_matrix: Array,
                         log_likelihoods: Array) -> tuple[Array, Array, Array]:
    """The fast loop for one sequence: ``(filtered, norms, maxima)``, ``maxima[t] = max_k
    ll_t(k)``; per step one product, one sum, one division and the prediction ``α̂_tᵀ A``, on
    exponentials ``b̃ = exp(ll − m)`` (``m`` the finite maxima, else 0) formed before the loop."""
    floor = safe_norm(log_likelihoods.dtype)  # results with c_t below it are discarded

    def _step(predicted, inputs):
        """Condition the predicted p(z_t | x_{<t}) on x_t, then predict z_{t+1}."""
        scaled_t, transition_t = inputs
        transition_t = transition_matrix if transition_t is None else transition_t
        joint = predicted * scaled_t
        norm = jnp.sum(joint)
        filtered = joint / jnp.maximum(norm, floor)
        return weighted_row_sum(filtered, transition_t), (filtered, norm)

    maxima = jnp.max(log_likelihoods, axis=1)
    scaled = jnp.exp(log_likelihoods - lax.stop_gradient(finite_or_zero(maxima))[:, None])
    _, (filtered, norms) = lax.scan(_step, initial_probs,
                                    (scaled, per_step(transition_matrix, scaled.shape[0])))
    return filtered, norms, maxima


def _careful_forward_scan(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array):
    """The fallback loop: each step shifts by the best state the prediction can reach."""

    def _step(predicted, inputs):
        """As in ``_forward_scan``, with ``b̃_t`` computed from the support of the prediction."""
        ll_t, transition_t = inputs
        transition_t = transition_matrix if transition_t is None else transition_t
        scaled, shift = scaled_likelihoods(ll_t, predicted > 0)
        filtered, norm = normalize(predicted * scaled)
        return (weighted_row_sum(filtered, transition_t),
                (filtered, safe_log(norm) + shift))

    _, (filtered, log_norms) = lax.scan(
        _step, initial_probs, (log_likelihoods,
                               per_step(transition_matrix, log_likelihoods.shape[0])))
    return filtered, log_norms


def _single_filter(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   valid: Array | None) -> tuple[Array, Array, Array]:
    """``(filtered, log_norms, maxima)`` of one sequence: fast pass, careful fallback.

    The fast pass shifts every row by its overall best state, ``b̃_t = exp(ll_t − m_t)``, all
    outside the loop.  It is exact unless the states the chain can reach all fit ``x_t`` far
    worse than one it cannot reach (zeros in π, A or the emissions), when ``c_t`` underflows;
    any ``c_t`` below ``safe_norm`` (or an impossible observation, ``c_t = 0``) reruns the
    sequence with the careful loop, which shifts by the best *reachable* state.
    ``log_norms_t = log c_t + m_t``; ``maxima_t = max_k ll_t(k)`` (NaN for a NaN row), the
    NaN marks of ``forward_pass``: NaN exactly at the rows that hold a NaN.
    """
    filtered, norms, maxima = _single_forward_scan(initial_probs, transition_matrix,
                                                   log_likelihoods)
    shifts = lax.stop_gradient(finite_or_zero(maxima))
    usable = norms >= safe_norm(log_likelihoods.dtype)
    if valid is not None:
        usable = usable | ~valid

    def _fast(_):
        return filtered, jnp.log(jnp.where(usable, norms, 1.0)) + shifts

    def _careful(_):
        return _careful_forward_scan(initial_probs, transition_matrix, log_likelihoods)

    filtered, log_norms = lax.cond(any_in_batch(~jnp.all(usable)), _careful, _fast, None)
    return filtered, log_norms, maxima


# one sequence as written above; under vmap, large batches run the careful batch loop (which
# needs no fallback, so no cond: a cond would copy the (B, T, K) input it might rerun on)
_filter = batch_dispatched(_single_filter, _batched_scans.filter_batch,
                           _batched_scans.use_batch_loops(1, 2))


def forward_pass(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                 valid: Array | None) -> ForwardPass:
    """Filtered marginals and ``log p`` of (masked) log-likelihoods (see ``_single_filter``)."""
    dtype = log_likelihoods.dtype
    initial_probs = initial_probs.astype(dtype)
    transition_matrix = transition_matrix.astype(dtype)
    filtered, log_norms, nan_marks = _filter(initial_probs, transition_matrix,
                                             log_likelihoods, valid)
    # for the single-sequence backward pass (unused, so not computed, after the batch loop);
    # the same maximum as the one the single loop shifts by
    shifts = lax.stop_gradient(finite_or_zero(jnp.max(log_likelihoods, axis=1)))
    scaled = jnp.exp(log_likelihoods - shifts[:, None])
    log_lik = jnp.sum(mask_rows(log_norms, valid))
    # the fast loop reads a NaN as "no mass" (a comparison with NaN is False): put it back
    log_lik = jnp.where(has_nan(initial_probs, transition_matrix, nan_marks), jnp.nan, log_lik)
    poisoned = nan_rows(initial_probs, transition_matrix, nan_marks)  # only if filtered is used
    filtered = jnp.where(poisoned[:, None], jnp.nan, filtered)
    return ForwardPass(mask_rows(filtered, valid), log_lik, shifts, scaled)


def backward_likelihoods(log_likelihoods: Array, support: Array,
                         forward: ForwardPass | None = None) -> tuple[Array, Array]:
    """``(b̃, m)``: ``b̃ = exp(ll − m)`` on the support (``m`` its best entry per row), 0 off it.

    With the forward pass given: when every state is in the support at every step (no zeros
    in π, A or the emissions made a state impossible) that is the forward pass's own
    ``(scaled, shifts)``, reused as they are; otherwise its ``scaled`` restricted to the
    support, unless some row's best state lies outside the support, which needs a new
    exponential.
    """

    def _restricted(_):
        candidates = jnp.where(support, log_likelihoods, -jnp.inf)
        support_shifts = lax.stop_gradient(finite_or_zero(jnp.max(candidates, axis=1)))

        def _recompute(_):
            excess = log_likelihoods - support_shifts[:, None]
            # where, not minimum, as in scaled_likelihoods: off-support entries may exceed 0
            return jnp.where(support, jnp.exp(jnp.where(excess > 0, 0.0, excess)), 0.0)

        if forward is None:
            return _recompute(None), support_shifts

        def _reuse(_):
            return jnp.where(support, forward.scaled, 0.0)

        shifted_elsewhere = jnp.any(support_shifts != forward.shifts)
        return lax.cond(any_in_batch(shifted_elsewhere), _recompute, _reuse, None), support_shifts

    if forward is None:
        return _restricted(None)

    def _everywhere(_):  # every state possible at every step: b̃ and m are the forward pass's
        return forward.scaled, forward.shifts

    return lax.cond(any_in_batch(~jnp.all(support)), _restricted, _everywhere, None)


def _single_backward_scan(transition_matrix: Array, scaled: Array,
                          valid: Array | None) -> Array:
    """``β_t ∝ A (b̃_{t+1} ⊙ β_{t+1})`` by a reverse scan; uniform rows from ``L − 1`` on.

    The normaliser ``Σ_i (A v)_i = v · (column sums of A)`` (``v = b̃_{t+1} ⊙ β_{t+1}``) is one
    sum over ``v``, so each step is one product, one sum and ``A (v / norm)``.
    """
    num_states = scaled.shape[1]
    uniform = jnp.full((num_states,), 1.0 / num_states, scaled.dtype)
    transition_matrix = transition_matrix.astype(scaled.dtype)
    # A v = Σ_j v_j A[:, j]: the columns as rows; per step for a time-varying (T − 1, K, K) A
    columns = jnp.swapaxes(transition_matrix, -1, -2)
    column_sums = jnp.sum(transition_matrix, axis=-2)
    varying = transition_matrix.ndim == 3
    floor = safe_norm(scaled.dtype)  # a row summing to less stays unnormalised (β is a ratio)

    def _step(next_backward, inputs):
        """One step back in time: β_t from β_{t+1} and the observation x_{t+1}."""
        scaled_next, restart, step_columns, step_sums = inputs
        if step_columns is None:
            step_columns, step_sums = columns, column_sums
        weighted = scaled_next * next_backward
        norm = jnp.maximum(jnp.sum(weighted * step_sums), floor)
        backward = weighted_row_sum(weighted / norm, step_columns)
        if restart is not None:  # padded: t >= L − 1 restarts from β ∝ 1
            backward = jnp.where(restart, uniform, backward)
        return backward, backward

    restart = None if valid is None else ~valid[1:]
    per_step_inputs = (columns, column_sums) if varying else (None, None)
    _, backward = lax.scan(_step, uniform, (scaled[1:], restart) + per_step_inputs,
                           reverse=True)
    return jnp.concatenate([backward, uniform[None, :]], axis=0)


# one sequence as written above; under vmap, large batches run the batch loop
backward_scan = batch_dispatched(_single_backward_scan, _batched_scans.backward_scan_batch,
                                 _batched_scans.use_batch_loops(0, 1))


def _single_backward_pass(transition_matrix, log_likelihoods, support, valid, scaled, shifts):
    """``(b̃, support shifts, β)`` of one sequence (``backward_likelihoods``, ``backward_scan``)."""
    forward = ForwardPass(None, None, shifts, scaled)
    scaled, support_shifts = backward_likelihoods(log_likelihoods, support, forward)
    return scaled, support_shifts, _single_backward_scan(transition_matrix, scaled, valid)


_backward_pass = batch_dispatched(_single_backward_pass, _batched_scans.backward_pass_batch,
                                  _batched_scans.use_batch_loops(0, 1))


class Smoothed(NamedTuple):
    """What one forward-backward pass gives the smoother and the log-likelihood's derivatives."""
    forward: ForwardPass
    smoothed: Array  # (T, K) γ
    backward: Array  # (T, K) β, rows normalised
    support_shifts: Array  # (T,) m_t of the backward likelihoods
    weights: Array  # (T − 1, K) X_t = α̂_t / n_t (0 where t + 1 is padding)
    future: Array  # (T − 1, K) Y_t = b̃_{t+1} ⊙ β_{t+1}


def _smooth(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
            valid: Array | None) -> Smoothed:
    """Forward-backward on masked log-likelihoods (see ``inference.smoother``)."""
    forward = forward_pass(initial_probs, transition_matrix, log_likelihoods, valid)
    filtered = forward.filtered
    support = mask_rows(filtered > 0, valid, True)
    scaled, support_shifts, backward = _backward_pass(transition_matrix, log_likelihoods,
                                                      support, valid, forward.scaled,
                                                      forward.shifts)
    joint = filtered * backward
    smoothed = joint * safe_divide(1.0, last_axis_sum(joint))[:, None]
    predicted = predict_all(filtered, transition_matrix)  # all t at once
    future = scaled[1:] * backward[1:]
    inverse_norms = safe_divide(1.0, last_axis_sum(predicted * future))
    if valid is not None:
        inverse_norms = jnp.where(valid[1:], inverse_norms, 0.0)
    poisoned = jnp.isnan(forward.log_likelihood)  # a NaN anywhere: every posterior is NaN
    smoothed = mask_rows(jnp.where(poisoned, jnp.nan, smoothed), valid)
    inverse_norms = jnp.where(poisoned, jnp.nan, inverse_norms)
    return Smoothed(forward, smoothed, backward, support_shifts,
                     inverse_norms[:, None] * filtered[:-1], future)




smooth = one_at_a_time(_smooth)
