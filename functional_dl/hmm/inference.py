"""Sequential HMM inference for one sequence with ``lax.scan`` (batches come from ``jax.vmap``).

Low-level functions take ``(initial_probs, transition_matrix, log_likelihoods, length=None)``
with ``log_likelihoods[t, k] = log p(x_t | z_t = k)`` of shape ``(T, K)``, so any emission model
or a neural network can feed them.  The high-level ``forward``, ``log_likelihood``,
``posteriors`` and ``viterbi`` take ``(model, observations, length=None)``.

Numerics.  The forward pass is scaled (Rabiner 1989): with ``b̃_t = exp(ll_t − m_t)``,

    α̂_1 ∝ π ⊙ b̃_1,   α̂_t ∝ (α̂_{t−1}ᵀ A) ⊙ b̃_t,   c_t = normaliser,   log p(x_{1:T}) = Σ_t (log c_t + m_t).

Everything that does not need the recursion happens outside the loop, for all t at once:
the shifts ``m_t``, the exponentials, ``log c_t`` and the sum (one reduction; in float32 at
T = 10⁵ that measured ~1e-8 relative error, where a running sum inside the loop drifted by
~1e-4), and the masking of padded steps.  The loop body is a product, a sum, a division and
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
smoother reuse the fast pass's ``b̃`` restricted to the forward support (a new exponential
only where the support's best state is not the overall best).

π and A enter only through products, never through their logarithms, so zeros in them give
no NaN in values or gradients.  A step where every reachable state has probability 0 gives
``c_t = 0``, hence ``log p = −inf`` (never NaN), and all later filtered and smoothed
probabilities are 0.  Viterbi works in log space with the running max subtracted at every
step, so the comparisons keep full precision even when ``log p`` reaches −10⁶.

Padding.  Positions ``t >= length`` do not change any result: their log-likelihoods are
ignored (the high-level functions also overwrite padded observations before evaluating the
emission model, so NaN padding cannot leak into gradients).  Padded rows of filtered and
smoothed probabilities are 0, padded Viterbi states are −1.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array
from functional_dl.hmm._numerics import (UNROLLED_MAX_STATES, any_in_batch, finite_or_zero,
                                         normalize, replace_padding, safe_divide, safe_log,
                                         scaled_likelihoods, state_index_dtype, valid_mask,
                                         weighted_row_sum)
from functional_dl.hmm.model import HMM, check_one_sequence


def check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length) -> None:
    """Static shape checks of the low-level arguments (also inside ``jit``); ValueError."""
    if jnp.ndim(log_likelihoods) != 2 or log_likelihoods.shape[0] < 1:
        raise ValueError(f"log_likelihoods must have shape (T, K) with T >= 1, "
                         f"got {jnp.shape(log_likelihoods)}")
    num_states = log_likelihoods.shape[1]
    if initial_probs is not None and jnp.shape(initial_probs) != (num_states,):
        raise ValueError(f"initial_probs must have shape (K,) = ({num_states},) to match "
                         f"log_likelihoods, got {jnp.shape(initial_probs)}")
    if jnp.shape(transition_matrix) != (num_states, num_states):
        raise ValueError(f"transition_matrix must have shape (K, K) = {(num_states, num_states)} "
                         f"to match log_likelihoods, got {jnp.shape(transition_matrix)}")
    if length is not None and jnp.ndim(length) != 0:
        raise ValueError(f"length must be a scalar, got shape {jnp.shape(length)}")


def _masked(log_likelihoods: Array, length: Array | None) -> tuple[Array, Array | None]:
    """(log-likelihoods with padded rows set to 0, validity mask); no mask when ``length`` is None.

    Padded rows of 0 keep every loop step finite; their results are masked after the loop,
    so no step inside a loop tests for padding (``length=None`` skips even that, statically).
    """
    if length is None:
        return log_likelihoods, None
    valid = valid_mask(log_likelihoods.shape[0], length)
    return jnp.where(valid[:, None], log_likelihoods, 0.0), valid


def _mask_rows(values: Array, valid: Array | None, fill=0.0) -> Array:
    """``values`` with the rows at padded positions replaced by ``fill``."""
    if valid is None:
        return values
    return jnp.where(valid.reshape(valid.shape + (1,) * (values.ndim - 1)), values, fill)


def _safe_norm(dtype) -> float:
    """Smallest normaliser the fast loops divide by: √(smallest normal float).

    Above it ``c_t`` keeps full precision and the derivative of ``x / c_t`` (``1 / c_t²``) stays
    finite, so gradients are never ``0 · inf``; about 1e-19 in float32 and 1e-154 in float64.
    """
    return math.sqrt(float(jnp.finfo(dtype).tiny))


class _Forward(NamedTuple):
    filtered: Array  # (T, K), padded rows 0
    log_likelihood: Array  # scalar
    shifts: Array  # (T,), m_t = max_k ll[t, k]: the shift of ``scaled``
    scaled: Array  # (T, K), exp(ll − m_t)


def _forward_scan(initial_probs: Array, transition_matrix: Array,
                  scaled: Array) -> tuple[Array, Array]:
    """The fast loop: ``(filtered, norms)``; per step one product, one sum, one division and
    the prediction ``α̂_tᵀ A``.  (Storing the unnormalised products instead, and dividing
    after the loop, measured faster for one sequence but slower under ``vmap``.)"""
    floor = _safe_norm(scaled.dtype)  # results with c_t below it are discarded by _forward

    def _step(predicted, scaled_t):
        """Condition the predicted p(z_t | x_{<t}) on x_t, then predict z_{t+1}."""
        joint = predicted * scaled_t
        norm = jnp.sum(joint)
        filtered = joint / jnp.maximum(norm, floor)
        return weighted_row_sum(filtered, transition_matrix), (filtered, norm)

    _, (filtered, norms) = lax.scan(_step, initial_probs, scaled)
    return filtered, norms


def _careful_forward_scan(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array):
    """The fallback loop: each step shifts by the best state the prediction can reach."""

    def _step(predicted, ll_t):
        """As in ``_forward_scan``, with ``b̃_t`` computed from the support of the prediction."""
        scaled, shift = scaled_likelihoods(ll_t, predicted > 0)
        filtered, norm = normalize(predicted * scaled)
        return (weighted_row_sum(filtered, transition_matrix),
                (filtered, safe_log(norm) + shift))

    _, (filtered, log_norms) = lax.scan(_step, initial_probs, log_likelihoods)
    return filtered, log_norms


def _forward(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
             valid: Array | None) -> _Forward:
    """Filtered marginals and ``log p`` of (masked) log-likelihoods: fast pass, careful fallback.

    The fast pass shifts every row by its overall best state, ``b̃_t = exp(ll_t − m_t)``, all
    outside the loop.  It is exact unless the states the chain can reach all fit ``x_t`` far
    worse than one it cannot reach (zeros in π, A or the emissions), when ``c_t`` underflows;
    any ``c_t`` below ``_safe_norm`` (or an impossible observation, ``c_t = 0``) reruns the
    sequence with the careful loop, which shifts by the best *reachable* state.
    """
    dtype = log_likelihoods.dtype
    initial_probs = initial_probs.astype(dtype)
    transition_matrix = transition_matrix.astype(dtype)
    shifts = lax.stop_gradient(finite_or_zero(jnp.max(log_likelihoods, axis=1)))
    scaled = jnp.exp(log_likelihoods - shifts[:, None])
    filtered, norms = _forward_scan(initial_probs, transition_matrix, scaled)
    usable = norms >= _safe_norm(dtype)
    if valid is not None:
        usable = usable | ~valid

    def _fast(operands):
        filtered, norms, _ = operands
        return filtered, jnp.log(jnp.where(usable, norms, 1.0)) + shifts

    def _careful(operands):
        _, _, log_likelihoods = operands
        return _careful_forward_scan(initial_probs, transition_matrix, log_likelihoods)

    filtered, log_norms = lax.cond(any_in_batch(~jnp.all(usable)), _careful, _fast,
                                   (filtered, norms, log_likelihoods))
    log_lik = jnp.sum(_mask_rows(log_norms, valid))
    return _Forward(_mask_rows(filtered, valid), log_lik, shifts, scaled)


@jax.jit
def forward_filter(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   length: Array | None = None) -> tuple[Array, Array]:
    """Scaled forward pass: ``(log p(x_{1:L}), filtered)`` with ``filtered[t] = p(z_t | x_{1:t})``.

    ``α̂_t ∝ (α̂_{t−1}ᵀ A) ⊙ exp(ll_t − m_t)`` (``α̂_0ᵀ A`` read as π); ``log p = Σ_t log c_t + m_t``,
    ``c_t`` the normaliser of step t.  ``m_t = max_k ll_t(k)``, or the best among the states
    the prediction can reach when that is needed to avoid underflow (module docstring).
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked(log_likelihoods, length)
    forward_pass = _forward(initial_probs, transition_matrix, log_likelihoods, valid)
    return forward_pass.log_likelihood, forward_pass.filtered


