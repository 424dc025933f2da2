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
    for batch in distributed.sharded_batches(shuffle_key, (x, y), 256, mesh):
        params, opt_state, metrics = step(params, opt_state, batch, step_key)

``train.fit`` runs this loop for you when given the mesh::

    result = train.fit(loss_fn, optimizer, params, (x, y), key=key, epochs=10,
                       batch_size=256, mesh=mesh, validation_data=(x_val, y_val))

It replicates the parameters and the optimizer state over the mesh, splits every batch along
the mesh's data axis (``batch_size`` must be a multiple of ``num_batch_parts(mesh)``, checked
before training), evaluates the validation data split the same way, and returns replicated
parameters; its step compiles once per batch shape, and checkpoint/resume and early stopping
work as on one device.  The one batch of an epoch that may not divide, the short final batch
of ``drop_last=False`` (and of the validation data), is computed whole on every device, so
every mean is the unsharded run's, up to floating-point summation order
(``train.placement.split_or_replicate``).  ``fit`` places data for one process; on several
hosts write the loop above.

The placement functions (``data_sharding``, ``replicated_sharding``, ``num_batch_parts``,
``shard_batch``, ``replicate``) are defined in ``functional_dl.train.placement``, so that
``fit`` can use them without importing this module (which builds on ``train``), and are
re-exported here.

Randomness inside the step (dropout) does not depend on the device count: JAX's random bits
are generated partitionably, so a sharded step draws the same mask as an unsharded one and
``n`` devices follow the single-device trajectory up to floating-point summation order.

Any other batched computation shards the same way, e.g. HMM inference over a batch of
sequences (``(B, T)`` symbols, ``B`` a multiple of the device count)::

    batch_log_likelihood = jax.jit(jax.vmap(hmm.log_likelihood, in_axes=(None, 0, 0)))
    log_p = batch_log_likelihood(distributed.replicate(model, mesh),
                                 *distributed.shard_batch((observations, lengths), mesh))

**A batch that does not divide by the device count is an error** (``ValueError`` naming the
batch size and the device count), not silent padding: padded examples would change a mean
loss unless every loss masks them.  Use a batch size that is a multiple of the device count
(``sharded_batches`` drops the short last batch of an epoch for that reason).

**One machine with several GPUs.**  Nothing to set up: ``make_mesh()`` takes every device
that ``jax.devices()`` lists.  To try it on a CPU-only machine, fake 8 devices before JAX
starts: ``XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu python ...``.

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
from process 0.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import jax
from jax.sharding import AxisType, Mesh

from functional_dl._types import PRNGKey, PyTree
from functional_dl.train.data import batches
from functional_dl.train.placement import (check_batch_size_divides, check_mesh, data_sharding,
                                           num_batch_parts, replicate, replicated_sharding,
                                           shard_batch)

__all__ = ["make_mesh", "data_sharding", "replicated_sharding", "shard_batch", "replicate",
           "sharded_batches", "num_batch_parts"]


def make_mesh(devices: Optional[Sequence[Any]] = None, axis_name: str = "data") -> Mesh:
    """A one-axis ``Mesh`` named ``axis_name`` over ``devices`` (default: ``jax.devices()``).

    ``jax.devices()`` is every device of this machine, and of every host after
    ``jax.distributed.initialize()``.  The axis is of type ``Auto``: shardings propagate
    through ``jit`` and the SPMD partitioner inserts the collectives.

    Raises:
      ValueError: ``devices`` is empty or names a device twice, or ``axis_name`` is not a
        non-empty string.
    """
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name must be a non-empty string such as 'data', got {axis_name!r}")
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must list at least one device (e.g. jax.devices()), got none")
    if len({id(device) for device in devices}) != len(devices):
        raise ValueError(f"devices must be distinct, got {devices}")
    return jax.make_mesh((len(devices),), (axis_name,), axis_types=(AxisType.Auto,),
                         devices=devices)


def sharded_batches(key: PRNGKey, arrays: PyTree, batch_size: int, mesh: Mesh,
                    axis_name: Optional[str] = None) -> Iterator[PyTree]:
    """``train.batches(key, arrays, batch_size, drop_last=True)``, each batch ``shard_batch``-ed.

    Every batch has ``batch_size`` examples, so the train step compiles once; ``batch_size``
    must be a multiple of ``num_batch_parts(mesh)`` (checked here, before the first batch).
    """
    check_mesh(mesh)
    epoch = batches(key, arrays, batch_size, drop_last=True)  # checks batch_size and arrays
    check_batch_size_divides(batch_size, mesh, axis_name)
    return (shard_batch(batch, mesh, axis_name) for batch in epoch)
