"""The emission contract: everything inference and learning ask of an emission family.

An emission model holds the per-state observation distributions
``b_k(x) = p(x_t = x | z_t = k)`` of a K-state HMM.  Inference meets it only through the
``(T, K)`` matrix of log-likelihoods (any such matrix, e.g. a neural network's output, feeds
the low-level functions too); Baum–Welch through expected sufficient statistics and an
M-step; sampling through ``sample``.

One family is one module of this package (``categorical.py``, ``gaussian.py``,
``diagonal_gaussian.py``), re-exported by ``functional_dl.hmm``: a NamedTuple of parameter
arrays (hence a pytree that jits, vmaps, differentiates and checkpoints) whose methods
implement ``EmissionModel``.  Its hyperparameters (priors, floors) are keyword-only
arguments of its ``m_step`` with their defaults, checked by its ``check_hyperparameters``;
``baum_welch(..., emission_hyperparameters={...})`` passes them through.  The checks a family
needs are in ``functional_dl.checks`` and ``functional_dl.hmm.validation``.

Two members serve only fitting from scratch and model selection (``hmm.fit``,
``hmm.num_parameters``, ``hmm.aic``, ``hmm.bic``): ``num_free_parameters`` and the classmethod
``initialize``.  Inference and Baum–Welch do not need them, so ``check_emission_model``
does not ask for them; ``check_fittable_family`` does.

One member is optional, ``log_prior`` (``PRIOR_MEMBERS``): the log density of the prior whose
MAP estimate ``m_step`` computes.  With priors EM increases ``ℓ + log p(θ)``, not the
log-likelihood ℓ alone, and Baum–Welch judges convergence on that sum; a family without
``log_prior`` is taken to have a flat prior (its ``m_step`` maximum likelihood), so
``check_emission_model`` does not ask for it.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional, Protocol, TypeVar

import numpy as np

from functional_dl._types import Array, PRNGKey, PyTree

__all__ = ["EmissionModel", "EMISSION_MODEL_MEMBERS", "FITTING_MEMBERS", "PRIOR_MEMBERS",
           "missing_members", "check_emission_model", "check_fittable_family"]

Self = TypeVar("Self", bound="EmissionModel")


class EmissionModel(Protocol):
    """The members an emission family implements (a NamedTuple of arrays, see the module).

    Observations are ``(N,) + event_shape`` with one leading axis of N steps: one sequence,
    or the B·T steps of a batch flattened (Baum–Welch does that to evaluate the emissions
    once for the whole batch).  Padded steps never reach a family: inference replaces them
    with a valid observation and gives them weight 0.
    """

    event_ndim: ClassVar[int]
    """Dimensions of one observation: 0 for a symbol or a count, 1 for a vector."""

    @property
    def num_states(self) -> int:
        """K, the number of hidden states the parameters describe."""

    def log_likelihoods(self, observations: Array) -> Array:
        """``(N, K)``: ``[t, k] = log b_k(x_t)``; ``-inf`` for an impossible observation."""

    def sufficient_stats(self, observations: Array, weights: Array) -> PyTree:
        """Expected statistics ``Σ_t weights[t, k] · s(x_t)`` per state, a pytree of arrays.

        ``weights`` is ``(N, K)`` (posterior marginals γ, 0 at padded steps).  The result is
        additive: the statistics of two batches add up leaf by leaf.
        """

    def m_step(self: Self, stats: PyTree, **hyperparameters: Any) -> Self:
        """The same family maximising the expected complete-data log-likelihood (or its MAP).

        ``hyperparameters`` are the family's keyword-only arguments with defaults; they are
        traced under ``jit``/``vmap``, so they enter only array arithmetic.  A state whose
        expected count is below ``_numerics.min_mass`` keeps its previous parameters.
        """

    def log_prior(self, **hyperparameters: Any) -> Array:
        """``log p(θ)`` up to an additive constant independent of θ, a scalar (optional member).

        The conjugate prior whose MAP estimate ``m_step`` computes with the same keyword
        arguments: ``m_step(stats, **h)`` maximises ``Σ_t Σ_k γ_t(k) log b_k(x_t) +
        log_prior(**h)``; 0 at the maximum-likelihood settings (the defaults).  Traced like
        the M-step's hyperparameters.
        """

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """One observation per given state: ``(N,) + event_shape`` for ``states`` ``(N,)``."""

    def check(self, observations: Any = None, valid: Optional[np.ndarray] = None) -> None:
        """Eager validation of the parameters and, if given, of the observations.

        ``observations`` is ``(T,) + event_shape`` or ``(B, T) + event_shape``; only positions
        where ``valid`` is True are checked (None: all).  ValueError/TypeError naming the
        argument; shapes always, values only on concrete arrays (``functional_dl.checks``).
        """

    def check_hyperparameters(self, **hyperparameters: Any) -> None:
        """Eager validation of ``m_step``'s keyword arguments (skipped for traced values)."""

    # -- needed only by fitting from scratch and model selection (FITTING_MEMBERS)

    @property
    def num_free_parameters(self) -> int:
        """The number of free scalar parameters of the emission part (for AIC and BIC).

        Constrained parameters count once per degree of freedom: a probability row of V
        entries has V − 1, a symmetric D × D covariance D(D + 1)/2 (hmmlearn's
        ``_get_n_fit_scalars_per_param``).
        """

    @classmethod
    def initialize(cls: type[Self], key: PRNGKey, observations: Array, weights: Array,
                   num_states: int, **options: Any) -> Self:
        """A random starting point for EM drawn from the data (hmmlearn-like).

        ``observations`` is ``(N,) + event_shape``: every step of every sequence, flattened;
        ``weights`` ``(N,)`` is 1 for a real step and 0 for padding (a padded step must not
        influence the result).  Only ``key`` may be traced (``hmm.fit`` vmaps over restarts);
        ``observations`` and ``weights`` are concrete, so sizes read from the data (the
        number of symbols, say) may be computed eagerly.  ``options`` are the family's own
        keyword arguments, passed by ``hmm.fit(..., initialization_options={...})``.
        """


