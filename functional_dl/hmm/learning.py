"""Baum–Welch (EM) for a batch of variable-length sequences, the whole loop in one ``jit``.

E-step: ``jax.vmap`` of the single-sequence forward-backward (``inference.smoother``) over the
batch, giving the expected sufficient statistics

    n^π_k = Σ_b γ_{b,1}(k),   n^A_ij = Σ_b Σ_t ξ_{b,t}(i, j),   emission sums weighted by γ.

M-step (maximum likelihood, or MAP with symmetric Dirichlet pseudo-counts α = pseudo_count):

    π_k = (n^π_k + α) / Σ_k' (n^π_k' + α),    A_ij = (n^A_ij + α) / Σ_j' (n^A_ij' + α),

and the emission model's own ``m_step`` (Gaussian covariances with eigenvalues floored at
``min_covar``).  With α = 0 this is hmmlearn's M-step with its default priors
(``startprob_prior = transmat_prior = emissionprob_prior = 1``); for Gaussian emissions
hmmlearn's defaults add ``covars_prior = 1e-2`` to the scatter matrix, which this pure ML
estimate does not (and hmmlearn's ``min_covar`` only enters its initialisation).  A state, or a
row of A, whose expected count is below machine epsilon keeps its previous parameters
(hmmlearn leaves an all-zero row in the transition matrix and, for Gaussian emissions,
divides 0 by 0 into NaN means, then fails on the next iteration).

Convergence follows hmmlearn's monitor: iteration i computes ``ℓ_i`` (total log-likelihood of
the current model, recorded as ``history[i]``), then always applies the M-step, and stops if
``ℓ_i − ℓ_{i−1} < tol`` (also when the difference is undefined, ``−inf − (−inf)``).  The
returned model is therefore one M-step past ``history[num_iterations − 1]``.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from functional_dl._checks import check_non_negative, check_positive
from functional_dl._types import Array
from functional_dl.hmm._numerics import min_mass, replace_padding, safe_divide
from functional_dl.hmm.inference import smoother
from functional_dl.hmm.model import HMM, check


class SufficientStats(NamedTuple):
    """Expected counts summed over the batch (additive: stats of two batches add up)."""
    initial_counts: Array  # (K,)
    transition_counts: Array  # (K, K)
    emission_stats: Any  # the emission model's stats pytree


class BaumWelchResult(NamedTuple):
    """``history[i]``: total log-likelihood at the start of iteration i; NaN after the last."""
    model: HMM
    history: Array  # (max_iter,)
    num_iterations: Array  # int scalar, number of E+M steps run
    converged: Array  # bool scalar, True when the tol criterion stopped the loop


@jax.jit
def e_step(model: HMM, observations: Array,
           lengths: Array | None = None) -> tuple[Array, SufficientStats]:
    """``(Σ_b log p(x_b), summed SufficientStats)`` for a batch ``(B, T) + event_shape``.

    Forward-backward (``inference.smoother``) is ``vmap``ped over the sequences; the emission
    log-likelihoods and statistics are computed once on the flattened ``(B·T)`` steps (the
    padded steps carry weight 0), which is one gather / scatter instead of B of them.
    ``lengths=None`` means every sequence has length T (no padding masks are built).
    """
    batch_size, num_steps = observations.shape[:2]
    event_shape = observations.shape[2:]
    if lengths is not None:
        observations = jax.vmap(replace_padding)(observations, lengths)
    flat_observations = observations.reshape((batch_size * num_steps,) + event_shape)
    log_likelihoods = model.emissions.log_likelihoods(flat_observations)
    log_likelihoods = log_likelihoods.reshape((batch_size, num_steps, -1))
    if lengths is None:
        post = jax.vmap(smoother, in_axes=(None, None, 0))(
            model.initial_probs, model.transition_matrix, log_likelihoods)
    else:
        post = jax.vmap(smoother, in_axes=(None, None, 0, 0))(
            model.initial_probs, model.transition_matrix, log_likelihoods, lengths)
    weights = post.smoothed_probs.reshape((batch_size * num_steps, -1))
    stats = SufficientStats(jnp.sum(post.smoothed_probs[:, 0], axis=0),
                            jnp.sum(post.transition_counts, axis=0),
                            model.emissions.sufficient_stats(flat_observations, weights))
    return jnp.sum(post.log_likelihood), stats


def _dirichlet_map(counts: Array, pseudo_count, previous: Array) -> Array:
    """Rows ``(n + α) / Σ (n + α)``; a row with (almost) no mass keeps ``previous``."""
    counts = counts + pseudo_count
    totals = jnp.sum(counts, axis=-1, keepdims=True)
    return jnp.where(totals > min_mass(counts.dtype), safe_divide(counts, totals), previous)


@jax.jit
def m_step(model: HMM, stats: SufficientStats, pseudo_count=0.0, min_covar=1e-3) -> HMM:
    """The parameters maximising the expected complete-data log-likelihood (module docstring)."""
    emissions = model.emissions.m_step(stats.emission_stats, pseudo_count=pseudo_count,
                                       min_covar=min_covar)
    return HMM(_dirichlet_map(stats.initial_counts, pseudo_count, model.initial_probs),
               _dirichlet_map(stats.transition_counts, pseudo_count, model.transition_matrix),
               emissions)


def _as_float_model(model: HMM) -> HMM:
    """Every parameter as an array of the default float dtype (float32 unless x64 is on)."""
    float_dtype = jnp.result_type(float)

    def convert(leaf):
        leaf = jnp.asarray(leaf)
        dtype = leaf.dtype if jnp.issubdtype(leaf.dtype, jnp.floating) else float_dtype
        return leaf.astype(dtype)

    return jax.tree.map(convert, model)


@functools.partial(jax.jit, static_argnames="max_iter")
def _fit(model: HMM, observations: Array, lengths: Array | None, tol: Array, pseudo_count: Array,
         min_covar: Array, *, max_iter: int) -> BaumWelchResult:
    """The EM loop as one ``lax.while_loop``; compiled once per shapes, dtypes and max_iter.

    Everything but the eager checks happens here, traced once: the float conversion of the
    parameters, a single sequence becoming a batch of one, ``lengths`` (None: all T).
    """
    model = _as_float_model(model)
    if observations.ndim == 1 + model.emissions.event_ndim:  # one sequence
        observations = observations[None]
        lengths = None if lengths is None else jnp.reshape(lengths, (1,))
    log_lik_dtype = jnp.result_type(model.initial_probs.dtype, jnp.float32)
    tol, pseudo_count, min_covar = (jnp.asarray(x, model.initial_probs.dtype)
                                    for x in (tol, pseudo_count, min_covar))

    def _cast_like(new: HMM, old: HMM) -> HMM:
        return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)

    def _continue(carry):
        iteration, _, _, _, converged = carry
        return (iteration < max_iter) & ~converged

    def _iteration(carry):
        """E-step on the current model, record ℓ_i, M-step, test the improvement."""
        iteration, current, previous_log_lik, history, _ = carry
        log_lik, stats = e_step(current, observations, lengths)
        log_lik = log_lik.astype(log_lik_dtype)
        updated = _cast_like(m_step(current, stats, pseudo_count, min_covar), current)
        converged = (iteration > 0) & ~(log_lik - previous_log_lik >= tol)
        return (iteration + 1, updated, log_lik, history.at[iteration].set(log_lik), converged)

    history = jnp.full((max_iter,), jnp.nan, log_lik_dtype)
    init = (jnp.zeros((), jnp.int32), model, jnp.full((), -jnp.inf, log_lik_dtype), history,
            jnp.zeros((), bool))
    num_iterations, fitted, _, history, converged = lax.while_loop(_continue, _iteration, init)
    return BaumWelchResult(fitted, history, num_iterations, converged)


def baum_welch_fit(model: HMM, observations: Array, lengths: Array | None = None, *,
                   max_iter: int = 100, tol: float = 1e-4, pseudo_count: float = 0.0,
                   min_covar: float = 1e-3) -> BaumWelchResult:
    """``baum_welch`` returning the full ``BaumWelchResult`` (iterations run, convergence flag).

    The arguments are checked eagerly (``check``), then one compiled function runs the loop;
    a second call with new data of the same shapes, dtypes and ``max_iter`` reuses it
    (``tol``, ``pseudo_count`` and ``min_covar`` are traced values, not compile-time constants).
    Nothing else runs eagerly (no array is built outside the compiled function), so a call
    costs the checks, one dispatch and the loop.
    """
    check(model, observations, lengths)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    check_non_negative("tol", tol)
    check_non_negative("pseudo_count", pseudo_count)
    check_positive("min_covar", min_covar)
    event_ndim = model.emissions.event_ndim
    if np.ndim(observations) not in (1 + event_ndim, 2 + event_ndim):
        raise ValueError(f"observations must have shape (B, T) + event shape, "
                         f"got {np.shape(observations)}")
    if lengths is not None and not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not hasattr(observations, "dtype"):
        observations = np.asarray(observations)
    # NumPy scalars: weakly typed Python floats would do too, but these are free to build
    scalars = (np.float64(tol), np.float64(pseudo_count), np.float64(min_covar))
    return _fit(model, observations, lengths, *scalars, max_iter=max_iter)


def baum_welch(model: HMM, observations: Array, lengths: Array | None = None, *,
               max_iter: int = 100, tol: float = 1e-4, pseudo_count: float = 0.0,
               min_covar: float = 1e-3) -> tuple[HMM, Array]:
    """Fit ``model`` to a batch ``(B, T)`` / ``(B, T, D)`` of sequences by EM: ``(fitted, history)``.

    ``lengths`` (B,) gives each sequence's length (padding beyond it is ignored); a single
    sequence ``(T,)`` / ``(T, D)`` is accepted as a batch of one.  ``history`` has ``max_iter``
    entries: ``history[i]`` is the total log-likelihood ``Σ_b log p(x_b)`` of the model at the
    start of iteration i; entries after the last iteration are NaN (a log-likelihood here is
    never NaN, and −inf is a genuine value), so the number of iterations run is
    ``jnp.sum(~jnp.isnan(history))`` (``baum_welch_fit`` returns it directly).  With
    ``pseudo_count = 0`` the log-likelihood never decreases (up to rounding).
    """
    result = baum_welch_fit(model, observations, lengths, max_iter=max_iter, tol=tol,
                            pseudo_count=pseudo_count, min_covar=min_covar)
    return result.model, result.history