def _backward_likelihoods(log_likelihoods: Array, support: Array,
                          forward_pass: _Forward | None = None) -> tuple[Array, Array]:
    """``(b̃, m)``: ``b̃ = exp(ll − m)`` on the support (``m`` its best entry per row), 0 off it.

    Reuses the forward pass's ``scaled`` (shifted by each row's overall best state) unless
    some row's best state lies outside the support, which needs a new exponential.
    """
    candidates = jnp.where(support, log_likelihoods, -jnp.inf)
    support_shifts = lax.stop_gradient(finite_or_zero(jnp.max(candidates, axis=1)))

    def _recompute(_):
        excess = log_likelihoods - support_shifts[:, None]
        # where, not minimum, as in scaled_likelihoods: off-support entries may exceed 0
        return jnp.where(support, jnp.exp(jnp.where(excess > 0, 0.0, excess)), 0.0)

    if forward_pass is None:
        return _recompute(None), support_shifts

    def _reuse(_):
        return jnp.where(support, forward_pass.scaled, 0.0)

    shifted_elsewhere = jnp.any(support_shifts != forward_pass.shifts)
    scaled = lax.cond(any_in_batch(shifted_elsewhere), _recompute, _reuse, None)
    return scaled, support_shifts


def _backward_scan(transition_matrix: Array, scaled: Array, valid: Array | None) -> Array:
    """``β_t ∝ A (b̃_{t+1} ⊙ β_{t+1})`` by a reverse scan; uniform rows from ``L − 1`` on.

    The normaliser ``Σ_i (A v)_i = v · (column sums of A)`` (``v = b̃_{t+1} ⊙ β_{t+1}``) is one
    sum over ``v``, so each step is one product, one sum and ``A (v / norm)``.
    """
    num_states = scaled.shape[1]
    uniform = jnp.full((num_states,), 1.0 / num_states, scaled.dtype)
    transition_matrix = transition_matrix.astype(scaled.dtype)
    columns = transition_matrix.T  # A v = Σ_j v_j A[:, j]
    column_sums = jnp.sum(transition_matrix, axis=0)
    floor = _safe_norm(scaled.dtype)  # a row summing to less stays unnormalised (β is a ratio)

    def _step(next_backward, inputs):
        """One step back in time: β_t from β_{t+1} and the observation x_{t+1}."""
        scaled_next, restart = inputs
        weighted = scaled_next * next_backward
        norm = jnp.maximum(jnp.sum(weighted * column_sums), floor)
        backward = weighted_row_sum(weighted / norm, columns)
        if restart is not None:  # padded: t >= L − 1 restarts from β ∝ 1
            backward = jnp.where(restart, uniform, backward)
        return backward, backward

    restart = None if valid is None else ~valid[1:]
    _, backward = lax.scan(_step, uniform, (scaled[1:], restart), reverse=True)
    return jnp.concatenate([backward, uniform[None, :]], axis=0)


