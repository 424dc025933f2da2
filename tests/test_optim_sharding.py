"""Optimizer state keeps the parameters' sharding (FSDP-style sharded models), 8 fake devices.

JAX fixes its device count when it starts, so the checks run once in a subprocess started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (this file run as a script prints
a JSON report).  For every optimizer instance of the registry (``tests/_optimizers.py``) and
every wrapper in ``SHARDING_CASES`` there, each state leaf shaped like a parameter must have
that parameter's sharding after ``init`` and after a jitted ``update``.  The three parameter
shapes differ, so a leaf's shape says which parameter it belongs to.
"""
import json
import pathlib
import sys

import pytest

from _fake_devices import report_from_script

NUM_DEVICES = 8
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _report() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import _optimizers

    mesh = Mesh(np.array(jax.devices()), ("x",))
    specs = {"w": P("x", None), "b": P(), "v": P(None, "x")}
    shapes = {"w": (16, 8), "b": (8,), "v": (8, 16)}
    params = {name: jax.device_put(jnp.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape),
                                   NamedSharding(mesh, specs[name]))
              for name, shape in shapes.items()}
    by_shape = {shape: params[name].sharding for name, shape in shapes.items()}
    grads = jax.tree.map(lambda p: 0.1 * p, params)

    def wrong_leaves(state) -> list[str]:
        wrong = []
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            want = by_shape.get(tuple(leaf.shape))
            if want is not None and not leaf.sharding.is_equivalent_to(want, leaf.ndim):
                wrong.append(f"{jax.tree_util.keystr(path)}: {leaf.sharding} (want {want})")
        return wrong

    cases = {**_optimizers.instances(0.01), **_optimizers.sharding_cases(0.01)}
    failures = {}
    for name, optimizer in cases.items():
        state = optimizer.init(params)
        bad = wrong_leaves(state)
        _, stepped = jax.jit(optimizer.update)(grads, state, params)
        bad += [f"after update {entry}" for entry in wrong_leaves(stepped)]
        num_sharded = sum(leaf.ndim > 0 for leaf in jax.tree.leaves(state))
        if bad:
            failures[name] = bad
        elif num_sharded == 0 and name not in _optimizers.STATELESS:
            failures[name] = ["no parameter-shaped state leaf was checked"]
    return {"num_devices": jax.device_count(), "checked": sorted(cases), "failures": failures}


@pytest.fixture(scope="module")
def report():
    return report_from_script(__file__, NUM_DEVICES)


def test_every_optimizer_and_wrapper_was_checked_on_eight_devices(report):
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import _optimizers
    assert report["num_devices"] == NUM_DEVICES
    want = set(_optimizers.INSTANCES) | set(_optimizers.sharding_cases(0.01))
    assert set(report["checked"]) == want


def test_state_leaves_keep_their_parameters_sharding(report):
    assert report["failures"] == {}


if __name__ == "__main__":
    print(json.dumps(_report()))
