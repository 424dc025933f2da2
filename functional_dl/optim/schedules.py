"""Learning-rate schedules: functions ``step -> rate``.

``step`` is the number of updates already made (the optimizer's int32 count before it is
incremented), so the first update uses ``schedule(0)``, as in optax and in PyTorch's
``torch.optim.lr_scheduler``.  Each schedule is a pure function of ``step``: it works on a
Python int or an int32 array, under ``jit`` and ``vmap``, and returns a float array of the
default float dtype (float64 when x64 is enabled).  Arguments are checked when the schedule
is built (ValueError naming a value out of range, TypeError naming one of the wrong kind);
rates are never negative.

Integer steps are counted in integers: float32 holds integers exactly only up to ``2**24``,
while an int32 step reaches ``2**31 − 1``.  Differences of steps, stair and cycle indices and
the piecewise boundaries are exact for every step of the step's dtype, and only the (bounded)
results are converted to floats.  Steps before 0 count as 0.  A transition ends exactly on
its end value: ``cosine_decay(1.0, 10)(10)`` is ``0.0``, not ``cos(π/2)`` rounded.

Composite schedules are built with ``join_schedules``, which hands each piece the step
counted from its own boundary, as optax's ``join_schedules`` does.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from functional_dl._types import Array, Schedule
from functional_dl.checks import (default_float_dtype, non_negative, positive, real_in,
                                  whole_number)
from functional_dl.optim import _schedule_math as M

__all__ = [
    "constant", "linear", "polynomial", "warmup_constant", "exponential_decay",
    "cosine_decay", "warmup_cosine_decay", "one_cycle", "piecewise_constant",
    "join_schedules", "sgdr", "cosine_restarts",
]


def constant(value: float) -> Schedule:
    """``rate(t) = value`` for every step.  optax: ``constant_schedule(value)``."""
    non_negative("constant: value", value)

    def schedule(step) -> Array:
        return jnp.full(jnp.shape(step), value, default_float_dtype())

    return schedule


def polynomial(init_value: float, end_value: float, power: float, transition_steps: int, *,
               transition_begin: int = 0) -> Schedule:
    """Polynomial annealing from ``init_value`` to ``end_value``.

    With ``I = init_value``, ``E = end_value``, ``B = transition_begin``,
    ``T = transition_steps`` and ``p = power``::

        s(t) = (B + T − clip(t, B, B + T)) / T          (1 before B, 0 from B + T on)
        rate(t) = I · s(t)^p + E · (1 − s(t)^p)

    i.e. ``rate = (I − E)(1 − (t − B)/T)^p + E`` on the transition, ``I`` before it and
    exactly ``E`` from ``B + T`` on.  optax: ``polynomial_schedule(init_value, end_value,
    power, transition_steps, transition_begin)`` (for ``transition_steps >= 1``; optax
    treats ``0`` as "hold ``init_value``", here it is an error).
    """
    _check_values("polynomial", init_value=init_value, end_value=end_value)
    positive("polynomial: power", power)
    whole_number("polynomial: transition_steps", transition_steps, minimum=1)
    whole_number("polynomial: transition_begin", transition_begin, minimum=0)
    return _anneal(init_value, end_value, power, transition_begin,
                   transition_begin + transition_steps)


def linear(init_value: float, end_value: float, transition_steps: int, *,
           transition_begin: int = 0) -> Schedule:
    """``rate(t) = I + (E − I) · clip(t − B, 0, T) / T``: ``polynomial`` with ``power = 1``.

    optax: ``linear_schedule(init_value, end_value, transition_steps, transition_begin)``.
    """
    _check_values("linear", init_value=init_value, end_value=end_value)
    whole_number("linear: transition_steps", transition_steps, minimum=1)
    whole_number("linear: transition_begin", transition_begin, minimum=0)
    return _anneal(init_value, end_value, 1, transition_begin,
                   transition_begin + transition_steps)


def _anneal(init_value, end_value, power, begin: int, end: int) -> Schedule:
    """The polynomial transition, arguments already checked."""

    def schedule(step) -> Array:
        return M.blend(init_value, end_value, *M.fractions(step, begin, end), power)

    return schedule


def warmup_constant(init_value: float, peak_value: float, warmup_steps: int) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps``, then
    ``peak_value``: ``rate(t) = I + (P − I) · min(t, W) / W`` (``P`` from the start if
    ``W = 0``).  optax: ``warmup_constant_schedule(init_value, peak_value, warmup_steps)``
    for ``warmup_steps >= 1``."""
    _check_values("warmup_constant", init_value=init_value, peak_value=peak_value)
    whole_number("warmup_constant: warmup_steps", warmup_steps, minimum=0)
    if warmup_steps == 0:
        return constant(peak_value)
    return _anneal(init_value, peak_value, 1, 0, warmup_steps)


