"""An exponential moving average of the parameters: ``ema_params(decay, debias=True)``.

Evaluating with averaged weights (Polyak & Juditsky 1992; the EMA of weights used for
e.g. diffusion models and ViTs) usually gives a better model than the last iterate.  The
average observes the training; it does not change the updates, so it is not an optimizer
but a pair ``init(params) -> state``, ``update(state, params) -> state``, run after each
``apply_updates``::

    ema = optim.ema_params(0.999)
    ema_state = ema.init(params)
    for batch in batches:                                # a custom loop
        ...
        params = optim.apply_updates(params, updates)
        ema_state = ema.update(ema_state, params)        # ema_state.ema: the average

    result = train.fit(loss_fn, optimizer, params, data, ..., on_step=ema.step_hook)
    averaged = result.hook_state.ema                     # from fit

``step_hook`` is an ``(init, update)`` pair with ``train.StepHook``'s fields and signature, so ``fit``
updates the average inside its jitted step, returns it as ``FitResult.hook_state`` and
checkpoints it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PyTree
from functional_dl.optim import _tree
from functional_dl.optim.directions import one_minus_power

__all__ = ["EmaParamsState", "EmaStepHook", "ParamsEma", "ema_params"]


class EmaParamsState(NamedTuple):
    """``count``: int32 averaged steps ``t``; ``ema``: the average ``θ̄_t``, shaped like the
    parameters (``θ̄_0 = θ_0``)."""

    count: Array
    ema: PyTree


class EmaStepHook(NamedTuple):
    """``(init, update)`` with the fields and signature of ``train.StepHook`` (this package does
    not import ``train``): ``update(state, step, params, opt_state, metrics)``."""

    init: Callable[[PyTree], EmaParamsState]
    update: Callable[..., EmaParamsState]


class ParamsEma(NamedTuple):
    """``init(params)``, ``update(state, params)`` and ``step_hook``, the same pair with the
    signature of ``train.StepHook`` (pass it as ``fit(..., on_step=ema.step_hook)``)."""

    init: Callable[[PyTree], EmaParamsState]
    update: Callable[[EmaParamsState, PyTree], EmaParamsState]
    step_hook: EmaStepHook


def ema_params(decay: float, debias: bool = True, *, dtype: Any = None) -> ParamsEma:
    """The exponential moving average of the parameters after each step.

    With ``d = decay`` and ``θ_t`` the parameters after step ``t``::

        debias=True:   θ̄_t = e_t / (1 − d^t),   e_t = d e_{t−1} + (1 − d) θ_t,  e_0 = 0
        debias=False:  θ̄_t = d θ̄_{t−1} + (1 − d) θ_t,                          θ̄_0 = θ_0

    The debiased average (Kingma & Ba 2015's bias correction applied to the parameters) is
    a weighted mean of ``θ_1 … θ_t`` with weights ``∝ d^{t−s}``: early on it is not pulled
    towards 0 (the debiased ``θ̄_1`` is ``θ_1``).  It is computed as
    ``θ̄_t = θ̄_{t−1} + w_t (θ_t − θ̄_{t−1})`` with ``w_t = (1 − d) / (1 − d^t)``, which equals
    the formula above and keeps ``state.ema`` readable at every step (``θ̄_0 = θ_0``).  The
    same numbers as ``optax.ema(decay, debias=True)`` fed the parameters.  ``debias=False``
    starts from the initial parameters, as timm's ``ModelEmaV2`` and Keras' ``use_ema`` do.

    Args:
      decay: ``d`` in ``[0, 1)``: the weight of the past (0.999: about the last 1000 steps).
      debias: divide by ``1 − d^t`` (see above).
      dtype: stored dtype of the average (default each parameter's own).  With bfloat16 or
        float16 parameters pass ``jnp.float32``: at ``d`` near 1 the increments
        ``(1 − d)(θ_t − θ̄)`` are below their resolution and the average would not move.
    """
    checks.real_in("ema_params: decay", decay, 0.0, 1.0, high_closed=False)
    debias = checks.boolean("ema_params: debias", debias)
    stored = None if dtype is None else checks.float_dtype(dtype, name="ema_params: dtype")

    def init(params: PyTree) -> EmaParamsState:
        _tree.check_float_leaves("ema_params.init", "params", params)
        # a copy, so that donating the parameters to a train step leaves the average
        average = jax.tree.map(lambda p: jnp.copy(jnp.asarray(p)).astype(
            stored or jnp.result_type(p)), params)
        return EmaParamsState(_tree.zero_count(), average)

    def update(state: EmaParamsState, params: PyTree) -> EmaParamsState:
        where = "ema_params.update"
        if not isinstance(state, EmaParamsState):
            raise TypeError(f"{where}: state must be an EmaParamsState (from ema_params(...)"
                            f".init), got {type(state).__name__}")
        params = _tree.as_float_arrays(where, "params", params)
        _tree.check_same_structure(where, "params", params, "state.ema", state.ema)
        count = _tree.increment_count(state.count)

        def leaf(average, p):
            cdt = _tree.compute_dtype(average.dtype, p.dtype)
            if debias:
                weight = (1.0 - decay) / one_minus_power(decay, count.astype(cdt))
            else:
                weight = jnp.asarray(1.0 - decay, cdt)
            a = average.astype(cdt)
            return (a + weight * (p.astype(cdt) - a)).astype(average.dtype)

        return EmaParamsState(count, jax.tree.map(leaf, state.ema, params))

    def hook_update(state: EmaParamsState, step: Array, params: PyTree, opt_state: PyTree,
                    metrics: dict) -> EmaParamsState:
        return update(state, params)

    return ParamsEma(init, update, EmaStepHook(init, hook_update))
