"""Neural-network building blocks as pure functions (stax-style ``Layer(init, apply)``).

Layers: ``Dense``, ``Conv2D``, ``MaxPool``, ``AvgPool``, ``Flatten``, ``Dropout`` and the
activations ``Relu``, ``Sigmoid``, ``Tanh``, ``Gelu``, ``Softmax``, ``LogSoftmax`` (also as
plain functions ``relu``, ``sigmoid``, ...).  Combinators: ``serial``, ``mlp``.
Recurrent: the cells ``LSTMCell``, ``GRUCell``, ``SimpleRNNCell`` (any ``Cell``), scanned
over time by ``RNN`` and ``scan_cell``; ``Bidirectional``.
Initializers live in ``functional_dl.nn.initializers``; the hand-written backpropagation
and the finite-difference gradient check in ``functional_dl.nn.backprop``.

    >>> import jax
    >>> from functional_dl import nn
    >>> init, apply = nn.mlp([64, 10])
    >>> output_shape, params = init(jax.random.key(0), (-1, 784))
    >>> output_shape
    (-1, 10)
"""
from functional_dl.nn import backprop, initializers
from functional_dl.nn.backprop import check_gradient, numerical_gradient
from functional_dl.nn.combinators import mlp, serial
from functional_dl.nn.conv import AvgPool, Conv2D, Flatten, MaxPool
from functional_dl.nn.embedding import Embedding, attend
from functional_dl.nn.feature_norms import GroupNorm, LayerNorm, RMSNorm
from functional_dl.nn.base import Layer, as_layer
from functional_dl.nn.layers import (Dense, Dropout, Gelu, LogSoftmax, Relu, Sigmoid,
                                     Softmax, Tanh, elementwise, gelu, layer_name, log_softmax,
                                     named, relu, sigmoid, softmax, tanh)
from functional_dl.nn.recurrent import RNN, Bidirectional, scan_cell
from functional_dl.nn.recurrent_cells import Cell, GRUCell, LSTMCell, SimpleRNNCell
from functional_dl.nn.attention import MultiHeadAttention, causal_mask, padding_mask
from functional_dl.nn.transformer import TransformerBlock

__all__ = [
    "Layer", "as_layer", "named", "layer_name", "elementwise",
    "Dense", "Dropout", "Conv2D", "MaxPool", "AvgPool", "Flatten",
    "Relu", "Sigmoid", "Tanh", "Gelu", "Softmax", "LogSoftmax",
    "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax",
    "serial", "mlp",
    "LayerNorm", "RMSNorm", "GroupNorm", "Embedding", "attend",
    "Cell", "LSTMCell", "GRUCell", "SimpleRNNCell", "RNN", "Bidirectional", "scan_cell",
    "initializers", "backprop", "numerical_gradient", "check_gradient",
    "MultiHeadAttention", "padding_mask", "causal_mask", "TransformerBlock",
]
