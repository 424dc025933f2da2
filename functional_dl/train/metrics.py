"""Evaluation over a whole data set in batches, and classification accuracy.

``evaluate`` returns exact data-set means however the data is batched: a batch of size
``B_k`` reporting a batch mean ``m_k`` contributes ``B_k·m_k``, so the result is
``Σ_k B_k·m_k / Σ_k B_k``, the mean over all ``n`` examples.
"""
from __future__ import annotations

import functools
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from functional_dl import checks, distributed
from functional_dl._types import Array, PyTree
from functional_dl.train.data import check_mesh_arguments, sequential_batches


def accuracy(logits: Array, labels: Array) -> Array:
    """Fraction of rows whose largest score is the label: ``mean_i [argmax_c logits[i, c] = y_i]``.

    Args:
      logits: ``(..., C)`` class scores (logits or probabilities).
      labels: ``(...)`` integer labels in ``[0, C)``.

    Returns:
      A float32 scalar in ``[0, 1]``.  Ties go to the lowest class index (``argmax``).
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim < 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(f"labels shape {labels.shape} must equal logits shape {logits.shape} "
                         "without its last (class) axis")
    checks.integer_dtype("labels", labels)
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


@partial(jax.jit, static_argnums=0)
def _weighted_batch_sums(apply_fn: Callable, params: PyTree, batch: PyTree) -> PyTree:
    """Per-output sums over the batch: ``Σ_i v_i`` for per-example ``v``, ``B·m`` for a mean ``m``."""
    size = jax.tree.leaves(batch)[0].shape[0]
    out = apply_fn(params, batch)

    def weighted_sum(value):
        value = jnp.asarray(value)
        value = value.astype(jnp.promote_types(value.dtype, jnp.float32))  # bools, ints too
        if value.shape == ():
            return value * size
        if value.shape == (size,):
            return jnp.sum(value)
        raise ValueError("apply_fn must return scalars (batch means) or per-example arrays of "
                         f"shape ({size},), got shape {value.shape}")
    return jax.tree.map(weighted_sum, out)


@functools.lru_cache(maxsize=64)
def _with_model_state(apply_fn: Callable) -> Callable:
    """``apply_fn(params, model_state, batch)`` as a function of ``((params, model_state),
    batch)``, one per ``apply_fn`` (so the jitted batch function is reused)."""
    def apply_with_state(params_and_state, batch):
        params, model_state = params_and_state
        return apply_fn(params, model_state, batch)
    return apply_with_state


def evaluate(apply_fn: Callable[[PyTree, PyTree], Any], params: PyTree, arrays: PyTree,
             batch_size: int, *, model_state: PyTree = None, mesh: Mesh | None = None,
             axis_name: str | None = None) -> Any:
    """Data-set means of ``apply_fn(params, batch)`` computed batch by batch, in order.

    Args:
      apply_fn: ``apply_fn(params, batch)`` returning a scalar, a dict (any pytree) of
        scalars, or per-example arrays of shape ``(B,)``.  A scalar is read as the mean over
        its batch (e.g. ``losses.mean()`` or ``accuracy(logits, y)``).  It is jitted here
        (once per function object and batch shape), so pass the same function each time.
      params: model parameters.
      arrays: pytree of arrays sharing the leading example axis, in the structure
        ``apply_fn`` expects for ``batch``.
      batch_size: examples per batch (memory bound only: the result does not depend on it).
      model_state: the state of a stateful model (``nn.BatchNorm``'s running statistics);
        when given, ``apply_fn(params, model_state, batch)`` is called instead (in
        evaluation mode the state does not change, so any new state it computes is the
        caller's to drop).  Replicated over ``mesh`` like ``params``.
      mesh, axis_name: data parallelism (``jax.sharding.Mesh``, one process): ``params`` are
        replicated over ``mesh`` and every batch is split along its axis ``axis_name``
        (default its first), so ``batch_size`` must be a multiple of the devices on that
        axis; a short final batch that does not divide is computed whole on every device
        (``distributed.split_or_replicate``).  The means are those without a mesh, up to
        floating-point summation order.

    Returns:
      The structure of ``apply_fn``'s output holding Python floats, each the mean over all
      examples ``Σ_k B_k·m_k / n`` (sums accumulate in float32, or float64 for float64
      outputs).
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {apply_fn!r}")
    try:
        hash(apply_fn)
    except TypeError:
        raise TypeError("apply_fn must be hashable (it is a static argument of the jitted "
                        "batch function); wrap the callable object in a plain function") from None
    in_order = sequential_batches(arrays, batch_size)     # checks batch_size and arrays
    check_mesh_arguments(mesh, axis_name, batch_size)
    if model_state is not None:
        apply_fn, params = _with_model_state(apply_fn), (params, model_state)
    if mesh is not None:
        params = jax.device_put(params, distributed.replicated_sharding(mesh))
    totals, num = None, 0
    for batch in in_order:
        num += jax.tree.leaves(batch)[0].shape[0]
        if mesh is not None:
            batch = distributed.split_or_replicate(batch, mesh, axis_name)
        sums = _weighted_batch_sums(apply_fn, params, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return jax.tree.map(lambda total: float(np.asarray(total, dtype=np.float64) / num),
                        jax.device_get(totals))
