"""Named argument checks: the one vocabulary every sub-package validates its input with.

Each check takes the argument's ``name`` as it should appear in the message (an owner
prefix such as ``"adam: learning_rate"`` is welcome) and raises

- ``TypeError`` when the value has the wrong kind (a string where a number belongs, a float
  where an integer belongs, an integer array where floats belong, something that is not a
  PRNG key), and
- ``ValueError`` when it has the right kind but a wrong value or shape,

with a message ``"{name} must be ..., got ..."``.  Shapes and dtypes are static, so those
checks run inside ``jit`` too (once, while tracing).  Value checks need numbers: on a jit
tracer they are skipped (``is_concrete``), so a hyperparameter that is ``vmap``ped over or a
batch inside a user's ``jit`` passes unchecked rather than failing to trace.

The checks return the normalised value where that is useful (``whole_number`` returns an
``int``, ``float_dtype`` a dtype), so a call site reads ``epochs = whole_number("epochs",
epochs, minimum=1)``.  Family, layer and optimizer authors outside this package use them the
same way.  Example to follow: chex's ``asserts``.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete", "concrete_values", "describe",
    "boolean", "whole_number", "real_number", "real_in", "positive", "non_negative", "probability",
    "prng_key", "optimizer", "float_dtype", "default_float_dtype",
    "labels_in", "sign_labels", "integer_dtype", "floating_dtype", "real_dtype",
    "rank", "shape_is", "same_shape", "finite", "leading_length",
    "leaves_with_paths", "float_leaves", "same_structure",
    "probability_rows", "positive_definite", "one_of",
]


# ------------------------------------------------------------------ basics


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value that can be inspected eagerly (not a jit tracer)."""
    return not isinstance(x, jax.core.Tracer)


def concrete_values(*arrays: Any) -> Optional[list[np.ndarray]]:
    """NumPy copies of ``arrays`` when every one is concrete, else None (checks skipped)."""
    if not all(is_concrete(a) for a in arrays):
        return None
    return [np.asarray(a) for a in arrays]


def describe(value: Any) -> str:
    """A short description for messages: ``float 2.5``, ``array of shape (3,) float32``."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and np.ndim(value) > 0:
        return f"an array of shape {tuple(np.shape(value))} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"


# ------------------------------------------------------------------ numbers


def boolean(name: str, value: Any) -> bool:
    """``bool(value)`` for ``True``/``False`` (Python or NumPy); TypeError for anything else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def _is_integer(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Integral):
        return True
    dtype = getattr(value, "dtype", None)
    return (dtype is not None and np.ndim(value) == 0 and jnp.issubdtype(dtype, jnp.integer))


def whole_number(name: str, value: Any, *, minimum: Optional[int] = None,
                 maximum: Optional[int] = None) -> int:
    """``int(value)`` for an integer (Python, NumPy or 0-d array; ``bool`` excluded).

    TypeError for anything else (``2.0`` included: a count is not a float); ValueError
    outside ``[minimum, maximum]``.
    """
    if not _is_integer(value):
        bound = "" if minimum is None else f" >= {minimum}"
        raise TypeError(f"{name} must be an int{bound}, got {describe(value)}")
    if not is_concrete(value):
        raise TypeError(f"{name} must be a concrete int (it sets a shape or a loop count), "
                        f"got a traced value")
    number = operator.index(value) if isinstance(value, numbers.Integral) else int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be an int <= {maximum}, got {number}")
    return number


def real_number(name: str, value: Any, *, allow_schedule: bool = False) -> None:
    """TypeError unless ``value`` is a real scalar (or, with ``allow_schedule``, callable).

    Accepts Python and NumPy reals, 0-d integer/float arrays and tracers of those.
    """
    if allow_schedule and callable(value):
        return
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    if isinstance(value, numbers.Real):
        return
    dtype = getattr(value, "dtype", None)
    real = dtype is not None and (jnp.issubdtype(dtype, jnp.floating)
                                  or jnp.issubdtype(dtype, jnp.integer))
    if not real:
        expected = "a real number or a schedule step -> value" if allow_schedule else "a real number"
        raise TypeError(f"{name} must be {expected}, got {describe(value)}")
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got {describe(value)}")


