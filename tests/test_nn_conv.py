"""Tests for the convolution and pooling layers (Conv, Conv2D, ConvTranspose, MaxPool,
AvgPool, the global pools, Flatten): against direct NumPy loops, against torch with the same
weights (outputs and gradients in float64), and the adjoint identity of "SAME"."""
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


# ----------------------------------------------------------------------------------------
# Conv, ConvTranspose and the pools against torch (same weights, float64) and NumPy loops.


def _to_torch_conv_weight(w):
    """Ours (*k, C_g, F) -> torch's Conv weight (F, C_g, *k)."""
    r = w.ndim - 2
    return np.transpose(w, (r + 1, r) + tuple(range(r)))


def _from_torch_conv_weight(w):
    r = w.ndim - 2
    return np.transpose(w, tuple(range(2, r + 2)) + (1, 0))


def _to_torch_transpose_weight(w):
    """Ours (*k, C, F_g) -> torch's ConvTranspose weight (C, F_g, *k)."""
    r = w.ndim - 2
    return np.transpose(w, (r, r + 1) + tuple(range(r)))


def _from_torch_transpose_weight(w):
    r = w.ndim - 2
    return np.transpose(w, tuple(range(2, r + 2)) + (0, 1))


def torch_outputs_and_grads(module, x, cotangent, weight=None, bias=None):
    """``module`` applied to channels-last ``x``: the output and the gradients of
    ``<y, cotangent>`` w.r.t. ``x``, the weight and the bias (all channels-last / as given)."""
    torch = pytest.importorskip("torch")
    if weight is not None:
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(np.array(weight)))
            module.bias.copy_(torch.from_numpy(np.array(bias)))
    x_t = torch.tensor(np.moveaxis(x, -1, 1), dtype=torch.float64, requires_grad=True)
    y = module(x_t)
    y.backward(torch.from_numpy(np.ascontiguousarray(np.moveaxis(cotangent, -1, 1))))
    grads = [np.moveaxis(x_t.grad.numpy(), 1, -1)]
    if weight is not None:
        grads += [module.weight.grad.numpy(), module.bias.grad.numpy()]
    return (np.moveaxis(y.detach().numpy(), 1, -1), *grads)


def ours_outputs_and_grads(layer, params, x, cotangent):
    @jax.jit  # one compilation for the forward pass and the vjp
    def forward_and_vjp(params_, x_, cotangent_):
        y, vjp = jax.vjp(lambda p, xi: layer.apply(p, xi), params_, x_)
        return y, vjp(cotangent_)

    y, (grad_params, grad_x) = forward_and_vjp(params, jnp.asarray(x), jnp.asarray(cotangent))
    return np.asarray(y), np.asarray(grad_x), grad_params


def _random_params(layer, input_shape):
    out_shape, params = layer.init(KEY, input_shape)
    return out_shape, jax.tree_util.tree_map(lambda v: jnp.asarray(RNG.normal(size=v.shape)),
                                             params)


# (input spatial, C, F, kernel, strides, our padding, torch padding, dilation, groups)
CONV_TORCH_CASES = {
    "1d_strided_dilated_grouped": ((9,), 4, 6, (3,), 2, 1, 1, 2, 2),
    "1d_same_dilated": ((8,), 2, 3, (3,), 1, "SAME", "same", 3, 1),
    "2d_depthwise_multiplier_2": ((7, 6), 3, 6, (3, 2), (2, 1), (1, 0), (1, 0), (1, 2), 3),
    "2d_depthwise_same": ((5, 6), 4, 4, (3, 3), 1, "SAME", "same", 2, 4),
    "3d_grouped": ((5, 6, 4), 2, 4, (2, 3, 2), (1, 2, 1), ((1, 1), (0, 0), (1, 1)),
                   (1, 0, 1), (2, 1, 1), 2),
}


