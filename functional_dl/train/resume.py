"""What ``fit`` saves to resume a run bit-identically, on top of ``functional_dl.checkpoint``.

A training checkpoint is taken at an epoch boundary and holds everything the rest of the run
depends on: parameters, optimizer state, the run's PRNG key (epoch ``e`` derives its keys
from ``fold_in(key, e)``), the number of finished epochs, the history so far and the
early-stopping state (best value, its epoch, epochs waited, best parameters).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl._types import PRNGKey, PyTree


class TrainingCheckpoint(NamedTuple):
    params: PyTree
    opt_state: PyTree
    key: PRNGKey
    epoch: int                       # epochs finished
    history: dict[str, list[float]]
    best: float                      # early stopping: best monitored value so far
    best_epoch: int
    wait: int                        # epochs since the best one
    best_params: PyTree              # None unless early stopping keeps the best parameters


def _is_typed_key(key) -> bool:
    return jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key)


def _as_tree(state: TrainingCheckpoint) -> dict:
    key = state.key
    key_data = np.asarray(jax.random.key_data(key) if _is_typed_key(key) else key)
    tree = {
        "params": state.params,
        "opt_state": state.opt_state,
        "key_data": key_data,
        "epoch": np.asarray(state.epoch, dtype=np.int32),
        "history": {name: np.asarray(values, dtype=np.float64)
                    for name, values in state.history.items()},
        "early_stopping": {"best": np.asarray(state.best, dtype=np.float64),
                           "best_epoch": np.asarray(state.best_epoch, dtype=np.int32),
                           "wait": np.asarray(state.wait, dtype=np.int32)},
    }
    if state.best_params is not None:
        tree["best_params"] = state.best_params
    return tree


def save(path: str | os.PathLike, state: TrainingCheckpoint) -> None:
    """Write ``state`` to ``path`` atomically (via ``functional_dl.checkpoint.save``)."""
    from functional_dl import checkpoint
    checkpoint.save(path, _as_tree(state))


def load(path: str | os.PathLike, params_like: PyTree, opt_state_like: PyTree,
         key_like: PRNGKey) -> TrainingCheckpoint:
    """Read a checkpoint written by ``save``; params and optimizer state must match the likes.

    Raises the checkpoint module's error when the saved structure, shapes or dtypes differ
    from ``params_like`` / ``opt_state_like``.
    """
    from functional_dl import checkpoint
    raw = checkpoint.restore(path)
    like = {
        "params": params_like,
        "opt_state": opt_state_like,
        "key_data": raw["key_data"],
        "epoch": raw["epoch"],
        "history": raw["history"],
        "early_stopping": raw["early_stopping"],
    }
    if "best_params" in raw:
        like["best_params"] = params_like
    tree = checkpoint.restore(path, like=like)
    key_data = jnp.asarray(tree["key_data"])
    key = (jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(key_like))
           if _is_typed_key(key_like) else key_data)
    stopping = tree["early_stopping"]
    return TrainingCheckpoint(
        params=tree["params"], opt_state=tree["opt_state"], key=key,
        epoch=int(tree["epoch"]),
        history={name: [float(v) for v in np.asarray(values)]
                 for name, values in tree["history"].items()},
        best=float(stopping["best"]), best_epoch=int(stopping["best_epoch"]),
        wait=int(stopping["wait"]), best_params=tree.get("best_params"))