def real_in(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
            low_closed: bool = True, high_closed: bool = True,
            allow_schedule: bool = False) -> None:
    """A real scalar in the interval from ``low`` to ``high`` (brackets set by the flags).

    NaN is never inside.  An infinite bound is open whatever its flag (``real_in(x, 0)`` is
    ``x >= 0`` and finite).  Callables pass when ``allow_schedule`` (a schedule is checked by
    whoever builds it); tracers pass the value test.
    """
    real_number(name, value, allow_schedule=allow_schedule)
    if callable(value) or not is_concrete(value):
        return
    v = float(np.asarray(value))
    ok_low = v > low or (low_closed and v == low and math.isfinite(low))
    ok_high = v < high or (high_closed and v == high and math.isfinite(high))
    if not (ok_low and ok_high):
        lo = "[" if low_closed and math.isfinite(low) else "("
        hi = "]" if high_closed and math.isfinite(high) else ")"
        if math.isinf(high) and not math.isinf(low):
            wanted = f"{'>=' if lo == '[' else '>'} {low:g} and finite"
        else:
            wanted = f"in {lo}{low:g}, {high:g}{hi}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


def positive(name: str, value: Any, *, allow_schedule: bool = False) -> None:
    """A finite real scalar ``> 0``."""
    real_in(name, value, 0.0, low_closed=False, allow_schedule=allow_schedule)


def non_negative(name: str, value: Any, *, allow_schedule: bool = False) -> None:
    """A finite real scalar ``>= 0``."""
    real_in(name, value, 0.0, allow_schedule=allow_schedule)


def probability(name: str, value: Any, *, open_high: bool = False) -> None:
    """A real scalar in ``[0, 1]`` (``[0, 1)`` with ``open_high``)."""
    real_in(name, value, 0.0, 1.0, high_closed=not open_high)


def one_of(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices``, else ValueError listing them."""
    if value not in tuple(choices):
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value


# ------------------------------------------------------------------ keys, optimizers, dtypes


def prng_key(name: str, key: Any, *, what: str = "this call", allow_none: bool = False,
             single: bool = False) -> None:
    """A PRNG key: typed (``jax.random.key``) or raw uint32 (``jax.random.PRNGKey``).

    ``None`` is a ValueError saying what the key is for (unless ``allow_none``); anything
    else that is not a key is a TypeError.  ``single`` asks for one key, not a batch.
    """
    if key is None:
        if allow_none:
            return
        raise ValueError(f"{name}: a PRNG key is needed for {what}; pass {name}=jax.random.key(0)")
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype == np.uint32 and np.ndim(key) >= 1
    if not (typed or raw):
        raise TypeError(f"{name} must be a PRNG key (jax.random.key(seed)), got "
                        f"{type(key).__name__} {getattr(key, 'dtype', '')}".rstrip())
    if single and ((typed and np.ndim(key) != 0) or (raw and np.shape(key) != (2,))):
        raise TypeError(f"{name} must be one PRNG key such as jax.random.key(0), got keys of "
                        f"shape {np.shape(key)}")


def optimizer(name: str, candidate: Any) -> None:
    """TypeError unless ``candidate`` has callable ``init`` and ``update`` (the optax protocol)."""
    if not (callable(getattr(candidate, "init", None))
            and callable(getattr(candidate, "update", None))):
        raise TypeError(f"{name} must be an Optimizer (a pair of functions init(params) and "
                        f"update(grads, state, params)), got {type(candidate).__name__}")


def default_float_dtype() -> np.dtype:
    """float64 when x64 is enabled, else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def float_dtype(dtype: Any = None, *, name: str = "dtype") -> np.dtype:
    """``dtype`` as a NumPy dtype, or the default float for None; TypeError if not floating."""
    if dtype is None:
        return default_float_dtype()
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype!r}") from error
    if not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(f"{name} must be a floating-point dtype, got {resolved}")
    return resolved


