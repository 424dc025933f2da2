"""Directions of Adam's relatives: NAdam, RAdam, Adamax and AdaBelief.

Each keeps Adam's first moment ``m_t = β₁ m_{t-1} + (1 − β₁) g_t`` (``m_0 = 0``) and changes
the denominator or the momentum; each is a :func:`~functional_dl.optim.leafwise.leafwise`
transform with Adam's conventions (``1 − β^t`` formed as ``−expm1(t log β)``, float32
arithmetic at least, moments stored in ``mu_dtype``/``nu_dtype``).  The named optimizers
built from them follow, each ``named_chain(direction, [decoupled decay,] step)``.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PyTree, ScalarOrSchedule
from functional_dl.optim import _tree
from functional_dl.optim.aliases import Mask, named_chain
from functional_dl.optim.base import Optimizer
from functional_dl.optim.directions import ScaleByAdamState, one_minus_power, root_plus
from functional_dl.optim.leafwise import leafwise
from functional_dl.optim.transforms import add_decayed_weights, scale_by_learning_rate

__all__ = ["ScaleByNadamScheduleState", "scale_by_nadam", "scale_by_radam", "scale_by_adamax",
           "scale_by_belief", "nadam", "nadamw", "radam", "adamax", "adabelief"]


def _decay_rate(owner: str, name: str, value: Any) -> None:
    checks.real_in(f"{owner}: {name}", value, 0.0, 1.0, high_closed=False)


def _moment_checks(owner: str, b1, b2, eps, eps_root) -> None:
    _decay_rate(owner, "b1", b1)
    _decay_rate(owner, "b2", b2)
    checks.positive(f"{owner}: eps", eps)
    checks.non_negative(f"{owner}: eps_root", eps_root)


def _corrected_root(v: Array, step: Array, b2: Any, eps_root: Any) -> Array:
    """``√(v / (1 − β₂^t) + ε_root)``, one root and one reciprocal root."""
    correction = one_minus_power(b2, step)
    root = root_plus(v, eps_root, correction)
    return root * lax.rsqrt(correction)


class ScaleByNadamScheduleState(NamedTuple):
    """``scale_by_nadam(momentum_decay=ψ)``'s state: ``mu_product`` is ``Π_{s<=t} μ_s``
    (a scalar, float64 when x64 is on, as torch keeps it), beside Adam's moments."""

    count: Array
    mu_product: Array
    mu: PyTree
    nu: PyTree


def scale_by_nadam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   eps_root: float = 0.0, *, momentum_decay: Optional[float] = None,
                   mu_dtype: Any = None, nu_dtype: Any = None) -> Optimizer:
    """NAdam's direction (Dozat 2016): Adam with Nesterov momentum.  With Adam's moments::

        d_t = (a_t g_t + c_t m_t) / (√(v̂_t + ε_root) + ε)

    * ``momentum_decay=None`` (optax's ``scale_by_adam(nesterov=True)``, ``optax.nadam``):
      ``a_t = (1 − β₁) / (1 − β₁^t)``, ``c_t = β₁ / (1 − β₁^{t+1})``.
    * ``momentum_decay=ψ`` (``torch.optim.NAdam(momentum_decay=ψ)``, default there 4e-3):
      the momentum follows Dozat's schedule ``μ_t = β₁ (1 − ½ · 0.96^{t ψ})`` with
      ``Π_t = μ_1 ⋯ μ_t``: ``a_t = (1 − μ_t) / (1 − Π_t)``, ``c_t = μ_{t+1} / (1 − Π_t μ_{t+1})``.
      The state is then :class:`ScaleByNadamScheduleState`.

    The first form is the second with ``μ_t = β₁`` for every ``t`` (``ψ → ∞``); for ``ψ =
    4e-3`` the two differ by up to a factor 2 in the early steps (``μ_1 ≈ β₁/2``).  Both
    update ``m`` with ``β₁`` itself, as optax and torch do.

    Args:
      b1, b2: ``β₁, β₂`` in ``[0, 1)``.
      eps: ``ε > 0`` outside the root; eps_root: ``ε_root >= 0`` inside.
      momentum_decay: ``ψ >= 0`` (finite) for torch's schedule; ``None`` for optax's form.
      mu_dtype, nu_dtype: stored dtypes of ``m`` and ``v``.
    """
    owner = "scale_by_nadam"
    _moment_checks(owner, b1, b2, eps, eps_root)
    if momentum_decay is not None:
        _tree.check_finite_non_negative(f"{owner}: momentum_decay", momentum_decay)
    dtypes = {"mu": mu_dtype, "nu": nu_dtype}

    def moments_leaf(coefficients):
        def leaf(g, m, v, *, count):
            step = count.astype(g.dtype) + 1
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * (g * g)
            a, c = (jnp.asarray(x).astype(g.dtype) for x in coefficients(step))
            return (a * g + c * m) / (_corrected_root(v, step, b2, eps_root) + eps), m, v
        return leaf

    def constant_momentum(step):
        return (1.0 - b1) / one_minus_power(b1, step), b1 / one_minus_power(b1, step + 1)

    if momentum_decay is None:
        return leafwise(owner, ScaleByAdamState, moments_leaf(constant_momentum),
                        slot_dtypes=dtypes)

    def scheduled_momentum(step):
        return b1 * (1.0 - 0.5 * jnp.power(0.96, step * momentum_decay))

    moments_init = leafwise(owner, ScaleByAdamState, lambda g, m, v, *, count: (g, m, v),
                            slot_dtypes=dtypes).init

    def init(params: PyTree) -> ScaleByNadamScheduleState:
        moments = moments_init(params)
        product_dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        return ScaleByNadamScheduleState(moments.count, jnp.ones((), product_dtype),
                                         moments.mu, moments.nu)

    def update(grads: PyTree, state, params: PyTree | None = None, **extra_args):
        if not isinstance(state, ScaleByNadamScheduleState):
            raise TypeError(f"{owner}.update: state must be a ScaleByNadamScheduleState (from "
                            f"{owner}(momentum_decay=...).init), got {type(state).__name__}")
        step = state.count.astype(state.mu_product.dtype) + 1
        mu_now, mu_next = scheduled_momentum(step), scheduled_momentum(step + 1)
        product = state.mu_product * mu_now
        a, c = (1.0 - mu_now) / (1.0 - product), mu_next / (1.0 - product * mu_next)
        moments = leafwise(owner, ScaleByAdamState, moments_leaf(lambda _: (a, c)),
                           slot_dtypes=dtypes)
        d, new = moments.update(grads, ScaleByAdamState(state.count, state.mu, state.nu), params)
        return d, ScaleByNadamScheduleState(new.count, product, new.mu, new.nu)

    return Optimizer(init, update)


