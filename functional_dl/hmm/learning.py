"""Baum–Welch (EM) for a batch of variable-length sequences, the whole loop in one ``jit``.

E-step: ``jax.vmap`` of the single-sequence forward-backward (``inference.smoother``) over the
batch, giving the expected sufficient statistics

    n^π_k = Σ_b γ_{b,1}(k),   n^A_ij = Σ_b Σ_t ξ_{b,t}(i, j),   emission sums weighted by γ.

M-step (maximum likelihood, or MAP with Dirichlet pseudo-counts α):

    π_k = (n^π_k + α^π_k) / Σ_k' (n^π_k' + α^π_k'),
    A_ij = (n^A_ij + α^A_ij) / Σ_j' (n^A_ij' + α^A_ij'),

and the emission family's own ``m_step`` with its own hyperparameters, passed as
``emission_hyperparameters`` (e.g. ``{"min_covar": 1e-2}`` for ``Gaussian``, ``{"pseudo_count":
1.0}`` for ``Categorical``; each family's module gives the formula).  ``pseudo_count`` sets
every α to one number; ``initial_pseudo_counts`` (K,) and ``transition_pseudo_counts`` (K, K)
set them entry by entry (hmmlearn's ``startprob_prior = 1 + α^π``, ``transmat_prior = 1 +
α^A``), so a left-right (Bakis) model regularised with α^A_ij = 0 below the diagonal keeps its
structural zeros.  With α = 0 and the families' defaults this is hmmlearn's M-step with
``startprob_prior = transmat_prior = emissionprob_prior = 1`` and, for Gaussian emissions,
``covars_prior = 0``.  A state, or a row of A, whose expected count is below machine epsilon
keeps its previous parameters (hmmlearn leaves an all-zero row in the transition matrix and,
for Gaussian emissions, divides 0 by 0 into NaN means, then fails on the next iteration).

Freezing.  ``update`` names the parts the M-step re-estimates, a subset of ``{"initial",
"transition", "emissions"}`` (default: all three); the others keep their starting values.
hmmlearn's ``params="st"`` is ``update={"initial", "transition"}``.

The objective.  With α = 0 and maximum-likelihood emission settings EM increases the
log-likelihood ℓ(θ) = Σ_b log p(x_b | θ); with priors the M-step is MAP and EM increases

    F(θ) = ℓ(θ) + log p(θ),   log p(θ) = Σ_k α^π_k log π_k + Σ_ij α^A_ij log A_ij
                                          + model.emissions.log_prior(**hyperparameters)

(Dirichlet(α + 1) rows, up to a constant; the terms of the parts in ``update`` only, the
others being constants; ``log_prior`` computes it), while ℓ alone may fall.  Convergence is
judged on F (hmmlearn's monitor when there is no prior, F = ℓ): iteration i computes ``ℓ_i``
(total log-likelihood of the current model, recorded as ``history[i]``) and ``F_i``, then
applies the M-step, and stops if ``F_i − F_{i−1} < tol`` (where log p is −inf at both
iterates, a parameter held at the prior's boundary, on ``ℓ_i − ℓ_{i−1}``).  ``history`` and
``log_likelihood`` report ℓ, the score that compares models (``score``, ``aic``, ``bic``, the
choice among restarts in ``hmm.fit``); with priors ``history`` may decrease while F rises
(``log_prior(model, ...) + log_likelihood`` is F of the returned model).  dynamax's
``fit_em`` reports F (its ``marginal_log_prob``, which keeps the constants) and runs a fixed
number of iterations; with ``tol=0`` this loop runs until F stops rising, which at a fixed
point may be a rounding-level change before dynamax's last iteration.

The returned model is one M-step past ``history[num_iterations − 1]``; ``fit_from`` (and
``hmm.fit``) also return its own log-likelihood.  A non-finite ``ℓ_i`` stops the loop at
once, not converged: NaN (an emission model produced NaN, or the parameters did) or −inf
(the data are impossible under the model); the model returned is then the last one whose
log-likelihood was finite (the start if there is none), and ``EMStatus`` says why the loop
stopped.

``tol``, the pseudo-counts and the emission hyperparameters are traced, not compile-time
constants: a new value reuses the compiled loop, and ``jax.vmap`` over them fits one model
per value in one program.  Python lists are accepted wherever an array is (parameters of the
model, pseudo-counts, hyperparameters, observations, lengths).
"""
from __future__ import annotations

