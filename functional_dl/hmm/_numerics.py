"""Small numerical helpers shared by the HMM modules (no NaN from zeros, padding masks).

``safe_log`` and ``normalize`` use the double-``where`` pattern: the unselected branch is fed
a harmless value, so neither the value nor the gradient of a masked entry can be NaN.
``weighted_row_sum`` and ``any_in_batch`` exist for speed inside the scans (see each).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

from functional_dl._types import Array

# Up to this many states, ``weighted_row_sum`` is written out as K fused multiply-adds.
UNROLLED_MAX_STATES = 12


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
    return x * safe_divide(1.0, total), jnp.squeeze(total, axis)


def finite_or_zero(x: Array) -> Array:
    """``x`` where finite and 0 elsewhere: a shift that never produces ``inf - inf``."""
    return jnp.where(jnp.isfinite(x), x, 0.0)


def safe_norm(dtype) -> float:
    """Smallest normaliser the fast loops divide by: √(smallest normal float).

    Above it ``c_t`` keeps full precision and the derivative of ``x / c_t`` (``1 / c_t²``) stays
    finite, so gradients are never ``0 · inf``; about 1e-19 in float32 and 1e-154 in float64.
    """
    return math.sqrt(float(jnp.finfo(dtype).tiny))


def last_axis_sum(values: Array) -> Array:
    """``sum`` over the last axis; for K ≤ 16 as K − 1 elementwise additions, which XLA's CPU
    backend runs several times faster than a reduction over a short minor axis (outside
    loops only: inside one, the slices do not fuse)."""
    if values.shape[-1] > 16:
        return jnp.sum(values, axis=-1)
    total = values[..., 0]
    for i in range(1, values.shape[-1]):
        total = total + values[..., i]
    return total


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


def scaled_likelihoods(log_likelihoods: Array, support: Array) -> tuple[Array, Array]:
    """``(exp(min(ll − m, 0)), m)`` with ``m = max_k ll[..., k]`` over the states in ``support``.

    Shifting by the best state that actually carries probability (rather than the best of
    all states) means the largest term of ``Σ_k p_k exp(ll_k − m)`` is ``p_k* · 1``: the sum can
    never underflow to 0 while the true value is positive (a sticky chain sitting in a state
    that explains x_t 200 nats worse than an unreachable one would otherwise get −inf in
    float32).  States outside the support carry weight 0, so clipping their factor at 1 (no
    overflow, no ``0 · inf``) changes no value; it only caps the gradient with respect to a
    probability that is exactly 0 when its state fits better than every reachable one (the
    true derivative there is astronomically large).  ``m`` is a constant for autodiff (it
    cancels exactly); rows with empty support or only ``−inf`` entries shift by 0.
    """
    candidates = jnp.where(support, log_likelihoods, -jnp.inf)
    shift = jax.lax.stop_gradient(finite_or_zero(jnp.max(candidates, axis=-1, keepdims=True)))
    excess = log_likelihoods - shift
    # where, not minimum: the gradient of minimum at the tie excess = 0 (the best state) is ½
    return jnp.exp(jnp.where(excess > 0, 0.0, excess)), jnp.squeeze(shift, -1)


def inverse_cdf(cumulative: Array, uniform: Array) -> Array:
    """The index j with ``F_{j−1} <= u·F_K < F_j`` (``F = cumulative``, the running sums of the
    probabilities along the last axis; ``u`` uniform on [0, 1)): a draw from the distribution.

    Scaling ``u`` by the total makes rows that sum to 1 only up to rounding safe, and an entry
    of probability 0 (``F_j = F_{j−1}``) can never be drawn.
    """
    target = uniform * cumulative[..., -1]
    return jnp.sum(cumulative <= target[..., None], axis=-1)


def state_index_dtype(num_states: int):
    """The narrowest signed integer dtype that holds the state indices 0..K−1 (and −1)."""
    for dtype in (jnp.int8, jnp.int16):
        if num_states <= jnp.iinfo(dtype).max:
            return dtype
    return jnp.int32


def weighted_row_sum(weights: Array, rows: Array) -> Array:
    """``Σ_i weights[i] · rows[i]``, i.e. ``weights @ rows`` for ``weights`` (K,), ``rows`` (K, N).

    Inside a ``lax.scan`` on CPU a small ``dot`` is a call into a matrix library whose fixed
    cost dominates the work; K ≤ ``UNROLLED_MAX_STATES``
    multiply-adds fuse with the surrounding elementwise work into one loop, also when the
    scan is ``vmap``ped.  Larger K use the ``dot``.
    """
    num_rows = rows.shape[0]
    if num_rows > UNROLLED_MAX_STATES:
        return weights @ rows
    total = weights[0] * rows[0]
    for i in range(1, num_rows):
        total = total + weights[i] * rows[i]
    return total


@custom_vmap
def any_in_batch(flag: Array) -> Array:
    """``flag`` (a boolean scalar); under ``jax.vmap``, True for every member if any is True.

    The scans run a cheap pass and fall back to a careful one only when the cheap pass
    reports a problem (``lax.cond``).  Under ``vmap`` a ``cond`` on a per-sequence flag becomes
    a ``select`` that runs both passes for every sequence; reducing the flag over the batch
    keeps a real ``cond``, so a batch pays for the careful pass only when some sequence needs
    it (then all sequences of that batch take it: their results agree with the cheap pass
    to rounding).  Works under nested ``vmap``, ``jit`` and (on stop-gradient inputs) ``grad``.
    """
    return flag


@any_in_batch.def_vmap
def _any_in_batch_vmap(axis_size, in_batched, flag):
    del axis_size
    (batched,) = in_batched
    # the reduction goes through any_in_batch again, so an enclosing vmap reduces its axis too
    return any_in_batch(jnp.any(flag) if batched else flag), False
