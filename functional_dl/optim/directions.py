"""Ascent directions: the per-coordinate part of each optimizer, before the step size.

Each transform maps gradients ``g`` to a direction ``d`` of the same sign (``θ`` would
*increase* along ``d``); :func:`~functional_dl.optim.transforms.scale_by_learning_rate`
turns it into a descent step ``u = −η_t d``.  So ``adam(η) = chain(scale_by_adam(),
scale_by_learning_rate(η))`` and every alias in :mod:`functional_dl.optim.aliases` is such
a chain.  All are built with :func:`~functional_dl.optim.leafwise.leafwise`: float32
arithmetic at least (float64 for float64 leaves), slots stored in the parameter's dtype
unless a ``*_dtype`` option says otherwise, sharding of the parameters kept.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PyTree
from functional_dl.optim.base import Optimizer
from functional_dl.optim.leafwise import leafwise

__all__ = ["ScaleByAdamState", "ScaleByAmsgradState", "ScaleByRmsState", "ScaleByStddevState",
           "ScaleByAdagradState", "TraceState", "DampedTraceState", "scale_by_adam",
           "scale_by_rms", "scale_by_stddev", "scale_by_adagrad", "trace", "one_minus_power"]


def one_minus_power(beta: Any, step: Array) -> Array:
    """``1 − β^t`` as ``−expm1(t·log β)``.

    For β near 1 and small t, ``β^t`` is close to 1 and ``1 − β^t`` computed directly in
    float32 loses most digits (β = 0.999 rounds to 0.99900001, an error of 1e-5 relative to
    ``1 − β``); ``log β`` is taken in double precision for a Python β.
    """
    if isinstance(beta, (int, float)):
        if beta == 0:
            return jnp.ones_like(step)
        return -jnp.expm1(step * math.log(beta))
    return -jnp.expm1(step * jnp.log(jnp.asarray(beta).astype(step.dtype)))


def root_plus(v: Array, eps_root: Any, correction: Array) -> Array:
    """``√(v + ε_root·c)``; just ``√v`` for a concrete ``ε_root = 0`` (a traced one, e.g.
    from ``inject_hyperparams``, always takes the sum: it cannot be tested in Python)."""
    if checks.is_concrete(eps_root) and not eps_root:
        return jnp.sqrt(v)
    return jnp.sqrt(v + eps_root * correction)


def _decay_rate(owner: str, name: str, value: Any) -> None:
    checks.real_in(f"{owner}: {name}", value, 0.0, 1.0, high_closed=False)


def _eps_root(denominator_square: Array, eps: Any, eps_in_sqrt: bool) -> Array:
    """``√(s + ε)`` (``eps_in_sqrt``) or ``√s + ε``."""
    if eps_in_sqrt:
        return jnp.sqrt(denominator_square + eps)
    return jnp.sqrt(denominator_square) + eps


class ScaleByAdamState(NamedTuple):
    """``count``: int32 updates made; ``mu``: first moment ``m``; ``nu``: second ``v``."""

    count: Array
    mu: PyTree
    nu: PyTree


class ScaleByAmsgradState(NamedTuple):
    """``scale_by_adam(amsgrad=True)``'s state: ``nu_max`` is ``max_{s<=t} v_s``."""

    count: Array
    mu: PyTree
    nu: PyTree
    nu_max: PyTree


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  eps_root: float = 0.0, *, mu_dtype: Any = None,
                  nu_dtype: Any = None, amsgrad: bool = False) -> Optimizer:
    """Adam's direction (Kingma & Ba 2015, Algorithm 1), with ``m_0 = v_0 = 0``::

        m_t = β₁ m_{t-1} + (1 − β₁) g_t,      v_t = β₂ v_{t-1} + (1 − β₂) g_t²
        d_t = m̂_t / (√(v̂_t + ε_root) + ε),   m̂_t = m_t / (1 − β₁^t),  v̂_t = v_t / (1 − β₂^t)

    computed as ``(m / c₁) / (√(v + ε_root c₂) · c₂^{−½} + ε)`` with ``c = 1 − β^t`` formed as
    ``−expm1(t log β)`` (:func:`one_minus_power`), one root and one division per entry.
    optax's ``scale_by_adam(b1, b2, eps, eps_root)`` is the same direction.

    AMSGrad (Reddi, Kale & Kumar 2018), ``amsgrad=True``, keeps ``v^max_t = max(v^max_{t-1},
    v_t)`` of the *raw* second moment and bias-corrects it with the current step::

        d_t = m̂_t / (√(v^max_t / (1 − β₂^t) + ε_root) + ε)

    as ``torch.optim.Adam(amsgrad=True)`` does (``adam(lr, amsgrad=True)`` gives its
    numbers).  ``optax.scale_by_amsgrad`` takes the maximum of the *corrected* ``v̂_s``
    instead.  The two agree while ``v̂_t`` never decreases; once it has, optax's
    denominator holds the largest ``v̂_s = v_s / (1 − β₂^s)`` and torch's divides the
    largest ``v_s`` by the current, larger ``1 − β₂^t``: torch's (and this) step is never
    the smaller of the two.  The state is then :class:`ScaleByAmsgradState` (``nu_max``
    stored in ``nu_dtype``).

    Args:
      b1, b2: ``β₁, β₂`` in ``[0, 1)``.
      eps: ``ε > 0``, added outside the root (0 would compute 0/0 where every gradient so
        far was 0).
      eps_root: ``ε_root >= 0``, added inside the root (optax's ``eps_root``).
      mu_dtype, nu_dtype: stored dtypes of ``m`` and ``v`` (e.g. ``jnp.bfloat16`` to halve
        the state); the arithmetic still runs in float32 at least.
      amsgrad: keep the running maximum of ``v`` (AMSGrad).
    """
    owner = "scale_by_adam"
    _decay_rate(owner, "b1", b1)
    _decay_rate(owner, "b2", b2)
    checks.positive(f"{owner}: eps", eps)
    checks.non_negative(f"{owner}: eps_root", eps_root)
    amsgrad = checks.boolean(f"{owner}: amsgrad", amsgrad)

    def direction(m, v, step):
        second_correction = one_minus_power(b2, step)
        root = root_plus(v, eps_root, second_correction)
        return (m / one_minus_power(b1, step)) / (root * lax.rsqrt(second_correction) + eps)

    def leaf(g, m, v, *, count):
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * (g * g)
        return direction(m, v, count.astype(g.dtype) + 1), m, v

    def amsgrad_leaf(g, m, v, v_max, *, count):
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * (g * g)
        v_max = jnp.maximum(v_max, v)
        return direction(m, v_max, count.astype(g.dtype) + 1), m, v, v_max

    if amsgrad:
        return leafwise(owner, ScaleByAmsgradState, amsgrad_leaf,
                        slot_dtypes={"mu": mu_dtype, "nu": nu_dtype, "nu_max": nu_dtype})
    return leafwise(owner, ScaleByAdamState, leaf,
                    slot_dtypes={"mu": mu_dtype, "nu": nu_dtype})


