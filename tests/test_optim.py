"""The optimizers against independent NumPy transcriptions of their formulas.

Each case runs 100 steps of random gradients on a pytree mixing dicts, lists, tuples and a
NamedTuple, jitted (one compiled step called 100 times) and un-jitted (a Python loop of
eager calls), in float64 (x64 on, rtol 1e-10) and float32 (rtol 1e-5), and compares the
whole parameter trajectory with the NumPy oracle, which steps each leaf on its own in
float64 (for the float32 runs: from the same float32 inputs, so it is the exact answer that
float32 arithmetic approximates).  The cases and the oracles are the ``variants`` of the
registry in ``tests/_optimizers.py``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

from _optimizers import VARIANTS, rate_pair

N_STEPS = 100


class Pair(NamedTuple):
    first: object
    second: object


def make_params(rng: np.random.Generator, dtype) -> dict:
    """A dict holding a list of a tuple, and a NamedTuple; entries in ±[1, 2] so relative
    tolerances stay meaningful along the trajectory."""

    def draw(*shape):
        return (rng.uniform(1.0, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)

    return {"dense": {"w": draw(3, 4)}, "blocks": [(draw(5),)],
            "pair": Pair(first=draw(2, 3), second=draw(4))}


def make_grad_sequence(rng: np.random.Generator, params: dict, dtype) -> dict:
    """(N_STEPS, *shape) gradients per leaf, magnitudes 1e-3 .. 1e1, one column always 0."""
    magnitudes = iter([1e-3, 1.0, 10.0, 1.0])

    def draw(leaf):
        g = rng.standard_normal((N_STEPS,) + leaf.shape) * next(magnitudes)
        return g.astype(dtype)

    grads = jax.tree_util.tree_map(draw, params)
    grads["dense"]["w"][:, :, 0] = 0.0
    return grads


def build_case(case: str):
    """(the optimizer, its NumPy oracle for one leaf given (p0, gs, mask flag), its mask)."""
    entry, (rate, options) = VARIANTS[case]
    built_rate, numpy_rate = rate_pair(rate)
    oracle_options = {k: v for k, v in options.items() if k != "mask"}

    def oracle(p, gs, decayed):
        leaf_mask = {"mask": decayed} if "mask" in options else {}
        return entry.oracle(p, gs, numpy_rate, **oracle_options, **leaf_mask)

    return entry.build(built_rate, **options), oracle, options.get("mask")


def mask_flags(mask, params) -> list:
    """The mask's flag for each leaf of ``params``: a function of params, or a prefix tree."""
    if mask is None:
        return [True] * len(jax.tree_util.tree_leaves(params))
    if callable(mask):
        return jax.tree_util.tree_leaves(mask(params))
    spread = jax.tree_util.tree_map(
        lambda flag, subtree: jax.tree_util.tree_map(lambda _: flag, subtree), mask, params)
    return jax.tree_util.tree_leaves(spread)


def run_optimizer(optimizer, params, grad_sequence, *, jitted: bool):
    """Parameter trajectory (N_STEPS, ...) per leaf: one step function, compiled once when
    ``jitted`` (and reused for every step), called eagerly otherwise."""

    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    step_fn = jax.jit(step) if jitted else step
    params = jax.tree_util.tree_map(jnp.asarray, params)
    state = optimizer.init(params)
    trajectory = []
    for t in range(N_STEPS):
        grads_t = jax.tree_util.tree_map(lambda g, t=t: g[t], grad_sequence)
        params, state = step_fn(params, state, grads_t)
        trajectory.append(params)
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trajectory)


def expected_trajectory(oracle, mask, params, grad_sequence):
    """The oracle's trajectory per leaf, computed in float64."""
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    g_leaves = [np.asarray(g, np.float64) for g in treedef.flatten_up_to(grad_sequence)]
    p_leaves = [np.asarray(p, np.float64) for p in p_leaves]
    decayed = mask_flags(mask, params)
    return [oracle(p, gs, d) for p, gs, d in zip(p_leaves, g_leaves, decayed)]


def check_against_oracle(case: str, dtype, rtol: float, jitted: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    params = make_params(rng, dtype)
    grads = make_grad_sequence(rng, params, dtype)
    optimizer, oracle, mask = build_case(case)
    got = run_optimizer(optimizer, params, grads, jitted=jitted)
    want = expected_trajectory(oracle, mask, params, grads)
    got_leaves = jax.tree_util.tree_leaves(got)
    assert len(got_leaves) == len(want) == 4
    for g, w in zip(got_leaves, want):
        assert g.dtype == dtype
        # relative to each entry, and to the leaf's scale for entries passing near zero
        np.testing.assert_allclose(np.asarray(g), w, rtol=rtol, atol=rtol * np.abs(w).max())


def test_mask_flags_follow_the_flattening_order():
    # dict keys sorted: blocks[0][0], dense.w, pair.first, pair.second
    params = make_params(np.random.default_rng(0), np.float32)
    _, _, tree_mask = build_case("adamw_warmup_cosine_mask_tree")
    assert mask_flags(tree_mask, params) == [False, True, True, True]
    _, _, mask_fn = build_case("adamw_mask_fn")
    assert mask_flags(mask_fn, params) == [False, True, True, False]
    assert mask_flags(None, params) == [True] * 4


EAGER_CASES = ["sgd_cosine", "momentum_nesterov", "adagrad", "rmsprop_centered", "adam",
               "adamw_mask_fn"]


@pytest.mark.parametrize("case", sorted(VARIANTS))
def test_matches_numpy_float64_jit(case):
    with jax.enable_x64(True):
        check_against_oracle(case, np.float64, 1e-10, True, seed=len(case))


@pytest.mark.parametrize("case", sorted(VARIANTS))
def test_matches_numpy_float32_jit(case):
    check_against_oracle(case, np.float32, 1e-5, True, seed=len(case) + 100)


@pytest.mark.parametrize("case", EAGER_CASES)
def test_matches_numpy_float64_eager(case):
    with jax.enable_x64(True):
        check_against_oracle(case, np.float64, 1e-10, False, seed=len(case) + 200)


@pytest.mark.parametrize("case", EAGER_CASES)
def test_matches_numpy_float32_eager(case):
    check_against_oracle(case, np.float32, 1e-5, False, seed=len(case) + 300)
