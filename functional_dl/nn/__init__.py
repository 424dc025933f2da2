"""Neural-network building blocks as pure functions (stax-style ``Layer(init, apply)``).

Layers: ``Dense``, ``Conv`` (1-D/2-D/3-D, dilated, grouped/depthwise), ``Conv2D``,
``ConvTranspose``, ``MaxPool``/``AvgPool`` (1-D/2-D/3-D), ``GlobalAvgPool``,
``GlobalMaxPool``, ``Flatten``, ``Dropout``, ``Embedding``, ``LayerNorm``, ``RMSNorm``,
``GroupNorm``, ``MultiHeadAttention``, ``TransformerBlock``; the activations of
``nn.activations`` (``Relu``, ``Gelu``, ``Silu``, ``LeakyRelu(0.2)``, ... and the plain
functions ``relu``, ``gelu``, ...; ``ACTIVATIONS`` by name).  Combinators: ``serial``,
``parallel``, ``Residual``, ``FanOut``, ``FanInSum``, ``FanInConcat``, ``Identity``, ``mlp``.
Stateful layers (``nn.state``): ``BatchNorm``, whose ``apply(params, x, state=...)`` returns
``(y, state)``.  Recurrent: the cells ``LSTMCell``, ``GRUCell``, ``SimpleRNNCell`` (any
``Cell``), scanned over time by ``RNN`` and ``scan_cell``; ``Bidirectional``.
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
from functional_dl.nn.conv import Conv, ConvTranspose
from functional_dl.nn.pooling import GlobalAvgPool, GlobalMaxPool
from functional_dl.nn.combinators import (FanInConcat, FanInSum, FanOut, Identity, Residual,
                                          parallel)
from functional_dl.nn.state import StatefulLayer, as_stateful, is_stateful
from functional_dl.nn.batch_norm import BatchNorm
from functional_dl.nn import activations
from functional_dl.nn.activations import (ACTIVATIONS, Activation, Celu, Elu, Glu, HardTanh,
                                          LeakyRelu, LogSigmoid, Relu6, Selu, Silu, Softplus,
                                          Swish, celu, elu, glu, hard_tanh, leaky_relu,
                                          log_sigmoid, relu6, selu, silu, softplus, swish)
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
    "Conv", "ConvTranspose", "GlobalAvgPool", "GlobalMaxPool",
    "Identity", "FanOut", "FanInSum", "FanInConcat", "parallel", "Residual",
    "StatefulLayer", "is_stateful", "as_stateful", "BatchNorm",
    "activations", "ACTIVATIONS", "Activation",
    "Elu", "LeakyRelu", "Selu", "Silu", "Swish", "Softplus", "HardTanh", "LogSigmoid",
    "Celu", "Glu", "Relu6",
    "elu", "leaky_relu", "selu", "silu", "swish", "softplus", "hard_tanh", "log_sigmoid",
    "celu", "glu", "relu6",
    "MultiHeadAttention", "padding_mask", "causal_mask", "TransformerBlock",
]
