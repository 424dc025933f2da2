"""Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019).

The bias corrections divide the moments by ``1 − β^t`` (Kingma & Ba 2015, Algorithm 1).

Arithmetic runs in float32 at least (float64 for float64 leaves); ``mu`` and ``nu`` keep the
parameter leaf's dtype and updates come back in each gradient leaf's dtype.  With float16
parameters ``v`` is stored in float16, where ``g²`` below about 6e-8 flushes to zero and the
step ``m̂ / ε`` can become large: train float16 models with float32 (or bfloat16) master
parameters.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PyTree, ScalarOrSchedule
from functional_dl.optim import _tree
from functional_dl.optim.base import Optimizer

Mask = Union[PyTree, Callable[[PyTree], PyTree]]


class AdamState(NamedTuple):
    """``count``: int32 updates made; ``mu``: ``m`` (first moment); ``nu``: ``v`` (second)."""

    count: Array
    mu: PyTree
    nu: PyTree


def _check_adam_hyperparameters(owner: str, learning_rate, b1, b2, eps) -> None:
    _tree.check_learning_rate(owner, learning_rate)
    checks.real_in(f"{owner}: b1", b1, 0.0, 1.0, high_closed=False)
    checks.real_in(f"{owner}: b2", b2, 0.0, 1.0, high_closed=False)
    checks.positive(f"{owner}: eps", eps)


def _one_minus_power(beta, step: Array) -> Array:
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


def _adam_optimizer(owner: str, learning_rate, b1: float, b2: float, eps: float,
                    weight_decay: float | None, mask: Mask | None) -> Optimizer:
    """Adam with the decoupled decay term ``−η_t λ θ`` (``weight_decay=None``: plain Adam)."""

    def init(params: PyTree) -> AdamState:
        _tree.check_float_leaves(f"{owner}.init", "params", params)
        return AdamState(count=_tree.zero_count(), mu=_tree.zeros_like_tree(params),
                         nu=_tree.zeros_like_tree(params))

    def update(grads: PyTree, state: AdamState, params: PyTree | None = None):
        grads = _tree.as_float_arrays(f"{owner}.update", "grads", grads)
        _tree.check_same_structure(f"{owner}.update", "grads", grads, "state.mu", state.mu)
        decays = weight_decay is not None
        if decays:
            if params is None:
                raise ValueError(f"{owner}.update: params are required for the weight decay "
                                 f"term; call update(grads, state, params)")
            _tree.check_same_structure(f"{owner}.update", "grads", grads, "params", params)
            mask_tree = _tree.resolve_mask(owner, True if mask is None else mask, params)
            _tree.check_mask_leaves(owner, mask_tree)
        rate = _tree.learning_rate_at(learning_rate, state.count)
        count = _tree.increment_count(state.count)

        def leaf_update(g, m, v, p=None, decay_this_leaf=False):
            cdt = _tree.compute_dtype(g.dtype, m.dtype, v.dtype)
            g_c, step = g.astype(cdt), count.astype(cdt)
            m_new = b1 * m.astype(cdt) + (1.0 - b1) * g_c
            v_new = b2 * v.astype(cdt) + (1.0 - b2) * (g_c * g_c)
            rate_c = jnp.asarray(rate).astype(cdt)
            # η m̂ / (√v̂ + ε) with the bias corrections c = 1 − β^t folded into two scalars,
            # so each entry costs one square root and one division:
            # (η / c₁) · m / (√v · (1 / √c₂) + ε).
            step_size = rate_c / _one_minus_power(b1, step)
            inverse_root_second_correction = jax.lax.rsqrt(_one_minus_power(b2, step))
            u = -step_size * m_new / (jnp.sqrt(v_new) * inverse_root_second_correction + eps)
            if p is not None:
                u = u - _tree.select_masked(
                    decay_this_leaf, rate_c * weight_decay * jnp.asarray(p).astype(cdt))
            return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

        if decays:
            updates, mu, nu = _tree.map_leaves(leaf_update, 3, grads, state.mu, state.nu,
                                               params, mask_tree)
        else:
            updates, mu, nu = _tree.map_leaves(leaf_update, 3, grads, state.mu, state.nu)
        return updates, AdamState(count=count, mu=mu, nu=nu)

    return Optimizer(init, update)


def adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba 2015, Algorithm 1).

    Implemented, per coordinate, with ``m_0 = v_0 = 0`` and ``t = 1, 2, ...``::

        m_t = β₁ m_{t-1} + (1 − β₁) g_t
        v_t = β₂ v_{t-1} + (1 − β₂) g_t²
        m̂_t = m_t / (1 − β₁^t)        v̂_t = v_t / (1 − β₂^t)
        u_t = −η_t m̂_t / (√v̂_t + ε)

    ε is added outside the square root, as in the paper, ``torch.optim.Adam`` and
    ``optax.adam`` (with ``eps_root=0``): ``adam(lr, b1, b2, eps)`` gives their numbers for
    the same arguments.  (The code folds the bias corrections into two scalar factors, which
    is the same expression up to rounding, and forms ``1 − β^t`` as ``−expm1(t log β)``: in
    float32 this keeps digits that a direct ``1 − β^t`` loses, so early float32 steps can
    differ from optax's in the fifth digit; in float64 the two agree to rounding.)

    Args:
      learning_rate: ``η >= 0`` or a schedule ``step -> η`` (``step = t − 1``).
      b1, b2: ``β₁, β₂`` in ``[0, 1)``.
      eps: ``ε > 0`` (0 would compute 0/0 where every gradient so far was 0).
    """
    _check_adam_hyperparameters("adam", learning_rate, b1, b2, eps)
    return _adam_optimizer("adam", learning_rate, b1, b2, eps, weight_decay=None, mask=None)


def adamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 1e-4, mask: Mask | None = None
          ) -> Optimizer:
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2).

    Implemented, with ``m̂_t, v̂_t`` as in :func:`adam` (bias corrections ``1 − β^t``) and
    ``M`` the mask (1 where decayed)::

        u_t = −η_t (m̂_t / (√v̂_t + ε) + λ M θ_{t-1})

    The decay is applied to the parameters, not added to the gradient, so it does not pass
    through ``m`` and ``v`` (unlike Adam with an L2 penalty).  The paper writes the schedule
    multiplier separately (``η_t (α m̂ / (…) + λ θ)``); here ``η_t`` is the full learning
    rate and multiplies both terms, as in ``optax.adamw`` and ``torch.optim.AdamW``:
    ``adamw(lr, b1, b2, eps, weight_decay=λ)`` gives their numbers (PyTorch's default
    ``weight_decay`` is 1e-2, optax's 1e-4).  ``update`` needs ``params``.

    Args:
      learning_rate: ``η >= 0`` or a schedule ``step -> η``.
      b1, b2: ``β₁, β₂`` in ``[0, 1)``.
      eps: ``ε > 0``.
      weight_decay: ``λ >= 0``.
      mask: which parameters decay: a pytree of bools with the structure of ``params`` (or a
        prefix of it, e.g. ``{"dense_0": True, "norm": False}``), or a function
        ``params -> such a tree`` (e.g. ``lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``
        to spare biases and scales).  ``None`` decays every leaf.
    """
    _check_adam_hyperparameters("adamw", learning_rate, b1, b2, eps)
    _tree.check_finite_non_negative("adamw: weight_decay", weight_decay)
    return _adam_optimizer("adamw", learning_rate, b1, b2, eps, weight_decay, mask)

