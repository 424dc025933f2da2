"""Data-driven starting points for EM: k-means++ seeding, Lloyd's k-means, the data covariance,
and Dirichlet-random initial and transition probabilities.

Every function takes weighted points: ``points`` ``(N, D)`` and ``weights`` ``(N,)`` with
weight 1 for a real observation and 0 for padding, so padded steps are never chosen as a
centre and never move one.  Randomness comes only from ``key``; everything is jittable and
vmappable over ``key`` (``hmm.fit`` draws all its restarts in one ``vmap``).

k-means++ (Arthur & Vassilvitskii 2007): the first centre is drawn with probability
``∝ w_n``, each next one with probability ``∝ w_n · d_n²``, ``d_n`` the distance from ``x_n``
to the nearest centre chosen so far (``∝ w_n`` again when every ``d_n`` is 0, i.e. fewer
distinct points than clusters).  Lloyd's iterations then alternate

    c_n = argmin_k ‖x_n − μ_k‖²,    μ_k = Σ_{n: c_n = k} w_n x_n / Σ_{n: c_n = k} w_n,

a cluster left without points keeping its centre.  hmmlearn's ``GaussianHMM`` seeds its
means with scikit-learn's ``KMeans(n_init=10)`` (greedy k-means++, best of ten runs); here
one seeding per restart, the restarts of ``hmm.fit`` playing the role of ``n_init``.

Each function is jitted (the counts static), so a family's ``initialize`` called eagerly under
``jax.vmap`` over keys dispatches a few compiled programs, compiled once per shapes.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array, PRNGKey
from functional_dl.hmm._numerics import inverse_cdf

__all__ = ["kmeans_plusplus", "kmeans", "weighted_covariance", "dirichlet_rows", "as_points"]


def as_points(observations, weights) -> tuple[Array, Array]:
    """``(points (N, D), weights (N,))`` as arrays of one floating dtype (the default float
    for integer data, the data's own float type otherwise), every point of weight 0 replaced
    by the first point of positive weight: padding may hold NaN, and ``0 · NaN`` is NaN."""
    points = jnp.asarray(observations)
    dtype = jnp.result_type(points.dtype, float)
    points, weights = points.astype(dtype), jnp.asarray(weights).astype(dtype)
    anchor = points[jnp.argmax(weights > 0)]
    return jnp.where((weights > 0)[:, None], points, anchor[None, :]), weights


def _squared_distances(points: Array, centres: Array) -> Array:
    """``(N, C)``: ``‖x_n − μ_c‖²``, from the differences (no cancellation)."""
    diffs = points[:, None, :] - centres[None, :, :]
    return jnp.sum(diffs * diffs, axis=-1)


def _draw(uniform: Array, masses: Array) -> Array:
    """The index drawn with probability ``∝ masses`` (non-negative, not all 0) by ``uniform``."""
    return jnp.minimum(inverse_cdf(jnp.cumsum(masses), uniform), masses.shape[0] - 1)


@functools.partial(jax.jit, static_argnames="num_clusters")
def kmeans_plusplus(key: PRNGKey, points: Array, weights: Array, num_clusters: int) -> Array:
    """``(C, D)`` centres seeded by weighted k-means++ (module docstring)."""
    uniforms = jax.random.uniform(key, (num_clusters,), points.dtype)
    first = points[_draw(uniforms[0], weights)]
    centres = jnp.zeros((num_clusters, points.shape[1]), points.dtype).at[0].set(first)
    nearest = jnp.sum((points - first[None, :]) ** 2, axis=-1)

    def _add_centre(index, carry):
        """Draw centre ``index`` ∝ w · d², then update the distances to the nearest centre."""
        centres, nearest = carry
        masses = weights * nearest
        masses = jnp.where(jnp.sum(masses) > 0, masses, weights)
        centre = points[_draw(uniforms[index], masses)]
        distances = jnp.sum((points - centre[None, :]) ** 2, axis=-1)
        return centres.at[index].set(centre), jnp.minimum(nearest, distances)

    centres, _ = lax.fori_loop(1, num_clusters, _add_centre, (centres, nearest))
    return centres


@functools.partial(jax.jit, static_argnames=("num_clusters", "num_iterations"))
def kmeans(key: PRNGKey, points: Array, weights: Array, num_clusters: int, *,
           num_iterations: int = 10) -> Array:
    """``(C, D)`` centres: k-means++ seeding, then ``num_iterations`` Lloyd iterations."""
    centres = kmeans_plusplus(key, points, weights, num_clusters)

    def _lloyd(_, centres):
        """Assign each point to its nearest centre; move each centre to its points' mean."""
        labels = jnp.argmin(_squared_distances(points, centres), axis=1)
        memberships = weights[:, None] * jax.nn.one_hot(labels, num_clusters, dtype=points.dtype)
        counts = jnp.sum(memberships, axis=0)
        sums = memberships.T @ points
        occupied = counts > 0
        means = sums / jnp.where(occupied, counts, 1.0)[:, None]
        return jnp.where(occupied[:, None], means, centres)

    return lax.fori_loop(0, num_iterations, _lloyd, centres)


@jax.jit
def weighted_covariance(points: Array, weights: Array) -> Array:
    """``(D, D)``: ``Σ_n w_n (x_n − x̄)(x_n − x̄)ᵀ / (Σ_n w_n − 1)``, ``x̄ = Σ w_n x_n / Σ w_n``.

    Frequency weights, as ``np.cov(points.T, fweights=weights)``: with 0/1 weights this is
    the unbiased sample covariance of the real steps, hmmlearn's ``np.cov(X.T)``.  One
    observation (``Σ w = 1``) gives the zero matrix.
    """
    total = jnp.sum(weights)
    mean = (weights @ points) / total
    diffs = points - mean[None, :]
    scatter = (weights[:, None] * diffs).T @ diffs
    return scatter / jnp.maximum(total - 1.0, 1.0)


_GAMMA_TRIES = 12  # Marsaglia–Tsang accepts ≥ 95 % of proposals: all 12 fail with p < 1e-15


def _log_gamma(key: PRNGKey, concentration: Array, shape: tuple[int, ...], dtype) -> Array:
    """``log g`` with ``g ~ Gamma(α, 1)``, by Marsaglia & Tsang (2000) at ``α + 1`` and the
    boost ``g = g_{α+1} · U^{1/α}``, in log space so that tiny α gives no zeros.

    A fixed number of proposals per variate (the first accepted one is used) instead of a
    rejection loop, and every random number from one uniform draw (normals by Box–Muller):
    elementwise code only, which compiles far faster than ``jax.random.gamma``'s loop.
    """
    tiny = jnp.finfo(dtype).tiny
    uniforms = jax.random.uniform(key, (3 * _GAMMA_TRIES + 1,) + shape, dtype, minval=tiny)
    radius, angle, accept = (uniforms[i * _GAMMA_TRIES:(i + 1) * _GAMMA_TRIES] for i in range(3))
    x = jnp.sqrt(-2.0 * jnp.log(radius)) * jnp.cos(2.0 * jnp.pi * angle)
    d = concentration + 1.0 - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    v = (1.0 + c * x) ** 3
    safe_v = jnp.where(v > 0, v, 1.0)
    accepted = (v > 0) & (jnp.log(accept) < 0.5 * x * x + d - d * safe_v + d * jnp.log(safe_v))
    first = jnp.argmax(accepted, axis=0)
    chosen = jnp.take_along_axis(safe_v, first[None], axis=0)[0]
    chosen = jnp.where(jnp.any(accepted, axis=0), chosen, 1.0)
    return jnp.log(d * chosen) + jnp.log(uniforms[-1]) / concentration


@functools.partial(jax.jit, static_argnames=("num_states", "dtype"))
def dirichlet_rows(key: PRNGKey, num_states: int, concentration, dtype) -> tuple[Array, Array]:
    """``(π, A)``: π and every row of A drawn from a symmetric Dirichlet(concentration).

    ``x_i = g_i / Σ_j g_j`` with independent ``g_i ~ Gamma(α)`` (``_log_gamma``; the
    normalisation is a softmax of ``log g``).  hmmlearn's ``_init`` uses α = 1 / K for both.
    """
    alpha = jnp.asarray(concentration, dtype)
    log_gammas = _log_gamma(key, alpha, (num_states + 1, num_states), dtype)
    rows = jax.nn.softmax(log_gammas, axis=-1)
    return rows[0], rows[1:]
