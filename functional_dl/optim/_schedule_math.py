"""Step arithmetic behind the schedules: exact integer counts first, bounded floats last.

float32 holds integers exactly only up to ``2**24``, while an int32 step reaches ``2**31 − 1``.
Each helper takes a step (a Python number or an array) and the schedule's points as Python
ints, which may lie beyond the step dtype's range (points such a step never reaches).  For
integer steps the differences of steps are formed in the step's own dtype, so they are exact,
and only the results, bounded by a schedule's lengths, are converted to the default float
dtype.  Float steps are computed in that float dtype (beyond its exact integers the step and
the lengths round; comparisons with a point stay exact).  Steps before 0 count as 0.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from functional_dl._types import Array
from functional_dl.checks import default_float_dtype

# float steps have no dtype maximum; restart tables stop here (beyond any real step count)
_FLOAT_STEP_LIMIT = 2 ** 64


def as_float(x) -> Array:
    """``x`` as an array of the default float dtype."""
    return jnp.asarray(x).astype(default_float_dtype())


def as_step(step) -> Array:
    """``step`` as an array: integer steps keep their dtype, anything else becomes float."""
    t = jnp.asarray(step)
    return t if jnp.issubdtype(t.dtype, jnp.integer) else as_float(t)


def step_limit(t: Array) -> int:
    """The largest step that ``t``'s dtype can hold."""
    if jnp.issubdtype(t.dtype, jnp.integer):
        return int(np.iinfo(t.dtype).max)
    return _FLOAT_STEP_LIMIT


def steps_since(step, start: int, stop: int | None = None) -> Array:
    """``clip(t, start, stop) − start``: an exact integer for integer steps, else a float."""
    t = as_step(step)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        return jnp.clip(t, float(start), None if stop is None else float(stop)) - float(start)
    largest = step_limit(t)
    if start > largest:
        return jnp.zeros_like(t)
    upper = largest if stop is None else min(stop, largest)
    low, high = (np.asarray(v, t.dtype) for v in (start, upper))
    return jnp.clip(t, low, high) - low


def steps_until(step, start: int, stop: int) -> Array:
    """``stop − clip(t, start, stop)`` in the float dtype, from an exact integer difference.

    A ``stop`` beyond the step dtype's range adds the Python constant ``stop − largest``
    to the exact ``largest − clip(t, ...)``: near the end of a transition (the part that
    needs the digits) the sum is still exact.
    """
    t = as_step(step)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        return float(stop) - jnp.clip(t, float(start), float(stop))
    largest = step_limit(t)
    if start > largest:
        return jnp.full(t.shape, float(stop - start), default_float_dtype())
    high = min(stop, largest)
    clipped = jnp.clip(t, np.asarray(start, t.dtype), np.asarray(high, t.dtype))
    return as_float(np.asarray(high, t.dtype) - clipped) + float(stop - high)


def ratio(count: Array, length) -> Array:
    """``count / length`` in the float dtype, at most 1.

    XLA turns a division by a constant into a multiplication by its reciprocal, which can
    round ``L / L`` above 1; the bound keeps the ends of a transition exact.
    """
    return jnp.minimum(as_float(count) / length, 1.0)


def fractions(step, start: int, stop: int) -> tuple[Array, Array]:
    """``(left, done)``: the fractions of ``[start, stop]`` ahead of and behind
    ``clip(t, start, stop)``, each from its own exact count (``left`` is exactly 0 from
    ``stop`` on, ``done`` exactly 0 up to ``start``)."""
    length = float(max(stop - start, 1))
    return (ratio(steps_until(step, start, stop), length),
            ratio(steps_since(step, start, stop), length))


