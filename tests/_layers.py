"""The registry of layers the tests run: one entry per layer, read by the contract and oracle tests.

An entry gives a zero-argument ``build`` returning the layer (an ``(init, apply)`` pair), the
input shape (batch axis first), the NumPy float64 forward pass at eval time
``oracle(params, x)`` (params as a tree of float64 arrays; None where no oracle exists),
and ``per_example``: whether ``apply`` also takes one example without the batch axis.
``tests/test_nn_layers.py`` runs the common contract (shapes, jit, vmap, grad) and the
oracle comparison for every entry, so a new layer is one entry here.

The NumPy oracles are direct transcriptions: loops over output positions for convolution
and pooling, ``math.erf`` per entry for GELU.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from functional_dl import nn


# ----------------------------------------------------------------------------------------
# NumPy oracles.


def np_gelu(x):
    return np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()]).reshape(x.shape)


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_dense(params, x):
    return x @ params["w"] + params["b"]


def np_mlp(params, x, activation):
    h = np.asarray(x, np.float64)
    names = sorted(params, key=lambda n: int(n.split("_")[1]))
    for i, name in enumerate(names):
        h = h @ np.asarray(params[name]["w"]) + np.asarray(params[name]["b"])
        if i < len(names) - 1:
            h = activation(h)
    return h


def same_padding(size, window, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def np_pad(x, window, strides, padding, fill):
    """Pad an NHWC array as the layer's padding argument says; returns the padded array."""
    if padding == "VALID":
        pads = ((0, 0), (0, 0))
    elif padding == "SAME":
        pads = tuple(same_padding(x.shape[1 + a], window[a], strides[a]) for a in range(2))
    else:
        pads = padding
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=fill)


def np_sliding(x_pad, window, strides, channels_out, reduce_patch):
    """y[:, i, j, :] = reduce_patch(window of x_pad at (i·s_h, j·s_w)), a direct loop."""
    out_h = (x_pad.shape[1] - window[0]) // strides[0] + 1
    out_w = (x_pad.shape[2] - window[1]) // strides[1] + 1
    y = np.zeros((x_pad.shape[0], out_h, out_w, channels_out))
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * strides[0], j * strides[1]
            y[:, i, j, :] = reduce_patch(x_pad[:, top:top + window[0], left:left + window[1], :])
    return y


def np_conv2d(x, w, b, strides, padding):
    x_pad = np_pad(x, w.shape[:2], strides, padding, 0.0)
    # y[n, i, j, o] = b[o] + Σ_{u,v,c} patch[n, u, v, c] w[u, v, c, o]
    return np_sliding(x_pad, w.shape[:2], strides, w.shape[3],
                      lambda patch: b + np.einsum("nuvc,uvco->no", patch, w))


def np_pool(x, window, strides, padding, kind):
    fill = -np.inf if kind == "max" else np.nan  # NaN padding: nanmean skips it
    x_pad = np_pad(x, window, strides, padding, fill)
    reduce_patch = ((lambda p: np.max(p, axis=(1, 2))) if kind == "max"
                    else (lambda p: np.nanmean(p, axis=(1, 2))))
    return np_sliding(x_pad, window, strides, x.shape[3], reduce_patch)


def small_convnet():
    return nn.serial(nn.Conv2D(3, 3, padding="SAME"), nn.Relu, nn.MaxPool(2),
                     nn.Conv2D(2, (2, 2), strides=1, padding="VALID"), nn.Tanh,
                     nn.AvgPool(2, padding="SAME"), nn.Flatten, nn.Dense(4))


def np_convnet(params, x):
    """The NumPy forward pass of ``small_convnet`` built from the loop oracles above."""
    p = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()}
         for name, layer in params.items()}
    h = np.maximum(np_conv2d(x, p["conv_0"]["w"], p["conv_0"]["b"], (1, 1), "SAME"), 0)
    h = np_pool(h, (2, 2), (2, 2), "VALID", "max")
    h = np.tanh(np_conv2d(h, p["conv_1"]["w"], p["conv_1"]["b"], (1, 1), "VALID"))
    h = np_pool(h, (2, 2), (2, 2), "SAME", "avg")
    return h.reshape(h.shape[0], -1) @ p["dense_0"]["w"] + p["dense_0"]["b"]


