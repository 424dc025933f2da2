"""Tests for nn.MultiHeadAttention, nn.padding_mask, nn.causal_mask and nn.TransformerBlock.

Oracles: ``torch.nn.MultiheadAttention`` and ``torch.nn.TransformerEncoderLayer`` loaded with
the same weights (outputs and gradients, when torch is installed), and NumPy float64
transcriptions below: ``softmax(Q Kᵀ / √D) V`` written as a loop over examples, heads and
queries, and the block's two residual sums.  ``tests/_layers.py`` holds the registry entries
that run the common contract (shapes, jit, vmap, finite-difference gradients).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import nn

from _layers import np_attention, np_transformer_block

RNG = np.random.default_rng(18)
KEY = jax.random.key(0)


def _randomized(params, spread=0.5):
    """Every leaf replaced by random values (biases are not zeros, norm scales not ones)."""
    def draw(path, leaf):
        centre = 1.0 if path[-1].key == "scale" else 0.0
        return jnp.asarray(centre + spread * RNG.normal(size=leaf.shape), leaf.dtype)
    return jax.tree_util.tree_map_with_path(draw, params)


def _as_numpy(params):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params)


def _full_mask(mask, causal, batch, heads, queries, keys):
    """The allowed (b, h, i, j) pairs as a NumPy bool array of the full shape."""
    allowed = np.ones((batch, heads, queries, keys), bool)
    if mask is not None:
        allowed &= np.broadcast_to(np.asarray(mask), allowed.shape)
    if causal:
        allowed &= np.tril(np.ones((queries, keys), bool))
    return allowed


# ------------------------------------------------------------------ masks


def test_padding_and_causal_masks_match_their_definitions():
    mask = nn.padding_mask(jnp.array([3, 1, 4]), 4)
    assert mask.shape == (3, 1, 1, 4) and mask.dtype == jnp.bool_
    np.testing.assert_array_equal(mask[:, 0, 0], [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    causal = nn.causal_mask(3, 4)
    assert causal.shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(causal[0, 0], [[j <= i for j in range(4)] for i in range(3)])
    np.testing.assert_array_equal(nn.causal_mask(2), [[[[True, False], [True, True]]]])
    jitted = jax.jit(nn.padding_mask, static_argnums=1)(jnp.array([2]), 3)
    np.testing.assert_array_equal(jitted[0, 0, 0], [True, True, False])


# ------------------------------------------------------------------ the NumPy oracle

# name -> (layer keywords, x shape, context shape or None, mask builder or None, causal)
NUMPY_CASES = {
    "self": ({}, (2, 5, 6), None, None, False),
    "self_causal": ({}, (2, 5, 6), None, None, True),
    "self_random_mask_4d": ({}, (2, 4, 6), None, lambda b, h, t, s: RNG.random((b, h, t, s))
                            < 0.6, False),
    "self_mask_2d_and_causal": ({}, (2, 5, 6), None, lambda b, h, t, s: RNG.random((t, s))
                                < 0.7, True),
    "per_head_mask_3d": ({}, (2, 4, 6), None, lambda b, h, t, s: RNG.random((h, 1, s)) < 0.7,
                         False),
    "padding": ({}, (3, 5, 6), None, lambda b, h, t, s: np.asarray(
        nn.padding_mask(jnp.array([5, 2, 1]), s)), False),
    "cross_other_sizes": ({"qkv_features": 8, "out_features": 3, "context_features": 5},
                          (2, 4, 6), (2, 7, 5), lambda b, h, t, s: np.asarray(
                              nn.padding_mask(jnp.array([7, 3]), s)), False),
    "cross_causal_no_bias": ({"use_bias": False}, (2, 3, 6), (2, 5, 6), None, True),
    "one_sequence": ({"qkv_features": 4}, (5, 6), None, lambda b, h, t, s: RNG.random((t, s))
                     < 0.7, True),
    "one_sequence_cross": ({}, (3, 6), (4, 6), None, False),
}


def _numpy_setup(case, num_heads=2):
    options, x_shape, c_shape, make_mask, causal = NUMPY_CASES[case]
    layer = nn.MultiHeadAttention(num_heads, **options)
    out_shape, params = layer.init(KEY, (-1,) + x_shape[1:] if len(x_shape) == 3 else x_shape)
    params = _randomized(params)
    x = RNG.normal(size=x_shape)
    context = None if c_shape is None else RNG.normal(size=c_shape)
    batch = 1 if len(x_shape) == 2 else x_shape[0]
    queries = x_shape[-2]
    keys = queries if context is None else c_shape[-2]
    mask = None if make_mask is None else make_mask(batch, num_heads, queries, keys)
    return layer, params, x, context, mask, causal, out_shape


# float32 runs jax.nn.dot_product_attention, float64 the einsum transcription (torch's
# float64 comparisons below cover the rest of it).
NUMPY_RUNS = [(case, "float32") for case in sorted(NUMPY_CASES)] + [
    (case, "float64") for case in ("cross_other_sizes", "one_sequence", "per_head_mask_3d",
                                   "self_random_mask_4d")]


@pytest.mark.parametrize("case,dtype", NUMPY_RUNS)
def test_attention_matches_numpy(case, dtype):
    layer, params, x, context, mask, causal, out_shape = _numpy_setup(case)
    one = x.ndim == 2
    full = _full_mask(mask, causal, 1 if one else x.shape[0], 2, x.shape[-2],
                      (x if context is None else context).shape[-2])
    expected = np_attention(_as_numpy(params), x[None] if one else x,
                            None if context is None else (context[None] if one else context),
                            full, 2)
    expected = expected[0] if one else expected
    with jax.enable_x64(dtype == "float64"):
        cast = lambda a: None if a is None else jnp.asarray(a, dtype)
        typed = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), params)
        arrays = {"context": cast(context)}
        if mask is not None:
            arrays["mask"] = jnp.asarray(mask)
        y = jax.jit(lambda p, x_, a: layer.apply(p, x_, causal=causal, **a))(
            typed, cast(x), arrays)
        assert y.dtype == jnp.dtype(dtype)
        assert y.shape == expected.shape and y.shape[-1] == out_shape[-1]
    tolerance = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=tolerance,
                               atol=tolerance)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_query_with_no_allowed_key_gets_zero_attention_and_finite_gradients(dtype):
    layer = nn.MultiHeadAttention(2)
    mask = jnp.array([[True, True, False], [False, False, False], [True, False, True]])
    with jax.enable_x64(dtype == "float64"):
        _, params = layer.init(KEY, (-1, 3, 4))
        params = _randomized(params)
        x = jnp.asarray(RNG.normal(size=(1, 3, 4)), dtype)
        y = layer.apply(params, x, mask=mask)
        grads = jax.jit(jax.grad(lambda x_: jnp.sum(layer.apply(params, x_, mask=mask) ** 2)))(x)
    np.testing.assert_allclose(y[0, 1], params["out"]["b"], rtol=1e-6)  # only the bias
    assert np.all(np.isfinite(grads))


def test_attention_layer_names_stax_and_defaults():
    layer = nn.MultiHeadAttention(2, causal=True)
    out_shape, params = layer.init(KEY, (-1, 4, 6))
    assert out_shape == (-1, 4, 6) and layer.name == "attention"
    assert sorted(params) == ["key", "out", "query", "value"]
    assert {name: params[name]["w"].shape for name in params} == {
        "query": (6, 6), "key": (6, 6), "value": (6, 6), "out": (6, 6)}
    np.testing.assert_array_equal(params["query"]["b"], np.zeros(6))
    x = jnp.asarray(RNG.normal(size=(2, 4, 6)), jnp.float32)
    # the constructor's causal=True is the default, and apply can switch it off
    np.testing.assert_allclose(layer.apply(params, x),
                               layer.apply(params, x, causal=True), rtol=0, atol=0)
    assert not np.allclose(layer.apply(params, x), layer.apply(params, x, causal=False))
    net = nn.serial(nn.Dense(6), layer, nn.Relu)
    _, net_params = net.init(KEY, (-1, 4, 3))
    assert sorted(net_params) == ["attention_0", "dense_0"]
    stax = pytest.importorskip("jax.example_libraries.stax")
    init, apply = stax.serial(layer, stax.Relu)
    _, stax_params = init(KEY, (-1, 4, 6))
    np.testing.assert_allclose(apply(stax_params, x, rng=KEY),
                               np.maximum(layer.apply(stax_params[0], x), 0), rtol=1e-6)


def test_bfloat16_computation_from_float32_params():
    layer = nn.MultiHeadAttention(2, dtype=jnp.bfloat16)
    _, params = layer.init(KEY, (-1, 4, 8))
    assert params["query"]["w"].dtype == jnp.float32
    x = RNG.normal(size=(2, 4, 8))
    y = layer.apply(params, jnp.asarray(x, jnp.float32))
    assert y.dtype == jnp.bfloat16
    expected = np_attention(_as_numpy(params), x, None, np.ones((2, 2, 4, 4), bool), 2)
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, atol=0.1)
    _, half = nn.MultiHeadAttention(2, param_dtype=jnp.bfloat16).init(KEY, (-1, 4, 8))
    assert half["out"]["w"].dtype == jnp.bfloat16


# ------------------------------------------------------------------ torch oracle


def _torch_attention(torch, params, num_heads, dtype):
    """torch.nn.MultiheadAttention holding ``params`` (see the layer's docstring)."""
    width, context_features = params["query"]["w"].shape[1], params["key"]["w"].shape[0]
    module = torch.nn.MultiheadAttention(width, num_heads, batch_first=True,
                                         kdim=context_features, vdim=context_features,
                                         dtype=dtype)
    tensor = lambda a: torch.tensor(np.asarray(a, np.float64), dtype=dtype)
    with torch.no_grad():
        if module._qkv_same_embed_dim:
            module.in_proj_weight.copy_(tensor(np.concatenate(
                [np.asarray(params[n]["w"]).T for n in ("query", "key", "value")])))
        else:
            for name in ("query", "key", "value"):
                getattr(module, f"{name[0]}_proj_weight").copy_(tensor(params[name]["w"].T))
        module.in_proj_bias.copy_(tensor(np.concatenate(
            [np.asarray(params[n]["b"]) for n in ("query", "key", "value")])))
        module.out_proj.weight.copy_(tensor(params["out"]["w"].T))
        module.out_proj.bias.copy_(tensor(params["out"]["b"]))
    return module


def _torch_attention_grads(module):
    """The module's parameter gradients in this package's layout."""
    grad = lambda p: p.grad.detach().numpy().astype(np.float64)
    width = module.embed_dim
    if module._qkv_same_embed_dim:
        w = grad(module.in_proj_weight)
        weights = {"query": w[:width].T, "key": w[width:2 * width].T, "value": w[2 * width:].T}
    else:
        weights = {n: grad(getattr(module, f"{n[0]}_proj_weight")).T
                   for n in ("query", "key", "value")}
    b = grad(module.in_proj_bias)
    biases = {"query": b[:width], "key": b[width:2 * width], "value": b[2 * width:]}
    grads = {n: {"w": weights[n], "b": biases[n]} for n in ("query", "key", "value")}
    grads["out"] = {"w": grad(module.out_proj.weight).T, "b": grad(module.out_proj.bias)}
    return grads


# name -> (x shape, context shape or None, lengths or None, causal)
TORCH_CASES = {
    "self": ((2, 5, 8), None, None, False),
    "cross": ((2, 4, 8), (2, 6, 8), None, False),
    "cross_other_context_features": ((2, 4, 8), (2, 6, 5), [6, 2], False),
    "causal": ((2, 5, 8), None, None, True),
    "key_padding": ((3, 5, 8), None, [5, 2, 3], False),
    "causal_and_key_padding": ((2, 6, 8), None, [6, 3], True),
}


TORCH_RUNS = [(case, "float64") for case in sorted(TORCH_CASES)] + [
    ("causal_and_key_padding", "float32"), ("cross_other_context_features", "float32")]


@pytest.mark.parametrize("case,dtype", TORCH_RUNS)
def test_attention_matches_torch_outputs_and_gradients(case, dtype):
    torch = pytest.importorskip("torch")
    x_shape, c_shape, lengths, causal = TORCH_CASES[case]
    num_heads = 2
    layer = nn.MultiHeadAttention(num_heads, context_features=None if c_shape is None
                                  else c_shape[-1])
    _, params = layer.init(KEY, (-1,) + x_shape[1:])
    params = _as_numpy(_randomized(params))
    x = RNG.normal(size=x_shape)
    context = None if c_shape is None else RNG.normal(size=c_shape)
    keys = x_shape[1] if context is None else c_shape[1]
    cotangent = RNG.normal(size=x_shape)
    mask = None if lengths is None else nn.padding_mask(jnp.array(lengths), keys)

    torch_dtype = getattr(torch, dtype)
    module = _torch_attention(torch, params, num_heads, torch_dtype)
    xt = torch.tensor(x, dtype=torch_dtype, requires_grad=True)
    ct = xt if context is None else torch.tensor(context, dtype=torch_dtype,
                                                 requires_grad=True)
    options = {"need_weights": False}
    if mask is not None:
        options["key_padding_mask"] = torch.tensor(~np.asarray(mask)[:, 0, 0, :])
    if causal:
        options["attn_mask"] = torch.tensor(~np.tril(np.ones((x_shape[1], keys), bool)))
    yt, _ = module(xt, ct, ct, **options)
    (yt * torch.tensor(cotangent, dtype=torch_dtype)).sum().backward()
    expected_grads = _torch_attention_grads(module)

    with jax.enable_x64(dtype == "float64"):
        cast = lambda a: None if a is None else jnp.asarray(a, dtype)
        typed = jax.tree.map(cast, params)

        def loss(p, x_, c_):
            y = layer.apply(p, x_, context=c_, mask=mask, causal=causal)
            return jnp.sum(y * cast(cotangent)), y

        argnums = (0, 1) if context is None else (0, 1, 2)
        grads, y = jax.jit(jax.grad(loss, argnums=argnums, has_aux=True))(
            typed, cast(x), cast(context))
    tolerance = dict(rtol=1e-10, atol=1e-10) if dtype == "float64" else dict(rtol=1e-4,
                                                                              atol=1e-5)
    np.testing.assert_allclose(np.asarray(y), yt.detach().numpy(), **tolerance)
    np.testing.assert_allclose(np.asarray(grads[1]), xt.grad.numpy(), **tolerance)
    if context is not None:
        np.testing.assert_allclose(np.asarray(grads[2]), ct.grad.numpy(), **tolerance)
    for name in expected_grads:
        for part in ("w", "b"):
            np.testing.assert_allclose(np.asarray(grads[0][name][part]),
                                       expected_grads[name][part], **tolerance,
                                       err_msg=f"{name}/{part}")


# ------------------------------------------------------------------ bad input


def test_attention_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide qkv_features"):
        nn.MultiHeadAttention(3, qkv_features=8)
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide qkv_features"):
        nn.MultiHeadAttention(3).init(KEY, (-1, 4, 8))
    with pytest.raises(TypeError, match="num_heads"):
        nn.MultiHeadAttention(2.0)
    with pytest.raises(ValueError, match="implementation"):
        nn.MultiHeadAttention(2, implementation="flash")
    layer = nn.MultiHeadAttention(2)
    with pytest.raises(ValueError, match=r"MultiHeadAttention: input_shape must be \(B, T, F\)"):
        layer.init(KEY, (2, 3, 4, 8))
    _, params = layer.init(KEY, (-1, 4, 8))
    x = jnp.ones((2, 4, 8))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: x must have shape \(B, T, 8\)"):
        layer.apply(params, jnp.ones((2, 3, 4, 8)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: x must have shape \(B, T, 8\)"):
        layer.apply(params, jnp.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"mask must have a shape that broadcasts to "
                                         r"\(B, num_heads, T, S\) = \(2, 2, 4, 4\), got "
                                         r"shape \(2, 1, 1, 3\)"):
        layer.apply(params, x, mask=jnp.ones((2, 1, 1, 3), bool))
    with pytest.raises(ValueError, match="mask must have a shape"):
        jax.jit(lambda m: layer.apply(params, x, mask=m))(jnp.ones((3, 4, 4), bool))
    with pytest.raises(ValueError, match=r"\(num_heads, T, S\) = \(2, 4, 4\)"):
        layer.apply(params, x[0], mask=jnp.ones((2, 2, 4, 4), bool))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        layer.apply(params, x, mask=jnp.ones((4, 4)))
    with pytest.raises(ValueError, match=r"context must have shape \(B, S, 8\)"):
        layer.apply(params, x, context=jnp.ones((3, 5, 8)))
    with pytest.raises(TypeError, match="MultiHeadAttention: x must be a floating"):
        layer.apply(params, jnp.ones((2, 4, 8), jnp.int32))
    with pytest.raises(TypeError, match="causal"):
        layer.apply(params, x, causal=1)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, num_keys\] = \[1, 4\], "
                                         r"got min 0 and max 5"):
        nn.padding_mask(jnp.array([0, 5]), 4)
    with pytest.raises(TypeError, match="lengths must hold integer"):
        nn.padding_mask(jnp.array([1.0]), 4)
    with pytest.raises(ValueError, match=r"params must be a dict with keys"):
        layer.apply({"query": params["query"]}, x)


# ------------------------------------------------------------------ TransformerBlock


def _random_block(pre_norm, causal, d=8, mlp=12, activation="gelu", shape=(-1, 5, 8)):
    block = nn.TransformerBlock(2, mlp, causal=causal, pre_norm=pre_norm,
                                activation=activation)
    out_shape, params = block.init(KEY, shape)
    assert out_shape == shape
    return block, _randomized(params)


@pytest.mark.parametrize("pre_norm", [True, False], ids=["pre_norm", "post_norm"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_transformer_block_matches_numpy(pre_norm, causal):
    block, params = _random_block(pre_norm, causal)
    x = RNG.normal(size=(2, 5, 8))
    lengths = jnp.array([5, 3])
    mask = nn.padding_mask(lengths, 5)
    full = _full_mask(mask, causal, 2, 2, 5, 5)
    expected = np_transformer_block(_as_numpy(params), x, full, 2, pre_norm, 1e-5)
    with jax.enable_x64(True):
        y = jax.jit(block.apply)(jax.tree.map(jnp.asarray, _as_numpy(params)), jnp.asarray(x),
                                 mask=mask)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-10, atol=1e-10)
    y32 = jax.jit(block.apply)(params, jnp.asarray(x, jnp.float32), mask=mask)  # fused path
    np.testing.assert_allclose(np.asarray(y32), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pre_norm,causal,activation",
                         [(True, True, "gelu"), (False, False, "relu"), (True, False, "relu")])
def test_transformer_block_matches_torch_encoder_layer(pre_norm, causal, activation):
    torch = pytest.importorskip("torch")
    block, params = _random_block(pre_norm, causal, activation=activation)
    p = _as_numpy(params)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, activation=activation,
                                             layer_norm_eps=1e-5, batch_first=True,
                                             norm_first=pre_norm, dtype=torch.float64)
    tensor = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(tensor(np.concatenate(
            [p["attention"][n]["w"].T for n in ("query", "key", "value")])))
        layer.self_attn.in_proj_bias.copy_(tensor(np.concatenate(
            [p["attention"][n]["b"] for n in ("query", "key", "value")])))
        layer.self_attn.out_proj.weight.copy_(tensor(p["attention"]["out"]["w"].T))
        layer.self_attn.out_proj.bias.copy_(tensor(p["attention"]["out"]["b"]))
        for ours, theirs in (("mlp_hidden", layer.linear1), ("mlp_out", layer.linear2)):
            theirs.weight.copy_(tensor(p[ours]["w"].T))
            theirs.bias.copy_(tensor(p[ours]["b"]))
        for ours, theirs in (("attention_norm", layer.norm1), ("mlp_norm", layer.norm2)):
            theirs.weight.copy_(tensor(p[ours]["scale"]))
            theirs.bias.copy_(tensor(p[ours]["bias"]))
    x = RNG.normal(size=(2, 5, 8))
    cotangent = RNG.normal(size=x.shape)
    lengths = jnp.array([4, 5])
    mask = nn.padding_mask(lengths, 5)
    xt = torch.tensor(x, requires_grad=True)
    options = {"src_key_padding_mask": torch.tensor(~np.asarray(mask)[:, 0, 0, :])}
    if causal:
        options["src_mask"] = torch.tensor(~np.tril(np.ones((5, 5), bool)))
    layer.train()  # keeps torch off its inference fast path, which drops padded outputs
    yt = layer(xt, **options)
    (yt * torch.tensor(cotangent)).sum().backward()
    with jax.enable_x64(True):
        def loss(p_, x_):
            y = block.apply(p_, x_, mask=mask)
            return jnp.sum(y * jnp.asarray(cotangent)), y
        (grad_params, grad_x), y = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(
            jax.tree.map(jnp.asarray, p), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(grad_x), xt.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(grad_params["mlp_hidden"]["w"]),
                               layer.linear1.weight.grad.numpy().T, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(grad_params["attention_norm"]["scale"]),
                               layer.norm1.weight.grad.numpy(), rtol=1e-9, atol=1e-10)
    w = layer.self_attn.in_proj_weight.grad.numpy()
    np.testing.assert_allclose(np.asarray(grad_params["attention"]["value"]["w"]),
                               w[16:].T, rtol=1e-9, atol=1e-10)


def test_transformer_block_dropout_train_and_eval():
    block = nn.TransformerBlock(2, 12, dropout_rate=0.5)
    _, params = block.init(KEY, (-1, 5, 8))
    x = jnp.asarray(RNG.normal(size=(2, 5, 8)), jnp.float32)
    evaluated = jax.jit(block.apply)(params, x)
    np.testing.assert_array_equal(evaluated, jax.jit(block.apply)(params, x, key=KEY))
    no_dropout = nn.TransformerBlock(2, 12)
    np.testing.assert_allclose(evaluated, jax.jit(no_dropout.apply)(params, x), rtol=1e-6)
    training = jax.jit(lambda k: block.apply(params, x, key=k, train=True))
    first, again = training(jax.random.key(1)), training(jax.random.key(1))
    other = training(jax.random.key(2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, evaluated) and not np.allclose(first, other)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        block.apply(params, x, train=True)


def test_transformer_block_bad_input_and_names():
    block = nn.TransformerBlock(3, 12)
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide"):
        block.init(KEY, (-1, 5, 8))
    with pytest.raises(ValueError, match="dropout_rate"):
        nn.TransformerBlock(2, 12, dropout_rate=1.0)
    with pytest.raises(ValueError, match="activation"):
        nn.TransformerBlock(2, 12, activation="swish")
    block = nn.TransformerBlock(2, 12)
    _, params = block.init(KEY, (-1, 5, 8))
    assert sorted(params) == ["attention", "attention_norm", "mlp_hidden", "mlp_norm",
                              "mlp_out"]
    assert params["mlp_hidden"]["w"].shape == (8, 12) and params["mlp_out"]["w"].shape == (12, 8)
    with pytest.raises(ValueError, match=r"TransformerBlock: x must have shape \(B, T, 8\)"):
        block.apply(params, jnp.ones((2, 5, 7)))
    with pytest.raises(ValueError, match=r"TransformerBlock: x must have shape \(B, T, 8\)"):
        block.apply(params, jnp.ones((8,)))
    net = nn.serial(nn.Embedding(11, 8), nn.TransformerBlock(2, 12, causal=True),
                    nn.TransformerBlock(2, 12, causal=True), nn.LayerNorm())
    out_shape, net_params = net.init(KEY, (-1, 5))
    assert out_shape == (-1, 5, 8)
    assert sorted(net_params) == ["embedding_0", "layer_norm_0", "transformer_block_0",
                                  "transformer_block_1"]
    ids = jnp.asarray(RNG.integers(0, 11, size=(2, 5)))
    apply = jax.jit(net.apply)
    y = apply(net_params, ids)
    # causal: the outputs at position t do not depend on the ids after t
    changed = apply(net_params, ids.at[:, 3:].set((ids[:, 3:] + 1) % 11))
    np.testing.assert_allclose(changed[:, :3], y[:, :3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed[:, 3:], y[:, 3:])
