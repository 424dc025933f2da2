"""Progress output for ``fit``: a tqdm bar on a terminal, otherwise one plain line per epoch.

tqdm is optional: without it (or when stdout is not a terminal, e.g. a log file or CI) each
finished epoch prints ``epoch  3/20  loss 0.3412  val_loss 0.3511  (0.41 s)``.
"""
from __future__ import annotations

import sys
from typing import Any

from functional_dl import checks

MODES = ("auto", "bar", "lines", "none")


def format_logs(logs: dict[str, float]) -> str:
    """``"loss 0.3412  val_loss 0.3511"`` from ``{"loss": 0.3412, "val_loss": 0.3511}``."""
    return "  ".join(f"{name} {value:.4f}" for name, value in logs.items())


def _tqdm_or_none() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class _Lines:
    """One printed line per epoch."""

    def __init__(self, total: int, stream: Any):
        self.total, self.stream, self.width = total, stream, len(str(total))

    def epoch_done(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        print(f"epoch {epoch:>{self.width}}/{self.total}  {format_logs(logs)}  ({seconds:.2f} s)",
              file=self.stream, flush=True)

    def close(self) -> None:
        pass


class _Silent(_Lines):
    def epoch_done(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        pass


class _Bar:
    """A tqdm bar over epochs whose postfix shows the latest epoch's metrics."""

    def __init__(self, tqdm: Any, total: int, initial: int, stream: Any):
        self.bar = tqdm(total=total, initial=initial, unit="epoch", file=stream,
                        dynamic_ncols=True)

    def epoch_done(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        self.bar.set_postfix_str(format_logs(logs), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def make_reporter(mode: str, total: int, initial: int = 0, stream: Any = None):
    """A reporter with ``epoch_done(epoch, logs, seconds)`` and ``close()``.

    ``mode``: ``"auto"`` (bar when tqdm is installed and ``stream`` is a terminal, else lines),
    ``"bar"`` (bar when tqdm is installed, else lines), ``"lines"`` or ``"none"``.
    """
    checks.one_of("progress", mode, MODES)
    stream = sys.stdout if stream is None else stream
    if mode == "none":
        return _Silent(total, stream)
    tqdm = _tqdm_or_none() if mode in ("auto", "bar") else None
    is_terminal = bool(getattr(stream, "isatty", lambda: False)())
    if tqdm is not None and (mode == "bar" or is_terminal):
        return _Bar(tqdm, total, initial, stream)
    return _Lines(total, stream)
