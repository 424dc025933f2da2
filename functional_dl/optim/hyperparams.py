"""Hyperparameters as optimizer state: ``inject_hyperparams(factory)(**hyperparams)``.

::

    optimizer = optim.inject_hyperparams(optim.adamw)(learning_rate=1e-3, weight_decay=1e-4)
    state = optimizer.init(params)
    step = jax.jit(...)                                      # compiled once
    state.hyperparams["learning_rate"]                       # read it back: 1e-3
    state = optim.set_hyperparams(state, learning_rate=3e-4) # change it between steps

The numeric hyperparameters that you pass become arrays in the state, so the compiled
step reads them as inputs: changing one neither retraces nor recompiles.  A schedule
(a function ``step -> value``) is evaluated at every update from the state's ``count`` and
its latest value is stored beside the others (read-only: the schedule overrides it).  On
every update the factory is called again with the hyperparameters as (traced) arrays and
its ``update`` applied; the factories of this package skip their value checks on traced
values (``checks.is_concrete``) and run them on the concrete values at construction.

As ``optax.inject_hyperparams(factory)(**hyperparams)``, with two differences: only the
hyperparameters you pass become state (the factory's defaults stay compiled-in constants;
optax injects those too), and a Python number is stored as a float (optax keeps a Python int
an int).
"""
from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PyTree
from functional_dl.optim import _tree
from functional_dl.optim.base import Optimizer, call_update

__all__ = ["InjectHyperparamsState", "inject_hyperparams", "set_hyperparams"]


class InjectHyperparamsState(NamedTuple):
    """``count``: int32 updates made (the schedules' step); ``hyperparams``: ``{name: array}``,
    the value each hyperparameter had in the latest update (before the first, its initial
    value); ``inner_state``: the state of the optimizer the factory builds."""

    count: Array
    hyperparams: dict
    inner_state: PyTree


def _is_numeric(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and hasattr(value, "shape") and (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))


def _stored(value: Any, float_dtype: Any) -> Array:
    """A hyperparameter as state: floats (and Python ints) in ``float_dtype``, integer arrays
    in their own dtype; strongly typed, so that a new value keeps the compiled step's input
    types."""
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.integer) and not value.weak_type:
        return value.astype(value.dtype)
    return value.astype(float_dtype)


def _float_dtype(tree: PyTree) -> Any:
    """float32 at least, float64 when a leaf of ``tree`` is float64."""
    return _tree.compute_dtype(*(jnp.result_type(leaf) for leaf in jax.tree.leaves(tree)
                                 if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)))


