"""Sequential HMM inference for one sequence with ``lax.scan`` (batches come from ``jax.vmap``).

Low-level functions take ``(initial_probs, transition_matrix, log_likelihoods, length=None)``
with ``log_likelihoods[t, k] = log p(x_t | z_t = k)`` of shape ``(T, K)``, so any emission model
or a neural network can feed them; ``transition_matrix`` is ``(K, K)`` or time-varying
``(T − 1, K, K)``, ``A[t]`` taking ``z_t`` to ``z_{t+1}`` (input-driven HMMs; Viterbi too).  The high-level ``forward``, ``log_likelihood`` and
``posteriors`` take ``(model, observations, length=None)``; Viterbi is in ``decoding``.
``functional_dl.hmm.parallel`` has the same functions, parallel in time.

Numerics (the loops are in ``_scans``).  The forward pass is scaled (Rabiner 1989),
``α̂_t ∝ (α̂_{t−1}ᵀ A) ⊙ exp(ll_t − m_t)``, ``log p = Σ_t (log c_t + m_t)``; shifts,
exponentials, logarithms, sums and padding masks are all computed outside the loops.  A fast
pass shifts by each step's best state; when that underflows (a chain stuck in poorly fitting
states beside an unreachable, well fitting one, or an impossible observation) a careful pass
shifting by the best *reachable* state reruns the sequence.  π and A enter only through
products, never through their logarithms, so zeros in them give no NaN in values or
gradients.  A step where every reachable state has probability 0 gives ``c_t = 0``, hence
``log p = −inf`` (never NaN), and all later filtered and smoothed probabilities are 0.
NaN is kept for NaN: a NaN in π, A or a non-padded log-likelihood (a user's emission model
computing 0 · log 0, say) makes ``log p`` NaN, the filtered probabilities NaN from that step
on and every smoothed probability and transition count NaN.

Padding.  Positions ``t >= length`` do not change any result: their log-likelihoods are
ignored (the high-level functions also overwrite padded observations before evaluating the
emission model, so NaN padding cannot leak into gradients).  Padded rows of filtered and
smoothed probabilities are 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array
from functional_dl.hmm._numerics import finite_or_zero, safe_divide
from functional_dl.hmm._scans import (backward_likelihoods, backward_scan, forward_pass, mask_rows,
                                      masked, smooth)
from functional_dl.hmm.model import (HMM, SmootherResult, check_inference_shapes,
                                     check_one_sequence, on_model)


@jax.jit
def forward_filter(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   length: Array | None = None) -> tuple[Array, Array]:
    """Scaled forward pass: ``(log p(x_{1:L}), filtered)`` with ``filtered[t] = p(z_t | x_{1:t})``.

    ``α̂_t ∝ (α̂_{t−1}ᵀ A) ⊙ exp(ll_t − m_t)`` (``α̂_0ᵀ A`` read as π); ``log p = Σ_t log c_t + m_t``,
    ``c_t`` the normaliser of step t.  ``m_t = max_k ll_t(k)``, or the best among the states
    the prediction can reach when that is needed to avoid underflow (module docstring).
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length,
                           time_varying=True)
    log_likelihoods, valid = masked(log_likelihoods, length)
    forward = forward_pass(initial_probs, transition_matrix, log_likelihoods, valid)
    return forward.log_likelihood, forward.filtered


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
    check_inference_shapes(None, transition_matrix, log_likelihoods, length,
                           time_varying=True)
    log_likelihoods, valid = masked(log_likelihoods, length)
    if filtered_probs is None:
        shifts = lax.stop_gradient(finite_or_zero(jnp.max(log_likelihoods, axis=1)))
        scaled = jnp.exp(log_likelihoods - shifts[:, None])
    else:
        if jnp.shape(filtered_probs) != log_likelihoods.shape:
            raise ValueError(f"filtered_probs must have the shape of log_likelihoods, "
                             f"{log_likelihoods.shape}, got {jnp.shape(filtered_probs)}")
        support = mask_rows(filtered_probs > 0, valid, True)
        scaled, _ = backward_likelihoods(log_likelihoods, support)
    return backward_scan(transition_matrix, scaled, valid)


