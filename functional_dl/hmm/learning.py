"""Baum–Welch (EM) for a batch of variable-length sequences, the whole loop in one ``jit``.

E-step: ``jax.vmap`` of the single-sequence forward-backward (``inference.smoother``) over the
batch, giving the expected sufficient statistics

    n^π_k = Σ_b γ_{b,1}(k),   n^A_ij = Σ_b Σ_t ξ_{b,t}(i, j),   emission sums weighted by γ.

M-step (maximum likelihood, or MAP with symmetric Dirichlet pseudo-counts α = pseudo_count):

    π_k = (n^π_k + α) / Σ_k' (n^π_k' + α),    A_ij = (n^A_ij + α) / Σ_j' (n^A_ij' + α),

and the emission family's own ``m_step`` with its own hyperparameters, passed as
``emission_hyperparameters`` (e.g. ``{"min_covar": 1e-2}`` for ``Gaussian``, ``{"pseudo_count":
1.0}`` for ``Categorical``; each family's module gives the formula).  With α = 0 and the
families' defaults this is hmmlearn's M-step with ``startprob_prior = transmat_prior =
emissionprob_prior = 1`` and, for Gaussian emissions, ``covars_prior = 0``.  A state, or a row
of A, whose expected count is below machine epsilon keeps its previous parameters (hmmlearn
leaves an all-zero row in the transition matrix and, for Gaussian emissions, divides 0 by 0
into NaN means, then fails on the next iteration).

Convergence follows hmmlearn's monitor: iteration i computes ``ℓ_i`` (total log-likelihood of
the current model, recorded as ``history[i]``), then always applies the M-step, and stops if
``ℓ_i − ℓ_{i−1} < tol`` (also when the difference is undefined, ``−inf − (−inf)``).  The
returned model is therefore one M-step past ``history[num_iterations − 1]``.

``tol``, ``pseudo_count`` and the emission hyperparameters are traced, not compile-time
constants: a new value reuses the compiled loop, and ``jax.vmap`` over them fits one model
per value in one program.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PyTree
from functional_dl.hmm._numerics import min_mass, replace_padding, safe_divide
from functional_dl.hmm.inference import smoother
from functional_dl.hmm.model import HMM, check


class SufficientStats(NamedTuple):
    """Expected counts summed over the batch (additive: stats of two batches add up)."""
    initial_counts: Array  # (K,)
    transition_counts: Array  # (K, K)
    emission_stats: PyTree  # the emission family's stats


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
def m_step(model: HMM, stats: SufficientStats, pseudo_count=0.0,
           emission_hyperparameters: Optional[Mapping[str, Any]] = None) -> HMM:
    """The parameters maximising the expected complete-data log-likelihood (module docstring).

    ``pseudo_count`` is the Dirichlet α of π and A; ``emission_hyperparameters`` are the
    keyword arguments of ``model.emissions.m_step`` (None: the family's defaults).
    """
    emissions = model.emissions.m_step(stats.emission_stats, **(emission_hyperparameters or {}))
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
         emission_hyperparameters: dict, *, max_iter: int) -> BaumWelchResult:
    """The EM loop as one ``lax.while_loop``; compiled once per shapes, dtypes and max_iter.

    Everything but the eager checks happens here, traced once: the float conversion of the
    parameters and hyperparameters, a single sequence becoming a batch of one, ``lengths``
    (None: all T).
    """
    model = _as_float_model(model)
    if observations.ndim == 1 + model.emissions.event_ndim:  # one sequence
        observations = observations[None]
        lengths = None if lengths is None else jnp.reshape(lengths, (1,))
    dtype = model.initial_probs.dtype
    log_lik_dtype = jnp.result_type(dtype, jnp.float32)
    tol, pseudo_count = (jnp.asarray(x, dtype) for x in (tol, pseudo_count))
    emission_hyperparameters = jax.tree.map(lambda x: jnp.asarray(x, dtype),
                                            emission_hyperparameters)

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
        updated = m_step(current, stats, pseudo_count, emission_hyperparameters)
        converged = (iteration > 0) & ~(log_lik - previous_log_lik >= tol)
        return (iteration + 1, _cast_like(updated, current), log_lik,
                history.at[iteration].set(log_lik), converged)

    history = jnp.full((max_iter,), jnp.nan, log_lik_dtype)
    init = (jnp.zeros((), jnp.int32), model, jnp.full((), -jnp.inf, log_lik_dtype), history,
            jnp.zeros((), bool))
    num_iterations, fitted, _, history, converged = lax.while_loop(_continue, _iteration, init)
    return BaumWelchResult(fitted, history, num_iterations, converged)


def _keyword_names(function) -> Optional[frozenset]:
    """The keyword-only parameters of ``function``; None when it takes ``**kwargs``."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _checked_emission_hyperparameters(emissions, hyperparameters) -> dict:
    """``hyperparameters`` as a dict the family accepts (TypeError naming an unknown one)."""
    if hyperparameters is None:
        return {}
    if not isinstance(hyperparameters, Mapping):
        raise TypeError(f"emission_hyperparameters must be a dict of keyword arguments of "
                        f"model.emissions.m_step, got {type(hyperparameters).__name__}")
    family = type(emissions).__name__
    accepted = _keyword_names(emissions.m_step)
    unknown = [] if accepted is None else sorted(set(hyperparameters) - accepted)
    if unknown:
        raise TypeError(f"emission_hyperparameters: {family} emissions have no hyperparameter "
                        f"{', '.join(map(repr, unknown))} (they take: "
                        f"{', '.join(sorted(accepted)) or 'none'})")
    emissions.check_hyperparameters(**hyperparameters)
    # NumPy float64 (cast to the model's dtype inside): one compilation for ints, floats
    # and lists alike; traced values stay as they are
    return {name: value if isinstance(value, jax.Array) else np.asarray(value, np.float64)
            for name, value in hyperparameters.items()}


def _traceable(value) -> Any:
    """A NumPy float64 for a concrete number (free to build), a traced value as it is."""
    return value if isinstance(value, jax.Array) else np.float64(value)


def baum_welch_with_history(model: HMM, observations: Array, lengths: Array | None = None, *,
                            max_iter: int = 100, tol: float = 1e-4, pseudo_count: float = 0.0,
                            emission_hyperparameters: Optional[Mapping[str, Any]] = None
                            ) -> BaumWelchResult:
    """``baum_welch`` returning ``BaumWelchResult(model, history, num_iterations, converged)``.

    ``history`` has ``max_iter`` entries: ``history[i]`` is the total log-likelihood
    ``Σ_b log p(x_b)`` of the model at the start of iteration i; entries after the last
    iteration are NaN (a log-likelihood here is never NaN, and −inf is a genuine value).
    ``converged`` is True when the ``tol`` criterion stopped the loop.

    The arguments are checked eagerly (``check``), then one compiled function runs the loop;
    a second call with new data of the same shapes, dtypes and ``max_iter`` reuses it.
    Nothing else runs eagerly (no array is built outside the compiled function), so a call
    costs the checks, one dispatch and the loop.
    """
    check(model, observations, lengths)
    max_iter = checks.whole_number("max_iter", max_iter, minimum=1)
    checks.non_negative("tol", tol)
    checks.non_negative("pseudo_count", pseudo_count)
    hyperparameters = _checked_emission_hyperparameters(model.emissions, emission_hyperparameters)
    event_ndim = model.emissions.event_ndim
    checks.rank("observations", observations, (1 + event_ndim, 2 + event_ndim),
                "(B, T) + event shape, or (T,) + event shape for one sequence")
    if lengths is not None and not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not hasattr(observations, "dtype"):
        observations = np.asarray(observations)
    return _fit(model, observations, lengths, _traceable(tol), _traceable(pseudo_count),
                hyperparameters, max_iter=max_iter)


def baum_welch(model: HMM, observations: Array, lengths: Array | None = None, *,
               max_iter: int = 100, tol: float = 1e-4, pseudo_count: float = 0.0,
               emission_hyperparameters: Optional[Mapping[str, Any]] = None) -> HMM:
    """Fit ``model`` to a batch ``(B, T)`` / ``(B, T, D)`` of sequences by EM; the fitted HMM.

    ``lengths`` (B,) gives each sequence's length (padding beyond it is ignored); a single
    sequence ``(T,)`` / ``(T, D)`` is accepted as a batch of one.  EM stops after ``max_iter``
    iterations or when the total log-likelihood improves by less than ``tol``.
    ``pseudo_count`` is the Dirichlet α added to the expected counts of π and A;
    ``emission_hyperparameters`` the keyword arguments of the emission family's ``m_step``
    (e.g. ``{"min_covar": 1e-2}`` for ``Gaussian``).  With ``pseudo_count = 0`` the
    log-likelihood never decreases (up to rounding).  ``baum_welch_with_history`` also returns
    the log-likelihood of every iteration, their number and the convergence flag.
    """
    return baum_welch_with_history(model, observations, lengths, max_iter=max_iter, tol=tol,
                                   pseudo_count=pseudo_count,
                                   emission_hyperparameters=emission_hyperparameters).model
