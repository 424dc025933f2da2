"""Adafactor (Shazeer & Stern 2018): second moments kept as row and column statistics.

For a leaf of rank >= 2 whose second-largest axis has at least ``min_dim_size_to_factor``
entries, the running mean of ``g² + ε`` is kept as its means ``R`` over the largest axis
and ``C`` over the second-largest one (``n + m`` numbers for an ``n × m`` matrix instead of
``n m``) and rebuilt as the rank-one ``V̂ = R C / mean(R)``; other leaves keep the full
``V``.  ``adafactor`` chains this direction with the paper's update clipping, relative
step size and optional momentum and weight decay, in the order of ``optax.adafactor``.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PyTree, ScalarOrSchedule
from functional_dl.optim import _tree
from functional_dl.optim.aliases import Mask, named_chain
from functional_dl.optim.base import EmptyState, Optimizer
from functional_dl.optim.leafwise import leafwise
from functional_dl.optim.transforms import add_decayed_weights, scale, scale_by_learning_rate

__all__ = ["FactoredState", "scale_by_factored_rms", "adafactor"]


class FactoredState(NamedTuple):
    """``count``: int32 updates made.  Per leaf, ``v_row`` and ``v_col`` (the leaf without
    its largest, resp. second-largest, axis) for a factored leaf, ``v`` (the leaf's shape)
    for the others; the unused ones are ``(1,)``-shaped zeros."""

    count: Array
    v_row: PyTree
    v_col: PyTree
    v: PyTree


def factored_axes(shape: tuple, factored: bool, min_dim_size_to_factor: int):
    """``(second-largest axis, largest axis)`` of a leaf that is factored, else ``None``
    (ties broken as ``numpy.argsort`` orders them, as optax does)."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def scale_by_factored_rms(factored: bool = True, decay_rate: float = 0.8,
                          decay_offset: int = 0, min_dim_size_to_factor: int = 128,
                          eps: float = 1e-30) -> Optimizer:
    """Adafactor's direction (Shazeer & Stern 2018, Algorithms 4 and 5, without clipping)::

        β̂_t = 1 − t'^{−c},  t' = max(t − decay_offset, 1)     (so β̂_1 = 0)
        factored leaf (axes a = second-largest, b = largest):
          R_t = β̂_t R_{t-1} + (1 − β̂_t) mean_b(g_t² + ε),  C_t = β̂_t C_{t-1} + (1 − β̂_t) mean_a(g_t² + ε)
          d_t = g_t / √(R_t C_t / mean_a(R_t))
        other leaves:  V_t = β̂_t V_{t-1} + (1 − β̂_t)(g_t² + ε),   d_t = g_t / √V_t

    ``optax.scale_by_factored_rms(factored, decay_rate, decay_offset,
    min_dim_size_to_factor, eps)`` for the same arguments, except that optax evaluates
    ``t'^{−c}`` in float32 even for float64 leaves (the two agree to about 1e-7 there) and
    lets ``t − decay_offset`` reach 0 (an infinite ``β̂``) before the offset has passed.

    Args:
      factored: factor the leaves that qualify.
      decay_rate: ``c >= 0`` (finite), the exponent of the decay schedule.
      decay_offset: int ``>= 0``, steps by which the schedule is delayed.
      min_dim_size_to_factor: int ``>= 1``; a leaf is factored when its second-largest axis
        has at least this many entries.
      eps: ``ε > 0`` added to ``g²`` (it keeps ``√V`` positive where ``g = 0``).
    """
    owner = "scale_by_factored_rms"
    factored = checks.boolean(f"{owner}: factored", factored)
    _tree.check_finite_non_negative(f"{owner}: decay_rate", decay_rate)
    decay_offset = checks.whole_number(f"{owner}: decay_offset", decay_offset, minimum=0)
    min_dim_size_to_factor = checks.whole_number(f"{owner}: min_dim_size_to_factor",
                                                 min_dim_size_to_factor, minimum=1)
    checks.positive(f"{owner}: eps", eps)

    def axes(leaf):
        return factored_axes(tuple(leaf.shape), factored, min_dim_size_to_factor)

    def slot_shapes(shape):
        found = factored_axes(shape, factored, min_dim_size_to_factor)
        if found is None:
            return (1,), (1,), shape
        second, largest = found
        return (tuple(n for k, n in enumerate(shape) if k != largest),
                tuple(n for k, n in enumerate(shape) if k != second), (1,))

    def init_leaf(param):
        param = jnp.asarray(param)
        placeholder = jnp.zeros((1,), param.dtype)
        found = axes(param)
        if found is None:
            return placeholder, placeholder, jnp.zeros_like(param)
        second, largest = found
        # a reduction of zeros_like keeps the sharding of the parameter's remaining axes
        zeros = jnp.zeros_like(param)
        return zeros.sum(axis=largest), zeros.sum(axis=second), placeholder

    def init(params: PyTree) -> FactoredState:
        _tree.check_float_leaves(f"{owner}.init", "params", params)
        rows, cols, full = _tree.map_leaves(init_leaf, 3, params)
        return FactoredState(_tree.zero_count(), rows, cols, full)

    def update_leaf(count):
        def one(g, v_row, v_col, v):
            cdt = _tree.compute_dtype(g.dtype, v_row.dtype, v_col.dtype, v.dtype)
            x = g.astype(cdt)
            age = jnp.maximum(count - decay_offset + 1, 1).astype(cdt)
            beta = 1.0 - age ** (-decay_rate)
            square = x * x + eps
            found = axes(g)
            if found is None:
                new_v = beta * v.astype(cdt) + (1.0 - beta) * square
                # fresh placeholders: forwarding the inputs would alias donated buffers
                return ((x / jnp.sqrt(new_v)).astype(g.dtype), jnp.zeros_like(v_row),
                        jnp.zeros_like(v_col), new_v.astype(v.dtype))
            second, largest = found
            new_row = beta * v_row.astype(cdt) + (1.0 - beta) * square.mean(axis=largest)
            new_col = beta * v_col.astype(cdt) + (1.0 - beta) * square.mean(axis=second)
            # ``second`` as an axis of the row statistics (which lack ``largest``)
            row_axis = second - 1 if second > largest else second
            row_factor = jax.lax.rsqrt(new_row / new_row.mean(axis=row_axis, keepdims=True))
            d = (x * jnp.expand_dims(row_factor, largest)
                 * jnp.expand_dims(jax.lax.rsqrt(new_col), second))
            return (d.astype(g.dtype), new_row.astype(v_row.dtype), new_col.astype(v_col.dtype),
                    jnp.zeros_like(v))
        return one

    def update(grads: PyTree, state, params: PyTree | None = None, **extra_args):
        where = f"{owner}.update"
        grads = _tree.as_float_arrays(where, "grads", grads)
        if not isinstance(state, FactoredState):
            raise TypeError(f"{where}: state must be a FactoredState (from {owner}(...).init), "
                            f"got {type(state).__name__}")
        if params is not None:
            _tree.check_same_structure(where, "grads", grads, "params", params)
        for name in ("v_row", "v_col", "v"):
            slot = getattr(state, name)
            if jax.tree_util.tree_structure(slot) != jax.tree_util.tree_structure(grads):
                raise ValueError(
                    f"{where}: the tree structure of grads differs from that of state.{name}"
                    f"\n  grads: {jax.tree_util.tree_structure(grads)}"
                    f"\n  state.{name}: {jax.tree_util.tree_structure(slot)}")
        slots = zip(*(jax.tree_util.tree_leaves(getattr(state, name))
                      for name in ("v_row", "v_col", "v")))
        for (path, g), stored in zip(_tree.leaves_with_paths(grads), slots):
            if tuple(tuple(x.shape) for x in stored) != slot_shapes(tuple(g.shape)):
                raise ValueError(f"{where}: grads{path} has shape {tuple(g.shape)}, but the "
                                 f"state was made for another shape (its statistics have "
                                 f"shapes {[tuple(x.shape) for x in stored]})")
        d, rows, cols, full = _tree.map_leaves(update_leaf(state.count), 4, grads, state.v_row,
                                               state.v_col, state.v)
        return d, FactoredState(_tree.increment_count(state.count), rows, cols, full)

    return Optimizer(init, update)


