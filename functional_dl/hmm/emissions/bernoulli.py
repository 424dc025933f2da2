"""Bernoulli emissions over D independent binary features: ``b_k(x) = Π_d p_kd^x_d (1 − p_kd)^(1 − x_d)``.

    log b_k(x) = Σ_d [x_d log p_kd + (1 − x_d) log(1 − p_kd)]

M-step (MAP under a symmetric Beta(α + 1, α + 1) prior on each probability; α = 0 is
maximum likelihood; α may be one number or an array broadcastable to (K, D)):

    p_kd = (Σ_t γ_t(k) x_td + α) / (N_k + 2α),    N_k = Σ_t γ_t(k).

hmmlearn has no Bernoulli HMM; dynamax's ``BernoulliHMM`` is this model (its Beta(1, 1)
default prior is α = 0 here).  A probability of 0 or 1 makes the other value impossible
(``-inf``).
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlog1py, xlogy

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm._numerics import min_mass, safe_divide
from functional_dl.hmm.emissions import _support


class BernoulliStats(NamedTuple):
    """``weight_sums[k] = Σ_t w_tk``, ``weighted_sums[k, d] = Σ_t w_tk x_td``."""
    weight_sums: Array
    weighted_sums: Array


class Bernoulli(NamedTuple):
    """Bernoulli emissions: ``probs`` (K, D) in [0, 1]; observations binary (T, D)."""
    probs: Array

    event_ndim = 1

    @property
    def num_states(self) -> int:
        return self.probs.shape[0]

    @property
    def num_free_parameters(self) -> int:
        """K·D probabilities."""
        return int(np.prod(np.shape(self.probs)[-2:]))

    def log_likelihoods(self, observations: Array) -> Array:
        """``Σ_d [x_d log p_kd + (1 − x_d) log(1 − p_kd)]`` (a term with weight 0 is 0)."""
        chex.assert_rank(observations, 2)
        x = observations.astype(self.probs.dtype)[:, None, :]
        probs = self.probs[None, :, :]
        return jnp.sum(xlogy(x, probs) + xlog1py(1.0 - x, -probs), axis=-1)

    def sufficient_stats(self, observations: Array, weights: Array) -> BernoulliStats:
        """Expected counts of steps and of ones, per state and feature."""
        chex.assert_shape(weights, (observations.shape[0], self.num_states))
        return BernoulliStats(jnp.sum(weights, axis=0),
                              weights.T @ observations.astype(weights.dtype))

    def m_step(self, stats: BernoulliStats, *, pseudo_count=0.0) -> Bernoulli:
        """``p_kd = (Σ γ x + α) / (N_k + 2α)`` with ``α = pseudo_count`` (module)."""
        totals = stats.weight_sums
        has_mass = (totals > min_mass(totals.dtype))[:, None]
        pseudo_count = jnp.broadcast_to(pseudo_count, stats.weighted_sums.shape)
        probs = safe_divide(stats.weighted_sums + pseudo_count,
                            totals[:, None] + 2.0 * pseudo_count)
        return Bernoulli(jnp.where(has_mass, jnp.clip(probs, 0.0, 1.0), self.probs))

    def log_prior(self, *, pseudo_count=0.0) -> Array:
        """``Σ_kd α [log p_kd + log(1 − p_kd)]``, independent Beta(α + 1, α + 1) priors up to a
        constant: the prior whose MAP ``m_step`` computes (0 at α = 0)."""
        return _support.beta_log_prior(self.probs, pseudo_count)

    def sample(self, key: PRNGKey, states: Array) -> Array:
        """``x_td ~ Bernoulli(p_{z_t} d)``, int32 zeros and ones ``(N, D)``."""
        return jax.random.bernoulli(key, self.probs[states]).astype(jnp.int32)

    def check(self, observations=None, valid: np.ndarray | None = None) -> None:
        """``probs`` (K, D) in [0, 1]; observations 0 or 1 (boolean, integer or float)."""
        checks.rank("emissions.probs", self.probs, 2, "(K, D)")
        values = checks.concrete_values(self.probs)
        if values is not None and not np.all((values[0] >= 0) & (values[0] <= 1)):
            raise ValueError(f"emissions.probs must be probabilities in [0, 1], got "
                             f"{np.min(values[0]):.6g}..{np.max(values[0]):.6g}")
        if observations is not None:
            _support.binary_observations(observations, valid, self.probs.shape[1],
                                         source="emissions.probs")

    def check_hyperparameters(self, *, pseudo_count=0.0) -> None:
        """``pseudo_count`` a real ``>= 0``, or an array of them broadcastable to (K, D)."""
        _support.check_prior("Bernoulli: pseudo_count", pseudo_count, np.shape(self.probs))

    @classmethod
    def initialize(cls, key: PRNGKey, observations, weights, num_states: int) -> Bernoulli:
        """The data's frequencies of ones, perturbed on the logit scale.

        ``logit p_kd = logit f_d + ε_kd`` with ``f_d`` the weighted frequency clipped to
        [0.01, 0.99] and ``ε_kd ~ N(0, 0.5²)``: every state starts near the data, none
        certain of a value.
        """
        x, w, num_states = _support.initialization_data("Bernoulli", observations, weights,
                                                        num_states, 1)
        _support.binary_observations(x, w > 0, x.shape[1], source="observations")
        dtype = _support.float_dtype_of(observations)
        frequencies = np.clip(w @ x / w.sum(), 0.01, 0.99)
        logits = np.broadcast_to(np.log(frequencies) - np.log1p(-frequencies),
                                 (num_states, x.shape[1]))
        noise = 0.5 * jax.random.normal(key, logits.shape, dtype)
        return cls(jax.nn.sigmoid(jnp.asarray(logits, dtype) + noise))
