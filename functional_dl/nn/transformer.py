"""``TransformerBlock``: attention and an MLP, each around a residual connection.

A layer on the package's contract::

    init(key, input_shape)                                    -> (output_shape, params)
    apply(params, x, *, mask=None, key=None, train=False)     -> y        (y has x's shape)

with ``x: (B, T, d)`` or one sequence ``(T, d)``; inside ``serial`` its entry is
``transformer_block_i``.  It is built from :func:`~functional_dl.nn.LayerNorm`,
:func:`~functional_dl.nn.MultiHeadAttention`, :func:`~functional_dl.nn.Dense` and
:func:`~functional_dl.nn.Dropout`, and writes its two residual sums itself.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn import initializers
from functional_dl.nn.attention import MultiHeadAttention
from functional_dl.nn.base import (Layer, check_input, check_input_shape, check_params,
                                   dtype_options)
from functional_dl.nn.feature_norms import LayerNorm
from functional_dl.nn.layers import Dense, Dropout, gelu, relu

__all__ = ["TransformerBlock"]

_OWNER = "TransformerBlock"
_ACTIVATIONS = {"gelu": gelu, "relu": relu}
_NAMES = ("attention_norm", "attention", "mlp_norm", "mlp_hidden", "mlp_out")


def TransformerBlock(num_heads: int, mlp_features: int, *, causal: bool = False,
                     dropout_rate: float = 0.0, pre_norm: bool = True,
                     activation: str = "gelu", epsilon: float = 1e-5,
                     implementation: Optional[str] = None, dtype: Any = None,
                     param_dtype: Any = None) -> Layer:
    """One transformer layer (Vaswani et al., 2017) on ``x: (..., T, d)``.

    With ``pre_norm=True`` (the default; Xiong et al., 2020, "On layer normalization in the
    transformer architecture")::

        h = x + Drop(MHA(LN₁(x)))
        y = h + Drop(W₂ Drop(σ(W₁ LN₂(h) + b₁)) + b₂)

    and with ``pre_norm=False`` (the original post-norm block)::

        h = LN₁(x + Drop(MHA(x)))
        y = LN₂(h + Drop(W₂ Drop(σ(W₁ h + b₁)) + b₂))

    ``MHA`` is self-attention with ``num_heads`` heads over ``d`` features (``causal`` adds
    the mask ``j <= i``; ``apply``'s ``mask`` is passed on to it), ``W₁: (d,
    mlp_features)``, ``W₂: (mlp_features, d)``, ``σ`` is ``activation`` (``"gelu"``, exact,
    or ``"relu"``), ``LN`` is ``nn.LayerNorm(epsilon)``, and ``Drop`` is inverted dropout of
    rate ``dropout_rate`` when ``train=True`` (it needs ``key`` then; evaluation ignores
    it).  ``dtype``/``param_dtype`` apply to every part.

    Params: ``{"attention_norm", "attention", "mlp_norm", "mlp_hidden", "mlp_out"}`` (the
    layers' own params).

    This is ``torch.nn.TransformerEncoderLayer(d, num_heads, mlp_features,
    dropout=dropout_rate, activation=activation, layer_norm_eps=epsilon, batch_first=True,
    norm_first=pre_norm)`` with ``norm1, self_attn, norm2, linear1, linear2`` holding
    ``attention_norm, attention, mlp_norm, mlp_hidden, mlp_out`` (weights transposed; see
    ``MultiHeadAttention``), called with ``src_mask=~causal_mask`` when causal and
    ``src_key_padding_mask=~padding_mask``; dropout sits at torch's three places.
    """
    num_heads = checks.whole_number(f"{_OWNER}: num_heads", num_heads, minimum=1)
    mlp_features = checks.whole_number(f"{_OWNER}: mlp_features", mlp_features, minimum=1)
    causal = checks.boolean(f"{_OWNER}: causal", causal)
    checks.probability(f"{_OWNER}: dropout_rate", dropout_rate, open_high=True)
    dropout_rate = float(dropout_rate)
    pre_norm = checks.boolean(f"{_OWNER}: pre_norm", pre_norm)
    sigma = _ACTIVATIONS[checks.one_of(f"{_OWNER}: activation", activation,
                                       tuple(_ACTIVATIONS))]
    dtype, param_dtype = dtype_options(_OWNER, dtype, param_dtype)

    attention = MultiHeadAttention(num_heads, causal=causal, implementation=implementation,
                                   dtype=dtype, param_dtype=param_dtype)
    attention_norm = LayerNorm(epsilon, dtype=dtype, param_dtype=param_dtype)
    mlp_norm = LayerNorm(epsilon, dtype=dtype, param_dtype=param_dtype)
    w_init, b_init = initializers.glorot_normal(), initializers.zeros()

    def dense(features: int) -> Layer:
        # Dense takes no dtype: its initializers get param_dtype, apply casts to dtype.
        return Dense(features, lambda key, shape: w_init(key, shape, param_dtype),
                     lambda key, shape: b_init(key, shape, param_dtype))
    dropout = Dropout(dropout_rate)
    project = dense(1).apply  # Dense's apply takes its sizes from the params it is given

    def init(key: PRNGKey, input_shape: Shape):
        shape = check_input_shape(_OWNER, input_shape, ranks=(2, 3), known_from=-1,
                                  layout="(B, T, d) or (T, d) (batch-major)")
        keys = jax.random.split(key, 5)
        params = {"attention_norm": attention_norm.init(keys[0], shape)[1],
                  "attention": attention.init(keys[1], shape)[1],
                  "mlp_norm": mlp_norm.init(keys[2], shape)[1],
                  "mlp_hidden": dense(mlp_features).init(keys[3], shape)[1],
                  "mlp_out": dense(shape[-1]).init(keys[4], shape[:-1] + (mlp_features,))[1]}
        return shape, params

    def apply(params: PyTree, x: Array, *, mask: Any = None, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        check_params(_OWNER, params, _NAMES, "transformer_block")
        checks.floating_dtype(f"{_OWNER}: x", x)
        check_input(_OWNER, x, ranks=(2, 3), features=jnp.shape(params["mlp_hidden"]["w"])[0],
                    layout="(B, T, {features}) or (T, {features}) (batch-major)")
        dropping = train and dropout_rate > 0
        if dropping and key is None:
            raise ValueError(f"{_OWNER}: train=True with dropout_rate={dropout_rate} needs a "
                             f"PRNG key (key=...)")
        keys = list(jax.random.split(key, 3)) if dropping else [None] * 3

        def drop(h: Array, drop_key: Optional[PRNGKey]) -> Array:
            return dropout.apply({}, h, key=drop_key, train=dropping)

        def linear(name: str, h: Array) -> Array:
            layer_params = params[name]
            if dtype is not None:
                h = h.astype(dtype)
                layer_params = jax.tree.map(lambda w: w.astype(dtype), layer_params)
            return project(layer_params, h)

        def attention_branch(h: Array) -> Array:
            return drop(attention.apply(params["attention"], h, mask=mask), keys[0])

        def mlp_branch(h: Array) -> Array:
            hidden = drop(sigma(linear("mlp_hidden", h)), keys[1])
            return drop(linear("mlp_out", hidden), keys[2])

        if pre_norm:
            h = x + attention_branch(attention_norm.apply(params["attention_norm"], x))
            return h + mlp_branch(mlp_norm.apply(params["mlp_norm"], h))
        h = attention_norm.apply(params["attention_norm"], x + attention_branch(x))
        return mlp_norm.apply(params["mlp_norm"], h + mlp_branch(h))

    return Layer(init, apply, "transformer_block")
