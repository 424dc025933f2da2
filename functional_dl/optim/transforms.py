"""Transforms that compose with the optimizers in ``chain``.

Each is an ``Optimizer`` that maps incoming updates (gradients, or the previous member's
updates) to new ones.  Order matters in ``chain``: clipping goes before the optimizer
(``chain(clip_by_global_norm(1.0), adam(1e-3))``), L2-style decay before it and decoupled
decay after the direction but before the learning rate.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PyTree, ScalarOrSchedule, Schedule
from functional_dl.optim import _tree
from functional_dl.optim.base import EmptyState, Optimizer, call_update, update_if
from functional_dl.optim.leafwise import leafwise


def _check_factor(owner: str, name: str, factor) -> None:
    if callable(factor) or jnp.ndim(factor) != 0:
        raise ValueError(f"{owner}: {name} must be a scalar, got {factor!r}; for a schedule "
                         f"use scale_by_schedule")
    if checks.is_concrete(factor) and not np.isfinite(float(np.asarray(factor))):
        raise ValueError(f"{owner}: {name} must be finite, got {factor!r}")


def _leaf_times(factor, u: Array) -> Array:
    cdt = _tree.compute_dtype(u.dtype)
    return (jnp.asarray(factor).astype(cdt) * u.astype(cdt)).astype(u.dtype)


def _check_against_params(owner: str, updates: PyTree, params: PyTree | None) -> None:
    if params is not None:
        _tree.check_same_structure(owner, "updates", updates, "params", params)


def scale(factor: float) -> Optimizer:
    """``u ← factor · u`` (stateless).  ``scale(-1.0)`` turns a descent step into an ascent
    step (``maximize=True`` in torch), ``scale(-η)`` after a direction is a descent step."""
    _check_factor("scale", "factor", factor)
    return leafwise("scale", EmptyState, lambda u: (jnp.asarray(factor).astype(u.dtype) * u,),
                    input_name="updates")


class ScaleByScheduleState(NamedTuple):
    """``count``: int32 updates made (the schedule's step)."""

    count: Array


def scale_by_schedule(schedule: Schedule) -> Optimizer:
    """``u ← schedule(t) · u`` with ``t`` the number of earlier updates.

    The schedule's sign is used as given; for a learning rate (a descent step from an ascent
    direction) use :func:`scale_by_learning_rate`, which flips it.
    """
    if not callable(schedule):
        raise TypeError(f"scale_by_schedule: schedule must be a function step -> factor, "
                        f"got {type(schedule).__name__}")

    def leaf(u, *, count):
        return (jnp.asarray(schedule(count)).astype(u.dtype) * u,)

    return leafwise("scale_by_schedule", ScaleByScheduleState, leaf, input_name="updates")


class ScaleByLearningRateState(NamedTuple):
    """``count``: int32 updates made (the learning-rate schedule's step)."""

    count: Array


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *,
                           flip_sign: bool = True) -> Optimizer:
    """The step: ``u ← −η_t · d`` for an ascent direction ``d`` (``+η_t d`` with
    ``flip_sign=False``), ``η_t = learning_rate(t)`` for a schedule (``t`` earlier updates).

    The last member of every optimizer here: ``adam(η) = chain(scale_by_adam(),
    scale_by_learning_rate(η))``.  A float rate keeps no state (``EmptyState``); a schedule
    keeps the int32 step ``count``.  As optax's ``scale_by_learning_rate``.

    Args:
      learning_rate: finite ``η >= 0`` or a schedule ``step -> η``.
      flip_sign: negate (descent).  ``False`` for a direction that is already a descent step.
    """
    _tree.check_learning_rate("scale_by_learning_rate", learning_rate)
    sign = -1.0 if flip_sign else 1.0
    if callable(learning_rate):
        def leaf(d, *, count):
            return (sign * jnp.asarray(learning_rate(count)).astype(d.dtype) * d,)
        return leafwise("scale_by_learning_rate", ScaleByLearningRateState, leaf,
                        input_name="updates")
    return leafwise("scale_by_learning_rate", EmptyState,
                    lambda d: (sign * jnp.asarray(learning_rate).astype(d.dtype) * d,),
                    input_name="updates")