def exponential_decay(init_value: float, transition_steps: int, decay_rate: float, *,
                      transition_begin: int = 0, staircase: bool = False,
                      end_value: float | None = None) -> Schedule:
    """``rate(t) = init_value · decay_rate^(max(t − transition_begin, 0) / transition_steps)``.

    With ``staircase=True`` the exponent is rounded down (the rate drops every
    ``transition_steps`` steps).  ``end_value`` bounds the rate: a floor when
    ``decay_rate < 1``, a ceiling when ``decay_rate > 1`` (required then).  optax:
    ``exponential_decay`` with the same arguments.

    For integer steps the exponent is ``q + r / T`` with ``(q, r) = divmod(max(t − t₀, 0), T)``
    computed in integers: the stair ``q`` is exact for every step, and the float exponent
    is ``q + r / T`` rounded once (not a quotient of rounded steps).
    """
    non_negative("exponential_decay: init_value", init_value)
    whole_number("exponential_decay: transition_steps", transition_steps, minimum=1)
    positive("exponential_decay: decay_rate", decay_rate)
    if decay_rate > 1 and end_value is None:
        raise ValueError(f"exponential_decay: a growing schedule (decay_rate={decay_rate} > 1) "
                         "needs end_value as its ceiling; without one the rate overflows to "
                         "inf (and inf times a zero gradient is NaN)")
    whole_number("exponential_decay: transition_begin", transition_begin, minimum=0)
    if end_value is not None:
        non_negative("exponential_decay: end_value", end_value)

    def schedule(step) -> Array:
        float_dtype = default_float_dtype()
        elapsed = M.steps_since(step, transition_begin)
        if jnp.issubdtype(elapsed.dtype, jnp.integer):
            if transition_steps > np.iinfo(elapsed.dtype).max:
                stairs, remainder = jnp.zeros_like(elapsed), elapsed
            else:
                period = np.asarray(transition_steps, elapsed.dtype)
                stairs, remainder = elapsed // period, elapsed % period
            exponent = stairs.astype(float_dtype)
            if not staircase:
                exponent = exponent + remainder.astype(float_dtype) / float(transition_steps)
        else:
            exponent = elapsed / float(transition_steps)
            if staircase:
                exponent = jnp.floor(exponent)
        rate = init_value * M.power(decay_rate, exponent)
        if end_value is not None:
            rate = jnp.maximum(rate, end_value) if decay_rate < 1 else jnp.minimum(rate, end_value)
        return rate

    return schedule


def cosine_decay(init_value: float, decay_steps: int, *, end_value: float = 0.0,
                 exponent: float = 1.0) -> Schedule:
    """Cosine annealing (Loshchilov & Hutter 2017, SGDR, without restarts).

    With ``r₀ = init_value``, ``e = end_value``, ``T = decay_steps``, ``p = exponent``::

        c(t) = ½ (1 + cos(π · min(t, T) / T))  =  sin²(π/2 · (T − min(t, T)) / T)
        rate(t) = r₀ · c(t)^p + e · (1 − c(t)^p)

    The second form of ``c`` is the one computed: it is exactly 0 from ``t = T`` on, so the
    rate ends exactly on ``end_value``.  ``end_value > init_value`` anneals upwards.
    optax: ``cosine_decay_schedule(init_value, decay_steps, alpha, exponent)`` is
    ``end_value = alpha · init_value``.
    """
    _check_values("cosine_decay", init_value=init_value, end_value=end_value)
    whole_number("cosine_decay: decay_steps", decay_steps, minimum=1)
    positive("cosine_decay: exponent", exponent)

    def schedule(step) -> Array:
        weights = M.cosine_fractions(*M.fractions(step, 0, decay_steps))
        return M.blend(init_value, end_value, *weights, exponent)

    return schedule


