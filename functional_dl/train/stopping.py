"""Early stopping: its options, its state, and the pure update ``fit`` applies once per epoch.

With ``v_e`` the monitored metric after epoch ``e`` (1-based), ``mode="min"`` and
``δ = min_delta``:

    improved_e = v_e < best − δ          (mode="max": v_e > best + δ)
    (best, best_epoch, wait) ← (v_e, e, 0)            if improved_e
                               (best, best_epoch, wait + 1)  otherwise
    stop after epoch e        ⇔ wait >= patience

starting from ``(best, best_epoch, wait) = (+∞, 0, 0)`` (``−∞`` for ``"max"``).  A NaN value
never improves.  The state is three numbers, so ``fit`` checkpoints it and a resumed run
stops where the uninterrupted one would::

    options = EarlyStopping(patience=3)
    state = options.init()
    for epoch in range(1, epochs + 1):
        ...                                            # train, evaluate: logs
        state = options.update(state, logs["val_loss"], epoch)
        if options.should_stop(state):
            break
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

from functional_dl import checks

MODES = ("min", "max")


class EarlyStoppingState(NamedTuple):
    """``best``: the best monitored value so far; ``best_epoch``: its (1-based) epoch, 0 before
    any; ``wait``: epochs since then."""
    best: float
    best_epoch: int
    wait: int


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop training after ``patience`` epochs without improvement of ``monitor``.

    Attributes:
      patience: epochs without improvement after which training stops (int >= 1).
      monitor: the logged metric to watch (``fit``'s history names: ``"loss"``, an aux
        metric, ``"val_loss"``, ...); ``None`` means ``"val_loss"`` when ``fit`` has
        validation data, else ``"loss"``.
      mode: ``"min"`` (lower is better) or ``"max"``.
      min_delta: how much the value must beat the best to count as an improvement (>= 0).
      restore_best: ``fit`` returns the parameters of the best epoch (its optimizer state and
        ``on_step`` state are the last ones).

    Raises (at construction): TypeError for a wrong kind, ValueError for a wrong value,
    naming the attribute.
    """
    patience: int
    monitor: Optional[str] = None
    mode: str = "min"
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        object.__setattr__(self, "patience",
                           checks.whole_number("EarlyStopping: patience", self.patience,
                                               minimum=1))
        if self.monitor is not None and not isinstance(self.monitor, str):
            raise TypeError("EarlyStopping: monitor must be None or a metric name such as "
                            f"'val_loss', got {checks.describe(self.monitor)}")
        checks.one_of("EarlyStopping: mode", self.mode, MODES)
        checks.non_negative("EarlyStopping: min_delta", self.min_delta)
        object.__setattr__(self, "min_delta", float(self.min_delta))
        object.__setattr__(self, "restore_best",
                           checks.boolean("EarlyStopping: restore_best", self.restore_best))

    def init(self) -> EarlyStoppingState:
        """The state before the first epoch: nothing seen yet."""
        return EarlyStoppingState(math.inf if self.mode == "min" else -math.inf, 0, 0)

    def improves(self, state: EarlyStoppingState, value: float) -> bool:
        """Whether ``value`` beats ``state.best`` by more than ``min_delta``."""
        if self.mode == "min":
            return value < state.best - self.min_delta
        return value > state.best + self.min_delta

    def update(self, state: EarlyStoppingState, value: float, epoch: int) -> EarlyStoppingState:
        """The state after epoch ``epoch`` (1-based) whose monitored value is ``value``."""
        if self.improves(state, value):
            return EarlyStoppingState(float(value), int(epoch), 0)
        return state._replace(wait=state.wait + 1)

    def should_stop(self, state: EarlyStoppingState) -> bool:
        """``wait >= patience``."""
        return state.wait >= self.patience
