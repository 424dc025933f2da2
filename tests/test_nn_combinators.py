"""Tests for the stax-parity combinators of functional_dl.nn.combinators.

Oracles: ``jax.example_libraries.stax``'s own combinators run on the same parameters (mapped
from this package's named dicts to stax's tuples), and NumPy float64 transcriptions of
``y = x + block(x)``, the fan-in sums and concatenations.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from functional_dl import nn

KEY = jax.random.key(0)
RNG = np.random.default_rng(7)


# stax's Dense adds its bias by implicit rank promotion, which the test config makes raise
allow_rank_promotion = pytest.mark.usefixtures("_stax_rank_promotion")


@pytest.fixture
def _stax_rank_promotion():
    with jax.numpy_rank_promotion("allow"):
        yield


def _np(tree):
    return jax.tree.map(lambda v: np.asarray(v, np.float64), tree)


def _stax_dense(params):
    return (params["w"], params["b"])


def test_nested_serial_keeps_readable_names_and_matches_numpy():
    model = nn.serial(nn.serial(nn.Dense(4), nn.Relu),
                      nn.Residual(nn.serial(nn.Dense(4), nn.Tanh)), nn.Dense(2))
    out_shape, params = model.init(KEY, (-1, 3))
    assert out_shape == (-1, 2)
    assert jax.tree.map(jnp.shape, params) == {
        "serial_0": {"dense_0": {"w": (3, 4), "b": (4,)}},
        "residual_0": {"dense_0": {"w": (4, 4), "b": (4,)}},
        "dense_0": {"w": (4, 2), "b": (2,)}}
    x = RNG.normal(size=(5, 3))
    p = _np(params)
    h = np.maximum(x @ p["serial_0"]["dense_0"]["w"] + p["serial_0"]["dense_0"]["b"], 0)
    h = h + np.tanh(h @ p["residual_0"]["dense_0"]["w"] + p["residual_0"]["dense_0"]["b"])
    expected = h @ p["dense_0"]["w"] + p["dense_0"]["b"]
    np.testing.assert_allclose(jax.jit(model.apply)(params, jnp.asarray(x, jnp.float32)),
                               expected, rtol=1e-5, atol=1e-5)


@allow_rank_promotion
def test_residual_matches_stax_fan_out_parallel_fan_in_sum_with_gradients():
    block = nn.serial(nn.Dense(4), nn.Tanh, nn.Dense(4))
    residual = nn.Residual(block)
    _, params = residual.init(KEY, (-1, 4))
    # stax: serial(FanOut(2), parallel(block, Identity), FanInSum); params [(), (block, ()), ()]
    stax_model = stax.serial(stax.FanOut(2),
                             stax.parallel(stax.serial(stax.Dense(4), stax.Tanh, stax.Dense(4)),
                                           stax.Identity),
                             stax.FanInSum)
    stax_params = [(), ((_stax_dense(params["dense_0"]), (), _stax_dense(params["dense_1"])),
                        ()), ()]
    x = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)
    np.testing.assert_allclose(residual.apply(params, x), stax_model[1](stax_params, x),
                               rtol=1e-6, atol=1e-6)
    ours = jax.grad(lambda p, x_: jnp.sum(jnp.sin(residual.apply(p, x_))), argnums=(0, 1))(
        params, x)
    theirs = jax.grad(lambda p, x_: jnp.sum(jnp.sin(stax_model[1](p, x_))), argnums=(0, 1))(
        stax_params, x)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-6)
    for name, (w, b) in (("dense_0", theirs[0][1][0][0]), ("dense_1", theirs[0][1][0][2])):
        np.testing.assert_allclose(ours[0][name]["w"], w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours[0][name]["b"], b, rtol=1e-5, atol=1e-6)


@allow_rank_promotion
def test_parallel_matches_stax_parallel_both_ways_and_splits_keys():
    layers = (nn.Dense(3), nn.Dense(2))
    ours = nn.parallel(*layers)
    shapes, params = ours.init(KEY, ((-1, 4), (-1, 5)))
    assert shapes == ((-1, 3), (-1, 2)) and set(params) == {"dense_0", "dense_1"}
    keys = jax.random.split(KEY, 2)
    for name, layer_key, fan_in in (("dense_0", keys[0], 4), ("dense_1", keys[1], 5)):
        np.testing.assert_array_equal(params[name]["w"],
                                      layers[0 if fan_in == 4 else 1].init(
                                          layer_key, (-1, fan_in))[1]["w"])
    x = (jnp.asarray(RNG.normal(size=(2, 4)), jnp.float32),
         jnp.asarray(RNG.normal(size=(2, 5)), jnp.float32))
    # nn layers inside stax.parallel (stax passes rng=), the same params as a tuple
    stax_shapes, _ = stax.parallel(*layers)[0](KEY, ((-1, 4), (-1, 5)))
    assert tuple(stax_shapes) == shapes
    theirs = stax.parallel(*layers)[1]((params["dense_0"], params["dense_1"]), x, rng=KEY)
    got = ours.apply(params, x, key=KEY)
    assert isinstance(got, tuple) and len(got) == 2
    for a, b in zip(got, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # stax layers inside nn.parallel: untagged, named layer_i, their params stax's own
    mixed = nn.parallel(stax.Dense(3), stax.Tanh)
    _, mixed_params = mixed.init(KEY, ((-1, 4), (-1, 5)))
    assert set(mixed_params) == {"layer_0", "layer_1"}
    y0, y1 = mixed.apply(mixed_params, x)
    w, b = _np(mixed_params["layer_0"])
    np.testing.assert_allclose(y0, np.asarray(x[0], np.float64) @ w + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y1, np.tanh(np.asarray(x[1], np.float64)), rtol=1e-6)


def test_parallel_dropout_branches_get_different_masks():
    model = nn.serial(nn.FanOut(2), nn.parallel(nn.Dropout(0.5), nn.Dropout(0.5)))
    _, params = model.init(KEY, (-1, 64))
    first, second = model.apply(params, jnp.ones((1, 64)), key=KEY, train=True)
    assert not np.array_equal(first == 0, second == 0)


@pytest.mark.parametrize("axis, shapes, concatenated", [
    (-1, ((-1, 3), (-1, 4)), (-1, 7)), (1, ((-1, 2, 5), (-1, 3, 5)), (-1, 5, 5)),
    (0, ((2, 3), (4, 3)), (6, 3)), (0, ((-1, 3), (4, 3)), (-1, 3))])
def test_fan_in_concat_and_fan_out_match_stax_and_numpy(axis, shapes, concatenated):
    ours, theirs = nn.FanInConcat(axis), stax.FanInConcat(axis)
    out_shape, params = ours.init(KEY, shapes)
    assert params == {}
    known = tuple(tuple(2 if s == -1 else s for s in shape) for shape in shapes)
    assert ours.init(KEY, known)[0] == tuple(theirs[0](KEY, known)[0])
    assert out_shape == concatenated
    xs = tuple(RNG.normal(size=shape) for shape in known)
    expected = np.concatenate(xs, axis=axis)
    np.testing.assert_array_equal(jax.jit(ours.apply)({}, xs), theirs[1]((), xs))
    np.testing.assert_allclose(ours.apply({}, xs), expected)
    assert nn.FanOut(3).init(KEY, shapes[0]) == ((shapes[0],) * 3, {})
    copies = nn.FanOut(3).apply({}, xs[0])
    assert len(copies) == 3 and all(c is xs[0] for c in copies)


def test_fan_in_sum_and_identity_match_stax_and_numpy():
    shapes = ((-1, 3), (-1, 3), (-1, 3))
    assert nn.FanInSum.init(KEY, shapes) == (stax.FanInSum[0](KEY, shapes)[0], {})
    assert nn.FanInSum.init(KEY, ((-1, 3), (4, 3)))[0] == (4, 3)   # -1 matches any size
    xs = tuple(RNG.normal(size=(4, 3)) for _ in range(3))
    np.testing.assert_allclose(jax.jit(nn.FanInSum.apply)({}, xs), xs[0] + xs[1] + xs[2],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(nn.FanInSum.apply({}, xs), stax.FanInSum[1]((), xs))
    assert nn.Identity.init(KEY, (-1, 7)) == ((-1, 7), {})
    assert nn.Identity.apply({}, xs[0]) is xs[0]


def test_combinators_compose_inside_stax_serial():
    model = stax.serial(nn.Residual(nn.Dense(3)), stax.Relu)
    _, params = model[0](KEY, (-1, 3))
    x = jnp.asarray(RNG.normal(size=(2, 3)), jnp.float32)
    w, b = _np(params[0]["w"]), _np(params[0]["b"])
    xn = np.asarray(x, np.float64)
    np.testing.assert_allclose(model[1](params, x, rng=KEY), np.maximum(xn + xn @ w + b, 0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build, call, message", [
    (lambda: nn.FanInSum, lambda l: l.init(KEY, ((-1, 3), (-1, 4))),
     r"FanInSum: its inputs must all have the same shape, got shapes \[\(-1, 3\), \(-1, 4\)\]"),
    (lambda: nn.FanInSum, lambda l: l.apply({}, (jnp.ones((2, 3)), jnp.ones((2, 4)))),
     r"FanInSum: .*same shape, got shapes \[\(2, 3\), \(2, 4\)\]"),
    (lambda: nn.FanInSum, lambda l: l.apply({}, jnp.ones((2, 3))),
     r"FanInSum: x must be a tuple of arrays .*got an array of shape \(2, 3\)"),
    (lambda: nn.FanInConcat(-1), lambda l: l.init(KEY, ((-1, 2, 3), (-1, 4, 3))),
     r"FanInConcat: .*same sizes on every axis but axis -1, got shapes \[\(-1, 2, 3\), "
     r"\(-1, 4, 3\)\]"),
    (lambda: nn.FanInConcat(1), lambda l: l.apply({}, (jnp.ones((2, 3)), jnp.ones((3, 3)))),
     r"FanInConcat: .*but axis 1, got shapes \[\(2, 3\), \(3, 3\)\]"),
    (lambda: nn.FanInConcat(2), lambda l: l.init(KEY, ((-1, 3), (-1, 3))),
     r"FanInConcat: axis 2 is out of range for inputs of rank 2"),
    (lambda: nn.parallel(nn.Dense(2), nn.Dense(3)), lambda l: l.init(KEY, (-1, 4)),
     r"parallel: input_shape must be a tuple of 2 shapes, one per layer \(dense_0, dense_1\)"),
    (lambda: nn.parallel(nn.Dense(2), nn.Dense(3)),
     lambda l: l.apply({"dense_0": {}, "dense_1": {}}, jnp.ones((2, 4))),
     r"parallel: x must be a tuple of 2 inputs, one per layer \(dense_0, dense_1\), got an "
     r"array of shape \(2, 4\)"),
    (lambda: nn.parallel(nn.Dense(2), nn.Dense(3)),
     lambda l: l.apply({}, (jnp.ones((2, 4)),)), r"parallel: x must be a tuple of 2 inputs"),
    (lambda: nn.Residual(nn.Dense(5)), lambda l: l.init(KEY, (-1, 4)),
     r"Residual: y = x \+ block\(x\) needs the block \(dense\) to keep its input shape "
     r"\(-1, 4\), but it gives \(-1, 5\)"),
    (lambda: nn.FanOut(0), None, r"FanOut: num must be"),
    (lambda: nn.parallel(), None, r"parallel needs at least one layer"),
])
def test_combinators_reject_inputs_that_do_not_fit(build, call, message):
    with pytest.raises(ValueError, match=message):
        layer = build()
        call(layer)


def test_residual_checks_the_shape_at_apply_too_and_names_stray_params():
    residual = nn.Residual(nn.Dense(4))
    _, params = residual.init(KEY, (-1, 4))
    wide = {"w": jnp.ones((4, 5)), "b": jnp.ones(5)}
    with pytest.raises(ValueError, match=r"Residual: .*\(dense\).*\(2, 4\), but it gives \(2, 5\)"):
        residual.apply(wide, jnp.ones((2, 4)))
    model = nn.parallel(nn.Dense(2), nn.Relu)
    with pytest.raises(ValueError, match=r"parallel: params has names \['dense_7'\]"):
        model.apply({"dense_7": {}}, (jnp.ones((1, 3)), jnp.ones((1, 3))))
    with pytest.raises(TypeError, match="Residual: block must be an"):
        nn.Residual(3)


@pytest.mark.parametrize("name", ["silu", "leaky_relu", "elu"])
def test_mlp_accepts_every_named_hidden_activation(name):
    init, apply = nn.mlp([5, 2], activation=name)
    _, params = init(jax.random.key(0), (-1, 3))
    x = jax.random.normal(jax.random.key(1), (4, 3))
    hidden = x @ params["dense_0"]["w"] + params["dense_0"]["b"][None, :]
    want = (nn.ACTIVATIONS[name].apply({}, hidden) @ params["dense_1"]["w"]
            + params["dense_1"]["b"][None, :])
    np.testing.assert_allclose(apply(params, x), want, rtol=1e-6)
