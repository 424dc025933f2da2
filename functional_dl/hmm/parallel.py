"""Parallel-in-time HMM inference with ``lax.associative_scan`` (O(log T) depth).

Same signatures and results as the sequential ``functional_dl.hmm`` functions.  The forward
recursion is a product of K×K matrices in the (log, +) semiring,

    E_1[i, j] = log π_j + ll_1(j),    E_t[i, j] = log A_ij + ll_t(j)  (t ≥ 2),
    log α_t = row 0 of E_1 ⊗ E_2 ⊗ ⋯ ⊗ E_t,    (X ⊗ Y)[i, j] = log Σ_k exp(X[i, k] + Y[k, j]),

and the product is associative, so all prefixes come from one associative scan; the backward
messages are the suffix products reduced over j, and Viterbi replaces log-sum-exp by max
(max-plus semiring), with the back-pointer chain z_t = ψ_{t+1}(z_{t+1}) resolved by a
second associative scan over function composition.  Padded steps are identity elements.

Numerics: each element is stored in log space with its largest entry shifted to 0 (a
uniform factor no result depends on), and ⊗ is computed as ``log(W @ V)`` with row-wise
shifts (no overflow, matmul speed), ``V = exp(Y − r)``, ``r_k = max_j Y[k, j]``,
``W = exp(X + r − a)``, ``a_i = max_k X[i, k] + r_k``: each result row keeps its largest entry
as a sequential filter would.  The log-likelihood is summed from one-step normalisers and
the Viterbi log-probability from the decoded path, never from long chains of shifts, so
float32 results stay as accurate as the sequential ones.

When is it faster?  The sequential scan does O(K² T) work in T dependent steps; the parallel
scan does O(K³ T) work (O(K³ T) for Viterbi's max-plus product too) in O(log T) dependent
steps.  On an accelerator with one long sequence (T in the thousands and more, small K) the
depth dominates and the parallel version wins; on CPU, for short sequences, or for a large
batch (which already fills the device through ``vmap``) the sequential scan wins.  These
functions are not meant to be differentiated (use the sequential ``log_likelihood``).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array
from functional_dl.hmm._numerics import (finite_or_zero, normalize, safe_log, scaled_likelihoods,
                                         valid_mask)
from functional_dl.hmm.inference import check_inference_shapes, model_log_likelihoods, path_log_prob
from functional_dl.hmm.model import HMM, check_one_sequence


def _rescale(log_matrix: Array) -> Array:
    """Subtract the largest entry (a uniform factor, which no result depends on)."""
    return log_matrix - finite_or_zero(jnp.max(log_matrix))


def _sum_product(earlier: Array, later: Array) -> Array:
    """``log Σ_k exp(earlier[i, k] + later[k, j])`` via one matmul with row-wise shifts."""
    row_max = finite_or_zero(jnp.max(later, axis=1))
    shifted = earlier + row_max[None, :]
    shift = finite_or_zero(jnp.max(shifted, axis=1))
    product = jnp.exp(shifted - shift[:, None]) @ jnp.exp(later - row_max[:, None])
    return _rescale(jnp.log(product) + shift[:, None])  # log 0 = −inf; not differentiated


def _max_product(earlier: Array, later: Array) -> Array:
    """``max_k earlier[i, k] + later[k, j]``, the (max, +) semiring."""
    return _rescale(jnp.max(earlier[:, :, None] + later[None, :, :], axis=1))


def _elements(initial_probs, transition_matrix, log_likelihoods, length):
    """Per-step log-matrices ``E_t``; padded steps are the identity ``log I``."""
    num_steps, num_states = log_likelihoods.shape
    valid = valid_mask(num_steps, length)
    log_likelihoods = jnp.where(valid[:, None], log_likelihoods, 0.0)
    log_transition = safe_log(transition_matrix)
    steps = log_transition[None, :, :] + log_likelihoods[:, None, :]
    first = jnp.broadcast_to(safe_log(initial_probs) + log_likelihoods[0], (num_states, num_states))
    steps = steps.at[0].set(first)
    log_identity = safe_log(jnp.eye(num_states, dtype=steps.dtype))
    steps = jnp.where(valid[:, None, None], steps, log_identity[None, :, :])
    return jax.vmap(_rescale)(steps), valid, log_likelihoods


def _ordered_sum_product(earlier, later):
    """``earlier ⊗ later``, or ``later ⊗ earlier`` for elements flagged as time-reversed."""
    (left, reversed_), (right, _) = earlier, later
    first = jnp.where(reversed_, right, left)
    second = jnp.where(reversed_, left, right)
    return _sum_product(first, second), reversed_


def _prefix(combine, elements, axis=0):
    """All prefix products ``E_1 ⊗ ⋯ ⊗ E_t`` along ``axis`` (the other leading axes batch)."""
    batched = combine
    for _ in range(jax.tree.leaves(elements)[0].ndim - 2):
        batched = jax.vmap(batched)
    return lax.associative_scan(batched, elements, axis=axis)


def _softmax_or_zero(log_weights: Array) -> Array:
    """Row-wise softmax; an all −inf row becomes zeros instead of NaN."""
    top = finite_or_zero(jnp.max(log_weights, axis=-1, keepdims=True))
    return normalize(jnp.exp(log_weights - top))[0]


@jax.jit
def forward_filter(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   length: Array | None = None) -> tuple[Array, Array]:
    """``(log p(x_{1:L}), filtered)`` as ``inference.forward_filter``, by an associative scan.

    ``filtered[t] = softmax(row 0 of E_1 ⊗ ⋯ ⊗ E_t)``; the log-likelihood is then summed from
    the one-step normalisers ``c_t = Σ_j (filtered[t−1] A)_j exp(ll_t(j) − m_t)`` (π for t = 1),
    all computed at once, so it is as accurate in float32 as the sequential filter.
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    elements, valid, log_likelihoods = _elements(initial_probs, transition_matrix,
                                                 log_likelihoods, length)
    filtered = _softmax_or_zero(_prefix(_sum_product, elements)[:, 0, :])
    filtered = jnp.where(valid[:, None], filtered, 0.0)
    predicted = jnp.concatenate([initial_probs[None, :].astype(filtered.dtype),
                                 filtered[:-1] @ transition_matrix], axis=0)
    scaled, shifts = scaled_likelihoods(log_likelihoods, predicted > 0)
    norms = jnp.sum(predicted * scaled, axis=1)
    log_lik = jnp.sum(jnp.where(valid, safe_log(norms) + shifts, 0.0))
    return log_lik, filtered