def _dtype_of(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def integer_dtype(name: str, x: Any, *, what: str = "integers") -> None:
    """TypeError unless ``x`` has an integer dtype."""
    dtype = _dtype_of(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must hold {what}, got dtype {dtype}")


def floating_dtype(name: str, x: Any) -> None:
    """TypeError unless ``x`` has a real floating-point dtype."""
    dtype = _dtype_of(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")


def real_dtype(name: str, x: Any) -> None:
    """TypeError unless ``x`` holds real numbers (a floating or integer dtype)."""
    dtype = _dtype_of(x)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")


# ------------------------------------------------------------------ labels


def labels_in(name: str, labels: Any, num_classes: int) -> None:
    """Integer class labels in ``[0, num_classes)`` (the range checked on concrete values)."""
    integer_dtype(name, labels, what="integer class labels")
    values = concrete_values(labels)
    if values is not None and values[0].size:
        low, high = int(values[0].min()), int(values[0].max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"{name} must hold class labels in [0, {num_classes}), got min "
                             f"{low} and max {high}")


def sign_labels(name: str, labels: Any) -> None:
    """Binary labels ``-1`` or ``+1`` (checked on concrete values)."""
    values = concrete_values(labels)
    if values is None:
        return
    bad = ~((values[0] == 1) | (values[0] == -1))
    if bad.any():
        raise ValueError(f"{name} must hold binary labels -1 or +1, got values "
                         f"{np.unique(values[0][bad])[:5].tolist()}")


# ------------------------------------------------------------------ shapes and values


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def rank(name: str, x: Any, ndim: int | Sequence[int], what: str = "") -> None:
    """ValueError unless ``x`` has ``ndim`` axes (one of them, for a sequence); ``what``
    names the axes in the message, e.g. ``"(T, K)"``."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(_shape(x)) not in allowed:
        expected = what or " or ".join(f"{n} axes" for n in allowed)
        raise ValueError(f"{name} must have shape {expected}, got shape {_shape(x)}")


def shape_is(name: str, x: Any, expected: Sequence[int], why: str = "") -> None:
    """ValueError unless ``x.shape == expected``; ``why`` completes the message."""
    if _shape(x) != tuple(expected):
        suffix = f" {why}" if why else ""
        raise ValueError(f"{name} must have shape {tuple(expected)}{suffix}, got {_shape(x)}")


def same_shape(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """ValueError unless ``a`` and ``b`` have one shape."""
    if _shape(a) != _shape(b):
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {_shape(a)} "
                         f"and {_shape(b)}")


def finite(name: str, x: Any, *, where: Any = None) -> None:
    """ValueError when a concrete ``x`` holds NaN or infinity (only at ``where``, if given)."""
    values = concrete_values(x)
    if values is None:
        return
    ok = np.isfinite(values[0])
    if where is not None:
        ok = ok | ~np.asarray(where)
    if not np.all(ok):
        raise ValueError(f"{name} must be finite, got NaN or infinity")


def leading_length(name: str, arrays: Any) -> int:
    """The common leading-axis length ``n >= 1`` of the leaves of ``arrays``."""
    leaves = jax.tree.leaves(arrays)
    if not leaves:
        raise ValueError(f"{name} must contain at least one array, got {arrays!r}")
    lengths = []
    for leaf in leaves:
        if np.ndim(leaf) == 0:
            raise ValueError(f"{name}: every array needs a leading example axis, got a scalar")
        lengths.append(np.shape(leaf)[0])
    if len(set(lengths)) != 1:
        raise ValueError(f"{name} must all have the same length (leading axis), got lengths "
                         f"{lengths}")
    if lengths[0] == 0:
        raise ValueError(f"{name} must hold at least one example, got leading length 0")
    return lengths[0]


# The checks of structured values, pytrees (float leaves, same structure) and distributions
# (probability rows, positive-definite matrices), live in ``_structured_checks`` and are
# part of this vocabulary: imported last, as they use the basics above.
from functional_dl._structured_checks import (  # noqa: E402
    PROBABILITY_ROW_RTOL, float_leaves, leaves_with_paths, positive_definite,
    probability_rows, same_structure)
