"""Online filtering, prediction and the stationary distribution.

Streaming data arrives one observation at a time; the filter keeps what the next step needs::

    predicted_t(k) = p(z_t = k | x_{1:t−1})          (π for t = 1)
    filtered_t(k)  ∝ predicted_t(k) · b_k(x_t),      c_t = Σ_k predicted_t(k) b_k(x_t)
    predicted_{t+1} = filtered_tᵀ A,                 log p(x_{1:t}) = Σ_s log c_s

``filter_init(model) -> FilterState`` and ``filter_step(model, state, observation) ->
FilterState`` compile once (the state's shapes never change); ``filter_update`` is the same
step on a row of log-likelihoods (any emission model).  After ``T`` steps the state equals
``forward_filter`` on the ``T`` rows (tested).  ``c_t`` is formed with the row shifted by its
maximum, so large log-likelihoods neither overflow nor underflow; an observation impossible
under every predicted state gives ``log p = −inf`` and keeps the prediction; a NaN row makes
the state NaN (it is not hidden as −inf).

The predictive distribution of the next observation is the mixture
``p(x_{t+1} | x_{1:t}) = Σ_k predicted_{t+1}(k) b_k(x_{t+1})``: ``next_state_probs`` gives
its weights after a whole sequence, ``predictive_log_density`` its log density at candidate
observations.  ``stationary_distribution(A)`` solves ``πᵀ A = πᵀ, Σ π = 1``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_dl._types import Array
from functional_dl.hmm._numerics import finite_or_zero
from functional_dl.hmm.inference import forward
from functional_dl.hmm.model import HMM, check, check_inference_shapes

__all__ = ["FilterState", "filter_init", "filter_step", "filter_update", "next_state_probs",
           "predictive_log_density", "stationary_distribution"]


class FilterState(NamedTuple):
    """``filtered``: ``p(z_t | x_{1:t})`` (π before any observation); ``predicted``:
    ``p(z_{t+1} | x_{1:t})``; ``log_likelihood``: ``log p(x_{1:t})``; ``count``: t (int32)."""

    filtered: Array
    predicted: Array
    log_likelihood: Array
    count: Array


def _float_dtype(*arrays: Any):
    return jnp.result_type(jnp.float32, *(jnp.result_type(a) for a in arrays))


def filter_init(model: HMM) -> FilterState:
    """The state before any observation: ``predicted = filtered = π``, ``log p = 0``."""
    check(model)
    dtype = _float_dtype(model.initial_probs, model.transition_matrix)
    probs = jnp.asarray(model.initial_probs, dtype)
    return FilterState(probs, probs, jnp.zeros((), dtype), jnp.zeros((), jnp.int32))


@jax.jit
def filter_update(transition_matrix: Array, state: FilterState,
                  log_likelihoods: Array) -> FilterState:
    """One filter step on ``log_likelihoods[k] = log b_k(x_t)``, shape (K,) (module docstring)."""
    num_states = state.predicted.shape[-1]
    if jnp.shape(log_likelihoods) != (num_states,):
        raise ValueError(f"filter_update: log_likelihoods must have shape ({num_states},), one "
                         f"entry per state, got {jnp.shape(log_likelihoods)}")
    dtype = state.predicted.dtype
    row = jnp.asarray(log_likelihoods).astype(dtype)
    shift = jax.lax.stop_gradient(finite_or_zero(jnp.max(row)))
    joint = state.predicted * jnp.exp(row - shift)
    norm = jnp.sum(joint)
    possible = norm > 0
    filtered = jnp.where(possible, joint / jnp.where(possible, norm, 1.0), state.predicted)
    filtered = jnp.where(jnp.isnan(norm), jnp.nan, filtered)
    log_norm = jnp.where(possible, jnp.log(jnp.where(possible, norm, 1.0)) + shift, -jnp.inf)
    log_norm = jnp.where(jnp.isnan(norm), jnp.nan, log_norm)
    predicted = filtered @ jnp.asarray(transition_matrix).astype(dtype)
    return FilterState(filtered, predicted, state.log_likelihood + log_norm, state.count + 1)


@jax.jit
def _model_filter_step(model: HMM, state: FilterState, observation: Array) -> FilterState:
    row = model.emissions.log_likelihoods(jnp.asarray(observation)[None])[0]
    return filter_update(model.transition_matrix, state, row)


def filter_step(model: HMM, state: FilterState, observation: Array) -> FilterState:
    """``filter_update`` with the row ``log b_k(observation)`` from the model's emissions.

    ``observation`` is one step (``event_shape``); jitted, one compilation per model
    structure, state shapes and observation shape (the same for every later step).
    """
    event_ndim = getattr(model.emissions, "event_ndim", 0)
    if jnp.ndim(observation) != event_ndim:
        raise ValueError(f"filter_step: observation must be one step with {event_ndim} "
                         f"dimension(s), got shape {jnp.shape(observation)}")
    if not isinstance(state, FilterState):
        raise TypeError(f"filter_step: state must be a FilterState (from filter_init), got "
                        f"{type(state).__name__}")
    return _model_filter_step(model, state, observation)


def next_state_probs(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """``p(z_{L+1} = k | x_{1:L}) = Σ_j p(z_L = j | x_{1:L}) A_jk``, shape (K,)."""
    _, filtered = forward(model, observations, length)
    last = filtered.shape[0] - 1 if length is None else jnp.asarray(length) - 1
    return filtered[last] @ jnp.asarray(model.transition_matrix).astype(filtered.dtype)


def predictive_log_density(model: HMM, observations: Array, candidates: Array,
                           length: Array | None = None) -> Array:
    """``log p(x_{L+1} = c | x_{1:L}) = log Σ_k p(z_{L+1} = k | x_{1:L}) b_k(c)`` for each
    candidate ``c`` in ``candidates`` (``(N,) + event_shape``); shape (N,).

    Over all candidate symbols of a ``Categorical`` model the densities sum to 1 (tested).
    """
    weights = next_state_probs(model, observations, length)
    lls = model.emissions.log_likelihoods(jnp.asarray(candidates))
    return jax.scipy.special.logsumexp(lls + jnp.log(weights)[None, :], axis=1)


@jax.jit
def stationary_distribution(transition_matrix: Array) -> Array:
    """The ``π`` with ``πᵀ A = πᵀ`` and ``Σ π = 1``, shape (K,).

    Solves ``(Aᵀ − I) π = 0`` with one equation replaced by ``Σ π = 1`` (a K×K linear
    solve).  Unique for an irreducible chain; for a reducible one (two closed classes) the
    system is singular and the result is not meaningful (NaN or inf), so check the chain.
    """
    check_inference_shapes(jnp.ones(jnp.shape(transition_matrix)[:1]), transition_matrix,
                           jnp.zeros((1,) + jnp.shape(transition_matrix)[:1]), None)
    matrix = jnp.asarray(transition_matrix)
    dtype = _float_dtype(matrix)
    num_states = matrix.shape[0]
    system = matrix.astype(dtype).T - jnp.eye(num_states, dtype=dtype)
    system = system.at[-1].set(1.0)
    target = jnp.zeros(num_states, dtype).at[-1].set(1.0)
    return jnp.linalg.solve(system, target)
