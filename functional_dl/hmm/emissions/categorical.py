"""Categorical emissions over V symbols: ``b_k(v) = probs[k, v]``; observations are integers.

M-step (MAP under a symmetric Dirichlet(α + 1) prior on each row; α = 0 is maximum
likelihood, hmmlearn's default ``emissionprob_prior = 1``):

    probs[k, v] = (n_kv + α) / Σ_v' (n_kv' + α),    n_kv = Σ_{t: x_t = v} γ_t(k).
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import validation
from functional_dl.hmm._numerics import (finite_or_zero, inverse_cdf, min_mass, safe_divide,
                                         safe_log)


def _lookup(table: Array, indices: Array) -> Array:
    """``table[indices]``, with ``table`` computed once rather than once per gathered element.

    XLA on CPU fuses elementwise producers (here the K·V logarithms) into the gather, which
    then evaluates them again for each of the T·K gathered entries.  A second, reducing use
    of ``table`` makes XLA materialise it; the term it adds is exactly 0 (finite by
    construction), so values and gradients are unchanged.
    """
    anchor = finite_or_zero(jnp.max(table))
    return table[indices] + 0.0 * anchor


class CategoricalStats(NamedTuple):
    """``counts[k, v] = Σ_t w_tk [x_t = v]``."""
    counts: Array


class Categorical(NamedTuple):
    """Categorical emissions: ``probs`` (K, V), rows sum to 1; observations int (T,)."""
    probs: Array

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

    def m_step(self, stats: CategoricalStats, *, pseudo_count=0.0) -> Categorical:
        """``probs[k, v] = (n_kv + α) / Σ_v' (n_kv' + α)`` with ``α = pseudo_count`` (module)."""
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
        checks.rank("emissions.probs", self.probs, 2, "(K, V)")
        checks.probability_rows("emissions.probs", self.probs)
        if observations is not None:
            validation.symbol_observations(observations, valid, self.probs.shape[1])

    def check_hyperparameters(self, *, pseudo_count=0.0) -> None:
        """``pseudo_count`` a real ``>= 0``."""
        checks.non_negative("Categorical: pseudo_count", pseudo_count)
