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
optax computes it on every call and selects), no gradient-step counter is kept, and no
array is copied: a call moves the gradient, the accumulator and the parameters once, and
the ``k``-th call the inner state as well (at 10M parameters, 0.7 of an ``adam`` call on
average; ``benchmarks/optimizers.py``).  Under ``vmap`` the conditional becomes a select and
both branches run (still correct).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PyTree
from functional_dl.optim import _tree
from functional_dl.optim.base import call_update, update_if

__all__ = ["MultiSteps", "MultiStepsState"]


class MultiStepsState(NamedTuple):
    """``num_micro_steps``: int32 calls of ``update`` so far (it stops at ``2³¹ − 1``);
    ``accumulated_grads``: the sum of the gradients of the current cycle, shaped like the
    parameters, in float32 at least (float64 for float64 leaves) -- after a cycle's last
    call it is scratch that the next call overwrites (:meth:`MultiSteps.accumulated_grads`
    reads the sum since the last inner step at any time); ``inner_state``: the inner
    optimizer's state."""

    num_micro_steps: Array
    accumulated_grads: PyTree
    inner_state: PyTree


@dataclasses.dataclass(frozen=True, eq=False)
class MultiSteps:
    """Accumulate ``k = every_k_schedule`` micro-batch gradients, then step ``inner`` once::

        n       = number of earlier calls,   j = n mod k
        A       ← g_n                when j = 0
        A       ← A + g_n            otherwise
        u_n     = inner(A / k)       when j = k − 1
        u_n     = 0                  otherwise

    (the reset happens lazily, on the first call of the next cycle, so that the k-th call
    can reuse A's buffer for the updates and copy nothing).

    The mean is formed as the float32 (float64) sum divided by ``k`` and cast back to the
    gradient's dtype before ``inner`` sees it.  ``params`` and keyword ``extra_args`` reach
    ``inner`` on its step (those of the ``k``-th call).  The state is the ``int32`` counter,
    one parameter-shaped accumulator and ``inner``'s state (:class:`MultiStepsState`).

    Equal to ``optax.MultiSteps(inner, every_k_schedule=k)``: the same updates for the same
    gradients.  optax's ``gradient_step`` is ``num_inner_steps(state)`` here and its
    ``mini_step`` is ``num_micro_steps % k``; its ``acc_grads`` is the running mean of
    the gradients that :meth:`accumulated_grads` sums (optax zeroes it on the ``k``-th
    call, where this state reuses the buffer for the updates).

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
        # The accumulator is reset lazily (a cycle's first call starts the sum from g), so A
        # has one reader that is also its writer, and the k-th call can leave the updates in
        # A's buffer (update_if): XLA keeps every array in place.  An eager reset rewrites A
        # in a kernel XLA cannot order after the inner step's reads, and XLA copies A, and
        # the inner state with it, on every call.
        in_cycle = state.num_micro_steps % k
        first, emit = in_cycle == 0, in_cycle == k - 1
        accumulated = jax.tree.map(
            lambda a, g: jnp.where(first, g.astype(a.dtype), a + g.astype(a.dtype)),
            state.accumulated_grads, grads)

        def inner_step(accumulated, inner_state):
            mean = jax.tree.map(lambda a, g: (a / k).astype(g.dtype), accumulated, grads)
            return call_update(self.inner, mean, inner_state, params, extra_args)

        updates, inner_state, scratch = update_if(emit, inner_step, accumulated,
                                                  state.inner_state)
        return updates, MultiStepsState(count, accumulated if scratch is None else scratch,
                                        inner_state)

    def accumulated_grads(self, state: MultiStepsState) -> PyTree:
        """The sum of the gradients since the last inner step (zeros right after one).
        ``state.accumulated_grads`` is that sum except after a cycle's ``k``-th call, when
        its buffer is scratch that the next call overwrites."""
        fresh = state.num_micro_steps % self.every_k_schedule == 0
        return jax.tree.map(lambda a: jnp.where(fresh, jnp.zeros_like(a), a),
                            state.accumulated_grads)

    def num_inner_steps(self, state: MultiStepsState) -> Array:
        """How many steps ``inner`` has taken: ``num_micro_steps // k``."""
        return state.num_micro_steps // self.every_k_schedule

    def has_updated(self, state: MultiStepsState) -> Array:
        """Whether the call that returned ``state`` stepped ``inner`` (a bool scalar)."""
        return (state.num_micro_steps > 0) & (state.num_micro_steps % self.every_k_schedule == 0)

