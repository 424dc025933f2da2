"""Recurrent cells: one time step of ``LSTMCell``, ``GRUCell`` and ``SimpleRNNCell``.

A **cell** is a :class:`Cell` of pure functions (``nn.RNN`` scans it over time)::

    init(key, input_shape)            -> (output_shape, params)   (..., F) -> (..., H)
    apply(params, carry, x_t)         -> (carry, y_t)              one step
    initial_carry(batch_shape, dtype) -> carry                     zeros
    project(params, x)                -> x W_i + b_i               the input part, any (..., F)
    step(params, carry, projected_t)  -> (carry, y_t)              the recurrent part

``apply(params, carry, x_t) = step(params, carry, project(params, x_t))``; ``RNN`` projects
the whole sequence with one matrix product before the scan and runs only ``step`` inside it.
``y_t = h_t`` for the three cells here; the carry is ``h`` (GRU, simple RNN) or ``(h, c)``
(LSTM).  ``project``/``step`` may be ``None`` in a hand-written cell (``RNN`` then scans
``apply``).

Params, for ``G`` gates of size ``H`` stacked on the last axis (in the order each cell
states)::

    {"input":  {"w": W_i (F, G·H), "b": b_i (G·H,)},
     "hidden": {"w": W_h (H, G·H), "b": b_h (G·H,)}}

This is torch's layout transposed: ``torch.nn.LSTM/GRU/RNN(F, H, batch_first=True)``
(one layer) loads ``weight_ih_l0 = W_iᵀ``, ``bias_ih_l0 = b_i``, ``weight_hh_l0 = W_hᵀ``,
``bias_hh_l0 = b_h``, with the same gate order.  The default initialization is torch's:
every weight and bias ``U(-1/√H, 1/√H)``.

Parameterized cells take keyword-only ``dtype`` (computation dtype; ``None`` promotes ``x``
with the parameters) and ``param_dtype`` (``None``: the default float) as
:mod:`functional_dl.nn.base` states.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn.base import (check_input, check_input_shape, dtype_options,
                                   matmul_features, promote)

__all__ = ["Cell", "LSTMCell", "GRUCell", "SimpleRNNCell"]


class Cell(NamedTuple):
    """One recurrent step as pure functions (module docstring); ``name`` names the cell
    in messages."""

    init: Callable
    apply: Callable
    initial_carry: Callable
    name: str = "cell"
    project: Optional[Callable] = None
    step: Optional[Callable] = None


def _uniform(scale: float) -> Callable:
    """``U(-scale, scale)`` initializer (torch's recurrent default)."""
    def init(key: PRNGKey, shape: Shape, dtype: Any = None) -> Array:
        return jax.random.uniform(key, shape, checks.float_dtype(dtype), -scale, scale)
    return init


def _gated_cell(name: str, features: Any, num_gates: int, carry_parts: int,
                recurrence: Callable, *, w_init, recurrent_init, b_init, dtype,
                param_dtype) -> Cell:
    """A cell with the shared params layout; ``recurrence(gates_x, gates_h, carry)`` is
    the cell's own math on the projected input and hidden state."""
    features = checks.whole_number(f"{name}: features", features, minimum=1)
    dtype, param_dtype = dtype_options(name, dtype, param_dtype)
    default = _uniform(1.0 / math.sqrt(features))
    w_init = default if w_init is None else w_init
    recurrent_init = default if recurrent_init is None else recurrent_init
    b_init = default if b_init is None else b_init
    width = num_gates * features

    def init(key: PRNGKey, input_shape: Shape):
        shape = check_input_shape(name, input_shape, known_from=-1)
        keys = jax.random.split(key, 4)
        params = {"input": {"w": w_init(keys[0], (shape[-1], width), param_dtype),
                            "b": b_init(keys[1], (width,), param_dtype)},
                  "hidden": {"w": recurrent_init(keys[2], (features, width), param_dtype),
                             "b": b_init(keys[3], (width,), param_dtype)}}
        return shape[:-1] + (features,), params

    def initial_carry(batch_shape: Shape, carry_dtype: Any = None):
        zeros = jnp.zeros(tuple(batch_shape) + (features,), checks.float_dtype(
            carry_dtype if carry_dtype is not None else dtype))
        return zeros if carry_parts == 1 else (zeros,) * carry_parts

    def project(params: PyTree, x: Array) -> Array:
        _check_cell_params(name, params)
        check_input(name, x, features=jnp.shape(params["input"]["w"])[0],
                    layout="(..., {features})")
        x, w, b = promote(dtype, x, params["input"]["w"], params["input"]["b"])
        y = matmul_features(x, w)
        return y + jnp.broadcast_to(b, y.shape)

    def step(params: PyTree, carry: Any, projected: Array):
        h = carry if carry_parts == 1 else carry[0]
        h, w, b = promote(projected.dtype, h, params["hidden"]["w"], params["hidden"]["b"])
        gates_h = h @ w
        gates_h = gates_h + jnp.broadcast_to(b, gates_h.shape)
        carry = jax.tree.map(lambda part: part.astype(projected.dtype), carry)
        new_carry = recurrence(jnp.split(projected, num_gates, axis=-1),
                               jnp.split(gates_h, num_gates, axis=-1), carry)
        return new_carry, new_carry if carry_parts == 1 else new_carry[0]

    def apply(params: PyTree, carry: Any, x_t: Array):
        return step(params, carry, project(params, x_t))

    return Cell(init, apply, initial_carry, name, project, step)


def _check_cell_params(name: str, params: Any) -> None:
    """ValueError unless ``params`` has the ``input``/``hidden`` ``w``/``b`` layout."""
    ok = isinstance(params, dict) and all(
        isinstance(params.get(part), dict) and {"w", "b"} <= set(params[part])
        for part in ("input", "hidden"))
    if not ok:
        got = sorted(params) if isinstance(params, dict) else checks.describe(params)
        raise ValueError(f"{name}: params must be {{'input': {{'w', 'b'}}, 'hidden': "
                         f"{{'w', 'b'}}}} (from this cell's init), got {got}")


def LSTMCell(features: int, *, w_init: Optional[Callable] = None,
             recurrent_init: Optional[Callable] = None, b_init: Optional[Callable] = None,
             dtype: Any = None, param_dtype: Any = None) -> Cell:
    """Long short-term memory cell; carry ``(h, c)``, output ``y_t = h_t``.

    Gates in the order ``i, f, g, o`` (torch's), each ``(x W_i + b_i + h W_h + b_h)``
    sliced to its ``H`` columns::

        i = σ(·_i)   f = σ(·_f)   g = tanh(·_g)   o = σ(·_o)
        c' = f ⊙ c + i ⊙ g        h' = o ⊙ tanh(c')

    Hochreiter & Schmidhuber (1997), "Long short-term memory"; the forget gate of Gers et
    al. (2000).  Equal to ``torch.nn.LSTM(F, H, batch_first=True)`` with the weights loaded
    as the module docstring says (torch's ``h_n, c_n`` are the final carry).

    Args:
      features: ``H``, the size of ``h`` and ``c``.
      w_init, recurrent_init, b_init: initializers of ``W_i``, ``W_h`` and both biases;
        default ``U(-1/√H, 1/√H)``.
      dtype, param_dtype: computation and parameter dtypes (module docstring).
    """
    def recurrence(gates_x, gates_h, carry):
        h, c = carry
        i, f, g, o = (a + b for a, b in zip(gates_x, gates_h))
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    return _gated_cell("LSTMCell", features, 4, 2, recurrence, w_init=w_init,
                       recurrent_init=recurrent_init, b_init=b_init, dtype=dtype,
                       param_dtype=param_dtype)


def GRUCell(features: int, *, w_init: Optional[Callable] = None,
            recurrent_init: Optional[Callable] = None, b_init: Optional[Callable] = None,
            dtype: Any = None, param_dtype: Any = None) -> Cell:
    """Gated recurrent unit; carry ``h``, output ``y_t = h_t``.

    Gates in the order ``r, z, n`` (torch's); the hidden bias of ``n`` sits inside the
    reset product, exactly as in torch::

        r = σ(x W_ir + b_ir + h W_hr + b_hr)
        z = σ(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h

    Cho et al. (2014), "Learning phrase representations using RNN encoder-decoder for
    statistical machine translation".  Equal to ``torch.nn.GRU(F, H, batch_first=True)``
    with the weights loaded as the module docstring says; ``b_i`` and ``b_h`` are kept
    apart because ``b_hn`` is multiplied by ``r``.

    Args: as :func:`LSTMCell` (``features`` is the size of ``h``).
    """
    def recurrence(gates_x, gates_h, h):
        (xr, xz, xn), (hr, hz, hn) = gates_x, gates_h
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        return (1 - z) * n + z * h

    return _gated_cell("GRUCell", features, 3, 1, recurrence, w_init=w_init,
                       recurrent_init=recurrent_init, b_init=b_init, dtype=dtype,
                       param_dtype=param_dtype)


def SimpleRNNCell(features: int, activation: Callable[[Array], Array] = jnp.tanh, *,
                  w_init: Optional[Callable] = None, recurrent_init: Optional[Callable] = None,
                  b_init: Optional[Callable] = None, dtype: Any = None,
                  param_dtype: Any = None) -> Cell:
    """Elman recurrent cell; carry ``h``, output ``y_t = h_t``::

        h' = activation(x W_i + b_i + h W_h + b_h)

    Elman (1990), "Finding structure in time".  Equal to ``torch.nn.RNN(F, H,
    batch_first=True, nonlinearity="tanh")`` (or ``"relu"`` with
    ``activation=jax.nn.relu``) with the weights loaded as the module docstring says.

    Args: as :func:`LSTMCell`, and ``activation``, an elementwise function (default tanh).
    """
    if not callable(activation):
        raise TypeError(f"SimpleRNNCell: activation must be a function of an array, got "
                        f"{checks.describe(activation)}")

    def recurrence(gates_x, gates_h, h):
        del h
        return activation(gates_x[0] + gates_h[0])

    return _gated_cell("SimpleRNNCell", features, 1, 1, recurrence, w_init=w_init,
                       recurrent_init=recurrent_init, b_init=b_init, dtype=dtype,
                       param_dtype=param_dtype)
