"""A function written for one sequence that runs a different, batch-aware loop under ``vmap``.

Inference is written for one sequence and batched by ``jax.vmap``.  The best loop for B
sequences depends on B, which a function traced for one sequence never sees: for a few
sequences the per-step work is small and a loop of written-out multiply-adds over
precomputed exponentials is fastest; for many, each step is a ``(B, K) · (K, K)`` product
that a real ``dot`` does best, and reading the log-likelihoods inside the loop beats
writing a ``(B, T, K)`` array of exponentials first.  ``batch_dispatched(single, batched,
use_batched)`` gives one function that

- evaluates ``single(*args)`` for one sequence;
- under ``vmap`` of axis size B asks ``use_batched(B, in_batched, *args)`` (a trace-time
  decision from static shapes) and evaluates ``batched(B, in_batched, *args)`` (which
  receives the batched arguments with the batch axis first and must return every output
  with the batch axis first) or else ``vmap(single)`` (``single`` itself for B = 1);
  a very large batch of small rows runs ``batched`` in ``lax.map`` chunks (``in_chunks``);
- is differentiated (forward and reverse mode) through ``single``: its JVP is
  ``jax.jvp(single)``, so derivatives are the same whichever loop computes the value.

``jax.custom_batching.custom_vmap`` chooses the rule and ``jax.custom_jvp`` keeps autodiff (a
``custom_vmap`` alone supports no reverse mode).  Nested ``vmap``: the inner one dispatches,
outer ones batch the chosen code by JAX's own rules.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
from jax import lax
from jax.custom_batching import custom_vmap

__all__ = ["batch_dispatched", "one_at_a_time"]

#: The largest batch one batch loop runs whole; a larger one runs in ``lax.map`` chunks of
#: about ``LOOP_CHUNK`` sequences.  A batch-major step reads and writes one row per sequence,
#: each in its own memory page (rows are T·K entries apart), so a loop over thousands of
#: sequences touches more pages per step than the TLB holds.  That matters where a step's
#: work per sequence is small: rows of at most ``MAX_CHUNKED_ROW_BYTES`` (K ≤ 8 in float32,
#: K ≤ 4 in float64).  Measured on a 2-core x86 CPU at B = 4096, chunks of 256 halve the time
#: of the log-likelihood, the posteriors and Viterbi at K = 4 in float32 and save 25-35% at
#: K = 8; at K = 32 they double it, and at B = 1024 they gain nothing.
MAX_LOOP_BATCH = 1024
LOOP_CHUNK = 256
MAX_CHUNKED_ROW_BYTES = 32


def in_chunks(batched: Callable[..., Any], batch_size: int, in_batched, args) -> Any:
    """``batched(batch_size, in_batched, *args)``, for more than ``MAX_LOOP_BATCH`` sequences
    whose largest batched argument has rows (last axis) of at most ``MAX_CHUNKED_ROW_BYTES``,
    run on ``n = ⌈B / LOOP_CHUNK⌉`` equal consecutive chunks (a batch that ``n`` does not
    divide runs whole).  Outputs are concatenated along the batch axis."""
    num_chunks = -(-batch_size // LOOP_CHUNK)
    leaves = [x for a, b in zip(args, in_batched) if b for x in jax.tree.leaves(a)]
    largest = max(leaves, key=lambda x: x.size, default=None)
    row_bytes = (largest.shape[-1] * largest.dtype.itemsize
                 if largest is not None and largest.ndim > 1 else 0)
    if (batch_size <= MAX_LOOP_BATCH or batch_size % num_chunks or not row_bytes
            or row_bytes > MAX_CHUNKED_ROW_BYTES):
        return batched(batch_size, in_batched, *args)
    size = batch_size // num_chunks
    chunked = [a if not b else jax.tree.map(
        lambda x: x.reshape((num_chunks, size) + x.shape[1:]), a)
        for a, b in zip(args, in_batched)]
    positions = [i for i, b in enumerate(in_batched) if b]

    def one_chunk(pieces):
        full = list(chunked)
        for i, piece in zip(positions, pieces):
            full[i] = piece
        return batched(size, in_batched, *full)

    out = lax.map(one_chunk, [chunked[i] for i in positions])
    return jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), out)


def batch_dispatched(single: Callable[..., Any], batched: Callable[..., Any],
                     use_batched: Callable[..., bool]) -> Callable[..., Any]:
    """``single`` for one sequence, ``batched`` under ``vmap`` when ``use_batched`` says so."""

    @custom_vmap
    def _value(*args):
        return single(*args)

    @_value.def_vmap
    def _rule(axis_size, in_batched, *args):
        if use_batched(axis_size, in_batched, *args):
            out = in_chunks(batched, axis_size, in_batched, args)
        elif axis_size == 1:  # a batch of one: the single-sequence loop as it is
            squeezed = [jax.tree.map(lambda a: a[0], arg) if b else arg
                        for arg, b in zip(args, in_batched)]
            out = jax.tree.map(lambda a: a[None], single(*squeezed))
        else:
            in_axes = jax.tree.map(lambda b: 0 if b else None, list(in_batched))
            out = jax.vmap(single, in_axes=in_axes)(*args)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def dispatched(*args):
        return _value(*args)

    @dispatched.defjvp
    def _jvp(primals, tangents):
        return jax.jvp(single, primals, tangents)

    return dispatched


def one_at_a_time(single: Callable[..., Any]) -> Callable[..., Any]:
    """``single`` with no batch loop of its own: ``vmap`` batches it by JAX's rules, except a
    batch of one, which runs ``single`` itself (a ``vmap`` of size 1 still batches every
    operation, and a function of many small operations pays for that)."""
    return batch_dispatched(single, None, lambda *args: False)