import enum
import functools
from typing import Any, Iterable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PyTree
from functional_dl.hmm import _em_options
from functional_dl.hmm._layouts import pad_sequences
from functional_dl.hmm._numerics import min_mass, replace_padding, safe_divide
from functional_dl.hmm.inference import forward_filter, smoother_pieces
from functional_dl.hmm.priors import log_prior_terms
from functional_dl.hmm.model import HMM, as_array_model, check

PARTS = _em_options.PARTS


class EMStatus(enum.IntEnum):
    """Why the EM loop stopped (``EMStatus(int(result.status)).name``)."""
    CONVERGED = 0  # ℓ + log p(θ) (ℓ without priors) improved by less than tol
    MAX_ITERATIONS = 1  # max_iter iterations ran
    NAN_LOG_LIKELIHOOD = 2  # a log-likelihood was NaN (the emissions or the parameters)
    IMPOSSIBLE_OBSERVATIONS = 3  # a log-likelihood was −inf: the data cannot occur


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


class EMResult(NamedTuple):
    """What ``fit_from`` returns; under ``hmm.fit`` every field has a leading restart axis."""
    model: HMM
    log_likelihood: Array  # scalar, Σ_b log p(x_b) under ``model`` itself
    history: Array  # (max_iter,), as BaumWelchResult's
    num_iterations: Array  # int scalar
    converged: Array  # bool scalar: status == EMStatus.CONVERGED
    status: Array  # int scalar, an EMStatus


@jax.jit
def e_step(model: HMM, observations: Array,
           lengths: Array | None = None) -> tuple[Array, SufficientStats]:
    """``(Σ_b log p(x_b), summed SufficientStats)`` for a batch ``(B, T) + event_shape``.

    Forward-backward (``inference.smoother_pieces``) is ``vmap``ped over the sequences; the
    emission log-likelihoods and statistics are computed once on the flattened ``(B·T)`` steps
    (the padded steps carry weight 0), which is one gather / scatter instead of B of them, and
    the expected transition counts ``A ⊙ Σ_b X_bᵀ Y_b`` are one product over the batch.
    ``lengths=None`` means every sequence has length T (no padding masks are built).
    """
    batch_size, num_steps = observations.shape[:2]
    event_shape = observations.shape[2:]
    if lengths is not None:
        observations = jax.vmap(replace_padding)(observations, lengths)
    flat_observations = observations.reshape((batch_size * num_steps,) + event_shape)
    log_likelihoods = model.emissions.log_likelihoods(flat_observations)
    log_likelihoods = log_likelihoods.reshape((batch_size, num_steps, -1))
    args = (model.initial_probs, model.transition_matrix, log_likelihoods)
    if lengths is None:
        pieces = jax.vmap(smoother_pieces, in_axes=(None, None, 0))(*args)
    else:
        pieces = jax.vmap(smoother_pieces, in_axes=(None, None, 0, 0))(*args, lengths)
    # Σ_b Σ_t ξ_bt = A ⊙ (Σ_b X_bᵀ Y_b): one (K, B·T) · (B·T, K) product over the whole batch
    # (per-sequence counts would be B small products); time-varying A sums per sequence
    num_states = log_likelihoods.shape[-1]
    if model.transition_matrix.ndim == 2:
        weights = pieces.weights.reshape((-1, num_states))
        transition_counts = (model.transition_matrix.astype(weights.dtype)
                             * (weights.T @ pieces.future.reshape((-1, num_states))))
    else:
        transition_counts = jnp.einsum("tij,bti,btj->ij", model.transition_matrix,
                                       pieces.weights, pieces.future)
    smoothed = pieces.smoothed
    weights = smoothed.reshape((batch_size * num_steps, -1))
    stats = SufficientStats(jnp.sum(smoothed[:, 0], axis=0), transition_counts,
                            model.emissions.sufficient_stats(flat_observations, weights))
    log_lik = pieces.forward.log_likelihood
    return jnp.sum(log_lik), stats


