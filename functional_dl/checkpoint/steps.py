"""Numbered checkpoints for training loops: ``directory/checkpoint_<step>.npz``."""
from __future__ import annotations

import os
import pathlib
import re
from typing import Optional

from functional_dl import checks
from functional_dl._types import PyTree
from functional_dl.checkpoint._io import restore, save

_STEP_FILE = re.compile(r"^checkpoint_(\d+)\.npz$")


def step_path(directory: str | os.PathLike, step: int) -> pathlib.Path:
    """``directory/checkpoint_<step, 8 digits>.npz``."""
    step = checks.whole_number("step", step, minimum=0)
    return pathlib.Path(directory) / f"checkpoint_{step:08d}.npz"


def list_steps(directory: str | os.PathLike) -> list[int]:
    """Steps that have a checkpoint in ``directory``, ascending ([] if it does not exist)."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return sorted(int(m.group(1)) for m in map(_STEP_FILE.match, names) if m)


def latest_step(directory: str | os.PathLike) -> Optional[int]:
    """The highest saved step in ``directory``, or None when there is none."""
    steps = list_steps(directory)
    return steps[-1] if steps else None


def save_step(directory: str | os.PathLike, step: int, tree: PyTree, *,
              keep: Optional[int] = None, compress: bool = False) -> pathlib.Path:
    """Save ``tree`` as step ``step``; with ``keep``, keep it and the ``keep − 1`` highest other
    steps, and delete the rest.

    The step just written is never deleted, also when higher-numbered steps of an earlier
    run are in ``directory`` (those count as the "other" steps; with ``keep=1`` they go).
    """
    keep = None if keep is None else checks.whole_number("keep", keep, minimum=1)
    path = save(step_path(directory, step), tree, compress=compress)
    if keep is not None:
        others = [s for s in list_steps(directory) if s != step]
        for old in others[:max(len(others) - (keep - 1), 0)]:
            step_path(directory, old).unlink(missing_ok=True)
    return path


def restore_step(directory: str | os.PathLike, step: Optional[int] = None,
                 like: PyTree = None) -> PyTree:
    """Restore step ``step`` (default: the latest) from ``directory``."""
    if step is None:
        step = latest_step(directory)
        if step is None:
            raise FileNotFoundError(f"no checkpoint_*.npz in {directory}")
    return restore(step_path(directory, step), like=like)
