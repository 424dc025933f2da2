"""Schedules against their formulas written out in NumPy float64, eagerly, jitted and vmapped,
and against optax's (and PyTorch's) schedules where those are installed."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl.optim import schedules as S

STEPS = np.arange(-3, 130)   # negative steps count as 0


def np_exponential(t, init, transition_steps, rate, begin=0, staircase=False, end=None):
    exponent = max(t - begin, 0) / transition_steps
    if staircase:
        exponent = math.floor(exponent)
    value = init * rate ** exponent
    if end is not None:
        value = max(value, end) if rate < 1 else min(value, end)
    return value


def np_cosine(t, init, decay_steps, end=0.0, exponent=1.0):
    cosine = 0.5 * (1 + math.cos(math.pi * min(t, decay_steps) / decay_steps))
    return end + (init - end) * cosine ** exponent


def np_warmup_cosine(t, init, peak, warmup, total, end=0.0, exponent=1.0):
    if t < warmup:
        return init + (peak - init) * t / warmup
    return np_cosine(t - warmup, peak, total - warmup, end, exponent)


def np_piecewise(t, boundaries, values):
    for boundary, value in zip(boundaries, values):
        if t < boundary:
            return value
    return values[-1]


def np_polynomial(t, init, end, power, transition_steps, begin=0):
    if t < begin:
        return init
    if t >= begin + transition_steps:
        return end
    return (init - end) * (1 - (t - begin) / transition_steps) ** power + end


def np_half_cosine(x):
    """``½ (1 + cos(π x))`` as ``cos²(π x / 2)``: float64 ``1 + cos`` cancels near x = 1,
    where the one-cycle's end value (peak / 2.5e5) would see the lost digits."""
    return math.cos(0.5 * math.pi * x) ** 2


def np_one_cycle(t, total, peak, pct_start=0.3, div=25.0, final_div=1e4):
    low, warmup = peak / div, int(pct_start * total)
    final = low / final_div
    if t < warmup:   # cosine rise low -> peak
        return peak + (low - peak) * np_half_cosine(t / warmup)
    if t < total:
        return final + (peak - final) * np_half_cosine((t - warmup) / (total - warmup))
    return final


def np_join(t, pieces, boundaries):
    start = 0
    for piece, boundary in zip(pieces, boundaries):
        if t < boundary:
            return piece(t - start)
        start = boundary
    return pieces[-1](t - start)


def np_restarts(t, init, period, multiplier=1, end=0.0):
    t = max(t, 0)
    if multiplier == 1:
        start, length = t - t % period, period
    else:
        start, length = 0, period
        while t >= start + length:
            start, length = start + length, length * multiplier
    return end + (init - end) * np_half_cosine((t - start) / length)


SGDR_CYCLES = [dict(init_value=0.0, peak_value=0.1, warmup_steps=5, decay_steps=30),
               dict(init_value=0.02, peak_value=0.06, warmup_steps=0, decay_steps=25,
                    end_value=0.001),
               dict(init_value=0.0, peak_value=0.03, warmup_steps=4, decay_steps=40,
                    end_value=0.002, exponent=2.0)]


