"""Recurrent layers: ``RNN(cell)`` scans a cell over time; ``Bidirectional`` runs two.

Input is **batch-major**, ``x: (B, T, F)`` (``batch_first=True`` in torch's terms); the
cells (``LSTMCell``, ``GRUCell``, ``SimpleRNNCell``, or any :class:`Cell`) are in
:mod:`functional_dl.nn.recurrent_cells`.  Both layers follow the ``Layer`` contract of
:mod:`functional_dl.nn.base` and take two extra keywords in ``apply``:

* ``lengths``: ``(B,)`` integers in ``[1, T]`` for a padded batch.  Steps ``t >= lengths[b]``
  leave sequence ``b``'s carry unchanged and output zeros, so the final carry is the one
  after its last real step; with ``reverse=True`` each sequence is read backwards *within
  its own length* (``t = lengths[b] - 1, ..., 0``), as torch's packed sequences are.  The
  range is checked when ``lengths`` is concrete; under ``jit`` it is not.
* ``initial_carry`` (``RNN`` only): the carry before the first step (default zeros from
  ``cell.initial_carry``).

:func:`scan_cell` is the scan itself; it returns the final carry too (torch's ``h_n``,
``c_n``).
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn.base import Layer, as_layer, check_input, check_input_shape
from functional_dl.nn.recurrent_cells import Cell

__all__ = ["RNN", "Bidirectional", "scan_cell"]

_LAYOUT = "(B, T, {features}) (batch-major: batch, time, features)"


def _check_cell(owner: str, cell: Any) -> Cell:
    if not isinstance(cell, Cell):
        raise TypeError(f"{owner}: cell must be an nn.Cell (LSTMCell, GRUCell, "
                        f"SimpleRNNCell, ...), got {checks.describe(cell)}")
    return cell


def _input_size(params: PyTree) -> Optional[int]:
    """``F`` from the built-in cells' params layout (None for another layout)."""
    try:
        return int(jnp.shape(params["input"]["w"])[0])
    except (KeyError, TypeError, IndexError):
        return None


def _check_lengths(owner: str, lengths: Any, batch: int, steps: int) -> Array:
    """``lengths`` as a ``(B,)`` integer array, its values in ``[1, T]`` when concrete."""
    checks.integer_dtype(f"{owner}: lengths", lengths, what="integer sequence lengths")
    checks.shape_is(f"{owner}: lengths", lengths, (batch,),
                    why="(one length per sequence on x's batch axis)")
    values = checks.concrete_values(lengths)
    if values is not None and values[0].size:
        low, high = int(values[0].min()), int(values[0].max())
        if low < 1 or high > steps:
            raise ValueError(f"{owner}: lengths must be in [1, T] = [1, {steps}], got min "
                             f"{low} and max {high}")
    return jnp.asarray(lengths)


def _reverse_within(x: Array, lengths: Array) -> Array:
    """Each ``x[b, :lengths[b]]`` reversed in place (padding stays where it is)."""
    t = jnp.arange(x.shape[1])[None, :]
    length = lengths[:, None]
    index = jnp.where(t < length, length - 1 - t, jnp.broadcast_to(t, (x.shape[0], x.shape[1])))
    return jax.vmap(lambda sequence, order: sequence[order])(x, index)


def scan_cell(cell: Cell, params: PyTree, x: Array, *, lengths: Any = None,
              reverse: bool = False, initial_carry: Any = None,
              owner: str = "scan_cell") -> tuple[Any, Array]:
    """``(final_carry, ys)``: ``cell`` scanned over the time axis of ``x: (B, T, F)``.

    ``ys: (B, T, ...)`` holds ``y_t`` at ``t``; ``lengths``, ``reverse`` and
    ``initial_carry`` as in the module docstring.  ``lax.scan`` runs the recurrence; the
    cell's input projection (``project``) is one matrix product over the whole sequence.
    """
    cell = _check_cell(owner, cell)
    check_input(owner, x, ranks=(3,), features=_input_size(params), layout=_LAYOUT)
    batch, steps = jnp.shape(x)[:2]
    if lengths is not None:
        lengths = _check_lengths(owner, lengths, batch, steps)
        if reverse:
            x = _reverse_within(x, lengths)
    if cell.project is not None and cell.step is not None:
        inputs, step = cell.project(params, x), cell.step
    else:
        inputs, step = jnp.asarray(x), cell.apply
    carry = cell.initial_carry((batch,), inputs.dtype)
    if initial_carry is not None:
        checks.same_structure(f"{owner}: initial_carry", initial_carry,
                              "the cell's carry for x's batch", carry)
        carry = jax.tree.map(lambda part: jnp.asarray(part).astype(inputs.dtype),
                             initial_carry)

    def _step(carry, inputs_t):
        """One step; past a sequence's length the carry is kept and the output is zero."""
        x_t, t = inputs_t
        new_carry, y_t = step(params, carry, x_t)
        if lengths is None:
            return new_carry, y_t

        def where_valid(new, old):
            valid = (t < lengths).reshape((batch,) + (1,) * (jnp.ndim(new) - 1))
            return jnp.where(valid, new, old)
        return (jax.tree.map(where_valid, new_carry, carry),
                where_valid(y_t, jnp.zeros_like(y_t)))

    # Without lengths the reversed read is the scan's own reverse; with lengths the
    # sequences were reversed within their lengths above and scan forwards.
    carry, ys = lax.scan(_step, carry, (jnp.swapaxes(inputs, 0, 1), jnp.arange(steps)),
                         reverse=bool(reverse) and lengths is None)
    ys = jnp.swapaxes(ys, 0, 1)
    if lengths is not None and reverse:
        ys = _reverse_within(ys, lengths)
    return carry, ys


