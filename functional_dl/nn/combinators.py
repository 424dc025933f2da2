"""Combinators that build networks from layers: ``serial`` and ``mlp``.

``serial(*layers)`` composes layers left to right, ``y = f_L(... f_2(f_1(x)))``, and is a
``Layer`` itself.  Its params are a dict keyed by readable names: each layer's kind and its
count among layers of that kind, ``{"dense_0": {"w", "b"}, "dense_1": {...}}``; layers
without parameters (activations, dropout, pooling, flatten) get no entry.  Names come from
the layer's ``name`` field (set by its factory, or by :func:`functional_dl.nn.named`); untagged custom layers are
``"layer_0"``, ``"layer_1"``, ...

Randomness: ``init`` splits ``key`` into one key per layer
(``jax.random.split(key, len(layers))[i]`` for layer ``i``), and so does ``apply`` when a
key is given, so two dropout layers never share a mask.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import jax

from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn.base import Layer, as_layer
from functional_dl.nn.layers import (Dense, Dropout, Gelu, Relu, Sigmoid, Tanh, _is_positive_int,
                                     layer_name)

__all__ = ["serial", "mlp", "ACTIVATION_LAYERS"]

#: Activation names accepted by :func:`mlp` (and :mod:`functional_dl.nn.backprop`).
ACTIVATION_LAYERS = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh, "gelu": Gelu}


def _param_names(layers: Sequence[Layer]) -> list[str]:
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        kind = layer_name(layer)
        names.append(f"{kind}_{counts.get(kind, 0)}")
        counts[kind] = counts.get(kind, 0) + 1
    return names


def serial(*layers: Layer) -> Layer:
    """Compose ``layers`` in order (see the module docstring for names and keys)."""
    if not layers:
        raise ValueError("serial needs at least one layer")
    layers = tuple(as_layer(layer, owner=f"serial: layer {index}")
                   for index, layer in enumerate(layers))
    names = _param_names(layers)

    def init(key: PRNGKey, input_shape: Shape):
        keys = jax.random.split(key, len(layers))
        params = {}
        shape = tuple(input_shape)
        for name, layer, layer_key in zip(names, layers, keys, strict=True):
            shape, layer_params = layer.init(layer_key, shape)
            if not (isinstance(layer_params, dict) and not layer_params):
                params[name] = layer_params
        return shape, params

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        unknown = set(params) - set(names)
        if unknown:
            raise ValueError(f"serial: params has names {sorted(unknown)} that match no layer; "
                             f"the layers are {names}")
        keys = [None] * len(layers) if key is None else jax.random.split(key, len(layers))
        for name, layer, layer_key in zip(names, layers, keys, strict=True):
            x = layer.apply(params.get(name, {}), x, key=layer_key, train=train)
        return x

    return Layer(init, apply, "serial")


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