def _dirichlet_map(counts: Array, pseudo_counts, previous: Array) -> Array:
    """Rows ``(n + α) / Σ (n + α)``; a row with (almost) no mass keeps ``previous``."""
    counts = counts + jnp.broadcast_to(pseudo_counts, counts.shape)
    totals = jnp.sum(counts, axis=-1, keepdims=True)
    return jnp.where(totals > min_mass(counts.dtype), safe_divide(counts, totals), previous)


def _m_step(model: HMM, stats: SufficientStats, initial_pseudo_counts, transition_pseudo_counts,
            emission_hyperparameters: Mapping[str, Any], update: frozenset) -> HMM:
    """The M-step of the parts named in ``update``; the others stay as they are."""
    initial_probs, transition_matrix, emissions = model
    if "initial" in update:
        initial_probs = _dirichlet_map(stats.initial_counts, initial_pseudo_counts, initial_probs)
    if "transition" in update:
        transition_matrix = _dirichlet_map(stats.transition_counts, transition_pseudo_counts,
                                           transition_matrix)
    if "emissions" in update:
        emissions = emissions.m_step(stats.emission_stats, **emission_hyperparameters)
    return HMM(initial_probs, transition_matrix, emissions)


_compiled_m_step = jax.jit(_m_step, static_argnames="update")


def m_step(model: HMM, stats: SufficientStats, pseudo_count=0.0,
           emission_hyperparameters: Optional[Mapping[str, Any]] = None, *,
           update: Iterable[str] = PARTS) -> HMM:
    """The parameters maximising the expected complete-data log-likelihood (module docstring).

    ``pseudo_count`` is the Dirichlet α of π and A (a number, or arrays broadcastable to
    their shapes when given as a pair ``(α^π, α^A)``); ``emission_hyperparameters`` are the
    keyword arguments of ``model.emissions.m_step`` (None: the family's defaults);
    ``update`` the parts re-estimated (a set of names, module docstring).
    """
    initial, transition = (pseudo_count if isinstance(pseudo_count, tuple)
                           else (pseudo_count, pseudo_count))
    return _compiled_m_step(model, stats, initial, transition, emission_hyperparameters or {},
                            update=_em_options.checked_update(update))


def _as_float_model(model: HMM) -> HMM:
    """Every parameter as an array of the default float dtype (float32 unless x64 is on)."""
    float_dtype = jnp.result_type(float)

    def convert(leaf):
        leaf = jnp.asarray(leaf)
        dtype = leaf.dtype if jnp.issubdtype(leaf.dtype, jnp.floating) else float_dtype
        return leaf.astype(dtype)

    return jax.tree.map(convert, model)


def total_log_likelihood(model: HMM, observations: Array, lengths: Array | None) -> Array:
    """``Σ_b log p(x_b)`` of a batch ``(B, T) + event_shape`` by the forward pass alone."""
    batch_size, num_steps = observations.shape[:2]
    event_shape = observations.shape[2:]
    if lengths is not None:
        observations = jax.vmap(replace_padding)(observations, lengths)
    flat = observations.reshape((batch_size * num_steps,) + event_shape)
    log_likelihoods = model.emissions.log_likelihoods(flat).reshape((batch_size, num_steps, -1))
    if lengths is None:
        log_liks, _ = jax.vmap(forward_filter, in_axes=(None, None, 0))(
            model.initial_probs, model.transition_matrix, log_likelihoods)
    else:
        log_liks, _ = jax.vmap(forward_filter, in_axes=(None, None, 0, 0))(
            model.initial_probs, model.transition_matrix, log_likelihoods, lengths)
    return jnp.sum(log_liks)


