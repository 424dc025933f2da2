"""MultiSteps: k micro-batch calls are one inner step on the mean gradient.  Oracles: adam on
the concatenated batch (jax.grad of the mean loss), the NumPy float64 Adam of
tests/_optimizers.py on the mean gradients, and optax.MultiSteps on the same inputs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

from _optimizers import np_adam


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def regression_data(num_examples=12):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((num_examples, 3)))
    y = jnp.asarray(rng.standard_normal(num_examples))
    params = {"w": jnp.asarray(rng.standard_normal(3)), "b": jnp.zeros(())}
    return params, x, y


def mean_loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def test_k_micro_batches_equal_one_step_on_the_concatenated_batch():
    params, x, y = regression_data()
    k, num_cycles = 3, 4
    accumulate = optim.MultiSteps(optim.adam(0.05), every_k_schedule=k)
    reference = optim.adam(0.05)
    state, reference_state = accumulate.init(params), reference.init(params)
    reference_params = params
    update = jax.jit(accumulate.update)
    grad = jax.jit(jax.grad(mean_loss))
    reference_update = jax.jit(reference.update)
    micro_x, micro_y = x.reshape(k, 4, 3), y.reshape(k, 4)
    for cycle in range(num_cycles):
        for j in range(k):
            updates, state = update(grad(params, micro_x[j], micro_y[j]), state, params)
            params = optim.apply_updates(params, updates)
            assert bool(accumulate.has_updated(state)) == (j == k - 1)
            if j < k - 1:
                jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)
        u, reference_state = reference_update(grad(reference_params, x, y), reference_state,
                                              reference_params)
        reference_params = optim.apply_updates(reference_params, u)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13),
                     params, reference_params)
        assert int(accumulate.num_inner_steps(state)) == cycle + 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13),
                 state.inner_state, reference_state)
    # the state: a counter, one accumulator per parameter and the inner state, nothing more
    assert int(state.num_micro_steps) == k * num_cycles
    assert len(jax.tree.leaves(state)) == 1 + 2 + len(jax.tree.leaves(reference_state))
    jax.tree.map(lambda a: np.testing.assert_array_equal(a, 0.0),
                 accumulate.accumulated_grads(state))


def test_multi_steps_matches_numpy_adam_on_mean_gradients_and_optax():
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(1)
    k, num_cycles = 4, 3
    micro_grads = rng.standard_normal((num_cycles, k, 5))
    p0 = rng.standard_normal(5)
    ours = optim.MultiSteps(optim.adam(0.1, b1=0.8), k)
    # optax accumulates in float32 unless told (ours: float64 for float64 leaves)
    theirs = optax.MultiSteps(optax.adam(0.1, b1=0.8), every_k_schedule=k,
                              accumulator_dtype=jnp.float64)
    params = their_params = {"p": jnp.asarray(p0)}
    state, their_state = ours.init(params), theirs.init(their_params)
    trajectory = []
    our_update, their_update = jax.jit(ours.update), jax.jit(theirs.update)
    for cycle in range(num_cycles):
        for j in range(k):
            g = {"p": jnp.asarray(micro_grads[cycle, j])}
            updates, state = our_update(g, state, params)
            their_updates, their_state = their_update(g, their_state, their_params)
            np.testing.assert_allclose(updates["p"], their_updates["p"], rtol=1e-12, atol=1e-15)
            params = optim.apply_updates(params, updates)
            their_params = optax.apply_updates(their_params, their_updates)
            assert bool(ours.has_updated(state)) == bool(theirs.has_updated(their_state))
        trajectory.append(np.asarray(params["p"]))
    expected = np_adam(p0, micro_grads.mean(axis=1), lambda t: 0.1, b1=0.8)
    np.testing.assert_allclose(np.stack(trajectory), expected, rtol=1e-13)
    assert int(ours.num_inner_steps(state)) == int(their_state.gradient_step)


def test_multi_steps_forwards_extra_args_on_the_inner_step_and_k_one_is_inner():
    seen = []

    def spy_update(updates, state, params=None, **extra_args):
        seen.append(extra_args)
        return updates, state
    accumulate = optim.MultiSteps(optim.Optimizer(lambda p: optim.EmptyState(), spy_update), 2)
    params = {"w": jnp.ones(2)}
    state = accumulate.init(params)
    for value in (1.0, 2.0):
        updates, state = accumulate.update({"w": jnp.full(2, value)}, state, params,
                                           value=jnp.asarray(value))
    # the inner update is traced in both branches; its last call saw the extra arguments
    assert all(set(s) == {"value"} for s in seen)
    np.testing.assert_allclose(updates["w"], [1.5, 1.5])
    single = optim.MultiSteps(optim.sgd(0.1), 1)
    updates, state = single.update({"w": jnp.ones(2)}, single.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1])
    assert bool(single.has_updated(state))


def test_multi_steps_bad_input():
    with pytest.raises(ValueError, match="MultiSteps: every_k_schedule must be an int >= 1"):
        optim.MultiSteps(optim.adam(0.1), 0)
    with pytest.raises(TypeError, match="MultiSteps: every_k_schedule must be an int"):
        optim.MultiSteps(optim.adam(0.1), 2.0)
    with pytest.raises(TypeError, match="schedule of accumulation lengths is not supported"):
        optim.MultiSteps(optim.adam(0.1), lambda step: 2)
    with pytest.raises(TypeError, match="MultiSteps: inner must be an Optimizer"):
        optim.MultiSteps(optim.adam, 2)
    accumulate = optim.MultiSteps(optim.adam(0.1), 2)
    state = accumulate.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="tree structure of grads"):
        accumulate.update({"v": jnp.ones(2)}, state)
    with pytest.raises(TypeError, match="state must be a MultiStepsState"):
        accumulate.update({"w": jnp.ones(2)}, state.inner_state)


def test_multi_steps_under_vmap_equals_each_member_alone():
    """vmap turns the conditional into a select; each member must still match its own run."""
    rng = np.random.default_rng(2)
    grads = rng.standard_normal((6, 2, 3))     # (micro-steps, members, leaf)
    accumulate = optim.MultiSteps(optim.momentum(0.1), 3)
    params = {"w": jnp.zeros((2, 3))}
    state = jax.vmap(accumulate.init)(params)
    update = jax.jit(jax.vmap(accumulate.update))
    for g in grads:
        updates, state = update({"w": jnp.asarray(g)}, state, params)
        params = optim.apply_updates(params, updates)
    for member in range(2):
        alone = {"w": jnp.zeros(3)}
        alone_state = accumulate.init(alone)
        for g in grads[:, member]:
            u, alone_state = accumulate.update({"w": jnp.asarray(g)}, alone_state, alone)
            alone = optim.apply_updates(alone, u)
        np.testing.assert_allclose(params["w"][member], alone["w"], rtol=1e-13)


def test_accumulated_grads_is_the_running_sum_and_the_reset_is_lazy():
    """Oracle: NumPy cumulative sums within each cycle.  The state's buffer holds the sum on
    every call but a cycle's last, where it holds that call's updates (scratch)."""
    rng = np.random.default_rng(3)
    k = 3
    grads = rng.standard_normal((2 * k + 1, 4))
    accumulate = optim.MultiSteps(optim.sgd(0.5), k)
    params = {"w": jnp.zeros(4)}
    state = accumulate.init(params)
    for n, g in enumerate(grads):
        updates, state = accumulate.update({"w": jnp.asarray(g)}, state, params)
        cycle_start = n - n % k
        running = grads[cycle_start:n + 1].sum(axis=0)
        if n % k == k - 1:
            np.testing.assert_allclose(updates["w"], -0.5 * running / k, rtol=1e-14)
            np.testing.assert_allclose(state.accumulated_grads["w"], updates["w"], rtol=0)
            np.testing.assert_array_equal(accumulate.accumulated_grads(state)["w"], 0.0)
        else:
            np.testing.assert_array_equal(updates["w"], 0.0)
            np.testing.assert_allclose(state.accumulated_grads["w"], running, rtol=1e-14)
            np.testing.assert_allclose(accumulate.accumulated_grads(state)["w"], running,
                                       rtol=1e-14)


def test_bfloat16_parameters_accumulate_in_float32_and_get_bfloat16_updates():
    """The updates pass through the float32 accumulator's buffer on the k-th call: exact."""
    k = 2
    params = {"w": jnp.asarray([0.1, -0.3, 2.0], jnp.bfloat16)}
    grads = [jnp.asarray(g, jnp.bfloat16) for g in ([0.5, 1.0, -3.0], [0.25, 1.0, 1.0])]
    accumulate = optim.MultiSteps(optim.adam(0.01), k)
    state = accumulate.init(params)
    assert state.accumulated_grads["w"].dtype == jnp.float32
    for g in grads:
        updates, state = accumulate.update({"w": g}, state, params)
    mean = ((grads[0].astype(jnp.float32) + grads[1].astype(jnp.float32)) / k).astype(
        jnp.bfloat16)
    expected, _ = optim.adam(0.01).update({"w": mean}, optim.adam(0.01).init(params), params)
    assert updates["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(updates["w"], np.float32),
                                  np.asarray(expected["w"], np.float32))


