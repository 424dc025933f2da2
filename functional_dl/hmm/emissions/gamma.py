"""Gamma emissions over D independent positive features: ``b_k(x) = Π_d Gamma(x_d; a_kd, b_kd)``.

With concentration (shape) ``a`` and rate ``b``:

    log b_k(x) = Σ_d [a_kd log b_kd − log Γ(a_kd) + (a_kd − 1) log x_d − b_kd x_d].

M-step (exact maximum likelihood).  With ``N_k = Σ_t γ_t(k)``, the weighted mean
``m_kd = Σ_t γ_t(k) x_td / N_k`` and mean logarithm ``l_kd = Σ_t γ_t(k) log x_td / N_k``,
the concentration solves ``log a − ψ(a) = s = log m − l`` (s >= 0 by Jensen) and
``b = a / m``.  The equation is solved by Minka's generalised Newton iteration,

    a₀ = (3 − s + √((s − 3)² + 24 s)) / (12 s),
    1/a ← 1/a + (log a − ψ(a) − s) / (a² (1/a − ψ′(a))),

which converges quadratically; ``NUM_NEWTON_STEPS`` of them reach float64 precision
(T. Minka, "Estimating a Gamma distribution", 2002).  ``s`` is floored at the float
epsilon, so a state whose values are all equal gets a large finite concentration.

dynamax's ``GammaHMM`` fits the same model with a gradient-based M-step (Adam, 50 steps),
which approximates this one; hmmlearn has no Gamma HMM.
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln, polygamma

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import validation
from functional_dl.hmm._numerics import min_mass, safe_divide
from functional_dl.hmm.emissions import _support

NUM_NEWTON_STEPS = 8


def gamma_concentration(s: Array) -> Array:
    """The ``a > 0`` with ``log a − ψ(a) = s`` for ``s > 0`` (Minka's iteration, module)."""
    a = (3.0 - s + jnp.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
    for _ in range(NUM_NEWTON_STEPS):
        residual = jnp.log(a) - digamma(a) - s
        slope = 1.0 / a - polygamma(1, a)
        a = 1.0 / (1.0 / a + residual / (a**2 * slope))
    return a


class GammaStats(NamedTuple):
    """``Σ_t w_tk``, ``Σ_t w_tk x_td`` and ``Σ_t w_tk log x_td``."""
    weight_sums: Array
    weighted_sums: Array
    weighted_log_sums: Array


class Gamma(NamedTuple):
    """Gamma emissions: ``concentrations`` (K, D) > 0, ``rates`` (K, D) > 0; data > 0 (T, D)."""
    concentrations: Array
    rates: Array

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.concentrations.shape[0]

    @property
    def num_free_parameters(self) -> int:
        """K·D concentrations and K·D rates."""
        return 2 * int(np.prod(np.shape(self.concentrations)[-2:]))

    def log_likelihoods(self, observations: Array) -> Array:
        """``Σ_d [a log b − log Γ(a) + (a − 1) log x − b x]``."""
        chex.assert_rank(observations, 2)
        a, b = self.concentrations, self.rates
        x = observations.astype(a.dtype)
        constant = jnp.sum(a * jnp.log(b) - gammaln(a), axis=-1)
        return (constant[None, :] + jnp.log(x) @ (a - 1.0).T - x @ b.T)

    def sufficient_stats(self, observations: Array, weights: Array) -> GammaStats:
        """Expected counts, sums and sums of logarithms per state."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        x = observations.astype(weights.dtype)
        return GammaStats(jnp.sum(weights, axis=0), weights.T @ x, weights.T @ jnp.log(x))

    def m_step(self, stats: GammaStats) -> Gamma:
        """Maximum likelihood: ``a`` from ``log a − ψ(a) = log m − l``, then ``b = a / m``."""
        totals = stats.weight_sums
        has_mass = (totals > min_mass(totals.dtype))[:, None]
        means = safe_divide(stats.weighted_sums, totals[:, None])
        mean_logs = safe_divide(stats.weighted_log_sums, totals[:, None])
        safe_means = jnp.where(has_mass, means, 1.0)
        gap = jnp.where(has_mass, jnp.log(safe_means) - mean_logs, 1.0)
        concentrations = gamma_concentration(jnp.maximum(gap, jnp.finfo(gap.dtype).eps))
        return Gamma(jnp.where(has_mass, concentrations, self.concentrations),
                     jnp.where(has_mass, concentrations / safe_means, self.rates))

    def log_prior(self) -> Array:
        """0: the M-step is maximum likelihood (a flat prior)."""
        return jnp.zeros((), self.concentrations.dtype)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_td ~ Gamma(a_{z_t} d) / b_{z_t} d``."""
        draws = jax.random.gamma(key, self.concentrations[states],
                                 dtype=self.concentrations.dtype)
        return draws / self.rates[states]

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Parameters (K, D) finite and > 0; observations finite and > 0."""
        checks.rank("emissions.concentrations", self.concentrations, 2, "(K, D)")
        checks.shape_is("emissions.rates", self.rates, np.shape(self.concentrations),
                        "(K, D) to match emissions.concentrations")
        validation.positive_entries("emissions.concentrations", self.concentrations)
        validation.positive_entries("emissions.rates", self.rates)
        if observations is not None:
            _support.positive_observations(observations, valid, self.concentrations.shape[1],
                                           source="emissions.concentrations")

    def check_hyperparameters(self) -> None:
        """Gamma's M-step has no hyperparameters."""

    @classmethod
    def initialize(cls, key: PRNGKey, observations, weights, num_states: int) -> Gamma:
        """The data's method-of-moments concentration ``a_d = m_d² / v_d`` for every state,
        and state means ``m_d`` times random factors of mean 1 (Gamma(4)/4): ``b = a / mean``."""
        x, w, num_states = _support.initialization_data("Gamma", observations, weights,
                                                        num_states, 1)
        _support.positive_observations(x, w > 0, x.shape[1], source="observations")
        dtype = _support.float_dtype_of(observations)
        mean = w @ x / w.sum()
        variance = w @ (x - mean) ** 2 / w.sum()
        concentration = np.where(variance > 0, mean**2 / np.where(variance > 0, variance, 1.0),
                                 100.0)
        shape = (num_states, x.shape[1])
        factors = jax.random.gamma(key, 4.0, shape, dtype) / 4.0
        concentrations = jnp.asarray(np.broadcast_to(concentration, shape), dtype)
        state_means = jnp.asarray(np.broadcast_to(mean, shape), dtype) * factors
        return cls(concentrations, concentrations / state_means)