def run_em(model: HMM, observations: Array, lengths: Array | None, tol, initial_pseudo_counts,
           transition_pseudo_counts, emission_hyperparameters: dict, *, max_iter: int,
           update: frozenset = PARTS) -> EMResult:
    """The EM loop as one ``lax.while_loop`` on a batch (traceable; ``hmm.fit`` vmaps it).

    Everything but the eager checks happens here: the float conversion of the parameters
    and hyperparameters, a single sequence becoming a batch of one, ``lengths`` (None: all T).
    """
    model = _as_float_model(model)
    if observations.ndim == 1 + model.emissions.event_ndim:  # one sequence
        observations = observations[None]
        lengths = None if lengths is None else jnp.reshape(lengths, (1,))
    dtype = model.initial_probs.dtype
    log_lik_dtype = jnp.result_type(dtype, jnp.float32)
    tol = jnp.asarray(tol, log_lik_dtype)
    initial_pseudo_counts, transition_pseudo_counts = (
        jnp.asarray(x, dtype) for x in (initial_pseudo_counts, transition_pseudo_counts))
    emission_hyperparameters = jax.tree.map(lambda x: jnp.asarray(x, dtype),
                                            emission_hyperparameters)

    def _cast_like(new: HMM, old: HMM) -> HMM:
        return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)

    def _continue(carry):
        iteration, *_, status = carry
        return (iteration < max_iter) & (status == EMStatus.MAX_ITERATIONS)

    def _iteration(carry):
        """E-step on the current model, record ℓ_i, M-step, test the improvement of F_i."""
        iteration, current, previous, previous_log_lik, previous_objective, history, _ = carry
        log_lik, stats = e_step(current, observations, lengths)
        log_lik = log_lik.astype(log_lik_dtype)
        log_prior = log_prior_terms(current, initial_pseudo_counts, transition_pseudo_counts,
                                    emission_hyperparameters, update)
        objective = log_lik + log_prior.astype(log_lik_dtype)
        updated = _m_step(current, stats, initial_pseudo_counts, transition_pseudo_counts,
                          emission_hyperparameters, update)
        finite = jnp.isfinite(log_lik)
        # MAP-EM raises F = ℓ + log p(θ), not ℓ; −inf − (−inf) would read as "no gain"
        comparable = jnp.isfinite(objective) | jnp.isfinite(previous_objective)
        improvement = jnp.where(comparable, objective - previous_objective,
                                log_lik - previous_log_lik)
        converged = finite & (iteration > 0) & ~(improvement >= tol)
        status = jnp.select([jnp.isnan(log_lik), ~finite, converged],
                            [EMStatus.NAN_LOG_LIKELIHOOD, EMStatus.IMPOSSIBLE_OBSERVATIONS,
                             EMStatus.CONVERGED], EMStatus.MAX_ITERATIONS)
        # a non-finite ℓ_i keeps (current, previous): the last finite model is ``previous``
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        return (iteration + 1, keep(_cast_like(updated, current), current),
                keep(current, previous), log_lik, objective, history.at[iteration].set(log_lik),
                status.astype(jnp.int32))

    history = jnp.full((max_iter,), jnp.nan, log_lik_dtype)
    minus_infinity = jnp.full((), -jnp.inf, log_lik_dtype)
    init = (jnp.zeros((), jnp.int32), model, model, minus_infinity, minus_infinity, history,
            jnp.asarray(EMStatus.MAX_ITERATIONS, jnp.int32))
    num_iterations, current, previous, _, _, history, status = lax.while_loop(
        _continue, _iteration, init)
    stopped_early = (status == EMStatus.NAN_LOG_LIKELIHOOD) | (
        status == EMStatus.IMPOSSIBLE_OBSERVATIONS)
    fitted = jax.tree.map(lambda p, c: jnp.where(stopped_early, p, c), previous, current)
    final = total_log_likelihood(fitted, observations, lengths).astype(log_lik_dtype)
    return EMResult(fitted, final, history, num_iterations, status == EMStatus.CONVERGED, status)


_run_em = jax.jit(run_em, static_argnames=("max_iter", "update"))


