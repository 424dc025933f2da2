"""Where arrays live on a device mesh: a full copy on every device, or split along one axis.

    replicated_sharding(mesh)      = NamedSharding(mesh, P())       # parameters, optimizer state
    data_sharding(mesh, axis_name) = NamedSharding(mesh, P(axis))   # batches, rows split

A batch of ``b`` rows splits over the ``p = num_batch_parts(mesh, axis_name)`` devices of
the axis only when ``p`` divides ``b``: device ``d`` then holds rows ``d·b/p`` to
``(d+1)·b/p − 1``.

These are the placement primitives of data parallelism.  They live in ``train`` so that
``fit`` and ``evaluate`` can place their arrays without importing
``functional_dl.distributed``, which builds on ``train`` (the arrows of DESIGN.md point one
way); ``distributed`` re-exports them beside ``make_mesh`` and ``sharded_batches`` and
explains the mathematics and the set-up of several hosts in its module doc.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from functional_dl._types import PyTree
from functional_dl.train.data import num_examples


def check_mesh(mesh: Any) -> None:
    """TypeError unless ``mesh`` is a ``jax.sharding.Mesh``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (see distributed.make_mesh), got "
                        f"{type(mesh).__name__}")


def data_axis_name(mesh: Mesh, axis_name: Optional[str]) -> str:
    """``axis_name``, checked to be an axis of ``mesh``; the mesh's first axis when ``None``."""
    if axis_name is None:
        return mesh.axis_names[0]
    if axis_name not in mesh.axis_names:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of mesh, whose axes are "
                         f"{mesh.axis_names}")
    return axis_name


def data_sharding(mesh: Mesh, axis_name: Optional[str] = None) -> NamedSharding:
    """``NamedSharding(mesh, P(axis_name))``: the leading axis split over ``axis_name``.

    Other mesh axes, if any, hold copies.  ``axis_name`` defaults to the mesh's first axis.
    """
    check_mesh(mesh)
    return NamedSharding(mesh, PartitionSpec(data_axis_name(mesh, axis_name)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy on every device of ``mesh``."""
    check_mesh(mesh)
    return NamedSharding(mesh, PartitionSpec())


def num_batch_parts(mesh: Mesh, axis_name: Optional[str] = None) -> int:
    """How many slices this process cuts a (process-local) batch into: its devices along the axis.

    ``mesh.shape[axis] · local_devices / all_devices``: the mesh axis size on one host, that
    size divided by the number of hosts on a mesh spread evenly over several.
    """
    check_mesh(mesh)
    axis = data_axis_name(mesh, axis_name)
    return mesh.shape[axis] * len(mesh.local_devices) // mesh.devices.size


def _multiples_near(size: int, parts: int) -> str:
    below = size - size % parts
    return " or ".join(str(n) for n in (below, below + parts) if n > 0)


def _require_divisible(size: int, mesh: Mesh, axis_name: Optional[str], what: str,
                       fix: str) -> None:
    """ValueError unless ``num_batch_parts(mesh, axis_name)`` divides ``size``: the message
    says ``what`` must be such a multiple and ``fix`` the nearest ones (``{}`` in ``fix``)."""
    parts = num_batch_parts(mesh, axis_name)
    if size % parts:
        raise ValueError(
            f"{what} must be a multiple of the {parts} devices of mesh axis "
            f"{data_axis_name(mesh, axis_name)!r}, so that it splits evenly over them; "
            + fix.format(_multiples_near(size, parts)))


def check_batch_size_divides(batch_size: int, mesh: Mesh, axis_name: Optional[str] = None) -> None:
    """ValueError unless ``num_batch_parts(mesh, axis_name)`` divides ``batch_size``."""
    _require_divisible(batch_size, mesh, axis_name, f"batch_size={batch_size}",
                       "use batch_size={}")


def shard_batch(batch: PyTree, mesh: Mesh, axis_name: Optional[str] = None) -> PyTree:
    """Put ``batch`` on ``mesh`` split along its leading axis: device ``d`` gets rows ``d·b/n …``.

    Args:
      batch: pytree of arrays (NumPy or JAX) sharing a leading example axis of length ``b``;
        on several hosts, this process's part of the global batch.
      mesh: the device mesh (``distributed.make_mesh``).
      axis_name: the mesh axis to split over (default the mesh's first axis).

    Returns:
      The same structure of ``jax.Array``s with sharding ``data_sharding(mesh, axis_name)``
      (global leading length ``b · jax.process_count()`` on an evenly spread mesh), built with
      ``jax.make_array_from_process_local_data``.

    Raises:
      ValueError: leaves without a leading axis or of different lengths, or ``b`` not a
        multiple of the number of devices along the axis (the message names both numbers).
    """
    check_mesh(mesh)
    size = num_examples(batch, "batch")
    _require_divisible(size, mesh, axis_name,
                       f"a batch's number of examples (here {size}, its leading axis)",
                       "use batches of {} examples, or drop the short last batch "
                       "(sharded_batches does)")
    return jax.make_array_from_process_local_data(data_sharding(mesh, axis_name), batch)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """A full copy of every leaf of ``tree`` on every device of ``mesh`` (params, optimizer state).

    Leaves may be arrays, Python scalars or PRNG keys.  The result never shares a buffer
    with ``tree``, so a train step that donates the replicated copy leaves ``tree`` valid
    (``device_put`` alone would reuse a single-device leaf's buffer as the copy on that
    device, even with ``may_alias=False``).  On several hosts every process must pass the
    same values.
    """
    check_mesh(mesh)
    fresh = jax.tree.map(lambda leaf: leaf.copy() if isinstance(leaf, jax.Array) else leaf, tree)
    return jax.device_put(fresh, replicated_sharding(mesh))


def split_or_replicate(batch: PyTree, mesh: Mesh, axis_name: Optional[str] = None) -> PyTree:
    """``shard_batch(batch)`` when its rows divide by ``num_batch_parts``, else replicated.

    For the one batch of an epoch that may not divide when ``batch_size`` does: its short
    final batch.  Replicated, it is computed whole on every device, so its mean loss, its
    gradient and every metric are those of the unsplit batch (the work is repeated on each
    device, once per epoch).  Padding it instead would change any mean that does not mask
    the padding.  One process only: a replicated batch must hold the same rows everywhere.
    """
    if num_examples(batch, "batch") % num_batch_parts(mesh, axis_name):
        return jax.device_put(batch, replicated_sharding(mesh))
    return shard_batch(batch, mesh, axis_name)


def check_data_parallel_arguments(mesh: Any, axis_name: Any, batch_size: int) -> None:
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
    check_mesh(mesh)
    data_axis_name(mesh, axis_name)
    if jax.process_count() > 1:
        raise NotImplementedError(
            f"mesh: fit and evaluate place data for one process, this is one of "
            f"{jax.process_count()}; on several hosts write the loop of "
            "functional_dl.distributed's module doc (shard_batch of each host's part)")
    check_batch_size_divides(batch_size, mesh, axis_name)