def np_sgdr(t, cycles):
    pieces = [lambda s, c=c: np_warmup_cosine(s, c["init_value"], c["peak_value"],
                                              c["warmup_steps"], c["decay_steps"],
                                              c.get("end_value", 0.0), c.get("exponent", 1.0))
              for c in cycles]
    return np_join(t, pieces, np.cumsum([c["decay_steps"] for c in cycles])[:-1])


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
    "cosine_exponent": (lambda: S.cosine_decay(0.1, 50, end_value=0.01, exponent=2.5),
                        lambda t: np_cosine(t, 0.1, 50, 0.01, 2.5)),
    "cosine_rising": (lambda: S.cosine_decay(0.01, 40, end_value=0.1),
                      lambda t: np_cosine(t, 0.01, 40, 0.1)),
    "warmup_cosine_exponent": (
        lambda: S.warmup_cosine_decay(0.01, 0.1, 9, 100, end_value=0.002, exponent=0.5),
        lambda t: np_warmup_cosine(t, 0.01, 0.1, 9, 100, 0.002, 0.5)),
    "linear": (lambda: S.linear(0.1, 0.01, 60), lambda t: np_polynomial(t, 0.1, 0.01, 1, 60)),
    "linear_begin_rising": (lambda: S.linear(0.0, 0.2, 33, transition_begin=17),
                            lambda t: np_polynomial(t, 0.0, 0.2, 1, 33, 17)),
    "polynomial": (lambda: S.polynomial(0.1, 0.001, 2, 90, transition_begin=10),
                   lambda t: np_polynomial(t, 0.1, 0.001, 2, 90, 10)),
    "polynomial_root": (lambda: S.polynomial(1.0, 0.0, 0.5, 64),
                        lambda t: np_polynomial(t, 1.0, 0.0, 0.5, 64)),
    "warmup_constant": (lambda: S.warmup_constant(0.01, 0.1, 25),
                        lambda t: np_polynomial(t, 0.01, 0.1, 1, 25)),
    "warmup_constant_none": (lambda: S.warmup_constant(0.01, 0.1, 0), lambda t: 0.1),
    "one_cycle": (lambda: S.one_cycle(100, 0.1), lambda t: np_one_cycle(t, 100, 0.1)),
    "one_cycle_settings": (
        lambda: S.one_cycle(77, 0.3, pct_start=0.45, div_factor=10.0, final_div_factor=50.0),
        lambda t: np_one_cycle(t, 77, 0.3, 0.45, 10.0, 50.0)),
    "one_cycle_no_rise": (lambda: S.one_cycle(3, 0.1, pct_start=0.2),
                          lambda t: np_one_cycle(t, 3, 0.1, 0.2)),
    "join": (lambda: S.join_schedules(
                 [S.linear(0.0, 0.1, 10), S.constant(0.05),
                  S.cosine_decay(0.05, 40, end_value=0.005)], [10, 30]),
             lambda t: np_join(t, [lambda s: np_polynomial(s, 0.0, 0.1, 1, 10), lambda s: 0.05,
                                   lambda s: np_cosine(s, 0.05, 40, 0.005)], [10, 30])),
    # a piece that is a plain function sees the step counted from its boundary
    "join_plain_function": (
        lambda: S.join_schedules([S.constant(0.2), lambda step: 0.001 * step], [50]),
        lambda t: 0.2 if t < 50 else 0.001 * (t - 50)),
    "sgdr": (lambda: S.sgdr(SGDR_CYCLES), lambda t: np_sgdr(t, SGDR_CYCLES)),
    "cosine_restarts": (lambda: S.cosine_restarts(0.1, 30, end_value=0.01),
                        lambda t: np_restarts(t, 0.1, 30, 1, 0.01)),
    "cosine_restarts_growing": (lambda: S.cosine_restarts(0.1, 7, period_multiplier=3),
                                lambda t: np_restarts(t, 0.1, 7, 3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_matches_formula(name):
    build, formula = CASES[name]
    schedule = build()
    want = np.array([formula(max(int(t), 0)) for t in STEPS])
    with jax.enable_x64(True):
        got_int = np.array([float(schedule(int(t))) for t in STEPS[::13]])
        np.testing.assert_allclose(got_int, want[::13], rtol=1e-12, atol=1e-15)
        got_vmap = jax.jit(jax.vmap(schedule))(jnp.asarray(STEPS, jnp.int32))
        assert got_vmap.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got_vmap), want, rtol=1e-12, atol=1e-15)
    got32 = schedule(jnp.asarray(STEPS, jnp.int32))  # an array of steps at once, float32
    assert got32.dtype == jnp.float32 and got32.shape == STEPS.shape
    np.testing.assert_allclose(np.asarray(got32), want, rtol=1e-5, atol=1e-9)
    got32_jit = jax.jit(schedule)(jnp.asarray(STEPS, jnp.int32))
    np.testing.assert_allclose(np.asarray(got32_jit), want, rtol=1e-5, atol=1e-9)
    assert np.all(want >= 0)


