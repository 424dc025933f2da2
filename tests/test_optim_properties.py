"""Convergence, dtypes, state invariants and tracing of every optimizer.

Convergence oracles: the closed-form minimiser of a quadratic (``A⁻¹ b``) and Rosenbrock's
minimum (1, 1).  Dtype oracle: the same optimizer run in float32 on the same (rounded)
inputs.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

S = optim.schedules


def all_optimizers(rate: float = 0.01):
    """One instance per optimizer and option, at a modest constant rate."""
    return {
        "sgd": optim.sgd(rate),
        "sgd_schedule": optim.sgd(S.exponential_decay(rate, 10, 0.9)),
        "momentum": optim.momentum(rate),
        "nesterov": optim.momentum(rate, nesterov=True),
        "adagrad": optim.adagrad(rate),
        "rmsprop": optim.rmsprop(rate),
        "rmsprop_centered": optim.rmsprop(rate, centered=True, eps_in_sqrt=False),
        "adam": optim.adam(rate),
        "adamw": optim.adamw(rate, mask=lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p)),
        "chain": optim.chain(optim.clip_by_global_norm(1.0), optim.adam(rate)),
        "apply_if_finite": optim.apply_if_finite(optim.momentum(rate)),
    }


def descend(optimizer, loss, params, n_steps: int):
    """``n_steps`` of gradient descent on ``loss`` inside one jitted ``lax.scan``."""

    def step(carry, _):
        params, state = carry
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        return (optim.apply_updates(params, updates), state), None

    run = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), None, length=n_steps)[0])
    return run(params)[0]


CONVERGENCE = {
    # name: (optimizer on the quadratic, optimizer on Rosenbrock, Rosenbrock steps)
    "sgd": (optim.sgd(0.05), optim.sgd(1e-3), 20_000),
    "momentum": (optim.momentum(0.01), optim.momentum(1e-3), 5_000),
    "nesterov": (optim.momentum(0.01, nesterov=True), optim.momentum(1e-3, nesterov=True), 5_000),
    "adagrad": (optim.adagrad(0.5), optim.adagrad(0.5), 5_000),
    "rmsprop": (optim.rmsprop(S.cosine_decay(0.01, 3_000)),
                optim.rmsprop(S.cosine_decay(0.01, 5_000)), 5_000),
    "rmsprop_centered": (optim.rmsprop(S.cosine_decay(0.01, 3_000), centered=True),
                         optim.rmsprop(S.cosine_decay(0.01, 5_000), centered=True), 5_000),
    "adam": (optim.adam(S.cosine_decay(0.05, 3_000)), optim.adam(S.cosine_decay(0.02, 5_000)),
             5_000),
    "adamw": (optim.adamw(S.warmup_cosine_decay(0.0, 0.05, 100, 3_000), weight_decay=0.0),
              optim.adamw(S.cosine_decay(0.02, 5_000), weight_decay=0.0), 5_000),
}


@pytest.mark.parametrize("name", sorted(CONVERGENCE))
def test_converges_on_quadratic(name):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((4, 4))
    a = q @ q.T + 0.5 * np.eye(4)          # SPD, condition number about 16
    b = rng.standard_normal(4)
    minimiser = np.linalg.solve(a, b)       # closed form
    a32, b32 = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)

    def loss(p):
        return 0.5 * p["w"] @ a32 @ p["w"] - b32 @ p["w"]

    w = descend(CONVERGENCE[name][0], loss, {"w": jnp.zeros(4)}, 3_000)["w"]
    np.testing.assert_allclose(np.asarray(w), minimiser, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONVERGENCE))
def test_converges_on_rosenbrock(name):
    def rosenbrock(p):
        return (1.0 - p["x"]) ** 2 + 100.0 * (p["y"] - p["x"] ** 2) ** 2

    _, optimizer, n_steps = CONVERGENCE[name]
    start = {"x": jnp.float32(-1.2), "y": jnp.float32(1.0)}
    assert float(rosenbrock(start)) > 20
    end = descend(optimizer, rosenbrock, start, n_steps)
    np.testing.assert_allclose([float(end["x"]), float(end["y"])], [1.0, 1.0], atol=2.5e-2)


def half_precision_problem(dtype):
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.uniform(-2, 2, (8, 4)), dtype),
              "b": [jnp.asarray(rng.uniform(-2, 2, (4,)), dtype)]}
    grads = [jax.tree_util.tree_map(lambda x: jnp.asarray(rng.standard_normal(x.shape), dtype),
                                    params) for _ in range(20)]
    # a gradient that stays exactly 0: 0 / (√0 + ε) must stay 0 (ε = 1e-8 underflows in fp16)
    for g in grads:
        g["b"][0] = g["b"][0].at[0].set(0)
    return params, grads


def run_steps(optimizer, params, grad_list):
    step = jax.jit(lambda p, s, g: optimizer.update(g, s, p))
    state = optimizer.init(params)
    for g in grad_list:
        updates, state = step(params, state, g)
        params = optim.apply_updates(params, updates)
    return params, state, updates


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "fp16"])
def test_half_precision_dtypes_preserved_and_close_to_float32(dtype):
    params, grads = half_precision_problem(dtype)
    as_f32 = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree)
    resolution = float(jnp.finfo(dtype).eps)
    for name, optimizer in all_optimizers(rate=0.05).items():
        final, state, updates = run_steps(optimizer, params, grads)
        ref_final, _, _ = run_steps(optimizer, as_f32(params), [as_f32(g) for g in grads])
        for leaf in jax.tree_util.tree_leaves(final) + jax.tree_util.tree_leaves(updates):
            assert leaf.dtype == dtype, name
        init_dtypes = [x.dtype for x in jax.tree_util.tree_leaves(optimizer.init(params))]
        assert [x.dtype for x in jax.tree_util.tree_leaves(state)] == init_dtypes, name
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(state)
                   if jnp.issubdtype(x.dtype, jnp.floating)), name
        assert float(final["b"][0][0]) == float(params["b"][0][0]), name  # zero gradient
        # 20 steps, each rounding the parameters once: error of a few units of resolution
        np.testing.assert_allclose(np.asarray(as_f32(final)["w"]), np.asarray(ref_final["w"]),
                                   atol=40 * resolution, err_msg=name)


@pytest.mark.parametrize("name", sorted(all_optimizers()))
def test_state_structure_and_dtypes_unchanged_across_updates(name):
    optimizer = all_optimizers()[name]
    params = {"w": jnp.ones((3, 2)), "b": (jnp.zeros(2), jnp.zeros((), jnp.float32))}
    grads = jax.tree_util.tree_map(lambda x: 0.1 * jnp.ones_like(x), params)
    state0 = optimizer.init(params)
    spec = lambda s: (jax.tree_util.tree_structure(s),
                      [(x.shape, x.dtype, getattr(x, "weak_type", False))
                       for x in jax.tree_util.tree_leaves(s)])
    state = state0
    for _ in range(3):
        _, state = optimizer.update(grads, state, params)
        assert spec(state) == spec(state0)
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    counts = [x for path, x in flat if getattr(path[-1], "name", None) == "count"]
    assert counts and all(c.dtype == jnp.int32 and c.shape == () and int(c) == 3
                          for c in counts)
    assert all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(state))


@pytest.mark.parametrize("name", sorted(all_optimizers()))
def test_no_retrace_on_second_update(name):
    optimizer = all_optimizers()[name]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    params = {"w": jnp.ones((3, 2)), "b": [jnp.zeros(2)]}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    state = optimizer.init(params)
    for _ in range(3):
        params, state = step(params, state, grads)
    chex.clear_trace_counter()
