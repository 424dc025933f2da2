"""Minibatches of a pytree of arrays that share their leading (example) axis.

``batches(key, arrays, batch_size)`` visits a permutation ``π = permutation(key, n)`` of
the ``n`` examples in consecutive slices ``π[i·b : (i+1)·b]``, so each example appears
exactly once per epoch (the last, shorter batch is dropped with ``drop_last=True``).
A new key gives a new order: split or ``fold_in`` the key once per epoch.
"""
from __future__ import annotations

import operator
from collections.abc import Iterator
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl._types import PRNGKey, PyTree


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool):
        raise TypeError(f"batch_size must be an int >= 1, got {batch_size!r}")
    try:
        size = operator.index(batch_size)
    except TypeError:
        raise TypeError(f"batch_size must be an int >= 1, got {batch_size!r}") from None
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return size


def num_examples(arrays: PyTree, name: str = "arrays") -> int:
    """The common leading-axis length ``n >= 1`` of the leaves of ``arrays``.

    Raises ValueError (naming ``name``) for no arrays, a scalar leaf, different lengths or
    ``n = 0``.
    """
    leaves = jax.tree.leaves(arrays)
    if not leaves:
        raise ValueError(f"{name} must contain at least one array, got {arrays!r}")
    lengths = []
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(f"{name}: every array needs a leading example axis, got a scalar")
        lengths.append(shape[0])
    if len(set(lengths)) != 1:
        raise ValueError(f"{name} must all have the same length (leading axis), got lengths "
                         f"{lengths}")
    if lengths[0] == 0:
        raise ValueError(f"{name} must hold at least one example, got leading length 0")
    return lengths[0]


def num_batches(num: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches one epoch over ``num`` examples has: ⌊n/b⌋, or ⌈n/b⌉ without drop_last."""
    size = _check_batch_size(batch_size)
    return num // size if drop_last else -(-num // size)


@partial(jax.jit, static_argnums=3)
def _gather(leaves: list, order: jax.Array, start: jax.Array, size: int) -> list:
    """Rows ``order[start : start + size]`` of every leaf (one compiled program per size)."""
    idx = jax.lax.dynamic_slice_in_dim(order, start, size)
    return [jnp.take(leaf, idx, axis=0) for leaf in leaves]


@partial(jax.jit, static_argnums=2)
def _slice(leaves: list, start: jax.Array, size: int) -> list:
    return [jax.lax.dynamic_slice_in_dim(leaf, start, size) for leaf in leaves]


def _prepare(arrays: PyTree, batch_size: Any, name: str = "arrays"):
    size = _check_batch_size(batch_size)
    num = num_examples(arrays, name)
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
      ValueError: ``batch_size < 1``, arrays of different lengths, or no arrays.

    Arguments are checked when ``batches`` is called, not when iteration starts.
    """
    size, num, leaves, treedef = _prepare(arrays, batch_size)
    if key is None:
        raise ValueError("key: a PRNG key is needed to shuffle; pass key=jax.random.key(0)")
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
