"""Gradient descent without and with momentum.

Both take ``learning_rate`` as a float or a schedule ``step -> rate``; the step count is an
int32 scalar in the state.  Arithmetic runs in float32 at least (float64 for float64
leaves); updates come back in each gradient leaf's dtype and the velocity keeps the
parameter leaf's dtype.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PyTree, ScalarOrSchedule
from functional_dl.optim import _tree
from functional_dl.optim.base import Optimizer


class SgdState(NamedTuple):
    """``count``: int32 number of updates made (the schedule's step)."""

    count: Array


def sgd(learning_rate: ScalarOrSchedule) -> Optimizer:
    """Stochastic gradient descent (Robbins & Monro 1951): ``θ ← θ − η_t g_t``.

    The update is ``u_t = −η_t g_t`` with ``η_t = learning_rate(t)`` for a schedule (``t`` the number of
    earlier updates).  Same numbers as ``torch.optim.SGD(lr)`` and ``optax.sgd(lr)``.

    Args:
      learning_rate: finite ``η >= 0`` or a schedule ``step -> η``.
    """
    _tree.check_learning_rate("sgd", learning_rate)

    def init(params: PyTree) -> SgdState:
        _tree.check_float_leaves("sgd.init", "params", params)
        return SgdState(count=_tree.zero_count())

    def update(grads: PyTree, state: SgdState, params: PyTree | None = None):
        grads = _tree.as_float_arrays("sgd.update", "grads", grads)
        if params is not None:
            _tree.check_same_structure("sgd.update", "grads", grads, "params", params)
        rate = _tree.learning_rate_at(learning_rate, state.count)

        def leaf_update(g):
            cdt = _tree.compute_dtype(g.dtype)
            return (-jnp.asarray(rate).astype(cdt) * g.astype(cdt)).astype(g.dtype)

        updates = jax.tree_util.tree_map(leaf_update, grads)
        return updates, SgdState(count=_tree.increment_count(state.count))

    return Optimizer(init, update)


class MomentumState(NamedTuple):
    """``count``: int32 updates made; ``velocity``: ``m``, one leaf per parameter leaf."""

    count: Array
    velocity: PyTree


def momentum(learning_rate: ScalarOrSchedule, beta: float = 0.9,
             nesterov: bool = False) -> Optimizer:
    """Gradient descent with (heavy-ball) momentum (Polyak 1964), or Nesterov's form.

    Implemented, with a schedule ``η_t``::

        m_t = β m_{t-1} − η_t g_t,      m_0 = 0
        u_t = m_t                                  nesterov=False
        u_t = β m_t − η_t g_t                      nesterov=True
        θ_t = θ_{t-1} + u_t

    ``nesterov=True`` is Nesterov's accelerated gradient in the form of Sutskever, Martens,
    Dahl & Hinton (2013), ``v_t = β v_{t-1} − η ∇L(θ_{t-1} + β v_{t-1})``, rewritten for the
    look-ahead point ``φ = θ + β v`` so the gradient is taken at the current parameters
    (Bengio, Boulanger-Lewandowski & Pascanu 2013): the parameters held here are ``φ``.

    PyTorch and optax keep ``b_t = β b_{t-1} + g_t`` and step ``−η_t b_t`` (Nesterov:
    ``−η_t (g_t + β b_t)``).  With a constant rate ``m_t = −η b_t``, so
    ``momentum(η, β, nesterov)`` gives the numbers of ``torch.optim.SGD(lr=η, momentum=β,
    nesterov=nesterov)`` and ``optax.sgd(η, momentum=β, nesterov=nesterov)``.  With a
    schedule the two differ (here the rate scales each gradient when it enters ``m``); for
    theirs use ``chain(momentum(1.0, β, nesterov), scale_by_schedule(schedule))``.

    Args:
      learning_rate: ``η >= 0`` or a schedule ``step -> η``.
      beta: momentum ``β`` in ``[0, 1)``.
      nesterov: use the Nesterov form above.
    """
    _tree.check_learning_rate("momentum", learning_rate)
    checks.real_in("momentum: beta", beta, 0.0, 1.0, high_closed=False)

    def init(params: PyTree) -> MomentumState:
        _tree.check_float_leaves("momentum.init", "params", params)
        return MomentumState(count=_tree.zero_count(), velocity=_tree.zeros_like_tree(params))

    def update(grads: PyTree, state: MomentumState, params: PyTree | None = None):
        grads = _tree.as_float_arrays("momentum.update", "grads", grads)
        _tree.check_same_structure("momentum.update", "grads", grads,
                                   "state.velocity", state.velocity)
        rate = _tree.learning_rate_at(learning_rate, state.count)

        def leaf_update(g, m):
            cdt = _tree.compute_dtype(g.dtype, m.dtype)
            scaled_grad = jnp.asarray(rate).astype(cdt) * g.astype(cdt)
            m_new = beta * m.astype(cdt) - scaled_grad
            u = beta * m_new - scaled_grad if nesterov else m_new
            return u.astype(g.dtype), m_new.astype(m.dtype)

        updates, velocity = _tree.map_leaves(leaf_update, 2, grads, state.velocity)
        return updates, MomentumState(count=_tree.increment_count(state.count), velocity=velocity)

    return Optimizer(init, update)

