"""Tests for functional_dl.regularizers: NumPy sums and closed-form gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import regularizers

RNG = np.random.default_rng(1)


def make_params():
    return {
        "dense_0": {"w": jnp.asarray(RNG.normal(size=(3, 4))), "b": jnp.asarray(RNG.normal(size=4))},
        "conv_0": {"w": jnp.asarray(RNG.normal(size=(2, 2, 1, 3))), "b": jnp.asarray(RNG.normal(size=3))},
    }


WEIGHT_PATHS = [("dense_0", "w"), ("conv_0", "w")]


def np_leaves(params):
    return {(outer, inner): np.asarray(v) for outer, d in params.items() for inner, v in d.items()}


@pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_unmasked_penalties_match_numpy(wrap):
    params = make_params()
    leaves = np_leaves(params).values()
    np.testing.assert_allclose(wrap(regularizers.l1_penalty)(params),
                               sum(np.abs(v).sum() for v in leaves), rtol=1e-6)
    np.testing.assert_allclose(wrap(regularizers.l2_penalty)(params),
                               sum((v ** 2).sum() for v in leaves), rtol=1e-6)


def test_weights_only_mask_selects_matrices_and_kernels():
    params = make_params()
    mask = regularizers.weights_only_mask(params)
    assert mask == {"dense_0": {"w": True, "b": False}, "conv_0": {"w": True, "b": False}}


@pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_masked_penalties_and_closed_form_gradients(wrap):
    params = make_params()
    leaves = np_leaves(params)
    for mask in (regularizers.weights_only_mask,  # a function of params
                 regularizers.weights_only_mask(params)):  # a pytree of bools
        l1 = wrap(lambda p: regularizers.l1_penalty(p, mask=mask))
        l2 = wrap(lambda p: regularizers.l2_penalty(p, mask=mask))
        np.testing.assert_allclose(l1(params), sum(np.abs(leaves[k]).sum() for k in WEIGHT_PATHS),
                                   rtol=1e-6)
        np.testing.assert_allclose(l2(params), sum((leaves[k] ** 2).sum() for k in WEIGHT_PATHS),
                                   rtol=1e-6)
        g1, g2 = jax.grad(l1)(params), jax.grad(l2)(params)
        for outer, inner in leaves:
            value = leaves[(outer, inner)]
            selected = (outer, inner) in WEIGHT_PATHS
            # +sign(w) and +2w: a descent step shrinks the weights.
            np.testing.assert_allclose(g1[outer][inner], np.sign(value) if selected else 0.0)
            np.testing.assert_allclose(g2[outer][inner], 2 * value if selected else 0.0, rtol=1e-6)


def test_prefix_mask_and_elementwise_mask():
    params = make_params()
    leaves = np_leaves(params)
    prefix = {"dense_0": True, "conv_0": False}
    np.testing.assert_allclose(regularizers.l2_penalty(params, mask=prefix),
                               (leaves[("dense_0", "w")] ** 2).sum() + (leaves[("dense_0", "b")] ** 2).sum(),
                               rtol=1e-6)
    entry_mask = np.zeros((3, 4), bool)
    entry_mask[0, 1] = entry_mask[2, 3] = True
    mask = {"dense_0": {"w": jnp.asarray(entry_mask), "b": False}, "conv_0": False}
    np.testing.assert_allclose(regularizers.l1_penalty(params, mask=mask),
                               np.abs(leaves[("dense_0", "w")][entry_mask]).sum(), rtol=1e-6)
    grad = jax.grad(lambda p: regularizers.l1_penalty(p, mask=mask))(params)
    np.testing.assert_allclose(grad["dense_0"]["w"],
                               np.where(entry_mask, np.sign(leaves[("dense_0", "w")]), 0.0))


@pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_l1_gradient_is_the_sign_also_at_exact_zeros(wrap):
    # sign(0) = 0: the subgradient that keeps an exact zero at zero (jnp.abs has 1 there).
    w = jnp.array([[-2.0, 0.0, 3.0], [0.0, -0.0, 0.5]])
    value, grad = wrap(jax.value_and_grad(regularizers.l1_penalty))({"w": w})
    assert float(value) == 5.5
    np.testing.assert_array_equal(grad["w"], [[-1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])


def test_gradient_descent_with_l2_shrinks_weights():
    # With the correct +2λw sign, a step of pure weight decay moves w towards 0.
    params = make_params()
    step = jax.tree.map(lambda w, g: w - 0.1 * g, params, jax.grad(regularizers.l2_penalty)(params))
    assert float(regularizers.l2_penalty(step)) < float(regularizers.l2_penalty(params))


def test_bad_masks():
    params = make_params()
    with pytest.raises(ValueError, match="mask must have the structure of params"):
        regularizers.l1_penalty(params, mask={"dense_0": True})
    with pytest.raises(TypeError, match="bool"):
        regularizers.l2_penalty(params, mask={"dense_0": 1.0, "conv_0": True})


def test_empty_params_give_zero():
    assert float(regularizers.l1_penalty({})) == 0.0


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_weights_are_summed_in_float32(dtype):
    """A float16 sum of 1e6 squares of 0.3 (90 000) would overflow to inf."""
    params = {"w": jnp.full((1000, 1000), 0.3, dtype), "b": jnp.ones((3,), dtype)}
    w = np.asarray(params["w"], np.float64)   # the rounded weights, summed exactly
    l2 = regularizers.l2_penalty(params, mask=regularizers.weights_only_mask)
    l1 = regularizers.l1_penalty(params)
    assert l2.dtype == jnp.float32 and l1.dtype == jnp.float32
    np.testing.assert_allclose(l2, np.sum(w ** 2), rtol=1e-5)
    np.testing.assert_allclose(l1, np.sum(np.abs(w)) + 3.0, rtol=1e-5)
    grad = jax.grad(regularizers.l2_penalty)(params)
    assert grad["w"].dtype == dtype
    np.testing.assert_allclose(np.asarray(grad["w"], np.float64), 2 * w, rtol=1e-2)


def test_l2_penalty_equals_coupled_weight_decay_of_twice_lambda():
    """The module docstring's recipe: lam * l2_penalty == optax.add_decayed_weights(2 * lam)."""
    optax = pytest.importorskip("optax")
    lam, learning_rate = 0.05, 0.1
    params = {"w": jnp.asarray(RNG.normal(size=(3, 2))), "b": jnp.asarray(RNG.normal(size=2))}
    data_loss = lambda p: jnp.sum(jnp.sin(p["w"])) + jnp.sum(p["b"] ** 3)
    penalized = jax.grad(lambda p: data_loss(p) + lam * regularizers.l2_penalty(p))(params)
    expected = jax.tree.map(lambda g, w: g + 2 * lam * w, jax.grad(data_loss)(params), params)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    jax.tree.map(close, penalized, expected)  # NumPy-side closed form
    decayed = optax.chain(optax.add_decayed_weights(2 * lam), optax.sgd(learning_rate))
    updates, _ = decayed.update(jax.grad(data_loss)(params), decayed.init(params), params)
    plain = optax.sgd(learning_rate)
    reference, _ = plain.update(penalized, plain.init(params), params)
    jax.tree.map(close, updates, reference)