def warmup_cosine_decay(init_value: float, peak_value: float, warmup_steps: int,
                        decay_steps: int, *, end_value: float = 0.0,
                        exponent: float = 1.0) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps`` steps, then
    cosine decay from ``peak_value`` to ``end_value``; ``decay_steps`` is the total length
    (warm-up included), as in optax's ``warmup_cosine_decay_schedule`` (same arguments).

    With ``W = warmup_steps``, ``D = decay_steps``: ``join_schedules([linear(r₀, r_peak, W),
    cosine_decay(r_peak, D − W, end_value=e, exponent=p)], [W])``, i.e.::

        rate(t) = r₀ + (r_peak − r₀) · t / W                                    t < W
        rate(t) = e + (r_peak − e) · [½ (1 + cos(π · min(t − W, D − W) / (D − W)))]^p
                                                                               t ≥ W
    """
    _check_values("warmup_cosine_decay", init_value=init_value, peak_value=peak_value,
                  end_value=end_value)
    whole_number("warmup_cosine_decay: warmup_steps", warmup_steps, minimum=0)
    whole_number("warmup_cosine_decay: decay_steps", decay_steps, minimum=1)
    positive("warmup_cosine_decay: exponent", exponent)
    if decay_steps <= warmup_steps:
        raise ValueError(f"warmup_cosine_decay: decay_steps (the total length) must exceed "
                         f"warmup_steps, got decay_steps={decay_steps}, "
                         f"warmup_steps={warmup_steps}")
    decay = cosine_decay(peak_value, decay_steps - warmup_steps, end_value=end_value,
                         exponent=exponent)
    if warmup_steps == 0:
        return decay
    return join_schedules([_anneal(init_value, peak_value, 1, 0, warmup_steps), decay],
                          [warmup_steps])


def one_cycle(transition_steps: int, peak_value: float, *, pct_start: float = 0.3,
              div_factor: float = 25.0, final_div_factor: float = 1e4) -> Schedule:
    """The one-cycle policy with cosine phases (Smith & Topin 2017, "Super-convergence").

    With ``T = transition_steps``, ``W = ⌊pct_start · T⌋`` (the product in float64),
    ``r_low = peak_value / div_factor`` and ``r_end = r_low / final_div_factor``: a cosine
    rise from ``r_low`` to ``peak_value`` over ``[0, W]``, then a cosine fall to ``r_end`` over
    ``[W, T]``, and ``r_end`` after::

        join_schedules([cosine_decay(r_low, W, end_value=peak_value),
                        cosine_decay(peak_value, T − W, end_value=r_end)], [W])

    (the rise is left out when ``W = 0``).  optax: ``cosine_onecycle_schedule(
    transition_steps, peak_value, pct_start, div_factor, final_div_factor)``; the phases
    reach ``peak_value`` and ``r_end`` exactly at ``W`` and ``T``.  PyTorch's ``OneCycleLR``
    ends each phase one step earlier (at ``pct_start · T − 1`` and ``T − 1``).
    """
    whole_number("one_cycle: transition_steps", transition_steps, minimum=1)
    non_negative("one_cycle: peak_value", peak_value)
    real_in("one_cycle: pct_start", pct_start, 0.0, 1.0, low_closed=False, high_closed=False)
    positive("one_cycle: div_factor", div_factor)
    positive("one_cycle: final_div_factor", final_div_factor)
    low = peak_value / div_factor
    warmup_steps = int(pct_start * transition_steps)
    fall = cosine_decay(peak_value, transition_steps - warmup_steps,
                        end_value=low / final_div_factor)
    if warmup_steps == 0:
        return fall
    return join_schedules([cosine_decay(low, warmup_steps, end_value=peak_value), fall],
                          [warmup_steps])


def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """``rate(t) = values[i]`` with ``i`` the number of boundaries ``≤ t``.

    ``values[0]`` holds before ``boundaries[0]``, ``values[k]`` from ``boundaries[k-1]``
    (inclusive) on.  Needs ``len(values) == len(boundaries) + 1`` and strictly increasing
    integer boundaries ``>= 0``.  (optax's ``piecewise_constant_schedule`` takes
    multiplicative scales; its ``values`` are the running products.)
    """
    boundaries = _check_boundaries("piecewise_constant", boundaries)
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"piecewise_constant: values needs len(boundaries) + 1 = "
                         f"{len(boundaries) + 1} entries, got {len(values)}")
    for k, v in enumerate(values):
        non_negative(f"piecewise_constant: values[{k}]", v)
    values = [float(v) for v in values]

    def schedule(step) -> Array:
        index = M.count_reached(step, boundaries)
        return jnp.asarray(values, default_float_dtype())[index]

    return schedule


def join_schedules(schedules: Sequence[Callable], boundaries: Sequence[int]) -> Schedule:
    """One schedule after another: ``schedules[k]`` rules from ``boundaries[k-1]`` (inclusive)
    to ``boundaries[k]`` and sees the step counted from its own boundary::

        rate(t) = schedules[0](t)                       t < b₀
        rate(t) = schedules[k](t − b_{k−1})              b_{k−1} ≤ t < b_k

    Needs ``len(boundaries) == len(schedules) − 1`` and strictly increasing integer
    boundaries ``>= 0``; the pieces may be any functions ``step -> rate`` (optax's
    included), and ``schedules[0]`` sees a negative step as it is.  The comparisons with the boundaries and ``t − b`` are exact integers for
    integer steps.  optax: ``join_schedules(schedules, boundaries)``.
    """
    schedules = list(schedules)
    if not schedules:
        raise ValueError("join_schedules: schedules must hold at least one schedule, got none")
    for k, piece in enumerate(schedules):
        if not callable(piece):
            raise TypeError(f"join_schedules: schedules[{k}] must be a schedule step -> "
                            f"value, got {type(piece).__name__}")
    boundaries = _check_boundaries("join_schedules", boundaries)
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(f"join_schedules: boundaries needs len(schedules) − 1 = "
                         f"{len(schedules) - 1} entries, got {len(boundaries)}")

    def schedule(step) -> Array:
        t = M.as_step(step)
        rate = jnp.broadcast_to(M.as_float(schedules[0](t)), t.shape)
        for boundary, piece in zip(boundaries, schedules[1:]):
            if boundary > M.step_limit(t):  # never reached by a step of this dtype
                break
            reached = M.count_reached(t, [boundary]) == 1
            rate = jnp.where(reached, M.as_float(piece(M.steps_since(t, boundary))), rate)
        return rate

    return schedule


def sgdr(cycles: Sequence[Mapping]) -> Schedule:
    """SGD with warm restarts (Loshchilov & Hutter 2017): one ``warmup_cosine_decay`` per
    cycle, joined end to end.

    ``cycles[k]`` holds the arguments of ``warmup_cosine_decay`` (``init_value``,
    ``peak_value``, ``warmup_steps``, ``decay_steps``, optional ``end_value``, ``exponent``);
    cycle ``k`` lasts its ``decay_steps`` and starts where cycle ``k − 1`` ended::

        join_schedules([warmup_cosine_decay(**c) for c in cycles],
                       cumulative sums of the decay_steps, the last left out)

    The last cycle's end value holds after it.  optax: ``sgdr_schedule(cycles)`` with the
    same dicts.  For endless cycles of a fixed or growing length see ``cosine_restarts``.
    """
    cycles = list(cycles)
    if not cycles:
        raise ValueError("sgdr: cycles must hold at least one cycle, got none")
    pieces, boundaries, start = [], [], 0
    for k, cycle in enumerate(cycles):
        if not isinstance(cycle, Mapping):
            raise TypeError(f"sgdr: cycles[{k}] must be a dict of warmup_cosine_decay's "
                            f"arguments, got {type(cycle).__name__}")
        try:
            pieces.append(warmup_cosine_decay(**cycle))
        except (TypeError, ValueError) as error:
            raise type(error)(f"sgdr: cycles[{k}]: {error}") from error
        start += cycle["decay_steps"]
        boundaries.append(start)
    return join_schedules(pieces, boundaries[:-1])


def cosine_restarts(init_value: float, period: int, *, period_multiplier: int = 1,
                    end_value: float = 0.0) -> Schedule:
    """Endless cosine cycles with warm restarts (Loshchilov & Hutter 2017, SGDR).

    Cycle ``k`` lasts ``T_k = period · period_multiplierᵏ`` steps; with ``τ`` the steps
    since the current cycle began::

        rate(t) = e + (r₀ − e) · ½ (1 + cos(π τ / T_k))

    so each cycle starts at ``init_value`` and falls towards ``end_value``, which the step
    before the restart nearly reaches.  PyTorch: ``CosineAnnealingWarmRestarts(optimizer,
    T_0=period, T_mult=period_multiplier, eta_min=end_value)`` with learning rate
    ``init_value`` (one scheduler step per update).  optax: the first ``n`` cycles are
    ``sgdr([dict(init_value=r₀, peak_value=r₀, warmup_steps=0, decay_steps=T_k,
    end_value=e) for k in range(n)])``.
    """
    _check_values("cosine_restarts", init_value=init_value, end_value=end_value)
    whole_number("cosine_restarts: period", period, minimum=1)
    whole_number("cosine_restarts: period_multiplier", period_multiplier, minimum=1)

    def schedule(step) -> Array:
        weights = M.cosine_fractions(*M.restart_fractions(step, period, period_multiplier))
        return M.blend(init_value, end_value, *weights)

    return schedule


def _check_values(owner: str, **values) -> None:
    """Every rate finite and ``>= 0``."""
    for name, value in values.items():
        non_negative(f"{owner}: {name}", value)


def _check_boundaries(owner: str, boundaries: Sequence[int]) -> list[int]:
    """Integers ``>= 0``, strictly increasing."""
    checked = [whole_number(f"{owner}: boundaries[{k}]", b, minimum=0)
               for k, b in enumerate(boundaries)]
    if any(b1 >= b2 for b1, b2 in zip(checked, checked[1:])):
        raise ValueError(f"{owner}: boundaries must be strictly increasing, got {checked}")
    return checked