def inject_hyperparams(factory: Callable[..., Any], *,
                       static_args: str | Iterable[str] = ()) -> Callable[..., Optimizer]:
    """Wrap ``factory`` so that the numeric hyperparameters passed to it live in the state.

    ``inject_hyperparams(factory)(*args, **kwargs)`` returns an optimizer whose state is
    :class:`InjectHyperparamsState`.  Each argument passed is

    * a *number* (Python int or float, or a NumPy/JAX scalar or array of a real dtype): stored
      in ``state.hyperparams[name]``, floats in float32 (float64 when the parameters have a
      float64 leaf), and passed to ``factory`` as an array on every update;
    * a *schedule* (any other callable, unless named in ``static_args``): evaluated at every
      update as ``schedule(count)``, ``count`` the number of earlier updates; the value is
      stored in ``state.hyperparams[name]`` too;
    * anything else (a bool, ``None``, a string, a dtype, a mask tree, or a name in
      ``static_args``): passed to ``factory`` unchanged, part of the compiled program.

    The factory is called once at construction with the given numbers and the schedules'
    values at step 0, so its argument checks run there on concrete values.

    Args:
      factory: a function returning an optimizer, e.g. ``optim.adam``.
      static_args: names of callable arguments that are not schedules (e.g. ``"mask"`` of
        ``adamw``), passed through unchanged.

    Raises:
      ValueError: when ``static_args`` names an argument ``factory`` does not take.
      TypeError: when a schedule does not return a real scalar at step 0.
    """
    if not callable(factory):
        raise TypeError(f"inject_hyperparams: factory must be a function returning an "
                        f"optimizer, got {checks.describe(factory)}")
    static_args = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(factory)
    unknown = static_args - set(signature.parameters)
    if unknown:
        raise ValueError(f"inject_hyperparams: static_args {sorted(unknown)} are not arguments "
                         f"of {getattr(factory, '__name__', 'factory')}; it takes "
                         f"{list(signature.parameters)}")
    owner = f"inject_hyperparams({getattr(factory, '__name__', 'factory')})"

    @functools.wraps(factory)
    def build(*args, **kwargs) -> Optimizer:
        given = dict(signature.bind(*args, **kwargs).arguments)
        for parameter in signature.parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD and parameter.name in given:
                given.update(given.pop(parameter.name))
            elif parameter.kind is inspect.Parameter.VAR_POSITIONAL and parameter.name in given:
                raise TypeError(f"{owner}: positional *{parameter.name} cannot be injected")
        schedules = {name: value for name, value in given.items()
                     if callable(value) and name not in static_args}
        numbers_ = {name: value for name, value in given.items()
                    if name not in schedules and name not in static_args and _is_numeric(value)}
        static = {name: value for name, value in given.items()
                  if name not in schedules and name not in numbers_}
        first_values = {}
        for name, schedule in schedules.items():
            try:
                first_values[name] = schedule(jnp.zeros((), jnp.int32))
                checks.real_number(f"{owner}: {name}(0)", first_values[name])
            except Exception as err:
                raise TypeError(
                    f"{owner}: argument {name!r} is a function, so it is taken for a schedule "
                    f"step -> value, but {name}(0) did not give a real scalar ({err}); pass "
                    f"static_args=({name!r},) for a function that is not a schedule") from err
        checks.optimizer(f"{owner}: the factory's result", factory(**static, **numbers_,
                                                                    **first_values))

        def inner(hyperparams: dict) -> Any:
            return factory(**static, **hyperparams)

        def init(params: PyTree) -> InjectHyperparamsState:
            dtype = _float_dtype(params)
            hyperparams = {name: _stored(value, dtype) for name, value in numbers_.items()}
            hyperparams.update({name: _stored(value, dtype)
                                for name, value in first_values.items()})
            return InjectHyperparamsState(_tree.zero_count(), hyperparams,
                                          inner(hyperparams).init(params))

        def update(grads: PyTree, state: InjectHyperparamsState, params: PyTree | None = None,
                   **extra_args):
            if not isinstance(state, InjectHyperparamsState):
                raise TypeError(f"{owner}.update: state must be an InjectHyperparamsState "
                                f"(from its init), got {type(state).__name__}")
            expected = set(numbers_) | set(schedules)
            if set(state.hyperparams) != expected:
                raise ValueError(f"{owner}.update: state.hyperparams has {sorted(state.hyperparams)}"
                                 f", expected {sorted(expected)}")
            dtype = _float_dtype(grads)
            hyperparams = {name: _stored(value, dtype)
                           for name, value in state.hyperparams.items() if name in numbers_}
            hyperparams.update({name: _stored(schedule(state.count), dtype)
                                for name, schedule in schedules.items()})
            updates, inner_state = call_update(inner(hyperparams), grads, state.inner_state,
                                               params, extra_args)
            return updates, InjectHyperparamsState(_tree.increment_count(state.count),
                                                   hyperparams, inner_state)

        return Optimizer(init, update)

    return build


def set_hyperparams(state: InjectHyperparamsState, **values: Any) -> InjectHyperparamsState:
    """``state`` with new hyperparameter values, each cast to its stored dtype and shape.

    The same as ``state._replace(hyperparams={**state.hyperparams, name: value})`` except
    that a Python float becomes an array of the stored dtype: a jitted step then sees the
    input types it was compiled for and does not retrace.  A scheduled hyperparameter is
    recomputed from its schedule at the next update, so setting it has no effect.

    Raises:
      ValueError: for a name that is not in ``state.hyperparams``, or a value of another
        shape than the stored one.
    """
    if not isinstance(state, InjectHyperparamsState):
        raise TypeError(f"set_hyperparams: state must be an InjectHyperparamsState, got "
                        f"{type(state).__name__}")
    hyperparams = dict(state.hyperparams)
    for name, value in values.items():
        if name not in hyperparams:
            raise ValueError(f"set_hyperparams: {name!r} is not a hyperparameter of this state; "
                             f"it has {sorted(hyperparams)}")
        old = hyperparams[name]
        if jnp.shape(value) != jnp.shape(old):
            raise ValueError(f"set_hyperparams: {name} must have shape {jnp.shape(old)}, got "
                             f"{checks.describe(value)}")
        hyperparams[name] = jnp.asarray(value).astype(jnp.result_type(old))
    return state._replace(hyperparams=hyperparams)
