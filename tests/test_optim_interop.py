"""Interoperation with optax (same protocol) and the docstrings' recipes for its numbers.

Skipped when optax is not installed; the library itself never imports optax.  The number
comparisons run in float64 (x64 on), where both libraries' roundings are far below 1e-10.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

from _optimizers import OPTAX_RECIPES

optax = pytest.importorskip("optax")
S = optim.schedules
N_STEPS = 60


def random_problem(dtype):
    rng = np.random.default_rng(7)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3)), dtype),
              "b": (jnp.asarray(rng.standard_normal(3), dtype),)}
    grads = [jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.standard_normal(x.shape) * rng.choice([1e-3, 1.0, 5.0]), dtype),
        params) for _ in range(N_STEPS)]
    return params, grads


def trajectory(optimizer, apply_updates, params, grads):
    step = jax.jit(lambda p, s, g: optimizer.update(g, s, p))
    state = optimizer.init(params)
    out = []
    for g in grads:
        updates, state = step(params, state, g)
        params = apply_updates(params, updates)
        out.append(params)
    return out


def assert_same_trajectories(ours, theirs, rtol):
    for a, b in zip(ours, theirs):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            assert x.dtype == y.dtype
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                                       atol=rtol * float(jnp.abs(y).max()))


RECIPES = {
    **OPTAX_RECIPES,
    # combinators: name -> (ours, optax's), the arguments the docstrings give for the same numbers
    "momentum_schedule": (
        lambda: optim.chain(optim.momentum(1.0, beta=0.9),
                            optim.scale_by_schedule(S.cosine_decay(0.05, 40))),
        lambda optax: optax.sgd(optax.cosine_decay_schedule(0.05, 40), momentum=0.9)),
    "clip_then_adam": (lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.01)),
                       lambda optax: optax.chain(optax.clip_by_global_norm(1.0),
                                                 optax.adam(0.01))),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_documented_settings_reproduce_optax_numbers(name):
    ours, theirs = RECIPES[name]
    with jax.enable_x64(True):
        params, grads = random_problem(jnp.float64)
        # optax evaluates some schedules in float32 even with x64 on
        rtol = 1e-6 if name.endswith("schedule") else 1e-10
        assert_same_trajectories(trajectory(ours(), optim.apply_updates, params, grads),
                                 trajectory(theirs(optax), optax.apply_updates, params, grads),
                                 rtol=rtol)


def test_our_optimizer_in_an_optax_loop_and_optax_chain():
    params, grads = random_problem(jnp.float32)
    ours = optax.chain(optax.clip_by_global_norm(1.0), optim.adam(0.01))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.01))
    # float32: optax forms 1 − β^t directly, so agreement is to float32 rounding
    assert_same_trajectories(trajectory(ours, optax.apply_updates, params, grads),
                             trajectory(theirs, optax.apply_updates, params, grads), rtol=1e-4)


def test_optax_optimizer_with_our_chain_and_apply_updates():
    params, grads = random_problem(jnp.float32)
    mixed = optim.chain(optim.clip_by_global_norm(1.0), optax.scale_by_adam(), optim.scale(-0.01))
    reference = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.01))
    assert_same_trajectories(trajectory(mixed, optim.apply_updates, params, grads),
                             trajectory(reference, optim.apply_updates, params, grads), rtol=1e-4)


@pytest.mark.parametrize("ours,theirs", [
    (lambda: S.constant(0.3), lambda: optax.constant_schedule(0.3)),
    (lambda: S.exponential_decay(0.1, 7, 0.5, transition_begin=5, staircase=True,
                                 end_value=0.01),
     lambda: optax.exponential_decay(0.1, 7, 0.5, transition_begin=5, staircase=True,
                                     end_value=0.01)),
    (lambda: S.cosine_decay(0.1, 30, end_value=0.02),
     lambda: optax.cosine_decay_schedule(0.1, 30, alpha=0.2)),
    (lambda: S.warmup_cosine_decay(0.01, 0.1, 8, 40, end_value=0.001),
     lambda: optax.warmup_cosine_decay_schedule(0.01, 0.1, 8, 40, end_value=0.001)),
    (lambda: S.piecewise_constant([10, 25], [0.1, 0.05, 0.0125]),
     lambda: optax.piecewise_constant_schedule(0.1, {10: 0.5, 25: 0.25})),
], ids=["constant", "exponential", "cosine", "warmup_cosine", "piecewise"])
def test_schedules_match_optax(ours, theirs):
    steps = jnp.arange(60, dtype=jnp.int32)
    np.testing.assert_allclose(np.asarray(jax.vmap(ours())(steps)),
                               np.asarray(jax.vmap(theirs())(steps)), rtol=1e-6)