@jax.jit
def smoothed_probs(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   length: Array | None = None) -> Array:
    """``γ_t ∝ α_t ⊙ β_t``; α from prefix and β from suffix products, in one associative scan.

    ``log β_t(i) = log Σ_j (E_{t+1} ⊗ ⋯ ⊗ E_T)[i, j]`` (``β_T = 1``).
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    elements, valid, _ = _elements(initial_probs, transition_matrix, log_likelihoods, length)
    # suffixes E_s ⊗ ⋯ ⊗ E_T are prefixes of the time-reversed elements multiplied in swapped
    # order; both halves go through one associative scan, a flag per element telling the
    # combine which order to use (transposing instead would lose each row's precision)
    time_reversed = jnp.concatenate([elements[:0:-1], elements[:1]], axis=0)  # last one unused
    flags = jnp.stack([jnp.zeros_like(valid), jnp.ones_like(valid)])
    products, _ = _prefix(_ordered_sum_product, (jnp.stack([elements, time_reversed]), flags),
                          axis=1)
    log_alpha = products[0, :, 0, :]
    suffixes = products[1, -2::-1]  # [t] = E_{t+1} ⊗ ⋯ ⊗ E_T, t = 0..T−2
    row_max = finite_or_zero(jnp.max(suffixes, axis=2))
    log_beta = row_max + safe_log(jnp.sum(jnp.exp(suffixes - row_max[:, :, None]), axis=2))
    log_beta = jnp.concatenate([log_beta, jnp.zeros_like(log_alpha[:1])], axis=0)
    return jnp.where(valid[:, None], _softmax_or_zero(log_alpha + log_beta), 0.0)


@jax.jit
def most_likely_states(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                       length: Array | None = None) -> tuple[Array, Array]:
    """Viterbi ``(states, log_prob)`` as ``inference.most_likely_states``, by associative scans.

    δ_t = row 0 of the max-plus prefix products; ``ψ_t(j) = argmax_i δ_{t−1}(i) + log A_ij``
    for all t at once; then ``z_t = (ψ_{t+1} ∘ ⋯ ∘ ψ_L)(z_L)`` from a suffix scan of function
    composition (``(f ∘ g)[j] = f[g[j]]``), so the path is always consistent.  ``log_prob`` is
    the joint log-probability of that path, summed directly.
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    elements, valid, log_likelihoods = _elements(initial_probs, transition_matrix,
                                                 log_likelihoods, length)
    deltas = _prefix(_max_product, elements)[:, 0, :]
    log_transition = safe_log(transition_matrix)
    num_states = deltas.shape[1]
    pointers = jnp.argmax(deltas[:-1, :, None] + log_transition[None, :, :], axis=1)
    pointers = jnp.where(valid[1:, None], pointers, jnp.arange(num_states)[None, :])
    compose = jax.vmap(lambda outer, inner: outer[inner])
    # reverse scans hand the later element first: chains[t] = ψ_{t+1} ∘ ⋯ ∘ ψ_L
    chains = lax.associative_scan(lambda later, earlier: compose(earlier, later), pointers,
                                  reverse=True)
    last = jnp.argmax(deltas[-1])
    states = jnp.concatenate([chains[:, last], last[None]])
    log_prob = path_log_prob(initial_probs, log_transition, log_likelihoods, states, valid)
    return jnp.where(valid, states, -1), log_prob


def _low_level_args(model: HMM, observations: Array, length: Array | None):
    """Emission log-likelihoods, evaluated outside the compiled scan so that one compiled
    scan per (T, K, dtype) serves every emission family; ``length`` None becomes T."""
    lls = model_log_likelihoods(model, observations, length)
    length = lls.shape[0] if length is None else length
    return model.initial_probs, model.transition_matrix, lls, jnp.asarray(length, jnp.int32)


def log_likelihood(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """``log p(x_{1:L})`` with an O(log T)-depth associative scan (``hmm.log_likelihood``)."""
    check_one_sequence(model, observations, length)
    return forward_filter(*_low_level_args(model, observations, length))[0]


def posteriors(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """Smoothed marginals (T, K), padded rows 0, by associative scans (``hmm.posteriors``)."""
    check_one_sequence(model, observations, length)
    return smoothed_probs(*_low_level_args(model, observations, length))


def viterbi(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(states, log_prob)`` of the most probable path by associative scans (``hmm.viterbi``)."""
    check_one_sequence(model, observations, length)
    return most_likely_states(*_low_level_args(model, observations, length))