def _global_norm(updates: PyTree) -> Array:
    """``√(Σ u²)`` over all leaves, as ``s · √(Σ (u / s)²)`` with ``s = max |u|``.

    In float32 at least.  The scaling keeps the squares from overflowing (a finite gradient
    with entries near 1e19 would have an infinite float32 norm and be clipped to 0) or
    underflowing (norms below 1e-19 would read as 0); non-finite entries still give a
    non-finite norm.  The gradient at ``u = 0`` is 0, not NaN.
    """
    leaves = [u.astype(_tree.compute_dtype(u.dtype)) for u in jax.tree_util.tree_leaves(updates)]
    if not leaves:
        return jnp.zeros(())
    peak = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(u), initial=0.0) for u in leaves])
    scale = lax.stop_gradient(jnp.where((peak > 0) & jnp.isfinite(peak), peak, 1.0))
    squares = sum(jnp.sum(jnp.square(u / scale)) for u in leaves)
    positive = squares > 0
    return scale * jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def clip_by_global_norm(max_norm: float) -> Optimizer:
    """Rescale all updates together so their joint L2 norm is at most ``max_norm``.

    ``‖u‖ = √(Σ_leaves Σ u²)`` (in float32 at least, scaled by ``max |u|`` so that it neither
    overflows nor underflows); ``u ← u · min(1, c / ‖u‖)``
    (Pascanu, Mikolov & Bengio 2013).  Same as ``torch.nn.utils.clip_grad_norm_`` without
    its ``1e-6`` in the denominator, and as ``optax.clip_by_global_norm``.  A zero norm
    leaves ``u`` unchanged; a non-finite norm propagates (pair with ``apply_if_finite``).
    """
    checks.positive("clip_by_global_norm: max_norm", max_norm)

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(updates: PyTree, state: EmptyState, params: PyTree | None = None,
               **extra_args):
        updates = _tree.as_float_arrays("clip_by_global_norm.update", "updates", updates)
        _check_against_params("clip_by_global_norm.update", updates, params)
        norm = _global_norm(updates)
        factor = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
        return jax.tree_util.tree_map(lambda u: _leaf_times(factor, u), updates), state

    return Optimizer(init, update)


def add_decayed_weights(weight_decay: float, mask=None) -> Optimizer:
    """``u ← u + λ M θ`` with ``M`` the mask (1 where decayed; ``None`` decays every leaf).

    Before an optimizer (``chain(add_decayed_weights(λ), adam(η))``) this is the gradient
    of an L2 penalty ``½ λ ‖θ‖²`` folded into the gradient, as
    ``torch.optim.Adam(weight_decay=λ)`` does; a penalty ``λ‖w‖²`` (gradient ``+2λw``) is
    ``add_decayed_weights(2λ)``.  After an ascent-signed direction and before
    the learning rate it is decoupled decay as in AdamW: ``chain(scale_by_adam(),
    add_decayed_weights(λ), scale_by_learning_rate(η))`` is ``adamw(η, weight_decay=λ)``.
    ``mask`` is as in ``adamw``: a bool
    pytree (or prefix) or a function ``params -> bool pytree``.  ``update`` needs ``params``.
    """
    _tree.check_finite_non_negative("add_decayed_weights: weight_decay", weight_decay)

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(updates: PyTree, state: EmptyState, params: PyTree | None = None,
               **extra_args):
        updates = _tree.as_float_arrays("add_decayed_weights.update", "updates", updates)
        if params is None:
            raise ValueError("add_decayed_weights.update: params are required; call "
                             "update(updates, state, params)")
        _check_against_params("add_decayed_weights.update", updates, params)
        mask_tree = _tree.resolve_mask("add_decayed_weights", True if mask is None else mask,
                                       params)
        _tree.check_mask_leaves("add_decayed_weights", mask_tree)

        def leaf_update(u, p, decay_this_leaf):
            cdt = _tree.compute_dtype(u.dtype, jnp.result_type(p))
            decay = _tree.select_masked(decay_this_leaf, weight_decay * jnp.asarray(p).astype(cdt))
            return ((u.astype(cdt) + decay).astype(u.dtype),)

        (decayed,) = _tree.map_leaves(leaf_update, 1, updates, params, mask_tree)
        return decayed, state

    return Optimizer(init, update)


def clip(max_delta: float) -> Optimizer:
    """Clip every update entry to ``[−δ, δ]``: ``u ← min(max(u, −δ), δ)`` (stateless).

    Elementwise, unlike :func:`clip_by_global_norm`; as ``optax.clip(max_delta)`` and
    ``torch.nn.utils.clip_grad_value_(clip_value=δ)``.  NaN entries stay NaN (pair with
    :func:`zero_nans` or :func:`apply_if_finite`).

    Args:
      max_delta: ``δ > 0``, finite.
    """
    checks.positive("clip: max_delta", max_delta)

    def leaf(u):
        delta = jnp.asarray(max_delta).astype(u.dtype)
        return (jnp.clip(u, -delta, delta),)

    return leafwise("clip", EmptyState, leaf, input_name="updates")


class ZeroNansState(NamedTuple):
    """``found_nan``: one bool scalar per leaf, whether the latest updates of that leaf had a
    NaN (for monitoring; the transform does not read it)."""

    found_nan: PyTree


