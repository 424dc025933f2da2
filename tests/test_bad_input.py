"""Bad input across the public API: each case raises the stated exception type, with a
message that names the offending argument (a regular expression searched in the message).

One table, one test.  A case is ``call(files)``: ``files`` holds checkpoint files written
once per module (a good one, a truncated one, one with flipped bytes, one of junk); the
other cases ignore it.  A batch that does not divide by the device count needs several
devices and is checked in ``test_distributed.py``; here the mesh has the one default device.
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

CASES = [
    # ---- optim: hyperparameters
    case("adam negative learning_rate", lambda f: optim.adam(-1.0), ValueError, "learning_rate"),
    case("adam b1 = 1", lambda f: optim.adam(1e-3, b1=1.0), ValueError, r"\bb1\b"),
    case("adam negative b2", lambda f: optim.adam(1e-3, b2=-0.1), ValueError, r"\bb2\b"),
    case("adam eps = 0", lambda f: optim.adam(1e-3, eps=0.0), ValueError, r"\beps\b"),
    case("adamw negative weight_decay", lambda f: optim.adamw(1e-3, weight_decay=-1.0),
         ValueError, "weight_decay"),
    case("rmsprop decay > 1", lambda f: optim.rmsprop(1e-3, decay=1.5), ValueError, "decay"),
    case("momentum beta = 1", lambda f: optim.momentum(0.1, beta=1.0), ValueError, "beta"),
    case("sgd learning_rate array", lambda f: optim.sgd(jnp.ones(3)), ValueError,
         "learning_rate"),
    case("sgd learning_rate NaN", lambda f: optim.sgd(float("nan")), ValueError, "learning_rate"),
    case("clip max_norm = 0", lambda f: optim.clip_by_global_norm(0.0), ValueError, "max_norm"),
    case("cosine_decay decay_steps = 0", lambda f: optim.schedules.cosine_decay(0.1, 0),
         ValueError, "decay_steps"),
    case("piecewise_constant value count",
         lambda f: optim.schedules.piecewise_constant([10], [1.0]), ValueError, "values"),
    case("chain member not an optimizer", lambda f: optim.chain(optim.sgd(0.1), "adam"),
         TypeError, "argument 1"),
    # ---- optim: trees and dtypes
    case("adam init integer params", lambda f: optim.adam(1e-3).init({"w": jnp.ones(3, jnp.int32)}),
         TypeError, r"params\['w'\]"),
    case("sgd grads tree differs from params",
         lambda f: optimizer_update(optim.sgd(0.1), {"w": jnp.ones(3)}), ValueError, "grads"),
    case("adam grads leaf shape", lambda f: optimizer_update(
        optim.adam(1e-3), {"w": jnp.ones(4), "b": jnp.zeros(())}), ValueError, r"grads\['w'\]"),
    case("momentum integer grads", lambda f: optimizer_update(
        optim.momentum(0.1), {"w": jnp.ones(3, jnp.int32), "b": jnp.zeros(())}),
        TypeError, r"grads\['w'\]"),
    case("apply_updates tree differs", lambda f: optim.apply_updates(PARAMS, {"w": jnp.ones(3)}),
         ValueError, "updates"),
    # ---- losses
    case("softmax_cross_entropy shapes", lambda f: losses.softmax_cross_entropy(
        jnp.zeros((4, 3)), jnp.zeros((4, 2))), ValueError, "labels"),
    case("integer labels out of range", lambda f: losses.softmax_cross_entropy_with_integer_labels(
        jnp.zeros((4, 3)), jnp.array([0, 1, 2, 3])), ValueError, "labels"),
    case("integer labels of float dtype",
         lambda f: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((4, 3)),
                                                                    jnp.zeros(4)),
         TypeError, "labels"),
    case("integer labels batch shape", lambda f: losses.softmax_cross_entropy_with_integer_labels(
        jnp.zeros((4, 3)), jnp.zeros(5, jnp.int32)), ValueError, "labels"),
    case("integer logits", lambda f: losses.softmax_cross_entropy(
        jnp.zeros((4, 3), jnp.int32), jnp.zeros((4, 3))), TypeError, "logits"),
    case("squared_error shapes", lambda f: losses.squared_error(jnp.zeros(4), jnp.zeros(5)),
         ValueError, "targets"),
    case("hinge labels 0/1", lambda f: losses.hinge_loss(jnp.zeros(4), jnp.array([0, 1, 0, 1])),
         ValueError, "labels"),
    case("l2_penalty mask structure", lambda f: regularizers.l2_penalty(PARAMS, {"w": True}),
         ValueError, "mask"),
    # ---- nn
    case("Dropout rate = 1", lambda f: nn.Dropout(1.0), ValueError, "rate"),
    case("Dropout without key", lambda f: nn.Dropout(0.5).apply({}, jnp.ones(3), train=True),
         ValueError, "key"),
    case("mlp empty layer_sizes", lambda f: nn.mlp([]), ValueError, "layer_sizes"),
    case("mlp unknown activation", lambda f: nn.mlp([3], activation="swish"), ValueError,
         "activation"),
    case("Dense out_dim = 0", lambda f: nn.Dense(0), ValueError, "out_dim"),
    case("Dense input features", lambda f: nn.Dense(3).apply(
        {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}, jnp.ones((2, 5))), ValueError, r"\bx\b"),
    case("Dense input_shape with a 0", lambda f: nn.Dense(3).init(KEY, (-1, 0)), ValueError,
         "input_shape"),
    case("serial params name of no layer", lambda f: nn.mlp([3]).apply(
        {**MLP_PARAMS_WITHOUT_LAST_LAYER, "dense_7": {}}, jnp.ones((2, 4))), ValueError, "params"),
    case("mlp params missing a layer", lambda f: TWO_LAYER_MLP.apply(
        MLP_PARAMS_WITHOUT_LAST_LAYER, jnp.ones((2, 4))), ValueError, "params"),
    case("Dense input_shape not numbers", lambda f: nn.Dense(3).init(KEY, "abc"), TypeError,
         "input_shape"),
    case("he_normal integer dtype", lambda f: nn.initializers.he_normal()(KEY, (3, 3), jnp.int32),
         TypeError, "dtype"),
    case("Conv2D params without a kernel", lambda f: nn.Conv2D(2, 3).apply(
        {"b": jnp.zeros(2)}, jnp.ones((1, 4, 4, 1))), ValueError, "params"),
    case("Conv2D fractional strides", lambda f: nn.Conv2D(2, 3, strides=1.5), ValueError,
         "strides"),
    case("backprop class target out of range", lambda f: nn.backprop.backprop(
        TWO_LAYER_MLP.init(KEY, (-1, 4))[1], jnp.ones((2, 4)), jnp.array([0, 2])), ValueError,
        "targets"),
    # ---- perceptron
    case("perceptron labels 0/1", lambda f: perceptron.fit(X4, np.array([0, 1, 0, 1])),
         ValueError, r"\by\b"),
    case("perceptron length mismatch", lambda f: perceptron.fit(X4, Y_SIGNS[:3]), ValueError,
         "X and y"),
    case("perceptron epochs = 0", lambda f: perceptron.fit(X4, Y_SIGNS, epochs=0), ValueError,
         "epochs"),
    case("perceptron learning_rate = 0", lambda f: perceptron.fit(X4, Y_SIGNS, learning_rate=0.0),
         ValueError, "learning_rate"),
    case("perceptron 1-d X", lambda f: perceptron.fit(np.ones(4), Y_SIGNS), ValueError, r"\bX\b"),
    case("one-vs-rest label >= n_classes", lambda f: perceptron.fit_one_vs_rest(
        X4, np.array([0, 1, 2, 3]), 3), ValueError, r"\by\b"),
    case("one-vs-rest n_classes = 1", lambda f: perceptron.fit_one_vs_rest(
        X4, np.zeros(4, np.int32), 1), ValueError, "n_classes"),
    case("perceptron predict features", lambda f: perceptron.predict(PARAMS, X4), ValueError,
         r"\bX\b"),
    case("perceptron NaN feature", lambda f: perceptron.fit(
        np.array([[0.0, np.nan]] * 4), Y_SIGNS), ValueError, r"\bX\b"),
    case("perceptron key not a key", lambda f: perceptron.fit(X4, Y_SIGNS, key=0), TypeError,
         r"\bkey\b"),
    # ---- hmm
    case("negative initial probability", lambda f: hmm.log_likelihood(
        categorical_hmm(initial=[1.2, -0.2]), SYMBOLS), ValueError, "initial_probs"),
    case("transition rows not summing to 1", lambda f: hmm.log_likelihood(
        categorical_hmm(transition=[[0.9, 0.2], [0.2, 0.8]]), SYMBOLS), ValueError,
        "transition_matrix"),
    case("emission rows not summing to 1", lambda f: hmm.posteriors(
        categorical_hmm(probs=[[0.5, 0.6, 0.0], [0.1, 0.2, 0.7]]), SYMBOLS), ValueError,
        r"emissions\.probs"),
    case("K of transition_matrix", lambda f: hmm.log_likelihood(
        categorical_hmm(transition=jnp.eye(3)), SYMBOLS), ValueError, "transition_matrix"),
    case("K of emissions", lambda f: hmm.log_likelihood(
        categorical_hmm(probs=jnp.ones((3, 3)) / 3), SYMBOLS), ValueError, "emissions"),
    case("symbol >= V", lambda f: hmm.log_likelihood(CATEGORICAL_HMM, jnp.array([0, 3, 1])),
         ValueError, "observations"),
    case("negative symbol (viterbi)", lambda f: hmm.viterbi(CATEGORICAL_HMM, jnp.array([0, -1])),
         ValueError, "observations"),
    case("symbol >= V (parallel)", lambda f: hmm.parallel.log_likelihood(
        CATEGORICAL_HMM, jnp.array([0, 3, 1])), ValueError, "observations"),
    case("float symbols", lambda f: hmm.log_likelihood(CATEGORICAL_HMM, jnp.array([0.0, 1.0])),
         TypeError, "observations"),
    case("D of observations", lambda f: hmm.log_likelihood(gaussian_hmm(), jnp.zeros((5, 3))),
         ValueError, "observations"),
    case("D of covariances", lambda f: hmm.log_likelihood(
        gaussian_hmm(covariances=jnp.stack([jnp.eye(3)] * 2)), VECTORS), ValueError,
        "covariances"),
    case("covariance not positive-definite", lambda f: hmm.log_likelihood(
        gaussian_hmm(covariances=jnp.stack([jnp.eye(2), jnp.array([[1.0, 2.0], [2.0, 1.0]])])),
        VECTORS), ValueError, "covariances"),
    case("zero variance", lambda f: hmm.log_likelihood(hmm.HMM(
        INITIAL, TRANSITION, hmm.DiagonalGaussian(MEANS, jnp.array([[1.0, 1.0], [0.0, 1.0]]))),
        VECTORS), ValueError, "variances"),
    case("length 0", lambda f: hmm.log_likelihood(CATEGORICAL_HMM, SYMBOLS, 0), ValueError,
         "length"),
    case("length > T", lambda f: hmm.log_likelihood(CATEGORICAL_HMM, SYMBOLS, 9), ValueError,
         "length"),
    case("Baum-Welch lengths shape", lambda f: hmm.baum_welch(
        CATEGORICAL_HMM, jnp.zeros((2, 4), jnp.int32), jnp.array([4, 4, 4])), ValueError,
        "lengths"),
    case("Baum-Welch max_iter = 0", lambda f: hmm.baum_welch(
        CATEGORICAL_HMM, jnp.zeros((2, 4), jnp.int32), max_iter=0), ValueError, "max_iter"),
    case("sample num_steps = 0", lambda f: hmm.sample(KEY, CATEGORICAL_HMM, 0), ValueError,
         "num_steps"),
    case("model not an HMM", lambda f: hmm.log_likelihood((INITIAL, TRANSITION), SYMBOLS),
         TypeError, "model"),
    # ---- train
    case("batches batch_size = 0", lambda f: train.batches(KEY, (X4,), 0), ValueError,
         "batch_size"),
    case("batches batch_size float", lambda f: train.batches(KEY, (X4,), 2.5), TypeError,
         "batch_size"),
    case("batches arrays of different lengths", lambda f: train.batches(
        KEY, (X4, np.ones(3)), 2), ValueError, "arrays"),
    case("batches without key", lambda f: train.batches(None, (X4,), 2), ValueError, "key"),
    case("train step with a non-scalar loss", lambda f: train.make_train_step(
        per_example_loss, optim.sgd(0.1))(PARAMS, optim.sgd(0.1).init(PARAMS), (X4,), None),
        ValueError, "loss_fn"),
    case("train step with a non-optimizer", lambda f: train.make_train_step(squared_loss, object()),
         TypeError, "optimizer"),
    case("fit epochs = 0", lambda f: fit(epochs=0), ValueError, "epochs"),
    case("fit batch_size = 0", lambda f: fit(batch_size=0), ValueError, "batch_size"),
    case("fit train_data of different lengths", lambda f: fit(data=(X4, np.ones(3))),
         ValueError, "train_data"),
    case("fit with a non-scalar loss", lambda f: fit(loss_fn=per_example_loss), ValueError,
         "loss_fn"),
    case("fit checkpoint_every without path", lambda f: fit(checkpoint_every=1), ValueError,
         "checkpoint_path"),
    case("evaluate batch_size = 0", lambda f: train.evaluate(lambda p, b: 0.0, PARAMS, (X4,), 0),
         ValueError, "batch_size"),
    case("accuracy with float labels", lambda f: train.accuracy(jnp.ones((4, 3)), jnp.ones(4)),
         TypeError, "labels"),
    case("accuracy shapes", lambda f: train.accuracy(jnp.ones((4, 3)), jnp.ones(5, jnp.int32)),
         ValueError, "labels"),
    # ---- datasets
    case("train_test_split test_size > 1", lambda f: datasets.train_test_split(
        KEY, X4, test_size=1.5), ValueError, "test_size"),
    case("train_test_split lengths", lambda f: datasets.train_test_split(KEY, X4, np.ones(3)),
         ValueError, "arrays"),
    case("train_test_split without key", lambda f: datasets.train_test_split(None, X4),
         ValueError, "key"),
    case("standardize trailing shapes", lambda f: datasets.standardize(
        np.ones((4, 3)), np.ones((2, 2))), ValueError, "test"),
    case("load_digits integer dtype", lambda f: datasets.load_digits(dtype=np.int32), TypeError,
         "dtype"),
    # ---- checkpoint
    case("restore a truncated file", lambda f: checkpoint.restore(f.truncated),
         checkpoint.CheckpointError, "truncated"),
    case("restore a file with flipped bytes", lambda f: checkpoint.restore(f.flipped),
         checkpoint.CheckpointError, "corrupt"),
    case("restore a file that is no checkpoint", lambda f: checkpoint.restore(f.junk),
         checkpoint.CheckpointError, "not a checkpoint"),
    case("restore like with other keys", lambda f: checkpoint.restore(
        f.good, like={"w": jnp.ones(3)}), checkpoint.CheckpointError, "like"),
    case("restore like with another shape", lambda f: checkpoint.restore(
        f.good, like={"w": jnp.ones(4), "step": jnp.int32(0)}), checkpoint.CheckpointError,
        r"like.*\[4\]|\[4\].*like"),
    case("save a function", lambda f: checkpoint.save(f.good.parent / "bad.npz",
                                                      {"f": print}), TypeError, r"tree\['f'\]"),
    # ---- distributed
    case("make_mesh without devices", lambda f: distributed.make_mesh(devices=[]), ValueError,
         "devices"),
    case("make_mesh empty axis_name", lambda f: distributed.make_mesh(axis_name=""), ValueError,
         "axis_name"),
    case("make_mesh repeated device", lambda f: distributed.make_mesh(
        devices=jax.devices()[:1] * 2), ValueError, "devices"),
    case("shard_batch scalar leaf", lambda f: distributed.shard_batch(
        {"x": jnp.ones(())}, ONE_DEVICE_MESH), ValueError, "batch"),
    case("shard_batch leaves of different lengths", lambda f: distributed.shard_batch(
        (X4, np.ones(3)), ONE_DEVICE_MESH), ValueError, "batch"),
    case("shard_batch without a mesh", lambda f: distributed.shard_batch(X4, "data"), TypeError,
         "mesh"),
    case("shard_batch unknown axis_name", lambda f: distributed.shard_batch(
        X4, ONE_DEVICE_MESH, axis_name="model"), ValueError, "axis_name"),
    case("replicate without a mesh", lambda f: distributed.replicate(PARAMS, None), TypeError,
         "mesh"),
    # ---- empty arrays
    case("perceptron on no samples", lambda f: perceptron.fit(np.zeros((0, 2)), np.zeros(0)),
         ValueError, "X and y"),
    case("hmm sequence of no steps", lambda f: hmm.log_likelihood(
        CATEGORICAL_HMM, jnp.zeros(0, jnp.int32)), ValueError, "observations"),
    case("standardize no training rows", lambda f: datasets.standardize(
        np.zeros((0, 3)), np.zeros((2, 3))), ValueError, "train"),
    case("train_test_split no examples", lambda f: datasets.train_test_split(KEY, np.zeros((0, 2))),
         ValueError, "0 examples"),
    case("batches of no examples", lambda f: train.batches(KEY, (np.zeros((0, 2)),), 2),
         ValueError, "arrays"),
    case("evaluate on no examples", lambda f: train.evaluate(
        lambda p, b: 0.0, PARAMS, (np.zeros((0, 2)),), 2), ValueError, "arrays"),
    case("fit on no examples", lambda f: fit(data=(np.zeros((0, 2), np.float32),)), ValueError,
         "train_data"),
    case("shard_batch of no examples", lambda f: distributed.shard_batch(
        np.zeros((0, 2)), ONE_DEVICE_MESH), ValueError, "batch"),
]


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


def test_the_table_is_large_and_its_names_are_unique():
    names = [param.id for param in CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("call, error, argument", CASES)
def test_bad_input_raises_a_clear_error_naming_the_argument(call, error, argument, files):
    with pytest.raises(Exception) as raised:
        call(files)
    assert isinstance(raised.value, error), (
        f"expected {error.__name__}, got {type(raised.value).__name__}: {raised.value}")
    assert re.search(argument, str(raised.value)), (
        f"message does not name {argument!r}: {raised.value}")
