"""ema_params: the exponential moving average of the parameters, from a custom loop and from
train.fit.  Oracles: the NumPy float64 formulas e_t / (1 − d^t) and d θ̄ + (1 − d) θ, and
optax.ema fed the parameters."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim, train


def numpy_ema(thetas, decay, debias):
    """thetas[0] = θ_0, thetas[t] = θ_t; the averages θ̄_1 … θ̄_T in float64."""
    out = []
    if debias:
        e = np.zeros_like(thetas[0])
        for t, theta in enumerate(thetas[1:], start=1):
            e = decay * e + (1 - decay) * theta
            out.append(e / (1 - decay ** t))
    else:
        average = thetas[0]
        for theta in thetas[1:]:
            average = decay * average + (1 - decay) * theta
            out.append(average)
    return np.stack(out)


@pytest.mark.parametrize("debias", [True, False], ids=["debiased", "plain"])
def test_ema_params_in_a_custom_loop_matches_numpy(debias):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        thetas = rng.standard_normal((8, 3))
        ema = optim.ema_params(0.8, debias=debias)
        state = ema.init({"w": jnp.asarray(thetas[0])})
        np.testing.assert_array_equal(state.ema["w"], thetas[0])
        update = jax.jit(ema.update)
        averages = []
        for theta in thetas[1:]:
            state = update(state, {"w": jnp.asarray(theta)})
            averages.append(np.asarray(state.ema["w"]))
        np.testing.assert_allclose(np.stack(averages), numpy_ema(thetas, 0.8, debias),
                                   rtol=1e-13)
        assert int(state.count) == 7


def test_debiased_ema_params_matches_optax_ema_of_the_parameters():
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        thetas = np.random.default_rng(1).standard_normal((6, 4))
        ours, theirs = optim.ema_params(0.9), optax.ema(0.9, debias=True)
        state = ours.init({"w": jnp.asarray(thetas[0])})
        their_state = theirs.init({"w": jnp.asarray(thetas[0])})
        for theta in thetas[1:]:
            state = ours.update(state, {"w": jnp.asarray(theta)})
            their_average, their_state = theirs.update({"w": jnp.asarray(theta)}, their_state)
            np.testing.assert_allclose(state.ema["w"], their_average["w"], rtol=1e-13)


def test_ema_params_from_fit_as_its_step_hook():
    """fit with sgd on (w − 1)², every batch the same target: θ_t is plain gradient descent
    (w_{t+1} = w_t − 2η(w_t − 1)) and the hook state its debiased average."""
    learning_rate, epochs, steps_per_epoch, decay = 0.05, 3, 4, 0.7
    ema = optim.ema_params(decay)
    result = train.fit(lambda params, batch, key: jnp.mean((params["w"] - batch) ** 2),
                       optim.sgd(learning_rate), {"w": jnp.float32(-1.0)},
                       np.ones(8, np.float32), key=jax.random.key(0), epochs=epochs,
                       batch_size=2, on_step=ema.step_hook, progress="none")
    ws = [-1.0]
    for _ in range(epochs * steps_per_epoch):
        ws.append(ws[-1] - learning_rate * 2 * (ws[-1] - 1.0))
    ws = np.asarray(ws)
    np.testing.assert_allclose(result.params["w"], ws[-1], rtol=1e-5)
    assert isinstance(result.hook_state, optim.EmaParamsState)
    assert int(result.hook_state.count) == epochs * steps_per_epoch
    np.testing.assert_allclose(result.hook_state.ema["w"], numpy_ema(ws, decay, True)[-1],
                               rtol=1e-5)


def test_ema_params_keeps_its_dtype_and_checks_its_input():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    ema = optim.ema_params(0.999, dtype=jnp.float32)
    state = ema.update(ema.init(params), {"w": jnp.full(3, 2.0, jnp.bfloat16)})
    assert state.ema["w"].dtype == jnp.float32
    # the debiased first average is θ_1 itself, whatever the decay
    np.testing.assert_allclose(state.ema["w"], 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"ema_params: decay must be in \[0, 1\)"):
        optim.ema_params(1.0)
    with pytest.raises(TypeError, match="ema_params: debias must be True or False"):
        optim.ema_params(0.9, debias=1)
    with pytest.raises(ValueError, match="tree structure of params"):
        ema.update(state, {"v": jnp.ones(3)})
    with pytest.raises(TypeError, match=r"params\['w'\] has dtype int32"):
        ema.init({"w": jnp.ones(3, jnp.int32)})
    with pytest.raises(TypeError, match="state must be an EmaParamsState"):
        ema.update({"w": jnp.ones(3)}, params)
