"""Data parallelism on JAX's own sharding: a ``Mesh``, ``NamedSharding`` and the SPMD partitioner.

Data parallelism splits every batch along its leading (example) axis over ``n`` devices and
keeps a full copy of the parameters and optimizer state on each.  With a loss that is a mean
over the batch ``B = B_1 ∪ … ∪ B_n`` of equal parts,

    ∇θ L(θ; B) = (1/|B|) Σ_i ∇θ ℓ(θ; x_i) = (1/n) Σ_d ∇θ L(θ; B_d),

the mean of the per-device gradients.  Nothing here computes that mean: the train step of
``functional_dl.train.make_train_step`` is an ordinary ``jax.jit`` function, and when its
``batch`` argument carries a ``NamedSharding`` split over the mesh axis while ``params`` and
``opt_state`` are replicated, XLA's SPMD partitioner compiles one program per device and
inserts the cross-device reduction (an all-reduce) itself.  No ``pmap``, no collective
written by hand, no training engine::

    from functional_dl import distributed, train

    mesh = distributed.make_mesh()                          # all devices on axis "data"
    params = distributed.replicate(params, mesh)
    opt_state = distributed.replicate(optimizer.init(params), mesh)
    step = train.make_train_step(loss_fn, optimizer)        # the single-device step, unchanged
    for batch in train.sharded_batches(shuffle_key, (x, y), 256, mesh):
        params, opt_state, metrics = step(params, opt_state, batch, step_key)

``train.fit(..., mesh=mesh)`` runs this loop for you: it replicates the parameters and the
optimizer state, splits every training and validation batch along the mesh's data axis and
returns replicated parameters.

Where arrays live:

    replicated_sharding(mesh)      = NamedSharding(mesh, P())       # parameters, optimizer state
    data_sharding(mesh, axis_name) = NamedSharding(mesh, P(axis))   # batches, rows split

A batch of ``b`` rows splits over the ``p = num_batch_parts(mesh, axis_name)`` devices of
the axis only when ``p`` divides ``b``: device ``d`` then holds rows ``d·b/p`` to
``(d+1)·b/p − 1``.  **A batch that does not divide is an error** in ``shard_batch``
(``ValueError`` naming the batch size and the device count), not silent padding: padded
examples would change a mean loss unless every loss masks them.  ``split_or_replicate``
instead computes such a batch whole on every device, which keeps every mean exact (for an
epoch's one short final batch).

Randomness inside the step (dropout) does not depend on the device count: JAX's random bits
are generated partitionably, so a sharded step draws the same mask as an unsharded one and
``n`` devices follow the single-device trajectory up to floating-point summation order.

Any other batched computation shards the same way, e.g. HMM inference over a batch of
sequences (``(B, T)`` symbols, ``B`` a multiple of the device count)::

    batch_log_likelihood = jax.jit(jax.vmap(hmm.log_likelihood, in_axes=(None, 0, 0)))
    log_p = batch_log_likelihood(distributed.replicate(model, mesh),
                                 *distributed.shard_batch((observations, lengths), mesh))

**One machine with several devices.**  Nothing to set up: ``make_mesh()`` takes every device
that ``jax.devices()`` lists (the README shows how to fake several CPU devices).

**Several hosts.**  Start the same program on every host and call
``jax.distributed.initialize()`` first (with ``coordinator_address``, ``num_processes`` and
``process_id``, or with no arguments on Cloud TPU, Slurm and other detected clusters).
Then ``jax.devices()`` lists the devices of all hosts and ``make_mesh()`` spans them.  Each
host loads only its own part of every batch (e.g. examples ``i`` with
``i % jax.process_count() == jax.process_index()``) and passes it to ``shard_batch``, which
assembles the global batch with ``jax.make_array_from_process_local_data``: the global
batch has ``jax.process_count()`` times the examples of the local one, and the local batch
must divide by the host's own device count.  ``replicate`` expects the same values on every
host (initialize from the same key).  The step, the loop and the metrics code do not change;
to save a checkpoint of replicated parameters, save ``a.addressable_data(0)`` of each leaf
from process 0.  ``train.fit`` places data for one process only.

This module builds on ``jax.sharding`` alone; ``functional_dl.train`` builds on it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from functional_dl import checks
from functional_dl._types import PyTree

__all__ = ["make_mesh", "data_sharding", "replicated_sharding", "shard_batch", "replicate",
           "split_or_replicate", "sharded_batches", "num_batch_parts"]


def make_mesh(devices: Optional[Sequence[Any]] = None, axis_name: str = "data") -> Mesh:
    """A one-axis ``Mesh`` named ``axis_name`` over ``devices`` (default: ``jax.devices()``).

    ``jax.devices()`` is every device of this machine, and of every host after
    ``jax.distributed.initialize()``.  The axis is of type ``Auto``: shardings propagate
    through ``jit`` and the SPMD partitioner inserts the collectives.

    Raises:
      ValueError: ``devices`` is empty or names a device twice, or ``axis_name`` is empty.
      TypeError: ``axis_name`` is not a string.
    """
    if not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be a non-empty string such as 'data', got "
                        f"{checks.describe(axis_name)}")
    if not axis_name:
        raise ValueError("axis_name must be a non-empty string such as 'data', got ''")
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must list at least one device (e.g. jax.devices()), got none")
    if len({id(device) for device in devices}) != len(devices):
        raise ValueError(f"devices must be distinct, got {devices}")
    return jax.make_mesh((len(devices),), (axis_name,), axis_types=(AxisType.Auto,),
                         devices=devices)


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
    """ValueError unless ``num_batch_parts`` divides ``size``: ``what`` must be such a multiple,
    ``fix`` (with ``{}`` for the nearest multiples) says what to do."""
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


def _split(batch: PyTree, num_rows: int, mesh: Mesh, axis_name: Optional[str]) -> PyTree:
    """``batch`` (already checked: ``num_rows`` rows in every leaf) split over the mesh axis."""
    _require_divisible(num_rows, mesh, axis_name,
                       f"a batch's number of examples (here {num_rows}, its leading axis)",
                       "use batches of {} examples, or drop the short last batch "
                       "(train.sharded_batches does)")
    return jax.make_array_from_process_local_data(data_sharding(mesh, axis_name), batch)


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
    return _split(batch, checks.leading_length("batch", batch), mesh, axis_name)


def split_or_replicate(batch: PyTree, mesh: Mesh, axis_name: Optional[str] = None) -> PyTree:
    """``shard_batch(batch)`` when its rows divide by ``num_batch_parts``, else replicated.

    For the one batch of an epoch that may not divide when the batch size does: its short
    final batch.  Replicated, it is computed whole on every device, so its mean loss, its
    gradient and every metric are those of the unsplit batch (the work is repeated on each
    device, once per epoch).  Padding it instead would change any mean that does not mask
    the padding.  One process only: a replicated batch must hold the same rows everywhere.
    """
    check_mesh(mesh)
    num_rows = checks.leading_length("batch", batch)
    if num_rows % num_batch_parts(mesh, axis_name):
        return jax.device_put(batch, replicated_sharding(mesh))
    return _split(batch, num_rows, mesh, axis_name)


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


def __getattr__(name: str) -> Any:
    """``distributed.sharded_batches`` is ``train.sharded_batches``, imported on first use so
    that importing this module never imports ``train`` (which builds on it)."""
    if name == "sharded_batches":
        from functional_dl.train.data import sharded_batches
        return sharded_batches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
