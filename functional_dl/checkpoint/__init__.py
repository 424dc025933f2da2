"""Save and restore pytrees of arrays: no pickle, atomic writes, verified reads.

``save(path, tree)`` takes trees of dicts (str or int keys), lists, tuples, NamedTuples and
``None`` with leaves that are JAX or NumPy arrays, NumPy scalars, Python ``bool``, ``int``,
``float`` or ``complex``, raw ``uint32`` PRNG keys, or typed keys (``jax.random.key``; the
implementation is recorded). ``restore`` gives the leaves back bit for bit, dtypes included
(bfloat16 and the other ml_dtypes).

Format: a NumPy ``.npz`` archive (``numpy.load`` opens it) holding ``leaf_0, leaf_1, ...``
in depth-first order (dtypes the ``.npy`` format cannot name are stored as their
unsigned-integer bits, typed keys as their key data) and ``header``: UTF-8 JSON with the
containers (dict keys; a NamedTuple's ``"module:qualname"`` and fields), each leaf's kind,
dtype and shape, and a SHA-256 of the leaf bytes. Nothing in a file is unpickled or run:
arrays are read with ``allow_pickle=False`` and no module named by a file is imported.

``restore(path, like=None)``:
  * ``like=None`` rebuilds the saved containers and leaf types (JAX arrays on the default
    device, NumPy as NumPy, Python scalars as Python scalars). A NamedTuple is rebuilt as
    its class when that class's module is already imported and the fields agree; otherwise
    it comes back as a ``dict`` of its fields, with a ``UserWarning``.
  * ``like=tree`` takes containers and leaf types from ``like`` (dicts are matched by key,
    order aside). The file must hold the same structure, and each leaf the same kind (array,
    typed key, Python scalar), shape and dtype. A JAX leaf of ``like`` gives an array placed
    as it is: with its sharding when it is committed (``device_put``, a replicated or
    sharded training state; likewise a ``jax.ShapeDtypeStruct`` with a sharding), uncommitted
    like ``jnp.asarray`` when it is not (a fresh ``init``), so ``jit`` reuses the program it
    compiled for ``like``.

A damaged or foreign file, a mismatch with ``like``, or a float64 leaf while 64-bit mode is
off raise :class:`CheckpointError` (a ``ValueError``) saying which. ``save`` writes a
temporary file beside ``path``, fsyncs it and renames it over ``path``: a crash mid-save
leaves the previous checkpoint intact. ``save_step``/``restore_step`` number checkpoints.
"""
from functional_dl.checkpoint._io import restore, save
from functional_dl.checkpoint._leaves import CheckpointError
from functional_dl.checkpoint.steps import (latest_step, list_steps, restore_step, save_step,
                                            step_path)

__all__ = ["CheckpointError", "save", "restore", "save_step", "restore_step", "latest_step",
           "list_steps", "step_path"]
