"""Fitting HMMs from raw data: random starts, restarts in one program, model selection.

``fit(key, observations, lengths, num_states=K, emissions=Gaussian)`` draws ``num_restarts``
starting models, runs Baum–Welch (``learning.run_em``) from each of them under one ``jax.vmap``
inside one ``jit``, and returns the start that reached the highest log-likelihood.  A start
is hmmlearn's ``_init``: π and every row of A from a symmetric Dirichlet(1/K), the emissions
from the family's ``initialize`` (k-means means and the data covariance for Gaussians, random
rows for categorical emissions).

Input layouts (``observations``, ``lengths``), with E the family's event shape:

- padded: ``(B, T) + E`` with ``lengths`` (B,) or None (all T), as ``baum_welch``;
- one sequence: ``(T,) + E`` with ``lengths`` None or a scalar;
- hmmlearn's concatenated layout: ``(N,) + E`` holding S sequences one after another, with
  ``lengths`` (S,) summing to N (``pad_sequences`` turns it into the padded one).

Model selection, with hmmlearn's formulas (``BaseHMM.aic``/``bic``; log p the total
log-likelihood of the data under the model, ``score``; N the number of observed steps):

    p = (K − 1) + K (K − 1) + (the emissions' free parameters),
    AIC = −2 log p(x) + 2 p,    BIC = −2 log p(x) + p log N.

Structural zeros of π or A are counted as free (as hmmlearn does).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import _em_options, initialization
from functional_dl.hmm._layouts import as_batch, flat_steps, pad_sequences
from functional_dl.hmm.emissions import check_fittable_family
from functional_dl.hmm.emissions.gaussian import Gaussian
from functional_dl.hmm.learning import PARTS, EMResult, run_em, total_log_likelihood
from functional_dl.hmm.model import HMM, as_array_model, check

__all__ = ["FitResult", "fit", "random_starts", "pad_sequences", "score", "num_parameters",
           "aic", "bic"]

class FitResult(NamedTuple):
    """What ``fit`` returns: the best restart and, with a leading axis R, all of them."""
    model: HMM  # the restart with the highest final log-likelihood
    log_likelihood: Array  # scalar: Σ_b log p(x_b) under ``model`` itself
    best_restart: Array  # int scalar, its index in ``restarts``
    restarts: EMResult  # every field with a leading axis of num_restarts


def random_starts(key: PRNGKey, observations: Any, lengths: Any = None, *, num_states: int,
                  emissions: type = Gaussian, num_restarts: int = 10,
                  concentration: Any = None,
                  initialization_options: Optional[Mapping[str, Any]] = None) -> HMM:
    """The ``num_restarts`` starting models of ``fit`` (the same ``key`` gives the same ones),
    as one ``HMM`` whose leaves have a leading axis of ``num_restarts``.

    π and each row of A ~ Dirichlet(concentration), ``1 / num_states`` by default
    (hmmlearn); the emissions from ``emissions.initialize(key, steps, weights, num_states,
    **initialization_options)`` on every observed step.
    """
    checks.prng_key("key", key, what="drawing the starting models", single=True)
    num_states = checks.whole_number("num_states", num_states, minimum=1)
    num_restarts = checks.whole_number("num_restarts", num_restarts, minimum=1)
    check_fittable_family("emissions", emissions)
    batch, lengths = as_batch(observations, lengths, emissions.event_ndim)
    steps, weights = flat_steps(batch, lengths, emissions.event_ndim)
    num_observed = int(weights.sum())
    if num_states > num_observed:
        raise ValueError(f"num_states must be at most the number of observed steps, "
                         f"{num_observed}, got {num_states}")
    if concentration is None:
        concentration = 1.0 / num_states
    checks.positive("concentration", concentration)
    options = dict(initialization_options or {})
    dtype = checks.default_float_dtype()

    def _start(restart_key):
        """One starting model: Dirichlet π and A, the family's data-driven emissions."""
        rows_key, emissions_key = jax.random.split(restart_key)
        initial_probs, transition_matrix = initialization.dirichlet_rows(
            rows_key, num_states, concentration, dtype)
        return HMM(initial_probs, transition_matrix,
                   emissions.initialize(emissions_key, steps, weights, num_states, **options))

    return jax.vmap(_start)(jax.random.split(key, num_restarts))


@jax.jit
def _best(result: EMResult) -> FitResult:
    """The restart with the highest final log-likelihood (NaN counts as −inf; ties: first)."""
    scores = jnp.where(jnp.isnan(result.log_likelihood), -jnp.inf, result.log_likelihood)
    best = jnp.argmax(scores)
    model = jax.tree.map(lambda leaf: leaf[best], result.model)
    return FitResult(model, result.log_likelihood[best], best, result)


def _fit_restarts(starts: HMM, observations, lengths, tol, initial_pseudo_counts,
                  transition_pseudo_counts, emission_hyperparameters, *, max_iter: int,
                  update: frozenset) -> FitResult:
    """Every restart's EM under one ``vmap``, then the best: one compiled program."""
    def _one(start):
        return run_em(start, observations, lengths, tol, initial_pseudo_counts,
                      transition_pseudo_counts, emission_hyperparameters, max_iter=max_iter,
                      update=update)

    return _best(jax.vmap(_one)(starts))


