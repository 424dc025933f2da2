"""What ``fit`` saves to resume a run bit-identically, on top of ``functional_dl.checkpoint``.

A training checkpoint is taken at an epoch boundary and holds everything the rest of the run
depends on: parameters, optimizer state, the run's PRNG key (epoch ``e`` derives its keys
from ``fold_in(key, e)``), the number of finished epochs, the history so far and the
early-stopping state (best value, its epoch, epochs waited, best parameters).  It is one
``checkpoint.save`` file, so it is written atomically and read back bit for bit.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from functional_dl import checkpoint
from functional_dl._types import PRNGKey, PyTree


class TrainingCheckpoint(NamedTuple):
    params: PyTree
    opt_state: PyTree
    key: PRNGKey
    epoch: int                       # epochs finished
    history: dict[str, list[float]]
    best: float                      # early stopping: best monitored value so far
    best_epoch: int                  # 1-based; 0 = none yet
    wait: int                        # epochs since the best one
    best_params: PyTree              # None unless early stopping keeps the best parameters


def save(path: str | os.PathLike, state: TrainingCheckpoint) -> None:
    """Write ``state`` to ``path`` atomically; history values are stored as float64 arrays."""
    history = {name: np.asarray(values, dtype=np.float64)
               for name, values in state.history.items()}
    checkpoint.save(path, state._replace(history=history, epoch=int(state.epoch),
                                         best=float(state.best), best_epoch=int(state.best_epoch),
                                         wait=int(state.wait)))


def load(path: str | os.PathLike, params_like: PyTree, opt_state_like: PyTree) -> TrainingCheckpoint:
    """Read a checkpoint written by ``save``.

    Parameters, optimizer state and best parameters are restored against ``params_like`` /
    ``opt_state_like`` (same structure, shapes and dtypes, placed as they are: committed
    leaves on their sharding, uncommitted ones uncommitted, so the train step compiled for
    a fresh state is reused), and a checkpoint of a different model raises
    ``checkpoint.CheckpointError`` saying where.
    """
    saved = checkpoint.restore(path)
    if not isinstance(saved, TrainingCheckpoint):
        raise checkpoint.CheckpointError(f"{path}: not a training checkpoint written by fit")
    like = saved._replace(
        params=params_like, opt_state=opt_state_like,
        best_params=None if saved.best_params is None else params_like)
    state = checkpoint.restore(path, like=like)
    return state._replace(history={name: [float(v) for v in values]
                                   for name, values in state.history.items()})