@pytest.mark.parametrize("case", sorted(CONV_TORCH_CASES))
def test_conv_matches_torch_outputs_and_gradients(case):
    torch = pytest.importorskip("torch")
    spatial, c, f, kernel, strides, padding, torch_padding, dilation, groups = \
        CONV_TORCH_CASES[case]
    rank = len(kernel)
    with jax.enable_x64(True):
        layer = nn.Conv(f, kernel, strides, padding, dilation=dilation,
                        feature_group_count=groups)
        x = RNG.normal(size=(2,) + spatial + (c,))
        out_shape, params = _random_params(layer, x.shape)
        assert params["w"].shape == kernel + (c // groups, f)
        module = getattr(torch.nn, f"Conv{rank}d")(c, f, kernel, stride=strides,
                                                   padding=torch_padding, dilation=dilation,
                                                   groups=groups, dtype=torch.float64)
        cotangent = RNG.normal(size=out_shape)
        y, grad_x, grads = ours_outputs_and_grads(layer, params, x, cotangent)
        t_y, t_grad_x, t_grad_w, t_grad_b = torch_outputs_and_grads(
            module, x, cotangent, _to_torch_conv_weight(np.asarray(params["w"])),
            np.asarray(params["b"]))
    assert y.shape == out_shape == t_y.shape
    np.testing.assert_allclose(y, t_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, t_grad_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads["w"], _from_torch_conv_weight(t_grad_w), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(grads["b"], t_grad_b, rtol=1e-10, atol=1e-10)


def test_dilated_grouped_conv_matches_a_numpy_loop_of_the_formula():
    """y[n, i, o] = b[o] + Σ_{u, c} x_pad[n, s ⊙ i + d ⊙ u, g(o) C_g + c] w[u, c, o]."""
    with jax.enable_x64(True):
        layer = nn.Conv(4, (2, 2), (1, 2), ((1, 0), (0, 1)), dilation=(2, 1),
                        feature_group_count=2)
        x = RNG.normal(size=(1, 5, 6, 4))
        out_shape, params = _random_params(layer, x.shape)
        w, b = np.asarray(params["w"]), np.asarray(params["b"])
        y = np.asarray(jax.jit(layer.apply)(params, jnp.asarray(x)))
    expected = np.zeros(out_shape)
    x_pad = np.pad(x, ((0, 0), (1, 0), (0, 1), (0, 0)))
    for i in range(out_shape[1]):
        for j in range(out_shape[2]):
            for o in range(4):
                g = o // 2                      # F_g = 2 outputs per group, C_g = 2 inputs
                total = b[o]
                for u in range(2):
                    for v in range(2):
                        for c in range(2):
                            total += x_pad[0, i + 2 * u, 2 * j + v, 2 * g + c] * w[u, v, c, o]
                expected[0, i, j, o] = total
    assert out_shape == (1, 4, 3, 4)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


# (input spatial, C, F, kernel, strides, padding, output_padding, dilation, groups)
CONV_TRANSPOSE_TORCH_CASES = {
    "1d_grouped_output_padding": ((5,), 4, 6, (3,), 2, 1, 1, 1, 2),
    "2d_strided": ((4, 3), 3, 2, (3, 2), (2, 3), (1, 0), (1, 2), 1, 1),
    "2d_padding_beyond_the_kernel": ((5, 4), 2, 2, (2, 3), 2, (3, 1), 0, (2, 1), 1),
    "3d_dilated_grouped": ((3, 3, 2), 2, 4, (2, 2, 3), (1, 2, 2), (0, 1, 1), (0, 0, 1),
                           (2, 1, 1), 2),
}


@pytest.mark.parametrize("case", sorted(CONV_TRANSPOSE_TORCH_CASES))
def test_conv_transpose_matches_torch_outputs_and_gradients(case):
    torch = pytest.importorskip("torch")
    spatial, c, f, kernel, strides, padding, output_padding, dilation, groups = \
        CONV_TRANSPOSE_TORCH_CASES[case]
    rank = len(kernel)
    with jax.enable_x64(True):
        layer = nn.ConvTranspose(f, kernel, strides, padding, output_padding=output_padding,
                                 dilation=dilation, feature_group_count=groups)
        x = RNG.normal(size=(2,) + spatial + (c,))
        out_shape, params = _random_params(layer, x.shape)
        assert params["w"].shape == kernel + (c, f // groups)
        module = getattr(torch.nn, f"ConvTranspose{rank}d")(
            c, f, kernel, stride=strides, padding=padding, output_padding=output_padding,
            groups=groups, dilation=dilation, dtype=torch.float64)
        cotangent = RNG.normal(size=out_shape)
        y, grad_x, grads = ours_outputs_and_grads(layer, params, x, cotangent)
        t_y, t_grad_x, t_grad_w, t_grad_b = torch_outputs_and_grads(
            module, x, cotangent, _to_torch_transpose_weight(np.asarray(params["w"])),
            np.asarray(params["b"]))
    assert y.shape == out_shape == t_y.shape
    np.testing.assert_allclose(y, t_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, t_grad_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads["w"], _from_torch_transpose_weight(t_grad_w),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads["b"], t_grad_b, rtol=1e-10, atol=1e-10)


def conv_strides(strides, rank):
    return (strides,) * rank if isinstance(strides, int) else strides


@pytest.mark.parametrize("kernel,strides,dilation,groups",
                         [((4,), 2, 1, 1), ((1,), 3, 1, 1), ((3,), 2, 2, 1),
                          ((2, 3), (2, 3), (1, 1), 2)])
def test_conv_transpose_same_is_the_adjoint_of_the_same_conv(kernel, strides, dilation,
                                                             groups):
    """ConvTranspose(F, k, s, "SAME") with w_t = swapaxes(w_c) is x ↦ the vjp of
    Conv(C, k, s, "SAME") on an input of n·s entries (so out = n·s)."""
    with jax.enable_x64(True):
        rank = len(kernel)
        spatial = (4, 3)[:rank]
        conv = nn.Conv(4, kernel, strides, "SAME", dilation=dilation,
                       feature_group_count=groups)
        big = (2,) + tuple(n * s for n, s in zip(spatial, conv_strides(strides, rank))) + (2,)
        _, conv_params = _random_params(conv, big)
        transpose = nn.ConvTranspose(2, kernel, strides, "SAME", dilation=dilation,
                                     feature_group_count=groups, use_bias=False)
        out_shape, _ = transpose.init(KEY, (2,) + spatial + (4,))
        assert out_shape == big
        y = jnp.asarray(RNG.normal(size=(2,) + spatial + (4,)))

        @jax.jit
        def adjoint_and_transpose(y_):
            _, vjp = jax.vjp(lambda x_: conv.apply(conv_params, x_), jnp.zeros(big))
            return vjp(y_)[0], transpose.apply({"w": jnp.swapaxes(conv_params["w"], -1, -2)}, y_)

        expected, got = adjoint_and_transpose(y)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


# (kind, window, strides, padding) -> torch module of the same settings
POOL_TORCH_CASES = {
    "max_1d": ("max", (3,), 2, 1),
    "max_3d": ("max", (2, 3, 2), (1, 2, 2), (1, 1, 0)),
    "avg_1d": ("avg", (3,), 1, 1),
    "avg_3d": ("avg", (2, 2, 3), (2, 1, 2), (1, 0, 1)),
}


@pytest.mark.parametrize("case", sorted(POOL_TORCH_CASES))
def test_pools_match_torch_outputs_and_gradients(case):
    torch = pytest.importorskip("torch")
    kind, window, strides, padding = POOL_TORCH_CASES[case]
    rank = len(window)
    spatial = (7, 6, 5)[:rank] if rank == 1 else (4, 6, 5)
    with jax.enable_x64(True):
        layer = (nn.MaxPool if kind == "max" else nn.AvgPool)(window, strides, padding)
        x = RNG.normal(size=(2,) + spatial + (3,))
        out_shape, _ = layer.init(KEY, x.shape)
        cotangent = RNG.normal(size=out_shape)
        y, grad_x, _ = ours_outputs_and_grads(layer, {}, x, cotangent)
    if kind == "max":
        module = getattr(torch.nn, f"MaxPool{rank}d")(window, strides, padding)
    else:
        module = getattr(torch.nn, f"AvgPool{rank}d")(window, strides, padding,
                                                      count_include_pad=False)
    t_y, t_grad_x = torch_outputs_and_grads(module, x, cotangent)
    assert y.shape == out_shape == t_y.shape
    np.testing.assert_allclose(y, t_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, t_grad_x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind,rank,keepdims", [("avg", 1, False), ("avg", 2, True),
                                                ("avg", 3, False), ("max", 1, True),
                                                ("max", 2, False), ("max", 3, True)])
def test_global_pools_match_torch_adaptive_pools(kind, rank, keepdims):
    torch = pytest.importorskip("torch")
    factory = nn.GlobalAvgPool if kind == "avg" else nn.GlobalMaxPool
    x = RNG.normal(size=(2,) + (4, 3, 5)[:rank] + (3,))
    pool = getattr(torch.nn.functional, f"adaptive_{kind}_pool{rank}d")

    class Adaptive(torch.nn.Module):
        def forward(self, x_t):
            y = pool(x_t, 1)
            return y if keepdims else y.reshape(y.shape[:2])

    with jax.enable_x64(True):
        layer = factory(keepdims=keepdims)
        out_shape, _ = layer.init(KEY, (-1,) + x.shape[1:])
        cotangent = RNG.normal(size=(2,) + ((1,) * rank if keepdims else ()) + (3,))
        assert out_shape == (-1,) + cotangent.shape[1:]
        y, grad_x, _ = ours_outputs_and_grads(layer, {}, x, cotangent)
        # with spatial_rank, one example without the batch axis gives its row
        per_example = jax.vmap(factory(keepdims=keepdims, spatial_rank=rank).apply,
                               in_axes=(None, 0))({}, jnp.asarray(x))
    t_y, t_grad_x = torch_outputs_and_grads(Adaptive(), x, cotangent)
    np.testing.assert_allclose(y, t_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(per_example, t_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_x, t_grad_x, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------
# dtype / param_dtype, names inside serial, bad input.


@pytest.mark.parametrize("build,shape", [
    (lambda **kw: nn.Conv(4, (3, 2), 2, "SAME", feature_group_count=2, **kw), (2, 6, 5, 2)),
    (lambda **kw: nn.ConvTranspose(4, (3,), 2, 1, output_padding=1, **kw), (2, 6, 2)),
])
def test_bfloat16_computation_from_float32_params(build, shape):
    fast = build(dtype=jnp.bfloat16)
    _, params = fast.init(KEY, shape)
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(params))
    params = {"w": params["w"], "b": jnp.asarray(RNG.normal(size=4), jnp.float32)}
    x = jnp.asarray(RNG.normal(size=shape), jnp.float32)

    @jax.jit  # one compilation: bfloat16, the float32 reference, the gradient
    def fast_reference_and_grads(params_, x_):
        grads_ = jax.grad(lambda p: jnp.sum(fast.apply(p, x_).astype(jnp.float32)))(params_)
        return fast.apply(params_, x_), build().apply(params_, x_), grads_

    y, reference, grads = fast_reference_and_grads(params, x)
    assert y.dtype == jnp.bfloat16 and reference.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(reference)))
    np.testing.assert_allclose(np.asarray(y, np.float32), reference, atol=0.03 * scale)
    # the gradient reaches the float32 params as float32
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
    # param_dtype sets the params' dtype; float64 is the default float under x64
    _, half = build(param_dtype=jnp.bfloat16).init(KEY, shape)
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree_util.tree_leaves(half))
    with jax.enable_x64(True):
        _, wide = build().init(KEY, shape)
        assert all(v.dtype == jnp.float64 for v in jax.tree_util.tree_leaves(wide))


