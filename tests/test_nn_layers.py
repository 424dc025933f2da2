"""Tests for functional_dl.nn layers, initializers and combinators (oracles in NumPy).

The common contract and the forward-pass oracle run over every entry of ``tests/_layers.py``.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import nn
from functional_dl.nn import initializers

from _layers import ACTIVATION_ORACLES, LAYERS, np_mlp

RNG = np.random.default_rng(2)
KEY = jax.random.key(0)


# ------------------------------------------------------------------ initializers


INIT_VARIANCE = {  # name -> (factory, variance(fan_in, fan_out), uniform?)
    "glorot_uniform": (initializers.glorot_uniform, lambda i, o: 2 / (i + o), True),
    "glorot_normal": (initializers.glorot_normal, lambda i, o: 2 / (i + o), False),
    "he_uniform": (initializers.he_uniform, lambda i, o: 2 / i, True),
    "he_normal": (initializers.he_normal, lambda i, o: 2 / i, False),
    "lecun_normal": (initializers.lecun_normal, lambda i, o: 1 / i, False),
}


@pytest.mark.parametrize("name", sorted(INIT_VARIANCE))
def test_fan_based_initializers_have_the_stated_variance(name):
    factory, variance, uniform = INIT_VARIANCE[name]
    shape = (3, 3, 20, 40)  # conv kernel: fan_in = 180, fan_out = 360
    sample = np.asarray(factory()(KEY, shape))
    assert sample.shape == shape and sample.dtype == np.float32
    expected = variance(180, 360)
    # 14400 draws: the sample variance is within ~1.2% (one standard error) of the truth.
    np.testing.assert_allclose(sample.var(), expected, rtol=0.05)
    assert abs(sample.mean()) < 4 * math.sqrt(expected / sample.size)
    if uniform:
        assert np.abs(sample).max() <= math.sqrt(3 * expected) + 1e-7
    np.testing.assert_array_equal(sample, factory()(KEY, shape))  # same key, same draw
    with pytest.raises(ValueError, match="at least 2 axes"):
        factory()(KEY, (5,))


def test_normal_and_zeros_initializers_and_dtypes():
    sample = np.asarray(initializers.normal(0.5)(KEY, (200, 100)))
    np.testing.assert_allclose(sample.std(), 0.5, rtol=0.03)
    np.testing.assert_array_equal(initializers.zeros()(KEY, (3,)), np.zeros(3))
    with jax.enable_x64(True):
        assert initializers.he_normal()(KEY, (4, 4)).dtype == jnp.float64
    assert initializers.he_normal()(KEY, (4, 4), jnp.bfloat16).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="stddev"):
        initializers.normal(-1.0)


# ------------------------------------------------------------------- activations


ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": nn.tanh, "gelu": nn.gelu,
               "softmax": nn.softmax, "log_softmax": nn.log_softmax}
ACTIVATIONS.update({  # the parameters of tests/_layers.py's entries
    "elu": lambda x: nn.elu(x, 0.7), "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
    "selu": nn.selu, "silu": nn.silu, "softplus": nn.softplus,
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "hard_tanh": lambda x: nn.hard_tanh(x, -0.5, 1.5), "log_sigmoid": nn.log_sigmoid,
    "celu": lambda x: nn.celu(x, alpha=0.5), "glu": nn.glu, "relu6": lambda x: nn.relu6(3 * x),
})


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_numpy_as_functions_and_layers(name):
    fn, layer, oracle = ACTIVATIONS[name], LAYERS[name].build(), ACTIVATION_ORACLES[name]
    x = RNG.normal(size=(4, 6)) * 3  # an even last axis, for glu
    expected = oracle(x)
    np.testing.assert_allclose(fn(jnp.asarray(x, jnp.float32)), expected, rtol=1e-5, atol=1e-6)
    out_shape, params = layer.init(KEY, (-1, 6))
    assert out_shape == (-1, expected.shape[-1]) and params == {}
    np.testing.assert_allclose(jax.jit(layer.apply)(params, jnp.asarray(x, jnp.float32)),
                               expected, rtol=1e-5, atol=1e-6)


def test_softmax_is_stable_at_large_inputs():
    x = jnp.array([1e4, 0.0, -1e4])
    np.testing.assert_allclose(nn.softmax(x), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(nn.log_softmax(x), [0.0, -1e4, -2e4])


# name -> (ours, torch.nn.functional's, called by name so the module imports without torch)
TORCH_ACTIVATIONS = {
    "relu": (nn.relu, lambda F, x: F.relu(x)),
    "sigmoid": (nn.sigmoid, lambda F, x: F.sigmoid(x)),
    "tanh": (nn.tanh, lambda F, x: F.tanh(x)),
    "gelu": (nn.gelu, lambda F, x: F.gelu(x)),
    "gelu_tanh": (lambda x: nn.gelu(x, approximate=True),
                  lambda F, x: F.gelu(x, approximate="tanh")),
    "elu": (nn.elu, lambda F, x: F.elu(x)),
    "elu_0.3": (lambda x: nn.elu(x, 0.3), lambda F, x: F.elu(x, alpha=0.3)),
    "leaky_relu": (nn.leaky_relu, lambda F, x: F.leaky_relu(x)),
    "leaky_relu_0.2": (lambda x: nn.leaky_relu(x, 0.2), lambda F, x: F.leaky_relu(x, 0.2)),
    "selu": (nn.selu, lambda F, x: F.selu(x)),
    "silu": (nn.silu, lambda F, x: F.silu(x)),
    "softplus": (nn.softplus, lambda F, x: F.softplus(x)),
    "hard_tanh": (nn.hard_tanh, lambda F, x: F.hardtanh(x)),
    "hard_tanh_-2_3": (lambda x: nn.hard_tanh(x, -2.0, 3.0),
                       lambda F, x: F.hardtanh(x, -2.0, 3.0)),
    "log_sigmoid": (nn.log_sigmoid, lambda F, x: F.logsigmoid(x)),
    "celu": (nn.celu, lambda F, x: F.celu(x)),
    "celu_0.5": (lambda x: nn.celu(x, 0.5), lambda F, x: F.celu(x, alpha=0.5)),
    "relu6": (nn.relu6, lambda F, x: F.relu6(x)),
    "glu": (nn.glu, lambda F, x: F.glu(x, dim=-1)),
    "softmax": (nn.softmax, lambda F, x: F.softmax(x, dim=-1)),
    "log_softmax": (nn.log_softmax, lambda F, x: F.log_softmax(x, dim=-1)),
}
# the kinks (0, the bounds ±1, -2, 3 and 6), both sides of them, and the tails
KINKS = np.array([-30.0, -6.0, -3.0, -2.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 2.0, 3.0,
                  6.0, 7.5, 15.0])


@pytest.mark.parametrize("name", sorted(TORCH_ACTIVATIONS))
def test_activations_and_their_gradients_match_torch_in_float64(name):
    torch = pytest.importorskip("torch")
    ours, theirs = TORCH_ACTIVATIONS[name]
    x = np.stack([KINKS, KINKS[::-1]], axis=-1).reshape(4, 8)  # pairs for glu and softmax
    cotangent = RNG.normal(size=x.shape[:-1] + ((4,) if name == "glu" else (8,)))
    torch_x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    torch_y = theirs(torch.nn.functional, torch_x)
    (torch_y * torch.tensor(cotangent)).sum().backward()
    with jax.enable_x64(True):
        y, vjp = jax.vjp(ours, jnp.asarray(x))
        (gradient,) = vjp(jnp.asarray(cotangent))
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, torch_y.detach().numpy(), rtol=1e-12, atol=1e-14)
        # the derivative at each kink is torch's one-sided choice
        np.testing.assert_allclose(gradient, torch_x.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(TORCH_ACTIVATIONS))
def test_activations_keep_nan_where_torch_does(name):
    torch = pytest.importorskip("torch")
    ours, theirs = TORCH_ACTIVATIONS[name]
    x = np.array([[np.nan, 1.0, -1.0, 0.0], [2.0, -2.0, np.nan, 0.5]])
    expected = theirs(torch.nn.functional, torch.tensor(x)).numpy()
    got = np.asarray(ours(jnp.asarray(x, jnp.float32)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).any()  # NaN in never becomes a number out


def test_activation_layers_take_their_parameters_when_called():
    x = jnp.asarray(RNG.normal(size=(3, 4)) * 3, jnp.float32)
    np.testing.assert_array_equal(nn.LeakyRelu(0.3).apply({}, x), nn.leaky_relu(x, 0.3))
    np.testing.assert_array_equal(nn.LeakyRelu.apply({}, x), nn.leaky_relu(x))
    np.testing.assert_array_equal(nn.HardTanh(max_value=2.0).apply({}, x),
                                  nn.hard_tanh(x, -1.0, 2.0))
    np.testing.assert_array_equal(nn.Gelu(approximate=True).apply({}, x),
                                  nn.gelu(x, approximate=True))
    np.testing.assert_array_equal(nn.Relu().apply({}, x), nn.Relu.apply({}, x))
    assert nn.Swish is nn.Silu and nn.swish is nn.silu
    # the default gelu is the exact one, as the Gelu layer's is
    np.testing.assert_array_equal(nn.Gelu.apply({}, x), nn.gelu(x, approximate=False))
    assert nn.Glu.init(KEY, (-1, 6))[0] == (-1, 3)
    assert nn.Glu(axis=0).init(KEY, (4, 5))[0] == (2, 5)
    with pytest.raises(ValueError, match=r"Glu: input_shape must have a known even size"):
        nn.Glu.init(KEY, (-1, 5))
    with pytest.raises(ValueError, match=r"glu: x must have an even size on axis -1"):
        nn.glu(jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="relu: got an unexpected keyword argument 'alpha'"):
        nn.Relu(alpha=1.0)
    with pytest.raises(TypeError, match="leaky_relu: too many positional arguments"):
        nn.LeakyRelu(0.1, 0.2)
    # every name resolves to its layer, usable in serial
    for name, layer in nn.ACTIVATIONS.items():
        assert isinstance(layer, nn.Layer) and layer.name == name.replace("swish", "silu")
    _, params = nn.serial(nn.Dense(4), nn.ACTIVATIONS["silu"]).init(KEY, (-1, 3))
    assert set(params) == {"dense_0"}


@pytest.mark.parametrize("build, message", [
    (lambda: nn.elu(jnp.ones(2), alpha=-1.0), "elu: alpha must be >= 0"),
    (lambda: nn.Elu(float("nan")), "elu: alpha must be >= 0"),
    (lambda: nn.Celu(0.0), "celu: alpha must be > 0"),
    (lambda: nn.celu(jnp.ones(2), -2.0), "celu: alpha must be > 0"),
    (lambda: nn.LeakyRelu(-0.1), "leaky_relu: negative_slope must be >= 0"),
    (lambda: nn.HardTanh(1.0, -1.0), "hard_tanh: min_value must be below max_value"),
    (lambda: nn.HardTanh(max_value=float("inf")), "hard_tanh: max_value must be"),
])
def test_activation_parameters_out_of_range_raise_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_activation_parameters_of_the_wrong_kind_raise_type_error():
    with pytest.raises(TypeError, match="gelu: approximate must be True or False"):
        nn.Gelu(approximate="tanh")
    with pytest.raises(TypeError, match="elu: alpha must be a real number"):
        nn.Elu("1")
    with pytest.raises(TypeError, match="Glu: axis must be an int"):
        nn.Glu(axis=1.5)


def test_layers_module_keeps_every_public_name():
    from functional_dl.nn import activations, layers
    for name in ["Dense", "Dropout", "Relu", "Sigmoid", "Tanh", "Gelu", "Softmax",
                 "LogSoftmax", "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax",
                 "elementwise", "layer_name", "named", "Layer"]:
        assert getattr(layers, name) is getattr(nn, name)
    for name in activations.__all__:
        assert getattr(nn, name) is getattr(activations, name)


# ------------------------------------------------------------------------- Dense


def test_dense_matches_numpy_and_shapes():
    init, apply = nn.Dense(3)  # unpacks like a stax pair
    out_shape, params = init(KEY, (-1, 4))
    assert out_shape == (-1, 3)
    assert params["w"].shape == (4, 3) and params["b"].shape == (3,)
    params = {"w": jnp.asarray(RNG.normal(size=(4, 3))), "b": jnp.asarray(RNG.normal(size=3))}
    x = RNG.normal(size=(5, 4))
    expected = x @ np.asarray(params["w"]) + np.asarray(params["b"])
    np.testing.assert_allclose(apply(params, jnp.asarray(x)), expected, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(apply)(params, jnp.asarray(x)), expected, rtol=1e-5)
    np.testing.assert_allclose(apply(params, jnp.asarray(x[0])), expected[0], rtol=1e-5)  # one example
    # d/dW Σ(xW + b) = xᵀ 1, d/db = N · 1.
    grads = jax.jit(jax.grad(lambda p: apply(p, jnp.asarray(x)).sum()))(params)
    np.testing.assert_allclose(grads["w"], np.repeat(x.sum(0)[:, None], 3, axis=1), rtol=1e-5)
    np.testing.assert_allclose(grads["b"], np.full(3, 5.0))


def test_dense_bad_input():
    with pytest.raises(ValueError, match="features"):
        nn.Dense(0)
    init, apply = nn.Dense(3)
    _, params = init(KEY, (2, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\).*\(2, 5\)"):
        apply(params, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="last axis"):
        init(KEY, (2, -1))
    with pytest.raises(TypeError, match="input_shape"):
        init(KEY, 4)
    mlp_init, mlp_apply = nn.mlp([3, 2])
    _, mlp_params = mlp_init(KEY, (-1, 4))
    del mlp_params["dense_1"]
    with pytest.raises(ValueError, match="'dense_i' entry missing"):
        mlp_apply(mlp_params, jnp.ones((2, 4)))


# ------------------------------------------------------------ dtype and param_dtype


MIXED_PRECISION = {  # name -> (build(**dtypes), input shape, input is ids)
    "dense": (lambda **d: nn.Dense(3, **d), (2, 5), False),
    "embedding": (lambda **d: nn.Embedding(7, 3, **d), (2, 5), True),
    "lstm": (lambda **d: nn.RNN(nn.LSTMCell(4, **d)), (2, 3, 5), False),
    "gru": (lambda **d: nn.RNN(nn.GRUCell(4, **d)), (2, 3, 5), False),
    "simple_rnn": (lambda **d: nn.RNN(nn.SimpleRNNCell(4, **d)), (2, 3, 5), False),
    "layer_norm": (lambda **d: nn.LayerNorm(**d), (2, 5), False),
    "rms_norm": (lambda **d: nn.RMSNorm(**d), (2, 5), False),
    "group_norm": (lambda **d: nn.GroupNorm(1, **d), (2, 3, 4), False),
}


@pytest.mark.parametrize("name", sorted(MIXED_PRECISION))
def test_bfloat16_compute_with_float32_params(name):
    build, shape, ids = MIXED_PRECISION[name]
    x = (jnp.asarray(RNG.integers(0, 7, size=shape)) if ids
         else jnp.asarray(RNG.normal(size=shape), jnp.float32))
    mixed = build(dtype=jnp.bfloat16, param_dtype=jnp.float32)
    _, params = mixed.init(KEY, shape)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    y = jax.jit(mixed.apply)(params, x)
    assert y.dtype == jnp.bfloat16
    # the float32 computation with the same params, cast: equal within bfloat16's precision
    # (8 bits of mantissa: a relative step of 2^-8 per rounding, a few roundings deep)
    reference = build().apply(params, x)
    assert reference.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=3e-2, atol=3e-2)
    assert not np.array_equal(np.asarray(y, np.float32), reference)  # it did compute in bf16
    # parameters stored in bfloat16, the computation promoted as jnp does (with float32 x)
    _, half_params = build(param_dtype=jnp.bfloat16).init(KEY, shape)
    assert {leaf.dtype for leaf in jax.tree.leaves(half_params)} == {jnp.dtype(jnp.bfloat16)}
    expected_dtype = jnp.bfloat16 if ids else jnp.float32
    assert build(param_dtype=jnp.bfloat16).apply(half_params, x).dtype == expected_dtype


def test_dense_dtype_options():
    with jax.enable_x64(True):
        _, params = nn.Dense(2, param_dtype=jnp.float32).init(KEY, (-1, 3))
        assert params["w"].dtype == jnp.float32 and params["b"].dtype == jnp.float32
        y = nn.Dense(2, dtype=jnp.float64).apply(params, jnp.ones((1, 3), jnp.float32))
        assert y.dtype == jnp.float64
    # an initializer written as init(key, shape) still works when no param_dtype is asked
    init, _ = nn.Dense(2, w_init=lambda key, shape: jnp.ones(shape),
                       b_init=lambda key, shape: jnp.zeros(shape))
    np.testing.assert_array_equal(init(KEY, (-1, 3))[1]["w"], np.ones((3, 2)))
    with pytest.raises(TypeError, match="Dense: dtype must be a floating-point dtype"):
        nn.Dense(2, dtype=jnp.int32)
    with pytest.raises(TypeError, match="Dense: param_dtype must be a floating-point dtype"):
        nn.Dense(2, param_dtype="int8")


# ----------------------------------------------------------------------- Dropout


def test_dropout_rate_is_the_drop_probability():
    rate = 0.3
    _, params = nn.Dropout(rate).init(KEY, (-1, 20000))
    x = jnp.asarray(RNG.random(20000) + 0.5)
    apply = lambda x_, k: nn.Dropout(rate).apply(params, x_, key=k, train=True)
    y, grad = jax.jit(lambda x_, k: (apply(x_, k), jax.grad(lambda a: apply(a, k).sum())(x_)))(
        x, jax.random.key(3))
    y, grad = np.asarray(y), np.asarray(grad)
    dropped = y == 0
    # 20000 Bernoulli(0.3) draws: standard error 0.0032.
    assert abs(dropped.mean() - rate) < 0.015
    np.testing.assert_allclose(y[~dropped], np.asarray(x)[~dropped] / (1 - rate), rtol=1e-6)
    # Inverted dropout keeps the mean.
    np.testing.assert_allclose(y.mean(), float(x.mean()), rtol=0.02)
    # The gradient flows through the kept units only, scaled by 1 / (1 - rate).
    np.testing.assert_allclose(grad, np.where(dropped, 0.0, 1 / (1 - rate)), rtol=1e-6)


def test_dropout_identity_at_eval_and_deterministic_per_key():
    layer = nn.Dropout(0.5)
    x = jnp.asarray(RNG.normal(size=(4, 6)))
    np.testing.assert_array_equal(layer.apply({}, x), x)
    np.testing.assert_array_equal(layer.apply({}, x, key=KEY, train=False), x)
    np.testing.assert_array_equal(nn.Dropout(0.0).apply({}, x, train=True), x)
    first = layer.apply({}, x, key=KEY, train=True)
    np.testing.assert_array_equal(first, jax.jit(
        lambda x_, k: layer.apply({}, x_, key=k, train=True))(x, KEY))
    assert not np.array_equal(first, layer.apply({}, x, key=jax.random.key(1), train=True))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_rejects_rates_outside_unit_interval(rate):
    with pytest.raises(ValueError, match=r"rate.*\[0, 1\)"):
        nn.Dropout(rate)


def test_dropout_needs_a_key_when_training():
    with pytest.raises(ValueError, match="key is needed"):
        nn.Dropout(0.5).apply({}, jnp.ones(3), train=True)
    init, apply = nn.mlp([4, 2], dropout=0.5)
    _, params = init(KEY, (-1, 3))
    with pytest.raises(ValueError, match="key is needed"):
        apply(params, jnp.ones((2, 3)), train=True)


# ---------------------------------------------------- serial, mlp and the contract


def test_mlp_params_names_and_forward_match_numpy():
    init, apply = nn.mlp([5, 4, 3], activation="tanh")
    out_shape, params = init(KEY, (-1, 6))
    assert out_shape == (-1, 3)
    assert set(params) == {"dense_0", "dense_1", "dense_2"}
    assert [params[f"dense_{i}"]["w"].shape for i in range(3)] == [(6, 5), (5, 4), (4, 3)]
    x = RNG.normal(size=(7, 6))
    np.testing.assert_allclose(jax.jit(apply)(params, jnp.asarray(x, jnp.float32)),
                               np_mlp(params, x, np.tanh), rtol=1e-5, atol=1e-5)


def test_serial_splits_the_key_per_layer():
    init, _ = nn.serial(nn.Dense(4), nn.Relu, nn.Dense(4))
    _, params = init(KEY, (-1, 4))
    assert set(params) == {"dense_0", "dense_1"}  # parameter-free layers get no entry
    keys = jax.random.split(KEY, 3)
    for name, layer_key in (("dense_0", keys[0]), ("dense_1", keys[2])):
        _, expected = nn.Dense(4).init(layer_key, (-1, 4))
        np.testing.assert_array_equal(params[name]["w"], expected["w"])
    assert not np.array_equal(params["dense_0"]["w"], params["dense_1"]["w"])


def test_two_dropout_layers_get_different_masks():
    init, apply = nn.serial(nn.Dropout(0.5), nn.Dropout(0.5))
    _, params = init(KEY, (-1, 64))
    first_only = nn.serial(nn.Dropout(0.5), nn.Relu).apply
    out = apply(params, jnp.ones(64), key=KEY, train=True)
    keys = jax.random.split(KEY, 2)
    mask_a = np.asarray(nn.Dropout(0.5).apply({}, jnp.ones(64), key=keys[0], train=True)) > 0
    mask_b = np.asarray(nn.Dropout(0.5).apply({}, jnp.ones(64), key=keys[1], train=True)) > 0
    np.testing.assert_allclose(out, np.where(mask_a & mask_b, 4.0, 0.0))
    assert not np.array_equal(mask_a, mask_b)
    np.testing.assert_allclose(first_only({}, jnp.ones(64), key=KEY, train=True),
                               np.where(mask_a, 2.0, 0.0))


def test_named_layers_and_nested_serial():
    block = nn.named("block", nn.serial(nn.Dense(3), nn.Relu))
    init, apply = nn.serial(block, block, nn.Dense(2))
    out_shape, params = init(KEY, (-1, 4))
    assert out_shape == (-1, 2)
    assert set(params) == {"block_0", "block_1", "dense_0"}
    assert set(params["block_0"]) == {"dense_0"}
    assert apply(params, jnp.ones((5, 4))).shape == (5, 2)
    with pytest.raises(ValueError, match="match no layer"):
        apply({**params, "extra": {}}, jnp.ones((5, 4)))


def test_numpy_numbers_are_accepted_as_hyperparameters():
    # Sizes and rates often come from NumPy arrays or configs; they mean the same numbers.
    init, apply = nn.mlp(np.array([4, 2]), dropout=np.float32(0.25))
    out_shape, params = init(KEY, (-1, 3))
    assert out_shape == (-1, 2)
    assert [params[f"dense_{i}"]["w"].shape for i in range(2)] == [(3, 4), (4, 2)]
    assert nn.Dense(np.int64(3)).init(KEY, (-1, 2))[0] == (-1, 3)
    y = np.asarray(nn.Dropout(np.float32(0.25)).apply({}, jnp.ones(256), key=KEY, train=True))
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    with pytest.raises(ValueError, match="rate"):
        nn.Dropout(np.bool_(True))
    with pytest.raises(ValueError, match="features"):
        nn.Dense(np.float64(3.0))


def test_mlp_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        nn.mlp([3, 2], activation="no_such_activation")
    with pytest.raises(ValueError, match="layer_sizes"):
        nn.mlp([3, 0])
    with pytest.raises(ValueError, match="layer_sizes"):
        nn.mlp([])
    with pytest.raises(ValueError, match="rate"):
        nn.mlp([3, 2], dropout=1.0)
    with pytest.raises(TypeError, match="layer 1"):
        nn.serial(nn.Relu, "dense")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_contract_shapes_jit_vmap_grad(name):
    entry = LAYERS[name]
    layer, shape = entry.build(), entry.input_shape
    with jax.enable_x64(True):  # float64, so the derivative check below can be tight
        unknown_shape, _ = layer.init(KEY, (-1,) + shape[1:])
        out_shape, params = layer.init(KEY, shape)
        assert unknown_shape == (-1,) + out_shape[1:]
        x, direction = (jnp.asarray(RNG.normal(size=shape)) for _ in range(2))
        dropout_key = jax.random.key(5)
        eager = [layer.apply(params, x), layer.apply(params, x, key=dropout_key, train=True)]
        fn = lambda x_: jnp.sum(jnp.sin(layer.apply(params, x_)))
        eps = 1e-5

        @jax.jit  # one compilation per layer for everything below
        def under_jit_vmap_and_grad(x_, direction_):
            jitted = [layer.apply(params, x_), layer.apply(params, x_, key=dropout_key, train=True)]
            # vmap over single examples, as a per-example caller does: without the batch
            # axis where the layer takes that, else as a batch of one.
            if entry.per_example:
                per_example = jax.vmap(lambda xi: layer.apply(params, xi))(x_)
            else:
                per_example = jax.vmap(lambda xi: layer.apply(params, xi[None])[0])(x_)
            # Directional derivative: jax.grad against a central difference.
            analytic = jnp.vdot(jax.grad(fn)(x_), direction_)
            numeric = (fn(x_ + eps * direction_) - fn(x_ - eps * direction_)) / (2 * eps)
            return jitted, per_example, analytic, numeric

        jitted, per_example, analytic, numeric = under_jit_vmap_and_grad(x, direction)
        for train in (False, True):
            assert eager[train].shape == out_shape
            np.testing.assert_allclose(jitted[train], eager[train], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(per_example, eager[False], rtol=1e-12, atol=1e-12)
        assert abs(float(analytic)) > 1e-3  # the comparison is not 0 = 0
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", sorted(n for n, entry in LAYERS.items() if entry.oracle))
def test_layer_forward_matches_numpy_oracle(name):
    """Eval-mode forward pass, jitted, in float64 against the NumPy transcription."""
    entry = LAYERS[name]
    with jax.enable_x64(True):
        _, params = entry.build().init(KEY, entry.input_shape)
        x = RNG.normal(size=entry.input_shape)
        expected = entry.oracle(jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64),
                                                       params), x)
        got = jax.jit(entry.build().apply)(params, jnp.asarray(x))
        assert got.shape == expected.shape and got.dtype == jnp.float64
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_relu_keeps_nan_so_corrupt_inputs_stay_visible():
    x = jnp.array([jnp.nan, -1.0, 0.0, 2.0])
    np.testing.assert_array_equal(nn.relu(x), np.array([np.nan, 0.0, 0.0, 2.0]))
    np.testing.assert_array_equal(jax.grad(lambda v: nn.relu(v).sum())(x[1:]), [0.0, 0.0, 1.0])
