"""Learning-rate schedules: functions ``step -> rate``.

``step`` is the number of updates already made (the optimizer's int32 count before it is
incremented), so the first update uses ``schedule(0)``, as in optax and in PyTorch's
``torch.optim.lr_scheduler``.  Each schedule is a pure function of ``step``: it works on a
Python int or an int32 array, under ``jit`` and ``vmap``, and returns a float array of the
default float dtype (float64 when x64 is enabled).  Arguments are checked when the schedule
is built; rates are never negative.

Integer steps are counted in integers: float32 holds integers exactly only up to ``2**24``,
while an int32 step reaches ``2**31 − 1``.  Differences of steps, stair indices
``⌊(t − t₀) / T⌋`` and the piecewise boundaries are exact for every step of the step's
dtype, and only the (bounded) results are converted to floats.  Steps before 0 count as 0.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl._checks import check_positive
from functional_dl._types import Array, Schedule
from functional_dl.optim._tree import check_finite_non_negative


def _float_dtype():
    """float64 when x64 is enabled, else float32."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _as_float(step) -> Array:
    return jnp.asarray(step).astype(_float_dtype())


def _steps_since(step, start: int, stop: int | None = None) -> Array:
    """``clip(t, start, stop) − start``: an exact integer for integer steps, else a float.

    ``start`` and ``stop`` are Python ints that may exceed the step dtype's range (a point the
    step can never reach).
    """
    t = jnp.asarray(step)
    if not jnp.issubdtype(t.dtype, jnp.integer):  # Python floats: no int32 overflow
        t = _as_float(t)
        return jnp.clip(t, float(start), None if stop is None else float(stop)) - float(start)
    largest = int(np.iinfo(t.dtype).max)
    if start > largest:
        return jnp.zeros_like(t)
    upper = largest if stop is None else min(stop, largest)
    low, high = (np.asarray(v, t.dtype) for v in (start, upper))
    return jnp.clip(t, low, high) - low


def _fraction(step, start: int, stop: int) -> Array:
    """``(clip(t, start, stop) − start) / (stop − start)`` in the float dtype, from an exact
    integer count for integer steps (0 when ``stop == start``)."""
    elapsed = _steps_since(step, start, stop).astype(_float_dtype())
    return elapsed / float(max(stop - start, 1))


def _power(base: float, exponent: Array) -> Array:
    """``base ** exponent`` for a Python float ``base > 0``, accurate in the exponent's dtype.

    ``base`` exactly representable there (0.5, 0.25, ...): the power itself, so exact results
    stay exact.  Otherwise ``exp(exponent · log base)`` with the logarithm in float64: the
    power of a base rounded to float32 is off by ``exponent`` times the rounding (0.99999 →
    1e-3 relative at exponent 10⁵), this by ~6e-8 per e-fold of decay.
    """
    if float(np.asarray(base, exponent.dtype)) == base:
        return jnp.power(np.asarray(base, exponent.dtype), exponent)
    return jnp.exp(exponent * math.log(base))


def _half_cosine(progress: Array) -> Array:
    """``½ (1 + cos(π x))`` written as ``cos²(π x / 2)``: no cancellation near ``x = 1``."""
    return jnp.square(jnp.cos(0.5 * math.pi * progress))


