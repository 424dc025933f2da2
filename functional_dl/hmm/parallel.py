"""Parallel-in-time HMM inference with ``lax.associative_scan`` (O(log T) depth).

Same signatures and results as the sequential ``functional_dl.hmm`` functions.  The forward
recursion is a product of K×K matrices in the (log, +) semiring,

    E_1[i, j] = log π_j + ll_1(j),    E_t[i, j] = log A_ij + ll_t(j)  (t ≥ 2),
    log α_t = row 0 of E_1 ⊗ E_2 ⊗ ⋯ ⊗ E_t,    (X ⊗ Y)[i, j] = log Σ_k exp(X[i, k] + Y[k, j]),

and the product is associative, so all prefixes come from one associative scan; the backward
messages are the suffix products reduced over j, and Viterbi replaces log-sum-exp by max
(max-plus semiring), with the back-pointer chain z_t = ψ_{t+1}(z_{t+1}) resolved by a
second associative scan over function composition.  Padded steps are identity elements.

Numerics: every element carries a scalar log-scale so its entries stay near 0, and ⊗ is
computed as ``log(W @ V)`` with row-wise shifts (no overflow, and matmul speed), where
``V = exp(Y − r)``, ``r_k = max_j Y[k, j]`` and ``W = exp(X + r − a)``, ``a_i = max_k X[i, k] + r_k``;
so each result row keeps its largest entry exactly as a sequential filter would.

When is it faster?  The sequential scan does O(K² T) work in T dependent steps; the parallel
scan does O(K³ T) work (O(K³ T) for Viterbi's max-plus product too) in O(log T) dependent
steps.  On an accelerator with one long sequence (T in the thousands and more, small K) the
depth dominates and the parallel version wins; on CPU, for short sequences, or for a large
batch (which already fills the device through ``vmap``) the sequential scan wins.  These
functions are not meant to be differentiated (use the sequential ``log_likelihood``).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array
from functional_dl.hmm._numerics import finite_or_zero, safe_log, valid_mask
from functional_dl.hmm.inference import check_inference_shapes, model_log_likelihoods
from functional_dl.hmm.model import HMM, check_one_sequence


def _rescale(log_matrix: Array, log_scale: Array) -> tuple[Array, Array]:
    """Move the largest entry into the scalar scale (an all −inf matrix keeps scale += −inf)."""
    top = jnp.max(log_matrix)
    return log_matrix - finite_or_zero(top), log_scale + top


def _log_matmul(left: Array, right: Array) -> Array:
    """``log Σ_k exp(left[i, k] + right[k, j])`` via one matmul with row-wise shifts."""
    row_max = jnp.max(right, axis=1)
    right_scaled = jnp.exp(right - finite_or_zero(row_max)[:, None])
    shifted_left = left + row_max[None, :]
    left_max = finite_or_zero(jnp.max(shifted_left, axis=1))
    left_scaled = jnp.exp(shifted_left - left_max[:, None])
    return safe_log(left_scaled @ right_scaled) + left_max[:, None]


def _sum_product(earlier, later):
    """Compose two stretches of time in the (log-sum-exp, +) semiring."""
    (left, left_scale), (right, right_scale) = earlier, later
    return _rescale(_log_matmul(left, right), left_scale + right_scale)


def _max_product(earlier, later):
    """Compose two stretches of time in the (max, +) semiring."""
    (left, left_scale), (right, right_scale) = earlier, later
    product = jnp.max(left[:, :, None] + right[None, :, :], axis=1)
    return _rescale(product, left_scale + right_scale)


def _elements(initial_probs, transition_matrix, log_likelihoods, length):
    """Per-step (log-matrix, log-scale) elements; padded steps are the identity ``log I``."""
    num_steps, num_states = log_likelihoods.shape
    valid = valid_mask(num_steps, length)
    log_likelihoods = jnp.where(valid[:, None], log_likelihoods, 0.0)
    log_transition = safe_log(transition_matrix)
    steps = log_transition[None, :, :] + log_likelihoods[:, None, :]
    first = jnp.broadcast_to(safe_log(initial_probs) + log_likelihoods[0], (num_states, num_states))
    steps = steps.at[0].set(first)
    log_identity = safe_log(jnp.eye(num_states, dtype=steps.dtype))
    steps = jnp.where(valid[:, None, None], steps, log_identity[None, :, :])
    matrices, scales = jax.vmap(_rescale)(steps, jnp.zeros((num_steps,), steps.dtype))
    return (matrices, scales), valid, log_transition


def _prefix(combine, elements):
    return lax.associative_scan(jax.vmap(combine), elements)


def _suffix(combine, elements):
    """Suffix products ``E_t ⊗ ⋯ ⊗ E_{T}`` (reverse scans hand the later element first)."""
    return lax.associative_scan(jax.vmap(lambda later, earlier: combine(earlier, later)),
                                elements, reverse=True)


def _softmax_or_zero(log_weights: Array) -> Array:
    """Row-wise softmax; an all −inf row becomes zeros instead of NaN."""
    top = jnp.max(log_weights, axis=-1, keepdims=True)
    weights = jnp.exp(log_weights - finite_or_zero(top))
    total = jnp.sum(weights, axis=-1, keepdims=True)
    return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 0.0)


@jax.jit
def forward_filter(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   length: Optional[Array] = None) -> tuple[Array, Array]:
    """``(log p(x_{1:L}), filtered)`` as ``inference.forward_filter``, by an associative scan."""
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    elements, valid, _ = _elements(initial_probs, transition_matrix, log_likelihoods, length)
    matrices, scales = _prefix(_sum_product, elements)
    log_alpha = matrices[:, 0, :]
    last = log_alpha[-1]
    top = jnp.max(last)
    log_lik = scales[-1] + top + safe_log(jnp.sum(jnp.exp(last - finite_or_zero(top))))
    filtered = jnp.where(valid[:, None], _softmax_or_zero(log_alpha), 0.0)
    return log_lik, filtered


@jax.jit
def smoothed_probs(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   length: Optional[Array] = None) -> Array:
    """``γ_t ∝ α_t ⊙ β_t`` with both from associative scans (prefix and suffix products)."""
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    elements, valid, _ = _elements(initial_probs, transition_matrix, log_likelihoods, length)
    forward_matrices, _ = _prefix(_sum_product, elements)
    later_elements = jax.tree.map(lambda x: x[1:], elements)
    suffix_matrices, _ = _suffix(_sum_product, later_elements)
    row_max = jnp.max(suffix_matrices, axis=2)
    log_beta = finite_or_zero(row_max) + safe_log(
        jnp.sum(jnp.exp(suffix_matrices - finite_or_zero(row_max)[:, :, None]), axis=2))
    log_beta = jnp.concatenate([log_beta, jnp.zeros_like(log_beta[:1])], axis=0)
    smoothed = _softmax_or_zero(forward_matrices[:, 0, :] + log_beta)
    return jnp.where(valid[:, None], smoothed, 0.0)


@jax.jit
def most_likely_states(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                       length: Optional[Array] = None) -> tuple[Array, Array]:
    """Viterbi ``(states, log_prob)`` as ``inference.most_likely_states``, by associative scans.

    δ_t = row 0 of the max-plus prefix products; ``ψ_t(j) = argmax_i δ_{t−1}(i) + log A_ij``
    for all t at once; then ``z_t = (ψ_{t+1} ∘ ⋯ ∘ ψ_L)(z_L)`` from a suffix scan of function
    composition (``(f ∘ g)[j] = f[g[j]]``), so the path is always consistent.
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    elements, valid, log_transition = _elements(initial_probs, transition_matrix,
                                                log_likelihoods, length)
    matrices, scales = _prefix(_max_product, elements)
    deltas = matrices[:, 0, :]
    num_states = deltas.shape[1]
    pointers = jnp.argmax(deltas[:-1, :, None] + log_transition[None, :, :], axis=1)
    pointers = jnp.where(valid[1:, None], pointers, jnp.arange(num_states)[None, :])
    compose = jax.vmap(lambda outer, inner: outer[inner])
    chains = lax.associative_scan(lambda later, earlier: compose(earlier, later), pointers,
                                  reverse=True)
    last = jnp.argmax(deltas[-1])
    states = jnp.concatenate([chains[:, last], last[None]])
    return jnp.where(valid, states, -1), scales[-1] + deltas[-1, last]


@jax.jit
def _log_likelihood(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return forward_filter(model.initial_probs, model.transition_matrix, lls, length)[0]


@jax.jit
def _posteriors(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return smoothed_probs(model.initial_probs, model.transition_matrix, lls, length)


@jax.jit
def _viterbi(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return most_likely_states(model.initial_probs, model.transition_matrix, lls, length)


def log_likelihood(model: HMM, observations: Array, length: Optional[Array] = None) -> Array:
    """``log p(x_{1:L})`` with an O(log T)-depth associative scan (``hmm.log_likelihood``)."""
    check_one_sequence(model, observations, length)
    return _log_likelihood(model, observations, length)


def posteriors(model: HMM, observations: Array, length: Optional[Array] = None) -> Array:
    """Smoothed marginals (T, K), padded rows 0, by associative scans (``hmm.posteriors``)."""
    check_one_sequence(model, observations, length)
    return _posteriors(model, observations, length)


def viterbi(model: HMM, observations: Array, length: Optional[Array] = None) -> tuple[Array, Array]:
    """``(states, log_prob)`` of the most probable path by associative scans (``hmm.viterbi``)."""
    check_one_sequence(model, observations, length)
    return _viterbi(model, observations, length)
