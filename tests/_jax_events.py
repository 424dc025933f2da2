"""Test helper: JAX's trace and compile events, recorded through ``jax.monitoring``.

Tests that promise "traces once" or "compiles once" count these events.  A trace is cached
on shapes and dtypes; a compiled program also depends on shardings and commitment, so a
second compilation for a new placement of the same shapes shows only as a compile event.
JAX reports both as duration events whose ``fun_name`` names the function (``f`` for a
trace, ``jit(f)`` for a compilation).
"""
import contextlib

import jax

TRACE = "jaxpr_trace_duration"
COMPILE = "backend_compile_duration"


@contextlib.contextmanager
def recording_jax_events():
    """Yields a list that fills with ``(kind, fun_name)``, kind ``TRACE`` or ``COMPILE``."""
    events = []

    def listener(name, duration, **kwargs):
        kind = name.rsplit("/", 1)[-1]
        if kind in (TRACE, COMPILE):
            events.append((kind, kwargs.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def compilations_of(events, function_name: str) -> int:
    """How many of ``events`` compiled the jitted function named ``function_name``."""
    return sum(1 for kind, name in events if kind == COMPILE and name == f"jit({function_name})")


def traces(events) -> int:
    """How many of ``events`` were traces (of any function)."""
    return sum(1 for kind, _ in events if kind == TRACE)
