"""Sequential HMM inference for one sequence with ``lax.scan`` (batches come from ``jax.vmap``).

Low-level functions take ``(initial_probs, transition_matrix, log_likelihoods, length=None)``
with ``log_likelihoods[t, k] = log p(x_t | z_t = k)`` of shape ``(T, K)``, so any emission model
or a neural network can feed them.  The high-level ``forward``, ``log_likelihood``,
``posteriors`` and ``viterbi`` take ``(model, observations, length=None)``.

Numerics.  The forward pass is scaled (Rabiner 1989): with ``m_t`` the largest ``ll[t, k]``
among the states the prediction can reach and ``b̃_t = exp(ll_t − m_t)`` (<= 1 on them),

    α̂_1 ∝ π ⊙ b̃_1,   α̂_t ∝ (α̂_{t−1}ᵀ A) ⊙ b̃_t,   c_t = normaliser,   log p(x_{1:T}) = Σ_t (log c_t + m_t),

the terms summed by one reduction after the loop (in float32 at T = 10⁵ that measured
~1e-8 relative error, where a running sum inside the loop drifted by ~1e-4).

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

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array
from functional_dl.hmm._numerics import (finite_or_zero, normalize, replace_padding, safe_divide,
                                         safe_log, scaled_likelihoods, valid_mask)
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


def _masked(log_likelihoods: Array, length: Array | None) -> tuple[Array, Array]:
    """(log-likelihoods with padded rows set to 0, validity mask)."""
    valid = valid_mask(log_likelihoods.shape[0], length)
    return jnp.where(valid[:, None], log_likelihoods, 0.0), valid


@jax.jit
def forward_filter(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                   length: Array | None = None) -> tuple[Array, Array]:
    """Scaled forward pass: ``(log p(x_{1:L}), filtered)`` with ``filtered[t] = p(z_t | x_{1:t})``.

    ``α̂_t ∝ (α̂_{t−1}ᵀ A) ⊙ exp(ll_t − m_t)`` (``α̂_0ᵀ A`` read as π); ``log p = Σ_t log c_t + m_t``,
    ``m_t`` the best log-likelihood among the states the prediction can reach.
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked(log_likelihoods, length)

    def _step(predicted, ll_t):
        """Condition the predicted p(z_t | x_{<t}) on x_t, then predict z_{t+1}."""
        scaled, shift = scaled_likelihoods(ll_t, predicted > 0)
        filtered, norm = normalize(predicted * scaled)
        return filtered @ transition_matrix, (filtered, safe_log(norm) + shift)

    init = jnp.asarray(initial_probs, log_likelihoods.dtype)
    # padded steps run on ll = 0 (finite, harmless) and are masked afterwards, outside the loop
    _, (filtered, log_norms) = lax.scan(_step, init, log_likelihoods)
    log_lik = jnp.sum(jnp.where(valid, log_norms, 0.0))
    return log_lik, jnp.where(valid[:, None], filtered, 0.0)


def _supported_likelihoods(log_likelihoods: Array, support: Array) -> Array:
    """``b̃ = exp(ll − m)`` on the support (``m`` its best entry per row) and 0 off it."""
    scaled, _ = scaled_likelihoods(log_likelihoods, support)
    return jnp.where(support, scaled, 0.0)


def _backward_messages(transition_matrix: Array, scaled: Array, valid: Array) -> Array:
    """``β_t ∝ A (b̃_{t+1} ⊙ β_{t+1})`` by a reverse scan; uniform rows from ``L − 1`` on."""
    num_states = scaled.shape[1]
    uniform = jnp.full((num_states,), 1.0 / num_states, scaled.dtype)

    def _step(next_backward, scaled_next):
        """One step back in time: β_t from β_{t+1} and the observation x_{t+1}."""
        backward, _ = normalize(transition_matrix @ (scaled_next * next_backward))
        return backward, backward

    _, backward = lax.scan(_step, uniform, scaled[1:], reverse=True)
    backward = jnp.concatenate([backward, uniform[None, :]], axis=0)
    from_last = ~jnp.concatenate([valid[1:], jnp.zeros((1,), bool)])
    return jnp.where(from_last[:, None], uniform[None, :], backward)


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
        support = jnp.ones(log_likelihoods.shape, bool)
    else:
        if jnp.shape(filtered_probs) != log_likelihoods.shape:
            raise ValueError(f"filtered_probs must have the shape of log_likelihoods, "
                             f"{log_likelihoods.shape}, got {jnp.shape(filtered_probs)}")
        support = (filtered_probs > 0) | ~valid[:, None]
    return _backward_messages(transition_matrix, _supported_likelihoods(log_likelihoods, support),
                              valid)