def _last_output(ys: Array, lengths: Optional[Array], reverse: bool) -> Array:
    """The output of the last step read: ``t = lengths - 1`` forwards, ``t = 0`` reversed."""
    if reverse:
        return ys[:, 0]
    if lengths is None:
        return ys[:, -1]
    return jax.vmap(lambda sequence, length: sequence[length - 1])(ys, lengths)


def RNN(cell: Cell, *, reverse: bool = False, return_sequences: bool = True) -> Layer:
    """A recurrent layer: ``cell`` scanned over the time axis of ``x: (B, T, F)``.

    ``h_t, y_t = cell(h_{t-1}, x_t)`` for ``t = 0 .. T-1`` (``T-1 .. 0`` with
    ``reverse=True``), ``h_{-1}`` = ``initial_carry`` (zeros).  Output ``(B, T, H)``, or
    with ``return_sequences=False`` the last step's output ``(B, H)`` (at ``t = lengths-1``
    forwards, ``t = 0`` reversed).  Params are the cell's (``{"input": {"w", "b"},
    "hidden": {"w", "b"}}`` for the built-in cells).  ``apply(params, x, *, lengths=None,
    initial_carry=None)``: module docstring; the final carry comes from :func:`scan_cell`.

    ``RNN(LSTMCell(H))`` equals ``torch.nn.LSTM(F, H, batch_first=True)``'s output (one
    layer; weights as in :mod:`~functional_dl.nn.recurrent_cells`), and with ``lengths`` the
    padded output of ``pack_padded_sequence(x, lengths, batch_first=True,
    enforce_sorted=False)`` (``pad_packed_sequence(..., total_length=T)``).
    """
    cell = _check_cell("RNN", cell)
    owner = f"RNN({cell.name})"
    if not isinstance(reverse, bool) or not isinstance(return_sequences, bool):
        raise TypeError(f"{owner}: reverse and return_sequences must be bools, got "
                        f"{checks.describe(reverse)} and {checks.describe(return_sequences)}")

    def init(key: PRNGKey, input_shape: Shape):
        shape = check_input_shape(owner, input_shape, ranks=(3,), known_from=-1,
                                  layout=_LAYOUT.format(features="F"))
        step_shape, params = cell.init(key, (shape[0], shape[2]))
        step_shape = tuple(step_shape)
        if return_sequences:
            return (shape[0], shape[1]) + step_shape[1:], params
        return step_shape, params

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False, lengths: Any = None, initial_carry: Any = None) -> Array:
        del key, train
        _, ys = scan_cell(cell, params, x, lengths=lengths, reverse=reverse,
                          initial_carry=initial_carry, owner=owner)
        if return_sequences:
            return ys
        return _last_output(ys, None if lengths is None else jnp.asarray(lengths), reverse)

    return Layer(init, apply, "rnn")


def Bidirectional(forward_rnn: Any, backward_rnn: Any) -> Layer:
    """Two recurrent layers on the same input, outputs concatenated on the feature axis::

        y = concatenate([forward_rnn(x), backward_rnn(x)], axis=-1)

    Build ``backward_rnn`` with ``reverse=True`` (e.g. ``Bidirectional(RNN(LSTMCell(H)),
    RNN(LSTMCell(H), reverse=True))``); ``lengths`` passes to both.  Params
    ``{"forward": ..., "backward": ...}``.  This is ``torch.nn.LSTM/GRU/RNN(F, H,
    batch_first=True, bidirectional=True)``: its ``*_l0`` weights load ``forward`` and its
    ``*_l0_reverse`` weights load ``backward``.  Both layers must agree on every output
    axis but the last.
    """
    forward_rnn = as_layer(forward_rnn, owner="Bidirectional: forward_rnn")
    backward_rnn = as_layer(backward_rnn, owner="Bidirectional: backward_rnn")

    def init(key: PRNGKey, input_shape: Shape):
        forward_key, backward_key = jax.random.split(key)
        forward_shape, forward_params = forward_rnn.init(forward_key, input_shape)
        backward_shape, backward_params = backward_rnn.init(backward_key, input_shape)
        if tuple(forward_shape)[:-1] != tuple(backward_shape)[:-1]:
            raise ValueError(f"Bidirectional: forward_rnn and backward_rnn must give outputs "
                             f"that differ only in the last axis, got {tuple(forward_shape)} "
                             f"and {tuple(backward_shape)} (same return_sequences?)")
        shape = tuple(forward_shape)[:-1] + (forward_shape[-1] + backward_shape[-1],)
        return shape, {"forward": forward_params, "backward": backward_params}

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False, lengths: Any = None) -> Array:
        if not (isinstance(params, dict) and {"forward", "backward"} <= set(params)):
            raise ValueError(f"Bidirectional: params must be a dict with keys ['backward', "
                             f"'forward'], got {checks.describe(params)}")
        options = {} if lengths is None else {"lengths": lengths}
        forward_key, backward_key = (None, None) if key is None else jax.random.split(key)
        y_forward = forward_rnn.apply(params["forward"], x, key=forward_key, train=train,
                                      **options)
        y_backward = backward_rnn.apply(params["backward"], x, key=backward_key,
                                        train=train, **options)
        return jnp.concatenate([y_forward, y_backward], axis=-1)

    return Layer(init, apply, "bidirectional")
