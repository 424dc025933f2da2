"""The optimizer contract: ``Optimizer(init, update)``, ``apply_updates`` and ``chain``.

An optimizer is a pair of pure functions::

    state = init(params)
    updates, state = update(grads, state, params=None)
    params = apply_updates(params, updates)

``updates`` already carry the minus sign (``θ ← θ + u``).  ``state`` is a pytree of arrays
(NamedTuples of arrays, the step count an int32 scalar), so it can be jitted, vmapped,
sharded and saved.  This is the protocol of optax's ``GradientTransformation``: an optimizer
from this package runs in a loop written for optax and an optax transformation runs with
``apply_updates`` and ``chain`` from here.  Nothing here imports optax.

Dtypes: ``update`` returns each update leaf in its gradient leaf's dtype, state leaves keep
their dtype across updates, and ``apply_updates`` casts ``θ + u`` back to each parameter
leaf's dtype.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import PyTree
from functional_dl.optim._tree import check_same_structure

InitFn = Callable[[PyTree], PyTree]
UpdateFn = Callable[..., tuple[PyTree, PyTree]]


class Optimizer(NamedTuple):
    """``init(params) -> state`` and ``update(grads, state, params=None) -> (updates, state)``."""

    init: InitFn
    update: UpdateFn


class EmptyState(NamedTuple):
    """State of a transform that keeps nothing between steps."""


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """``θ ← θ + u`` leaf by leaf, each result cast to its parameter leaf's dtype.

    The sum is formed in the wider of the two dtypes (a float32 update applied to a
    bfloat16 parameter is added in float32, then rounded once).

    Raises:
      ValueError: when ``updates`` and ``params`` differ in tree structure or leaf shapes.
    """
    check_same_structure("apply_updates", "updates", updates, "params", params)
    return jax.tree_util.tree_map(
        lambda p, u: (p + u).astype(jnp.result_type(p)), params, updates)


def _accepts_extra_args(update: Callable) -> bool:
    """Whether ``update`` takes keyword arguments beyond ``(grads, state, params)``."""
    try:
        parameters = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def call_update(optimizer: Any, updates: PyTree, state: PyTree, params: PyTree | None,
                extra_args: dict) -> tuple[PyTree, PyTree]:
    """``optimizer.update(updates, state, params, **extra_args)``, the extra arguments
    dropped for an update that does not take ``**kwargs`` (a foreign or older transform)."""
    if extra_args and _accepts_extra_args(optimizer.update):
        return optimizer.update(updates, state, params, **extra_args)
    return optimizer.update(updates, state, params)


def update_if(pred: Any, step: Callable, spare: PyTree,
              state: PyTree) -> tuple[PyTree, PyTree, PyTree | None]:
    """``step(spare, state) -> (updates, state)`` where ``pred``; else zero updates and
    ``state`` as it was.  Returns ``(updates, state, carrier)``.

    The step runs under ``lax.cond`` whose skipping branch passes its operands through.
    Computing the step always and selecting with ``where`` instead makes XLA copy ``state``
    on every call (the old state is read by the step's kernels and by the select, in an order
    XLA cannot see): that made ``apply_if_finite(adam)`` 6× an ``adam`` step at 10M
    parameters.  When the updates fit in ``spare`` (its structure and shapes, dtypes it
    holds exactly), they travel in ``spare``'s buffer: the skipping branch hands ``spare``
    on and the zeros are selected outside, where XLA fuses them into the parameter update,
    so no branch writes an array it does not need.  ``carrier`` is then that buffer's new
    value (the updates in ``spare``'s dtypes where ``pred``, ``spare`` itself elsewhere);
    otherwise the skipping branch writes zeros and ``carrier`` is None.  Under ``vmap`` the
    conditional becomes a select (both branches run; still correct).
    """
    shapes = jax.eval_shape(step, spare, state)[0]
    fits = jax.tree.structure(shapes) == jax.tree.structure(spare) and all(
        s.shape == a.shape and jnp.promote_types(s.dtype, a.dtype) == a.dtype
        for s, a in zip(jax.tree.leaves(shapes), jax.tree.leaves(spare)))
    if not fits:
        updates, state = jax.lax.cond(
            pred, step,
            lambda _, s: (jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes), s),
            spare, state)
        return updates, state, None

    def carried_step(spare, state):
        updates, state = step(spare, state)
        return jax.tree.map(lambda u, a: u.astype(a.dtype), updates, spare), state

    carrier, state = jax.lax.cond(pred, carried_step, lambda a, s: (a, s), spare, state)
    updates = jax.tree.map(lambda x, s: jnp.where(pred, x, 0).astype(s.dtype), carrier, shapes)
    return updates, state, carrier


def chain(*optimizers: Optimizer) -> Optimizer:
    """Compose optimizers left to right: the updates of each are the gradients of the next.

    ``chain(a, b).update(g, (sa, sb), θ, **extra)`` is ``u, sa = a.update(g, sa, θ, **extra)``
    followed by ``u, sb = b.update(u, sb, θ, **extra)``.  The state is the tuple of the
    members' states.  ``chain()`` is the identity.  Members may be any object with
    ``init``/``update`` in this protocol (including optax transformations); keyword
    ``extra_args`` (optax's ``GradientTransformationExtraArgs``: ``value``, ``grad``,
    ``value_fn`` of a line search, ...) reach every member whose ``update`` takes
    ``**kwargs`` and are dropped for the others.
    """
    for position, candidate in enumerate(optimizers):
        checks.optimizer(f"chain: argument {position}", candidate)

    def init(params: PyTree) -> tuple:
        return tuple(opt.init(params) for opt in optimizers)

    def update(grads: PyTree, state: tuple, params: PyTree | None = None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(optimizers):
            raise ValueError(f"chain.update: state must be a tuple of {len(optimizers)} member "
                             f"states (from chain(...).init), got {type(state).__name__}")
        new_states = []
        updates = grads
        for opt, member_state in zip(optimizers, state):
            updates, member_state = call_update(opt, updates, member_state, params, extra_args)
            new_states.append(member_state)
        return updates, tuple(new_states)

    return Optimizer(init, update)
