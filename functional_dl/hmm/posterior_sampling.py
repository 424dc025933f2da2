"""Posterior path sampling: forward filtering, backward sampling (FFBS).

A draw of the whole hidden path from ``p(z_{1:L} | x_{1:L})`` (Carter & Kohn 1994; Chib
1996)::

    z_L ~ p(z_L | x_{1:L}) = filtered_L
    z_t ~ p(z_t | z_{t+1}, x_{1:t}) ∝ filtered_t(k) · A[k, z_{t+1}],   t = L−1, ..., 1

The filtered marginals come from the scaled forward pass (``forward_filter``); the backward
pass is one reverse ``lax.scan`` of inverse-CDF draws, all uniforms drawn before the loop
(as in ``sampling``).  Padded positions ``t >= length`` are −1, as in Viterbi.  Many paths:
``jax.vmap`` over keys (the forward pass is then computed once per key; to share it, call
``sample_posterior_states`` with ``filtered`` from ``forward_filter``).  When no path is
possible (``log p = −inf``) the states are arbitrary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm._numerics import inverse_cdf, state_index_dtype, valid_mask
from functional_dl.hmm.inference import forward_filter
from functional_dl.hmm.model import HMM, check_one_sequence, model_log_likelihoods

__all__ = ["sample_posterior_states", "sample_posterior"]


@jax.jit
def _backward_sample(key: PRNGKey, transition_matrix: Array, filtered: Array,
                     length: Array | None) -> Array:
    num_steps, num_states = filtered.shape
    dtype = filtered.dtype
    transition_matrix = transition_matrix.astype(dtype)
    uniforms = jax.random.uniform(key, (num_steps,), dtype)
    valid = valid_mask(num_steps, length)
    index_dtype = state_index_dtype(num_states)

    def _step(following, inputs):
        """Draw z_t given z_{t+1} (``following``, −1 while no later state has been drawn)."""
        probs, uniform, valid_t = inputs
        column = transition_matrix[:, jnp.maximum(following, 0)]
        weights = probs * jnp.where(following >= 0, column, 1.0)
        drawn = inverse_cdf(jnp.cumsum(weights), uniform)
        state = jnp.where(valid_t, jnp.minimum(drawn, num_states - 1), -1).astype(index_dtype)
        return state, state

    _, states = lax.scan(_step, jnp.asarray(-1, index_dtype), (filtered, uniforms, valid),
                         reverse=True)
    return states.astype(jnp.int32)


def sample_posterior_states(key: PRNGKey, initial_probs: Array, transition_matrix: Array,
                            log_likelihoods: Array, length: Array | None = None, *,
                            filtered: Array | None = None) -> Array:
    """One path ``z_{1:T}`` (int32, −1 at padded steps) drawn from ``p(z | x)`` by FFBS.

    ``log_likelihoods`` is ``(T, K)``; ``filtered`` (from ``forward_filter`` on the same
    arguments) skips the forward pass when given.
    """
    checks.prng_key("key", key, what="sampling", single=True)
    if filtered is None:
        _, filtered = forward_filter(initial_probs, transition_matrix, log_likelihoods, length)
    elif jnp.shape(filtered) != jnp.shape(log_likelihoods):
        raise ValueError(f"sample_posterior_states: filtered must have the shape of "
                         f"log_likelihoods {jnp.shape(log_likelihoods)}, got "
                         f"{jnp.shape(filtered)}")
    return _backward_sample(key, jnp.asarray(transition_matrix), filtered, length)


def sample_posterior(key: PRNGKey, model: HMM, observations: Array,
                     length: Array | None = None) -> Array:
    """``sample_posterior_states`` for one sequence of observations under ``model``."""
    check_one_sequence(model, observations, length)
    lls = model_log_likelihoods(model, observations, length)
    return sample_posterior_states(key, model.initial_probs, model.transition_matrix, lls,
                                   length)
