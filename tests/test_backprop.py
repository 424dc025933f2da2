"""The hand-written backpropagation equals jax.grad; the finite-difference check works."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import losses, nn
from functional_dl.nn import backprop as bp
from functional_dl.nn import initializers

RNG = np.random.default_rng(4)
ACTIVATIONS = ["relu", "sigmoid", "tanh", "gelu"]
LOSSES = ["softmax_cross_entropy", "mean_squared_error"]
N_IN, WIDTH, N_OUT, BATCH = 4, 5, 3, 6


def random_network(hidden_layers, activation, seed):
    init, apply = nn.mlp([WIDTH] * hidden_layers + [N_OUT], activation=activation,
                         w_init=initializers.he_normal(), b_init=initializers.normal(0.5))
    _, params = init(jax.random.key(seed), (-1, N_IN))
    return params, apply


def batch_and_targets(loss, seed):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(BATCH, N_IN)))
    if loss == "softmax_cross_entropy":
        targets = jnp.asarray(rng.dirichlet(np.ones(N_OUT), size=BATCH))  # soft labels
    else:
        targets = jnp.asarray(rng.normal(size=(BATCH, N_OUT)))
    return x, targets


def autodiff_loss(apply, loss):
    per_example = getattr(losses, loss)
    return lambda p, x, t: per_example(apply(p, x), t).mean()


CASES = list(itertools.product([1, 2, 3, 4], ACTIVATIONS, LOSSES))


@pytest.mark.parametrize("hidden_layers,activation,loss", CASES)
def test_backprop_equals_jax_grad_float64(hidden_layers, activation, loss):
    with jax.enable_x64(True):
        seed = 10 * hidden_layers + ACTIVATIONS.index(activation)
        params, apply = random_network(hidden_layers, activation, seed)
        x, targets = batch_and_targets(loss, seed)
        assert params["dense_0"]["w"].dtype == jnp.float64
        value, grads = bp.backprop(params, x, targets, activation=activation, loss=loss)
        expected_value, expected = jax.value_and_grad(autodiff_loss(apply, loss))(params, x, targets)
        assert jax.tree.structure(grads) == jax.tree.structure(expected)
        np.testing.assert_allclose(value, expected_value, rtol=1e-12)
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        # Gradients are not all ~0 (the comparison is meaningful).
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-3


@pytest.mark.parametrize("loss", LOSSES)
def test_backprop_under_jit_and_integer_labels(loss):
    with jax.enable_x64(True):
        params, apply = random_network(2, "tanh", 7)
        x, targets = batch_and_targets(loss, 7)
        jitted = jax.jit(bp.backprop, static_argnames=("activation", "loss"))
        value, grads = jitted(params, x, targets, activation="tanh", loss=loss)
        expected = jax.grad(autodiff_loss(apply, loss))(params, x, targets)
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        if loss == "softmax_cross_entropy":
            labels = jnp.array([0, 2, 1, 1, 0, 2])
            _, from_ints = jitted(params, x, labels, activation="tanh", loss=loss)
            _, from_one_hot = jitted(params, x, jax.nn.one_hot(labels, N_OUT), activation="tanh",
                                     loss=loss)
            for got, want in zip(jax.tree.leaves(from_ints), jax.tree.leaves(from_one_hot)):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_forward_keeps_pre_activations():
    with jax.enable_x64(True):  # as the other tests here: reuses their compiled operations
        params, _ = random_network(2, "sigmoid", 3)
        x = jnp.asarray(RNG.normal(size=(BATCH, N_IN)))
        cache = bp.forward(params, x, "sigmoid")
        assert [a.shape for a in cache.activations] == [(BATCH, N_IN), (BATCH, WIDTH),
                                                         (BATCH, WIDTH)]
        assert [z.shape for z in cache.pre_activations] == [(BATCH, WIDTH), (BATCH, WIDTH),
                                                             (BATCH, N_OUT)]
        w = {name: np.asarray(params[name]["w"]) for name in params}
        b = {name: np.asarray(params[name]["b"]) for name in params}
        z1 = np.asarray(x) @ w["dense_0"] + b["dense_0"]
        a1 = 1 / (1 + np.exp(-z1))
        z2 = a1 @ w["dense_1"] + b["dense_1"]
        z3 = (1 / (1 + np.exp(-z2))) @ w["dense_2"] + b["dense_2"]
        for got, want in zip(cache.pre_activations, (z1, z2, z3), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cache.activations[1], a1, rtol=1e-12, atol=1e-12)


def test_backprop_bad_input():
    with jax.enable_x64(True):  # shares the compiled float64 operations of the tests above
        params, _ = random_network(1, "relu", 0)
        x, targets = batch_and_targets("mean_squared_error", 0)
        with pytest.raises(ValueError, match="activation"):
            bp.backprop(params, x, targets, activation="swish")
        with pytest.raises(ValueError, match="loss"):
            bp.backprop(params, x, targets, loss="hinge")
        with pytest.raises(ValueError, match=r"targets shape \(6, 2\)"):
            bp.backprop(params, x, targets[:, :2], loss="mean_squared_error")
        with pytest.raises(ValueError, match=r"inputs must have shape \(batch, 4\)"):
            bp.backprop(params, x[:, :3], targets)
        with pytest.raises(ValueError, match="dense_0"):
            bp.backprop({"dense_1": params["dense_0"]}, x, targets)
        for bad_class in (-1, 3):  # N_OUT = 3 classes
            labels = jnp.array([0, 1, 2, bad_class, 0, 1])
            with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 3\)"):
                bp.backprop(params, x, labels)


# ------------------------------------------------------------ finite differences


def test_numerical_gradient_matches_closed_form():
    with jax.enable_x64(True):
        a = jnp.asarray(RNG.normal(size=(3, 2)))
        params = {"x": jnp.asarray(RNG.normal(size=(3, 2))), "s": jnp.asarray(0.7)}

        def fn(p):  # Σ a x² + sin(s)·Σx  →  ∂/∂x = 2 a x + sin(s), ∂/∂s = cos(s) Σx
            return jnp.sum(a * p["x"] ** 2) + jnp.sin(p["s"]) * jnp.sum(p["x"])
        numeric = nn.numerical_gradient(fn, params)
        np.testing.assert_allclose(numeric["x"], 2 * a * params["x"] + np.sin(0.7), rtol=1e-8)
        np.testing.assert_allclose(numeric["s"], np.cos(0.7) * float(params["x"].sum()), rtol=1e-8)


def test_check_gradient_accepts_backprop_and_rejects_a_wrong_gradient():
    with jax.enable_x64(True):
        params, _ = random_network(2, "gelu", 1)
        x, targets = batch_and_targets("softmax_cross_entropy", 1)

        def loss(p):
            return bp.backprop(p, x, targets, activation="gelu")[0]
        grads = bp.backprop(params, x, targets, activation="gelu")[1]
        assert nn.check_gradient(loss, params, grads) < 1e-7
        wrong = jax.tree.map(lambda g: g, grads)
        wrong["dense_1"]["w"] = wrong["dense_1"]["w"].at[2, 3].add(1e-4)
        with pytest.raises(AssertionError, match=r"\['dense_1'\]\['w'\]\[2, 3\]"):
            nn.check_gradient(loss, params, wrong)
        # The sign error of the source text's L2 gradient would be caught:
        penalty = lambda p: jnp.sum(p["dense_0"]["w"] ** 2)
        minus = jax.tree.map(jnp.zeros_like, params)
        minus["dense_0"]["w"] = -2 * params["dense_0"]["w"]
        with pytest.raises(AssertionError, match="gradient mismatch"):
            nn.check_gradient(penalty, params, minus)


def test_check_gradient_bad_input():
    with pytest.raises(ValueError, match="scalar"):
        nn.numerical_gradient(lambda p: p["x"] * 2, {"x": jnp.ones(2)})
    with pytest.raises(ValueError, match="structure"):
        nn.check_gradient(lambda p: jnp.sum(p["x"]), {"x": jnp.ones(2)}, {"y": jnp.ones(2)})


def test_numerical_gradient_with_mixed_precision_leaves_and_empty_params():
    """A float32 leaf rounds θ ± ε: the difference is divided by the step it really took."""
    with jax.enable_x64(True):
        params = {"a32": jnp.asarray([1.0, -0.3], jnp.float32), "b64": jnp.asarray([0.5])}

        def fn(p):
            return jnp.sum(jnp.sin(p["a32"].astype(jnp.float64))) + jnp.sum(p["b64"] ** 3)

        estimate = bp.numerical_gradient(fn, params)
        np.testing.assert_allclose(estimate["a32"], np.cos([1.0, -0.3]), rtol=1e-4)
        np.testing.assert_allclose(estimate["b64"], [0.75], rtol=1e-8)
        bp.check_gradient(fn, params)  # float32 tolerances when any leaf is not float64
        empty = bp.numerical_gradient(lambda p: jnp.sum(p["x"]) * 0.0, {"x": jnp.zeros((0,))})
        assert empty["x"].shape == (0,)
