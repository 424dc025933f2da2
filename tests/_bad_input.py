"""Shared pieces of the bad-input tables, one table per area (``tests/test_bad_input_*.py``).

A case is ``call(files)``: ``files`` holds checkpoint files written once per module (a good
one, a truncated one, one with flipped bytes, one of junk); the other cases ignore it.  A
batch that does not divide by the device count needs several devices and is checked in
``test_distributed.py``; here the mesh has the one default device.
"""
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import (checkpoint, datasets, distributed, hmm, losses, nn, optim,
                           perceptron, regularizers, train)

KEY = jax.random.key(0)
PARAMS = {"w": jnp.ones(3), "b": jnp.zeros(())}
X4 = np.ones((4, 2), np.float32)
Y_SIGNS = np.array([1, -1, 1, -1])

INITIAL = jnp.array([0.6, 0.4])
TRANSITION = jnp.array([[0.9, 0.1], [0.2, 0.8]])
SYMBOL_PROBS = jnp.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
SYMBOLS = jnp.array([0, 1, 2, 1])
CATEGORICAL_HMM = hmm.HMM(INITIAL, TRANSITION, hmm.Categorical(SYMBOL_PROBS))
MEANS = jnp.zeros((2, 2))
COVARIANCES = jnp.stack([jnp.eye(2), jnp.eye(2)])
VECTORS = jnp.zeros((5, 2))


def categorical_hmm(initial=INITIAL, transition=TRANSITION, probs=SYMBOL_PROBS):
    return hmm.HMM(jnp.asarray(initial), jnp.asarray(transition),
                   hmm.Categorical(jnp.asarray(probs)))


def gaussian_hmm(means=MEANS, covariances=COVARIANCES):
    return hmm.HMM(INITIAL, TRANSITION, hmm.Gaussian(jnp.asarray(means), jnp.asarray(covariances)))


def optimizer_update(optimizer, grads, params=PARAMS):
    return optimizer.update(grads, optimizer.init(params), params)


def squared_loss(params, batch, key):
    (x,) = batch
    return jnp.mean((x @ params["w"][:2]) ** 2)


def per_example_loss(params, batch, key):
    (x,) = batch
    return (x @ params["w"][:2]) ** 2                  # not reduced: not a scalar


def fit(loss_fn=squared_loss, data=(X4,), **options):
    options = {"key": KEY, "epochs": 1, "batch_size": 2, "progress": "none", **options}
    return train.fit(loss_fn, optim.sgd(0.1), PARAMS, data, **options)


def case(name, call, error, argument):
    return pytest.param(call, error, argument, id=name)


ONE_DEVICE_MESH = distributed.make_mesh()
TWO_LAYER_MLP = nn.mlp([3, 2])
MLP_PARAMS_WITHOUT_LAST_LAYER = {"dense_0": {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good checkpoint and three damaged copies of it."""
    folder = tmp_path_factory.mktemp("checkpoints")
    good = checkpoint.save(folder / "good.npz", {"w": jnp.ones(3), "step": jnp.int32(4)})
    data = good.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    paths = {"good": good, "truncated": folder / "truncated.npz",
             "flipped": folder / "flipped.npz", "junk": folder / "junk.npz"}
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["flipped"].write_bytes(bytes(flipped))
    paths["junk"].write_bytes(b"not an archive at all")
    return types.SimpleNamespace(**paths)


def raises_naming(call, error, argument, files):
    """Assert ``call(files)`` raises ``error`` with a message matching ``argument``."""
    with pytest.raises(Exception) as raised:
        call(files)
    assert isinstance(raised.value, error), (
        f"expected {error.__name__}, got {type(raised.value).__name__}: {raised.value}")
    assert re.search(argument, str(raised.value)), (
        f"message does not name {argument!r}: {raised.value}")


def table_tests(cases):
    """The two tests every bad-input table runs: unique case names, and each case raising."""
    def test_case_names_are_unique():
        names = [param.id for param in cases]
        assert len(set(names)) == len(names)

    @pytest.mark.parametrize("call, error, argument", cases)
    def test_bad_input_raises_a_clear_error_naming_the_argument(call, error, argument, files):
        raises_naming(call, error, argument, files)

    return test_case_names_are_unique, test_bad_input_raises_a_clear_error_naming_the_argument