def test_updates_shaped_unlike_the_gradients_take_the_zero_writing_branch():
    """An inner optimizer whose updates are not shaped like the accumulator (here float64
    updates for float32 gradients): the other conditional, the same results."""
    def widen(updates, state, params=None):
        return jax.tree.map(lambda u: 2.0 * u.astype(jnp.float64), updates), state
    accumulate = optim.MultiSteps(optim.Optimizer(lambda p: optim.EmptyState(), widen), 2)
    params = {"w": jnp.zeros(2, jnp.float32)}
    state = accumulate.init(params)
    outputs = []
    for value in (1.0, 3.0, 5.0, 7.0):
        updates, state = accumulate.update({"w": jnp.full(2, value, jnp.float32)}, state)
        assert updates["w"].dtype == jnp.float64
        outputs.append(float(updates["w"][0]))
    assert outputs == [0.0, 4.0, 0.0, 12.0]


def _copied_arrays(compiled, size):
    """The copy instructions of size-``size`` arrays in a compiled program's HLO."""
    return [line for line in compiled.as_text().splitlines()
            if " copy(" in line and f"[{size}]" in line.split("copy(")[0]]


def test_a_donated_multi_steps_step_copies_no_array():
    """The lazy reset lets XLA keep the accumulator and the inner state in place: the compiled
    donated step holds no array copy (an eager reset copies the accumulator and Adam's two
    moments on every call)."""
    size = 1000
    params = {"a": jnp.ones(size, jnp.float32), "b": jnp.ones(size, jnp.float32)}
    accumulate = optim.MultiSteps(optim.adam(1e-3), 4)

    def step(params, state, grads):
        updates, state = accumulate.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
        params, accumulate.init(params), params).compile()
    assert _copied_arrays(compiled, size) == []