def np_conv(x, w, b, strides, pads, dilation, groups):
    """Grouped, dilated N-d convolution, the module formula as a direct loop::

        y[n, i, o] = b[o] + Σ_{u, c} x_pad[n, s ⊙ i + d ⊙ u, g(o) C_g + c] w[u, c, o]

    ``x``: (N, *spatial, C); ``w``: (*k, C_g, F); ``pads``: one (before, after) per axis.
    """
    rank = w.ndim - 2
    x_pad = np.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
    window, (channels_group, features) = w.shape[:rank], w.shape[rank:]
    features_group = features // groups
    out = tuple((x_pad.shape[1 + a] - dilation[a] * (window[a] - 1) - 1) // strides[a] + 1
                for a in range(rank))
    y = np.zeros((x.shape[0],) + out + (features,))
    for i in np.ndindex(*out):
        for u in np.ndindex(*window):
            position = tuple(strides[a] * i[a] + dilation[a] * u[a] for a in range(rank))
            entries = x_pad[(slice(None),) + position]            # (N, C)
            for o in range(features):
                g = o // features_group
                group = entries[:, g * channels_group:(g + 1) * channels_group]
                y[(slice(None),) + i + (o,)] += group @ w[u + (slice(None), o)]
    return y + b


def np_conv_transpose(x, w, b, strides, crops, dilation, groups):
    """Transposed convolution as a scatter loop: input entry ``i`` adds ``x[i] · w[u]`` at
    ``s ⊙ i + d ⊙ u`` of the full result, which is then cut by ``crops`` (negative: zeros
    added).  ``w``: (*k, C, F_g)."""
    rank = w.ndim - 2
    window, (channels, features_group) = w.shape[:rank], w.shape[rank:]
    channels_group = channels // groups
    full = tuple((x.shape[1 + a] - 1) * strides[a] + dilation[a] * (window[a] - 1) + 1
                 for a in range(rank))
    y = np.zeros((x.shape[0],) + full + (groups * features_group,))
    for i in np.ndindex(*x.shape[1:-1]):
        for u in np.ndindex(*window):
            position = tuple(strides[a] * i[a] + dilation[a] * u[a] for a in range(rank))
            for g in range(groups):
                ins, outs = (slice(g * channels_group, (g + 1) * channels_group),
                             slice(g * features_group, (g + 1) * features_group))
                y[(slice(None),) + position + (outs,)] += x[(slice(None),) + i + (ins,)] @ w[u][ins]
    for a, (lo, hi) in enumerate(crops):
        y = np.pad(y, [(0, 0)] * (a + 1) + [(max(-lo, 0), max(-hi, 0))] + [(0, 0)] * (rank - a))
        size = y.shape[1 + a]
        y = np.take(y, np.arange(max(lo, 0), size - max(hi, 0)), axis=1 + a)
    return y + b