def scale_by_radam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   eps_root: float = 0.0, *, threshold: float = 5.0,
                   eps_before_correction: bool = False, mu_dtype: Any = None,
                   nu_dtype: Any = None) -> Optimizer:
    """RAdam's direction (Liu et al. 2020, Algorithm 2), Adam rectified while ``v̂`` is young::

        ρ_∞ = 2 / (1 − β₂) − 1,     ρ_t = ρ_∞ − 2 t β₂^t / (1 − β₂^t)
        r_t = √((ρ_t − 4)(ρ_t − 2) ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2) ρ_t))
        d_t = r_t m̂_t / (√(v̂_t + ε_root) + ε)   if ρ_t >= threshold,   else  d_t = m̂_t

    * optax ``optax.radam(lr, b1, b2, eps, eps_root, threshold=5.0)``: the defaults here.
    * torch ``torch.optim.RAdam(lr, betas, eps)`` switches on ``ρ_t > 5`` (strictly; ``ρ_t``
      is 5 exactly only for special ``β₂``) and adds ε to the uncorrected root:
      ``d_t = r_t m̂_t √(1 − β₂^t) / (√v_t + ε)``, i.e. ``eps_before_correction=True``.

    Args:
      b1, b2: ``β₁, β₂`` in ``[0, 1)``.
      eps: ``ε > 0``; eps_root: ``ε_root >= 0`` (inside the root).
      threshold: ``ρ`` at which the adaptive step starts, finite and ``> 4`` (``r_t`` is
        real only for ``ρ_t >= 4``).
      eps_before_correction: add ε to ``√v_t`` before the bias correction (torch).
      mu_dtype, nu_dtype: stored dtypes of ``m`` and ``v``.
    """
    owner = "scale_by_radam"
    _moment_checks(owner, b1, b2, eps, eps_root)
    checks.real_in(f"{owner}: threshold", threshold, 4.0, low_closed=False)
    eps_before_correction = checks.boolean(f"{owner}: eps_before_correction",
                                           eps_before_correction)
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def leaf(g, m, v, *, count):
        step = count.astype(g.dtype) + 1
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * (g * g)
        second_correction = one_minus_power(b2, step)
        m_hat = m / one_minus_power(b1, step)
        rho = rho_inf - 2.0 * step * (1.0 - second_correction) / second_correction
        adaptive = rho >= threshold
        # the ratio is negative for ρ_t < 4 (where it is not used): clamp so no NaN appears
        ratio = ((rho - 4.0) * (rho - 2.0) * rho_inf
                 / jnp.where(adaptive, (rho_inf - 4.0) * (rho_inf - 2.0) * rho, 1.0))
        rectifier = jnp.sqrt(jnp.maximum(ratio, 0.0))
        if eps_before_correction:
            root = root_plus(v, eps_root, second_correction)
            denominator = (root + eps) * lax.rsqrt(second_correction)
        else:
            denominator = _corrected_root(v, step, b2, eps_root) + eps
        return jnp.where(adaptive, rectifier * m_hat / denominator, m_hat), m, v

    return leafwise(owner, ScaleByAdamState, leaf, slot_dtypes={"mu": mu_dtype, "nu": nu_dtype})


