"""Poisson emissions over D independent counts: ``b_k(x) = Π_d Poisson(x_d; rates[k, d])``.

    log b_k(x) = Σ_d [x_d log λ_kd − λ_kd − log x_d!]

M-step: the MAP estimate under independent Gamma(α, β) priors (shape α, rate β) on the
rates (each a number, or an array broadcastable to (K, D): per state or per entry); the
defaults α = 1, β = 0 give maximum likelihood ``λ_kd = Σ_t γ_t(k) x_td / N_k``:

    λ_kd = (Σ_t γ_t(k) x_td + α − 1) / (N_k + β),    N_k = Σ_t γ_t(k).

hmmlearn's ``PoissonHMM`` with its defaults ``lambdas_prior = lambdas_weight = 0`` gives the
same numbers (its priors a, b correspond to α = a + 1, β = b, except that hmmlearn weighs
them by the total count over all states instead of the state's own N_k).  A rate may be 0
(a state that never saw a count in that feature); a positive count is then impossible there
(``-inf``).
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, xlogy

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm._numerics import min_mass, safe_divide
from functional_dl.hmm.emissions import _support


class PoissonStats(NamedTuple):
    """``weight_sums[k] = Σ_t w_tk``, ``weighted_sums[k, d] = Σ_t w_tk x_td``."""
    weight_sums: Array
    weighted_sums: Array


class Poisson(NamedTuple):
    """Poisson emissions: ``rates`` (K, D) >= 0; observations non-negative counts (T, D)."""
    rates: Array

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.rates.shape[0]

    @property
    def num_free_parameters(self) -> int:
        """K·D rates."""
        return int(np.prod(np.shape(self.rates)[-2:]))

    def log_likelihoods(self, observations: Array) -> Array:
        """``Σ_d [x_d log λ_kd − λ_kd − log Γ(x_d + 1)]`` (``x log λ`` is 0 where x = 0)."""
        chex.assert_rank(observations, 2)
        x = observations.astype(self.rates.dtype)
        log_factorials = jnp.sum(gammaln(x + 1.0), axis=-1)
        return (jnp.sum(xlogy(x[:, None, :], self.rates[None, :, :]), axis=-1)
                - jnp.sum(self.rates, axis=-1)[None, :] - log_factorials[:, None])

    def sufficient_stats(self, observations: Array, weights: Array) -> PoissonStats:
        """Expected counts of steps and expected sums of counts per state."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        return PoissonStats(jnp.sum(weights, axis=0),
                            weights.T @ observations.astype(weights.dtype))

    def m_step(self, stats: PoissonStats, *, prior_shape=1.0, prior_rate=0.0) -> Poisson:
        """``λ_kd = (Σ γ x + α − 1) / (N_k + β)`` with ``α = prior_shape``, ``β = prior_rate``."""
        totals = stats.weight_sums
        has_mass = (totals > min_mass(totals.dtype))[:, None]
        shape = stats.weighted_sums.shape
        rates = safe_divide(stats.weighted_sums + jnp.broadcast_to(prior_shape, shape) - 1.0,
                            totals[:, None] + jnp.broadcast_to(prior_rate, shape))
        return Poisson(jnp.where(has_mass, rates, self.rates))

    def log_prior(self, *, prior_shape=1.0, prior_rate=0.0) -> Array:
        """``Σ_kd (α − 1) log λ_kd − β λ_kd``, independent Gamma(α, β) priors up to a constant:
        the prior whose MAP ``m_step`` computes (0 at α = 1, β = 0)."""
        return _support.gamma_log_prior(self.rates, prior_shape, prior_rate)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_td ~ Poisson(λ_{z_t} d)``, int32 counts ``(N, D)``."""
        return jax.random.poisson(key, self.rates[states], dtype=jnp.int32)

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """``rates`` (K, D) finite and ``>= 0``; observations non-negative integer counts."""
        checks.rank("emissions.rates", self.rates, 2, "(K, D)")
        _support.non_negative_entries("emissions.rates", self.rates)
        if observations is not None:
            _support.count_observations(observations, valid, self.rates.shape[1],
                                        source="emissions.rates")

    def check_hyperparameters(self, *, prior_shape=1.0, prior_rate=0.0) -> None:
        """``prior_shape`` reals ``>= 1`` (rates stay >= 0), ``prior_rate`` reals ``>= 0``: each
        a number or an array broadcastable to (K, D)."""
        shape = np.shape(self.rates)
        _support.check_prior("Poisson: prior_shape", prior_shape, shape, minimum=1.0)
        _support.check_prior("Poisson: prior_rate", prior_rate, shape)

    @classmethod
    def initialize(cls, key: PRNGKey, observations, weights, num_states: int) -> Poisson:
        """Rates drawn around the data: ``λ_kd ~ Gamma(shape m_d²/v_d, scale v_d/m_d)``.

        ``m_d``, ``v_d`` are the weighted mean and variance of feature d (hmmlearn's
        method-of-moments Gamma, per feature), so the rates have the data's mean and spread;
        a feature without spread gets ``m_d`` times a factor of mean 1 and deviation 0.1,
        and every rate is at least ``1e-3 · max(m_d, 1e-3)`` so no count starts impossible.
        """
        x, w, num_states = _support.initialization_data("Poisson", observations, weights,
                                                        num_states, 1)
        _support.count_observations(x, w > 0, x.shape[1], source="observations")
        dtype = _support.float_dtype_of(observations)
        mean = w @ x / w.sum()
        variance = w @ (x - mean) ** 2 / w.sum()
        shape = np.where(variance > 0, mean**2 / np.where(variance > 0, variance, 1.0), 100.0)
        shape = np.clip(shape, 1e-2, 1e4)
        shape, scale, floor = (np.broadcast_to(v, (num_states, x.shape[1])) for v in
                               (shape, mean / shape, 1e-3 * np.maximum(mean, 1e-3)))
        draws = jax.random.gamma(key, jnp.asarray(shape, dtype), shape.shape, dtype)
        return cls(jnp.maximum(draws * jnp.asarray(scale, dtype), jnp.asarray(floor, dtype)))
