"""Spherical Gaussian emissions: ``b_k(x) = N(x; means[k], variances[k] · I)``, one variance per state.

    log b_k(x) = −½ [D log(2π σ²_k) + ‖x − μ_k‖² / σ²_k]

M-step (maximum likelihood from moments about the current means, then a floor):

    δ_k = Σ_t γ_t(k) (x_t − μ_k) / N_k,   μ_k ← μ_k + δ_k,
    σ²_k ← max((Σ_t γ_t(k) ‖x_t − μ_k‖² / N_k − ‖δ_k‖²) / D, min_covar),

the average over features of the diagonal M-step's variances.  hmmlearn's
``GaussianHMM(covariance_type="spherical", covars_prior=0)`` gives the same numbers while
the floor is not reached (its ``min_covar`` only enters its initialisation).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import validation
from functional_dl.hmm._numerics import min_mass, safe_divide
from functional_dl.hmm.emissions import _support
from functional_dl.hmm.emissions.gaussian import DEFAULT_MIN_COVAR


class SphericalGaussianStats(NamedTuple):
    """``Σ w_tk``, ``Σ w_tk (x_t − μ_k)`` and ``Σ w_tk ‖x_t − μ_k‖²`` about the current means."""
    weight_sums: Array
    shifted_sums: Array
    shifted_square_sums: Array


class SphericalGaussian(NamedTuple):
    """Spherical Gaussian emissions: ``means`` (K, D), ``variances`` (K,) > 0."""
    means: Array
    variances: Array

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.means.shape[0]

    @property
    def num_free_parameters(self) -> int:
        """K·D means and K variances."""
        num_states, num_features = np.shape(self.means)[-2:]
        return num_states * num_features + num_states

    def log_likelihoods(self, observations: Array) -> Array:
        """``−½ [D log(2π σ²_k) + ‖x_t − μ_k‖² / σ²_k]``."""
        chex.assert_rank(observations, 2)
        diffs = observations[:, None, :] - self.means[None, :, :]
        num_features = self.means.shape[1]
        return -0.5 * (num_features * jnp.log(2.0 * math.pi * self.variances)[None, :]
                       + jnp.sum(diffs**2, axis=-1) / self.variances[None, :])

    def sufficient_stats(self, observations: Array, weights: Array) -> SphericalGaussianStats:
        """Weighted zeroth, first and squared-norm moments about the current means."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        diffs = observations[:, None, :] - self.means[None, :, :]
        return SphericalGaussianStats(jnp.sum(weights, axis=0),
                                      jnp.einsum("tk,tkd->kd", weights, diffs),
                                      jnp.einsum("tk,tk->k", weights, jnp.sum(diffs**2, axis=-1)))

    def m_step(self, stats: SphericalGaussianStats, *,
               min_covar=DEFAULT_MIN_COVAR) -> SphericalGaussian:
        """``μ_k = μ_k^old + δ_k``, ``σ²_k = max((S2_k / N_k − ‖δ_k‖²) / D, min_covar)``."""
        totals = stats.weight_sums
        has_mass = totals > min_mass(totals.dtype)
        offsets = safe_divide(stats.shifted_sums, totals[:, None])
        num_features = self.means.shape[1]
        variances = (safe_divide(stats.shifted_square_sums, totals)
                     - jnp.sum(offsets**2, axis=-1)) / num_features
        return SphericalGaussian(
            jnp.where(has_mass[:, None], self.means + offsets, self.means),
            jnp.where(has_mass, jnp.maximum(variances, min_covar), self.variances))

    def log_prior(self, *, min_covar=DEFAULT_MIN_COVAR) -> Array:
        """0: ``min_covar`` is a floor, not a density; the M-step is the maximum over the
        parameters that respect it, i.e. MAP under a prior flat there
        (``_support.constraint_log_prior``)."""
        return _support.constraint_log_prior(self.means)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_t = μ_{z_t} + σ_{z_t} ε_t`` with ``ε_t ~ N(0, I)``."""
        noise = jax.random.normal(key, states.shape + self.means.shape[1:], self.means.dtype)
        return self.means[states] + jnp.sqrt(self.variances[states])[:, None] * noise

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """``means`` (K, D) finite, ``variances`` (K,) positive; data finite with that D."""
        checks.rank("emissions.means", self.means, 2, "(K, D)")
        checks.shape_is("emissions.variances", self.variances, np.shape(self.means)[:1],
                        "(K,) to match emissions.means")
        checks.finite("emissions.means", self.means)
        validation.positive_entries("emissions.variances", self.variances)
        if observations is not None:
            validation.vector_observations(observations, valid, self.means.shape[1])

    def check_hyperparameters(self, *, min_covar=DEFAULT_MIN_COVAR) -> None:
        """``min_covar`` a real ``> 0``."""
        checks.positive("SphericalGaussian: min_covar", min_covar)

    @classmethod
    def initialize(cls, key: PRNGKey, observations, weights, num_states: int, *,
                   min_covar=DEFAULT_MIN_COVAR) -> SphericalGaussian:
        """Means: k-means centres of the weighted data (k-means++ seeding, Lloyd
        iterations); every variance the data's average per-feature variance plus
        ``min_covar`` (hmmlearn's spherical initialisation)."""
        x, w, num_states = _support.initialization_data("SphericalGaussian", observations,
                                                        weights, num_states, 1)
        checks.positive("SphericalGaussian.initialize: min_covar", min_covar)
        validation.vector_observations(x, w > 0, x.shape[1], source="observations")
        dtype = _support.float_dtype_of(observations)
        _, covariance = _support.weighted_mean_and_covariance(x, w)
        variance = np.trace(covariance) / x.shape[1] + min_covar
        return cls(_support.kmeans_means(key, x, w, num_states, dtype),
                   jnp.full((num_states,), variance, dtype))