@jax.jit
def backward_filter(transition_matrix: Array, log_likelihoods: Array, length: Array | None = None,
                    filtered_probs: Array | None = None) -> Array:
    """Backward messages ``β_t(i) ∝ p(x_{t+1:L} | z_t = i)``, each row normalised to sum 1.

    ``β_{L−1} ∝ 1`` and ``β_t ∝ A (b̃_{t+1} ⊙ β_{t+1})`` with ``b̃_{t+1} = exp(ll_{t+1} − m_{t+1})``,
    ``m_{t+1}`` the best log-likelihood among the states in the support (precomputed for all t,
    so the loop is one product and one normalisation).  Normalising every step (instead of
    dividing by the forward ``c_{t+1}``) keeps β <= 1: a state that is unreachable yet fits
    the future well cannot overflow β to ``inf`` (``0 · inf`` = NaN).  Rows from ``L − 1`` on
    are uniform.

    With ``filtered_probs`` (from ``forward_filter``) the support at t is the set of states with
    ``filtered_probs[t] > 0``: β is then exact wherever ``filtered_probs[t] > 0`` (all that
    smoothing needs) and does not underflow there because of unreachable states that fit the
    data far better.  (Remaining corner: the best-fitting reachable state has an impossible
    future, which needs zero emission probabilities, and every other reachable state fits
    x_{t+1} worse by more than ~87 nats in float32 (~745 in float64); β_t is then 0.)
    """
    check_inference_shapes(None, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked(log_likelihoods, length)
    if filtered_probs is None:
        shifts = lax.stop_gradient(finite_or_zero(jnp.max(log_likelihoods, axis=1)))
        scaled = jnp.exp(log_likelihoods - shifts[:, None])
    else:
        if jnp.shape(filtered_probs) != log_likelihoods.shape:
            raise ValueError(f"filtered_probs must have the shape of log_likelihoods, "
                             f"{log_likelihoods.shape}, got {jnp.shape(filtered_probs)}")
        support = _mask_rows(filtered_probs > 0, valid, True)
        scaled, _ = _backward_likelihoods(log_likelihoods, support)
    return _backward_scan(transition_matrix, scaled, valid)


class Posteriors(NamedTuple):
    """Everything one forward-backward pass gives (padded rows of the (T, K) arrays are 0)."""
    log_likelihood: Array  # scalar, log p(x_{1:L})
    filtered_probs: Array  # (T, K), p(z_t | x_{1:t})
    smoothed_probs: Array  # (T, K), γ_t = p(z_t | x_{1:L})
    transition_counts: Array  # (K, K), Σ_t ξ_t(i, j) = Σ_t p(z_t = i, z_{t+1} = j | x_{1:L})


class _Smoothed(NamedTuple):
    forward: _Forward
    smoothed: Array  # (T, K) γ
    backward: Array  # (T, K) β, rows normalised
    support_shifts: Array  # (T,) m_t of the backward likelihoods
    weights: Array  # (T − 1, K) X_t = α̂_t / n_t (0 where t + 1 is padding)
    future: Array  # (T − 1, K) Y_t = b̃_{t+1} ⊙ β_{t+1}


def _smooth(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
            valid: Array | None) -> _Smoothed:
    """Forward-backward on masked log-likelihoods (see ``smoother``)."""
    forward_pass = _forward(initial_probs, transition_matrix, log_likelihoods, valid)
    filtered = forward_pass.filtered
    support = _mask_rows(filtered > 0, valid, True)
    scaled, support_shifts = _backward_likelihoods(log_likelihoods, support, forward_pass)
    backward = _backward_scan(transition_matrix, scaled, valid)
    smoothed, _ = normalize(filtered * backward)
    predicted = filtered[:-1] @ transition_matrix.astype(filtered.dtype)  # all t at once
    future = scaled[1:] * backward[1:]
    inverse_norms = safe_divide(1.0, jnp.sum(predicted * future, axis=1))
    if valid is not None:
        inverse_norms = jnp.where(valid[1:], inverse_norms, 0.0)
    return _Smoothed(forward_pass, smoothed, backward, support_shifts,
                     inverse_norms[:, None] * filtered[:-1], future)


@jax.jit
def smoother(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
             length: Array | None = None) -> Posteriors:
    """Forward-backward: smoothed marginals ``γ_t ∝ α̂_t ⊙ β_t`` and expected transition counts.

    ``ξ_t(i, j) = α̂_t(i) A_ij b̃_{t+1}(j) β_{t+1}(j) / n_t`` with ``n_t = (α̂_tᵀ A) · (b̃_{t+1} ⊙ β_{t+1})``
    making ``Σ_ij ξ_t = 1``;
    summed over ``t + 1 < L`` as one ``(K, T) @ (T, K)`` product, never a ``(T, K, K)`` array:
    ``Σ_t ξ_t = A ⊙ (Xᵀ Y)`` with ``X_t = α̂_t / n_t``, ``Y_t = b̃_{t+1} ⊙ β_{t+1}``.
    If ``log p = −inf`` (the sequence is impossible) all posteriors and counts are 0.
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked(log_likelihoods, length)
    pieces = _smooth(initial_probs, transition_matrix, log_likelihoods, valid)
    counts = transition_matrix.astype(pieces.weights.dtype) * (pieces.weights.T @ pieces.future)
    return Posteriors(pieces.forward.log_likelihood, pieces.forward.filtered, pieces.smoothed,
                      counts)


def _gradient_cap(dtype) -> float:
    """Largest ``log`` factor a gradient term may carry (see ``_log_likelihood``)."""
    return 20.0 if jnp.finfo(dtype).bits <= 32 else 200.0


@jax.custom_jvp
def _log_likelihood(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                    length: Array | None) -> Array:
    """``log p(x_{1:L})`` with its derivatives from one forward-backward pass (the JVP below).

    The derivatives are the posterior quantities (Fisher's identity), exact also at zero
    entries of π and A:

        ∂ log p / ∂ ll_t(k) = γ_t(k),
        ∂ log p / ∂ A_ij = Σ_t α̂_t(i) b_{t+1}(j) β_{t+1}(j) / n_t   (= Σ_t ξ_t(i, j) / A_ij),
        ∂ log p / ∂ π_i = b_1(i) β_1(i) / Σ_k π_k b_1(k) β_1(k),

    with ``b_t(j) = exp(ll_t(j) − m_t)``, ``m_t`` the best log-likelihood among the states
    with positive filtered probability.  For a state outside that support (reachable only
    through an entry of π or A that is 0) the factor ``exp(ll − m)`` is capped at ``exp(20)``
    in float32 (``exp(200)`` in float64): the true derivative there can be astronomically
    large.  Reverse mode evaluates the pass once (it also gives ``log p``); compiling it costs
    about half as much as differentiating through the loops.
    """
    log_likelihoods, valid = _masked(log_likelihoods, length)
    return _forward(initial_probs, transition_matrix, log_likelihoods, valid).log_likelihood


@_log_likelihood.defjvp
def _log_likelihood_jvp(primals, tangents):
    initial_probs, transition_matrix, raw_log_likelihoods, length = primals
    initial_tangent, transition_tangent, log_likelihood_tangent = tangents[:3]
    log_likelihoods, valid = _masked(raw_log_likelihoods, length)
    pieces = _smooth(initial_probs, transition_matrix, log_likelihoods, valid)
    excess = log_likelihoods - pieces.support_shifts[:, None]
    factors = jnp.exp(jnp.minimum(excess, _gradient_cap(excess.dtype)))  # every state
    transition_gradient = pieces.weights.T @ (factors[1:] * pieces.backward[1:])
    first = factors[0] * pieces.backward[0]
    initial_gradient = first * safe_divide(1.0, jnp.sum(initial_probs * first))
    tangent = (jnp.sum(pieces.smoothed * log_likelihood_tangent)
               + jnp.sum(transition_gradient * transition_tangent)
               + jnp.sum(initial_gradient * initial_tangent))
    return pieces.forward.log_likelihood, tangent.astype(pieces.forward.log_likelihood.dtype)


def _max_plus(scores: Array, log_transition: Array) -> Array:
    """``max_i scores[i] + log_transition[i, j]`` for every j (unrolled for small K)."""
    num_states = log_transition.shape[0]
    if num_states > UNROLLED_MAX_STATES:
        return jnp.max(scores[:, None] + log_transition, axis=0)
    best = scores[0] + log_transition[0]
    for i in range(1, num_states):
        best = jnp.maximum(best, scores[i] + log_transition[i])
    return best


@jax.jit
def most_likely_states(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                       length: Array | None = None) -> tuple[Array, Array]:
    """Viterbi: ``(argmax_z log p(z, x), max_z log p(z, x))``; padded states are −1.

    ``δ_1 = log π + ll_1``, ``δ_t(j) = max_i [δ_{t−1}(i) + log A_ij] + ll_t(j)``, shifted by its max
    at every step (exact comparisons at any T).  The loop computes only δ; the back-pointers
    ``ψ_t(j) = argmax_i [δ_{t−1}(i) + log A_ij]`` are recomputed from the stored δ for all t at
    once (the same floating-point sums, so the same choices), then ``z_L = argmax δ_L`` and
    ``z_t = ψ_{t+1}(z_{t+1})`` by a reverse scan.  ``log_prob`` is summed along the decoded path.
    Ties go to the lowest state index.  When no path is possible the log-probability is −inf
    and the states are arbitrary.
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked(log_likelihoods, length)
    dtype = log_likelihoods.dtype
    log_transition = safe_log(transition_matrix).astype(dtype)
    num_steps, num_states = log_likelihoods.shape

    def _rescale(scores):
        return scores - finite_or_zero(jnp.max(scores))

    def _step(scores, ll_t):
        """Best (shifted) score of each state at t."""
        new_scores = _rescale(_max_plus(scores, log_transition) + ll_t)
        return new_scores, new_scores

    first = _rescale(safe_log(initial_probs).astype(dtype) + log_likelihoods[0])
    _, later = lax.scan(_step, first, log_likelihoods[1:])
    scores = jnp.concatenate([first[None], later])
    # the narrowest integer type that holds a state: the backtracking loop below then touches
    # few enough bytes per step for XLA to compile it as one kernel (several times faster)
    index_dtype = state_index_dtype(num_states)
    pointers = jnp.argmax(scores[:-1, :, None] + log_transition[None, :, :], axis=1)
    pointers = pointers.astype(index_dtype)
    state_indices = jnp.arange(num_states, dtype=index_dtype)
    if valid is None:
        last = jnp.argmax(scores[-1]).astype(index_dtype)
    else:  # padded steps point to themselves, so the backtrack keeps z_{L−1}
        pointers = jnp.where(valid[1:, None], pointers, state_indices[None, :])
        last_step = jnp.clip(jnp.asarray(length) - 1, 0, num_steps - 1)
        last = jnp.argmax(lax.dynamic_index_in_dim(scores, last_step, keepdims=False))
        last = last.astype(index_dtype)

    def _backtrack(state, pointers_next):
        """z_t = ψ_{t+1}(z_{t+1}), read by a mask rather than a gather (cheaper under vmap)."""
        previous = jnp.sum(jnp.where(state_indices == state, pointers_next, 0), dtype=index_dtype)
        return previous, previous

    _, earlier = lax.scan(_backtrack, last, pointers, reverse=True)
    states = jnp.concatenate([earlier, last[None]]).astype(jnp.result_type(int))
    if valid is None:
        valid = jnp.ones((num_steps,), bool)
    return (jnp.where(valid, states, -1),
            path_log_prob(initial_probs, log_transition, log_likelihoods, states, valid))


def path_log_prob(initial_probs: Array, log_transition: Array, log_likelihoods: Array,
                  states: Array, valid: Array) -> Array:
    """``log π_{z_1} + ll_1(z_1) + Σ_{t<L} [log A_{z_{t−1} z_t} + ll_t(z_t)]`` summed directly.

    Summing the decoded path once is more accurate than the running Viterbi offsets (in
    float32 at T = 20 000 those drift by about one nat).
    """
    num_steps = log_likelihoods.shape[0]
    steps = (log_transition[states[:-1], states[1:]]
             + log_likelihoods[jnp.arange(1, num_steps), states[1:]])
    return (safe_log(initial_probs)[states[0]] + log_likelihoods[0, states[0]]
            + jnp.sum(jnp.where(valid[1:], steps, 0.0)))


def model_log_likelihoods(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """The ``(T, K)`` emission log-likelihoods with padded observations replaced first."""
    return model.emissions.log_likelihoods(replace_padding(observations, length))


@jax.jit
def _model_forward(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return forward_filter(model.initial_probs, model.transition_matrix, lls, length)


@jax.jit
def _model_log_likelihood(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    check_inference_shapes(model.initial_probs, model.transition_matrix, lls, length)
    return _log_likelihood(model.initial_probs, model.transition_matrix, lls, length)


@jax.jit
def _model_smoother(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return smoother(model.initial_probs, model.transition_matrix, lls, length)


@jax.jit
def _model_viterbi(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return most_likely_states(model.initial_probs, model.transition_matrix, lls, length)


def forward(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(log p(x_{1:L}), filtered)`` for one sequence; see ``forward_filter``."""
    check_one_sequence(model, observations, length)
    return _model_forward(model, observations, length)


def log_likelihood(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """``log p(x_{1:L}) = log Σ_z π_{z_1} b_{z_1}(x_1) Π_t A_{z_{t−1} z_t} b_{z_t}(x_t)``.

    Differentiable with respect to every parameter (reverse and forward mode), never NaN: the derivatives come from one forward-backward pass (``_log_likelihood``), exact
    also at entries of π and A equal to 0 (tested against finite differences), except that a
    term for a state reachable only through such an entry is capped when that state fits an
    observation better than every reachable one by more than 20 nats (float32; 200 in
    float64).  An emission probability exactly 0 (Categorical) gets gradient 0 instead of its
    true value, because only ``log b`` reaches the inference (parametrise by logits to stay
    inside the simplex, as gradient-based fitting does anyway).  When ``log p = −inf``
    gradients are 0.
    """
    check_one_sequence(model, observations, length)
    return _model_log_likelihood(model, observations, length)


def posteriors(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """Smoothed marginals ``γ_t(k) = p(z_t = k | x_{1:L})``, shape (T, K); padded rows 0.

    ``smoother`` gives the log-likelihood, filtered marginals and expected transition counts too.
    """
    check_one_sequence(model, observations, length)
    return _model_smoother(model, observations, length).smoothed_probs


def viterbi(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(states, log_prob)``: the most probable path and its joint ``log p(z_{1:L}, x_{1:L})``."""
    check_one_sequence(model, observations, length)
    return _model_viterbi(model, observations, length)