def _check_step_count(name: str, value, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not float(value).is_integer() or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def constant(value: float) -> Schedule:
    """``rate(t) = value`` for every step."""
    check_finite_non_negative("constant: value", value)

    def schedule(step) -> Array:
        return jnp.full(jnp.shape(step), value, _as_float(step).dtype)

    return schedule


def exponential_decay(init_value: float, transition_steps: int, decay_rate: float, *,
                      transition_begin: int = 0, staircase: bool = False,
                      end_value: float | None = None) -> Schedule:
    """``rate(t) = init_value · decay_rate^(max(t − transition_begin, 0) / transition_steps)``.

    With ``staircase=True`` the exponent is rounded down (the rate drops every
    ``transition_steps`` steps).  ``end_value`` bounds the rate: a floor when
    ``decay_rate < 1``, a ceiling when ``decay_rate > 1`` (required then).

    For integer steps the exponent is ``q + r / T`` with ``(q, r) = divmod(max(t − t₀, 0), T)``
    computed in integers: the stair ``q`` is exact for every step, and the float exponent
    is ``q + r / T`` rounded once (not a quotient of rounded steps).
    """
    check_finite_non_negative("exponential_decay: init_value", init_value)
    _check_step_count("exponential_decay: transition_steps", transition_steps, allow_zero=False)
    check_positive("exponential_decay: decay_rate", decay_rate)
    if not math.isfinite(decay_rate):
        raise ValueError(f"exponential_decay: decay_rate must be finite, got {decay_rate}")
    if decay_rate > 1 and end_value is None:
        raise ValueError(f"exponential_decay: a growing schedule (decay_rate={decay_rate} > 1) "
                         "needs end_value as its ceiling; without one the rate overflows to "
                         "inf (and inf times a zero gradient is NaN)")
    _check_step_count("exponential_decay: transition_begin", transition_begin, allow_zero=True)
    if end_value is not None:
        check_finite_non_negative("exponential_decay: end_value", end_value)

    def schedule(step) -> Array:
        float_dtype = _float_dtype()
        elapsed = _steps_since(step, transition_begin)
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
        rate = init_value * _power(decay_rate, exponent)
        if end_value is not None:
            rate = jnp.maximum(rate, end_value) if decay_rate < 1 else jnp.minimum(rate, end_value)
        return rate

    return schedule


def cosine_decay(init_value: float, decay_steps: int, *, end_value: float = 0.0) -> Schedule:
    """``rate(t) = e + (r₀ − e) · ½ (1 + cos(π · min(t, T) / T))`` (Loshchilov & Hutter 2017,
    SGDR, without restarts), with ``r₀ = init_value``, ``e = end_value``, ``T = decay_steps``.

    optax's ``cosine_decay_schedule(init_value, decay_steps, alpha)`` is
    ``end_value = alpha · init_value``.
    """
    check_finite_non_negative("cosine_decay: init_value", init_value)
    _check_step_count("cosine_decay: decay_steps", decay_steps, allow_zero=False)
    check_finite_non_negative("cosine_decay: end_value", end_value)

    def schedule(step) -> Array:
        return end_value + (init_value - end_value) * _half_cosine(_fraction(step, 0, decay_steps))

    return schedule


def warmup_cosine_decay(init_value: float, peak_value: float, warmup_steps: int,
                        decay_steps: int, *, end_value: float = 0.0) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps`` steps, then
    cosine decay from ``peak_value`` to ``end_value``; ``decay_steps`` is the total length
    (warm-up included), as in optax's ``warmup_cosine_decay_schedule``.

    With ``W = warmup_steps``, ``D = decay_steps``::

        rate(t) = r₀ + (r_peak − r₀) · t / W                                   t < W
        rate(t) = e + (r_peak − e) · ½ (1 + cos(π · min(t − W, D − W) / (D − W)))  t ≥ W
    """
    for name, value in (("init_value", init_value), ("peak_value", peak_value),
                        ("end_value", end_value)):
        check_finite_non_negative(f"warmup_cosine_decay: {name}", value)
    _check_step_count("warmup_cosine_decay: warmup_steps", warmup_steps, allow_zero=True)
    _check_step_count("warmup_cosine_decay: decay_steps", decay_steps, allow_zero=False)
    if decay_steps <= warmup_steps:
        raise ValueError(f"warmup_cosine_decay: decay_steps (the total length) must exceed "
                         f"warmup_steps, got decay_steps={decay_steps}, "
                         f"warmup_steps={warmup_steps}")

    def schedule(step) -> Array:
        warmed = _fraction(step, 0, warmup_steps)                      # min(max(t, 0), W) / W
        warmup = init_value + (peak_value - init_value) * warmed
        decay = end_value + (peak_value - end_value) * _half_cosine(
            _fraction(step, warmup_steps, decay_steps))
        # on the clipped step, so t < 0 counts as 0 (and W = 0 never warms up); if W > 2**24
        # rounds (W − 1) / W up to 1, both branches give peak_value there to float precision
        in_warmup = warmed < 1.0 if warmup_steps > 0 else False
        return jnp.where(in_warmup, warmup, decay)

    return schedule


def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """``rate(t) = values[i]`` with ``i`` the number of boundaries ``≤ t``.

    ``values[0]`` holds before ``boundaries[0]``, ``values[k]`` from ``boundaries[k-1]``
    (inclusive) on.  Needs ``len(values) == len(boundaries) + 1`` and strictly increasing
    integer boundaries ``>= 0``.  (optax's ``piecewise_constant_schedule`` takes
    multiplicative scales; its ``values`` are the running products.)
    """
    boundaries = [int(b) if float(b).is_integer() else b for b in boundaries]
    values = [float(v) for v in values]
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"piecewise_constant: values needs len(boundaries) + 1 = "
                         f"{len(boundaries) + 1} entries, got {len(values)}")
    for k, b in enumerate(boundaries):
        _check_step_count(f"piecewise_constant: boundaries[{k}]", b, allow_zero=True)
    if any(b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:])):
        raise ValueError(f"piecewise_constant: boundaries must be strictly increasing, "
                         f"got {boundaries}")
    for k, v in enumerate(values):
        check_finite_non_negative(f"piecewise_constant: values[{k}]", v)
    boundary_array = np.asarray(boundaries, dtype=np.int64)

    def schedule(step) -> Array:
        t = jnp.asarray(step)
        if jnp.issubdtype(t.dtype, jnp.integer):
            # compare integers: float32 steps above 2**24 round, and a boundary would move;
            # boundaries past the dtype's range are never reached (and are the last ones)
            reachable = boundary_array[boundary_array <= np.iinfo(t.dtype).max]
            boundaries_t = reachable.astype(t.dtype)
        else:
            boundaries_t = boundary_array.astype(t.dtype)
        index = jnp.sum(t[..., None] >= boundaries_t.reshape((1,) * t.ndim + (-1,)), axis=-1)
        return jnp.asarray(values, _as_float(step).dtype)[index]

    return schedule