def restart_fractions(step, period: int, multiplier: int) -> tuple[Array, Array]:
    """``(left, done)`` of the current cycle, for cycles that start at 0 and last
    ``period · multiplierᵏ`` steps (cycle ``k``); ``(1, 0)`` at each cycle's first step."""
    t = as_step(step)
    elapsed = steps_since(t, 0)
    integer = jnp.issubdtype(t.dtype, jnp.integer)
    largest = step_limit(t)
    if multiplier == 1:
        if integer and period > largest:
            return fractions(t, 0, period)
        if integer:
            position = elapsed % np.asarray(period, t.dtype)
            left = np.asarray(period, t.dtype) - position
        else:
            position = jnp.mod(elapsed, float(period))
            left = float(period) - position
        return ratio(left, float(period)), ratio(position, float(period))
    starts, lengths = [0], [period]           # at most ~64 cycles fit below the limit
    while starts[-1] + lengths[-1] <= largest:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * multiplier)
    cycle = count_reached(elapsed, starts) - 1  # elapsed >= 0 = starts[0]: cycle >= 0
    ends = [s + n for s, n in zip(starts, lengths)]
    length = _table(lengths, default_float_dtype())[cycle]
    if not integer:
        float_dtype = default_float_dtype()
        left = _table(ends, float_dtype)[cycle] - elapsed
        return ratio(left, length), ratio(elapsed - _table(starts, float_dtype)[cycle], length)
    # the last cycle may end past the dtype's range: exact part + Python constant, as in
    # steps_until
    reachable = _table([min(e, largest) for e in ends], t.dtype)[cycle]
    beyond = _table([e - min(e, largest) for e in ends], default_float_dtype())[cycle]
    position = elapsed - _table(starts, t.dtype)[cycle]
    return ratio(as_float(reachable - elapsed) + beyond, length), ratio(position, length)


def _table(values, dtype) -> Array:
    """Python ints (possibly beyond int64 for float tables) as an array of ``dtype``."""
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.asarray(np.asarray(values, np.int64).astype(dtype))
    return jnp.asarray(np.asarray([float(v) for v in values]), dtype)


def count_reached(step, points) -> Array:
    """The number of ``points`` (sorted Python ints ``>= 0``) that are ``<= t``.

    Integer steps are compared as integers (points beyond the dtype's range are never
    reached); a float step with each point rounded up to the next float, so that a step
    switches only once it has really reached the point.
    """
    t = as_step(step)
    if jnp.issubdtype(t.dtype, jnp.integer):
        table = np.asarray([p for p in points if p <= step_limit(t)], np.int64).astype(t.dtype)
    else:
        table = np.asarray([_float_at_least(p, t.dtype) for p in points], t.dtype)
    return jnp.sum(t[..., None] >= jnp.asarray(table).reshape((1,) * t.ndim + (-1,)), axis=-1)


def _float_at_least(point: int, dtype) -> np.floating:
    """The smallest number of the float ``dtype`` that is ``>= point``."""
    rounded = np.asarray(point, np.float64).astype(dtype)
    if int(rounded) < point:
        rounded = np.nextafter(rounded, np.asarray(np.inf, dtype))
    return rounded


def power(base: float, exponent: Array) -> Array:
    """``base ** exponent`` for a Python float ``base > 0``, accurate in the exponent's dtype.

    ``base`` exactly representable there (0.5, 0.25, ...): the power itself, so exact results
    stay exact.  Otherwise ``exp(exponent · log base)`` with the logarithm in float64: the
    power of a base rounded to float32 is off by ``exponent`` times the rounding (0.99999 →
    1e-3 relative at exponent 10⁵), this by ~6e-8 per e-fold of decay.
    """
    if float(np.asarray(base, exponent.dtype)) == base:
        return jnp.power(np.asarray(base, exponent.dtype), exponent)
    return jnp.exp(exponent * math.log(base))


def cosine_fractions(left: Array, done: Array) -> tuple[Array, Array]:
    """``(sin²(π/2 · left), sin²(π/2 · done))``: for ``left + done = 1`` these are
    ``½ (1 ± cos(π · done))`` (they sum to 1), each exactly 0 where its fraction is 0 (a
    float ``cos(π/2)`` is not) and without cancellation near it."""
    return tuple(jnp.square(jnp.sin(0.5 * math.pi * x)) for x in (left, done))


def blend(start_value, end_value, left: Array, done: Array, power: float = 1) -> Array:
    """``start_value · w + end_value · (1 − w)`` with ``w = leftᵖ``, for ``left = 1 − done``.

    ``1 − w`` is formed from ``done`` (``−expm1(p · log1p(−done))`` when ``p ≠ 1``), so each
    weight is exact where it is 0 or 1 and accurate near it: the value is exactly
    ``end_value`` at ``left = 0`` and ``start_value`` at ``done = 0``.
    """
    if power == 1:
        return start_value * left + end_value * done
    end_weight = -jnp.expm1(power * jnp.log1p(-done))
    return start_value * jnp.power(left, power) + end_value * end_weight