# (schedule, step, the value it must equal exactly): transitions end on their end values
EXACT_VALUES = [
    (lambda: S.cosine_decay(1.0, 10), [(10, 0.0), (11, 0.0), (10 ** 6, 0.0), (0, 1.0)]),
    (lambda: S.cosine_decay(0.1, 60, end_value=0.01), [(60, 0.01), (61, 0.01), (0, 0.1)]),
    (lambda: S.cosine_decay(0.1, 60, end_value=0.01, exponent=3.0), [(60, 0.01), (0, 0.1)]),
    (lambda: S.cosine_decay(0.0, 5, end_value=0.2), [(5, 0.2), (0, 0.0)]),
    (lambda: S.warmup_cosine_decay(0.0, 0.1, 10, 40, end_value=0.01),
     [(0, 0.0), (10, 0.1), (40, 0.01), (1000, 0.01)]),
    (lambda: S.warmup_cosine_decay(0.0, 0.1, 0, 40), [(0, 0.1), (40, 0.0)]),
    (lambda: S.linear(0.1, 0.01, 20, transition_begin=5), [(5, 0.1), (25, 0.01), (99, 0.01)]),
    (lambda: S.polynomial(1.0, 0.01, 0.5, 100), [(0, 1.0), (100, 0.01), (101, 0.01)]),
    (lambda: S.polynomial(0.0, 0.3, 3.0, 7), [(0, 0.0), (7, 0.3)]),
    (lambda: S.warmup_constant(0.0, 0.1, 7), [(0, 0.0), (7, 0.1), (100, 0.1)]),
    (lambda: S.one_cycle(50, 0.1), [(0, 0.1 / 25), (15, 0.1), (50, 0.1 / 25 / 1e4),
                                    (51, 0.1 / 25 / 1e4)]),
    (lambda: S.sgdr(SGDR_CYCLES), [(0, 0.0), (5, 0.1), (30, 0.06), (55, 0.0), (59, 0.03),
                                   (95, 0.002), (500, 0.002)]),
    (lambda: S.cosine_restarts(0.1, 10, end_value=0.01), [(0, 0.1), (10, 0.1), (20, 0.1)]),
    (lambda: S.cosine_restarts(0.1, 10, period_multiplier=2), [(10, 0.1), (30, 0.1), (70, 0.1)]),
]


@pytest.mark.parametrize("build, expected", EXACT_VALUES,
                         ids=[f"row{k}" for k in range(len(EXACT_VALUES))])
def test_transitions_start_and_end_exactly_on_their_values(build, expected):
    schedule = build()
    steps, values = zip(*expected)
    for x64, float_dtype in ((False, np.float32), (True, np.float64)):
        with jax.enable_x64(x64):
            want = np.asarray(values, float_dtype)
            got = jax.jit(schedule)(jnp.asarray(steps, jnp.int32))
            assert got.dtype == float_dtype
            np.testing.assert_array_equal(np.asarray(got), want)
            np.testing.assert_array_equal([schedule(t) for t in steps], want)  # eager, ints


def test_piecewise_boundaries_are_exact_beyond_float32_integers():
    # float32 holds integers exactly only up to 2**24: 20_000_000 and 20_000_001 are one float
    schedule = S.piecewise_constant([20_000_001, 2 ** 40], [1.0, 0.5, 0.25])
    steps = jnp.asarray([20_000_000, 20_000_001, 2 ** 31 - 1], jnp.int32)
    np.testing.assert_array_equal(np.asarray(jax.jit(schedule)(steps)), [1.0, 0.5, 0.5])
    assert float(schedule(20_000_000)) == 1.0


