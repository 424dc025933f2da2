"""Test helper: run a test module as a script in a subprocess that sees N fake CPU devices.

JAX fixes its device count when it starts, so a multi-device check runs once in a fresh
interpreter started with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``; the script
prints a JSON report as its last line, and the tests assert on that report.
"""
import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def report_from_script(script: str, num_devices: int, timeout: int = 600) -> dict:
    """The JSON report that ``python script`` prints on ``num_devices`` fake CPU devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={num_devices}").strip(),
               PYTHONPATH=os.pathsep.join(
                   [str(REPO_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
