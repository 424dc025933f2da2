"""Tests for model state: the StatefulLayer contract, its threading through the combinators,
and BatchNorm.

Oracles: ``torch.nn.BatchNorm2d`` / ``BatchNorm1d`` on the same weights (outputs, running
statistics and gradients over several steps, train and eval mode; skipped without torch),
a NumPy float64 transcription of batch normalization for the combinator threading, and the
unsplit batch for the statistics shared over a ``vmap`` axis.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from functional_dl import nn

KEY = jax.random.key(0)
RNG = np.random.default_rng(11)


def np_batch_norm(x, params, state, train, momentum=0.1, epsilon=1e-5):
    """Batch norm over all axes but the last, in float64: ``(y, new_state)``."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    if train:
        mean, var = x.mean(axes), x.var(axes)
        n = x.size // x.shape[-1]
        new_state = {"mean": (1 - momentum) * state["mean"] + momentum * mean,
                     "var": (1 - momentum) * state["var"] + momentum * var * n / (n - 1)}
    else:
        mean, var, new_state = state["mean"], state["var"], state
    y = (x - mean) / np.sqrt(var + epsilon) * params["scale"] + params["bias"]
    return y, new_state


def _f64(tree):
    return jax.tree.map(lambda v: np.asarray(v, np.float64), tree)


# ------------------------------------------------------------------ BatchNorm vs torch


@pytest.mark.parametrize("input_shape", [(6, 5, 4, 3), (10, 3)])
def test_batch_norm_matches_torch_over_several_steps_and_in_eval(input_shape):
    torch = pytest.importorskip("torch")
    channels = input_shape[-1]
    layer = nn.BatchNorm(momentum=0.1, epsilon=1e-5)
    _, params, state = layer.init(KEY, (-1,) + input_shape[1:])
    params = {"scale": jnp.asarray(RNG.normal(size=channels) + 1.0, jnp.float32),
              "bias": jnp.asarray(RNG.normal(size=channels), jnp.float32)}
    module = (torch.nn.BatchNorm2d if len(input_shape) == 4 else torch.nn.BatchNorm1d)(
        channels, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(np.asarray(params["scale"])))
        module.bias.copy_(torch.tensor(np.asarray(params["bias"])))
    to_torch = (lambda a: a.permute(0, 3, 1, 2)) if len(input_shape) == 4 else (lambda a: a)
    from_torch = (lambda a: a.permute(0, 2, 3, 1)) if len(input_shape) == 4 else (lambda a: a)

    def objective(params, x, state):       # Σ sin(y): a loss whose gradient is not trivial
        y, new_state = layer.apply(params, x, state=state, train=True)
        return jnp.sum(jnp.sin(y)), (y, new_state)
    train_step = jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))

    module.train()
    for step in range(4):
        x = (RNG.normal(size=input_shape) * (1 + step) + step).astype(np.float32)
        (_, (y, state)), (grad_params, grad_x) = train_step(params, jnp.asarray(x), state)
        x_torch = to_torch(torch.tensor(x)).requires_grad_(True)
        module.zero_grad()
        y_torch = module(x_torch)
        torch.sin(y_torch).sum().backward()
        np.testing.assert_allclose(y, from_torch(y_torch).detach().numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(grad_x, from_torch(x_torch.grad).numpy(), atol=1e-5,
                                   rtol=1e-5)
        np.testing.assert_allclose(grad_params["scale"], module.weight.grad.numpy(), atol=1e-5,
                                   rtol=1e-5)
        np.testing.assert_allclose(grad_params["bias"], module.bias.grad.numpy(), atol=1e-5,
                                   rtol=1e-5)
        np.testing.assert_allclose(state["mean"], module.running_mean.numpy(), atol=1e-5,
                                   rtol=1e-5)
        np.testing.assert_allclose(state["var"], module.running_var.numpy(), atol=1e-5,
                                   rtol=1e-5)
    module.eval()
    x = RNG.normal(size=input_shape).astype(np.float32)
    y, eval_state = layer.apply(params, jnp.asarray(x), state=state, train=False)
    with torch.no_grad():
        expected = from_torch(module(to_torch(torch.tensor(x)))).numpy()
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)
    assert eval_state is state            # evaluation leaves the running statistics alone


