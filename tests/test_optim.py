"""The optimizers against independent NumPy transcriptions of their formulas.

Each case runs 100 steps of random gradients on a pytree mixing dicts, lists, tuples and a
NamedTuple, jitted (one compiled step called 100 times) and un-jitted (a Python loop of
eager calls), in float64 (x64 on, rtol 1e-10) and float32 (rtol 1e-5), and compares the
whole parameter trajectory with the NumPy oracle, which steps each leaf on its own in
float64 (for the float32 runs: from the same float32 inputs, so it is the exact answer that
float32 arithmetic approximates).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

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


# ----------------------------------------------------------------------------------------
# NumPy transcriptions: one leaf, all steps; return the trajectory (N_STEPS, *shape).
# ``lr(t)`` is the rate for the update after t earlier updates.


def np_sgd(p, gs, lr):
    out = []
    for t, g in enumerate(gs):
        p = p - lr(t) * g
        out.append(p)
    return np.stack(out)


def np_momentum(p, gs, lr, beta, nesterov):
    m = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs):
        m = beta * m - lr(t) * g
        step = beta * m - lr(t) * g if nesterov else m
        p = p + step
        out.append(p)
    return np.stack(out)


def np_adagrad(p, gs, lr, eps, initial_accumulator_value, eps_in_sqrt):
    G = np.full_like(p, initial_accumulator_value)
    out = []
    for t, g in enumerate(gs):
        G = G + g ** 2
        denom = np.sqrt(G + eps) if eps_in_sqrt else np.sqrt(G) + eps
        p = p - lr(t) * g / denom
        out.append(p)
    return np.stack(out)


def np_rmsprop(p, gs, lr, decay, eps, eps_in_sqrt, centered):
    E = np.zeros_like(p)
    mean_g = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs):
        E = decay * E + (1 - decay) * g ** 2
        s = E
        if centered:
            mean_g = decay * mean_g + (1 - decay) * g
            s = np.maximum(E - mean_g ** 2, 0)
        denom = np.sqrt(s + eps) if eps_in_sqrt else np.sqrt(s) + eps
        p = p - lr(t) * g / denom
        out.append(p)
    return np.stack(out)


def np_adamw(p, gs, lr, b1, b2, eps, weight_decay, decayed):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = []
    for step, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** step)
        v_hat = v / (1 - b2 ** step)
        decay_term = weight_decay * p if decayed else 0.0
        p = p - lr(step - 1) * (m_hat / (np.sqrt(v_hat) + eps) + decay_term)
        out.append(p)
    return np.stack(out)


def np_adam(p, gs, lr, b1, b2, eps):
    return np_adamw(p, gs, lr, b1, b2, eps, 0.0, False)


def constant_rate(value):
    return lambda t: value


def np_exponential_rate(t):
    return 0.05 * 0.5 ** (t / 40)


def np_cosine_rate(t):
    return 0.001 + (0.05 - 0.001) * 0.5 * (1 + math.cos(math.pi * min(t, 80) / 80))


def np_warmup_cosine_rate(t):
    if t < 10:
        return 0.0 + 0.05 * t / 10
    return 0.5 * 0.05 * (1 + math.cos(math.pi * min(t - 10, 70) / 70))


def np_piecewise_rate(t):
    return 0.05 if t < 30 else (0.02 if t < 60 else 0.005)


SCHEDULES = {
    "exponential": (lambda: optim.schedules.exponential_decay(0.05, 40, 0.5),
                    np_exponential_rate),
    "cosine": (lambda: optim.schedules.cosine_decay(0.05, 80, end_value=0.001), np_cosine_rate),
    "warmup_cosine": (lambda: optim.schedules.warmup_cosine_decay(0.0, 0.05, 10, 80),
                      np_warmup_cosine_rate),
    "piecewise": (lambda: optim.schedules.piecewise_constant([30, 60], [0.05, 0.02, 0.005]),
                  np_piecewise_rate),
}


def decay_mask(params):
    """Spare 1-D leaves (biases), decay the rest."""
    return jax.tree_util.tree_map(lambda x: x.ndim > 1, params)


# case id -> (build optimizer, NumPy oracle for one leaf given (p0, gs, decayed))
CASES = {
    "sgd": (lambda: optim.sgd(0.05), lambda p, gs, d: np_sgd(p, gs, constant_rate(0.05))),
    "momentum": (lambda: optim.momentum(0.02),
                 lambda p, gs, d: np_momentum(p, gs, constant_rate(0.02), 0.9, False)),
    "momentum_nesterov": (lambda: optim.momentum(0.02, beta=0.8, nesterov=True),
                          lambda p, gs, d: np_momentum(p, gs, constant_rate(0.02), 0.8, True)),
    "adagrad": (lambda: optim.adagrad(0.1),
                lambda p, gs, d: np_adagrad(p, gs, constant_rate(0.1), 1e-10, 0.0, True)),
    "adagrad_eps_outside": (   # the constant schedule gives the numbers of a float rate
        lambda: optim.adagrad(optim.schedules.constant(0.1), eps=1e-2, eps_in_sqrt=False),
        lambda p, gs, d: np_adagrad(p, gs, constant_rate(0.1), 1e-2, 0.0, False)),
    "adagrad_eps_inside_initial": (
        lambda: optim.adagrad(0.1, eps=1e-2, initial_accumulator_value=0.1),
        lambda p, gs, d: np_adagrad(p, gs, constant_rate(0.1), 1e-2, 0.1, True)),
    "rmsprop": (lambda: optim.rmsprop(0.01),
                lambda p, gs, d: np_rmsprop(p, gs, constant_rate(0.01), 0.9, 1e-8, True, False)),
    "rmsprop_eps_outside": (
        lambda: optim.rmsprop(0.01, decay=0.99, eps=1e-2, eps_in_sqrt=False),
        lambda p, gs, d: np_rmsprop(p, gs, constant_rate(0.01), 0.99, 1e-2, False, False)),
    "rmsprop_centered": (
        lambda: optim.rmsprop(0.01, decay=0.8, eps=1e-2, centered=True),
        lambda p, gs, d: np_rmsprop(p, gs, constant_rate(0.01), 0.8, 1e-2, True, True)),
    "rmsprop_centered_eps_outside": (
        lambda: optim.rmsprop(0.01, eps=1e-2, eps_in_sqrt=False, centered=True),
        lambda p, gs, d: np_rmsprop(p, gs, constant_rate(0.01), 0.9, 1e-2, False, True)),
    "adam": (lambda: optim.adam(0.01),
             lambda p, gs, d: np_adam(p, gs, constant_rate(0.01), 0.9, 0.999, 1e-8)),
    "adam_options": (lambda: optim.adam(0.01, b1=0.5, b2=0.9, eps=1e-2),
                     lambda p, gs, d: np_adam(p, gs, constant_rate(0.01), 0.5, 0.9, 1e-2)),
    "adamw": (lambda: optim.adamw(0.01, weight_decay=0.5),
              lambda p, gs, d: np_adamw(p, gs, constant_rate(0.01), 0.9, 0.999, 1e-8, 0.5, True)),
    "adamw_mask_fn": (
        lambda: optim.adamw(0.01, weight_decay=0.5, mask=decay_mask),
        lambda p, gs, d: np_adamw(p, gs, constant_rate(0.01), 0.9, 0.999, 1e-8, 0.5, d)),
}
for _name, (_build_schedule, _np_rate) in SCHEDULES.items():
    CASES[f"sgd_{_name}"] = (
        lambda b=_build_schedule: optim.sgd(b()),
        lambda p, gs, d, r=_np_rate: np_sgd(p, gs, r))
CASES["momentum_cosine"] = (
    lambda: optim.momentum(SCHEDULES["cosine"][0](), nesterov=True),
    lambda p, gs, d: np_momentum(p, gs, np_cosine_rate, 0.9, True))
CASES["adagrad_piecewise"] = (
    lambda: optim.adagrad(SCHEDULES["piecewise"][0](), eps=1e-6),
    lambda p, gs, d: np_adagrad(p, gs, np_piecewise_rate, 1e-6, 0.0, True))
CASES["rmsprop_exponential"] = (
    lambda: optim.rmsprop(SCHEDULES["exponential"][0](), centered=True),
    lambda p, gs, d: np_rmsprop(p, gs, np_exponential_rate, 0.9, 1e-8, True, True))
CASES["adamw_warmup_cosine_mask_tree"] = (
    lambda: optim.adamw(SCHEDULES["warmup_cosine"][0](), weight_decay=0.3,
                        mask={"dense": {"w": True}, "blocks": False, "pair": True}),
    lambda p, gs, d: np_adamw(p, gs, np_warmup_cosine_rate, 0.9, 0.999, 1e-8, 0.3, d))

# Which leaves that tree mask decays, in flattening order (dict keys sorted):
# blocks[0][0], dense.w, pair.first, pair.second.
TREE_MASK_DECAYED = {"adamw_warmup_cosine_mask_tree": [False, True, True, True]}


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


def expected_trajectory(case: str, params, grad_sequence):
    """The oracle's trajectory per leaf, computed in float64."""
    _, oracle = CASES[case]
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    g_leaves = [np.asarray(g, np.float64) for g in treedef.flatten_up_to(grad_sequence)]
    p_leaves = [np.asarray(p, np.float64) for p in p_leaves]
    decayed = TREE_MASK_DECAYED.get(case, [p.ndim > 1 for p in p_leaves])
    return [oracle(p, gs, d) for p, gs, d in zip(p_leaves, g_leaves, decayed)]