_compiled_fit_restarts = jax.jit(_fit_restarts, static_argnames=("max_iter", "update"))


def fit(key: PRNGKey, observations: Any, lengths: Any = None, *, num_states: int,
        emissions: type = Gaussian, num_restarts: int = 10, max_iter: int = 100,
        tol: float = 1e-4, pseudo_count: Any = 0.0, initial_pseudo_counts: Any = None,
        transition_pseudo_counts: Any = None,
        emission_hyperparameters: Optional[Mapping[str, Any]] = None,
        update: Iterable[str] = PARTS, concentration: Any = None,
        initialization_options: Optional[Mapping[str, Any]] = None) -> FitResult:
    """Fit a ``num_states``-state HMM with ``emissions`` (a family class) from scratch.

    ``random_starts`` draws the starts from ``key``; Baum–Welch runs from each (the EM
    arguments as ``learning.fit_from``: ``max_iter``, ``tol``, the pseudo-counts,
    ``emission_hyperparameters``, ``update``), all restarts in one compiled program; the
    result is ``FitResult(model, log_likelihood, best_restart, restarts)``, ``log_likelihood``
    the score of the returned model itself.  ``observations`` and ``lengths`` in any layout
    of the module docstring (hmmlearn's ``(X, lengths)`` included).

    hmmlearn's ``GaussianHMM(n_components=K, covars_prior=0, init_params="").fit(X, lengths)``
    from a start of ``random_starts`` is ``fit_from`` from it with ``emission_hyperparameters=
    {"min_covar": m}``, m below the smallest covariance eigenvalue (tested to 1e-8); its own
    starts differ (scikit-learn's k-means with ``n_init=10``, NumPy's random numbers).
    """
    checks.prng_key("key", key, what="drawing the starting models", single=True)
    checks.whole_number("num_states", num_states, minimum=1)
    checks.whole_number("num_restarts", num_restarts, minimum=1)
    check_fittable_family("emissions", emissions)
    options = _em_options.checked(None, num_states, max_iter=max_iter, tol=tol,
                                  pseudo_count=pseudo_count,
                                  initial_pseudo_counts=initial_pseudo_counts,
                                  transition_pseudo_counts=transition_pseudo_counts,
                                  emission_hyperparameters=emission_hyperparameters,
                                  update=update)
    batch, lengths = as_batch(observations, lengths, emissions.event_ndim)
    starts = random_starts(key, batch, lengths, num_states=num_states, emissions=emissions,
                           num_restarts=num_restarts, concentration=concentration,
                           initialization_options=initialization_options)
    first = jax.tree.map(lambda leaf: leaf[0], starts)
    check(first, batch, lengths)
    options["emission_hyperparameters"] = _em_options.checked_emission_hyperparameters(
        first.emissions, emission_hyperparameters)
    return _compiled_fit_restarts(starts, batch, lengths, **options)


_compiled_score = jax.jit(total_log_likelihood)


def _checked_batch(model: HMM, observations: Any, lengths: Any) -> tuple[HMM, Any, Any]:
    model = as_array_model(model)
    check(model)
    batch, lengths = as_batch(observations, lengths, model.emissions.event_ndim)
    check(model, batch, lengths)
    return model, batch, lengths


def score(model: HMM, observations: Any, lengths: Any = None) -> Array:
    """``Σ_b log p(x_b)``, the total log-likelihood of the data (hmmlearn's ``score``)."""
    model, batch, lengths = _checked_batch(model, observations, lengths)
    return _compiled_score(model, batch, lengths)


def num_parameters(model: HMM) -> int:
    """``(K − 1) + K (K − 1) + model.emissions.num_free_parameters`` (module docstring)."""
    model = as_array_model(model)
    check(model)
    count = getattr(model.emissions, "num_free_parameters", None)
    if count is None:
        raise TypeError(f"model.emissions must have num_free_parameters to count parameters; "
                        f"{type(model.emissions).__name__} has none")
    num_states = model.num_states
    return (num_states - 1) + num_states * (num_states - 1) + int(count)


def _num_observed(lengths: Any, batch: Any) -> int:
    return int(np.prod(np.shape(batch)[:2])) if lengths is None else int(np.sum(lengths))


def aic(model: HMM, observations: Any, lengths: Any = None) -> Array:
    """``−2 log p(x) + 2 p`` (Akaike; hmmlearn's ``aic``; lower is better)."""
    model, batch, lengths = _checked_batch(model, observations, lengths)
    return -2.0 * _compiled_score(model, batch, lengths) + 2.0 * num_parameters(model)


def bic(model: HMM, observations: Any, lengths: Any = None) -> Array:
    """``−2 log p(x) + p log N``, N the number of observed steps (Schwarz; hmmlearn's ``bic``)."""
    model, batch, lengths = _checked_batch(model, observations, lengths)
    num_observed = _num_observed(lengths, batch)
    return (-2.0 * _compiled_score(model, batch, lengths)
            + num_parameters(model) * float(np.log(num_observed)))
