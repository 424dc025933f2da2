"""Checkpointing for ``fit``: its options and what it saves to resume a run bit-identically.

A training checkpoint is taken at an epoch boundary and holds everything the rest of the run
depends on: the training state (parameters, optimizer state, ``on_step`` state, a stateful model's
state), the run's
PRNG key (epoch ``e`` derives its keys from ``fold_in(key, e)``), the number of finished
epochs, the history so far, the early-stopping state and the best parameters (with their
model state).  It is one
``checkpoint.save`` file, so it is written atomically and read back bit for bit.
"""
from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Union

import numpy as np

from functional_dl import checkpoint, checks
from functional_dl._types import PRNGKey, PyTree
from functional_dl.train.epoch import TrainState
from functional_dl.train.stopping import EarlyStoppingState


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    """Save ``fit``'s state to ``path`` every ``every`` epochs and after the last one.

    Attributes:
      path: the checkpoint file (written atomically, replaced each time).
      every: epochs between saves (int >= 1).
      resume: continue from ``path`` when it exists: its key, epoch, history and
        early-stopping state are used, and the ``params``/``opt_state`` given to ``fit`` only
        supply the structure (a checkpoint of another model is a ``CheckpointError``).  A
        checkpoint of a run that early stopping had ended returns at once.

    Raises (at construction): TypeError for a wrong kind, ValueError for a wrong value,
    naming the attribute.
    """
    path: Union[str, os.PathLike]
    every: int = 1
    resume: bool = False

    def __post_init__(self):
        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError("Checkpointing: path must be a str or os.PathLike (the checkpoint "
                            f"file), got {checks.describe(self.path)}")
        object.__setattr__(self, "every",
                           checks.whole_number("Checkpointing: every", self.every, minimum=1))
        object.__setattr__(self, "resume", checks.boolean("Checkpointing: resume", self.resume))

    def due(self, epochs_done: int, epochs: int) -> bool:
        """Whether ``fit`` saves after ``epochs_done`` of ``epochs`` epochs."""
        return epochs_done % self.every == 0 or epochs_done == epochs

    def can_resume(self) -> bool:
        """``resume`` and a file at ``path``."""
        return self.resume and os.path.exists(self.path)


class TrainingCheckpoint(NamedTuple):
    state: TrainState
    key: PRNGKey
    epoch: int                       # epochs finished
    history: dict[str, list[float]]
    stopping: EarlyStoppingState | None   # None without early stopping
    best_params: PyTree                   # None unless early stopping keeps the best ones
    best_model_state: PyTree = None       # their model state (None for a stateless model)


def save(path: str | os.PathLike, saved: TrainingCheckpoint) -> None:
    """Write ``saved`` to ``path`` atomically; history values are stored as float64 arrays."""
    history = {name: np.asarray(values, dtype=np.float64)
               for name, values in saved.history.items()}
    stopping = saved.stopping
    if stopping is not None:
        stopping = EarlyStoppingState(float(stopping.best), int(stopping.best_epoch),
                                      int(stopping.wait))
    checkpoint.save(path, saved._replace(history=history, epoch=int(saved.epoch),
                                         stopping=stopping))


def load(path: str | os.PathLike, state_like: TrainState) -> TrainingCheckpoint:
    """Read a checkpoint written by ``save``.

    The training state and best parameters are restored against ``state_like`` (same
    structure, shapes and dtypes, placed as they are: committed leaves on their sharding,
    uncommitted ones uncommitted, so the train step compiled for a fresh state is reused),
    and a checkpoint of a different model raises ``checkpoint.CheckpointError`` saying where.
    """
    saved = checkpoint.restore(path)
    if not isinstance(saved, TrainingCheckpoint):
        raise checkpoint.CheckpointError(f"{path}: not a training checkpoint written by fit")
    like = saved._replace(
        state=state_like,
        best_params=None if saved.best_params is None else state_like.params,
        best_model_state=(None if saved.best_model_state is None
                          else state_like.model_state))
    restored = checkpoint.restore(path, like=like)
    return restored._replace(history={name: [float(v) for v in values]
                                      for name, values in restored.history.items()})
