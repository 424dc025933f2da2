"""Diagonal Gaussian emissions: ``b_k(x) = Π_d N(x_d; means[k, d], variances[k, d])``.

M-step (maximum likelihood per feature from moments about the current means, then a floor):

    δ_k = Σ_t γ_t(k) (x_t − μ_k) / N_k,   μ_k ← μ_k + δ_k,
    σ²_k ← max(Σ_t γ_t(k) (x_t − μ_k)² / N_k − δ_k², min_covar)

(``min_covar`` one number or one per state, (K,)).

hmmlearn's ``GaussianHMM(covariance_type="diag", covars_prior=0)`` gives the same numbers
while the floor is not reached.

Fitting from scratch (``initialize``, as hmmlearn's ``GaussianHMM(covariance_type="diag")``):
k-means means, every variance the sample variance of all the data plus ``min_covar``.  Free
parameters: 2 K D.
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
from functional_dl.hmm import initialization, validation
from functional_dl.hmm._numerics import min_mass, safe_divide
from functional_dl.hmm.emissions import _support
from functional_dl.hmm.emissions.gaussian import (DEFAULT_MIN_COVAR, check_min_covar,
                                                 per_state_floor)


class DiagonalGaussianStats(NamedTuple):
    """As ``GaussianStats`` with the squares ``Σ w_tk (x_t − μ_k)²`` instead of outer products."""
    weight_sums: Array
    shifted_sums: Array
    shifted_square_sums: Array


class DiagonalGaussian(NamedTuple):
    """Diagonal Gaussian emissions: ``means`` (K, D), ``variances`` (K, D) > 0."""
    means: Array
    variances: Array

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.means.shape[0]

    def log_likelihoods(self, observations: Array) -> Array:
        """``−½ Σ_d [log(2π σ²_kd) + (x_td − μ_kd)² / σ²_kd]``."""
        chex.assert_rank(observations, 2)
        diffs = observations[:, None, :] - self.means[None, :, :]
        return -0.5 * jnp.sum(jnp.log(2.0 * math.pi * self.variances)[None, :, :]
                              + diffs**2 / self.variances[None, :, :], axis=-1)

    def sufficient_stats(self, observations: Array, weights: Array) -> DiagonalGaussianStats:
        """Weighted zeroth, first and second moments about the current means, per feature."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        diffs = observations[:, None, :] - self.means[None, :, :]
        weighted = weights[:, :, None] * diffs
        return DiagonalGaussianStats(jnp.sum(weights, axis=0), jnp.sum(weighted, axis=0),
                                     jnp.sum(weighted * diffs, axis=0))

    @property
    def num_free_parameters(self) -> int:
        """``2 K D`` (means, variances)."""
        num_states, num_features = self.means.shape
        return 2 * num_states * num_features

    @classmethod
    def initialize(cls, key: PRNGKey, observations: Array, weights: Array, num_states: int, *,
                   min_covar=DEFAULT_MIN_COVAR,
                   num_kmeans_iterations: int = 10) -> DiagonalGaussian:
        """k-means means, data variances + ``min_covar`` for every state (module)."""
        points, weights = initialization.as_points(observations, weights)
        means = initialization.kmeans(key, points, weights, num_states,
                                      num_iterations=num_kmeans_iterations)
        variances = jnp.diagonal(initialization.weighted_covariance(points, weights)) + min_covar
        return cls(means, jnp.broadcast_to(variances, means.shape))

    def m_step(self, stats: DiagonalGaussianStats, *,
               min_covar=DEFAULT_MIN_COVAR) -> DiagonalGaussian:
        """``μ_k = μ_k^old + δ_k``, ``σ²_k = max(S2_k / N_k − δ_k², min_covar)`` (module)."""
        totals = stats.weight_sums
        has_mass = (totals > min_mass(totals.dtype))[:, None]
        offsets = safe_divide(stats.shifted_sums, totals[:, None])
        variances = safe_divide(stats.shifted_square_sums, totals[:, None]) - offsets**2
        variances = jnp.maximum(variances, per_state_floor(min_covar, self.num_states))
        return DiagonalGaussian(jnp.where(has_mass, self.means + offsets, self.means),
                                jnp.where(has_mass, variances, self.variances))

    def log_prior(self, *, min_covar=DEFAULT_MIN_COVAR) -> Array:
        """0: ``min_covar`` is a floor, not a density; the M-step is the maximum over the
        parameters that respect it, i.e. MAP under a prior flat there
        (``_support.constraint_log_prior``)."""
        return _support.constraint_log_prior(self.means)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_t = μ_{z_t} + σ_{z_t} ⊙ ε_t`` with ``ε_t ~ N(0, I)``."""
        noise = jax.random.normal(key, states.shape + self.means.shape[1:], self.means.dtype)
        return self.means[states] + jnp.sqrt(self.variances[states]) * noise

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Shapes agree on K and D, variances positive, data finite."""
        checks.rank("emissions.means", self.means, 2, "(K, D)")
        checks.shape_is("emissions.variances", self.variances, np.shape(self.means),
                        "(K, D) to match emissions.means")
        checks.finite("emissions.means", self.means)
        validation.positive_entries("emissions.variances", self.variances)
        if observations is not None:
            validation.vector_observations(observations, valid, self.means.shape[1])

    def check_hyperparameters(self, *, min_covar=DEFAULT_MIN_COVAR) -> None:
        """``min_covar`` a real ``> 0``, or a (K,) array of them."""
        check_min_covar("DiagonalGaussian: min_covar", min_covar, self.num_states)
