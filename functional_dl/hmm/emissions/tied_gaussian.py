"""Tied Gaussian emissions: ``b_k(x) = N(x; means[k], covariance)``, one covariance for all states.

    log b_k(x) = −½ [‖L⁻¹(x − μ_k)‖² + D log 2π] − Σ_d log L_dd,    Σ = L Lᵀ

M-step (maximum likelihood; moments about the current means, pooled over the states):

    δ_k = Σ_t γ_t(k) (x_t − μ_k) / N_k,   μ_k ← μ_k + δ_k,
    Σ ← Σ_k [Σ_t γ_t(k) (x_t − μ_k)(x_t − μ_k)ᵀ − N_k δ_k δ_kᵀ] / Σ_k N_k,

then every eigenvalue of Σ below ``min_covar`` is raised to it.  hmmlearn's
``GaussianHMM(covariance_type="tied", covars_prior=0)`` gives the same numbers while the
floor is not reached.
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import validation
from functional_dl.hmm._numerics import min_mass, safe_divide
from functional_dl.hmm.emissions import _support
from functional_dl.hmm.emissions.gaussian import DEFAULT_MIN_COVAR, LOG_2PI, floor_eigenvalues


class TiedGaussianStats(NamedTuple):
    """``Σ w_tk`` (K,), ``Σ w_tk (x_t − μ_k)`` (K, D), and the pooled scatter about the
    current means ``Σ_k Σ_t w_tk (x_t − μ_k)(x_t − μ_k)ᵀ`` (D, D)."""
    weight_sums: Array
    shifted_sums: Array
    shifted_outer_sum: Array


class TiedGaussian(NamedTuple):
    """Tied Gaussian emissions: ``means`` (K, D), ``covariance`` (D, D) shared by the states."""
    means: Array
    covariance: Array  # symmetric positive-definite

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.means.shape[0]

    @property
    def num_free_parameters(self) -> int:
        """K·D means and the D(D+1)/2 entries of one symmetric covariance."""
        num_states, num_features = np.shape(self.means)[-2:]
        return num_states * num_features + num_features * (num_features + 1) // 2

    def log_likelihoods(self, observations: Array) -> Array:
        """``−½ (‖L⁻¹(x_t − μ_k)‖² + D log 2π) − Σ_d log L_dd``, one Cholesky factor for all K."""
        chex.assert_rank(observations, 2)
        chol = jnp.linalg.cholesky(self.covariance)
        diffs = observations[:, None, :] - self.means[None, :, :]
        num_features = self.means.shape[1]
        whitened = solve_triangular(chol, diffs.reshape(-1, num_features).T, lower=True)
        squares = jnp.sum(whitened**2, axis=0).reshape(diffs.shape[:2])
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol)))
        return -0.5 * squares - half_log_det - 0.5 * num_features * LOG_2PI

    def sufficient_stats(self, observations: Array, weights: Array) -> TiedGaussianStats:
        """Weighted zeroth and first moments per state, the second pooled over the states."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        diffs = observations[:, None, :] - self.means[None, :, :]
        weighted = weights[:, :, None] * diffs
        return TiedGaussianStats(jnp.sum(weights, axis=0), jnp.sum(weighted, axis=0),
                                 jnp.einsum("tkd,tke->de", weighted, diffs))

    def m_step(self, stats: TiedGaussianStats, *, min_covar=DEFAULT_MIN_COVAR) -> TiedGaussian:
        """Means per state, the pooled covariance about them, eigenvalues floored (module)."""
        totals = stats.weight_sums
        has_mass = totals > min_mass(totals.dtype)
        offsets = safe_divide(stats.shifted_sums, totals[:, None])
        # Σ_k N_k δ_k δ_kᵀ, the correction from the current to the new means
        between = jnp.einsum("k,kd,ke->de", jnp.where(has_mass, totals, 0.0), offsets, offsets)
        total = jnp.sum(totals)
        covariance = safe_divide(stats.shifted_outer_sum - between, total)
        covariance = floor_eigenvalues(0.5 * (covariance + covariance.T), min_covar)
        return TiedGaussian(jnp.where(has_mass[:, None], self.means + offsets, self.means),
                            jnp.where(total > min_mass(totals.dtype), covariance, self.covariance))

    def log_prior(self, *, min_covar=DEFAULT_MIN_COVAR) -> Array:
        """0: ``min_covar`` is a floor, not a density; the M-step is the maximum over the
        parameters that respect it, i.e. MAP under a prior flat there
        (``_support.constraint_log_prior``)."""
        return _support.constraint_log_prior(self.means)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_t = μ_{z_t} + L ε_t`` with ``ε_t ~ N(0, I)``."""
        chol = jnp.linalg.cholesky(self.covariance)
        noise = jax.random.normal(key, states.shape + self.means.shape[1:], self.means.dtype)
        return self.means[states] + noise @ chol.T

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """``means`` (K, D) finite, ``covariance`` (D, D) symmetric positive-definite, data finite."""
        checks.rank("emissions.means", self.means, 2, "(K, D)")
        num_features = np.shape(self.means)[1]
        checks.shape_is("emissions.covariance", self.covariance, (num_features, num_features),
                        "(D, D) to match emissions.means")
        checks.finite("emissions.means", self.means)
        checks.positive_definite("emissions.covariance", self.covariance)
        if observations is not None:
            validation.vector_observations(observations, valid, num_features)

    def check_hyperparameters(self, *, min_covar=DEFAULT_MIN_COVAR) -> None:
        """``min_covar`` a real ``> 0``."""
        checks.positive("TiedGaussian: min_covar", min_covar)

    @classmethod
    def initialize(cls, key: PRNGKey, observations, weights, num_states: int, *,
                   min_covar=DEFAULT_MIN_COVAR) -> TiedGaussian:
        """Means: k-means centres of the weighted data (k-means++ seeding, Lloyd
        iterations); covariance the data's (weighted) covariance plus ``min_covar · I``
        (hmmlearn's tied initialisation)."""
        x, w, num_states = _support.initialization_data("TiedGaussian", observations, weights,
                                                        num_states, 1)
        checks.positive("TiedGaussian.initialize: min_covar", min_covar)
        validation.vector_observations(x, w > 0, x.shape[1], source="observations")
        dtype = _support.float_dtype_of(observations)
        _, covariance = _support.weighted_mean_and_covariance(x, w)
        covariance = covariance + min_covar * np.eye(x.shape[1])
        return cls(_support.kmeans_means(key, x, w, num_states, dtype),
                   jnp.asarray(covariance, dtype))
