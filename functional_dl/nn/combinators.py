"""Combinators that build networks from layers, as in ``jax.example_libraries.stax``.

* ``serial(*layers)``: ``y = f_L(... f_2(f_1(x)))``.
* ``parallel(*layers)``: ``(y_1, ..., y_n) = (f_1(x_1), ..., f_n(x_n))`` on a tuple of inputs.
* ``FanOut(num)``: ``x -> (x, ..., x)`` (``num`` copies); ``FanInSum``: ``(x_1, ..., x_n) ->
  Σ_i x_i``; ``FanInConcat(axis=-1)``: the inputs concatenated along ``axis``;
  ``Identity``: ``x -> x``.
* ``Residual(block)``: ``y = x + block(x)``, the same as stax's
  ``serial(FanOut(2), parallel(block, Identity), FanInSum)``; the block must keep the shape.
* ``mlp(layer_sizes)``: ``Dense`` layers with an activation between them.

Each combinator is a ``Layer``.  Params (and state) are dicts keyed by readable names: each
layer's kind and its count among layers of that kind, ``{"dense_0": {"w", "b"}, "dense_1":
{...}}``; layers without parameters (activations, dropout, pooling, fan-in/out) get no entry.
Nested combinators are entries of their own, named by their kind: ``serial(serial(Dense(4),
Relu), Residual(serial(Dense(4), Relu)))`` has params ``{"serial_0": {"dense_0": ...},
"residual_0": {"dense_0": ...}}`` (a ``Residual``'s entry holds its block's params; ``parallel``'s
are ``parallel_i``).  Names come from the layer's ``name`` field (set by its factory, or by
:func:`functional_dl.nn.named`); untagged custom or stax layers are ``"layer_0"``, ...

Randomness: ``init`` splits ``key`` into one key per layer (``jax.random.split(key, n)[i]``
for layer ``i`` of ``serial`` or ``parallel``), and so does ``apply`` when a key is given, so
two dropout layers never share a mask; ``Residual`` passes its key to its block unchanged.

State (:mod:`functional_dl.nn.state`): a combinator with a stateful layer inside is itself a
``StatefulLayer`` (``init -> (output_shape, params, state)``, ``apply(..., state=...) ->
(y, state)``) whose state dict is keyed like its params; without one it is an ordinary layer.

Inputs that do not fit are a ``ValueError`` naming the combinator and the shapes it expected
(``FanInSum`` of different shapes, ``FanInConcat`` of shapes that differ off the axis, a
``parallel`` given something other than a tuple of one input per layer).
"""
from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn.base import Layer, as_layer, check_input_shape
from functional_dl.nn.activations import ACTIVATIONS
from functional_dl.nn.layers import Dense, Dropout, _is_positive_int, layer_name
from functional_dl.nn.state import StatefulLayer, is_stateful

__all__ = ["serial", "parallel", "Residual", "FanOut", "FanInSum", "FanInConcat", "Identity",
           "mlp", "ACTIVATION_LAYERS"]

#: Activation names accepted by :func:`mlp`: every hidden-layer activation of
#: ``nn.activations.ACTIVATIONS`` (softmax, log_softmax and glu, which are not elementwise
#: hidden activations, are left out).  ``nn.backprop`` derives its own four by hand.
ACTIVATION_LAYERS = {name: layer for name, layer in ACTIVATIONS.items()
                     if name not in ("softmax", "log_softmax", "glu")}


def _param_names(layers: Sequence[Layer]) -> list[str]:
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        kind = layer_name(layer)
        names.append(f"{kind}_{counts.get(kind, 0)}")
        counts[kind] = counts.get(kind, 0) + 1
    return names


def _children(owner: str, layers: Sequence[Any]) -> tuple[Layer, ...]:
    if not layers:
        raise ValueError(f"{owner} needs at least one layer")
    return tuple(as_layer(layer, owner=f"{owner}: layer {index}")
                 for index, layer in enumerate(layers))


def _is_empty(tree: Any) -> bool:
    return isinstance(tree, dict) and not tree


def _init_child(layer: Layer, key: PRNGKey, shape: Any) -> tuple[Any, PyTree, PyTree]:
    """``(output_shape, params, state)`` of ``layer``, state ``{}`` for a stateless one."""
    if is_stateful(layer):
        return layer.init(key, shape)
    output_shape, params = layer.init(key, shape)
    return output_shape, params, {}


