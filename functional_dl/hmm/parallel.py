"""Parallel-in-time HMM inference with ``lax.associative_scan`` (O(log T) depth).

The same functions, names, signatures and results as the sequential ones in
``functional_dl.hmm`` (``forward_filter``, ``backward_filter``, ``smoother``,
``most_likely_states`` on a ``(T, K)`` log-likelihood matrix; ``forward``, ``log_likelihood``,
``posteriors``, ``viterbi`` on a model), so that one can stand for the other.  The forward
recursion is a product of K×K matrices,

    E_1[i, j] = π_j b_1(j),    E_t[i, j] = A_ij b_t(j)  (t ≥ 2),
    α_t = row 0 of E_1 E_2 ⋯ E_t,    β_t = E_{t+1} ⋯ E_T 1,

and matrix products are associative, so the recursions need only O(log T) dependent steps:
``_blocked_scan`` multiplies the matrices inside blocks of 32 steps and the block totals by
``lax.associative_scan``, then pushes the vectors α (forwards) and β (backwards) through the
blocks, all blocks at once.  Viterbi replaces the sum by a max (the (max, +) semiring, in log
space); the back-pointer chain ``z_t = ψ_{t+1}(z_{t+1})`` is pushed through the composed maps
the same way.  Padded steps are identity elements.

Numerics of the sum-product.  A matrix is stored as ``(P, s)``: ``P`` with every row summing
to 1 (or all zero) and one log-scale per row, ``M[i, :] = exp(s_i) P[i, :]``; a row vector as
``(p, c)``, ``v = exp(c) p``.  A product needs one matmul, K² exponentials and K logarithms:

    a_i = max_{k: P1[i,k] > 0} s2_k,   W[i, k] = P1[i, k] exp(s2_k − a_i),   Q = W P2,
    n_i = Σ_j Q[i, j],   (P1, s1) ⊗ (P2, s2) = (Q / n, s1 + a + log n).

Shifting row i by the best row of P2 *that row i reaches* (not the best overall) keeps a row
whose only successors fit the data badly from underflowing to 0 beside rows that fit well
(the care the sequential careful pass takes); ``n_i = 0`` (no possible path) gives a zero row
and ``s_i = −inf``, never NaN.  The rows of ``E_t`` are built the same way, each shifted by the
best log-likelihood among the states it reaches.  ``log p(x)`` is the log-scale of α at the
last step: a sum of T terms formed along the tree of products, as accurate in float32 as the
sequential sum.  β is kept in log space (``log β_t(i)``), one row shift per state.  The
expected transition counts are formed from α̂ and β for all t at once, as in the sequential
``smoother``.

When is it faster?  The sequential scan does O(K² T) work in T dependent steps; the parallel
one does O(K³ T) work in O(log T) dependent steps.  On an accelerator with one long sequence
(T in the thousands and more, small K) the depth dominates and the parallel version wins; on
CPU, for short sequences, or for a large batch (which already fills the device through
``vmap``) the sequential scan wins (``benchmarks/hmm.py`` measures both).  Compiling takes
seconds, growing with log T because every level of the associative scan is compiled on its
own, so it pays off only for repeated calls on long sequences.  These functions are not
meant to be differentiated (use the sequential ``log_likelihood``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from functional_dl._types import Array
from functional_dl.hmm._blocked_scan import blocked_vector_scan
from functional_dl.hmm._numerics import (UNROLLED_MAX_STATES, finite_or_zero, normalize,
                                         safe_divide, safe_log, state_index_dtype, valid_mask)
from functional_dl.hmm._scans import has_nan, mask_rows, masked, nan_rows, path_log_prob
from functional_dl.hmm.model import (HMM, SmootherResult, check_inference_shapes,
                                     check_one_sequence, on_model)

__all__ = ["forward_filter", "backward_filter", "smoother", "most_likely_states",
           "forward", "log_likelihood", "posteriors", "viterbi"]


def _shifted_weights(weights: Array, log_factors: Array) -> tuple[Array, Array]:
    """``(w[i, k] exp(f_k − a_i), a)``, ``a_i`` the largest ``f_k`` over the k with ``w[i, k] > 0``.

    The largest term of each row is then ``w[i, k]·1``: a row cannot underflow to 0 while its
    true value is positive.  ``weights`` and ``log_factors`` broadcast against each other.
    """
    log_factors = jnp.reshape(log_factors, (1,) * (weights.ndim - log_factors.ndim)
                              + log_factors.shape)
    weights, log_factors = jnp.broadcast_arrays(weights, log_factors)
    candidates = jnp.where(weights > 0, log_factors, -jnp.inf)
    shifts = finite_or_zero(jnp.max(candidates, axis=-1))
    excess = log_factors - shifts[..., None]
    # where, not minimum: excess > 0 only where w = 0, and must not overflow to 0 · inf
    return weights * jnp.exp(jnp.where(excess > 0, 0.0, excess)), shifts


def _scaled_rows(weights: Array, log_factors: Array) -> tuple[Array, Array]:
    """Rows ``w[i, j] exp(f_j)`` as ``(P, s)``: each row of P sums to 1 (or is all zero)."""
    shifted, shifts = _shifted_weights(weights, log_factors)
    normalised, totals = normalize(shifted)
    return normalised, shifts + safe_log(totals)


def _small_matmul(left: Array, right: Array) -> Array:
    """``left @ right`` for ``right`` (K, K); written out as K broadcast products for small K,
    which XLA fuses with the surrounding elementwise work (a ``dot`` is a library call)."""
    num_states = right.shape[0]
    if num_states > UNROLLED_MAX_STATES:
        return left @ right
    leading = (1,) * (left.ndim - 1)  # right's rows broadcast over left's rows
    total = left[..., :1] * right[0].reshape(leading + right.shape[1:])
    for k in range(1, num_states):
        total = total + left[..., k:k + 1] * right[k].reshape(leading + right.shape[1:])
    return total


def _sum_product(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
    """``earlier ⊗ later`` for ``(P, s)`` matrices, or a ``(p, c)`` row vector times a matrix."""
    (probs_earlier, scales_earlier), (probs_later, scales_later) = earlier, later
    weighted, shifts = _shifted_weights(probs_earlier, scales_later)
    normalised, totals = normalize(_small_matmul(weighted, probs_later))
    return normalised, scales_earlier + shifts + safe_log(totals)


def _matrix_times_log_vector(matrix: tuple[Array, Array], log_vector: Array) -> Array:
    """``log(M exp(log_vector))`` for ``M = (P, s)``: ``log β_{t−1}`` from ``log β_t``, ``E_t``."""
    probs, scales = matrix
    weighted, shifts = _shifted_weights(probs, log_vector)
    return scales + shifts + safe_log(jnp.sum(weighted, axis=-1))


def _max_product(earlier: Array, later: Array) -> Array:
    """``max_k earlier[i, k] + later[k, j]`` (the (max, +) semiring), shifted to max 0.

    Also a row vector ``earlier`` (K,) times a matrix: one Viterbi step.
    """
    later = jnp.reshape(later, (1,) * (earlier.ndim - 1) + later.shape)
    product = jnp.max(earlier[..., :, None] + later, axis=-2)
    return product - finite_or_zero(jnp.max(product))


def _masked_always(log_likelihoods: Array, length: Array | None) -> tuple[Array, Array]:
    """``masked``, with a mask also for ``length=None`` (the elements need one anyway)."""
    log_likelihoods, valid = masked(log_likelihoods, length)
    return log_likelihoods, valid_mask(log_likelihoods.shape[0], None) if valid is None else valid


def _sum_product_elements(initial_probs, transition_matrix, log_likelihoods, valid):
    """Per-step ``(P_t, s_t)`` of ``E_t``; padded steps are the identity ``(I, 0)``.

    With ``initial_probs`` None, ``E_1`` is ``A diag(b_1)`` like the others: it then reaches
    only α and ``β_0``'s discarded push, so the backward messages need no π.
    """
    num_states = log_likelihoods.shape[1]
    dtype = log_likelihoods.dtype
    transition_matrix = transition_matrix.astype(dtype)
    probs, scales = _scaled_rows(transition_matrix[None, :, :], log_likelihoods[:, None, :])
    if initial_probs is not None:
        first_row, first_scale = _scaled_rows(initial_probs.astype(dtype), log_likelihoods[0])
        probs = probs.at[0].set(jnp.broadcast_to(first_row, (num_states, num_states)))
        scales = scales.at[0].set(jnp.full((num_states,), first_scale))
    identity = jnp.eye(num_states, dtype=dtype)
    probs = jnp.where(valid[:, None, None], probs, identity[None])
    scales = jnp.where(valid[:, None], scales, 0.0)
    return probs, scales


def _max_product_elements(initial_probs, transition_matrix, log_likelihoods, valid):
    """Per-step log-matrices ``log E_t``; padded steps are the identity ``log I``."""
    num_states = log_likelihoods.shape[1]
    log_transition = safe_log(transition_matrix).astype(log_likelihoods.dtype)
    steps = log_transition[None, :, :] + log_likelihoods[:, None, :]
    first = jnp.broadcast_to(safe_log(initial_probs) + log_likelihoods[0], (num_states, num_states))
    steps = steps.at[0].set(first)
    log_identity = safe_log(jnp.eye(num_states, dtype=steps.dtype))
    return jnp.where(valid[:, None, None], steps, log_identity[None, :, :])


def _unit_row(num_states: int, dtype) -> tuple[Array, Array]:
    """The row vector ``e_0`` as ``(p, c)``: ``e_0 E`` is row 0 of ``E``."""
    return jnp.zeros((num_states,), dtype).at[0].set(1.0), jnp.zeros((), dtype)


def _forward_rows(elements: tuple[Array, Array]) -> tuple[Array, Array]:
    """``(α̂_t, log-scale of α_t)`` for every t: ``e_0`` pushed through ``E_1, …, E_T``."""
    num_states = elements[1].shape[1]
    return blocked_vector_scan(_sum_product, _sum_product, elements,
                               _unit_row(num_states, elements[1].dtype))


def _log_backward(elements: tuple[Array, Array]) -> Array:
    """``log β_t`` for every t: ``log β_{t−1} = log(E_t exp(log β_t))`` from ``β_T = 1``."""
    # from the end, E_{t+1} is met before E_t, and (E_t E_{t+1}) β = E_t (E_{t+1} β)
    pushed = blocked_vector_scan(lambda met_first, met_next: _sum_product(met_next, met_first),
                                 lambda log_vector, matrix: _matrix_times_log_vector(
                                     matrix, log_vector),
                                 elements, jnp.zeros_like(elements[1][0]), reverse=True)
    return jnp.concatenate([pushed[1:], jnp.zeros_like(pushed[:1])])  # [t] = log β_t


def _transition_counts(filtered: Array, log_backward: Array, transition_matrix: Array,
                       log_likelihoods: Array, valid: Array) -> Array:
    """``Σ_t ξ_t = A ⊙ (Xᵀ Y)``, ``Y_t = exp(ll_{t+1} + log β_{t+1} − a_t)``, ``X_t = α̂_t / n_t``.

    ``n_t = (α̂_tᵀ A) · Y_t``; ``a_t`` is the largest exponent among the states the prediction
    ``α̂_tᵀ A`` reaches, so ``n_t`` cannot underflow while positive (``Y`` is capped at 1
    where the prediction is 0, and every term there is 0).
    """
    transition_matrix = transition_matrix.astype(filtered.dtype)
    predicted = _small_matmul(filtered[:-1], transition_matrix)
    log_future = log_likelihoods[1:] + log_backward[1:]
    candidates = jnp.where(predicted > 0, log_future, -jnp.inf)
    excess = log_future - finite_or_zero(jnp.max(candidates, axis=1))[:, None]
    future = jnp.exp(jnp.where(excess > 0, 0.0, excess))
    inverse_norms = jnp.where(valid[1:], safe_divide(1.0, jnp.sum(predicted * future, axis=1)), 0.0)
    return transition_matrix * ((inverse_norms[:, None] * filtered[:-1]).T @ future)


@jax.jit
def forward_filter(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   length: Array | None = None) -> tuple[Array, Array]:
    """``(log p(x_{1:L}), filtered)`` as ``hmm.forward_filter``, in O(log T) depth.

    ``filtered[t] = α̂_t`` (``e_0 E_1 ⋯ E_t`` normalised); ``log p`` is the log-scale of α at
    the last step (padded steps are identities).
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked_always(log_likelihoods, length)
    elements = _sum_product_elements(initial_probs, transition_matrix, log_likelihoods, valid)
    filtered, log_scales = _forward_rows(elements)
    poisoned = nan_rows(initial_probs, transition_matrix, log_likelihoods)
    filtered = jnp.where(poisoned[:, None], jnp.nan, filtered)
    return (jnp.where(poisoned[-1], jnp.nan, log_scales[-1]),
            jnp.where(valid[:, None], filtered, 0.0))


