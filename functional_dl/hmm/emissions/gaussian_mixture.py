"""Gaussian-mixture emissions: ``b_k(x) = Σ_m w_km N(x; μ_km, Σ_km)`` with M full-covariance components.

    log b_k(x) = log Σ_m exp(log w_km + log N(x; μ_km, Σ_km))

M-step: the exact EM update, i.e. the expected complete-data log-likelihood maximised over
the joint posterior of state and component,

    γ_t(k, m) = γ_t(k) · r_t(k, m),   r_t(k, m) = w_km N(x_t; μ_km, Σ_km) / b_k(x_t),
    N_km = Σ_t γ_t(k, m),   w_km = (N_km + α) / (Σ_m' N_km' + M α),
    μ_km = Σ_t γ_t(k, m) x_t / N_km,
    Σ_km = Σ_t γ_t(k, m) (x_t − μ_km)(x_t − μ_km)ᵀ / N_km    (about the NEW means),

computed from moments about the current means μ⁰ (``δ = μ_km − μ⁰_km``; the scatter about
μ⁰ minus ``N_km δ δᵀ``); every eigenvalue of Σ_km below ``min_covar`` is then raised to it.
α = ``pseudo_count`` is the Dirichlet(α + 1) prior on each row of weights (0: maximum
likelihood; one number, or an array broadcastable to (K, M)).  A state whose expected count is below ``min_mass`` keeps its weights;
a component below it keeps its mean and covariance.

hmmlearn's ``GMMHMM(covariance_type="full")`` agrees on the weights (``weights_prior = α + 1``)
and the means (``means_weight = 0``), but centres its covariance statistics on the OLD means
μ⁰: with its default priors its Σ_km is ``Σ_t γ_t(k, m) (x_t − μ⁰_km)(x_t − μ⁰_km)ᵀ / N_km``,
larger than the exact one by ``δ δᵀ`` — not an EM step (the log-likelihood may decrease).
``DiagonalGaussianMixture`` (module ``diagonal_gaussian_mixture``) is the diagonal variant.
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import validation
from functional_dl.hmm._numerics import inverse_cdf, min_mass, safe_divide, safe_log
from functional_dl.hmm.emissions import _support
from functional_dl.hmm.emissions.gaussian import DEFAULT_MIN_COVAR, LOG_2PI, floor_eigenvalues


def joint_weights(component_log_densities: Array, weights: Array) -> Array:
    """``γ_t(k, m) = weights[t, k] · r_t(k, m)``, ``(N, K, M)`` from ``(N, K, M)`` log terms."""
    log_likelihoods = logsumexp(component_log_densities, axis=-1, keepdims=True)
    finite = jnp.isfinite(log_likelihoods)
    responsibilities = jnp.exp(component_log_densities
                               - jnp.where(finite, log_likelihoods, 0.0))
    return weights[:, :, None] * jnp.where(finite, responsibilities, 0.0)


def mixture_weights_m_step(previous: Array, component_sums: Array, pseudo_count) -> Array:
    """``w_km = (N_km + α_km) / (N_k + Σ_m α_km)``; a state with (almost) no mass keeps
    ``previous``."""
    totals = jnp.sum(component_sums, axis=1, keepdims=True)
    pseudo_count = jnp.broadcast_to(pseudo_count, component_sums.shape)
    updated = safe_divide(component_sums + pseudo_count,
                          totals + jnp.sum(pseudo_count, axis=1, keepdims=True))
    return jnp.where(totals > min_mass(totals.dtype), updated, previous)


def sample_components(key: PRNGKey, mixture_weights: Array, states: Array) -> Array:
    """One component index per step, ``m_t ~ Categorical(w_{z_t})``."""
    dtype = jnp.result_type(mixture_weights.dtype, jnp.float32)
    uniforms = jax.random.uniform(key, states.shape, dtype)
    return inverse_cdf(jnp.cumsum(mixture_weights.astype(dtype), axis=1)[states], uniforms)


def check_mixture_weights_and_means(weights: Array, means: Array) -> tuple[int, int, int]:
    """``weights`` (K, M) probability rows, ``means`` (K, M, D) finite; returns (K, M, D)."""
    checks.rank("emissions.weights", weights, 2, "(K, M)")
    checks.probability_rows("emissions.weights", weights)
    checks.rank("emissions.means", means, 3, "(K, M, D)")
    checks.shape_is("emissions.means", means, tuple(np.shape(weights)) + np.shape(means)[2:],
                    "(K, M, D) to match emissions.weights")
    checks.finite("emissions.means", means)
    return tuple(np.shape(means))


def check_mixture_hyperparameters(family: str, weights: Array, min_covar, pseudo_count) -> None:
    """``min_covar`` a real ``> 0``; ``pseudo_count`` reals ``>= 0`` broadcastable to (K, M)."""
    checks.positive(f"{family}: min_covar", min_covar)
    _support.check_prior(f"{family}: pseudo_count", pseudo_count, np.shape(weights))


def initial_mixture(family: str, key: PRNGKey, observations, weights, num_states,
                    num_components, min_covar):
    """``(weights 1/M, means: K·M k-means centres of the data, the data covariance +
    min_covar·I)``."""
    x, w, num_states = _support.initialization_data(family, observations, weights,
                                                    num_states, 1)
    num_components = checks.whole_number(f"{family}.initialize: num_components",
                                         num_components, minimum=1)
    checks.positive(f"{family}.initialize: min_covar", min_covar)
    validation.vector_observations(x, w > 0, x.shape[1], source="observations")
    if num_states * num_components > np.count_nonzero(w):
        raise ValueError(f"{family}.initialize: num_states · num_components = "
                         f"{num_states * num_components} must be at most the number of "
                         f"observations with weight > 0, {np.count_nonzero(w)}")
    dtype = _support.float_dtype_of(observations)
    points = _support.kmeans_means(key, x, w, num_states * num_components, dtype)
    _, covariance = _support.weighted_mean_and_covariance(x, w)
    covariance = covariance + min_covar * np.eye(x.shape[1])
    return (jnp.full((num_states, num_components), 1.0 / num_components, dtype),
            points.reshape(num_states, num_components, x.shape[1]),
            jnp.asarray(covariance, dtype))


class GaussianMixtureStats(NamedTuple):
    """Moments of the joint posterior γ_t(k, m) about the current means μ⁰_km:
    ``component_sums`` (K, M), ``shifted_sums`` (K, M, D), ``shifted_outer_sums`` (K, M, D, D)."""
    component_sums: Array
    shifted_sums: Array
    shifted_outer_sums: Array


class GaussianMixture(NamedTuple):
    """Mixture emissions: ``weights`` (K, M) rows sum to 1, ``means`` (K, M, D),
    ``covariances`` (K, M, D, D) symmetric positive-definite."""
    weights: Array
    means: Array
    covariances: Array

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.weights.shape[0]

    @property
    def num_free_parameters(self) -> int:
        """Per state: M − 1 weights, M·D means, M·D(D+1)/2 covariance entries."""
        num_states, num_components, num_features = np.shape(self.means)[-3:]
        per_component = num_features + num_features * (num_features + 1) // 2
        return num_states * (num_components - 1 + num_components * per_component)

    def component_log_densities(self, observations: Array) -> Array:
        """``(N, K, M)``: ``log w_km + log N(x_t; μ_km, Σ_km)``."""
        chex.assert_rank(observations, 2)
        num_states, num_components, num_features = self.means.shape
        chol = jnp.linalg.cholesky(self.covariances).reshape(-1, num_features, num_features)
        diffs = observations[:, None, None, :] - self.means[None]
        columns = diffs.reshape(diffs.shape[0], -1, num_features).transpose(1, 2, 0)
        whitened = jax.vmap(lambda lower, b: solve_triangular(lower, b, lower=True))(chol, columns)
        squares = jnp.sum(whitened**2, axis=1).T.reshape(diffs.shape[:3])
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        log_normal = (-0.5 * squares - half_log_det.reshape(num_states, num_components)[None]
                      - 0.5 * num_features * LOG_2PI)
        return safe_log(self.weights)[None] + log_normal

    def log_likelihoods(self, observations: Array) -> Array:
        """``log Σ_m w_km N(x_t; μ_km, Σ_km)``, ``(N, K)``."""
        return logsumexp(self.component_log_densities(observations), axis=-1)

    def sufficient_stats(self, observations: Array, weights: Array) -> GaussianMixtureStats:
        """Moments of ``γ_t(k, m) = weights[t, k] · r_t(k, m)`` about the current means."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        joint = joint_weights(self.component_log_densities(observations), weights)
        diffs = observations[:, None, None, :] - self.means[None]
        weighted = joint[..., None] * diffs
        return GaussianMixtureStats(jnp.sum(joint, axis=0), jnp.sum(weighted, axis=0),
                                    jnp.einsum("tkmd,tkme->kmde", weighted, diffs))

    def m_step(self, stats: GaussianMixtureStats, *, min_covar=DEFAULT_MIN_COVAR,
               pseudo_count=0.0) -> GaussianMixture:
        """The exact M-step of the module docstring (covariances about the new means)."""
        sums = stats.component_sums
        has_mass = sums > min_mass(sums.dtype)
        offsets = safe_divide(stats.shifted_sums, sums[..., None])
        second = safe_divide(stats.shifted_outer_sums, sums[..., None, None])
        covariances = second - offsets[..., :, None] * offsets[..., None, :]
        covariances = floor_eigenvalues(0.5 * (covariances + jnp.swapaxes(covariances, -1, -2)),
                                        min_covar)
        return GaussianMixture(
            mixture_weights_m_step(self.weights, sums, pseudo_count),
            jnp.where(has_mass[..., None], self.means + offsets, self.means),
            jnp.where(has_mass[..., None, None], covariances, self.covariances))

    def log_prior(self, *, min_covar=DEFAULT_MIN_COVAR, pseudo_count=0.0) -> Array:
        """``Σ_km α_km log w_km``, a Dirichlet(α + 1) on each row of weights up to a constant
        (the means and ``min_covar``'s floor contribute 0: ``_support.constraint_log_prior``):
        the prior whose MAP ``m_step`` computes (0 at α = 0)."""
        return _support.dirichlet_log_prior(self.weights, pseudo_count)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``m_t ~ Categorical(w_{z_t})``, then ``x_t = μ_{z_t m_t} + L_{z_t m_t} ε_t``."""
        key_components, key_noise = jax.random.split(key)
        components = sample_components(key_components, self.weights, states)
        chol = jnp.linalg.cholesky(self.covariances)[states, components]
        noise = jax.random.normal(key_noise, states.shape + self.means.shape[2:],
                                  self.means.dtype)
        return self.means[states, components] + jnp.einsum("tde,te->td", chol, noise)

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Weight rows, finite means, positive-definite covariances, data with that D."""
        num_states, num_components, num_features = check_mixture_weights_and_means(
            self.weights, self.means)
        checks.shape_is("emissions.covariances", self.covariances,
                        (num_states, num_components, num_features, num_features),
                        "(K, M, D, D) to match emissions.means")
        checks.positive_definite("emissions.covariances", self.covariances)
        if observations is not None:
            validation.vector_observations(observations, valid, num_features)

    def check_hyperparameters(self, *, min_covar=DEFAULT_MIN_COVAR, pseudo_count=0.0) -> None:
        """``min_covar`` a real ``> 0``, ``pseudo_count`` reals ``>= 0`` (a number or (K, M))."""
        check_mixture_hyperparameters("GaussianMixture", self.weights, min_covar, pseudo_count)

    @classmethod
    def initialize(cls, key: PRNGKey, observations, weights, num_states: int, *,
                   num_components: int = 2, min_covar=DEFAULT_MIN_COVAR) -> GaussianMixture:
        """Equal weights 1/M; means K·M k-means centres of the weighted data; every covariance the data's covariance plus ``min_covar · I``."""
        mixture_weights, means, covariance = initial_mixture(
            "GaussianMixture", key, observations, weights, num_states, num_components, min_covar)
        return cls(mixture_weights, means,
                   jnp.broadcast_to(covariance, means.shape[:2] + covariance.shape))