def _clip_by_block_rms(threshold: float) -> Optimizer:
    """``u ← u / max(1, rms(u) / threshold)`` per leaf (the paper's update clipping ``d``)."""
    def leaf(u):
        return (u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(u * u)) / threshold),)
    return leafwise("adafactor", EmptyState, leaf, input_name="updates")


def _scale_by_parameter_rms(min_scale: float = 1e-3) -> Optimizer:
    """``u ← u · max(rms(θ), min_scale)`` per leaf (the paper's relative step, ``ε₂``)."""
    def leaf(u, *, param):
        return (u * jnp.maximum(jnp.sqrt(jnp.mean(param * param)), min_scale),)
    return leafwise("adafactor", EmptyState, leaf, uses_params=True, input_name="updates")


class _MomentumState(NamedTuple):
    momentum: PyTree


def _momentum(decay: float, dtype: Any) -> Optimizer:
    """``m ← β m + (1 − β) u``, output ``m`` (not debiased), stored in ``dtype``."""
    def leaf(u, m):
        m = decay * m + (1.0 - decay) * u
        return m, m
    return leafwise("adafactor", _MomentumState, leaf, slot_dtypes={"momentum": dtype},
                    input_name="updates")


def adafactor(learning_rate: Optional[ScalarOrSchedule] = None,
              min_dim_size_to_factor: int = 128, decay_rate: float = 0.8,
              decay_offset: int = 0, multiply_by_parameter_scale: bool = True,
              clipping_threshold: Optional[float] = 1.0, momentum: Optional[float] = None,
              momentum_dtype: Any = jnp.float32, weight_decay_rate: Optional[float] = None,
              eps: float = 1e-30, factored: bool = True,
              weight_decay_mask: Mask | None = None) -> Optimizer:
    """Adafactor (Shazeer & Stern 2018), as the chain::

        d_t = scale_by_factored_rms(...)(g_t)                  factored second moments
        d_t ← d_t / max(1, rms(d_t) / clipping_threshold)      update clipping (per leaf)
        d_t ← η_t d_t                                          if learning_rate is given
        d_t ← d_t · max(rms(θ_{t-1}), 1e-3)                     multiply_by_parameter_scale
        d_t ← m_t = β m_{t-1} + (1 − β) d_t                    if momentum = β is given
        u_t = −(d_t + λ M θ_{t-1})                             λ = weight_decay_rate

    ``rms`` over each leaf.  With ``multiply_by_parameter_scale`` and no rate, each leaf
    moves by about ``rms(θ)`` per unit-RMS direction: the paper's relative step size with
    ``ρ_t = 1``; pass a schedule ``learning_rate=lambda t: jnp.minimum(1e-2, (t + 1.) **
    -0.5)`` for its ``ρ_t``.  The decay ``λ`` is not scaled by the rate.

    optax ``optax.adafactor(...)`` takes the same arguments (``dtype_momentum`` is called
    ``momentum_dtype`` here) and gives the same numbers, but for ``t'^{−c}`` which optax
    forms in float32 (see :func:`scale_by_factored_rms`): in float64 they agree to ~1e-7,
    or exactly against ``optax.chain`` of its pieces with a float64 ``decay_rate_fn``.
    ``update`` needs ``params`` when ``multiply_by_parameter_scale`` or a decay is used.

    Args:
      learning_rate: ``η >= 0``, a schedule, or ``None`` (no rate: ``η = 1``).
      min_dim_size_to_factor, decay_rate, decay_offset, eps, factored: as in
        :func:`scale_by_factored_rms`.
      multiply_by_parameter_scale: scale each leaf's step by its parameters' RMS.
      clipping_threshold: ``> 0``, or ``None`` for no clipping.
      momentum: ``β`` in ``[0, 1)``, or ``None`` for none; momentum_dtype: its stored dtype.
      weight_decay_rate: ``λ >= 0`` (finite) or ``None``; weight_decay_mask: as ``adamw``'s.
    """
    owner = "adafactor"
    if learning_rate is not None:
        _tree.check_learning_rate(owner, learning_rate)
    multiply_by_parameter_scale = checks.boolean(f"{owner}: multiply_by_parameter_scale",
                                                 multiply_by_parameter_scale)
    if clipping_threshold is not None:
        checks.positive(f"{owner}: clipping_threshold", clipping_threshold)
    if momentum is not None:
        checks.real_in(f"{owner}: momentum", momentum, 0.0, 1.0, high_closed=False)
    if weight_decay_rate is not None:
        _tree.check_finite_non_negative(f"{owner}: weight_decay_rate", weight_decay_rate)
    members = [scale_by_factored_rms(factored, decay_rate, decay_offset,
                                     min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        members.append(_clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        members.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        members.append(_scale_by_parameter_rms())
    if momentum is not None:
        members.append(_momentum(momentum, momentum_dtype))
    if weight_decay_rate is not None:
        members.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
    # the descent sign comes last because the decay term is not multiplied by the rate
    members.append(scale(-1.0))
    return named_chain(owner, *members)
