"""The log prior of MAP-EM: ``log p(θ)`` whose maximum ``learning.m_step`` computes.

With pseudo-counts α (``learning``'s conventions) and emission hyperparameters,

    log p(θ) = Σ_k α^π_k log π_k + Σ_ij α^A_ij log A_ij + emissions.log_prior(**hyperparameters)

up to a constant (Dirichlet(α + 1) rows); only the parts in ``update`` count (the others are
constants of the EM run).  Baum–Welch judges convergence on ``ℓ + log p(θ)``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import jax
import jax.numpy as jnp

from functional_dl._types import Array
from functional_dl.hmm import _em_options
from functional_dl.hmm.emissions._support import dirichlet_log_prior
from functional_dl.hmm.model import HMM

PARTS = _em_options.PARTS


def log_prior_terms(model: HMM, initial_pseudo_counts, transition_pseudo_counts,
                    emission_hyperparameters: Mapping[str, Any], update: frozenset) -> Array:
    """``log p(θ)`` of the parts in ``update`` (module docstring), from the EM loop's own
    (traced) options; a family without ``log_prior`` counts as flat (maximum likelihood)."""
    total = jnp.zeros((), jnp.result_type(model.initial_probs.dtype, jnp.float32))
    if "initial" in update:
        total += dirichlet_log_prior(model.initial_probs, initial_pseudo_counts)
    if "transition" in update:
        total += dirichlet_log_prior(model.transition_matrix, transition_pseudo_counts)
    emission_log_prior = getattr(model.emissions, "log_prior", None)
    if "emissions" in update and emission_log_prior is not None:
        total += emission_log_prior(**emission_hyperparameters)
    return total


_compiled_log_prior = jax.jit(log_prior_terms, static_argnames="update")


def log_prior(model: HMM, pseudo_count=0.0,
              emission_hyperparameters: Optional[Mapping[str, Any]] = None, *,
              update: Iterable[str] = PARTS) -> Array:
    """``log p(θ)`` up to a constant, the prior of ``m_step`` with the same arguments: ``Σ_k
    α^π_k log π_k + Σ_ij α^A_ij log A_ij + model.emissions.log_prior(**hyperparameters)``.

    EM with these priors increases ``ℓ + log p(θ)`` (``ℓ = e_step(model, x)[0]``); 0 at the
    maximum-likelihood settings.  Arguments as ``m_step``.
    """
    initial, transition = (pseudo_count if isinstance(pseudo_count, tuple)
                           else (pseudo_count, pseudo_count))
    return _compiled_log_prior(model, initial, transition, emission_hyperparameters or {},
                               update=_em_options.checked_update(update))
