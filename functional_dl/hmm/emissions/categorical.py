"""Categorical emissions over V symbols: ``b_k(v) = probs[k, v]``; observations are integers.

M-step (MAP under a symmetric Dirichlet(α + 1) prior on each row; α = 0 is maximum
likelihood, hmmlearn's default ``emissionprob_prior = 1``):

    probs[k, v] = (n_kv + α) / Σ_v' (n_kv' + α),    n_kv = Σ_{t: x_t = v} γ_t(k).

α may be one number or per entry (an array broadcastable to (K, V): a row per state, a
column per symbol); a 0 keeps a structural zero of ``probs``.

Fitting from scratch (``initialize``): each row uniform random numbers normalised to sum to 1
(hmmlearn's ``CategoricalHMM._init``); V is the largest observed symbol + 1 unless
``num_symbols`` is given.  Free parameters: K (V − 1).
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
from functional_dl.hmm.emissions import _support


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

    @property
    def num_free_parameters(self) -> int:
        """``K (V − 1)``: each row of ``probs`` sums to 1."""
        num_states, num_symbols = self.probs.shape
        return num_states * (num_symbols - 1)

    @classmethod
    def initialize(cls, key: PRNGKey, observations: Array, weights: Array, num_states: int, *,
                   num_symbols: int | None = None) -> Categorical:
        """Rows of uniform random numbers, normalised (module); V = max symbol + 1 by default."""
        if num_symbols is None:
            symbols = np.asarray(observations)[np.asarray(weights) > 0]
            num_symbols = int(symbols.max()) + 1 if symbols.size else 1
        num_symbols = checks.whole_number("Categorical: num_symbols", num_symbols, minimum=1)
        dtype = checks.default_float_dtype()
        draws = jax.random.uniform(key, (num_states, num_symbols), dtype)
        return cls(draws / jnp.sum(draws, axis=1, keepdims=True))

    def m_step(self, stats: CategoricalStats, *, pseudo_count=0.0) -> Categorical:
        """``probs[k, v] = (n_kv + α) / Σ_v' (n_kv' + α)`` with ``α = pseudo_count`` (module)."""
        counts = stats.counts + jnp.broadcast_to(pseudo_count, stats.counts.shape)
        totals = jnp.sum(counts, axis=1, keepdims=True)
        has_mass = totals > min_mass(counts.dtype)
        return Categorical(jnp.where(has_mass, safe_divide(counts, totals), self.probs))

    def log_prior(self, *, pseudo_count=0.0) -> Array:
        """``Σ_kv α_kv log probs[k, v]``, a Dirichlet(α + 1) on each row up to a constant: the
        prior whose MAP ``m_step`` computes (0 at α = 0)."""
        return _support.dirichlet_log_prior(self.probs, pseudo_count)

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
        """``pseudo_count`` a real ``>= 0``, or an array of them broadcastable to (K, V)."""
        if np.ndim(pseudo_count) == 0:
            checks.non_negative("Categorical: pseudo_count", pseudo_count)
            return
        name, shape = "Categorical: pseudo_count", np.shape(self.probs)
        try:
            np.broadcast_shapes(np.shape(pseudo_count), shape)
        except ValueError:
            raise ValueError(f"{name} must be a number or an array broadcastable to (K, V) = "
                             f"{shape}, got shape {np.shape(pseudo_count)}") from None
        checks.real_dtype(name, pseudo_count)
        values = checks.concrete_values(pseudo_count)
        if values is not None and not np.all(np.isfinite(values[0]) & (values[0] >= 0)):
            raise ValueError(f"{name} must be finite and >= 0 entry by entry, got minimum "
                             f"{np.min(values[0]):.6g}")
