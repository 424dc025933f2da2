"""Small numerical helpers shared by the HMM modules (no NaN from zeros, padding masks).

``safe_log`` and ``normalize`` use the double-``where`` pattern: the unselected branch is fed
a harmless value, so neither the value nor the gradient of a masked entry can be NaN.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

from functional_dl._types import Array


def safe_log(x: Array) -> Array:
    """``log x`` for ``x > 0`` and ``-inf`` for ``x == 0``; the gradient at ``x == 0`` is 0.

    ``jnp.log(0)`` already gives ``-inf``, but its gradient there is ``g / 0``, which is NaN
    when the incoming cotangent ``g`` is 0 (the usual case for impossible entries).
    """
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def safe_divide(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator`` where ``denominator > 0`` and ``0`` elsewhere (no 0/0)."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def normalize(x: Array, axis: int = -1) -> tuple[Array, Array]:
    """``(x / sum(x), sum(x))`` along ``axis``; an all-zero slice stays all-zero (not NaN)."""
    total = jnp.sum(x, axis=axis, keepdims=True)
    return safe_divide(x, total), jnp.squeeze(total, axis)


def finite_or_zero(x: Array) -> Array:
    """``x`` where finite and 0 elsewhere: a shift that never produces ``inf - inf``."""
    return jnp.where(jnp.isfinite(x), x, 0.0)


def min_mass(dtype) -> float:
    """Expected count below which a state counts as having received no probability mass.

    Machine epsilon of the float type (about 1.2e-7 in float32, 2.2e-16 in float64): a
    re-estimate from less mass than that is dominated by rounding, so the M-step keeps the
    previous parameters of that state instead of dividing (almost) zero by (almost) zero.
    """
    return float(jnp.finfo(dtype).eps)


def valid_mask(num_steps: int, length: Array | None) -> Array:
    """Boolean ``(T,)`` mask, True at positions ``t < length`` (all True when ``length`` is None)."""
    if length is None:
        return jnp.ones((num_steps,), dtype=bool)
    return jnp.arange(num_steps) < length


def replace_padding(observations: Array, length: Array | None) -> Array:
    """Overwrite positions ``>= length`` with the first observation.

    Padding may hold anything (NaN, out-of-range symbols); after this, every emission model
    computes finite log-likelihoods there, so masked positions cannot leak NaN into values or
    gradients (``0 * NaN`` is NaN, and ``where`` does not protect gradients).
    """
    if length is None:
        return observations
    num_steps = observations.shape[0]
    keep = valid_mask(num_steps, length).reshape((num_steps,) + (1,) * (observations.ndim - 1))
    return jnp.where(keep, observations, observations[:1])


def stop_gradient_max(log_likelihoods: Array) -> Array:
    """Per-row max of a ``(T, K)`` matrix as a constant shift (``-inf`` rows shift by 0).

    The shift cancels exactly in the log-likelihood, so no gradient needs to flow through it.
    """
    return jax.lax.stop_gradient(finite_or_zero(jnp.max(log_likelihoods, axis=-1)))