@jax.jit
def backward_filter(transition_matrix: Array, log_likelihoods: Array, length: Array | None = None,
                    filtered_probs: Array | None = None) -> Array:
    """Backward messages ``β_t(i) ∝ p(x_{t+1:L} | z_t = i)`` as ``hmm.backward_filter``.

    Each row normalised to sum 1, rows from ``L − 1`` on uniform.  β is pushed in log space
    and exact before the normalisation.  With ``filtered_probs`` (from ``forward_filter``)
    each row is normalised over the support ``filtered_probs[t] > 0`` and is 0 off it: a
    state that cannot carry probability yet fits the future far better then cannot
    round the others to 0 (as in the sequential version, exact wherever
    ``filtered_probs[t] > 0``).
    """
    check_inference_shapes(None, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked_always(log_likelihoods, length)
    elements = _sum_product_elements(None, transition_matrix, log_likelihoods, valid)
    log_backward = _log_backward(elements)
    if filtered_probs is not None:
        if jnp.shape(filtered_probs) != log_likelihoods.shape:
            raise ValueError(f"filtered_probs must have the shape of log_likelihoods, "
                             f"{log_likelihoods.shape}, got {jnp.shape(filtered_probs)}")
        support = mask_rows(filtered_probs > 0, valid, True)
        log_backward = jnp.where(support, log_backward, -jnp.inf)
    backward, _ = normalize(jnp.exp(log_backward - finite_or_zero(
        jnp.max(log_backward, axis=1, keepdims=True))))
    return backward


@jax.jit
def smoother(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
             length: Array | None = None) -> SmootherResult:
    """Forward-backward as ``hmm.smoother``: ``γ_t ∝ α_t ⊙ β_t`` and ``Σ_t ξ_t``, O(log T) depth."""
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked_always(log_likelihoods, length)
    elements = _sum_product_elements(initial_probs, transition_matrix, log_likelihoods, valid)
    filtered, log_scales = _forward_rows(elements)
    log_backward = _log_backward(elements)
    smoothed, _ = _scaled_rows(filtered, log_backward)
    counts = _transition_counts(filtered, log_backward, transition_matrix, log_likelihoods, valid)
    # the max-shifts read a NaN as absent: put it back, as the sequential smoother does
    poisoned = nan_rows(initial_probs, transition_matrix, log_likelihoods)
    filtered = jnp.where(poisoned[:, None], jnp.nan, filtered)
    smoothed = jnp.where(poisoned[-1], jnp.nan, smoothed)
    return SmootherResult(jnp.where(poisoned[-1], jnp.nan, log_scales[-1]),
                          jnp.where(valid[:, None], filtered, 0.0),
                          jnp.where(valid[:, None], smoothed, 0.0),
                          jnp.where(poisoned[-1], jnp.nan, counts))


@jax.jit
def most_likely_states(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                       length: Array | None = None) -> tuple[Array, Array]:
    """Viterbi ``(states, log_prob)`` as ``hmm.most_likely_states``, in O(log T) depth.

    δ_t = ``log e_0`` pushed through the max-plus ``log E_1, …, log E_t``;
    ``ψ_t(j) = argmax_i δ_{t−1}(i) + log A_ij`` for all t at once; then ``z_L = argmax δ_L`` is
    pushed back through the maps ``z_t = ψ_{t+1}(z_{t+1})``, whose compositions
    (``(f ∘ g)[j] = f[g[j]]``) are associative, so the path is always consistent.  ``log_prob``
    is the joint log-probability of that path, summed directly.
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked_always(log_likelihoods, length)
    elements = _max_product_elements(initial_probs, transition_matrix, log_likelihoods, valid)
    num_states = log_likelihoods.shape[1]
    log_unit_row = jnp.full((num_states,), -jnp.inf, log_likelihoods.dtype).at[0].set(0.0)
    deltas = blocked_vector_scan(_max_product, _max_product, elements, log_unit_row)
    log_transition = safe_log(transition_matrix).astype(deltas.dtype)
    index_dtype = state_index_dtype(num_states)  # narrow: less to move through the scans
    pointers = jnp.argmax(deltas[:-1, :, None] + log_transition[None, :, :], axis=1)
    pointers = jnp.where(valid[1:, None], pointers.astype(index_dtype),
                         jnp.arange(num_states, dtype=index_dtype)[None, :])
    last = jnp.argmax(deltas[-1]).astype(index_dtype)
    # from the end, ψ_{t+1} is met before ψ_t: ψ_t(ψ_{t+1}(z)) = (ψ_t ∘ ψ_{t+1})(z)
    earlier = blocked_vector_scan(lambda met_first, met_next: met_next[met_first],
                                  lambda state, pointer_map: pointer_map[state],
                                  pointers, last, reverse=True)
    states = jnp.concatenate([earlier, last[None]]).astype(jnp.result_type(int))
    log_prob = path_log_prob(initial_probs, log_transition, log_likelihoods, states, valid)
    poisoned = has_nan(initial_probs, transition_matrix, log_likelihoods)
    return jnp.where(valid, states, -1), jnp.where(poisoned, jnp.nan, log_prob)


# emissions apart: one compilation of these slow-to-compile scans serves every family
_model_forward = on_model(forward_filter, separate_emissions=True)
_model_smoother = on_model(smoother, separate_emissions=True)
_model_viterbi = on_model(most_likely_states, separate_emissions=True)


def forward(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(log p(x_{1:L}), filtered)`` for one sequence in O(log T) depth (``hmm.forward``)."""
    check_one_sequence(model, observations, length)
    return _model_forward(model, observations, length)


def log_likelihood(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """``log p(x_{1:L})`` in O(log T) depth (same result as ``hmm.log_likelihood``)."""
    check_one_sequence(model, observations, length)
    return _model_forward(model, observations, length)[0]


def posteriors(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """Smoothed marginals (T, K), padded rows 0, in O(log T) depth (``hmm.posteriors``)."""
    check_one_sequence(model, observations, length)
    return _model_smoother(model, observations, length).smoothed_probs


def viterbi(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(states, log_prob)`` of the most probable path in O(log T) depth (``hmm.viterbi``)."""
    check_one_sequence(model, observations, length)
    return _model_viterbi(model, observations, length)