def _apply_child(layer: Layer, params: PyTree, x: Any, state: PyTree, key: Optional[PRNGKey],
                 train: bool) -> tuple[Any, PyTree]:
    if is_stateful(layer):
        return layer.apply(params, x, state=state, key=key, train=train)
    return layer.apply(params, x, key=key, train=train), {}


def _check_names(owner: str, params: Any, state: Any, names: Sequence[str]) -> None:
    """ValueError for a params or state entry that matches no layer."""
    for what, tree in (("params", params), ("state", state)):
        if not isinstance(tree, dict):
            raise ValueError(f"{owner}: {what} must be a dict keyed by layer names such as "
                             f"{list(names)}, got {checks.describe(tree)}")
        unknown = set(tree) - set(names)
        if unknown:
            raise ValueError(f"{owner}: {what} has names {sorted(unknown)} that match no "
                             f"layer; the layers are {list(names)}")


def _combinator(name: str, layers: Sequence[Layer], init: Callable, apply: Callable) -> Layer:
    """A ``StatefulLayer`` from the stateful ``init``/``apply`` when a layer is stateful, else
    the plain ``Layer`` that drops the (empty) state."""
    if any(is_stateful(layer) for layer in layers):
        return StatefulLayer(init, apply, name)

    def stateless_init(key: PRNGKey, input_shape: Shape):
        output_shape, params, _ = init(key, input_shape)
        return output_shape, params

    def stateless_apply(params: PyTree, x: Any, *, key: Optional[PRNGKey] = None,
                        train: bool = False):
        return apply(params, x, state={}, key=key, train=train)[0]

    return Layer(stateless_init, stateless_apply, name)


def _split(key: Optional[PRNGKey], num: int) -> list:
    return [None] * num if key is None else list(jax.random.split(key, num))


def serial(*layers: Layer) -> Layer:
    """Compose ``layers`` in order (see the module docstring for names, keys and state)."""
    layers = _children("serial", layers)
    names = _param_names(layers)

    def init(key: PRNGKey, input_shape: Shape):
        params, state = {}, {}
        shape = tuple(input_shape) if isinstance(input_shape, list) else input_shape
        for name, layer, layer_key in zip(names, layers, _split(key, len(layers)), strict=True):
            shape, layer_params, layer_state = _init_child(layer, layer_key, shape)
            params.update({} if _is_empty(layer_params) else {name: layer_params})
            state.update({} if _is_empty(layer_state) else {name: layer_state})
        return shape, params, state

    def apply(params: PyTree, x: Array, *, state: PyTree, key: Optional[PRNGKey] = None,
              train: bool = False):
        _check_names("serial", params, state, names)
        new_state = {}
        for name, layer, layer_key in zip(names, layers, _split(key, len(layers)), strict=True):
            x, layer_state = _apply_child(layer, params.get(name, {}), x, state.get(name, {}),
                                          layer_key, train)
            new_state.update({} if _is_empty(layer_state) else {name: layer_state})
        return x, new_state

    return _combinator("serial", layers, init, apply)


def _as_branches(owner: str, what: str, value: Any, num: Optional[int], expected: str) -> list:
    """``value`` as a list (of ``num`` items when given); ValueError naming ``expected``."""
    if not isinstance(value, (tuple, list)) or (num is not None and len(value) != num) \
            or not value:
        got = (f"an array of shape {tuple(jnp.shape(value))}" if hasattr(value, "shape")
               else checks.describe(value)[:120])
        raise ValueError(f"{owner}: {what} must be {expected}, got {got}")
    return list(value)


def _shapes(owner: str, input_shape: Any, num: Optional[int], expected: str) -> list[Shape]:
    shapes = _as_branches(owner, "input_shape", input_shape, num, expected)
    if not all(isinstance(shape, (tuple, list)) for shape in shapes):
        raise ValueError(f"{owner}: input_shape must be {expected}, got {input_shape!r}")
    return [check_input_shape(owner, shape, min_rank=0) for shape in shapes]


