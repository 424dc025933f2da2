"""inject_hyperparams: hyperparameters as state.  Oracles: the NumPy float64 Adam of
tests/_optimizers.py with the rate changed between steps, the plain factories with the same
numbers, optax.inject_hyperparams on the same inputs; compilations counted with JAX's
monitoring events (tests/_jax_events.py)."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

from _jax_events import TRACE, compilations_of, recording_jax_events
from _optimizers import np_adam


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def grads_sequence(num_steps, shape=(4,), seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((num_steps, *shape))


def test_changing_the_learning_rate_between_steps_neither_retraces_nor_recompiles():
    rates = [0.1, 0.1, 0.03, 0.03, 0.2, 0.01]
    gs = grads_sequence(len(rates))
    p0 = np.linspace(-1.0, 1.0, 4)
    optimizer = optim.inject_hyperparams(optim.adam)(learning_rate=rates[0], b1=0.8)

    def update(grads, state, params):
        return optimizer.update(grads, state, params)
    jitted = jax.jit(update)
    params = {"p": jnp.asarray(p0)}
    state = optimizer.init(params)
    assert state.hyperparams["learning_rate"].dtype == jnp.float64
    trajectory = []
    with recording_jax_events() as events:
        for t, rate in enumerate(rates):
            state = optim.set_hyperparams(state, learning_rate=rate)
            assert float(state.hyperparams["learning_rate"]) == rate
            updates, state = jitted({"p": jnp.asarray(gs[t])}, state, params)
            params = optim.apply_updates(params, updates)
            trajectory.append(np.asarray(params["p"]))
    assert compilations_of(events, "update") == 1
    assert sum(1 for kind, name in events if kind == TRACE and name == "update") == 1
    np.testing.assert_allclose(np.stack(trajectory),
                               np_adam(p0, gs, lambda t: rates[t], b1=0.8), rtol=1e-13)
    assert int(state.count) == len(rates) and float(state.hyperparams["b1"]) == 0.8
    # state._replace with a strongly typed array works the same way
    state = state._replace(hyperparams={**state.hyperparams,
                                        "learning_rate": jnp.asarray(0.5, jnp.float64)})
    with recording_jax_events() as events:
        jitted({"p": jnp.asarray(gs[0])}, state, params)
    assert compilations_of(events, "update") == 0


def test_schedules_are_evaluated_from_the_count_and_match_optax():
    optax = pytest.importorskip("optax")
    gs = grads_sequence(8, (3,), seed=1)
    schedule = optim.schedules.exponential_decay(0.1, 2, 0.5)
    # the same schedule for both (optax's own schedules compute in float32)
    their_schedule = schedule
    ours = optim.inject_hyperparams(optim.adamw)(learning_rate=schedule, weight_decay=0.1)
    theirs = optax.inject_hyperparams(optax.adamw)(learning_rate=their_schedule,
                                                   weight_decay=0.1)
    params = their_params = {"p": jnp.asarray([0.5, -1.0, 2.0])}
    state, their_state = ours.init(params), theirs.init(their_params)
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.1)
    our_update, their_update = jax.jit(ours.update), jax.jit(theirs.update)
    for t, g in enumerate(gs):
        g = {"p": jnp.asarray(g)}
        updates, state = our_update(g, state, params)
        their_updates, their_state = their_update(g, their_state, their_params)
        np.testing.assert_allclose(updates["p"], their_updates["p"], rtol=1e-12)
        for name in ("learning_rate", "weight_decay"):
            np.testing.assert_allclose(state.hyperparams[name], their_state.hyperparams[name],
                                       rtol=1e-15)
        np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.1 * 0.5 ** (t / 2),
                                   rtol=1e-13)
        params = optim.apply_updates(params, updates)
        their_params = optax.apply_updates(their_params, their_updates)
    # only what was passed is state; the factory's defaults stay constants
    assert set(state.hyperparams) == {"learning_rate", "weight_decay"}


FACTORIES = {
    "sgd": (optim.sgd, dict(learning_rate=0.1)),
    "momentum": (optim.momentum, dict(learning_rate=0.05, beta=0.7, nesterov=True)),
    "adagrad": (optim.adagrad, dict(learning_rate=0.1, eps=1e-3, initial_accumulator_value=0.1)),
    "rmsprop": (optim.rmsprop, dict(learning_rate=0.01, decay=0.8, eps=1e-3, centered=True)),
    "adam": (optim.adam, dict(learning_rate=0.01, b1=0.5, b2=0.9, eps=1e-3)),
    "adamw": (optim.adamw, dict(learning_rate=0.01, b1=0.5, b2=0.9, eps=1e-3,
                                weight_decay=0.2)),
    "clip": (optim.clip_by_global_norm, dict(max_norm=0.5)),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_each_factory_takes_traced_hyperparameters(name):
    """The factories' eager checks skip traced values: jitted, each injected factory gives the
    numbers of the plain factory built with the same Python floats."""
    factory, options = FACTORIES[name]
    injected = optim.inject_hyperparams(factory)(**options)
    plain = factory(**options)
    gs = grads_sequence(4, (2, 3), seed=2)
    params = {"w": jnp.ones((2, 3))}
    state, plain_state = injected.init(params), plain.init(params)
    update = jax.jit(injected.update)
    numeric = {k for k, v in options.items() if not isinstance(v, bool)}
    assert set(state.hyperparams) == numeric
    for g in gs:
        updates, state = update({"w": jnp.asarray(g)}, state, params)
        expected, plain_state = plain.update({"w": jnp.asarray(g)}, plain_state, params)
        np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-13)
        params = optim.apply_updates(params, updates)


def test_inject_hyperparams_bad_input():
    with pytest.raises(ValueError, match=re.escape("static_args ['musk'] are not arguments of adamw")):
        optim.inject_hyperparams(optim.adamw, static_args="musk")
    # the factory's own checks run at construction, on the values given
    with pytest.raises(ValueError, match="adam: b1 must be in"):
        optim.inject_hyperparams(optim.adam)(learning_rate=0.1, b1=1.5)
    with pytest.raises(ValueError, match="learning_rate"):
        optim.inject_hyperparams(optim.sgd)(learning_rate=lambda t: -1.0)
    # a function that is not a schedule must be named in static_args
    mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    with pytest.raises(TypeError, match=re.escape("pass static_args=('mask',)")):
        optim.inject_hyperparams(optim.adamw)(learning_rate=0.1, mask=mask)
    masked_decay = optim.inject_hyperparams(optim.adamw, static_args="mask")(
        learning_rate=0.1, weight_decay=0.5, mask=mask)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    state = masked_decay.init(params)
    assert set(state.hyperparams) == {"learning_rate", "weight_decay"}
    updates, state = masked_decay.update(jax.tree.map(jnp.zeros_like, params), state, params)
    np.testing.assert_allclose(updates["b"], 0.0)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5)
    # a value set out of range is caught by the factory's checks when not traced
    with pytest.raises(ValueError, match="adamw: weight_decay must be"):
        masked_decay.update(params, optim.set_hyperparams(state, weight_decay=-1.0), params)
    with pytest.raises(ValueError, match="'lr' is not a hyperparameter of this state"):
        optim.set_hyperparams(state, lr=0.1)
    with pytest.raises(ValueError, match=r"learning_rate must have shape \(\)"):
        optim.set_hyperparams(state, learning_rate=jnp.ones(2))


def test_a_learning_rate_sweep_in_one_vmapped_program():
    """Three ensemble members, each with its own injected rate, vmapped; oracle: NumPy Adam
    per member with that rate."""
    rates = np.asarray([0.3, 0.1, 0.01])
    gs = grads_sequence(5, (3, 2), seed=3)
    p0 = np.asarray([-1.0, 1.0])                               # every member starts here
    optimizer = optim.inject_hyperparams(optim.adam)(learning_rate=0.1)
    params = {"p": jnp.asarray(np.stack([p0] * 3))}           # (members, 2)
    state = jax.vmap(optimizer.init)(params)
    state = optim.set_hyperparams(state, learning_rate=rates)
    update = jax.jit(jax.vmap(optimizer.update))
    for g in gs:
        updates, state = update({"p": jnp.asarray(g)}, state, params)
        params = optim.apply_updates(params, updates)
    for member, rate in enumerate(rates):
        expected = np_adam(p0, gs[:, member], lambda t, rate=rate: rate)[-1]
        np.testing.assert_allclose(params["p"][member], expected, rtol=1e-12)


def test_an_injected_eps_root_is_traced_and_matches_the_fixed_one():
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    grads = {"w": jnp.linspace(0.5, -0.3, 6)}
    injected = optim.inject_hyperparams(optim.adam)(learning_rate=0.1, eps_root=1e-3)
    fixed = optim.adam(0.1, eps_root=1e-3)
    state, reference = injected.init(params), fixed.init(params)
    update = jax.jit(injected.update)
    for _ in range(3):
        u, state = update(grads, state, params)
        v, reference = fixed.update(grads, reference, params)
        np.testing.assert_allclose(u["w"], v["w"], rtol=1e-6)
