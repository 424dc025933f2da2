"""Schedules against their formulas written out in NumPy, eagerly, jitted and vmapped."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl.optim import schedules as S

STEPS = np.arange(0, 130)


def np_exponential(t, init, transition_steps, rate, begin=0, staircase=False, end=None):
    exponent = max(t - begin, 0) / transition_steps
    if staircase:
        exponent = math.floor(exponent)
    value = init * rate ** exponent
    if end is not None:
        value = max(value, end) if rate < 1 else min(value, end)
    return value


def np_cosine(t, init, decay_steps, end=0.0):
    return end + (init - end) * 0.5 * (1 + math.cos(math.pi * min(t, decay_steps) / decay_steps))


def np_warmup_cosine(t, init, peak, warmup, total, end=0.0):
    if t < warmup:
        return init + (peak - init) * t / warmup
    return np_cosine(t - warmup, peak, total - warmup, end)


def np_piecewise(t, boundaries, values):
    for boundary, value in zip(boundaries, values):
        if t < boundary:
            return value
    return values[-1]


CASES = {
    "constant": (lambda: S.constant(0.25), lambda t: 0.25),
    "exponential": (lambda: S.exponential_decay(0.1, 20, 0.5),
                    lambda t: np_exponential(t, 0.1, 20, 0.5)),
    "exponential_staircase_begin_floor": (
        lambda: S.exponential_decay(0.1, 15, 0.3, transition_begin=10, staircase=True,
                                    end_value=0.002),
        lambda t: np_exponential(t, 0.1, 15, 0.3, 10, True, 0.002)),
    "exponential_growth_ceiling": (
        lambda: S.exponential_decay(0.01, 10, 1.5, end_value=0.2),
        lambda t: np_exponential(t, 0.01, 10, 1.5, end=0.2)),
    "cosine": (lambda: S.cosine_decay(0.1, 100), lambda t: np_cosine(t, 0.1, 100)),
    "cosine_end": (lambda: S.cosine_decay(0.1, 60, end_value=0.01),
                   lambda t: np_cosine(t, 0.1, 60, 0.01)),
    "warmup_cosine": (lambda: S.warmup_cosine_decay(0.0, 0.1, 20, 100),
                      lambda t: np_warmup_cosine(t, 0.0, 0.1, 20, 100)),
    "warmup_cosine_from_init_to_end": (
        lambda: S.warmup_cosine_decay(0.02, 0.1, 7, 90, end_value=0.005),
        lambda t: np_warmup_cosine(t, 0.02, 0.1, 7, 90, 0.005)),
    "no_warmup": (lambda: S.warmup_cosine_decay(0.0, 0.1, 0, 50),
                  lambda t: np_cosine(t, 0.1, 50)),
    "piecewise": (lambda: S.piecewise_constant([10, 50, 100], [0.1, 0.05, 0.01, 0.001]),
                  lambda t: np_piecewise(t, [10, 50, 100], [0.1, 0.05, 0.01, 0.001])),
    "piecewise_single": (lambda: S.piecewise_constant([], [0.3]), lambda t: 0.3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_matches_formula(name):
    build, formula = CASES[name]
    schedule = build()
    want = np.array([formula(int(t)) for t in STEPS])
    with jax.enable_x64(True):
        got_int = np.array([float(schedule(int(t))) for t in STEPS[::13]])
        np.testing.assert_allclose(got_int, want[::13], rtol=1e-12, atol=1e-15)
        got_vmap = jax.jit(jax.vmap(schedule))(jnp.asarray(STEPS, jnp.int32))
        assert got_vmap.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got_vmap), want, rtol=1e-12, atol=1e-15)
    got32 = schedule(jnp.asarray(STEPS, jnp.int32))  # an array of steps at once, float32
    assert got32.dtype == jnp.float32 and got32.shape == STEPS.shape
    np.testing.assert_allclose(np.asarray(got32), want, rtol=1e-5, atol=1e-9)
    assert np.all(want >= 0)


def test_warmup_reaches_peak_and_cosine_reaches_end():
    schedule = S.warmup_cosine_decay(0.0, 0.1, 10, 40, end_value=0.01)
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(40)) == pytest.approx(0.01)
    assert float(schedule(1000)) == pytest.approx(0.01)


def test_piecewise_boundaries_are_exact_beyond_float32_integers():
    # float32 holds integers exactly only up to 2**24: 20_000_000 and 20_000_001 are one float
    schedule = S.piecewise_constant([20_000_001, 2 ** 40], [1.0, 0.5, 0.25])
    steps = jnp.asarray([20_000_000, 20_000_001, 2 ** 31 - 1], jnp.int32)
    np.testing.assert_array_equal(np.asarray(jax.jit(schedule)(steps)), [1.0, 0.5, 0.5])
    assert float(schedule(20_000_000)) == 1.0


@pytest.mark.parametrize("build,argument", [
    (lambda: S.constant(-0.1), "value"),
    (lambda: S.constant(float("inf")), "value must be finite"),
    (lambda: S.cosine_decay(float("nan"), 10), "init_value"),
    (lambda: S.warmup_cosine_decay(0.0, float("inf"), 5, 10), "peak_value must be finite"),
    (lambda: S.exponential_decay(-0.1, 10, 0.5), "init_value"),
    (lambda: S.exponential_decay(0.1, 0, 0.5), "transition_steps"),
    (lambda: S.exponential_decay(0.1, 2.5, 0.5), "transition_steps"),
    (lambda: S.exponential_decay(0.1, 10, 0.0), "decay_rate"),
    (lambda: S.exponential_decay(0.1, 10, 0.5, transition_begin=-1), "transition_begin"),
    (lambda: S.exponential_decay(0.1, 10, 0.5, end_value=-1.0), "end_value"),
    (lambda: S.cosine_decay(0.1, 0), "decay_steps"),
    (lambda: S.cosine_decay(-0.1, 10), "init_value"),
    (lambda: S.cosine_decay(0.1, 10, end_value=-0.01), "end_value"),
    (lambda: S.warmup_cosine_decay(0.0, -0.1, 5, 10), "peak_value"),
    (lambda: S.warmup_cosine_decay(0.0, 0.1, -5, 10), "warmup_steps"),
    (lambda: S.warmup_cosine_decay(0.0, 0.1, 10, 10), "decay_steps"),
    (lambda: S.piecewise_constant([10], [0.1]), "values"),
    (lambda: S.piecewise_constant([10, 5], [0.1, 0.2, 0.3]), "strictly increasing"),
    (lambda: S.piecewise_constant([-1], [0.1, 0.2]), "boundaries"),
    (lambda: S.piecewise_constant([10], [0.1, -0.2]), "values"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_schedule_arguments(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()