def check_against_oracle(case: str, dtype, rtol: float, jitted: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    params = make_params(rng, dtype)
    grads = make_grad_sequence(rng, params, dtype)
    got = run_optimizer(CASES[case][0](), params, grads, jitted=jitted)
    want = expected_trajectory(case, params, grads)
    got_leaves = jax.tree_util.tree_leaves(got)
    assert len(got_leaves) == len(want) == 4
    for g, w in zip(got_leaves, want):
        assert g.dtype == dtype
        # relative to each entry, and to the leaf's scale for entries passing near zero
        np.testing.assert_allclose(np.asarray(g), w, rtol=rtol, atol=rtol * np.abs(w).max())


EAGER_CASES = ["sgd_cosine", "momentum_nesterov", "adagrad", "rmsprop_centered", "adam",
               "adamw_mask_fn"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy_float64_jit(case):
    with jax.enable_x64(True):
        check_against_oracle(case, np.float64, 1e-10, True, seed=len(case))


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy_float32_jit(case):
    check_against_oracle(case, np.float32, 1e-5, True, seed=len(case) + 100)


@pytest.mark.parametrize("case", EAGER_CASES)
def test_matches_numpy_float64_eager(case):
    with jax.enable_x64(True):
        check_against_oracle(case, np.float64, 1e-10, False, seed=len(case) + 200)


@pytest.mark.parametrize("case", EAGER_CASES)
def test_matches_numpy_float32_eager(case):
    check_against_oracle(case, np.float32, 1e-5, False, seed=len(case) + 300)