@pytest.mark.parametrize("build,argument", [
    (lambda: S.constant(-0.1), "value"),
    (lambda: S.constant(float("inf")), "value must be >= 0 and finite"),
    (lambda: S.cosine_decay(float("nan"), 10), "init_value"),
    (lambda: S.warmup_cosine_decay(0.0, float("inf"), 5, 10), "peak_value must be >= 0 and finite"),
    (lambda: S.exponential_decay(-0.1, 10, 0.5), "init_value"),
    (lambda: S.exponential_decay(0.1, 0, 0.5), "transition_steps"),
    (lambda: S.exponential_decay(0.1, 10, 0.0), "decay_rate"),
    (lambda: S.exponential_decay(0.1, 10, float("inf"), end_value=1.0),
     "decay_rate must be > 0 and finite"),
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
    (lambda: S.cosine_decay(0.1, 10, exponent=0.0), "exponent"),
    (lambda: S.warmup_cosine_decay(0.0, 0.1, 2, 10, exponent=-1.0), "exponent"),
    (lambda: S.linear(0.1, 0.01, 0), "linear: transition_steps"),
    (lambda: S.linear(-0.1, 0.01, 10), "linear: init_value"),
    (lambda: S.linear(0.1, float("nan"), 10), "linear: end_value"),
    (lambda: S.linear(0.1, 0.01, 10, transition_begin=-1), "linear: transition_begin"),
    (lambda: S.polynomial(1.0, 0.0, 0.0, 10), "polynomial: power"),
    (lambda: S.polynomial(1.0, 0.0, -1.0, 10), "polynomial: power"),
    (lambda: S.polynomial(1.0, 0.0, 2.0, -5), "polynomial: transition_steps"),
    (lambda: S.polynomial(1.0, 0.0, 2.0, 5, transition_begin=-2), "transition_begin"),
    (lambda: S.warmup_constant(0.0, 0.1, -1), "warmup_constant: warmup_steps"),
    (lambda: S.warmup_constant(0.0, -0.1, 5), "warmup_constant: peak_value"),
    (lambda: S.one_cycle(0, 0.1), "one_cycle: transition_steps"),
    (lambda: S.one_cycle(10, -0.1), "one_cycle: peak_value"),
    (lambda: S.one_cycle(10, 0.1, pct_start=0.0), "one_cycle: pct_start"),
    (lambda: S.one_cycle(10, 0.1, pct_start=1.0), "one_cycle: pct_start"),
    (lambda: S.one_cycle(10, 0.1, pct_start=1.5), "one_cycle: pct_start"),
    (lambda: S.one_cycle(10, 0.1, div_factor=0.0), "one_cycle: div_factor"),
    (lambda: S.one_cycle(10, 0.1, final_div_factor=-1.0), "one_cycle: final_div_factor"),
    (lambda: S.join_schedules([], []), "join_schedules: schedules"),
    (lambda: S.join_schedules([S.constant(0.1), S.constant(0.2)], []), "boundaries needs"),
    (lambda: S.join_schedules([S.constant(0.1)], [3]), "boundaries needs"),
    (lambda: S.join_schedules([S.constant(0.1)] * 3, [10, 5]), "strictly increasing"),
    (lambda: S.join_schedules([S.constant(0.1)] * 3, [5, 5]), "strictly increasing"),
    (lambda: S.join_schedules([S.constant(0.1)] * 2, [-1]), r"boundaries\[0\]"),
    (lambda: S.sgdr([]), "sgdr: cycles"),
    (lambda: S.sgdr([dict(init_value=0.0, peak_value=0.1, warmup_steps=5, decay_steps=5)]),
     r"cycles\[0\].*decay_steps"),
    (lambda: S.sgdr([SGDR_CYCLES[0], dict(SGDR_CYCLES[1], peak_value=-1.0)]),
     r"cycles\[1\].*peak_value"),
    (lambda: S.cosine_restarts(0.1, 0), "cosine_restarts: period"),
    (lambda: S.cosine_restarts(0.1, 10, period_multiplier=0), "period_multiplier"),
    (lambda: S.cosine_restarts(0.1, 10, end_value=-0.01), "cosine_restarts: end_value"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_schedule_arguments(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


@pytest.mark.parametrize("build,argument", [
    # a float step count is the wrong kind (a TypeError), even when it is a whole number
    (lambda: S.exponential_decay(0.1, 2.5, 0.5), "transition_steps"),
    (lambda: S.linear(0.1, 0.0, 10.0), "linear: transition_steps"),
    (lambda: S.linear("0.1", 0.0, 10), "linear: init_value"),
    (lambda: S.cosine_decay(1.0, "10"), "cosine_decay: decay_steps"),
    (lambda: S.one_cycle(10, 0.1, pct_start="0.3"), "one_cycle: pct_start"),
    (lambda: S.join_schedules([S.constant(0.1), 0.5], [3]), r"schedules\[1\]"),
    (lambda: S.join_schedules([S.constant(0.1)] * 2, [2.5]), r"boundaries\[0\]"),
    (lambda: S.piecewise_constant([True], [0.1, 0.2]), r"boundaries\[0\]"),
    (lambda: S.sgdr([(0.0, 0.1, 5, 50)]), r"sgdr: cycles\[0\]"),
    (lambda: S.sgdr([dict(init_value=0.0, peak=0.1, warmup_steps=5, decay_steps=50)]),
     r"sgdr: cycles\[0\].*peak"),
    (lambda: S.cosine_restarts(0.1, 10, period_multiplier=1.5), "period_multiplier"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_schedule_arguments_of_the_wrong_kind(build, argument):
    with pytest.raises(TypeError, match=argument):
        build()


OPTAX_PAIRS = {
    "constant": (lambda: S.constant(0.3), lambda o: o.constant_schedule(0.3)),
    "exponential": (
        lambda: S.exponential_decay(0.1, 7, 0.5, transition_begin=5, staircase=True,
                                    end_value=0.01),
        lambda o: o.exponential_decay(0.1, 7, 0.5, transition_begin=5, staircase=True,
                                      end_value=0.01)),
    "piecewise": (lambda: S.piecewise_constant([10, 25], [0.1, 0.05, 0.0125]),
                  lambda o: o.piecewise_constant_schedule(0.1, {10: 0.5, 25: 0.25})),
    "cosine": (lambda: S.cosine_decay(0.1, 30, end_value=0.02, exponent=2.0),
               lambda o: o.cosine_decay_schedule(0.1, 30, alpha=0.2, exponent=2.0)),
    "warmup_cosine": (
        lambda: S.warmup_cosine_decay(0.01, 0.1, 8, 40, end_value=0.001, exponent=0.7),
        lambda o: o.warmup_cosine_decay_schedule(0.01, 0.1, 8, 40, end_value=0.001,
                                                 exponent=0.7)),
    "linear": (lambda: S.linear(0.1, 0.01, 20, transition_begin=5),
               lambda o: o.linear_schedule(0.1, 0.01, 20, 5)),
    "polynomial": (lambda: S.polynomial(0.1, 0.01, 2.5, 20, transition_begin=5),
                   lambda o: o.polynomial_schedule(0.1, 0.01, 2.5, 20, 5)),
    "warmup_constant": (lambda: S.warmup_constant(0.0, 0.1, 7),
                        lambda o: o.warmup_constant_schedule(0.0, 0.1, 7)),
    "one_cycle": (lambda: S.one_cycle(37, 0.2, pct_start=0.25, div_factor=10.0,
                                      final_div_factor=100.0),
                  lambda o: o.cosine_onecycle_schedule(37, 0.2, 0.25, 10.0, 100.0)),
    "join": (lambda: S.join_schedules([S.linear(0.0, 0.1, 5), S.constant(0.1),
                                       S.cosine_decay(0.1, 20)], [5, 12]),
             lambda o: o.join_schedules([o.linear_schedule(0.0, 0.1, 5), o.constant_schedule(0.1),
                                         o.cosine_decay_schedule(0.1, 20)], [5, 12])),
    "sgdr": (lambda: S.sgdr(SGDR_CYCLES), lambda o: o.sgdr_schedule(SGDR_CYCLES)),
    "cosine_restarts": (
        lambda: S.cosine_restarts(0.1, 10, period_multiplier=2, end_value=0.01),
        lambda o: o.sgdr_schedule([dict(init_value=0.1, peak_value=0.1, warmup_steps=0,
                                        decay_steps=10 * 2 ** k, end_value=0.01)
                                   for k in range(5)])),
}


@pytest.mark.parametrize("name", sorted(OPTAX_PAIRS))
def test_schedules_equal_optax(name):
    optax = pytest.importorskip("optax")
    ours, theirs = OPTAX_PAIRS[name]
    with jax.enable_x64(True):   # optax computes in float64 for int64 steps
        steps = jnp.arange(0, 120, dtype=jnp.int64)
        want = np.asarray(jax.vmap(theirs(optax))(steps))
        np.testing.assert_allclose(np.asarray(jax.jit(ours())(steps)), want, rtol=1e-12, atol=0)


def test_cosine_restarts_equal_torch_warm_restarts():
    torch = pytest.importorskip("torch")
    parameter = torch.zeros(1, requires_grad=True)
    for period, multiplier in ((10, 1), (4, 2)):
        optimizer = torch.optim.SGD([parameter], lr=0.1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=period, T_mult=multiplier, eta_min=0.01)
        want = []
        for _ in range(70):
            want.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        schedule = S.cosine_restarts(0.1, period, period_multiplier=multiplier, end_value=0.01)
        with jax.enable_x64(True):
            got = jax.jit(schedule)(jnp.arange(70, dtype=jnp.int32))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=0)


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
    # t − t₀ of two rounded float32 numbers would be off by ~64 here
    "linear_late_begin": (
        lambda: S.linear(1.0, 0.0, 100, transition_begin=2 ** 30 + 7),
        lambda t: np_polynomial(t, 1.0, 0.0, 1, 100, 2 ** 30 + 7),
        steps_around(*(2 ** 30 + 7 + k for k in (0, 37, 99, 100))), 1e-6),
    "polynomial_late_begin": (
        lambda: S.polynomial(1.0, 0.1, 2.0, 50, transition_begin=BIG_BEGIN),
        lambda t: np_polynomial(t, 1.0, 0.1, 2.0, 50, BIG_BEGIN),
        steps_around(BIG_BEGIN, BIG_BEGIN + 25, BIG_BEGIN + 50), 1e-6),
    "join_big_boundary": (
        lambda: S.join_schedules([S.constant(1.0), S.linear(1.0, 0.0, 10)], [BIG_BEGIN]),
        lambda t: 1.0 if t < BIG_BEGIN else np_polynomial(t - BIG_BEGIN, 1.0, 0.0, 1, 10),
        steps_around(BIG_BEGIN, BIG_BEGIN + 3, BIG_BEGIN + 10), 1e-6),
    "one_cycle_long": (
        lambda: S.one_cycle(2 ** 30 + 7, 1.0),
        lambda t: np_one_cycle(t, 2 ** 30 + 7, 1.0),
        steps_around(int(0.3 * (2 ** 30 + 7)), 2 ** 30 + 7), 1e-6),
    # restarts every 1000 steps near 2**30: the position in the cycle must be exact
    "cosine_restarts_late": (
        lambda: S.cosine_restarts(1.0, 1000, end_value=0.1),
        lambda t: np_restarts(t, 1.0, 1000, 1, 0.1),
        steps_around(*(1000 * (2 ** 20 + k) for k in (0, 1, 999))), 1e-6),
    # doubling cycles 3 · 2**k: the last one that starts below 2**31 ends past it
    "cosine_restarts_doubling": (
        lambda: S.cosine_restarts(1.0, 3, period_multiplier=2, end_value=0.1),
        lambda t: np_restarts(t, 1.0, 3, 2, 0.1),
        steps_around(*(3 * (2 ** k - 1) for k in (2, 24, 25, 29))), 1e-6),
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
    (lambda: S.linear(1.0, 0.5, 2 ** 31 + 100),
     lambda t: np_polynomial(t, 1.0, 0.5, 1, 2 ** 31 + 100)),
    (lambda: S.join_schedules([S.constant(0.5), S.constant(1.0)], [2 ** 31 + 100]), lambda t: 0.5),
    (lambda: S.cosine_restarts(1.0, 2 ** 30, period_multiplier=2),
     lambda t: np_restarts(t, 1.0, 2 ** 30, 2)),
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
        np.testing.assert_allclose(float(schedule(0)),
                                   np_warmup_cosine(0, 0.5, 1.0, warmup, 20, 0.1))


def test_decay_rate_close_to_one_keeps_float32_accuracy_over_many_steps():
    """decay_rate ** t with decay_rate rounded to float32 first is 1e-3 off at t = 1e5."""
    schedule = S.exponential_decay(1.0, 1, 0.99999)
    steps = np.array([1, 1000, 100_000, 1_000_000])
    want = np.exp(steps * math.log(0.99999))
    for got in (schedule(jnp.asarray(steps, jnp.int32)), jax.jit(schedule)(jnp.asarray(steps))):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6)


def test_restart_period_beyond_int32_never_restarts_an_int32_step():
    # integer steps only: float32 rounds both 2**31 − 1 and this period to 2**31
    schedule = S.cosine_restarts(1.0, 2 ** 31 + 100)
    steps = [0, 7, 2 ** 30, 2 ** 31 - 1]
    want = [np_restarts(t, 1.0, 2 ** 31 + 100) for t in steps]
    for got in (schedule(jnp.asarray(steps, jnp.int32)),
                jax.jit(schedule)(jnp.asarray(steps, jnp.int32))):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)
    assert float(schedule(2 ** 31 - 1)) < 1e-7
