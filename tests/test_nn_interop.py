"""Interop with ``jax.example_libraries.stax``: stax layers and combinators inside
``nn.serial``, and ``nn`` layers inside ``stax.serial``, ``stax.parallel`` and after
``stax.FanOut``.

The oracle of each mixed network is the same network written all in stax (or all in
``nn``), its parameters mapped from the mixed one's: outputs and gradients must agree.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from functional_dl import nn

RNG = np.random.default_rng(11)
KEY = jax.random.key(0)


@pytest.fixture(autouse=True)
def stax_broadcasts():
    """stax adds biases by NumPy rank promotion, which tests/conftest.py makes an error."""
    with jax.numpy_rank_promotion("allow"):
        yield


def dense_to_stax(params):
    """``nn.Dense`` params as ``stax.Dense``'s ``(W, b)``."""
    return (params["w"], params["b"])


def conv_to_stax(params):
    """``nn.Conv2D`` params (HWIO kernel, ``(C_out,)`` bias) as ``stax.Conv``'s ``(W, b)``,
    whose bias has the NHWC output's rank."""
    return (params["w"], params["b"].reshape(1, 1, 1, -1))


def assert_same_function(apply_a, params_a, apply_b, params_b, x):
    """Equal outputs, and equal gradients of a scalar of the output w.r.t. the input
    (each side jitted once: outputs and gradient in one compilation)."""
    def output_and_gradient(apply):
        loss = lambda params, x_: jnp.sum(jnp.sin(apply(params, x_)))
        return jax.jit(lambda params, x_: (apply(params, x_), jax.grad(loss, 1)(params, x_)))
    y_a, gradient_a = output_and_gradient(apply_a)(params_a, x)
    y_b, gradient_b = output_and_gradient(apply_b)(params_b, x)
    np.testing.assert_allclose(y_a, y_b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gradient_a, gradient_b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ stax inside nn.serial


def test_stax_layers_and_serial_inside_nn_serial_match_all_stax():
    # stax.Gelu is jax.nn.gelu's default, the tanh approximation; nn.Gelu is the exact one
    mixed = nn.serial(stax.Dense(6), stax.Relu, stax.serial(stax.Dense(5), stax.Tanh),
                      nn.Dense(3), nn.Gelu(approximate=True))
    out_shape, params = mixed.init(KEY, (-1, 4))
    assert out_shape == (-1, 3)
    # foreign layers keep their own params, under "layer_i"; stax's () for no params
    assert set(params) == {"layer_0", "layer_1", "layer_2", "dense_0"}
    all_stax = stax.serial(stax.Dense(6), stax.Relu, stax.serial(stax.Dense(5), stax.Tanh),
                           stax.Dense(3), stax.Gelu)
    stax_params = [params["layer_0"], params["layer_1"], params["layer_2"],
                   dense_to_stax(params["dense_0"]), ()]
    x = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)
    assert_same_function(mixed.apply, params, all_stax[1], stax_params, x)


def test_stax_combinators_inside_nn_serial_match_all_stax():
    # a residual block: FanOut -> parallel(branch, identity) -> FanInSum, then a Dense
    mixed = nn.serial(nn.Dense(4), stax.FanOut(2),
                      stax.parallel(nn.serial(nn.Dense(4), nn.Relu), stax.Identity),
                      stax.FanInSum, stax.FanOut(2), stax.parallel(nn.Dense(2), stax.Dense(3)),
                      stax.FanInConcat(), nn.Dense(2))
    out_shape, params = mixed.init(KEY, (-1, 3))
    assert out_shape == (-1, 2)
    all_stax = stax.serial(stax.Dense(4), stax.FanOut(2),
                           stax.parallel(stax.serial(stax.Dense(4), stax.Relu), stax.Identity),
                           stax.FanInSum, stax.FanOut(2),
                           stax.parallel(stax.Dense(2), stax.Dense(3)), stax.FanInConcat(),
                           stax.Dense(2))
    branch, _ = params["layer_1"]
    wide_nn, wide_stax = params["layer_4"]
    stax_params = [dense_to_stax(params["dense_0"]), (),
                   ([dense_to_stax(branch["dense_0"]), ()], ()), (), (),
                   (dense_to_stax(wide_nn), wide_stax), (), dense_to_stax(params["dense_1"])]
    x = jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)
    assert_same_function(mixed.apply, params, all_stax[1], stax_params, x)