class ScaleByRmsState(NamedTuple):
    """``mean_square``: ``E[g²]``, the running mean of squared gradients."""

    mean_square: PyTree


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8, eps_in_sqrt: bool = True,
                 initial_scale: float = 0.0) -> Optimizer:
    """RMSprop's direction (Tieleman & Hinton 2012), with ``E_0 = initial_scale``::

        E_t = ρ E_{t-1} + (1 − ρ) g_t²,    d_t = g_t / √(E_t + ε)   (or ``/ (√E_t + ε)``)

    optax: ``scale_by_rms(decay, eps, initial_scale)`` (ε inside the root); torch's RMSprop
    adds ε outside: ``eps_in_sqrt=False``.

    Args:
      decay: ``ρ`` in ``[0, 1)``.
      eps: ``ε > 0``.
      eps_in_sqrt: where ε is added.
      initial_scale: ``E_0 >= 0``.
    """
    owner = "scale_by_rms"
    _decay_rate(owner, "decay", decay)
    checks.positive(f"{owner}: eps", eps)
    checks.non_negative(f"{owner}: initial_scale", initial_scale)

    def leaf(g, mean_square):
        mean_square = decay * mean_square + (1.0 - decay) * (g * g)
        return g / _eps_root(mean_square, eps, eps_in_sqrt), mean_square

    return leafwise(owner, ScaleByRmsState, leaf, initial={"mean_square": initial_scale})


class ScaleByStddevState(NamedTuple):
    """``mean_square``: ``E[g²]``; ``mean_grad``: ``E[g]``."""

    mean_square: PyTree
    mean_grad: PyTree


def scale_by_stddev(decay: float = 0.9, eps: float = 1e-8, eps_in_sqrt: bool = True,
                    initial_scale: float = 0.0) -> Optimizer:
    """Centered RMSprop's direction (Graves 2013), with ``E_0 = initial_scale, ḡ_0 = 0``::

        E_t = ρ E_{t-1} + (1 − ρ) g_t²,    ḡ_t = ρ ḡ_{t-1} + (1 − ρ) g_t
        s_t = max(E_t − ḡ_t², 0),          d_t = g_t / √(s_t + ε)   (or ``/ (√s_t + ε)``)

    ``E_t − ḡ_t² >= 0`` holds exactly (Cauchy–Schwarz on the averaging weights); the clamp
    only stops rounding from making it negative, which would give NaN.  optax's
    ``scale_by_stddev``; torch's ``RMSprop(centered=True)`` with ``eps_in_sqrt=False``.
    """
    owner = "scale_by_stddev"
    _decay_rate(owner, "decay", decay)
    checks.positive(f"{owner}: eps", eps)
    checks.non_negative(f"{owner}: initial_scale", initial_scale)

    def leaf(g, mean_square, mean_grad):
        mean_square = decay * mean_square + (1.0 - decay) * (g * g)
        mean_grad = decay * mean_grad + (1.0 - decay) * g
        variance = jnp.maximum(mean_square - mean_grad * mean_grad, 0.0)
        return g / _eps_root(variance, eps, eps_in_sqrt), mean_square, mean_grad

    return leafwise(owner, ScaleByStddevState, leaf, initial={"mean_square": initial_scale})