def _protocol_members(protocol: type) -> tuple[str, ...]:
    """The public names a protocol declares, in the order it declares them."""
    declared = [name for name, value in vars(protocol).items()
                if not name.startswith("_") and (callable(value) or isinstance(value, property))]
    return tuple(vars(protocol).get("__annotations__", {})) + tuple(declared)


FITTING_MEMBERS = ("num_free_parameters", "initialize")
PRIOR_MEMBERS = ("log_prior",)
EMISSION_MODEL_MEMBERS = tuple(name for name in _protocol_members(EmissionModel)
                               if name not in FITTING_MEMBERS + PRIOR_MEMBERS)
_METHODS = frozenset(name for name in EMISSION_MODEL_MEMBERS
                     if callable(vars(EmissionModel).get(name)))


def missing_members(candidate: Any) -> list[str]:
    """The members of ``EmissionModel`` that ``candidate`` lacks (or has but cannot call)."""
    missing = []
    for name in EMISSION_MODEL_MEMBERS:
        try:
            value = getattr(candidate, name)
        except AttributeError:
            missing.append(name)
            continue
        if name in _METHODS and not callable(value):
            missing.append(name)
    return missing


def check_emission_model(name: str, candidate: Any) -> None:
    """TypeError naming ``name`` and the members it lacks unless it implements ``EmissionModel``."""
    missing = missing_members(candidate)
    if missing:
        raise TypeError(f"{name} must be an emission model (functional_dl.hmm.EmissionModel); "
                        f"{type(candidate).__name__} lacks {', '.join(missing)}")


def check_fittable_family(name: str, family: Any) -> None:
    """TypeError naming ``name`` unless ``family`` is an emission family class that also has
    ``initialize`` and ``num_free_parameters`` (what ``hmm.fit`` needs)."""
    if not isinstance(family, type):
        raise TypeError(f"{name} must be an emission family class such as hmm.Gaussian or "
                        f"hmm.Categorical (not an instance), got {type(family).__name__}")
    lacking = [member for member in EMISSION_MODEL_MEMBERS + FITTING_MEMBERS
               if not hasattr(family, member)]
    if not callable(getattr(family, "initialize", None)) and "initialize" not in lacking:
        lacking.append("initialize")
    if lacking:
        raise TypeError(f"{name} must be an emission family implementing "
                        f"functional_dl.hmm.EmissionModel with its fitting members; "
                        f"{family.__name__} lacks {', '.join(lacking)}")
