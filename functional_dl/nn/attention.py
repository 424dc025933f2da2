"""``MultiHeadAttention`` (self and cross), and the boolean masks it takes.

``MultiHeadAttention`` is a layer on the package's contract::

    init(key, input_shape)                                  -> (output_shape, params)
    apply(params, x, *, context=None, mask=None, causal=None,
          key=None, train=False)                            -> y

with ``x: (B, T, F)`` (batch-major) or one sequence ``(T, F)``; inside ``serial`` its entry
is ``attention_i``.  Queries come from ``x``; keys and values from ``context`` (cross
attention, ``(B, S, F_c)``) or from ``x`` itself (self attention, ``S = T``).

Masks are boolean, ``True`` where a query may attend to a key (the opposite of torch's
``key_padding_mask`` and boolean ``attn_mask``, where ``True`` means "ignore"), with a shape
that broadcasts to ``(B, num_heads, T, S)`` (``(num_heads, T, S)`` for one sequence), e.g.
``(B, 1, 1, S)`` from :func:`padding_mask` or ``(T, S)``.  :func:`causal_mask` and
``causal=True`` allow key ``j`` for query ``i`` when ``j <= i`` (counted from the first
position of both, as torch's ``is_causal`` does).  A query that a mask leaves with no key
at all gets a zero attention output (its ``y`` is the output bias), where a plain softmax
would give NaN (torch) or the mean of all values.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn import initializers
from functional_dl.nn.base import (Layer, check_input, check_input_shape, check_params,
                                   dtype_options, matmul_features, promote)

__all__ = ["MultiHeadAttention", "padding_mask", "causal_mask"]

_OWNER = "MultiHeadAttention"
_LAYOUT = "(B, T, {features}) or (T, {features}) (batch-major: batch, time, features)"
_PROJECTIONS = ("query", "key", "value", "out")


def padding_mask(lengths: Any, num_keys: int) -> Array:
    """``(B, 1, 1, S)`` boolean mask, ``True`` at the real keys of a padded batch::

        mask[b, 0, 0, j] = j < lengths[b]          lengths: (B,) integers in [1, S]

    It broadcasts over heads and queries.  torch's ``key_padding_mask`` is its negation,
    ``~mask[:, 0, 0, :]``.  The range of ``lengths`` is checked when it is concrete.
    """
    num_keys = checks.whole_number("padding_mask: num_keys", num_keys, minimum=1)
    checks.integer_dtype("padding_mask: lengths", lengths, what="integer sequence lengths")
    checks.rank("padding_mask: lengths", lengths, 1, what="(B,) (one length per sequence)")
    values = checks.concrete_values(lengths)
    if values is not None and values[0].size:
        low, high = int(values[0].min()), int(values[0].max())
        if low < 1 or high > num_keys:
            raise ValueError(f"padding_mask: lengths must be in [1, num_keys] = "
                             f"[1, {num_keys}], got min {low} and max {high}")
    positions = jnp.arange(num_keys)[None, :]
    lengths = jnp.asarray(lengths)[:, None]
    return (jnp.broadcast_to(positions, (lengths.shape[0], num_keys))
            < jnp.broadcast_to(lengths, (lengths.shape[0], num_keys)))[:, None, None, :]


def causal_mask(num_queries: int, num_keys: Optional[int] = None) -> Array:
    """``(1, 1, T, S)`` boolean mask ``mask[0, 0, i, j] = j <= i`` (``S = T`` by default)."""
    num_queries = checks.whole_number("causal_mask: num_queries", num_queries, minimum=1)
    num_keys = num_queries if num_keys is None else checks.whole_number(
        "causal_mask: num_keys", num_keys, minimum=1)
    return jnp.tril(jnp.ones((num_queries, num_keys), bool))[None, None]


def _check_mask(mask: Any, expected: tuple[int, ...]) -> Array:
    """``mask`` as a 4-d boolean array that broadcasts to ``(B, H, T, S)``."""
    dtype = getattr(mask, "dtype", None)
    if dtype is None or dtype != jnp.bool_:
        raise TypeError(f"{_OWNER}: mask must be a boolean array (True where a query may "
                        f"attend to a key), got {checks.describe(mask)}")
    shape = tuple(jnp.shape(mask))
    fits = len(shape) <= len(expected) and all(
        size in (1, want) for size, want in zip(reversed(shape), reversed(expected)))
    if not fits:
        names = "(B, num_heads, T, S)" if len(expected) == 4 else "(num_heads, T, S)"
        raise ValueError(f"{_OWNER}: mask must have a shape that broadcasts to {names} = "
                         f"{expected}, got shape {shape}")
    return jnp.asarray(mask).reshape((1,) * (4 - len(shape)) + shape)


def _project(params: PyTree, x: Array, dtype: Any) -> Array:
    """``x W + b`` (``b`` left out when the params have none)."""
    x, w = promote(dtype, x, params["w"])
    y = matmul_features(x, w)
    if "b" in params:
        y = y + jnp.broadcast_to(params["b"].astype(y.dtype), y.shape)
    return y


def _split_heads(x: Array, num_heads: int) -> Array:
    """``(B, T, H·D) -> (B, T, H, D)``: head ``h`` owns features ``h·D .. (h+1)·D - 1``."""
    return x.reshape(x.shape[:-1] + (num_heads, x.shape[-1] // num_heads))


def _attention_float64(q: Array, k: Array, v: Array, mask: Optional[Array],
                       causal: bool) -> Array:
    """``softmax(Q Kᵀ / √D + M) V`` per head, all in float64 (``q: (B, T, H, D)``)."""
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    allowed = jnp.ones((1, 1) + logits.shape[2:], bool)
    if causal:
        allowed = causal_mask(logits.shape[2], logits.shape[3])
    if mask is not None:
        allowed = allowed & mask
    allowed = jnp.broadcast_to(allowed, logits.shape)
    logits = jnp.where(allowed, logits, jnp.full_like(logits, -jnp.inf))
    peak = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    # a row with no allowed key has peak -inf: keep it finite (the caller zeroes that row)
    peak = jnp.where(jnp.isfinite(peak), peak, jnp.zeros_like(peak))
    weights = jnp.where(allowed, jnp.exp(logits - jnp.broadcast_to(peak, logits.shape)), 0.0)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    weights = weights / jnp.broadcast_to(jnp.where(total > 0, total, 1.0), weights.shape)
    return jnp.einsum("bhts,bshd->bthd", weights, v)


def _check_heads(num_heads: int, qkv_features: int) -> None:
    if qkv_features % num_heads:
        raise ValueError(f"{_OWNER}: num_heads ({num_heads}) must divide qkv_features (the "
                         f"attention's feature size, by default x's last axis), got "
                         f"qkv_features = {qkv_features}")


def MultiHeadAttention(num_heads: int, *, qkv_features: Optional[int] = None,
                       out_features: Optional[int] = None,
                       context_features: Optional[int] = None, causal: bool = False,
                       use_bias: bool = True, kernel_init: Optional[Callable] = None,
                       bias_init: Optional[Callable] = None, implementation: Optional[str] = None,
                       dtype: Any = None, param_dtype: Any = None) -> Layer:
    """Multi-head scaled dot-product attention (Vaswani et al., 2017, §3.2)::

        Q = x W_q + b_q,   K = c W_k + b_k,   V = c W_v + b_v     (c = context, or x)
        head_h = softmax(Q_h K_hᵀ / √D + M) V_h                    (h = 1 .. H, D = E / H)
        y = [head_1, ..., head_H] W_o + b_o

    ``Q_h`` is the ``h``-th block of ``D`` consecutive columns of ``Q`` (so of ``E =
    qkv_features``); ``M`` is ``0`` where the mask (and ``causal``) allows a key and ``-∞``
    where it does not.  The softmax and the product with ``V`` run in
    ``jax.nn.dot_product_attention``; ``implementation`` is passed to it: ``None`` (JAX's
    choice, today the XLA kernel) or ``"xla"``, or ``"cudnn"`` for cuDNN's fused attention
    on an NVIDIA GPU (float16/bfloat16; JAX raises where cuDNN does not take the shapes).
    That function has no dropout, so neither has this layer's attention weights.  It
    computes its softmax in float32; a float64 computation runs the same formula written
    with ``jnp.einsum`` instead, to keep float64 accuracy.

    Args:
      num_heads: ``H``; it must divide ``qkv_features``.
      qkv_features: ``E``, the width of ``Q``, ``K`` and ``V`` (default ``F``, x's last axis).
      out_features: the width of ``y`` (default ``F``).
      context_features: ``F_c``, the last axis of ``context`` (default ``F``).
      causal: the default of ``apply``'s ``causal`` (so a causal layer works inside
        ``serial``).
      use_bias: whether ``b_q, b_k, b_v, b_o`` exist.
      kernel_init, bias_init: ``init(key, shape, dtype)``; defaults Glorot uniform (torch's
        ``in_proj_weight`` init) and zeros.
      dtype, param_dtype: the computation and parameter dtypes (see ``nn.base``).

    Params: ``{"query", "key", "value", "out"}``, each ``{"w": W, "b": b}`` as ``nn.Dense``
    holds them (``W_q: (F, E)``, ``W_k, W_v: (F_c, E)``, ``W_o: (E, out_features)``).

    ``apply(params, x, *, context=None, mask=None, causal=None)``: ``context`` ``(B, S,
    F_c)`` (``(S, F_c)`` with one sequence) for cross attention; ``mask`` a boolean array
    broadcastable to ``(B, H, T, S)`` (module docstring); ``causal`` (``None``: the
    constructor's) adds the mask ``j <= i``.

    Matches ``torch.nn.MultiheadAttention(E, H, batch_first=True, kdim=F_c, vdim=F_c)``
    (which needs ``F = out_features = E``) with ``in_proj_weight = [W_q W_k W_v]ᵀ``
    (``q_proj_weight = W_qᵀ``, ... when ``F_c != E``), ``in_proj_bias = [b_q b_k b_v]``,
    ``out_proj.weight = W_oᵀ``, ``out_proj.bias = b_o``, called ``(x, c, c,
    key_padding_mask=~padding, attn_mask=~mask)``.
    """
    num_heads = checks.whole_number(f"{_OWNER}: num_heads", num_heads, minimum=1)

    def optional_size(name, value):
        return None if value is None else checks.whole_number(f"{_OWNER}: {name}", value,
                                                              minimum=1)
    qkv_features = optional_size("qkv_features", qkv_features)
    out_features = optional_size("out_features", out_features)
    context_features = optional_size("context_features", context_features)
    if qkv_features is not None:
        _check_heads(num_heads, qkv_features)
    default_causal = checks.boolean(f"{_OWNER}: causal", causal)
    use_bias = checks.boolean(f"{_OWNER}: use_bias", use_bias)
    implementation = checks.one_of(f"{_OWNER}: implementation", implementation,
                                   (None, "xla", "cudnn"))
    dtype, param_dtype = dtype_options(_OWNER, dtype, param_dtype)
    kernel_init = initializers.glorot_uniform() if kernel_init is None else kernel_init
    bias_init = initializers.zeros() if bias_init is None else bias_init
    names = list(_PROJECTIONS)

    def init(key: PRNGKey, input_shape: Shape):
        shape = check_input_shape(_OWNER, input_shape, ranks=(2, 3), known_from=-1,
                                  layout=_LAYOUT.format(features="F"))
        features = shape[-1]
        width = features if qkv_features is None else qkv_features
        _check_heads(num_heads, width)
        sizes = {"query": (features, width),
                 "key": (features if context_features is None else context_features, width),
                 "value": (features if context_features is None else context_features, width),
                 "out": (width, features if out_features is None else out_features)}
        params = {}
        for name, name_key in zip(_PROJECTIONS, jax.random.split(key, 4)):
            w_key, b_key = jax.random.split(name_key)
            params[name] = {"w": kernel_init(w_key, sizes[name], param_dtype)}
            if use_bias:
                params[name]["b"] = bias_init(b_key, sizes[name][1:], param_dtype)
        return shape[:-1] + (sizes["out"][1],), params

    def apply(params: PyTree, x: Array, *, context: Any = None, mask: Any = None,
              causal: Optional[bool] = None, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del key, train
        check_params(_OWNER, params, names, "attention")
        checks.floating_dtype(f"{_OWNER}: x", x)
        check_input(_OWNER, x, ranks=(2, 3), features=params["query"]["w"].shape[0],
                    layout=_LAYOUT)
        causal = default_causal if causal is None else checks.boolean(f"{_OWNER}: causal",
                                                                      causal)
        source = x if context is None else context
        if context is not None:
            checks.floating_dtype(f"{_OWNER}: context", context)
            batch = "B, " if jnp.ndim(x) == 3 else ""
            features = params["key"]["w"].shape[0]
            fits = (jnp.ndim(context) == jnp.ndim(x) and jnp.shape(context)[-1] == features
                    and jnp.shape(context)[:-2] == jnp.shape(x)[:-2])
            if not fits:
                raise ValueError(f"{_OWNER}: context must have shape ({batch}S, {features}) "
                                 f"for x of shape {jnp.shape(x)}, got shape "
                                 f"{jnp.shape(context)}")
        one_sequence = jnp.ndim(x) == 2
        queries = jnp.asarray(x)[None] if one_sequence else jnp.asarray(x)
        source = jnp.asarray(source)[None] if one_sequence else jnp.asarray(source)
        compute = dtype or jnp.result_type(queries, source, *jax.tree.leaves(params))
        batch, num_queries, num_keys = queries.shape[0], queries.shape[1], source.shape[1]
        if mask is not None:
            expected = (batch, num_heads, num_queries, num_keys)
            mask = _check_mask(mask, expected[1:] if one_sequence else expected)

        q, k, v = (_split_heads(_project(params[name], inputs, compute), num_heads)
                   for name, inputs in (("query", queries), ("key", source),
                                        ("value", source)))
        if q.dtype == jnp.float64:
            # dot_product_attention rounds its softmax to float32 (and no fused kernel
            # takes float64): the same formula in float64 keeps float64 accurate.
            heads = _attention_float64(q, k, v, mask, causal)
        else:
            heads = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                                 implementation=implementation)
        if mask is not None:
            # A query with no allowed key: zero instead of the mean of all values.
            allowed = mask if not causal else mask & causal_mask(num_queries, num_keys)
            has_key = jnp.any(allowed, axis=-1)                  # (B|1, H|1, T)
            has_key = jnp.broadcast_to(has_key, (batch, num_heads, num_queries))
            has_key = jnp.transpose(has_key, (0, 2, 1))[..., None]
            heads = jnp.where(jnp.broadcast_to(has_key, heads.shape), heads,
                              jnp.zeros_like(heads))
        y = _project(params["out"], heads.reshape(heads.shape[:2] + (-1,)), compute)
        return y[0] if one_sequence else y

    return Layer(init, apply, "attention")
