"""Multinomial emissions over V categories: ``b_k(x) = Multinomial(x; n = Σ_v x_v, probs[k])``.

An observation is a vector of V counts whose number of trials ``n = Σ_v x_v`` may vary from
step to step (as in hmmlearn's ``MultinomialHMM``):

    log b_k(x) = log n! − Σ_v log x_v! + Σ_v x_v log p_kv.

The multinomial coefficient is included, as hmmlearn's ``MultinomialHMM`` does (it calls
``scipy.stats.multinomial.logpmf``); it does not depend on the state, so posteriors and the
M-step are the same without it, only the log-likelihood shifts.

M-step (MAP under a symmetric Dirichlet(α + 1) prior on each row; α = 0 is maximum
likelihood, hmmlearn's only M-step; α may be one number or an array broadcastable to
(K, V), a 0 keeping a structural zero of ``probs``):

    p_kv = (c_kv + α) / Σ_v' (c_kv' + α),    c_kv = Σ_t γ_t(k) x_tv.

``num_trials`` is used by ``sample`` alone (the n of every drawn observation); it is kept
as a float so that the NamedTuple differentiates like the others, and is None when only
likelihoods and EM are needed.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, xlogy

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm._numerics import min_mass, safe_divide
from functional_dl.hmm.emissions import _support


class MultinomialStats(NamedTuple):
    """``counts[k, v] = Σ_t w_tk x_tv``."""
    counts: Array


class Multinomial(NamedTuple):
    """Multinomial emissions: ``probs`` (K, V), rows sum to 1; observations counts (T, V).

    ``num_trials`` (a scalar, or None) is the number of trials of sampled observations.
    """
    probs: Array
    num_trials: Optional[Array] = None

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.probs.shape[0]

    @property
    def num_free_parameters(self) -> int:
        """K·(V − 1): each row of ``probs`` sums to 1 (``num_trials`` is data, not fitted)."""
        num_states, num_categories = np.shape(self.probs)[-2:]
        return num_states * (num_categories - 1)

    def log_likelihoods(self, observations: Array) -> Array:
        """``log n! − Σ_v log x_v! + Σ_v x_v log p_kv`` (``x log p`` is 0 where x = 0)."""
        chex.assert_rank(observations, 2)
        x = observations.astype(self.probs.dtype)
        coefficients = gammaln(jnp.sum(x, axis=-1) + 1.0) - jnp.sum(gammaln(x + 1.0), axis=-1)
        return (coefficients[:, None]
                + jnp.sum(xlogy(x[:, None, :], self.probs[None, :, :]), axis=-1))

    def sufficient_stats(self, observations: Array, weights: Array) -> MultinomialStats:
        """Expected category counts per state, ``c_kv = Σ_t w_tk x_tv``."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        return MultinomialStats(weights.T @ observations.astype(weights.dtype))

    def m_step(self, stats: MultinomialStats, *, pseudo_count=0.0) -> Multinomial:
        """``p_kv = (c_kv + α) / Σ_v' (c_kv' + α)`` with ``α = pseudo_count`` (module)."""
        counts = stats.counts + jnp.broadcast_to(pseudo_count, stats.counts.shape)
        totals = jnp.sum(counts, axis=1, keepdims=True)
        has_mass = totals > min_mass(counts.dtype)
        return Multinomial(jnp.where(has_mass, safe_divide(counts, totals), self.probs),
                           self.num_trials)

    def log_prior(self, *, pseudo_count=0.0) -> Array:
        """``Σ_kv α_kv log p_kv``, a Dirichlet(α + 1) on each row up to a constant: the prior
        whose MAP ``m_step`` computes (0 at α = 0)."""
        return _support.dirichlet_log_prior(self.probs, pseudo_count)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_t ~ Multinomial(num_trials, probs[z_t])``, int32 counts ``(N, V)``."""
        if self.num_trials is None:
            raise ValueError("Multinomial.sample needs emissions.num_trials (the number of "
                             "trials of each sampled observation), got None")
        draws = jax.random.multinomial(key, jnp.asarray(self.num_trials, self.probs.dtype),
                                       self.probs[states])
        return jnp.round(draws).astype(jnp.int32)

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Probability rows; ``num_trials`` None or a whole number >= 0; observations counts."""
        checks.rank("emissions.probs", self.probs, 2, "(K, V)")
        checks.probability_rows("emissions.probs", self.probs)
        if self.num_trials is not None:
            if np.ndim(self.num_trials) != 0:
                raise ValueError(f"emissions.num_trials must be a scalar (or None), got shape "
                                 f"{np.shape(self.num_trials)}")
            values = checks.concrete_values(self.num_trials)
            if values is not None and not (values[0] >= 0 and values[0] == np.round(values[0])):
                raise ValueError(f"emissions.num_trials must be a whole number >= 0, got "
                                 f"{values[0]!r}")
        if observations is not None:
            _support.count_observations(observations, valid, self.probs.shape[1],
                                        source="emissions.probs")

    def check_hyperparameters(self, *, pseudo_count=0.0) -> None:
        """``pseudo_count`` a real ``>= 0``, or an array of them broadcastable to (K, V)."""
        _support.check_prior("Multinomial: pseudo_count", pseudo_count, np.shape(self.probs))

    @classmethod
    def initialize(cls, key: PRNGKey, observations, weights, num_states: int) -> Multinomial:
        """Rows of uniform random numbers, normalised (hmmlearn's ``MultinomialHMM._init``);
        ``num_trials`` the number of trials of the data when every step has the same, else
        None."""
        x, w, num_states = _support.initialization_data("Multinomial", observations, weights,
                                                        num_states, 1)
        _support.count_observations(x, w > 0, x.shape[1], source="observations")
        dtype = _support.float_dtype_of(observations)
        trials = np.unique(x[w > 0].sum(axis=1))
        draws = jax.random.uniform(key, (num_states, x.shape[1]), dtype)
        return cls(draws / jnp.sum(draws, axis=1, keepdims=True),
                   jnp.asarray(trials[0], dtype) if len(trials) == 1 else None)
