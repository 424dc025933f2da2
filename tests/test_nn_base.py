"""Tests for functional_dl.nn.base: the named ``Layer`` constructor, ``as_layer`` and the
checks layer authors use.  Oracles: the contract itself (the pair a layer wraps is called
with exactly the keywords stated) and hand-computed shapes and dtypes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from functional_dl import nn
from functional_dl.nn.base import (Layer, as_layer, check_input, check_input_shape,
                                   check_params, dtype_options, promote)

KEY = jax.random.key(0)


def _recording_layer(seen):
    """A layer ``y = scale * x`` (scale 2) whose apply records the keywords it gets."""
    def init(key, input_shape):
        return input_shape, {"scale": jnp.asarray(2.0)}

    def apply(params, x, *, key=None, train=False, **options):
        seen.append(dict(key=key, train=train, **options))
        return params["scale"] * x
    return init, apply


def test_layer_is_an_nn_layer_named_inside_serial():
    layer = Layer(*_recording_layer([]), "doubler")
    assert isinstance(layer, nn.Layer) and layer.name == "doubler" == nn.layer_name(layer)
    assert repr(layer) == "Layer(name='doubler')"
    init, apply = layer  # unpacks as stax's pair
    model = nn.serial(layer, nn.Dense(2), layer)
    _, params = model.init(KEY, (-1, 3))
    assert list(params) == ["doubler_0", "dense_0", "doubler_1"]
    x = np.ones((1, 3), np.float32)
    w, b = (np.asarray(params["dense_0"][name], np.float64) for name in ("w", "b"))
    np.testing.assert_allclose(model.apply(params, x), 2 * (2 * x @ w + b[None]), rtol=1e-6)


def test_apply_takes_rng_as_key_and_passes_other_keywords_through():
    seen = []
    layer = Layer(*_recording_layer(seen), "recorder")
    layer.apply({"scale": 2.0}, jnp.ones(2), rng=KEY, train=True, lengths=3)
    assert seen[-1]["key"] is KEY and seen[-1]["train"] is True and seen[-1]["lengths"] == 3
    assert Layer(layer.init, layer.apply, "renamed").apply is layer.apply  # not wrapped twice


@pytest.mark.parametrize("options, error, message", [
    ({"key": KEY, "rng": KEY}, ValueError, "recorder: pass the PRNG key as key= or as rng="),
    ({"key": 3}, TypeError, "recorder: key must be a PRNG key"),
    ({"train": 1}, TypeError, "recorder: train must be a Python bool"),
])
def test_apply_rejects_bad_key_and_train(options, error, message):
    layer = Layer(*_recording_layer([]), "recorder")
    with pytest.raises(error, match=message):
        layer.apply({"scale": 2.0}, jnp.ones(2), **options)


def test_layer_rejects_bad_parts_and_names():
    with pytest.raises(TypeError, match="Layer needs callable init and apply"):
        Layer(None, lambda params, x: x)
    with pytest.raises(ValueError, match="Layer: name must be a Python identifier"):
        Layer(*_recording_layer([]), "not a name")


def test_as_layer_wraps_stax_and_nn_pairs_keeping_names():
    stax_dropout = as_layer(stax.Dropout(0.5, mode="train"))
    _, params = stax_dropout.init(KEY, (-1, 100))
    y = stax_dropout.apply(params, jnp.ones((1, 100)), key=KEY, train=True)  # stax's rng=
    assert set(np.unique(np.asarray(y))) <= {0.0, 2.0}
    dense = as_layer(nn.Dense(2))
    assert isinstance(dense, Layer) and dense.name == "dense"
    assert as_layer(dense) is dense and as_layer(dense, "head").name == "head"
    with pytest.raises(TypeError, match="owner must be an \\(init, apply\\) pair"):
        as_layer(jnp.tanh, owner="owner")


def test_check_input_shape_and_input_name_the_owner_and_the_layout():
    assert check_input_shape("L", [-1, 3]) == (-1, 3)
    with pytest.raises(TypeError, match="L: input_shape must be a tuple of ints"):
        check_input_shape("L", 3)
    with pytest.raises(ValueError, match=r"L: input_shape must be \(B, T, F\), got \(3,\)"):
        check_input_shape("L", (3,), ranks=(3,), layout="(B, T, F)")
    with pytest.raises(ValueError, match="sizes must be positive"):
        check_input_shape("L", (0, 3))
    with pytest.raises(ValueError, match="the last axis of input_shape must be known"):
        check_input_shape("L", (2, -1), known_from=-1)
    with pytest.raises(ValueError, match="only the batch axis of input_shape may be unknown"):
        check_input_shape("L", (-1, -1, 2), known_from=1)
    check_input("L", np.zeros((2, 4)), features=4, layout="(..., {features})")
    with pytest.raises(ValueError, match=r"L: x must have shape \(\.\.\., 4\), got shape \(2, 5\)"):
        check_input("L", np.zeros((2, 5)), features=4, layout="(..., {features})")


def test_check_params_dtype_options_and_promote():
    check_params("Dense", {"w": 1, "b": 2}, ["w", "b"], "dense")
    with pytest.raises(ValueError, match=r"Dense: params must be a dict with keys \['b', 'w'\]"):
        check_params("Dense", {"w": 1}, ["w", "b"], "dense")
    assert dtype_options("L", None, None) == (None, None)
    assert dtype_options("L", jnp.bfloat16, "float32") == (jnp.bfloat16, np.float32)
    with pytest.raises(TypeError, match="L: param_dtype must be a floating-point dtype"):
        dtype_options("L", None, jnp.int32)
    x, w = promote(None, np.ones(2, np.float32), jnp.ones(2, jnp.bfloat16))
    assert x.dtype == w.dtype == jnp.float32
    assert promote(jnp.bfloat16, np.ones(2, np.float32))[0].dtype == jnp.bfloat16


@pytest.mark.parametrize("shape", [(5,), (4, 5), (3, 4, 5), (2, 3, 4, 5), (0, 4, 5)])
def test_matmul_features_is_x_times_w_over_the_last_axis(shape):
    """Oracle: NumPy's einsum over the last axis, for the value and for both gradients
    (the backward pass of the flattened 2-D product must give back x's shape)."""
    from functional_dl.nn.base import matmul_features
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = rng.standard_normal(shape)
        w = rng.standard_normal((5, 3))
        y = matmul_features(jnp.asarray(x), jnp.asarray(w))
        assert y.shape == shape[:-1] + (3,)
        np.testing.assert_allclose(y, np.einsum("...n,nm->...m", x, w), rtol=1e-13)
        cotangent = rng.standard_normal(y.shape)
        dx, dw = jax.grad(lambda a, b: jnp.sum(matmul_features(a, b) * cotangent),
                          argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w))
        np.testing.assert_allclose(dx, np.einsum("...m,nm->...n", cotangent, w), rtol=1e-13)
        np.testing.assert_allclose(dw, x.reshape(-1, 5).T @ cotangent.reshape(-1, 3),
                                   rtol=1e-13, atol=1e-13)