def parallel(*layers: Layer) -> Layer:
    """Apply layer ``i`` to input ``i`` of a tuple: ``(f_1(x_1), ..., f_n(x_n))``.

    ``input_shape`` and ``x`` are tuples (or lists) of ``n`` shapes / arrays; the output is
    a tuple.  Params and state: ``{"dense_0": ..., "dense_1": ...}`` as in ``serial``.
    """
    layers = _children("parallel", layers)
    names = _param_names(layers)
    expected = (f"a tuple of {len(layers)} inputs, one per layer ({', '.join(names)})")

    def init(key: PRNGKey, input_shape: Shape):
        expected_shapes = f"a tuple of {len(layers)} shapes, one per layer ({', '.join(names)})"
        shapes = _as_branches("parallel", "input_shape", input_shape, len(layers),
                              expected_shapes)
        if not all(isinstance(shape, (tuple, list)) for shape in shapes):
            raise ValueError(f"parallel: input_shape must be {expected_shapes}, got "
                             f"{input_shape!r}")
        params, state, output_shapes = {}, {}, []
        for name, layer, layer_key, shape in zip(names, layers, _split(key, len(layers)),
                                                 shapes, strict=True):
            output_shape, layer_params, layer_state = _init_child(layer, layer_key, shape)
            output_shapes.append(output_shape)
            params.update({} if _is_empty(layer_params) else {name: layer_params})
            state.update({} if _is_empty(layer_state) else {name: layer_state})
        return tuple(output_shapes), params, state

    def apply(params: PyTree, x: Any, *, state: PyTree, key: Optional[PRNGKey] = None,
              train: bool = False):
        inputs = _as_branches("parallel", "x", x, len(layers), expected)
        _check_names("parallel", params, state, names)
        outputs, new_state = [], {}
        for name, layer, layer_key, branch in zip(names, layers, _split(key, len(layers)),
                                                  inputs, strict=True):
            y, layer_state = _apply_child(layer, params.get(name, {}), branch,
                                          state.get(name, {}), layer_key, train)
            outputs.append(y)
            new_state.update({} if _is_empty(layer_state) else {name: layer_state})
        return tuple(outputs), new_state

    return _combinator("parallel", layers, init, apply)


def Residual(block: Layer) -> Layer:
    """``y = x + block(x)``: a skip connection around ``block`` (any layer or combinator).

    ``block`` must map its input shape to itself (a ``ValueError`` naming the block and
    both shapes otherwise; a projection shortcut is ``serial(FanOut(2), parallel(block,
    projection), FanInSum)``).  Params and state are the block's, under ``"residual_i"``
    inside ``serial``; ``key`` goes to the block unchanged.
    """
    block = as_layer(block, owner="Residual: block")

    def mismatch(input_shape, output_shape) -> ValueError:
        return ValueError(f"Residual: y = x + block(x) needs the block ({block.name}) to keep "
                          f"its input shape {tuple(input_shape)}, but it gives "
                          f"{tuple(output_shape)}")

    def init(key: PRNGKey, input_shape: Shape):
        shape = check_input_shape("Residual", input_shape, min_rank=0)
        output_shape, params, state = _init_child(block, key, shape)
        if tuple(output_shape) != shape:
            raise mismatch(shape, output_shape)
        return shape, params, state

    def apply(params: PyTree, x: Array, *, state: PyTree, key: Optional[PRNGKey] = None,
              train: bool = False):
        y, new_state = _apply_child(block, params, x, state, key, train)
        if jnp.shape(y) != jnp.shape(x):
            raise mismatch(jnp.shape(x), jnp.shape(y))
        return x + y, new_state

    return _combinator("residual", (block,), init, apply)


def _parameter_free(name: str, init: Callable, apply: Callable) -> Layer:
    def layer_init(key: PRNGKey, input_shape: Shape):
        del key
        return init(input_shape), {}

    def layer_apply(params: PyTree, x: Any, *, key: Optional[PRNGKey] = None,
                    train: bool = False):
        del params, key, train
        return apply(x)

    return Layer(layer_init, layer_apply, name)


#: ``x -> x`` for any input (a value, as stax's ``Identity``).
Identity = _parameter_free("identity", lambda input_shape: input_shape, lambda x: x)


def FanOut(num: int) -> Layer:
    """``x -> (x, ..., x)``: ``num`` copies of the input, for ``parallel`` branches."""
    num = checks.whole_number("FanOut: num", num, minimum=1)
    return _parameter_free("fan_out", lambda input_shape: (input_shape,) * num,
                           lambda x: (x,) * num)


def _merge_sizes(sizes: Sequence[int]) -> Optional[int]:
    """The common size of one axis (``-1`` is unknown and matches any); None if they differ."""
    known = {size for size in sizes if size != -1}
    return None if len(known) > 1 else (known.pop() if known else -1)


def _fan_in_shapes(owner: str, input_shape: Any) -> list[Shape]:
    return _shapes(owner, input_shape, None, "a tuple of input shapes (one per branch)")


def _fan_in_arrays(owner: str, x: Any) -> list[Array]:
    return _as_branches(owner, "x", x, None, "a tuple of arrays (one per branch)")