def test_stax_dropout_inside_nn_serial_gets_its_key():
    # stax.Dropout(rate) takes the KEEP probability: stax.Dropout(0.6) is nn.Dropout(0.4)
    mixed = nn.serial(nn.Dense(64), stax.Dropout(0.6), nn.Relu)
    all_nn = nn.serial(nn.Dense(64), nn.Dropout(0.4), nn.Relu)
    _, params = mixed.init(KEY, (-1, 8))
    _, nn_params = all_nn.init(KEY, (-1, 8))
    np.testing.assert_array_equal(params["dense_0"]["w"], nn_params["dense_0"]["w"])
    x = jnp.asarray(RNG.normal(size=(4, 8)), jnp.float32)
    key = jax.random.key(3)
    y = jax.jit(lambda p, x_, k: mixed.apply(p, x_, key=k, train=True))(params, x, key)
    # serial gives layer i the key jax.random.split(key, 3)[i], whichever kind it is
    np.testing.assert_array_equal(y, all_nn.apply(nn_params, x, key=key, train=True))
    assert 0.2 < float(jnp.mean(y == 0)) < 0.8  # dropped (and ReLU'd) units, not all
    all_stax = stax.serial(stax.Dense(64), stax.Dropout(0.6), stax.Relu)
    stax_params = [dense_to_stax(params["dense_0"]), (), ()]
    np.testing.assert_allclose(y, all_stax[1](stax_params, x, rng=key), rtol=1e-6)
    # a different key, a different mask
    assert not np.array_equal(y, mixed.apply(params, x, key=jax.random.key(4), train=True))
    # stax's mode is fixed when the layer is built: its "test" mode is the identity
    evaluation = nn.serial(nn.Dense(64), stax.Dropout(0.6, mode="test"), nn.Relu)
    np.testing.assert_allclose(evaluation.apply(params, x, key=key),
                               all_nn.apply(nn_params, x), rtol=1e-6)


# ------------------------------------------------- nn layers inside stax combinators


def test_nn_layers_inside_stax_serial_parallel_and_fan_out_match_all_stax():
    mixed = stax.serial(
        nn.Conv2D(3, 3, padding="SAME"), nn.Relu, stax.FanOut(2),
        stax.parallel(nn.Conv2D(4, (3, 3), padding="SAME"), stax.Conv(4, (3, 3), padding="SAME")),
        stax.FanInSum, nn.Flatten, nn.Dense(5), nn.LogSoftmax)
    out_shape, params = mixed[0](KEY, (-1, 6, 6, 2))
    assert tuple(out_shape) == (-1, 5)
    all_stax = stax.serial(
        stax.Conv(3, (3, 3), padding="SAME"), stax.Relu, stax.FanOut(2),
        stax.parallel(stax.Conv(4, (3, 3), padding="SAME"), stax.Conv(4, (3, 3), padding="SAME")),
        stax.FanInSum, stax.Flatten, stax.Dense(5), stax.LogSoftmax)
    conv_nn, conv_stax = params[3]
    stax_params = [conv_to_stax(params[0]), (), (), (conv_to_stax(conv_nn), conv_stax), (), (),
                   dense_to_stax(params[6]), ()]
    x = jnp.asarray(RNG.normal(size=(2, 6, 6, 2)), jnp.float32)
    assert_same_function(mixed[1], params, all_stax[1], stax_params, x)
    # stax hands every layer its key as rng= (split per layer): nn layers take that keyword
    np.testing.assert_allclose(jax.jit(lambda p, x_, k: mixed[1](p, x_, rng=k))(params, x, KEY),
                               all_stax[1](stax_params, x), rtol=1e-5, atol=1e-6)


def test_nn_conv_inside_stax_parallel_takes_rng_and_matches_all_nn():
    conv_a, conv_b = nn.Conv2D(2, 3, padding="SAME"), nn.Conv2D(2, 3, padding="VALID")
    init, apply = stax.parallel(conv_a, conv_b)
    shapes, params = init(KEY, [(-1, 5, 5, 1), (-1, 5, 5, 1)])
    assert [tuple(s) for s in shapes] == [(-1, 5, 5, 2), (-1, 3, 3, 2)]
    inputs = [jnp.asarray(RNG.normal(size=(2, 5, 5, 1)), jnp.float32) for _ in range(2)]
    outputs = jax.jit(lambda p, xs, k: apply(p, xs, rng=k))(params, inputs, KEY)
    for layer, layer_params, x, y in zip((conv_a, conv_b), params, inputs, outputs):
        np.testing.assert_allclose(y, layer.apply(layer_params, x), rtol=1e-6, atol=1e-6)


def test_nn_dropout_inside_stax_serial_takes_rng_and_train():
    mixed = stax.serial(nn.Dense(64), nn.Dropout(0.4), stax.Relu)
    all_stax = stax.serial(stax.Dense(64), stax.Dropout(0.6), stax.Relu)
    _, params = mixed[0](KEY, (-1, 8))
    stax_params = [dense_to_stax(params[0]), (), ()]
    x = jnp.asarray(RNG.normal(size=(4, 8)), jnp.float32)
    key = jax.random.key(7)
    # stax passes rng= and the caller's other keywords (train=) on to every layer
    np.testing.assert_allclose(mixed[1](params, x, rng=key, train=True),
                               all_stax[1](stax_params, x, rng=key), rtol=1e-6)
    # without train=True nn.Dropout is the identity, as stax.Dropout(mode="test") is
    np.testing.assert_allclose(mixed[1](params, x, rng=key),
                               stax.serial(stax.Dense(64), stax.Dropout(0.6, mode="test"),
                                           stax.Relu)[1](stax_params, x, rng=key), rtol=1e-6)
    with pytest.raises(ValueError, match="pass the PRNG key as key= or as rng="):
        nn.Dropout(0.4).apply({}, x, key=key, rng=key, train=True)