class Posteriors(NamedTuple):
    """Everything one forward-backward pass gives (padded rows of the (T, K) arrays are 0)."""
    log_likelihood: Array  # scalar, log p(x_{1:L})
    filtered_probs: Array  # (T, K), p(z_t | x_{1:t})
    smoothed_probs: Array  # (T, K), γ_t = p(z_t | x_{1:L})
    transition_counts: Array  # (K, K), Σ_t ξ_t(i, j) = Σ_t p(z_t = i, z_{t+1} = j | x_{1:L})


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
    log_lik, filtered = forward_filter(initial_probs, transition_matrix, log_likelihoods, length)
    masked, valid = _masked(log_likelihoods, length)
    scaled = _supported_likelihoods(masked, (filtered > 0) | ~valid[:, None])
    backward = _backward_messages(transition_matrix, scaled, valid)
    smoothed, _ = normalize(filtered * backward)
    predicted = filtered[:-1] @ transition_matrix  # p(z_{t+1} | x_{1:t})
    future = scaled[1:] * backward[1:]
    norms = jnp.sum(predicted * future, axis=1)
    weights = jnp.where(valid[1:], safe_divide(1.0, norms), 0.0)[:, None] * filtered[:-1]
    counts = transition_matrix * (weights.T @ future)
    return Posteriors(log_lik, filtered, smoothed, counts)


@jax.jit
def most_likely_states(initial_probs: Array, transition_matrix: Array, log_likelihoods: Array,
                       length: Array | None = None) -> tuple[Array, Array]:
    """Viterbi: ``(argmax_z log p(z, x), max_z log p(z, x))``; padded states are −1.

    ``δ_1 = log π + ll_1``, ``δ_t(j) = max_i [δ_{t−1}(i) + log A_ij] + ll_t(j)`` with back-pointers
    ``ψ_t(j) = argmax_i [...]``; ``z_L = argmax δ_L``, ``z_t = ψ_{t+1}(z_{t+1})`` (a reverse scan).
    δ is shifted by its max at every step (exact comparisons at any T); ``log_prob`` is then
    summed along the decoded path.  Ties go to the lowest state index.  When no path is
    possible the log-probability is −inf and the states are arbitrary.
    """
    check_inference_shapes(initial_probs, transition_matrix, log_likelihoods, length)
    log_likelihoods, valid = _masked(log_likelihoods, length)
    log_transition = safe_log(transition_matrix)
    num_states = log_likelihoods.shape[1]
    identity = jnp.arange(num_states)

    def _rescale(scores):
        return scores - finite_or_zero(jnp.max(scores))

    def _step(scores, inputs):
        """Best (shifted) score of each state at t, and which state at t − 1 it came from."""
        ll_t, valid_t = inputs
        candidates = scores[:, None] + log_transition
        new_scores = _rescale(jnp.max(candidates, axis=0) + ll_t)
        pointers = jnp.argmax(candidates, axis=0)
        return jnp.where(valid_t, new_scores, scores), jnp.where(valid_t, pointers, identity)

    first = _rescale(safe_log(initial_probs) + log_likelihoods[0])
    scores, pointers = lax.scan(_step, first, (log_likelihoods[1:], valid[1:]))
    last = jnp.argmax(scores)

    def _backtrack(state, pointers_next):
        """z_t = ψ_{t+1}(z_{t+1})."""
        previous = pointers_next[state]
        return previous, previous

    _, earlier = lax.scan(_backtrack, last, pointers, reverse=True)
    states = jnp.concatenate([earlier, last[None]])
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
def _forward(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return forward_filter(model.initial_probs, model.transition_matrix, lls, length)


@jax.jit
def _smoother(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return smoother(model.initial_probs, model.transition_matrix, lls, length)


@jax.jit
def _viterbi(model, observations, length):
    lls = model_log_likelihoods(model, observations, length)
    return most_likely_states(model.initial_probs, model.transition_matrix, lls, length)


def forward(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(log p(x_{1:L}), filtered)`` for one sequence; see ``forward_filter``."""
    check_one_sequence(model, observations, length)
    return _forward(model, observations, length)


def log_likelihood(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """``log p(x_{1:L}) = log Σ_z π_{z_1} b_{z_1}(x_1) Π_t A_{z_{t−1} z_t} b_{z_t}(x_t)``.

    Differentiable with respect to every parameter, never NaN.  Gradients with respect to π
    and A are exact even at entries equal to 0 (tested against finite differences), unless
    such an entry leads to a state that fits an observation better than every reachable
    state: the true derivative is then astronomically large and is reported capped.  An
    emission probability exactly 0 (Categorical) gets gradient 0 instead of its true value,
    because only ``log b`` reaches the inference (parametrise by logits to stay inside the
    simplex, as gradient-based fitting does anyway).  When ``log p = −inf`` gradients are 0.
    """
    return forward(model, observations, length)[0]


def posteriors(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """Smoothed marginals ``γ_t(k) = p(z_t = k | x_{1:L})``, shape (T, K); padded rows 0.

    ``smoother`` gives the log-likelihood, filtered marginals and expected transition counts too.
    """
    check_one_sequence(model, observations, length)
    return _smoother(model, observations, length).smoothed_probs


def viterbi(model: HMM, observations: Array, length: Array | None = None) -> tuple[Array, Array]:
    """``(states, log_prob)``: the most probable path and its joint ``log p(z_{1:L}, x_{1:L})``."""
    check_one_sequence(model, observations, length)
    return _viterbi(model, observations, length)