def _sum_shape(input_shape: Any) -> Shape:
    shapes = _fan_in_shapes("FanInSum", input_shape)
    merged = ([_merge_sizes(sizes) for sizes in zip(*shapes)]
              if len({len(shape) for shape in shapes}) == 1 else [None])
    if None in merged:
        raise ValueError(f"FanInSum: its inputs must all have the same shape, got shapes "
                         f"{[tuple(s) for s in shapes]}")
    return tuple(merged)


def _sum(x: Any) -> Array:
    arrays = _fan_in_arrays("FanInSum", x)
    shapes = [tuple(jnp.shape(a)) for a in arrays]
    if len(set(shapes)) != 1:
        raise ValueError(f"FanInSum: its inputs must all have the same shape, got shapes "
                         f"{shapes}")
    return functools.reduce(operator.add, arrays)


FanInSum = _parameter_free("fan_in_sum", _sum_shape, _sum)


def FanInConcat(axis: int = -1) -> Layer:
    """The inputs concatenated along ``axis`` (counted on the full shape, batch axis
    included, as in stax); all other axes must agree."""
    axis = checks.whole_number("FanInConcat: axis", axis)

    def normalized_axis(rank: int) -> int:
        if not -rank <= axis < rank:
            raise ValueError(f"FanInConcat: axis {axis} is out of range for inputs of rank "
                             f"{rank}")
        return axis % rank

    def check(shapes) -> int:
        ranks = {len(shape) for shape in shapes}
        if len(ranks) == 1:
            along = normalized_axis(ranks.pop())
            if all(_merge_sizes(sizes) is not None
                   for i, sizes in enumerate(zip(*shapes)) if i != along):
                return along
        raise ValueError(f"FanInConcat: its inputs must have the same rank and the same sizes "
                         f"on every axis but axis {axis}, got shapes "
                         f"{[tuple(s) for s in shapes]}")

    def init(input_shape: Any) -> Shape:
        shapes = _fan_in_shapes("FanInConcat", input_shape)
        along = check(shapes)
        sizes = [shape[along] for shape in shapes]
        merged = [_merge_sizes(sizes) for sizes in zip(*shapes)]
        merged[along] = -1 if -1 in sizes else sum(sizes)
        return tuple(merged)

    def apply(x: Any) -> Array:
        arrays = _fan_in_arrays("FanInConcat", x)
        return jnp.concatenate(arrays, axis=check([tuple(jnp.shape(a)) for a in arrays]))

    return _parameter_free("fan_in_concat", init, apply)


def mlp(layer_sizes: Sequence[int], activation: Union[str, Layer] = "relu",
        dropout: float = 0.0, w_init: Optional[Callable] = None,
        b_init: Optional[Callable] = None) -> Layer:
    """Multi-layer perceptron: ``Dense`` layers with ``activation`` between them.

    ``mlp([h_1, ..., h_k, n_out])`` is
    ``Dense(h_1) → act → [Dropout] → ... → Dense(h_k) → act → [Dropout] → Dense(n_out)``;
    the last layer is linear (logits or regression outputs), the input size comes from
    ``init``'s ``input_shape``.  ``dropout`` is the drop probability after each hidden
    activation (no dropout layer when 0).  Params: ``{"dense_0": ..., "dense_k": ...}``.

    Args:
      layer_sizes: output size of each Dense layer, last one included.
      activation: ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"gelu"`` or any ``Layer``.
      dropout: drop probability in ``[0, 1)``.
      w_init, b_init: initializers for every Dense layer (defaults of ``Dense``).
    """
    sizes = list(layer_sizes)
    if not sizes or not all(_is_positive_int(s) for s in sizes):
        raise ValueError(f"mlp: layer_sizes must be a non-empty list of positive ints, "
                         f"got {layer_sizes!r}")
    sizes = [int(s) for s in sizes]
    if isinstance(activation, str):
        if activation not in ACTIVATION_LAYERS:
            raise ValueError(f"mlp: activation must be one of {sorted(ACTIVATION_LAYERS)} or a "
                             f"Layer, got {activation!r}")
        activation = ACTIVATION_LAYERS[activation]
    dropout_layer = Dropout(dropout)  # validates the rate even when no layer is added
    hidden_extras = [activation] + ([dropout_layer] if dropout > 0 else [])
    layers = []
    for size in sizes[:-1]:
        layers += [Dense(size, w_init, b_init)] + hidden_extras
    layers.append(Dense(sizes[-1], w_init, b_init))
    return serial(*layers)