def np_pool_nd(x, window, strides, pads, kind):
    """Max or mean (over the real entries) of each window, a direct loop; ``pads`` per axis."""
    fill = -np.inf if kind == "max" else np.nan  # NaN padding: nanmean skips it
    rank = len(window)
    x_pad = np.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),), constant_values=fill)
    out = tuple((x_pad.shape[1 + a] - window[a]) // strides[a] + 1 for a in range(rank))
    y = np.zeros((x.shape[0],) + out + (x.shape[-1],))
    reduce = np.max if kind == "max" else np.nanmean
    for i in np.ndindex(*out):
        patch = x_pad[(slice(None),) + tuple(slice(strides[a] * i[a], strides[a] * i[a] + window[a])
                                             for a in range(rank))]
        y[(slice(None),) + i] = reduce(patch, axis=tuple(range(1, rank + 1)))
    return y


def _np_serial(params, x):
    """The forward pass of the ``serial`` entry: Dense, Sigmoid, Dense, LogSoftmax."""
    h = np_sigmoid(np_dense(params["dense_0"], x))
    return np.log(np_softmax(np_dense(params["dense_1"], h)))


# ----------------------------------------------------------------------------------------
# The registry.


class LayerEntry(NamedTuple):
    """One layer configuration and what the common tests need to run it."""
    build: Callable[[], Any]
    input_shape: tuple
    oracle: Callable[[Any, np.ndarray], np.ndarray] | None
    per_example: bool = True


def _stateless(oracle):
    """An oracle for a parameter-free layer, from its elementwise NumPy function."""
    return lambda params, x: oracle(x)


ACTIVATION_ORACLES = {
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": np_sigmoid,
    "tanh": np.tanh,
    "gelu": np_gelu,
    "softmax": np_softmax,
    "log_softmax": lambda x: np.log(np_softmax(x)),
}
_ACTIVATION_LAYERS = {"relu": nn.Relu, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.Gelu,
                      "softmax": nn.Softmax, "log_softmax": nn.LogSoftmax}

# The activations of nn.activations, each with a non-default parameter where it has one
# (the defaults are compared with torch in tests/test_nn_layers.py).
SELU = (1.6732632423543772848170429916717, 1.0507009873554804934193349852946)  # (α, λ)
ACTIVATION_ORACLES.update({
    "elu": lambda x: np.where(x > 0, x, 0.7 * (np.exp(np.minimum(x, 0)) - 1)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "selu": lambda x: SELU[1] * np.where(x > 0, x, SELU[0] * (np.exp(np.minimum(x, 0)) - 1)),
    "silu": lambda x: x * np_sigmoid(x),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                  * (x + 0.044715 * x ** 3))),
    "hard_tanh": lambda x: np.clip(x, -0.5, 1.5),
    "log_sigmoid": lambda x: -np.log1p(np.exp(-x)),
    "celu": lambda x: np.maximum(0, x) + np.minimum(0, 0.5 * (np.exp(x / 0.5) - 1)),
    "glu": lambda x: x[..., :x.shape[-1] // 2] * np_sigmoid(x[..., x.shape[-1] // 2:]),
    "relu6": lambda x: np.clip(x * 3, 0, 6),  # the layer is serial(scale by 3, Relu6)
})
_ACTIVATION_LAYERS.update({
    "elu": nn.Elu(0.7), "leaky_relu": nn.LeakyRelu(negative_slope=0.2), "selu": nn.Selu,
    "silu": nn.Silu, "softplus": nn.Softplus, "gelu_tanh": nn.Gelu(approximate=True),
    "hard_tanh": nn.HardTanh(-0.5, 1.5), "log_sigmoid": nn.LogSigmoid, "celu": nn.Celu(0.5),
    "glu": nn.Glu,
    # x ~ N(0, 1) rarely reaches 6: scaled by 3 first, so both bounds are crossed
    "relu6": nn.serial(nn.elementwise(lambda x: 3 * x, "scale"), nn.Relu6),
})

LAYERS = {
    "dense": LayerEntry(lambda: nn.Dense(3), (2, 4), np_dense),
    **{name: LayerEntry(lambda layer=layer: layer, (2, 4), _stateless(ACTIVATION_ORACLES[name]))
       for name, layer in _ACTIVATION_LAYERS.items()},
    "dropout": LayerEntry(lambda: nn.Dropout(0.25), (2, 4), _stateless(lambda x: x)),
    "mlp": LayerEntry(lambda: nn.mlp([5, 3], activation="gelu", dropout=0.1), (2, 4),
                      lambda params, x: np_mlp(params, x, np_gelu)),
    "serial": LayerEntry(lambda: nn.serial(nn.Dense(6), nn.Sigmoid, nn.Dense(2), nn.LogSoftmax),
                         (2, 4), _np_serial),
    "conv2d": LayerEntry(lambda: nn.Conv2D(3, (2, 3), (2, 1), "SAME"), (2, 5, 6, 2),
                         lambda params, x: np_conv2d(x, params["w"], params["b"], (2, 1), "SAME")),
    "max_pool": LayerEntry(lambda: nn.MaxPool((3, 2), (2, 2), "SAME"), (2, 5, 6, 3),
                           _stateless(lambda x: np_pool(x, (3, 2), (2, 2), "SAME", "max"))),
    "avg_pool": LayerEntry(lambda: nn.AvgPool((3, 2), (2, 2), "SAME"), (2, 5, 6, 3),
                           _stateless(lambda x: np_pool(x, (3, 2), (2, 2), "SAME", "avg"))),
    # Flatten keeps the leading axis as the batch axis, so one example is not its input.
    "flatten": LayerEntry(lambda: nn.Flatten, (2, 3, 4, 5),
                          _stateless(lambda x: x.reshape(x.shape[0], -1)), per_example=False),
    "convnet": LayerEntry(small_convnet, (3, 8, 8, 1), np_convnet, per_example=False),
    "conv1d_dilated_grouped": LayerEntry(
        lambda: nn.Conv(4, (3,), 2, ((2, 1),), dilation=2, feature_group_count=2), (2, 9, 4),
        lambda params, x: np_conv(x, params["w"], params["b"], (2,), ((2, 1),), (2,), 2)),
    "conv3d_depthwise": LayerEntry(
        lambda: nn.Conv(4, (2, 3, 2), (1, 2, 1), "SAME", feature_group_count=2), (2, 3, 5, 4, 2),
        lambda params, x: np_conv(x, params["w"], params["b"], (1, 2, 1),
                                  ((0, 1), (1, 1), (0, 1)), (1, 1, 1), 2)),
    "conv_transpose2d": LayerEntry(
        lambda: nn.ConvTranspose(4, (3, 2), (2, 1), ((1, 0), (0, 2)), output_padding=(1, 0),
                                 feature_group_count=2), (2, 3, 4, 2),
        lambda params, x: np_conv_transpose(x, params["w"], params["b"], (2, 1),
                                            ((1, -1), (0, 2)), (1, 1), 2)),
    "max_pool1d": LayerEntry(lambda: nn.MaxPool((3,), 2, "SAME"), (2, 7, 3),
                             _stateless(lambda x: np_pool_nd(x, (3,), (2,), ((1, 1),), "max"))),
    "avg_pool3d": LayerEntry(lambda: nn.AvgPool((2, 2, 3), (1, 2, 2), 1), (2, 3, 4, 5, 2),
                             _stateless(lambda x: np_pool_nd(x, (2, 2, 3), (1, 2, 2),
                                                             ((1, 1),) * 3, "avg"))),
    "global_avg_pool": LayerEntry(lambda: nn.GlobalAvgPool(), (2, 3, 4, 5),
                                  _stateless(lambda x: x.mean(axis=(1, 2))), per_example=False),
    "global_max_pool_keepdims": LayerEntry(
        lambda: nn.GlobalMaxPool(keepdims=True, spatial_rank=1), (2, 5, 3),
        _stateless(lambda x: x.max(axis=1, keepdims=True))),
}


# ----------------------------------------------------------------------------------------
# Combinators (functional_dl.nn.combinators): a residual block and nested serial names.


def _np_residual(params, x):
    """``x + tanh(x W + b)``: the forward pass of the ``residual`` entry."""
    return x + np.tanh(np_dense(params["dense_0"], x))


def _np_nested_serial(params, x):
    """Dense, Relu inside ``serial_0``, then the ``residual_0`` block, then a Dense."""
    h = np.maximum(np_dense(params["serial_0"]["dense_0"], x), 0)
    return np_dense(params["dense_0"], _np_residual(params["residual_0"], h))


LAYERS.update({
    "residual": LayerEntry(lambda: nn.Residual(nn.serial(nn.Dense(4), nn.Tanh)), (2, 4),
                           _np_residual),
    "nested_serial": LayerEntry(
        lambda: nn.serial(nn.serial(nn.Dense(5), nn.Relu),
                          nn.Residual(nn.serial(nn.Dense(5), nn.Tanh)), nn.Dense(3)),
        (2, 4), _np_nested_serial),
})


# Attention: NumPy oracles (loops over examples, heads and queries) and registry entries.


def np_attention(params, x, context, allowed, num_heads):
    """Multi-head attention in float64; ``allowed``: the full (B, H, T, S) bool mask.

    head_h[b, i] = Σ_j softmax_j(q_h[b, i]·k_h[b, j] / √D over allowed j) v_h[b, j], and 0
    for a query with no allowed key; y = [head_1 ... head_H] W_o + b_o.
    """
    def project(name, inputs):
        out = np.asarray(inputs, np.float64) @ params[name]["w"]
        return out + params[name]["b"] if "b" in params[name] else out
    context = x if context is None else context
    q, k, v = project("query", x), project("key", context), project("value", context)
    batch, queries, width = q.shape
    size = width // num_heads
    heads = np.zeros((batch, queries, width))
    for b in range(batch):
        for h in range(num_heads):
            columns = slice(h * size, (h + 1) * size)
            for i in range(queries):
                keys = np.flatnonzero(allowed[b, h, i])
                if keys.size == 0:
                    continue
                scores = np.array([q[b, i, columns] @ k[b, j, columns] for j in keys])
                scores = scores / math.sqrt(size)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                heads[b, i, columns] = weights @ v[b, keys, columns]
    return project("out", heads)


def _np_last_axis_layer_norm(params, x, epsilon):
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * params["scale"] + params["bias"]


def np_transformer_block(params, x, allowed, num_heads, pre_norm, epsilon, activation=np_gelu):
    """The block's two residual sums (pre- or post-norm), without dropout."""
    def attention(h):
        return np_attention(params["attention"], h, None, allowed, num_heads)

    def mlp(h):
        return np_dense(params["mlp_out"], activation(np_dense(params["mlp_hidden"], h)))

    def norm(name, h):
        return _np_last_axis_layer_norm(params[name], h, epsilon)
    if pre_norm:
        h = x + attention(norm("attention_norm", x))
        return h + mlp(norm("mlp_norm", h))
    h = norm("attention_norm", x + attention(x))
    return norm("mlp_norm", h + mlp(h))


def _np_causal_attention(params, x):
    queries = x.shape[1]
    allowed = np.broadcast_to(np.tril(np.ones((queries, queries), bool)), (x.shape[0], 2) +
                              (queries, queries))
    return np_attention(params, x, None, allowed, 2)


def _np_causal_block(params, x):
    queries = x.shape[1]
    allowed = np.broadcast_to(np.tril(np.ones((queries, queries), bool)), (x.shape[0], 2) +
                              (queries, queries))
    return np_transformer_block(params, x, allowed, 2, True, 1e-5)


LAYERS.update({
    "multi_head_attention": LayerEntry(
        lambda: nn.MultiHeadAttention(2, qkv_features=4, out_features=3, causal=True),
        (2, 4, 6), _np_causal_attention),
    "transformer_block": LayerEntry(lambda: nn.TransformerBlock(2, 8, causal=True),
                                    (2, 4, 6), _np_causal_block),
})