def scale_by_adamax(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *,
                    mu_dtype: Any = None, nu_dtype: Any = None) -> Optimizer:
    """Adamax's direction (Kingma & Ba 2015, Algorithm 2), Adam with the infinity norm::

        u_t = max(β₂ u_{t-1}, |g_t| + ε),  u_0 = 0;     d_t = m_t / ((1 − β₁^t) u_t)

    ``optax.scale_by_adamax`` and ``torch.optim.Adamax`` alike (ε inside the maximum); the
    state is Adam's, ``nu`` holding ``u``.

    Args:
      b1, b2: ``β₁, β₂`` in ``[0, 1)``.
      eps: ``ε > 0`` (keeps ``u`` positive where every gradient was 0).
      mu_dtype, nu_dtype: stored dtypes of ``m`` and ``u``.
    """
    owner = "scale_by_adamax"
    _moment_checks(owner, b1, b2, eps, 0.0)

    def leaf(g, m, u, *, count):
        step = count.astype(g.dtype) + 1
        m = b1 * m + (1.0 - b1) * g
        u = jnp.maximum(b2 * u, jnp.abs(g) + eps)
        return (m / one_minus_power(b1, step)) / u, m, u

    return leafwise(owner, ScaleByAdamState, leaf, slot_dtypes={"mu": mu_dtype, "nu": nu_dtype})


def scale_by_belief(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-16,
                    eps_root: float = 1e-16, *, mu_dtype: Any = None,
                    nu_dtype: Any = None) -> Optimizer:
    """AdaBelief's direction (Zhuang et al. 2020, Algorithm 2), Adam with the variance of
    the gradient around its prediction ``m_t`` in place of ``g²``::

        s_t = β₂ s_{t-1} + (1 − β₂)(g_t − m_t)² + ε_root,  s_0 = 0
        d_t = m̂_t / (√ŝ_t + ε),    ŝ_t = s_t / (1 − β₂^t)

    ``ε_root`` is added to the stored ``s_t`` every step (so it accumulates, as in the paper
    and in ``optax.scale_by_belief``), ε outside the root: the defaults are optax's
    (``optax.adabelief(lr)`` is ``adabelief(lr)``).  The state is Adam's, ``nu`` holding ``s``.

    Args:
      b1, b2: ``β₁, β₂`` in ``[0, 1)``.
      eps: ``ε > 0``; eps_root: ``ε_root >= 0``.
      mu_dtype, nu_dtype: stored dtypes of ``m`` and ``s``.
    """
    owner = "scale_by_belief"
    _moment_checks(owner, b1, b2, eps, eps_root)

    def leaf(g, m, s, *, count):
        step = count.astype(g.dtype) + 1
        m = b1 * m + (1.0 - b1) * g
        error = g - m
        s = b2 * s + (1.0 - b2) * (error * error) + eps_root
        return (m / one_minus_power(b1, step)) / (_corrected_root(s, step, b2, 0.0) + eps), m, s

    return leafwise(owner, ScaleByAdamState, leaf, slot_dtypes={"mu": mu_dtype, "nu": nu_dtype})


# ------------------------------------------------------------------------------ aliases


def nadam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, *, eps_root: float = 0.0, momentum_decay: Optional[float] = None,
          mu_dtype: Any = None, nu_dtype: Any = None) -> Optimizer:
    """NAdam (Dozat 2016): ``u_t = −η_t d_t`` with :func:`scale_by_nadam`'s direction.

    * optax ``optax.nadam(lr, b1, b2, eps)``: ``nadam(lr, b1, b2, eps)``.
    * torch ``torch.optim.NAdam(lr, betas=(b1, b2), eps, momentum_decay=4e-3)``:
      ``nadam(lr, b1, b2, eps, momentum_decay=4e-3)``; its ``weight_decay=λ`` (an L2 term in
      the gradient) is ``chain(add_decayed_weights(λ), nadam(...))``.

    Args: ``learning_rate`` (``η >= 0`` or a schedule) and those of :func:`scale_by_nadam`.
    """
    _tree.check_learning_rate("nadam", learning_rate)
    return named_chain("nadam", scale_by_nadam(b1, b2, eps, eps_root,
                                               momentum_decay=momentum_decay,
                                               mu_dtype=mu_dtype, nu_dtype=nu_dtype),
                       scale_by_learning_rate(learning_rate))


def nadamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-8, weight_decay: float = 1e-4, mask: Mask | None = None, *,
           eps_root: float = 0.0, momentum_decay: Optional[float] = None,
           mu_dtype: Any = None, nu_dtype: Any = None) -> Optimizer:
    """NAdam with decoupled weight decay: ``u_t = −η_t (d_t + λ M θ_{t-1})`` (as AdamW).

    * optax ``optax.nadamw(lr, b1, b2, eps, weight_decay=λ, mask=...)``: the same arguments.
    * torch ``torch.optim.NAdam(lr, weight_decay=λ, decoupled_weight_decay=True)`` (which
      multiplies ``θ`` by ``1 − η λ`` before the step): ``nadamw(lr, weight_decay=λ,
      momentum_decay=4e-3)``.

    Args: those of :func:`nadam`, ``weight_decay`` (``λ >= 0``) and ``mask`` as in
    :func:`~functional_dl.optim.aliases.adamw`.  ``update`` needs ``params``.
    """
    _tree.check_learning_rate("nadamw", learning_rate)
    _tree.check_finite_non_negative("nadamw: weight_decay", weight_decay)
    return named_chain("nadamw", scale_by_nadam(b1, b2, eps, eps_root,
                                                momentum_decay=momentum_decay,
                                                mu_dtype=mu_dtype, nu_dtype=nu_dtype),
                       add_decayed_weights(weight_decay, mask),
                       scale_by_learning_rate(learning_rate))


def radam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, *, eps_root: float = 0.0, threshold: float = 5.0,
          eps_before_correction: bool = False, mu_dtype: Any = None,
          nu_dtype: Any = None) -> Optimizer:
    """RAdam (Liu et al. 2020): ``u_t = −η_t d_t`` with :func:`scale_by_radam`'s direction.

    * optax ``optax.radam(lr, b1, b2, eps, eps_root, threshold)``: the same arguments.
    * torch ``torch.optim.RAdam(lr, betas=(b1, b2), eps)``: ``radam(lr, b1, b2, eps,
      eps_before_correction=True)``; its ``decoupled_weight_decay=True`` with ``λ`` is
      ``chain(scale_by_radam(...), add_decayed_weights(λ), scale_by_learning_rate(lr))``.
    """
    _tree.check_learning_rate("radam", learning_rate)
    return named_chain("radam", scale_by_radam(b1, b2, eps, eps_root, threshold=threshold,
                                               eps_before_correction=eps_before_correction,
                                               mu_dtype=mu_dtype, nu_dtype=nu_dtype),
                       scale_by_learning_rate(learning_rate))


def adamax(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-8, *, mu_dtype: Any = None, nu_dtype: Any = None) -> Optimizer:
    """Adamax (Kingma & Ba 2015, §7.1): ``u_t = −η_t m_t / ((1 − β₁^t) u_t)`` with
    :func:`scale_by_adamax`'s ``u``.  ``optax.adamax(lr, b1, b2, eps)`` and
    ``torch.optim.Adamax(lr, betas=(b1, b2), eps)`` (default ``lr=2e-3``) give the same
    numbers for the same arguments."""
    _tree.check_learning_rate("adamax", learning_rate)
    return named_chain("adamax", scale_by_adamax(b1, b2, eps, mu_dtype=mu_dtype,
                                                 nu_dtype=nu_dtype),
                       scale_by_learning_rate(learning_rate))


def adabelief(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-16, *, eps_root: float = 1e-16, mu_dtype: Any = None,
              nu_dtype: Any = None) -> Optimizer:
    """AdaBelief (Zhuang et al. 2020): ``u_t = −η_t m̂_t / (√ŝ_t + ε)`` with
    :func:`scale_by_belief`'s ``ŝ``.  ``optax.adabelief(lr, b1, b2, eps, eps_root)`` gives
    the same numbers for the same arguments (these defaults are its defaults)."""
    _tree.check_learning_rate("adabelief", learning_rate)
    return named_chain("adabelief", scale_by_belief(b1, b2, eps, eps_root, mu_dtype=mu_dtype,
                                                    nu_dtype=nu_dtype),
                       scale_by_learning_rate(learning_rate))
