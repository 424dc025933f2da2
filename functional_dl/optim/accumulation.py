"""Gradient accumulation: ``MultiSteps(inner, k)`` makes one step of ``inner`` per ``k`` calls.

::

    accumulate = optim.MultiSteps(optim.adam(1e-3), every_k_schedule=4)
    state = accumulate.init(params)
    for micro_batch in micro_batches:            # 4 micro-batches per optimizer step
        updates, state = accumulate.update(grad(loss)(params, micro_batch), state, params)
        params = optim.apply_updates(params, updates)     # unchanged until the 4th
        if accumulate.has_updated(state): ...             # True after every 4th call

For a loss that is a mean over examples and micro-batches of equal size, ``k`` micro-batch
calls are one step of ``inner`` on the concatenated batch, with ``k`` times less memory
for activations.  As ``optax.MultiSteps(inner, k)`` (``use_grad_mean=True``), with a smaller
state and a cheaper step: the inner update runs only on the ``k``-th call (``lax.cond``;
optax computes it on every call and selects), and no gradient-step counter is kept.
Under ``vmap`` the conditional becomes a select and both branches run (still correct).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PyTree
from functional_dl.optim import _tree
from functional_dl.optim.base import call_update

__all__ = ["MultiSteps", "MultiStepsState"]


class MultiStepsState(NamedTuple):
    """``num_micro_steps``: int32 calls of ``update`` so far (it stops at ``2³¹ − 1``);
    ``accumulated_grads``: the sum of the gradients since the last inner step, shaped like
    the parameters, in float32 at least (float64 for float64 leaves); ``inner_state``: the
    inner optimizer's state."""

    num_micro_steps: Array
    accumulated_grads: PyTree
    inner_state: PyTree


@dataclasses.dataclass(frozen=True, eq=False)
class MultiSteps:
    """Accumulate ``k = every_k_schedule`` micro-batch gradients, then step ``inner`` once::

        n       = number of earlier calls,   j = n mod k
        A       ← A + g_n
        u_n     = inner(A / k)  and  A ← 0    when j = k − 1
        u_n     = 0                            otherwise

    The mean is formed as the float32 (float64) sum divided by ``k`` and cast back to the
    gradient's dtype before ``inner`` sees it.  ``params`` and keyword ``extra_args`` reach
    ``inner`` on its step (those of the ``k``-th call).  The state is the ``int32`` counter,
    one parameter-shaped accumulator and ``inner``'s state (:class:`MultiStepsState`).

    Equal to ``optax.MultiSteps(inner, every_k_schedule=k)``: the same updates for the same
    gradients.  optax's ``gradient_step`` is ``num_inner_steps(state)`` here and its
    ``mini_step`` is ``num_micro_steps % k``.

    ``MultiSteps`` is an optimizer (``init``/``update``) that works wherever one does: in
    ``chain``, in ``train.fit`` (one call per batch; the epoch's batches are the
    micro-batches) or in an optax loop.

    Args:
      inner: the optimizer to step on the mean gradient.
      every_k_schedule: ``k >= 1`` micro-batches per inner step (a Python int: it is part of
        the program; ``k = 1`` is ``inner`` itself).
    """

    inner: Any
    every_k_schedule: int

    def __post_init__(self):
        checks.optimizer("MultiSteps: inner", self.inner)
        if callable(self.every_k_schedule):
            raise TypeError("MultiSteps: every_k_schedule must be an int >= 1 (a schedule of "
                            "accumulation lengths is not supported), got a function")
        object.__setattr__(self, "every_k_schedule", checks.whole_number(
            "MultiSteps: every_k_schedule", self.every_k_schedule, minimum=1))

    def init(self, params: PyTree) -> MultiStepsState:
        _tree.check_float_leaves("MultiSteps.init", "params", params)
        accumulator = jax.tree.map(
            lambda p: jnp.zeros_like(p, dtype=_tree.compute_dtype(jnp.result_type(p))), params)
        return MultiStepsState(_tree.zero_count(), accumulator, self.inner.init(params))

    def update(self, grads: PyTree, state: MultiStepsState, params: PyTree | None = None,
               **extra_args) -> tuple[PyTree, MultiStepsState]:
        where = "MultiSteps.update"
        grads = _tree.as_float_arrays(where, "grads", grads)
        if not isinstance(state, MultiStepsState):
            raise TypeError(f"{where}: state must be a MultiStepsState (from MultiSteps(...)"
                            f".init), got {type(state).__name__}")
        _tree.check_same_structure(where, "grads", grads, "state.accumulated_grads",
                                   state.accumulated_grads)
        if params is not None:
            _tree.check_same_structure(where, "grads", grads, "params", params)
        k = self.every_k_schedule
        count = _tree.increment_count(state.num_micro_steps)
        if k == 1:
            updates, inner_state = call_update(self.inner, grads, state.inner_state, params,
                                               extra_args)
            return updates, MultiStepsState(count, state.accumulated_grads, inner_state)
        # Only the inner step is under the conditional.  The skipping branch does no work: it
        # passes the gradients through (when they are shaped like the updates) and the zeros
        # are selected outside, where XLA fuses them into the parameter update; the new
        # accumulator is formed outside too, in one pass over (A, g).
        def inner_step(accumulated, inner_state, grads, params):
            mean = jax.tree.map(lambda a, g: ((a + g.astype(a.dtype)) / k).astype(g.dtype),
                                accumulated, grads)
            return call_update(self.inner, mean, inner_state, params, extra_args)

        def skip(accumulated, inner_state, grads, params):
            shapes = jax.eval_shape(inner_step, accumulated, inner_state, grads, params)[0]
            if jax.tree.structure(shapes) == jax.tree.structure(grads) and all(
                    (s.shape, s.dtype) == (g.shape, g.dtype)
                    for s, g in zip(jax.tree.leaves(shapes), jax.tree.leaves(grads))):
                return grads, inner_state
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), inner_state

        emit = state.num_micro_steps % k == k - 1
        updates, inner_state = lax.cond(emit, inner_step, skip, state.accumulated_grads,
                                        state.inner_state, grads, params)
        updates = jax.tree.map(lambda u: jnp.where(emit, u, jnp.zeros_like(u)), updates)
        accumulated = jax.tree.map(
            lambda a, g: jnp.where(emit, jnp.zeros_like(a), a + g.astype(a.dtype)),
            state.accumulated_grads, grads)
        return updates, MultiStepsState(count, accumulated, inner_state)

    def num_inner_steps(self, state: MultiStepsState) -> Array:
        """How many steps ``inner`` has taken: ``num_micro_steps // k``."""
        return state.num_micro_steps // self.every_k_schedule

    def has_updated(self, state: MultiStepsState) -> Array:
        """Whether the call that returned ``state`` stepped ``inner`` (a bool scalar)."""
        return (state.num_micro_steps > 0) & (state.num_micro_steps % self.every_k_schedule == 0)
