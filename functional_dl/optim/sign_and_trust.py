"""Lion's sign direction and LAMB's per-leaf trust ratio, and the two optimizers.

``lion = named_chain(scale_by_lion, add_decayed_weights, scale_by_learning_rate)`` and
``lamb = named_chain(scale_by_adam, add_decayed_weights, scale_by_trust_ratio,
scale_by_learning_rate)``, the layouts of ``optax.lion`` and ``optax.lamb``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import PyTree, ScalarOrSchedule
from functional_dl.optim import _tree
from functional_dl.optim.aliases import Mask, named_chain
from functional_dl.optim.base import EmptyState, Optimizer
from functional_dl.optim.directions import scale_by_adam
from functional_dl.optim.leafwise import leafwise
from functional_dl.optim.transforms import add_decayed_weights, scale_by_learning_rate

__all__ = ["ScaleByLionState", "scale_by_lion", "scale_by_trust_ratio", "lion", "lamb"]


class ScaleByLionState(NamedTuple):
    """``mu``: Lion's momentum ``m``."""

    mu: PyTree


def scale_by_lion(b1: float = 0.9, b2: float = 0.99, *, mu_dtype: Any = None) -> Optimizer:
    """Lion's direction (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms",
    Program 1), with ``m_0 = 0``::

        d_t = sign(β₁ m_{t-1} + (1 − β₁) g_t),     m_t = β₂ m_{t-1} + (1 − β₂) g_t

    The direction interpolates with ``β₁`` and the momentum is kept with ``β₂`` (the paper's
    defaults 0.9 and 0.99).  ``sign(0) = 0``: a coordinate whose gradients were all 0 does
    not move.  ``optax.scale_by_lion(b1, b2)`` (``mode="hard"``) gives the same direction.

    Args:
      b1, b2: ``β₁, β₂`` in ``[0, 1]`` (1 is allowed: the direction then follows the
        momentum only, or the momentum stays at 0).
      mu_dtype: stored dtype of ``m`` (e.g. ``jnp.bfloat16``, the paper's suggestion).
    """
    owner = "scale_by_lion"
    checks.real_in(f"{owner}: b1", b1, 0.0, 1.0)
    checks.real_in(f"{owner}: b2", b2, 0.0, 1.0)

    def leaf(g, m):
        return jnp.sign(b1 * m + (1.0 - b1) * g), b2 * m + (1.0 - b2) * g

    return leafwise(owner, ScaleByLionState, leaf, slot_dtypes={"mu": mu_dtype})


def scale_by_trust_ratio(min_norm: float = 0.0, trust_coefficient: float = 1.0,
                         eps: float = 0.0) -> Optimizer:
    """LAMB's layer-wise trust ratio (You et al. 2020, Algorithm 2), one ratio per leaf::

        u ← u · φ,    φ = c ‖θ‖ / (‖u‖ + ε)  (φ = 1 where ‖θ‖ or ‖u‖ is 0)

    with ``‖x‖ = max(√Σ x², min_norm)`` over the whole leaf and ``c`` the trust coefficient.
    The step of every leaf then has length ``η c ‖θ‖``: proportional to the leaf's own size.
    ``optax.scale_by_trust_ratio(min_norm, trust_coefficient, eps)`` for the same arguments
    (``φ(x) = x``, the paper's identity scaling).  ``update`` needs ``params``.

    Args:
      min_norm: ``>= 0``, the smallest norm used (0: none).
      trust_coefficient: ``c > 0``.
      eps: ``ε >= 0`` added to ``‖u‖``.
    """
    owner = "scale_by_trust_ratio"
    checks.non_negative(f"{owner}: min_norm", min_norm)
    checks.positive(f"{owner}: trust_coefficient", trust_coefficient)
    checks.non_negative(f"{owner}: eps", eps)

    def norm(x):
        return jnp.maximum(jnp.sqrt(jnp.sum(x * x)), min_norm)

    def leaf(u, *, param):
        param_norm, update_norm = norm(param), norm(u)
        zero = (param_norm == 0) | (update_norm == 0)
        ratio = trust_coefficient * param_norm / jnp.where(zero, 1.0, update_norm + eps)
        return (u * jnp.where(zero, 1.0, ratio),)

    return leafwise(owner, EmptyState, leaf, uses_params=True, input_name="updates")


def lion(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.99,
         weight_decay: float = 1e-3, mask: Mask | None = None, *,
         mu_dtype: Any = None) -> Optimizer:
    """Lion (Chen et al. 2023) with decoupled weight decay::

        u_t = −η_t (sign(β₁ m_{t-1} + (1 − β₁) g_t) + λ M θ_{t-1})

    (:func:`scale_by_lion`; ``M`` the mask).  Every coordinate moves by ``η`` (plus the
    decay), so Lion wants a rate 3–10× smaller than AdamW's and a ``λ`` as much larger.
    ``optax.lion(lr, b1, b2, weight_decay=λ, mask=...)`` gives the same numbers for the same
    arguments (the defaults are its defaults).  ``update`` needs ``params``.

    Args:
      learning_rate: ``η >= 0`` or a schedule.
      b1, b2: as in :func:`scale_by_lion`.
      weight_decay: ``λ >= 0``; mask: as in :func:`~functional_dl.optim.aliases.adamw`.
      mu_dtype: stored dtype of the momentum.
    """
    _tree.check_learning_rate("lion", learning_rate)
    _tree.check_finite_non_negative("lion: weight_decay", weight_decay)
    return named_chain("lion", scale_by_lion(b1, b2, mu_dtype=mu_dtype),
                       add_decayed_weights(weight_decay, mask),
                       scale_by_learning_rate(learning_rate))


def lamb(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-6, weight_decay: float = 0.0, mask: Mask | None = None, *,
         eps_root: float = 0.0, mu_dtype: Any = None, nu_dtype: Any = None) -> Optimizer:
    """LAMB (You et al. 2020, Algorithm 2): Adam's direction plus decoupled decay, rescaled
    per leaf by the trust ratio (:func:`scale_by_trust_ratio`)::

        r_t = m̂_t / (√v̂_t + ε) + λ M θ_{t-1},     u_t = −η_t (‖θ_{t-1}‖ / ‖r_t‖) r_t

    with the norms over each leaf (1 in place of the ratio where one of them is 0).
    ``optax.lamb(lr, b1, b2, eps, eps_root, weight_decay, mask)`` gives the same numbers for
    the same arguments (the defaults are its defaults).  ``update`` needs ``params``.

    Args:
      learning_rate: ``η >= 0`` or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in
        :func:`~functional_dl.optim.directions.scale_by_adam`.
      weight_decay: ``λ >= 0``; mask: as in :func:`~functional_dl.optim.aliases.adamw`.
    """
    _tree.check_learning_rate("lamb", learning_rate)
    _tree.check_finite_non_negative("lamb: weight_decay", weight_decay)
    return named_chain("lamb", scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype,
                                             nu_dtype=nu_dtype),
                       add_decayed_weights(weight_decay, mask), scale_by_trust_ratio(),
                       scale_by_learning_rate(learning_rate))
