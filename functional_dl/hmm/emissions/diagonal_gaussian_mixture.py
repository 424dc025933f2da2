"""Diagonal Gaussian-mixture emissions: ``b_k(x) = Σ_m w_km Π_d N(x_d; μ_kmd, σ²_kmd)``.

The diagonal variant of ``gaussian_mixture`` (same exact M-step, per feature):

    w_km = (N_km + α) / (Σ_m' N_km' + M α),   μ_km = Σ_t γ_t(k, m) x_t / N_km,
    σ²_kmd = max(Σ_t γ_t(k, m) (x_td − μ_kmd)² / N_km, min_covar)    (about the NEW means).

hmmlearn's ``GMMHMM(covariance_type="diag")`` agrees on weights and means but centres its
variances on the old means μ⁰ (with its default priors its σ²_kmd is larger by
``(μ_kmd − μ⁰_kmd)²``), which is not an EM step.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import validation
from functional_dl.hmm._numerics import min_mass, safe_divide, safe_log
from functional_dl.hmm.emissions import _support
from functional_dl.hmm.emissions.gaussian import DEFAULT_MIN_COVAR
from functional_dl.hmm.emissions.gaussian_mixture import (
    check_mixture_hyperparameters, check_mixture_weights_and_means, initial_mixture,
    joint_weights, mixture_weights_m_step, sample_components)


class DiagonalGaussianMixtureStats(NamedTuple):
    """As ``GaussianMixtureStats`` with squares ``Σ γ_t(k, m) (x_t − μ⁰_km)²`` (K, M, D)."""
    component_sums: Array
    shifted_sums: Array
    shifted_square_sums: Array


class DiagonalGaussianMixture(NamedTuple):
    """Mixture emissions: ``weights`` (K, M) rows sum to 1, ``means`` (K, M, D),
    ``variances`` (K, M, D) > 0."""
    weights: Array
    means: Array
    variances: Array

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.weights.shape[0]

    @property
    def num_free_parameters(self) -> int:
        """Per state: M − 1 weights, M·D means, M·D variances."""
        num_states, num_components, num_features = np.shape(self.means)[-3:]
        return num_states * (num_components - 1 + 2 * num_components * num_features)

    def component_log_densities(self, observations: Array) -> Array:
        """``(N, K, M)``: ``log w_km − ½ Σ_d [log(2π σ²_kmd) + (x_td − μ_kmd)² / σ²_kmd]``."""
        chex.assert_rank(observations, 2)
        diffs = observations[:, None, None, :] - self.means[None]
        log_normal = -0.5 * jnp.sum(jnp.log(2.0 * math.pi * self.variances)[None]
                                    + diffs**2 / self.variances[None], axis=-1)
        return safe_log(self.weights)[None] + log_normal

    def log_likelihoods(self, observations: Array) -> Array:
        """``log Σ_m w_km Π_d N(x_td; μ_kmd, σ²_kmd)``, ``(N, K)``."""
        return logsumexp(self.component_log_densities(observations), axis=-1)

    def sufficient_stats(self, observations: Array,
                         weights: Array) -> DiagonalGaussianMixtureStats:
        """Moments of ``γ_t(k, m)`` about the current means, per feature."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        joint = joint_weights(self.component_log_densities(observations), weights)
        diffs = observations[:, None, None, :] - self.means[None]
        weighted = joint[..., None] * diffs
        return DiagonalGaussianMixtureStats(jnp.sum(joint, axis=0), jnp.sum(weighted, axis=0),
                                            jnp.sum(weighted * diffs, axis=0))

    def m_step(self, stats: DiagonalGaussianMixtureStats, *, min_covar=DEFAULT_MIN_COVAR,
               pseudo_count=0.0) -> DiagonalGaussianMixture:
        """The exact M-step of the module docstring (variances about the new means)."""
        sums = stats.component_sums
        has_mass = (sums > min_mass(sums.dtype))[..., None]
        offsets = safe_divide(stats.shifted_sums, sums[..., None])
        variances = safe_divide(stats.shifted_square_sums, sums[..., None]) - offsets**2
        return DiagonalGaussianMixture(
            mixture_weights_m_step(self.weights, sums, pseudo_count),
            jnp.where(has_mass, self.means + offsets, self.means),
            jnp.where(has_mass, jnp.maximum(variances, min_covar), self.variances))

    def log_prior(self, *, min_covar=DEFAULT_MIN_COVAR, pseudo_count=0.0) -> Array:
        """``Σ_km α_km log w_km``, a Dirichlet(α + 1) on each row of weights up to a constant
        (the means and ``min_covar``'s floor contribute 0: ``_support.constraint_log_prior``):
        the prior whose MAP ``m_step`` computes (0 at α = 0)."""
        return _support.dirichlet_log_prior(self.weights, pseudo_count)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``m_t ~ Categorical(w_{z_t})``, then ``x_t = μ_{z_t m_t} + σ_{z_t m_t} ⊙ ε_t``."""
        key_components, key_noise = jax.random.split(key)
        components = sample_components(key_components, self.weights, states)
        noise = jax.random.normal(key_noise, states.shape + self.means.shape[2:],
                                  self.means.dtype)
        return (self.means[states, components]
                + jnp.sqrt(self.variances[states, components]) * noise)

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Weight rows, finite means, positive variances, data with that D."""
        shape = check_mixture_weights_and_means(self.weights, self.means)
        checks.shape_is("emissions.variances", self.variances, shape,
                        "(K, M, D) to match emissions.means")
        validation.positive_entries("emissions.variances", self.variances)
        if observations is not None:
            validation.vector_observations(observations, valid, shape[2])

    def check_hyperparameters(self, *, min_covar=DEFAULT_MIN_COVAR, pseudo_count=0.0) -> None:
        """``min_covar`` a real ``> 0``, ``pseudo_count`` reals ``>= 0`` (a number or (K, M))."""
        check_mixture_hyperparameters("DiagonalGaussianMixture", self.weights, min_covar,
                                      pseudo_count)

    @classmethod
    def initialize(cls, key: PRNGKey, observations, weights, num_states: int, *,
                   num_components: int = 2,
                   min_covar=DEFAULT_MIN_COVAR) -> DiagonalGaussianMixture:
        """Equal weights 1/M; means K·M k-means centres of the weighted data; every variance the data's variance plus ``min_covar``."""
        mixture_weights, means, covariance = initial_mixture(
            "DiagonalGaussianMixture", key, observations, weights, num_states, num_components,
            min_covar)
        return cls(mixture_weights, means, jnp.broadcast_to(jnp.diagonal(covariance), means.shape))