def test_layer_names_in_serial_and_use_bias_false():
    net = nn.serial(nn.Conv(4, (3,)), nn.Relu, nn.ConvTranspose(2, (2,), 2, use_bias=False),
                    nn.GlobalMaxPool(), nn.Dense(3))
    out_shape, params = net.init(KEY, (-1, 5, 1))
    assert out_shape == (-1, 3)
    assert sorted(params) == ["conv_0", "conv_transpose_0", "dense_0"]
    assert sorted(params["conv_transpose_0"]) == ["w"]
    assert net.apply(params, jnp.ones((2, 5, 1))).shape == (2, 3)
    assert nn.GlobalAvgPool().name == "global_avg_pool"


BAD_CONV_INPUT = [
    (lambda: nn.Conv(4, 3), TypeError, r"Conv: kernel_size .*\(3,\) for 1-D"),
    (lambda: nn.Conv(4, (3, 3, 3, 3)), ValueError, "Conv: kernel_size .* 1, 2 or 3"),
    (lambda: nn.Conv(4, (3, 3), strides=(1, 2, 1)), ValueError, "Conv: strides .* 2 such"),
    (lambda: nn.Conv(4, (3,), dilation=0), ValueError, "Conv: dilation must be a positive"),
    (lambda: nn.Conv(4, (3, 3), padding=((1, 1),)), ValueError, "Conv: padding must be"),
    (lambda: nn.Conv(4, (3,), padding=-1), ValueError, "Conv: padding must be"),
    (lambda: nn.Conv(5, (3,), feature_group_count=2), ValueError,
     r"Conv: features \(5\) must be divisible by feature_group_count \(2\)"),
    (lambda: nn.Conv(4, (3,), feature_group_count=0), ValueError, "feature_group_count"),
    (lambda: nn.Conv(4, (3,), use_bias="yes"), TypeError, "use_bias"),
    (lambda: nn.Conv(4, (3,), dtype=jnp.int32), TypeError, "Conv: dtype"),
    (lambda: nn.Conv(4, (3, 3), feature_group_count=2).init(KEY, (-1, 5, 5, 3)), ValueError,
     r"Conv: the input's channels \(3\) must be divisible by feature_group_count \(2\)"),
    (lambda: nn.Conv(4, (3,)).init(KEY, (-1, 5, 5, 3)), ValueError,
     r"Conv: input_shape must be NWC \(N, W, C\)"),
    (lambda: nn.Conv(4, (3, 3, 3)).init(KEY, (-1, 5, 5, 3)), ValueError, "NDHWC"),
    (lambda: nn.Conv(4, (3,), padding="VALID").init(KEY, (1, 2, 1)), ValueError, "does not fit"),
    (lambda: nn.Conv(4, (3,)).apply({"w": jnp.ones((3, 2, 4)), "b": jnp.zeros(4)},
                                    jnp.ones((1, 5, 5, 2))), ValueError,
     r"Conv: x must be a batch NWC .* or one example \(W, C\)"),
    (lambda: nn.Conv(4, (3,), feature_group_count=2).apply(
        {"w": jnp.ones((3, 2, 4)), "b": jnp.zeros(4)}, jnp.ones((1, 5, 2))), ValueError,
     "C = 4 channels"),
    (lambda: nn.Conv(4, (3,)).apply({"w": jnp.ones((3, 2, 4))}, jnp.ones((1, 5, 2))),
     ValueError, "Conv: params must be a dict"),
    (lambda: nn.ConvTranspose(4, (3,), 2, output_padding=2), ValueError,
     "ConvTranspose: output_padding must be smaller than the stride"),
    (lambda: nn.ConvTranspose(4, (3,), 1, padding=2).init(KEY, (1, 1, 2)), ValueError,
     "ConvTranspose: padding .* leaves nothing"),
    (lambda: nn.ConvTranspose(4, (3,), feature_group_count=2).init(KEY, (1, 5, 3)),
     ValueError, "ConvTranspose: the input's channels"),
    (lambda: nn.MaxPool((2, 2, 2, 2)), ValueError, "MaxPool: window_shape"),
    (lambda: nn.AvgPool((2,), strides=(1, 1)), ValueError, "AvgPool: strides"),
    (lambda: nn.MaxPool((2,)).init(KEY, (-1, 4, 4, 1)), ValueError, r"MaxPool: .*NWC"),
    (lambda: nn.AvgPool((2, 2, 2)).apply({}, jnp.ones((4, 4, 1))), ValueError,
     "AvgPool: x must be a batch NDHWC"),
    (lambda: nn.GlobalAvgPool().init(KEY, (2, 3)), ValueError, "GlobalAvgPool: input_shape"),
    (lambda: nn.GlobalMaxPool().apply({}, jnp.ones((2, 3))), ValueError, "GlobalMaxPool: x"),
    (lambda: nn.GlobalAvgPool(spatial_rank=4), ValueError, "spatial_rank"),
    (lambda: nn.GlobalAvgPool(spatial_rank=2).init(KEY, (2, 3, 1)), ValueError, "NHWC"),
    (lambda: nn.GlobalMaxPool(keepdims=1), TypeError, "keepdims"),
]


@pytest.mark.parametrize("index", range(len(BAD_CONV_INPUT)))
def test_conv_and_pool_bad_input_names_the_layer_and_argument(index):
    build, error, message = BAD_CONV_INPUT[index]
    with pytest.raises(error, match=message):
        build()
