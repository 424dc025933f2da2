"""Timing helpers shared by the benchmark scripts (not part of the library).

``time_fn`` reports the median wall time of several repeats after one warm-up call, and
the compile time separately, blocking on every output so asynchronous dispatch is counted.
"""
from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable

import jax


def block(tree: Any) -> Any:
    """Wait until every array in ``tree`` is computed."""
    return jax.block_until_ready(tree)


def time_fn(fn: Callable[[], Any], *, repeats: int = 7, number: int = 1) -> dict:
    """Median seconds per call of ``fn`` (a thunk) over ``repeats`` runs of ``number`` calls.

    The first call is timed on its own and reported as ``first`` (compile + one run).
    """
    t0 = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t0
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            out = fn()
        block(out)
        samples.append((time.perf_counter() - t0) / number)
    return {"median": statistics.median(samples), "min": min(samples), "first": first}


def machine_description() -> str:
    """One line naming the backend, device and CPU, for RESULTS.md."""
    dev = jax.devices()[0]
    return (f"jax {jax.__version__}, backend {jax.default_backend()}, device {dev.device_kind}, "
            f"{platform.machine()} {platform.processor() or ''}".strip())


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    """Print a Markdown table (so it can be pasted into RESULTS.md)."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        print("| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in r) + " |")
