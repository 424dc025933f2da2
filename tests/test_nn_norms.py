"""Tests for nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.Embedding and nn.attend.

Oracles: NumPy float64 transcriptions of each formula (below), central finite differences
of those transcriptions for the gradients, and torch's layers when torch is installed.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import nn

RNG = np.random.default_rng(12)
KEY = jax.random.key(0)


# ------------------------------------------------------------------ NumPy oracles (float64)


def np_layer_norm(x, scale, bias, epsilon, num_axes):
    axes = tuple(range(x.ndim - num_axes, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=axes, keepdims=True)  # biased: divide by count
    y = (x - mean) / np.sqrt(variance + epsilon)
    return y * (1.0 if scale is None else scale) + (0.0 if bias is None else bias)


def np_rms_norm(x, scale, epsilon, num_axes):
    axes = tuple(range(x.ndim - num_axes, x.ndim))
    y = x / np.sqrt((x ** 2).mean(axis=axes, keepdims=True) + epsilon)
    return y * (1.0 if scale is None else scale)


def np_group_norm(x, scale, bias, epsilon, num_groups):
    """Loop over examples and groups: each group is a slice of consecutive channels."""
    y = np.empty_like(x)
    size = x.shape[-1] // num_groups
    for n in range(x.shape[0]):
        for g in range(num_groups):
            block = x[n, ..., g * size:(g + 1) * size]
            y[n, ..., g * size:(g + 1) * size] = (block - block.mean()) / np.sqrt(
                block.var() + epsilon)
    return y * (1.0 if scale is None else scale) + (0.0 if bias is None else bias)


def _get(params, name):
    return None if name not in params else np.asarray(params[name], np.float64)


# Each case: layer, input shape, oracle(params as float64, x float64) -> y.
CASES = {
    "layer_norm": (nn.LayerNorm(1e-5), (3, 6), lambda p, x: np_layer_norm(
        x, _get(p, "scale"), _get(p, "bias"), 1e-5, 1)),
    "layer_norm_two_axes": (nn.LayerNorm(1e-3, axes=(-2, -1)), (2, 3, 4), lambda p, x:
                            np_layer_norm(x, _get(p, "scale"), _get(p, "bias"), 1e-3, 2)),
    "layer_norm_no_affine": (nn.LayerNorm(use_scale=False, use_bias=False), (4, 5),
                             lambda p, x: np_layer_norm(x, None, None, 1e-5, 1)),
    "rms_norm": (nn.RMSNorm(1e-6), (3, 6), lambda p, x: np_rms_norm(
        x, _get(p, "scale"), 1e-6, 1)),
    "rms_norm_two_axes": (nn.RMSNorm(1e-2, axes=(-2, -1)), (2, 3, 4), lambda p, x:
                          np_rms_norm(x, _get(p, "scale"), 1e-2, 2)),
    "group_norm": (nn.GroupNorm(2), (2, 3, 3, 6), lambda p, x: np_group_norm(
        x, _get(p, "scale"), _get(p, "bias"), 1e-5, 2)),
    "group_norm_instance_1d": (nn.GroupNorm(4, 1e-3), (2, 5, 4), lambda p, x: np_group_norm(
        x, _get(p, "scale"), _get(p, "bias"), 1e-3, 4)),
}


def _random_params(params):
    """Replace ones/zeros by random values, so scale and bias are actually tested."""
    return {name: jnp.asarray(RNG.normal(size=value.shape), value.dtype)
            for name, value in params.items()}


def _setup(case):
    layer, shape, oracle = CASES[case]
    out_shape, params = layer.init(KEY, (-1,) + shape[1:])
    assert out_shape == (-1,) + shape[1:]
    params = _random_params(params)
    x = RNG.normal(loc=1.5, scale=2.0, size=shape)
    return layer, params, x, oracle


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_norm_layers_match_numpy(case, jit):
    layer, params, x, oracle = _setup(case)
    apply = jax.jit(layer.apply) if jit else layer.apply
    y = apply(params, jnp.asarray(x, jnp.float32))
    assert y.shape == x.shape and y.dtype == jnp.float32
    expected = oracle({k: np.asarray(v) for k, v in params.items()}, x)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_norm_gradients_match_finite_differences_of_numpy(case):
    layer, params, x, oracle = _setup(case)
    cotangent = RNG.normal(size=x.shape)
    with jax.enable_x64(True):
        params64 = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}

        def loss(p, inputs):
            return jnp.sum(jnp.asarray(cotangent) * layer.apply(p, inputs))

        grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params64, jnp.asarray(x))
        grads = jax.tree.map(np.asarray, grads)

    def np_loss(p, inputs):
        return np.sum(cotangent * oracle(p, inputs))

    p0 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    step = 1e-6
    for _ in range(3):  # directional derivatives along random directions
        dp = {k: RNG.normal(size=v.shape) for k, v in p0.items()}
        dx = RNG.normal(size=x.shape)
        plus = np_loss({k: p0[k] + step * dp[k] for k in p0}, x + step * dx)
        minus = np_loss({k: p0[k] - step * dp[k] for k in p0}, x - step * dx)
        numeric = (plus - minus) / (2 * step)
        analytic = np.sum(grads[1] * dx) + sum(np.sum(grads[0][k] * dp[k]) for k in p0)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)


def test_norms_have_readable_names_and_compose_in_serial():
    net = nn.serial(nn.Embedding(7, 6), nn.LayerNorm(), nn.Dense(4), nn.RMSNorm(),
                    nn.LayerNorm())
    out_shape, params = net.init(KEY, (-1, 5))
    assert out_shape == (-1, 5, 4)
    assert sorted(params) == ["dense_0", "embedding_0", "layer_norm_0", "layer_norm_1",
                              "rms_norm_0"]
    assert sorted(params["layer_norm_0"]) == ["bias", "scale"]
    assert params["layer_norm_0"]["scale"].shape == (6,)
    ids = jnp.asarray(RNG.integers(0, 7, size=(2, 5)))
    y = jax.jit(net.apply)(params, ids)
    hidden = np.asarray(params["embedding_0"]["embedding"], np.float64)[np.asarray(ids)]
    hidden = np_layer_norm(hidden, 1.0, 0.0, 1e-5, 1)
    hidden = hidden @ np.asarray(params["dense_0"]["w"]) + np.asarray(params["dense_0"]["b"])
    hidden = np_layer_norm(np_rms_norm(hidden, 1.0, 1e-6, 1), 1.0, 0.0, 1e-5, 1)
    np.testing.assert_allclose(np.asarray(y), hidden, rtol=1e-4, atol=1e-4)


def test_norms_ignore_train_and_nest_in_stax():
    stax = pytest.importorskip("jax.example_libraries.stax")
    init, apply = stax.serial(nn.LayerNorm(), stax.Relu, nn.GroupNorm(2))
    _, params = init(KEY, (-1, 3, 4))
    x = RNG.normal(size=(2, 3, 4))
    y = apply(params, jnp.asarray(x, jnp.float32), rng=KEY)  # stax passes rng=
    expected = np_group_norm(np.maximum(np_layer_norm(x, 1, 0, 1e-5, 1), 0), 1, 0, 1e-5, 2)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)
    layer = nn.RMSNorm()
    _, params = layer.init(KEY, (-1, 4))
    np.testing.assert_array_equal(layer.apply(params, jnp.asarray(x[0], jnp.float32)),
                                  layer.apply(params, jnp.asarray(x[0], jnp.float32),
                                              key=KEY, train=True))


def test_group_norm_is_named_in_serial_with_conv():
    net = nn.serial(nn.Conv2D(4, (3, 3)), nn.GroupNorm(2), nn.Relu)
    out_shape, params = net.init(KEY, (-1, 5, 5, 1))
    assert sorted(params) == ["conv_0", "group_norm_0"]
    x = RNG.normal(size=(2, 5, 5, 1))
    y = net.apply(params, jnp.asarray(x, jnp.float32))
    assert y.shape == (2,) + out_shape[1:]
    hidden = nn.serial(nn.Conv2D(4, (3, 3))).apply({"conv_0": params["conv_0"]},
                                                   jnp.asarray(x, jnp.float32))
    expected = np.maximum(np_group_norm(np.asarray(hidden, np.float64), 1, 0, 1e-5, 2), 0)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)


def test_dtype_and_param_dtype():
    layer = nn.LayerNorm(dtype=jnp.bfloat16, param_dtype=jnp.float32)
    _, params = layer.init(KEY, (-1, 8))
    assert params["scale"].dtype == jnp.float32
    x = RNG.normal(size=(2, 8))
    y = layer.apply(params, jnp.asarray(x, jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float64), np_layer_norm(x, 1, 0, 1e-5, 1),
                               atol=5e-2)
    _, half = nn.RMSNorm(param_dtype=jnp.bfloat16).init(KEY, (-1, 8))
    assert half["scale"].dtype == jnp.bfloat16
    with jax.enable_x64(True):
        _, params64 = nn.GroupNorm(2).init(KEY, (-1, 3, 4))
        assert params64["scale"].dtype == jnp.float64
        x = RNG.normal(size=(2, 3, 4))
        y = nn.GroupNorm(2).apply(params64, jnp.asarray(x))
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y), np_group_norm(x, 1, 0, 1e-5, 2),
                                   rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ Embedding and attend


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_embedding_matches_numpy_and_its_gradient_adds_rows(jit):
    layer = nn.Embedding(5, 3)
    out_shape, params = layer.init(KEY, (-1, 4))
    assert out_shape == (-1, 4, 3) and params["embedding"].shape == (5, 3)
    table = np.asarray(params["embedding"], np.float64)
    ids = np.array([[0, 4, 4, 1], [2, 2, 2, 0]])
    apply = jax.jit(layer.apply) if jit else layer.apply
    np.testing.assert_allclose(np.asarray(apply(params, jnp.asarray(ids))), table[ids],
                               rtol=1e-6)
    cotangent = RNG.normal(size=(2, 4, 3))
    grad = jax.grad(lambda p: jnp.sum(jnp.asarray(cotangent, jnp.float32)
                                      * apply(p, jnp.asarray(ids))))(params)
    expected = np.zeros((5, 3))
    np.add.at(expected, ids, cotangent)  # repeated ids add up
    np.testing.assert_allclose(np.asarray(grad["embedding"]), expected, rtol=1e-5,
                               atol=1e-6)


def test_embedding_init_is_standard_normal_and_keyed():
    _, params = nn.Embedding(400, 50).init(KEY, (-1,))
    table = np.asarray(params["embedding"])
    assert abs(table.mean()) < 0.02 and abs(table.std() - 1) < 0.02
    np.testing.assert_array_equal(table, nn.Embedding(400, 50).init(KEY, (-1,))[1]["embedding"])
    assert not np.allclose(table, nn.Embedding(400, 50).init(jax.random.key(1), (-1,))[1][
        "embedding"])


def test_embedding_out_of_range_ids_under_jit_give_nan_rows():
    layer = nn.Embedding(4, 2)
    _, params = layer.init(KEY, (-1,))
    y = np.asarray(jax.jit(layer.apply)(params, jnp.array([1, -1, 4, 3])))
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    np.testing.assert_allclose(y[[0, 3]], np.asarray(params["embedding"])[[1, 3]])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_attend_is_the_transposed_table_product(jit):
    _, params = nn.Embedding(6, 3).init(KEY, (-1,))
    x = RNG.normal(size=(2, 4, 3))
    attend = jax.jit(nn.attend) if jit else nn.attend
    logits = attend(params, jnp.asarray(x, jnp.float32))
    expected = x @ np.asarray(params["embedding"], np.float64).T
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"attend: x must have shape \(\.\.\., 3\)"):
        nn.attend(params, jnp.ones((2, 4)))


# ------------------------------------------------------------------ torch, when installed


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("case", ["layer_norm", "layer_norm_two_axes", "rms_norm",
                                  "group_norm"])
def test_norms_match_torch_outputs_and_gradients(case):
    torch = _torch()
    layer, params, x, _ = _setup(case)
    cotangent = RNG.normal(size=x.shape)
    scale = torch.tensor(np.asarray(params["scale"], np.float64), requires_grad=True)
    bias = (torch.tensor(np.asarray(params["bias"], np.float64), requires_grad=True)
            if "bias" in params else None)
    xt = torch.tensor(x, requires_grad=True)
    if case.startswith("layer_norm"):
        yt = torch.nn.functional.layer_norm(xt, tuple(scale.shape), scale, bias, eps=1e-5
                                            if case == "layer_norm" else 1e-3)
    elif case == "rms_norm":
        yt = torch.nn.functional.rms_norm(xt, tuple(scale.shape), scale, eps=1e-6)
    else:  # torch is channels first: (N, H, W, C) -> (N, C, H, W) and back
        yt = torch.nn.functional.group_norm(xt.permute(0, 3, 1, 2), 2, scale, bias,
                                            eps=1e-5).permute(0, 2, 3, 1)
    (yt * torch.tensor(cotangent)).sum().backward()
    with jax.enable_x64(True):
        params64 = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
        y, vjp = jax.vjp(layer.apply, params64, jnp.asarray(x))
        grad_params, grad_x = vjp(jnp.asarray(cotangent))
    np.testing.assert_allclose(np.asarray(y), yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(grad_x), xt.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(grad_params["scale"]), scale.grad.numpy(),
                               rtol=1e-9, atol=1e-9)
    if bias is not None:
        np.testing.assert_allclose(np.asarray(grad_params["bias"]), bias.grad.numpy(),
                                   rtol=1e-9, atol=1e-9)


def test_embedding_matches_torch():
    torch = _torch()
    layer = nn.Embedding(5, 3)
    _, params = layer.init(KEY, (-1, 4))
    module = torch.nn.Embedding(5, 3)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(np.asarray(params["embedding"])))
    ids = np.array([[0, 4, 4, 1], [2, 2, 2, 0]])
    yt = module(torch.tensor(ids))
    cotangent = RNG.normal(size=(2, 4, 3)).astype(np.float32)
    (yt * torch.tensor(cotangent)).sum().backward()
    y, vjp = jax.vjp(layer.apply, params, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(y), yt.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(cotangent))[0]["embedding"]),
                               module.weight.grad.numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("make, error, message", [
    (lambda: nn.LayerNorm(0.0), ValueError, "LayerNorm: epsilon"),
    (lambda: nn.LayerNorm("small"), TypeError, "LayerNorm: epsilon"),
    (lambda: nn.LayerNorm(axes=0), ValueError, "LayerNorm: axes"),
    (lambda: nn.LayerNorm(axes=(-3, -1)), ValueError, "LayerNorm: axes"),
    (lambda: nn.LayerNorm(axes=-1.0), TypeError, "LayerNorm: axes"),
    (lambda: nn.LayerNorm(use_bias=1), TypeError, "LayerNorm: use_bias"),
    (lambda: nn.LayerNorm(dtype=jnp.int32), TypeError, "LayerNorm: dtype"),
    (lambda: nn.RMSNorm(-1.0), ValueError, "RMSNorm: epsilon"),
    (lambda: nn.RMSNorm(param_dtype="int8"), TypeError, "RMSNorm: param_dtype"),
    (lambda: nn.GroupNorm(0), ValueError, "GroupNorm: num_groups"),
    (lambda: nn.GroupNorm(2.0), TypeError, "GroupNorm: num_groups"),
    (lambda: nn.Embedding(0, 3), ValueError, "Embedding: num_embeddings"),
    (lambda: nn.Embedding(4, 3.0), TypeError, "Embedding: features"),
    (lambda: nn.Embedding(4, 3, dtype=jnp.int32), TypeError, "Embedding: dtype"),
])
def test_bad_settings_name_the_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("layer, input_shape, message", [
    (nn.LayerNorm(), (-1, -1), "LayerNorm: the last axis of input_shape must be known"),
    (nn.LayerNorm(axes=(-2, -1)), (4,), "LayerNorm: input_shape"),
    (nn.GroupNorm(3), (-1, 5, 4), r"GroupNorm: num_groups \(3\) must divide .* C = 4"),
    (nn.GroupNorm(2), (4,), "GroupNorm: input_shape"),
    (nn.Embedding(4, 2), (-1, 0), "Embedding: input_shape"),
])
def test_bad_input_shape_at_init(layer, input_shape, message):
    with pytest.raises(ValueError, match=message):
        layer.init(KEY, input_shape)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_bad_x_at_apply_names_the_layer_and_the_expected_shape(jit):
    def call(layer, params, x):
        return (jax.jit(layer.apply) if jit else layer.apply)(params, x)

    _, params = nn.LayerNorm().init(KEY, (-1, 4))
    with pytest.raises(ValueError, match=r"LayerNorm: x must have shape \(\.\.\., 4\), got "
                                         r"shape \(2, 5\)"):
        call(nn.LayerNorm(), params, jnp.ones((2, 5)))
    with pytest.raises(TypeError, match="LayerNorm: x must be a floating-point array"):
        call(nn.LayerNorm(), params, jnp.ones((2, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"LayerNorm: params must be a dict with keys "
                                         r"\['bias', 'scale'\].*layer_norm_i"):
        call(nn.LayerNorm(), {"scale": params["scale"]}, jnp.ones((2, 4)))
    _, group = nn.GroupNorm(2).init(KEY, (-1, 3, 4))
    with pytest.raises(ValueError, match=r"GroupNorm: x must have shape \(N, \.\.\., 4\)"):
        call(nn.GroupNorm(2), group, jnp.ones((4,)))
    bare = nn.GroupNorm(3, use_scale=False, use_bias=False)
    with pytest.raises(ValueError, match=r"GroupNorm: num_groups \(3\) must divide"):
        call(bare, {}, jnp.ones((2, 4)))
    _, table = nn.Embedding(4, 2).init(KEY, (-1,))
    with pytest.raises(TypeError, match=r"Embedding: ids \(x\) must hold integer ids"):
        call(nn.Embedding(4, 2), table, jnp.ones((3,)))


def test_embedding_ids_out_of_range_raise_eagerly():
    layer = nn.Embedding(4, 2)
    _, params = layer.init(KEY, (-1,))
    for ids in ([0, 4], [-1, 2]):
        with pytest.raises(ValueError, match=r"Embedding: ids \(x\) must be in \[0, 4\)"):
            layer.apply(params, jnp.array(ids))
    with pytest.raises(ValueError, match="Embedding: params must be a dict with key "
                                         "'embedding'"):
        layer.apply({}, jnp.array([0]))
