"""Full-covariance Gaussian emissions: ``b_k(x) = N(x; means[k], covariances[k])``.

M-step (maximum likelihood from moments about the current means μ_k, then a floor):

    N_k = Σ_t γ_t(k),   δ_k = Σ_t γ_t(k) (x_t − μ_k) / N_k,   μ_k ← μ_k + δ_k,
    Σ_k ← Σ_t γ_t(k) (x_t − μ_k)(x_t − μ_k)ᵀ / N_k − δ_k δ_kᵀ,

then every eigenvalue of ``Σ_k`` below ``min_covar`` is raised to it (well-conditioned
covariances are unchanged).  ``min_covar`` is one number or one per state, (K,).  To reproduce hmmlearn's ``GaussianHMM(covariance_type="full")``
set its ``covars_prior=0`` (its default 1e-2 adds a prior to the scatter matrix; its
``min_covar`` only enters its initialisation) and keep ``min_covar`` below the smallest
eigenvalue here.

Fitting from scratch (``initialize``, as hmmlearn's ``GaussianHMM._init``): the means are
k-means centres (k-means++ seeding, then Lloyd iterations: ``hmm.initialization``), every
covariance the sample covariance of all the data plus ``min_covar · I``.  Free parameters:
K D for the means and K D (D + 1)/2 for the covariances.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import initialization, validation
from functional_dl.hmm._numerics import min_mass, safe_divide
from functional_dl.hmm.emissions import _support

LOG_2PI = math.log(2.0 * math.pi)
DEFAULT_MIN_COVAR = 1e-3


class GaussianStats(NamedTuple):
    """Sums shifted by the current means ``μ_k`` (less cancellation than raw moments).

    ``weight_sums[k] = Σ w_tk``, ``shifted_sums[k] = Σ w_tk (x_t − μ_k)``,
    ``shifted_outer_sums[k] = Σ w_tk (x_t − μ_k)(x_t − μ_k)ᵀ``.
    """
    weight_sums: Array
    shifted_sums: Array
    shifted_outer_sums: Array


def per_state_floor(min_covar, num_states: int):
    """``min_covar`` as a floor for (K, D) values: a scalar as it is, a (K,) array as (K, 1)."""
    if jnp.ndim(min_covar) == 1:
        return jnp.reshape(min_covar, (num_states, 1))
    return min_covar


def check_min_covar(name: str, min_covar, num_states: int) -> None:
    """``min_covar`` a real ``> 0``, or a (K,) array of them (one floor per state)."""
    if np.ndim(min_covar) == 0:
        checks.positive(name, min_covar)
        return
    checks.shape_is(name, min_covar, (num_states,), "(one floor per state) or a number")
    checks.real_dtype(name, min_covar)
    validation.positive_entries(name, min_covar)


def floor_eigenvalues(covariances: Array, floor) -> Array:
    """``V diag(max(λ, floor)) Vᵀ`` for each symmetric matrix: positive-definite, λ_min >= floor."""
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariances)
    floored = jnp.maximum(eigenvalues, floor)
    result = (eigenvectors * floored[..., None, :]) @ jnp.swapaxes(eigenvectors, -1, -2)
    return 0.5 * (result + jnp.swapaxes(result, -1, -2))


class Gaussian(NamedTuple):
    """Full-covariance Gaussian emissions: ``means`` (K, D), ``covariances`` (K, D, D)."""
    means: Array
    covariances: Array  # symmetric positive-definite

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.means.shape[0]

    def log_likelihoods(self, observations: Array) -> Array:
        """``−½ (‖L_k⁻¹(x_t − μ_k)‖² + D log 2π) − Σ_d log L_k[d, d]`` with ``Σ_k = L_k L_kᵀ``."""
        chex.assert_rank(observations, 2)
        chol = jnp.linalg.cholesky(self.covariances)
        diffs = observations[:, None, :] - self.means[None, :, :]

        def whiten(lower, diff):
            return solve_triangular(lower, diff.T, lower=True).T

        whitened = jax.vmap(whiten, in_axes=(0, 1), out_axes=1)(chol, diffs)
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        num_features = self.means.shape[1]
        return (-0.5 * jnp.sum(whitened**2, axis=-1) - half_log_det[None, :]
                - 0.5 * num_features * LOG_2PI)

    def sufficient_stats(self, observations: Array, weights: Array) -> GaussianStats:
        """Weighted zeroth, first and second moments about the current means."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        diffs = observations[:, None, :] - self.means[None, :, :]
        weighted = weights[:, :, None] * diffs
        return GaussianStats(jnp.sum(weights, axis=0), jnp.sum(weighted, axis=0),
                             jnp.einsum("tkd,tke->kde", weighted, diffs))

    @property
    def num_free_parameters(self) -> int:
        """``K D + K D (D + 1) / 2`` (means, symmetric covariances)."""
        num_states, num_features = self.means.shape
        return num_states * num_features + num_states * num_features * (num_features + 1) // 2

    @classmethod
    def initialize(cls, key: PRNGKey, observations: Array, weights: Array, num_states: int, *,
                   min_covar=DEFAULT_MIN_COVAR, num_kmeans_iterations: int = 10) -> Gaussian:
        """k-means means, data covariance + ``min_covar · I`` for every state (module)."""
        points, weights = initialization.as_points(observations, weights)
        means = initialization.kmeans(key, points, weights, num_states,
                                      num_iterations=num_kmeans_iterations)
        num_features = points.shape[1]
        covariance = (initialization.weighted_covariance(points, weights)
                      + min_covar * jnp.eye(num_features, dtype=points.dtype))
        return cls(means, jnp.broadcast_to(covariance, (num_states, num_features, num_features)))

    def m_step(self, stats: GaussianStats, *, min_covar=DEFAULT_MIN_COVAR) -> Gaussian:
        """Means and covariances from the moments, eigenvalues floored at ``min_covar`` (module)."""
        totals = stats.weight_sums
        has_mass = totals > min_mass(totals.dtype)
        offsets = safe_divide(stats.shifted_sums, totals[:, None])
        second = safe_divide(stats.shifted_outer_sums, totals[:, None, None])
        covariances = second - offsets[:, :, None] * offsets[:, None, :]
        covariances = floor_eigenvalues(0.5 * (covariances + jnp.swapaxes(covariances, 1, 2)),
                                        per_state_floor(min_covar, self.num_states))
        return Gaussian(jnp.where(has_mass[:, None], self.means + offsets, self.means),
                        jnp.where(has_mass[:, None, None], covariances, self.covariances))

    def log_prior(self, *, min_covar=DEFAULT_MIN_COVAR) -> Array:
        """0: ``min_covar`` is a floor, not a density; the M-step is the maximum over the
        parameters that respect it, i.e. MAP under a prior flat there
        (``_support.constraint_log_prior``)."""
        return _support.constraint_log_prior(self.means)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_t = μ_{z_t} + L_{z_t} ε_t`` with ``ε_t ~ N(0, I)``."""
        chol = jnp.linalg.cholesky(self.covariances)
        noise = jax.random.normal(key, states.shape + self.means.shape[1:], self.means.dtype)
        return self.means[states] + jnp.einsum("tde,te->td", chol[states], noise)

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Shapes agree on K and D, covariances symmetric positive-definite, data finite."""
        checks.rank("emissions.means", self.means, 2, "(K, D)")
        num_states, num_features = np.shape(self.means)
        checks.shape_is("emissions.covariances", self.covariances,
                        (num_states, num_features, num_features),
                        "(K, D, D) to match emissions.means")
        checks.finite("emissions.means", self.means)
        checks.positive_definite("emissions.covariances", self.covariances)
        if observations is not None:
            validation.vector_observations(observations, valid, num_features)

    def check_hyperparameters(self, *, min_covar=DEFAULT_MIN_COVAR) -> None:
        """``min_covar`` a real ``> 0``, or a (K,) array of them."""
        check_min_covar("Gaussian: min_covar", min_covar, self.num_states)