class ScaleByAdagradState(NamedTuple):
    """``sum_of_squares``: ``G``, the sum of squared gradients."""

    sum_of_squares: PyTree


def scale_by_adagrad(eps: float = 1e-10, initial_accumulator_value: float = 0.0,
                     eps_in_sqrt: bool = True) -> Optimizer:
    """Adagrad's direction (Duchi, Hazan & Singer 2011), with ``G_0 = initial_accumulator_value``::

        G_t = G_{t-1} + g_t²,    d_t = g_t / √(G_t + ε)   (or ``/ (√G_t + ε)``)

    Args:
      eps: ``ε >= 0``; 0 only with a positive ``initial_accumulator_value`` (else a
        coordinate whose gradient has always been 0 would compute 0/0).
      initial_accumulator_value: ``G_0 >= 0``.
      eps_in_sqrt: where ε is added.
    """
    owner = "scale_by_adagrad"
    checks.non_negative(f"{owner}: eps", eps)
    checks.non_negative(f"{owner}: initial_accumulator_value", initial_accumulator_value)
    if (checks.is_concrete(eps) and checks.is_concrete(initial_accumulator_value)
            and eps == 0 and initial_accumulator_value == 0):
        raise ValueError(f"{owner}: eps and initial_accumulator_value are both 0, so a "
                         f"coordinate with zero gradients would compute 0/0; make one positive")

    def leaf(g, sum_of_squares):
        sum_of_squares = sum_of_squares + g * g
        return g / _eps_root(sum_of_squares, eps, eps_in_sqrt), sum_of_squares

    return leafwise(owner, ScaleByAdagradState, leaf,
                    initial={"sum_of_squares": initial_accumulator_value})


class TraceState(NamedTuple):
    """``trace``: the momentum buffer ``b``."""

    trace: PyTree


class DampedTraceState(NamedTuple):
    """``trace(dampening > 0)``'s state: ``count`` (the first step is not damped) and ``b``."""

    count: Array
    trace: PyTree


def trace(decay: float = 0.9, nesterov: bool = False,
          accumulator_dtype: Optional[Any] = None, *, dampening: float = 0.0) -> Optimizer:
    """Heavy-ball momentum (Polyak 1964) or Nesterov's form, as a direction::

        b_t = β b_{t-1} + g_t,  b_0 = 0;    d_t = b_t   or   d_t = g_t + β b_t  (nesterov)

    ``chain(trace(β, nesterov), scale_by_learning_rate(η))`` is ``torch.optim.SGD(lr=η,
    momentum=β, nesterov=nesterov)`` and ``optax.sgd(η, momentum=β, nesterov=nesterov)``,
    with a schedule too (the rate multiplies the buffer, it does not enter it).  Nesterov's
    form is Sutskever et al. (2013)'s accelerated gradient rewritten at the look-ahead point
    (Bengio, Boulanger-Lewandowski & Pascanu 2013).

    With ``dampening = τ > 0`` the buffer is torch's damped one: ``b_1 = g_1`` (the first
    gradient enters whole), then ``b_t = β b_{t-1} + (1 − τ) g_t``; this is
    ``torch.optim.SGD(momentum=β, dampening=τ)`` and the state is :class:`DampedTraceState`
    (it counts steps to know the first).  As in torch, Nesterov's form needs ``τ = 0``.

    Args:
      decay: ``β`` in ``[0, 1)``.
      nesterov: use the Nesterov form.
      accumulator_dtype: stored dtype of ``b`` (default the parameter's).
      dampening: ``τ`` in ``[0, 1]``.
    """
    owner = "trace"
    _decay_rate(owner, "decay", decay)
    nesterov = checks.boolean(f"{owner}: nesterov", nesterov)
    checks.real_in(f"{owner}: dampening", dampening, 0.0, 1.0)
    damped = not checks.is_concrete(dampening) or float(dampening) != 0.0
    if damped and nesterov:
        raise ValueError(f"{owner}: dampening must be 0 with nesterov=True (as in torch's "
                         f"SGD), got {dampening!r}")

    def leaf(g, buffer):
        buffer = decay * buffer + g
        return (g + decay * buffer if nesterov else buffer), buffer

    def damped_leaf(g, buffer, *, count):
        buffer = jnp.where(count == 0, g, decay * buffer + (1.0 - dampening) * g)
        return buffer, buffer

    if damped:
        return leafwise(owner, DampedTraceState, damped_leaf,
                        slot_dtypes={"trace": accumulator_dtype})
    return leafwise(owner, TraceState, leaf, slot_dtypes={"trace": accumulator_dtype})
