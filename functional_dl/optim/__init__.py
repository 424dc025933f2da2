"""Optimizers as pairs of pure functions ``(init, update)``.

::

    from functional_dl import optim

    optimizer = optim.chain(optim.clip_by_global_norm(1.0),
                            optim.adam(optim.schedules.cosine_decay(1e-3, 10_000)))
    state = optimizer.init(params)
    updates, state = optimizer.update(grads, state, params)
    params = optim.apply_updates(params, updates)

Same protocol as optax's ``GradientTransformation``: the two interoperate in either
direction.  Each optimizer's docstring gives the formula it implements, its reference and
the options that reproduce PyTorch's and optax's numbers.
"""
from functional_dl.optim import schedules
from functional_dl.optim.adam import AdamState, adam, adamw
from functional_dl.optim.adaptive import (AdagradState, CenteredRmspropState, RmspropState,
                                          adagrad, rmsprop)
from functional_dl.optim.base import EmptyState, Optimizer, apply_updates, chain
from functional_dl.optim.sgd import MomentumState, SgdState, momentum, sgd
from functional_dl.optim.transforms import (ApplyIfFiniteState, ScaleByScheduleState,
                                            add_decayed_weights, apply_if_finite,
                                            clip_by_global_norm, scale, scale_by_schedule)

__all__ = [
    "Optimizer", "EmptyState", "apply_updates", "chain", "schedules",
    "sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw",
    "clip_by_global_norm", "add_decayed_weights", "scale", "scale_by_schedule",
    "apply_if_finite",
    "SgdState", "MomentumState", "AdagradState", "RmspropState", "CenteredRmspropState",
    "AdamState", "ScaleByScheduleState", "ApplyIfFiniteState",
]