def fit_from(model: HMM, observations: Array, lengths: Array | None = None, *,
             max_iter: int = 100, tol: float = 1e-4, pseudo_count: float = 0.0,
             initial_pseudo_counts: Any = None, transition_pseudo_counts: Any = None,
             emission_hyperparameters: Optional[Mapping[str, Any]] = None,
             update: Iterable[str] = PARTS) -> EMResult:
    """EM from the start ``model``: ``EMResult(model, log_likelihood, history, num_iterations,
    converged, status)``, ``log_likelihood`` being the score of the returned model itself.

    Arguments as ``baum_welch`` (hmmlearn's concatenated ``(X, lengths)`` is accepted too:
    ``observations`` (N,) + event shape, ``lengths`` (S,) summing to N), plus the per-entry
    pseudo-counts ``initial_pseudo_counts`` (K,) and ``transition_pseudo_counts`` (K, K)
    (each None: ``pseudo_count`` everywhere) and ``update`` (module docstring).  ``status`` is an ``EMStatus``: ``converged`` is True only
    for ``CONVERGED``; a NaN or −inf log-likelihood stops the loop (module docstring).
    """
    model = as_array_model(model)
    observations, lengths = _em_options.as_arrays(observations, lengths)
    check(model)
    event_ndim = model.emissions.event_ndim
    if np.ndim(observations) == 1 + event_ndim and np.ndim(lengths) == 1:
        observations, lengths = pad_sequences(observations, lengths)  # hmmlearn's layout
    check(model, observations, lengths)
    checks.rank("observations", observations, (1 + event_ndim, 2 + event_ndim),
                "(B, T) + event shape, or (T,) + event shape for one sequence")
    options = _em_options.checked(model.emissions, model.num_states, max_iter=max_iter, tol=tol,
                                  pseudo_count=pseudo_count,
                                  initial_pseudo_counts=initial_pseudo_counts,
                                  transition_pseudo_counts=transition_pseudo_counts,
                                  emission_hyperparameters=emission_hyperparameters,
                                  update=update)
    return _run_em(model, observations, lengths, **options)


def baum_welch_with_history(model: HMM, observations: Array, lengths: Array | None = None, *,
                            max_iter: int = 100, tol: float = 1e-4, pseudo_count: float = 0.0,
                            emission_hyperparameters: Optional[Mapping[str, Any]] = None,
                            **options: Any) -> BaumWelchResult:
    """``baum_welch`` returning ``BaumWelchResult(model, history, num_iterations, converged)``.

    ``history`` has ``max_iter`` entries: ``history[i]`` is the total log-likelihood
    ``Σ_b log p(x_b)`` of the model at the start of iteration i; entries after the last
    iteration are NaN.  ``converged`` is True when the ``tol`` criterion stopped the loop
    (False when a NaN or −inf log-likelihood did: ``fit_from`` says which).  ``options``:
    ``initial_pseudo_counts``, ``transition_pseudo_counts``, ``update`` (``fit_from``).

    The arguments are checked eagerly (``check``), then one compiled function runs the loop;
    a second call with new data of the same shapes, dtypes and ``max_iter`` reuses it.
    """
    result = fit_from(model, observations, lengths, max_iter=max_iter, tol=tol,
                      pseudo_count=pseudo_count,
                      emission_hyperparameters=emission_hyperparameters, **options)
    return BaumWelchResult(result.model, result.history, result.num_iterations,
                           result.converged)


def baum_welch(model: HMM, observations: Array, lengths: Array | None = None, *,
               max_iter: int = 100, tol: float = 1e-4, pseudo_count: float = 0.0,
               emission_hyperparameters: Optional[Mapping[str, Any]] = None,
               **options: Any) -> HMM:
    """Fit ``model`` to a batch ``(B, T)`` / ``(B, T, D)`` of sequences by EM; the fitted HMM.

    ``lengths`` (B,) gives each sequence's length (padding beyond it is ignored); a single
    sequence ``(T,)`` / ``(T, D)`` is accepted as a batch of one.  EM stops after ``max_iter``
    iterations or when the objective ``ℓ + log p(θ)`` (the total log-likelihood ℓ when there
    is no prior; ``log_prior``, module docstring) improves by less than ``tol``.
    ``pseudo_count`` is the Dirichlet α added to the expected counts of π and A;
    ``emission_hyperparameters`` the keyword arguments of the emission family's ``m_step``
    (e.g. ``{"min_covar": 1e-2}`` for ``Gaussian``).  Without priors the log-likelihood never
    decreases (up to rounding); with them ``ℓ + log p(θ)`` never does, ℓ may.  ``options``:
    ``initial_pseudo_counts``, ``transition_pseudo_counts``, ``update`` (``fit_from``).
    ``baum_welch_with_history`` also returns the log-likelihood of every iteration, their
    number and the convergence flag; ``fit_from`` the returned model's own log-likelihood
    and why the loop stopped.
    """
    return fit_from(model, observations, lengths, max_iter=max_iter, tol=tol,
                    pseudo_count=pseudo_count,
                    emission_hyperparameters=emission_hyperparameters, **options).model
