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
    (lambda: S.exponential_decay(0.1, 10, float("inf"), end_value=1.0), "decay_rate must be finite"),
    (lambda: S.exponential_decay(0.1, 10, 2.0), "needs end_value"),
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


# ---------------------------------------------------------------- steps beyond 2**24
# float32 holds integers exactly only up to 2**24; steps are int32 and reach 2**31 - 1.
# Every oracle below works on Python integers (exact) and then in float64.

BIG_BEGIN = 2 ** 24 + 1        # not a float32 number: rounds to 2**24
BIG_PERIOD = 2 ** 25 + 3       # not a float32 number either


def steps_around(*points):
    """``p - 1, p, p + 1`` for each point, plus the ends of the int32 range."""
    near = {p + d for p in points for d in (-1, 0, 1)} | {0, 1, 2 ** 24 + 1, 2 ** 30 + 7}
    return sorted(t for t in near | {2 ** 31 - 1} if 0 <= t < 2 ** 31)


LARGE_CASES = {
    # 0.5**n is exact in float32 (n <= 63 here): the staircase must match bit for bit
    "staircase_big_period": (
        lambda: S.exponential_decay(1.0, BIG_PERIOD, 0.5, transition_begin=BIG_BEGIN,
                                    staircase=True),
        lambda t: 0.5 ** (max(t - BIG_BEGIN, 0) // BIG_PERIOD),
        steps_around(BIG_BEGIN, *(BIG_BEGIN + k * BIG_PERIOD for k in (1, 2, 31, 63))), 0.0),
    # stairs of 2**16 steps: near 2**30 float32 steps are 128 apart and cross the stair edge
    "staircase_small_period": (
        lambda: S.exponential_decay(1.0, 2 ** 16, 1 - 2 ** -10, staircase=True),
        lambda t: (1 - 2 ** -10) ** (t // 2 ** 16),
        steps_around(*(k * 2 ** 16 for k in (2 ** 8, 2 ** 14, 2 ** 15 - 1))), 1e-6),
    # late start, short period: t − t₀ of two rounded float32 numbers would be off by ~64
    "exponential_late_begin": (
        lambda: S.exponential_decay(1.0, 100, 0.5, transition_begin=2 ** 30 + 7),
        lambda t: 0.5 ** (max(t - (2 ** 30 + 7), 0) / 100),
        steps_around(*(2 ** 30 + 7 + k for k in (0, 37, 100, 777, 1234))), 1e-6),
    "exponential_begin_past_int32": (
        lambda: S.exponential_decay(0.25, 10, 0.5, transition_begin=2 ** 40),
        lambda t: 0.25, steps_around(2 ** 31 - 1), 0.0),
    # a short cosine after a long warm-up: the step since the warm-up must be exact
    "warmup_cosine_long_warmup": (
        lambda: S.warmup_cosine_decay(0.0, 1.0, BIG_BEGIN, BIG_BEGIN + 100, end_value=0.1),
        lambda t: np_warmup_cosine(t, 0.0, 1.0, BIG_BEGIN, BIG_BEGIN + 100, 0.1),
        steps_around(BIG_BEGIN, BIG_BEGIN + 2, BIG_BEGIN + 37, BIG_BEGIN + 100), 1e-6),
    # float32 rounds t and T here only relatively: a check that nothing worse happens
    "cosine_long": (
        lambda: S.cosine_decay(1.0, 2 ** 30 + 7, end_value=0.1),
        lambda t: np_cosine(t, 1.0, 2 ** 30 + 7, 0.1),
        steps_around(2 ** 24 + 1, 2 ** 29 + 3, 2 ** 30 + 7), 1e-6),
    "piecewise_big_boundaries": (
        lambda: S.piecewise_constant([BIG_BEGIN, BIG_BEGIN + 2, 2 ** 31 - 1], [4.0, 3.0, 2.0, 1.0]),
        lambda t: np_piecewise(t, [BIG_BEGIN, BIG_BEGIN + 2, 2 ** 31 - 1], [4.0, 3.0, 2.0, 1.0]),
        steps_around(BIG_BEGIN, BIG_BEGIN + 2, 2 ** 31 - 1), 0.0),
}


@pytest.mark.parametrize("name", sorted(LARGE_CASES))
def test_schedule_is_exact_at_int32_steps_beyond_float32_integers(name):
    build, formula, steps, rtol32 = LARGE_CASES[name]
    schedule = build()
    want = np.array([formula(t) for t in steps])
    steps32 = jnp.asarray(steps, jnp.int32)
    assert np.array_equal(np.asarray(steps32), steps)  # no step wrapped around
    for got in (schedule(steps32), jax.jit(schedule)(steps32)):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), want, rtol=rtol32, atol=0)
    np.testing.assert_allclose(float(schedule(steps[-2])), want[-2], rtol=rtol32, atol=0)  # an int
    with jax.enable_x64(True):
        got = jax.jit(schedule)(steps32)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("build, formula", [
    (lambda: S.exponential_decay(1.0, 2 ** 31 + 100, 0.5),
     lambda t: 0.5 ** (max(t, 0) / (2 ** 31 + 100))),
    (lambda: S.exponential_decay(0.25, 10, 0.5, transition_begin=2 ** 31 + 100), lambda t: 0.25),
    (lambda: S.cosine_decay(1.0, 2 ** 31 + 100), lambda t: np_cosine(t, 1.0, 2 ** 31 + 100)),
    (lambda: S.warmup_cosine_decay(0.0, 1.0, 10, 2 ** 31 + 100),
     lambda t: np_warmup_cosine(max(t, 0), 0.0, 1.0, 10, 2 ** 31 + 100)),
])
def test_step_counts_beyond_int32_work_without_x64_for_integer_and_float_steps(build, formula):
    """Constants above 2**31 − 1 are steps an int32 count never reaches, not an overflow."""
    schedule = build()
    for step in (0, 7, 2 ** 31 - 1):
        want = formula(step)
        for t in (jnp.int32(step), jnp.float32(step), step, float(step)):
            # float32 rounds the step 2**31 − 1 itself: loose near the end of the cosine
            np.testing.assert_allclose(float(schedule(t)), want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(float(jax.jit(schedule)(jnp.int32(step))), want, rtol=1e-5,
                                   atol=1e-7)


def test_steps_before_zero_count_as_zero_also_without_warmup():
    for warmup in (0, 5):
        schedule = S.warmup_cosine_decay(0.5, 1.0, warmup, 20, end_value=0.1)
        for step in (-1, -100):
            np.testing.assert_allclose(float(schedule(step)), float(schedule(0)), rtol=0)
            np.testing.assert_allclose(float(schedule(jnp.float32(step))), float(schedule(0)))
        np.testing.assert_allclose(float(schedule(0)), np_warmup_cosine(0, 0.5, 1.0, warmup, 20, 0.1))


def test_decay_rate_close_to_one_keeps_float32_accuracy_over_many_steps():
    """decay_rate ** t with decay_rate rounded to float32 first is 1e-3 off at t = 1e5."""
    schedule = S.exponential_decay(1.0, 1, 0.99999)
    steps = np.array([1, 1000, 100_000, 1_000_000])
    want = np.exp(steps * math.log(0.99999))
    for got in (schedule(jnp.asarray(steps, jnp.int32)), jax.jit(schedule)(jnp.asarray(steps))):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6)
