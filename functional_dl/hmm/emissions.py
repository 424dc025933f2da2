"""Emission models: the per-state observation distributions ``b_k(x) = p(x_t = x | z_t = k)``.

Contract (the only thing inference and learning use; a new family needs nothing else).
An emission model is a NamedTuple of arrays, hence a pytree that jits, vmaps and
differentiates, with

- ``num_states``: K; ``event_ndim``: dimensions of one observation (0 for a symbol, 1 for a
  vector), so a sequence has shape ``(T,) + event_shape``;
- ``log_likelihoods(observations) -> (T, K)``: ``[t, k] = log b_k(x_t)``, the meeting point with
  inference (any ``(T, K)`` matrix, e.g. a neural network's output, works there too);
- ``sufficient_stats(observations, weights) -> stats``: sums over t of ``weights[t, k]`` times
  the statistics of ``x_t``, additive over sequences (a batch is summed on its leading axis);
  ``weights`` are posterior marginals, 0 at padded positions;
- ``m_step(stats, *, pseudo_count, min_covar) -> same family``: the maximiser of the expected
  complete-data log-likelihood; a state whose expected count is below ``min_mass`` keeps its
  previous parameters (never 0/0);
- ``sample(key, states) -> (T,) + event_shape``: one observation per given state;
- ``check(observations=None, valid=None)``: eager validation of the parameters and (if given)
  of the observations at the positions where ``valid`` is True; ``ValueError`` naming the
  argument; static shape checks always, value checks only on concrete arrays.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import _validation as v
from functional_dl.hmm._numerics import (finite_or_zero, inverse_cdf, min_mass, safe_divide,
                                         safe_log)

_LOG_2PI = math.log(2.0 * math.pi)


def _check_vector_observations(observations, valid, num_features: int) -> None:
    """Shape ``(..., T, D)``, real dtype, finite at valid positions."""
    shape = v.shape_of(observations)
    if len(shape) < 2 or shape[-1] != num_features:
        raise ValueError(f"observations must have shape (T, D) or (B, T, D) with D = "
                         f"{num_features} (from means), got shape {shape}; "
                         "for scalar data use observations[..., None]")
    v.require_floating("observations", observations)
    values = v.concrete_values(observations)
    if values is not None:
        finite = np.all(np.isfinite(values[0]), axis=-1)
        if valid is not None:
            finite = finite | ~valid
        if not np.all(finite):
            raise ValueError("observations must be finite at non-padded positions, got NaN or infinity")


def _lookup(table: Array, indices: Array) -> Array:
    """``table[indices]``, with ``table`` computed once rather than once per gathered element.

    XLA on CPU fuses elementwise producers (here the K·V logarithms) into the gather, which
    then evaluates them for each of the T·K gathered entries (10× slower at T = 64 000,
    K = 8, V = 16).  A second, reducing use of ``table`` makes XLA materialise it; the term
    it adds is exactly 0 (finite by construction), so values and gradients are unchanged.
    """
    anchor = finite_or_zero(jnp.max(table))
    return table[indices] + 0.0 * anchor


class CategoricalStats(NamedTuple):
    """``counts[k, v] = Σ_t w_tk [x_t = v]``."""
    counts: Array


class Categorical(NamedTuple):
    """Categorical emissions over V symbols: ``b_k(v) = probs[k, v]``; observations int (T,)."""
    probs: Array  # (K, V), rows sum to 1

    event_ndim = 0

    @property
    def num_states(self) -> int:
        return self.probs.shape[0]

    def log_likelihoods(self, observations: Array) -> Array:
        """``[t, k] = log probs[k, x_t]`` (``-inf`` where the probability is 0)."""
        chex.assert_rank(observations, 1)
        return _lookup(safe_log(self.probs).T, observations)

    def sufficient_stats(self, observations: Array, weights: Array) -> CategoricalStats:
        """Expected symbol counts per state, ``n_kv = Σ_{t: x_t = v} w_tk``.

        A scatter-add of the T weight rows into V bins (O(T K)), not ``weightsᵀ · onehot(x)``
        (a (T, V) one-hot and an O(T K V) product).
        """
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        counts = jnp.zeros((self.probs.shape[1], self.num_states), weights.dtype)
        return CategoricalStats(counts.at[observations].add(weights).T)

    def m_step(self, stats: CategoricalStats, *, pseudo_count=0.0, min_covar=None) -> Categorical:
        """``probs[k, v] = (n_kv + α) / Σ_v' (n_kv' + α)`` with ``α = pseudo_count``.

        ``α = 0`` is maximum likelihood (hmmlearn's default ``emissionprob_prior = 1``); ``α > 0``
        is the MAP estimate under a symmetric Dirichlet(α + 1) prior.  ``min_covar`` is unused.
        """
        counts = stats.counts + pseudo_count
        totals = jnp.sum(counts, axis=1, keepdims=True)
        has_mass = totals > min_mass(counts.dtype)
        return Categorical(jnp.where(has_mass, safe_divide(counts, totals), self.probs))

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_t ~ Categorical(probs[z_t])``, by inverse-CDF sampling from one uniform per step."""
        dtype = jnp.result_type(self.probs.dtype, jnp.float32)
        uniforms = jax.random.uniform(key, states.shape, dtype)
        return inverse_cdf(jnp.cumsum(self.probs.astype(dtype), axis=1)[states], uniforms)

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Probabilities valid; integer observations in ``[0, V)`` at non-padded positions."""
        v.require_ndim("emissions.probs", self.probs, 2, "(K, V)")
        v.check_probability_rows("emissions.probs", self.probs)
        if observations is None:
            return
        dtype = v.dtype_of(observations)
        if not np.issubdtype(dtype, np.integer):
            raise TypeError(f"observations of Categorical emissions must be integers, got dtype {dtype}")
        if len(v.shape_of(observations)) < 1:
            raise ValueError("observations must have shape (T,) or (B, T), got a scalar")
        values = v.concrete_values(observations)
        if values is None:
            return
        num_symbols = self.probs.shape[1]
        inside = (values[0] >= 0) & (values[0] < num_symbols)
        if valid is not None:
            inside = inside | ~valid
        if not np.all(inside):
            bad = values[0][~inside]
            raise ValueError(f"observations must be symbols in [0, {num_symbols}) (V from "
                             f"emissions.probs), got {bad.min()}..{bad.max()}")


class GaussianStats(NamedTuple):
    """Sums shifted by the current means ``μ_k`` (less cancellation than raw moments).

    ``weight_sums[k] = Σ w_tk``, ``shifted_sums[k] = Σ w_tk (x_t − μ_k)``,
    ``shifted_outer_sums[k] = Σ w_tk (x_t − μ_k)(x_t − μ_k)ᵀ``.
    """
    weight_sums: Array
    shifted_sums: Array
    shifted_outer_sums: Array


def _floor_eigenvalues(covariances: Array, floor) -> Array:
    """``V diag(max(λ, floor)) Vᵀ`` for each symmetric matrix: positive-definite, λ_min >= floor."""
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariances)
    floored = jnp.maximum(eigenvalues, floor)
    result = (eigenvectors * floored[..., None, :]) @ jnp.swapaxes(eigenvectors, -1, -2)
    return 0.5 * (result + jnp.swapaxes(result, -1, -2))


class Gaussian(NamedTuple):
    """Full-covariance Gaussian emissions: ``b_k(x) = N(x; means[k], covariances[k])``."""
    means: Array  # (K, D)
    covariances: Array  # (K, D, D), symmetric positive-definite

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
                - 0.5 * num_features * _LOG_2PI)

    def sufficient_stats(self, observations: Array, weights: Array) -> GaussianStats:
        """Weighted zeroth, first and second moments about the current means."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        diffs = observations[:, None, :] - self.means[None, :, :]
        weighted = weights[:, :, None] * diffs
        return GaussianStats(jnp.sum(weights, axis=0), jnp.sum(weighted, axis=0),
                             jnp.einsum("tkd,tke->kde", weighted, diffs))

    def m_step(self, stats: GaussianStats, *, pseudo_count=None, min_covar=1e-3) -> Gaussian:
        """``μ_k = μ_k^old + S1_k / N_k``; ``Σ_k = S2_k / N_k − δ_k δ_kᵀ`` (``δ_k = S1_k / N_k``).

        Maximum likelihood; every eigenvalue of ``Σ_k`` is then floored at ``min_covar``
        (covariances that are already well-conditioned are unchanged).  ``pseudo_count`` is
        unused (no prior on means and covariances).
        """
        totals = stats.weight_sums
        has_mass = totals > min_mass(totals.dtype)
        offsets = safe_divide(stats.shifted_sums, totals[:, None])
        second = safe_divide(stats.shifted_outer_sums, totals[:, None, None])
        covariances = second - offsets[:, :, None] * offsets[:, None, :]
        covariances = _floor_eigenvalues(0.5 * (covariances + jnp.swapaxes(covariances, 1, 2)),
                                         min_covar)
        return Gaussian(jnp.where(has_mass[:, None], self.means + offsets, self.means),
                        jnp.where(has_mass[:, None, None], covariances, self.covariances))

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_t = μ_{z_t} + L_{z_t} ε_t`` with ``ε_t ~ N(0, I)``."""
        chol = jnp.linalg.cholesky(self.covariances)
        noise = jax.random.normal(key, states.shape + self.means.shape[1:], self.means.dtype)
        return self.means[states] + jnp.einsum("tde,te->td", chol[states], noise)

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Shapes agree on K and D, covariances symmetric positive-definite, data finite."""
        v.require_ndim("emissions.means", self.means, 2, "(K, D)")
        num_states, num_features = v.shape_of(self.means)
        expected = (num_states, num_features, num_features)
        if v.shape_of(self.covariances) != expected:
            raise ValueError(f"emissions.covariances must have shape (K, D, D) = {expected} to "
                             f"match emissions.means, got {v.shape_of(self.covariances)}")
        v.check_finite("emissions.means", self.means)
        v.check_positive_definite("emissions.covariances", self.covariances)
        if observations is not None:
            _check_vector_observations(observations, valid, num_features)


class DiagonalGaussianStats(NamedTuple):
    """As ``GaussianStats`` with the squares ``Σ w_tk (x_t − μ_k)²`` instead of outer products."""
    weight_sums: Array
    shifted_sums: Array
    shifted_square_sums: Array


class DiagonalGaussian(NamedTuple):
    """Diagonal Gaussian emissions: ``b_k(x) = Π_d N(x_d; means[k, d], variances[k, d])``."""
    means: Array  # (K, D)
    variances: Array  # (K, D), > 0

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

    def m_step(self, stats: DiagonalGaussianStats, *, pseudo_count=None,
               min_covar=1e-3) -> DiagonalGaussian:
        """``μ_k = μ_k^old + δ_k``, ``σ²_k = max(S2_k / N_k − δ_k², min_covar)``, ``δ_k = S1_k / N_k``."""
        totals = stats.weight_sums
        has_mass = (totals > min_mass(totals.dtype))[:, None]
        offsets = safe_divide(stats.shifted_sums, totals[:, None])
        variances = safe_divide(stats.shifted_square_sums, totals[:, None]) - offsets**2
        variances = jnp.maximum(variances, min_covar)
        return DiagonalGaussian(jnp.where(has_mass, self.means + offsets, self.means),
                                jnp.where(has_mass, variances, self.variances))

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_t = μ_{z_t} + σ_{z_t} ⊙ ε_t`` with ``ε_t ~ N(0, I)``."""
        noise = jax.random.normal(key, states.shape + self.means.shape[1:], self.means.dtype)
        return self.means[states] + jnp.sqrt(self.variances[states]) * noise

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """Shapes agree on K and D, variances positive, data finite."""
        v.require_ndim("emissions.means", self.means, 2, "(K, D)")
        if v.shape_of(self.variances) != v.shape_of(self.means):
            raise ValueError(f"emissions.variances must have shape (K, D) = "
                             f"{v.shape_of(self.means)} to match emissions.means, "
                             f"got {v.shape_of(self.variances)}")
        v.check_finite("emissions.means", self.means)
        values = v.concrete_values(self.variances)
        if values is not None and not np.all(np.isfinite(values[0]) & (values[0] > 0)):
            raise ValueError(f"emissions.variances must be finite and > 0, got minimum "
                             f"{np.min(values[0]):.6g}")
        if observations is not None:
            _check_vector_observations(observations, valid, self.means.shape[1])