def test_batch_norm_channels_first_and_a_shared_vmap_axis():
    x = RNG.normal(size=(8, 3, 2, 2)).astype(np.float32) * 2 + 1
    _, params, state = nn.BatchNorm(axis=1).init(KEY, (-1, 3, 2, 2))
    params = {"scale": jnp.asarray([1.0, 2.0, 0.5]), "bias": jnp.asarray([0.0, -1.0, 3.0])}
    y, new_state = nn.BatchNorm(axis=1).apply(params, jnp.asarray(x), state=state, train=True)
    channels_last = np.moveaxis(x, 1, -1)
    expected, expected_state = np_batch_norm(channels_last, _f64(params), _f64(state), True)
    np.testing.assert_allclose(y, np.moveaxis(expected, -1, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state["var"], expected_state["var"], rtol=1e-5)
    # the batch split in 4 parts under vmap, statistics shared over the mapped axis
    shared = nn.BatchNorm(axis=1, axis_name="parts")
    y_parts, state_parts = jax.vmap(
        lambda part: shared.apply(params, part, state=state, train=True), axis_name="parts")(
        jnp.asarray(x).reshape(4, 2, 3, 2, 2))
    np.testing.assert_allclose(y_parts.reshape(x.shape), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state_parts["var"][0], new_state["var"], rtol=1e-5)


# ------------------------------------------------------------- threading through combinators


def _small_stateful_network():
    return nn.serial(nn.Dense(4), nn.BatchNorm(), nn.Relu,
                     nn.Residual(nn.serial(nn.Dense(4), nn.BatchNorm(momentum=0.5))),
                     nn.Dense(2))


def test_combinators_thread_state_by_the_params_names_and_match_numpy():
    model = _small_stateful_network()
    assert nn.is_stateful(model) and isinstance(model, nn.Layer)
    out_shape, params, state = model.init(KEY, (-1, 3))
    assert out_shape == (-1, 2)
    assert jax.tree.map(jnp.shape, state) == {
        "batch_norm_0": {"mean": (4,), "var": (4,)},
        "residual_0": {"batch_norm_0": {"mean": (4,), "var": (4,)}}}
    assert set(params) == {"dense_0", "batch_norm_0", "residual_0", "dense_1"}
    p, s = _f64(params), _f64(state)

    def numpy_forward(x, state, train):
        h = x @ p["dense_0"]["w"] + p["dense_0"]["b"]
        h, s0 = np_batch_norm(h, p["batch_norm_0"], state["batch_norm_0"], train)
        h = np.maximum(h, 0)
        r = h @ p["residual_0"]["dense_0"]["w"] + p["residual_0"]["dense_0"]["b"]
        r, s1 = np_batch_norm(r, p["residual_0"]["batch_norm_0"],
                              state["residual_0"]["batch_norm_0"], train, momentum=0.5)
        y = (h + r) @ p["dense_1"]["w"] + p["dense_1"]["b"]
        return y, {"batch_norm_0": s0, "residual_0": {"batch_norm_0": s1}}

    apply = jax.jit(model.apply, static_argnames="train")
    for _ in range(3):
        x = RNG.normal(size=(6, 3))
        y, state = apply(params, jnp.asarray(x, jnp.float32), state=state, train=True)
        expected, s = numpy_forward(x, s, True)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     state, s)
    x = RNG.normal(size=(5, 3))
    y, eval_state = apply(params, jnp.asarray(x, jnp.float32), state=state, train=False)
    np.testing.assert_allclose(y, numpy_forward(x, s, False)[0], rtol=1e-4, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, eval_state, state)


