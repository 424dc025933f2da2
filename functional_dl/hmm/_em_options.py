"""The eager checks and conversions of the EM loop's options, shared by ``learning.fit_from``
and ``fitting.fit``.

Concrete numbers become NumPy float64 (cast to the model's dtype inside the compiled loop):
one compilation serves ints, floats and lists alike, and building them costs no dispatch.
Traced values (a ``jax.vmap`` over ``pseudo_count`` or ``tol``) pass through untouched; their
values are not checked.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable, Mapping, Optional

import jax
import numpy as np

from functional_dl import checks

PARTS = frozenset({"initial", "transition", "emissions"})


def _traceable(name: str, value: Any) -> Any:
    """A NumPy float64 array for a concrete value (number, array or list), a tracer as it is."""
    if isinstance(value, jax.Array):  # a tracer, or an array already on the device
        return value
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a real number or an array of them, got "
                        f"{type(value).__name__}")
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number or an array of them, got "
                        f"{checks.describe(value)}") from None
    return array


def _pseudo_counts(name: str, value: Any, shape: tuple[int, ...]) -> Any:
    """A number or an array of ``shape`` of finite, non-negative pseudo-counts."""
    value = _traceable(name, value)
    if np.shape(value) not in ((), shape):
        raise ValueError(f"{name} must be a number or an array of shape {shape}, "
                         f"got shape {np.shape(value)}")
    values = checks.concrete_values(value)
    if values is not None and not np.all(np.isfinite(values[0]) & (values[0] >= 0)):
        raise ValueError(f"{name} must be finite and >= 0 entry by entry, got minimum "
                         f"{np.min(values[0]):.6g}")
    return value


def checked_update(update: Any) -> frozenset:
    """``update`` as a frozenset of part names (a string is one name), ValueError otherwise."""
    if isinstance(update, str):
        update = (update,)
    try:
        parts = frozenset(update)
    except TypeError:
        raise TypeError(f"update must be a set of part names from {sorted(PARTS)}, got "
                        f"{type(update).__name__}") from None
    unknown = sorted(map(repr, parts - PARTS))
    if unknown:
        raise ValueError(f"update must name parts among {sorted(PARTS)} (hmmlearn's params="
                         f"'st' is update={{'initial', 'transition'}}), got {', '.join(unknown)}")
    return parts


def _keyword_names(function) -> Optional[frozenset]:
    """The keyword-only parameters of ``function``; None when it takes ``**kwargs``."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def checked_emission_hyperparameters(emissions, hyperparameters) -> dict:
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
    converted = {name: _traceable(f"emission_hyperparameters[{name!r}]", value)
                 for name, value in hyperparameters.items()}
    emissions.check_hyperparameters(**converted)
    return converted


def checked(emissions, num_states: int, *, max_iter, tol, pseudo_count, initial_pseudo_counts,
            transition_pseudo_counts, emission_hyperparameters: Any,
            update: Iterable[str]) -> dict:
    """The keyword arguments of ``learning.run_em``, checked (names in every message);
    ``emissions=None`` checks everything but the emission hyperparameters (returned as given)."""
    max_iter = checks.whole_number("max_iter", max_iter, minimum=1)
    tol = _traceable("tol", tol)
    checks.non_negative("tol", tol)
    pseudo_count = _traceable("pseudo_count", pseudo_count)
    checks.non_negative("pseudo_count", pseudo_count)
    initial = _pseudo_counts("initial_pseudo_counts",
                             pseudo_count if initial_pseudo_counts is None
                             else initial_pseudo_counts, (num_states,))
    transition = _pseudo_counts("transition_pseudo_counts",
                                pseudo_count if transition_pseudo_counts is None
                                else transition_pseudo_counts, (num_states, num_states))
    return dict(tol=tol, initial_pseudo_counts=initial, transition_pseudo_counts=transition,
                emission_hyperparameters=emission_hyperparameters if emissions is None
                else checked_emission_hyperparameters(emissions, emission_hyperparameters),
                max_iter=max_iter, update=checked_update(update))


def as_arrays(observations: Any, lengths: Any) -> tuple[Any, Any]:
    """Lists (and other non-arrays) of observations and lengths as NumPy arrays."""
    if not hasattr(observations, "dtype"):
        observations = np.asarray(observations)
    if lengths is not None and not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    return observations, lengths
