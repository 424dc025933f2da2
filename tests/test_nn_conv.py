"""Tests for Conv2D, MaxPool, AvgPool and Flatten against direct NumPy loops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import nn
from functional_dl.nn.backprop import check_gradient

from _layers import np_conv2d, np_convnet, np_pool, small_convnet

RNG = np.random.default_rng(3)
KEY = jax.random.key(0)


def batched_and_per_image(layer, params, x):
    """``layer.apply`` on the NHWC batch and, by ``vmap``, on each HWC image: one jit."""
    return jax.jit(lambda x_: (layer.apply(params, x_),
                               jax.vmap(lambda image: layer.apply(params, image))(x_)))(x)


CONV_CASES = [
    ((3, 3), (1, 1), "SAME"),
    ((3, 3), (1, 1), "VALID"),
    ((2, 3), (2, 1), "SAME"),
    ((3, 2), (2, 2), "VALID"),
    ((3, 3), (2, 2), ((1, 0), (2, 1))),
    ((1, 1), (1, 1), 1),
]


@pytest.mark.parametrize("kernel_size,strides,padding", CONV_CASES)
def test_conv2d_matches_numpy_loop(kernel_size, strides, padding):
    layer = nn.Conv2D(3, kernel_size, strides, padding)
    x = RNG.normal(size=(2, 5, 6, 2))
    unknown_shape, _ = layer.init(KEY, (-1, 5, 6, 2))
    out_shape, params = layer.init(KEY, x.shape)
    assert params["w"].shape == kernel_size + (2, 3) and params["b"].shape == (3,)
    params = {"w": jnp.asarray(RNG.normal(size=params["w"].shape), jnp.float32),
              "b": jnp.asarray(RNG.normal(size=3), jnp.float32)}
    y, per_image = batched_and_per_image(layer, params, jnp.asarray(x, jnp.float32))
    expected = np_conv2d(x, np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64),
                         strides, padding if padding != 1 else ((1, 1), (1, 1)))
    assert y.shape == out_shape == expected.shape
    assert unknown_shape == (-1,) + out_shape[1:]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(per_image, expected, rtol=1e-4, atol=1e-4)
    # One HWC image gives the first row of the batch.
    np.testing.assert_allclose(layer.apply(params, jnp.asarray(x[0], jnp.float32)), expected[0],
                               rtol=1e-4, atol=1e-4)


POOL_CASES = [
    ((2, 2), None, "VALID"),
    ((3, 3), (1, 1), "SAME"),
    ((3, 2), (2, 2), "SAME"),
    ((2, 2), (1, 2), "VALID"),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("window,strides,padding", POOL_CASES)
def test_pools_match_numpy_loop(kind, window, strides, padding):
    layer = (nn.MaxPool if kind == "max" else nn.AvgPool)(window, strides, padding)
    x = RNG.normal(size=(2, 5, 6, 3))
    out_shape, params = layer.init(KEY, x.shape)
    assert params == {}
    assert layer.init(KEY, (-1, 5, 6, 3))[0] == (-1,) + out_shape[1:]
    y, per_image = batched_and_per_image(layer, params, jnp.asarray(x, jnp.float32))
    expected = np_pool(x, window, strides or window, padding, kind)
    assert y.shape == out_shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_image, expected, rtol=1e-5, atol=1e-6)


def test_flatten():
    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    out_shape, params = nn.Flatten.init(KEY, (-1, 3, 4, 5))
    assert out_shape == (-1, 60) and params == {}
    y = nn.Flatten.apply(params, x)
    np.testing.assert_array_equal(y, np.asarray(x).reshape(2, 60))
    assert nn.Flatten.init(KEY, x.shape)[0] == y.shape
    with pytest.raises(ValueError, match="only the batch axis"):
        nn.Flatten.init(KEY, (2, -1, 3))


def test_convnet_shapes_jit_and_per_example_vmap():
    with jax.enable_x64(True):  # as the gradient test below, which reuses this eager init
        init, apply = small_convnet()
        out_shape, params = init(KEY, (-1, 8, 8, 1))
        assert out_shape == (-1, 4)
        assert set(params) == {"conv_0", "conv_1", "dense_0"}
        x = RNG.normal(size=(3, 8, 8, 1))
        expected = np_convnet(params, x)

        @jax.jit  # one compilation: the batched call and the per-example vmap
        def batched_and_per_example(x_):
            return apply(params, x_), jax.vmap(lambda xi: apply(params, xi[None])[0])(x_)

        batched, per_example = batched_and_per_example(jnp.asarray(x))
        assert batched.shape == per_example.shape == (3, 4)
        np.testing.assert_allclose(batched, expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(per_example, expected, rtol=1e-10, atol=1e-12)


def test_convnet_gradients_match_finite_differences():
    with jax.enable_x64(True):
        init, apply = small_convnet()
        _, params = init(KEY, (2, 8, 8, 1))
        x = jnp.asarray(RNG.normal(size=(2, 8, 8, 1)))
        labels = jnp.array([1, 3])
        from functional_dl import losses

        def loss(p):
            return losses.softmax_cross_entropy_with_integer_labels(apply(p, x), labels).mean()
        assert check_gradient(jax.jit(loss), params, jax.jit(jax.grad(loss))(params)) < 1e-6


def test_conv2d_promotes_mixed_dtypes_like_dense():
    # uint8 or bfloat16 images with a float32 kernel: computed in float32 (lax.conv alone
    # rejects mixed dtypes).
    layer = nn.Conv2D(np.int64(2), np.int64(3), strides=np.int64(1))
    _, params = layer.init(KEY, (-1, 5, 5, 1))
    pixels = RNG.integers(0, 256, size=(2, 5, 5, 1))
    expected = np_conv2d(pixels.astype(np.float64), np.asarray(params["w"], np.float64),
                         np.asarray(params["b"], np.float64), (1, 1), "SAME")
    for dtype in (jnp.uint8, jnp.bfloat16):  # both hold these integers exactly
        y = jax.jit(layer.apply)(params, jnp.asarray(pixels, dtype))
        assert y.dtype == jnp.float32
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-3)


def test_conv_and_pool_bad_input():
    with pytest.raises(ValueError, match="features"):
        nn.Conv2D(0, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2D(2, (3, 0))
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2D(2, 3, padding="FULL")
    with pytest.raises(ValueError, match="NHWC"):
        nn.Conv2D(2, 3).init(KEY, (-1, 8, 8))
    with pytest.raises(ValueError, match="NHWC"):
        nn.MaxPool(2).init(KEY, (8, 8, 1, 1, 1))
    with pytest.raises(ValueError, match="does not fit"):
        nn.Conv2D(2, 5, padding="VALID").init(KEY, (1, 3, 3, 1))
    _, params = nn.Conv2D(2, 3).init(KEY, (1, 4, 4, 2))
    with pytest.raises(ValueError, match="channels"):
        nn.Conv2D(2, 3).apply(params, jnp.ones((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="params must be a dict"):
        nn.Conv2D(2, 3).apply({"w": params["w"]}, jnp.ones((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="strides"):
        nn.Conv2D(2, 3, strides=1.5)


def test_avg_pool_of_integer_and_float16_images_does_not_wrap_or_overflow():
    _, apply = nn.AvgPool(2)
    for dtype, value, out_dtype in ((jnp.uint8, 255, jnp.float32), (jnp.float16, 60000, jnp.float16)):
        x = jnp.full((1, 4, 4, 1), value, dtype)
        for fn in (apply, jax.jit(apply)):
            y = fn({}, x)
            assert y.dtype == out_dtype
            np.testing.assert_array_equal(np.asarray(y, np.float64), np.full((1, 2, 2, 1), value))


@pytest.mark.parametrize("pool", [nn.AvgPool, nn.MaxPool])
def test_pool_padding_as_large_as_the_window_is_rejected(pool):
    """Such a window lies wholly in the padding: 0/0 for the average, -inf for the max."""
    with pytest.raises(ValueError, match="padding must be smaller than the window"):
        pool(1, padding=1)
    with pytest.raises(ValueError, match="padding must be smaller than the window"):
        pool((3, 2), padding=((0, 0), (2, 0)))
    _, apply = pool((3, 3), strides=1, padding=2)      # every window still holds a pixel
    y = apply({}, jnp.arange(16.0).reshape(1, 4, 4, 1))
    assert np.all(np.isfinite(np.asarray(y)))


def test_flatten_an_empty_batch():
    _, apply = nn.Flatten
    assert apply({}, jnp.zeros((0, 3, 4))).shape == (0, 12)
    np.testing.assert_array_equal(apply({}, jnp.arange(24.0).reshape(2, 3, 4)),
                                  np.arange(24.0).reshape(2, 12))