def test_parallel_threads_state_and_stateless_models_stay_as_they_were():
    model = nn.serial(nn.FanOut(2), nn.parallel(nn.BatchNorm(), nn.Identity), nn.FanInSum)
    _, params, state = model.init(KEY, (-1, 3))
    assert set(state) == {"parallel_0"} and set(state["parallel_0"]) == {"batch_norm_0"}
    x = jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32)
    y, new_state = model.apply(params, x, state=state, train=True)
    bn_y, bn_state = nn.BatchNorm().apply(params["parallel_0"]["batch_norm_0"], x,
                                          state=state["parallel_0"]["batch_norm_0"], train=True)
    np.testing.assert_allclose(y, bn_y + x, rtol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, new_state["parallel_0"]["batch_norm_0"],
                 bn_state)
    plain = nn.serial(nn.Dense(3), nn.Residual(nn.Dense(3)), nn.FanOut(1), nn.parallel(nn.Relu))
    assert not nn.is_stateful(plain) and type(plain) is nn.Layer
    assert len(plain.init(KEY, (-1, 3))) == 2
    lifted = nn.as_stateful(nn.Dense(2))
    _, dense_params, dense_state = lifted.init(KEY, (-1, 3))
    assert dense_state == {} and nn.is_stateful(lifted) and lifted.name == "dense"
    out, kept = lifted.apply(dense_params, jnp.ones((1, 3)), state=dense_state)
    np.testing.assert_allclose(out, nn.Dense(2).apply(dense_params, jnp.ones((1, 3))))
    assert kept == {}
    assert nn.is_stateful(nn.named("norm", nn.BatchNorm()))   # renaming keeps the kind


# ---------------------------------------------------------------------------- bad input


def test_a_stateful_layer_used_without_its_state_is_an_error():
    model = _small_stateful_network()
    _, params, state = model.init(KEY, (-1, 3))
    x = jnp.ones((4, 3))
    for layer, layer_params in ((model, params), (nn.BatchNorm(), params["batch_norm_0"])):
        with pytest.raises(TypeError, match=r"is a stateful layer: call apply\(params, x, "
                                            r"state=state"):
            layer.apply(layer_params, x)
        with pytest.raises(TypeError, match="is a stateful layer"):
            layer.apply(layer_params, x, state=None, train=True)
    with pytest.raises(TypeError, match="batch_norm is a stateful layer"):
        stax.serial(stax.Identity, nn.BatchNorm())[1](((), params["batch_norm_0"]), x)
    with pytest.raises(ValueError, match=r"BatchNorm: state must be a dict with keys "
                                         r"\['mean', 'var'\].*'batch_norm_i' entry missing"):
        model.apply(params, x, state={}, train=True)
    with pytest.raises(ValueError, match=r"serial: state has names \['batch_norm_9'\]"):
        model.apply(params, x, state={**state, "batch_norm_9": {}})


@pytest.mark.parametrize("call, error, message", [
    (lambda l, p, s: l.apply(p, jnp.ones((4, 5)), state=s), ValueError,
     r"BatchNorm: x must have shape \(N, \.\.\., 3\).*got shape \(4, 5\)"),
    (lambda l, p, s: l.apply(p, jnp.ones((1, 3)), state=s, train=True), ValueError,
     r"BatchNorm: training needs more than one value per feature"),
    (lambda l, p, s: l.apply(p, jnp.ones((4, 3), jnp.int32), state=s), TypeError,
     r"BatchNorm: x"),
    (lambda l, p, s: l.apply({}, jnp.ones((4, 3)), state=s), ValueError,
     r"BatchNorm: params must be a dict with keys \['bias', 'scale'\]"),
    (lambda l, p, s: l.init(KEY, (-1,)), ValueError, r"BatchNorm: input_shape must be"),
    (lambda l, p, s: nn.BatchNorm(momentum=1.5), ValueError, r"BatchNorm: momentum"),
    (lambda l, p, s: nn.BatchNorm(epsilon=0.0), ValueError, r"BatchNorm: epsilon"),
    (lambda l, p, s: nn.BatchNorm(axis=2).init(KEY, (-1, 3)), ValueError,
     r"BatchNorm: axis 2 is out of range"),
])
def test_batch_norm_bad_input(call, error, message):
    layer = nn.BatchNorm()
    _, params, state = layer.init(KEY, (-1, 3))
    with pytest.raises(error, match=message):
        call(layer, params, state)
