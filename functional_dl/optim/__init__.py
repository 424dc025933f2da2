"""Optimizers as pairs of pure functions ``(init, update)``.

::

    from functional_dl import optim

    optimizer = optim.chain(optim.clip_by_global_norm(1.0),
                            optim.adam(optim.schedules.cosine_decay(1e-3, 10_000)))
    state = optimizer.init(params)
    updates, state = optimizer.update(grads, state, params)
    params = optim.apply_updates(params, updates)

Each optimizer is a chain of an ascent *direction* (``scale_by_adam``, ``trace``, ...,
in ``directions.py``) and a *step* (``scale_by_learning_rate``), with transforms
(clipping, weight decay, ...) between; a new per-coordinate transform is one
``leafwise(owner, State, leaf_update)``.  Same protocol as optax's
``GradientTransformation``: the two interoperate in either direction.  Each optimizer's docstring gives the formula it implements, its reference and
the options that reproduce PyTorch's and optax's numbers.
"""
from functional_dl.optim import schedules
from functional_dl.optim.aliases import adagrad, adam, adamw, momentum, named_chain, rmsprop, sgd
from functional_dl.optim.base import EmptyState, Optimizer, apply_updates, call_update, chain
from functional_dl.optim.directions import (ScaleByAdagradState, ScaleByAdamState,
                                            ScaleByRmsState, ScaleByStddevState, TraceState,
                                            scale_by_adagrad, scale_by_adam, scale_by_rms,
                                            scale_by_stddev, trace)
from functional_dl.optim.directions import DampedTraceState, ScaleByAmsgradState
from functional_dl.optim.adam_variants import (ScaleByNadamScheduleState, adabelief, adamax,
                                               nadam, nadamw, radam, scale_by_adamax,
                                               scale_by_belief, scale_by_nadam, scale_by_radam)
from functional_dl.optim.factored import FactoredState, adafactor, scale_by_factored_rms
from functional_dl.optim.sign_and_trust import (ScaleByLionState, lamb, lion, scale_by_lion,
                                                scale_by_trust_ratio)
from functional_dl.optim.leafwise import leafwise
from functional_dl.optim.transforms import (ApplyIfFiniteState, ScaleByLearningRateState,
                                            ScaleByScheduleState, add_decayed_weights,
                                            apply_if_finite, clip_by_global_norm, scale,
                                            scale_by_learning_rate, scale_by_schedule)

__all__ = [
    "Optimizer", "EmptyState", "apply_updates", "chain", "call_update", "named_chain",
    "leafwise", "schedules",
    "sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw",
    "scale_by_adam", "scale_by_rms", "scale_by_stddev", "scale_by_adagrad", "trace",
    "scale_by_learning_rate", "scale_by_schedule", "scale",
    "clip_by_global_norm", "add_decayed_weights", "apply_if_finite",
    "ScaleByAdamState", "ScaleByRmsState", "ScaleByStddevState", "ScaleByAdagradState",
    "TraceState", "ScaleByLearningRateState", "ScaleByScheduleState", "ApplyIfFiniteState",
    "ScaleByAmsgradState", "DampedTraceState",
    "nadam", "nadamw", "radam", "adamax", "adabelief", "lion", "lamb", "adafactor",
    "scale_by_nadam", "scale_by_radam", "scale_by_adamax", "scale_by_belief", "scale_by_lion",
    "scale_by_trust_ratio", "scale_by_factored_rms",
    "ScaleByNadamScheduleState", "ScaleByLionState", "FactoredState",
]

# wrappers (parameter groups, accumulation, injected hyperparameters), parameter EMA, guards
from functional_dl.optim.accumulation import MultiSteps, MultiStepsState
from functional_dl.optim.averaging import EmaParamsState, EmaStepHook, ParamsEma, ema_params
from functional_dl.optim.hyperparams import (InjectHyperparamsState, inject_hyperparams,
                                             set_hyperparams)
from functional_dl.optim.transforms import ZeroNansState, clip, zero_nans
from functional_dl.optim.wrappers import (MaskedNode, MaskedState, PartitionState, freeze,
                                          masked, partition, set_to_zero)

__all__ += [
    "masked", "partition", "set_to_zero", "freeze", "MultiSteps", "inject_hyperparams",
    "set_hyperparams", "ema_params", "clip", "zero_nans",
    "MaskedNode", "MaskedState", "PartitionState", "MultiStepsState", "InjectHyperparamsState",
    "EmaParamsState", "EmaStepHook", "ParamsEma", "ZeroNansState",
]
