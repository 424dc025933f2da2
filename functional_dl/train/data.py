"""Minibatches of a pytree of arrays that share their leading (example) axis.

``batches(key, arrays, batch_size)`` visits a permutation ``π = permutation(key, n)`` of
the ``n`` examples in consecutive slices ``π[i·b : (i+1)·b]``, so each example appears
exactly once per epoch (the last, shorter batch is dropped with ``drop_last=True``).
A new key gives a new order: split or ``fold_in`` the key once per epoch.
``sharded_batches`` is the same epoch with every batch split over a device mesh
(``functional_dl.distributed``).
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from functional_dl import checks, distributed
from functional_dl._types import PRNGKey, PyTree


def num_examples(arrays: PyTree, name: str = "arrays") -> int:
    """The common leading-axis length ``n >= 1`` of the leaves of ``arrays``.

    Raises ValueError (naming ``name``) for no arrays, a scalar leaf, different lengths or
    ``n = 0``.
    """
    return checks.leading_length(name, arrays)


def num_batches(num: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches one epoch over ``num`` examples has: ⌊n/b⌋, or ⌈n/b⌉ without drop_last."""
    size = checks.whole_number("batch_size", batch_size, minimum=1)
    return num // size if drop_last else -(-num // size)


@partial(jax.jit, static_argnums=3)
def _gather(leaves: list, order: jax.Array, start: jax.Array, size: int) -> list:
    """Rows ``order[start : start + size]`` of every leaf (one compiled program per size)."""
    idx = jax.lax.dynamic_slice_in_dim(order, start, size)
    return [jnp.take(leaf, idx, axis=0) for leaf in leaves]


@partial(jax.jit, static_argnums=2)
def _slice(leaves: list, start: jax.Array, size: int) -> list:
    return [jax.lax.dynamic_slice_in_dim(leaf, start, size) for leaf in leaves]


def _prepare(arrays: PyTree, batch_size: Any):
    """The checked batch size, ``n``, the leaves as JAX arrays and the tree structure."""
    size = checks.whole_number("batch_size", batch_size, minimum=1)
    num = checks.leading_length("arrays", arrays)
    leaves, treedef = jax.tree.flatten(arrays)
    return size, num, [jnp.asarray(leaf) for leaf in leaves], treedef


def _batch_starts(num: int, size: int, drop_last: bool) -> list[tuple[int, int]]:
    full = num // size
    starts = [(i * size, size) for i in range(full)]
    if not drop_last and num % size:
        starts.append((full * size, num % size))
    return starts


def batches(key: PRNGKey, arrays: PyTree, batch_size: int, *,
            drop_last: bool = False) -> Iterator[PyTree]:
    """Shuffled minibatches of ``arrays`` (a tuple, dict or any pytree of arrays).

    Args:
      key: PRNG key fixing this epoch's order ``π = jax.random.permutation(key, n)``.
      arrays: pytree whose leaves all have the same leading length ``n``.
      batch_size: examples per batch ``b >= 1``.
      drop_last: drop the final batch when it has fewer than ``b`` examples (keeps every
        batch the same shape, so the train step compiles once).

    Yields:
      Pytrees with the structure of ``arrays`` holding rows ``π[i·b:(i+1)·b]``.

    Raises:
      ValueError: ``batch_size < 1``, arrays of different lengths, no arrays, or no key.
      TypeError: ``batch_size`` not an int, ``key`` not a PRNG key.

    Arguments are checked when ``batches`` is called, not when iteration starts.
    """
    size, num, leaves, treedef = _prepare(arrays, batch_size)
    checks.prng_key("key", key, what="shuffling the batches", single=True)
    drop_last = checks.boolean("drop_last", drop_last)
    order = jax.random.permutation(key, num)
    starts = _batch_starts(num, size, drop_last)

    def generate():
        for start, length in starts:
            yield jax.tree.unflatten(treedef, _gather(leaves, order, jnp.int32(start), length))
    return generate()


def sequential_batches(arrays: PyTree, batch_size: int) -> Iterator[PyTree]:
    """``arrays`` in order, in slices of ``batch_size`` (the last one may be shorter)."""
    size, num, leaves, treedef = _prepare(arrays, batch_size)
    starts = _batch_starts(num, size, drop_last=False)

    def generate():
        for start, length in starts:
            yield jax.tree.unflatten(treedef, _slice(leaves, jnp.int32(start), length))
    return generate()


def sharded_batches(key: PRNGKey, arrays: PyTree, batch_size: int, mesh: Mesh,
                    axis_name: Optional[str] = None) -> Iterator[PyTree]:
    """``batches(key, arrays, batch_size, drop_last=True)``, each batch split over ``mesh``.

    Every batch has ``batch_size`` examples (so the train step compiles once) and is placed
    with ``distributed.shard_batch``: rows split along the mesh axis ``axis_name`` (default
    its first).  ``batch_size`` must be a multiple of ``distributed.num_batch_parts(mesh)``;
    that and the arrays are checked here, before the first batch.
    """
    distributed.check_mesh(mesh)
    epoch = batches(key, arrays, batch_size, drop_last=True)
    distributed.check_batch_size_divides(batch_size, mesh, axis_name)
    return (distributed.shard_batch(batch, mesh, axis_name) for batch in epoch)


def check_mesh_arguments(mesh: Any, axis_name: Any, batch_size: int) -> None:
    """The checks of ``fit(..., mesh, axis_name)`` and ``evaluate``, before any work.

    ``mesh=None`` (no data parallelism) admits no ``axis_name``; a mesh must be a ``Mesh``
    of this one process, ``axis_name`` one of its axes, and ``batch_size`` a multiple of
    the devices along that axis.
    """
    if mesh is None:
        if axis_name is not None:
            raise ValueError(f"axis_name={axis_name!r} names an axis of a mesh; pass mesh too "
                             "(e.g. mesh=distributed.make_mesh())")
        return
    distributed.check_mesh(mesh)
    distributed.data_axis_name(mesh, axis_name)
    if jax.process_count() > 1:
        raise NotImplementedError(
            f"mesh: fit and evaluate place data for one process, this is one of "
            f"{jax.process_count()}; on several hosts write the loop of "
            "functional_dl.distributed's module doc (shard_batch of each host's part)")
    distributed.check_batch_size_divides(batch_size, mesh, axis_name)