def zero_nans() -> Optimizer:
    """Replace NaN entries of the updates by 0: ``u ← 0 where u is NaN``.  ±inf pass through.

    The state records, per leaf, whether a NaN was replaced in the latest call.  As
    ``optax.zero_nans()``.  Put it before the optimizer (``chain(zero_nans(), adam(η))``) so
    that a NaN gradient entry does not reach the moments.
    """
    def init(params: PyTree) -> ZeroNansState:
        _tree.check_float_leaves("zero_nans.init", "params", params)
        return ZeroNansState(jax.tree_util.tree_map(lambda _: jnp.zeros((), jnp.bool_), params))

    def update(updates: PyTree, state: ZeroNansState, params: PyTree | None = None,
               **extra_args):
        updates = _tree.as_float_arrays("zero_nans.update", "updates", updates)
        _check_against_params("zero_nans.update", updates, params)
        if not isinstance(state, ZeroNansState):
            raise TypeError(f"zero_nans.update: state must be a ZeroNansState (from "
                            f"zero_nans().init), got {type(state).__name__}")
        if jax.tree_util.tree_structure(updates) != jax.tree_util.tree_structure(state.found_nan):
            raise ValueError(f"zero_nans.update: the tree structure of updates differs from "
                             f"that of state.found_nan.\n  updates: "
                             f"{jax.tree_util.tree_structure(updates)}\n  state.found_nan: "
                             f"{jax.tree_util.tree_structure(state.found_nan)}")
        found = jax.tree_util.tree_map(lambda u: jnp.any(jnp.isnan(u)), updates)
        cleaned = jax.tree_util.tree_map(
            lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates)
        return cleaned, ZeroNansState(found)

    return Optimizer(init, update)


class ApplyIfFiniteState(NamedTuple):
    """``inner_state``: the wrapped optimizer's state; ``notfinite_count``: int32 number of
    steps whose gradients were not all finite (in all; optax calls it ``total_notfinite``);
    ``last_finite``: bool, whether the latest gradients were all finite;
    ``consecutive_notfinite_count``: int32 length of the current run of non-finite steps, 0
    after a finite one (optax's ``notfinite_count``)."""

    inner_state: PyTree
    notfinite_count: Array
    last_finite: Array
    consecutive_notfinite_count: Array


def apply_if_finite(optimizer: Optimizer,
                    max_consecutive_errors: int | None = None) -> Optimizer:
    """Skip steps whose gradients contain NaN or ±inf, up to a number in a row.

    With ``c`` the consecutive non-finite steps including this one (0 if this one is finite)
    and ``m = max_consecutive_errors``, the step is applied when the gradients are all
    finite or ``c > m``: the first ``m`` non-finite steps of a run are skipped and from the
    ``(m+1)``-th on they are applied, until a finite step resets ``c``.  This is optax's
    rule in ``optax.apply_if_finite(inner, max_consecutive_errors=m)``; ``m=None`` (the
    default) skips every non-finite step.  An applied step is ``optimizer``'s update (a
    non-finite one then reaches the parameters); a skipped step returns zeros (the
    parameters do not move) and keeps the inner state as it was (its step count included).
    Both counters (the consecutive ``c`` and the total) are in the state.  The check is one
    reduction over the gradients; the inner step runs under ``lax.cond`` (so the skip costs
    no recompilation; under ``vmap`` the conditional becomes a select, still correct).

    Args:
      optimizer: the optimizer to guard.
      max_consecutive_errors: ``m >= 0`` (``0`` applies every step and only counts), or
        ``None``: never apply a non-finite step.
    """
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"apply_if_finite: optimizer must be an Optimizer (init, update), "
                        f"got {type(optimizer).__name__}")
    if max_consecutive_errors is not None:
        max_consecutive_errors = checks.whole_number("apply_if_finite: max_consecutive_errors",
                                                     max_consecutive_errors, minimum=0)

    def init(params: PyTree) -> ApplyIfFiniteState:
        return ApplyIfFiniteState(inner_state=optimizer.init(params),
                                  notfinite_count=_tree.zero_count(),
                                  last_finite=jnp.ones((), jnp.bool_),
                                  consecutive_notfinite_count=_tree.zero_count())

    def update(grads: PyTree, state: ApplyIfFiniteState, params: PyTree | None = None,
               **extra_args):
        grads = _tree.as_float_arrays("apply_if_finite.update", "grads", grads)
        if not isinstance(state, ApplyIfFiniteState):
            raise TypeError(f"apply_if_finite.update: state must be an ApplyIfFiniteState "
                            f"(from apply_if_finite(...).init), got {type(state).__name__}")
        finite = jnp.ones((), jnp.bool_)
        for g in jax.tree_util.tree_leaves(grads):
            finite = finite & jnp.all(jnp.isfinite(g))
        consecutive = jnp.where(finite, jnp.zeros((), jnp.int32),
                                _tree.increment_count(state.consecutive_notfinite_count))
        apply = finite
        if max_consecutive_errors is not None:
            apply = finite | (consecutive > max_consecutive_errors)
        updates, inner_state, _ = update_if(
            apply, lambda grads, inner: call_update(optimizer, grads, inner, params, extra_args),
            grads, state.inner_state)
        return updates, ApplyIfFiniteState(
            inner_state=inner_state,
            notfinite_count=jnp.where(finite, state.notfinite_count,
                                      _tree.increment_count(state.notfinite_count)),
            last_finite=finite,
            consecutive_notfinite_count=consecutive)

    return Optimizer(init, update)