@jax.jit
def smoother(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
             length: Array | None = None) -> SmootherResult:
    """Forward-backward: smoothed marginals ``γ_t ∝ α̂_t ⊙ β_t`` and expected transition counts.

    ``ξ_t(i, j) = α̂_t(i) A_ij b̃_{t+1}(j) β_{t+1}(j) / n_t`` with
    ``n_t = (α̂_tᵀ A) · (b̃_{t+1} ⊙ β_{t+1})`` making ``Σ_ij ξ_t = 1``;
    summed over ``t + 1 < L`` as one ``(K, T) @ (T, K)`` product, never a ``(T, K, K)`` array:
    ``Σ_t ξ_t = A ⊙ (Xᵀ Y)`` with ``X_t = α̂_t / n_t``, ``Y_t = b̃_{t+1} ⊙ β_{t+1}``.
    If ``log p = −inf`` (the sequence is impossible) all posteriors and counts are 0.
    """
    pieces = smoother_pieces(initial_probs, transition_matrix, log_likelihoods, length)
    counts = _transition_sum(transition_matrix.astype(pieces.weights.dtype), pieces.weights,
                             pieces.future)
    return SmootherResult(pieces.forward.log_likelihood, pieces.forward.filtered,
                          pieces.smoothed, counts)


def smoother_pieces(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                    length: Array | None = None):
    """What ``smoother`` computes before summing the transition counts (``_scans.Smoothed``):
    the E-step sums ``X_tᵀ Y_t`` over a whole batch in one product instead."""
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length,
                           time_varying=True)
    log_likelihoods, valid = masked(log_likelihoods, length)
    return smooth(initial_probs, transition_matrix, log_likelihoods, valid)


def _transition_sum(transition_matrix: Array, weights: Array, future: Array) -> Array:
    """``Σ_t ξ_t = Σ_t A_t ⊙ (X_t Y_tᵀ)`` (``A_t = A`` for a constant matrix), shape (K, K)."""
    if transition_matrix.ndim == 3:
        return jnp.einsum("tij,ti,tj->ij", transition_matrix, weights, future)
    return transition_matrix * (weights.T @ future)


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
    large.  Reverse mode evaluates the pass once (it also gives ``log p``) instead of
    differentiating through the loops.
    """
    log_likelihoods, valid = masked(log_likelihoods, length)
    return forward_pass(initial_probs, transition_matrix, log_likelihoods, valid).log_likelihood


@_log_likelihood.defjvp
def _log_likelihood_jvp(primals, tangents):
    initial_probs, transition_matrix, raw_log_likelihoods, length = primals
    initial_tangent, transition_tangent, log_likelihood_tangent = tangents[:3]
    log_likelihoods, valid = masked(raw_log_likelihoods, length)
    pieces = smooth(initial_probs, transition_matrix, log_likelihoods, valid)
    excess = log_likelihoods - pieces.support_shifts[:, None]
    factors = jnp.exp(jnp.minimum(excess, _gradient_cap(excess.dtype)))  # every state
    following = factors[1:] * pieces.backward[1:]
    if transition_matrix.ndim == 3:  # one matrix per step: a gradient per step
        transition_gradient = pieces.weights[:, :, None] * following[:, None, :]
    else:
        transition_gradient = pieces.weights.T @ following
    first = factors[0] * pieces.backward[0]
    initial_gradient = first * safe_divide(1.0, jnp.sum(initial_probs * first))
    tangent = (jnp.sum(pieces.smoothed * log_likelihood_tangent)
               + jnp.sum(transition_gradient * transition_tangent)
               + jnp.sum(initial_gradient * initial_tangent))
    return pieces.forward.log_likelihood, tangent.astype(pieces.forward.log_likelihood.dtype)


def _checked_log_likelihood(initial_probs, transition_matrix, log_likelihoods, length):
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length,
                           time_varying=True)
    return _log_likelihood(initial_probs, transition_matrix, log_likelihoods, length)


_model_forward = on_model(forward_filter)
_model_log_likelihood = on_model(_checked_log_likelihood)
_model_smoother = on_model(smoother)


def forward(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(log p(x_{1:L}), filtered)`` for one sequence; see ``forward_filter``."""
    check_one_sequence(model, observations, length)
    return _model_forward(model, observations, length)


def log_likelihood(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """``log p(x_{1:L}) = log Σ_z π_{z_1} b_{z_1}(x_1) Π_t A_{z_{t−1} z_t} b_{z_t}(x_t)``.

    Differentiable with respect to every parameter (reverse and forward mode), never NaN
    for NaN-free input (NaN in, NaN out: module docstring):
    the derivatives come from one forward-backward pass (``_log_likelihood``), exact also at
    entries of π and A equal to 0 (tested against finite differences), except that a
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
