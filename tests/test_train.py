"""Tests of functional_dl.train: step, batches, evaluate/accuracy, fit.

Oracles: a hand-written loop calling ``optimizer.update``/``apply_updates`` directly, NumPy
transcriptions of means and accuracy, index bookkeeping for batches, and closed-form
trajectories of one-parameter problems for early stopping and divergence.
"""
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _jax_events import compilations_of, recording_jax_events
from functional_dl import nn, optim, train

NUM_FEATURES, NUM_CLASSES, NUM_HIDDEN = 4, 3, 8


def make_data(num, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, NUM_FEATURES)).astype(np.float32)
    y = (np.abs(x[:, 0] * 2 + x[:, 1]) // 1).clip(0, NUM_CLASSES - 1).astype(np.int32)
    return x, y


def init_mlp(key):
    k1, k2 = jax.random.split(key)
    return {"hidden": {"w": 0.5 * jax.random.normal(k1, (NUM_FEATURES, NUM_HIDDEN)),
                       "b": jnp.zeros(NUM_HIDDEN)},
            "out": {"w": 0.5 * jax.random.normal(k2, (NUM_HIDDEN, NUM_CLASSES)),
                    "b": jnp.zeros(NUM_CLASSES)}}


def mlp_logits(params, x):
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"][None, :])
    return h @ params["out"]["w"] + params["out"]["b"][None, :]


def cross_entropy(logits, labels):
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]


def loss_fn(params, batch, key):
    """Mean cross-entropy; with a key, multiplicative noise on the inputs (dropout-like)."""
    x, y = batch
    if key is not None:
        x = x * (1.0 + 0.1 * jax.random.normal(key, x.shape))
    return cross_entropy(mlp_logits(params, x), y).mean()


def loss_with_metrics(params, batch, key):
    x, y = batch
    logits = mlp_logits(params, x)
    return cross_entropy(logits, y).mean(), {"accuracy": train.accuracy(logits, y)}


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(leaf_a), np.asarray(leaf_b), rtol=rtol, atol=atol)


def copy_tree(tree):
    return jax.tree.map(jnp.copy, tree)


X, Y = make_data(40)
OPTIMIZER = optim.adam(0.05)
# Compiling a step costs far more than running it, so the tests share compiled functions:
# one step of each kind for (loss_fn, OPTIMIZER), used on batches of 16 and 8 examples
# (40 examples in batches of 16: 16, 16, 8), which fit's own step for them shares too.
BATCH_SIZE = 16
STEP = train.make_train_step(loss_fn, OPTIMIZER)
STEP_NOT_DONATED = train.make_train_step(loss_fn, OPTIMIZER, donate=False)
# data parallelism on 8 devices is tested in test_distributed.py; here: argument checks
ONE_DEVICE_MESH = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])


# ---------------------------------------------------------------- make_train_step

ORACLE_GRAD = jax.jit(jax.grad(loss_fn))
ORACLE_UPDATE = jax.jit(OPTIMIZER.update)
ORACLE_APPLY = jax.jit(optim.apply_updates)


def hand_written_steps(params, batches_and_keys):
    """The oracle: grad, optimizer.update and apply_updates called one after the other."""
    state = OPTIMIZER.init(params)
    for batch, key in batches_and_keys:
        grads = ORACLE_GRAD(params, batch, key)
        updates, state = ORACLE_UPDATE(grads, state, params)
        params = ORACLE_APPLY(params, updates)
    return params, state


@pytest.mark.parametrize("donate", [True, False])
def test_step_matches_hand_written_loop(donate):
    keys = jax.random.split(jax.random.key(3), 6)
    plan = [((X[i::2][:BATCH_SIZE], Y[i::2][:BATCH_SIZE]), keys[3 * i + j])
            for i in range(2) for j in range(3)]
    expected_params, expected_state = hand_written_steps(init_mlp(jax.random.key(0)), plan)
    step = STEP if donate else STEP_NOT_DONATED
    params = init_mlp(jax.random.key(0))
    state = OPTIMIZER.init(params)
    for batch, key in plan:
        params, state, metrics = step(params, state, batch, key)
    assert_trees_close(params, expected_params)
    assert_trees_close(state, expected_state)
    assert set(metrics) == {"loss"} and metrics["loss"].shape == ()


def test_step_reports_loss_before_update_and_aux_metrics():
    params = init_mlp(jax.random.key(1))
    expected_loss, expected_metrics = loss_with_metrics(params, (X, Y), None)
    step = train.make_train_step(loss_with_metrics, optim.sgd(0.1), has_aux=True)
    _, _, metrics = step(copy_tree(params), optim.sgd(0.1).init(params), (X, Y), None)
    assert set(metrics) == {"loss", "accuracy"}
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], expected_metrics["accuracy"])


def test_step_donates_params_and_state_only_when_asked():
    params = init_mlp(jax.random.key(0))
    for step, donate in ((STEP, True), (STEP_NOT_DONATED, False)):
        params_in, state_in = copy_tree(params), OPTIMIZER.init(params)
        batch = (jnp.asarray(X[:BATCH_SIZE]), jnp.asarray(Y[:BATCH_SIZE]))
        step(params_in, state_in, batch, jax.random.key(0))
        deleted = [leaf.is_deleted() for leaf in jax.tree.leaves((params_in, state_in))]
        assert all(deleted) if donate else not any(deleted)
        assert not any(leaf.is_deleted() for leaf in batch)


def test_step_compiles_once_over_100_steps():
    traces = []

    def counting_loss(params, batch, key):
        traces.append(1)
        return loss_fn(params, batch, key)

    step = train.make_train_step(counting_loss, optim.sgd(0.01))
    params = init_mlp(jax.random.key(0))
    state = optim.sgd(0.01).init(params)
    data = (jnp.asarray(X), jnp.asarray(Y))
    steps = 0
    for epoch in range(25):
        for batch in train.batches(jax.random.key(epoch), data, 10, drop_last=True):
            params, state, _ = step(params, state, batch, jax.random.key(steps))
            steps += 1
    assert steps == 100
    assert len(traces) == 1
    assert step._cache_size() == 1


def test_non_scalar_loss_is_rejected_with_a_message():
    def per_example_loss(params, batch, key):
        return cross_entropy(mlp_logits(params, batch[0]), batch[1])

    step = train.make_train_step(per_example_loss, optim.sgd(0.1))
    params = init_mlp(jax.random.key(0))
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar loss.*shape \(40,\)"):
        step(params, optim.sgd(0.1).init(params), (X, Y), None)


@pytest.mark.parametrize("bad_output, error, match", [
    (lambda loss: loss, TypeError, r"has_aux=True must return \(loss, metrics\)"),
    (lambda loss: (loss, [loss]), TypeError, "metrics as a dict"),
    (lambda loss: (loss, {"loss": loss}), ValueError, "must not contain the key 'loss'"),
])
def test_has_aux_output_is_checked(bad_output, error, match):
    step = train.make_train_step(lambda p, b, k: bad_output(loss_fn(p, b, k)), optim.sgd(0.1),
                                 has_aux=True)
    params = init_mlp(jax.random.key(0))
    with pytest.raises(error, match=match):
        step(params, optim.sgd(0.1).init(params), (X, Y), None)


def test_make_train_step_rejects_non_optimizer():
    with pytest.raises(TypeError, match="optimizer must be an Optimizer"):
        train.make_train_step(loss_fn, object())


# ---------------------------------------------------------------- batches

# one n (the shuffle compiles once per n): a short last batch kept and dropped, batches that
# divide n, one batch larger than n, batches of one
@pytest.mark.parametrize("num, batch_size, drop_last", [(12, 5, False), (12, 5, True),
                                                        (12, 4, False), (12, 20, False),
                                                        (12, 1, True)])
def test_batches_cover_each_index_once_per_epoch(num, batch_size, drop_last):
    index = np.arange(num)
    data = {"index": index, "twice": 2 * index.astype(np.float32)}
    seen = []
    key = jax.random.key(batch_size)
    for batch in train.batches(key, data, batch_size, drop_last=drop_last):
        ids = np.asarray(batch["index"])
        np.testing.assert_array_equal(np.asarray(batch["twice"]), 2 * ids)  # rows aligned
        seen.append(ids)
    sizes = [len(ids) for ids in seen]
    full, rest = divmod(num, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest and not drop_last else [])
    assert len(seen) == train.num_batches(num, batch_size, drop_last=drop_last)
    seen = np.concatenate(seen)
    assert len(set(seen.tolist())) == len(seen)
    if not drop_last:
        np.testing.assert_array_equal(np.sort(seen), index)
    # the order is the documented permutation of the key
    order = np.asarray(jax.random.permutation(key, num))
    np.testing.assert_array_equal(seen, order[:len(seen)])


def test_batches_order_depends_on_key_only():
    def order(key):
        return np.concatenate([b for b in train.batches(key, np.arange(40), 7)])
    np.testing.assert_array_equal(order(jax.random.key(1)), order(jax.random.key(1)))
    assert not np.array_equal(order(jax.random.key(1)), order(jax.random.key(2)))


@pytest.mark.parametrize("arrays, batch_size, error, match", [
    ((X, Y), 0, ValueError, "batch_size must be an int >= 1"),
    ((X, Y), -3, ValueError, "batch_size must be an int >= 1"),
    ((X, Y), 2.5, TypeError, "batch_size must be an int"),
    ((X, Y[:-1]), 4, ValueError, r"same length.*\[40, 39\]"),
    ((), 4, ValueError, "at least one array"),
    ((np.float32(1.0),), 4, ValueError, "leading example axis"),
    ((np.zeros((0, 2)), np.zeros(0)), 4, ValueError, "at least one example, got leading length 0"),
])
def test_batches_bad_input_fails_at_call(arrays, batch_size, error, match):
    with pytest.raises(error, match=match):
        train.batches(jax.random.key(0), arrays, batch_size)  # no iteration needed


# ---------------------------------------------------------------- evaluate, accuracy

def numpy_accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def numpy_cross_entropy(logits, labels):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def test_accuracy_matches_numpy_and_breaks_ties_to_first_class():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(4, 6)).astype(np.int32)
    np.testing.assert_allclose(train.accuracy(logits, labels), numpy_accuracy(logits, labels))
    np.testing.assert_allclose(jax.jit(train.accuracy)(logits, labels),
                               numpy_accuracy(logits, labels))
    tied = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(train.accuracy(tied, np.array([0, 1], np.int32)), 0.5)


def test_accuracy_bad_input():
    with pytest.raises(TypeError, match="labels must hold integers"):
        train.accuracy(np.zeros((3, 2)), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"labels shape \(4,\) must equal logits shape"):
        train.accuracy(np.zeros((3, 2)), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="labels shape"):
        train.accuracy(np.zeros(3), np.zeros(3, np.int32))


def eval_metrics(params, batch):
    x, y = batch
    logits = mlp_logits(params, x)
    return {"loss": cross_entropy(logits, y).mean(),             # a batch mean
            "accuracy": train.accuracy(logits, y),               # a batch mean
            "per_example_loss": cross_entropy(logits, y)}        # per-example values


@pytest.mark.parametrize("batch_size", [1, 7, 40, 64])
def test_evaluate_gives_exact_dataset_means(batch_size):
    params = init_mlp(jax.random.key(5))
    logits = np.asarray(mlp_logits(params, X))
    result = train.evaluate(eval_metrics, params, (X, Y), batch_size)
    expected_loss = numpy_cross_entropy(logits, Y).mean()
    np.testing.assert_allclose(result["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(result["per_example_loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], numpy_accuracy(logits, Y), rtol=1e-6)


def test_evaluate_rejects_outputs_that_are_neither_scalar_nor_per_example():
    with pytest.raises(ValueError, match=r"scalars .* per-example arrays of shape \(8,\)"):
        train.evaluate(lambda p, b: mlp_logits(p, b[0]), init_mlp(jax.random.key(0)),
                       (X, Y), 8)


# ---------------------------------------------------------------- fit

def fit_oracle(params, data, key, epochs, batch_size):
    """fit's documented key schedule, written out with the plain step (loss_fn, OPTIMIZER)."""
    step = STEP
    state = OPTIMIZER.init(params)
    epoch_losses = []
    for epoch in range(epochs):
        shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
        total, count = 0.0, 0
        for i, batch in enumerate(train.batches(shuffle_key, data, batch_size)):
            params, state, metrics = step(params, state, batch, jax.random.fold_in(step_key, i))
            total += float(metrics["loss"]) * len(batch[1])
            count += len(batch[1])
        epoch_losses.append(total / count)
    return params, state, epoch_losses


def test_fit_equals_hand_written_loop_and_leaves_the_callers_arrays_valid():
    key = jax.random.key(11)
    expected_params, expected_state, expected_losses = fit_oracle(
        init_mlp(jax.random.key(0)), (X, Y), key, epochs=3, batch_size=BATCH_SIZE)
    params = init_mlp(jax.random.key(0))
    opt_state = OPTIMIZER.init(params)
    # copies: a NumPy view of a CPU buffer (device_get) would keep XLA from donating it
    given = jax.tree.map(lambda leaf: np.array(leaf, copy=True), (params, opt_state))
    result = train.fit(loss_fn, OPTIMIZER, params, (X, Y), key=key, opt_state=opt_state,
                       epochs=3, batch_size=BATCH_SIZE, progress="none")
    assert_trees_equal(result.params, expected_params)
    assert_trees_equal(result.opt_state, expected_state)
    np.testing.assert_allclose(result.history["loss"], expected_losses, rtol=1e-6)
    assert result.stop_reason == "completed" and result.best_epoch is None
    # fit donates its own copies: the caller's arrays are neither deleted nor changed
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves((params, opt_state)))
    assert_trees_equal((params, opt_state), given)


def test_fit_accepts_tied_parameters():
    """The same array in two leaves: donating it twice would fail; fit copies each leaf.

    With L = Σ_j (a_j + b_j − 1)², both leaves get the gradient 2(s − 1) of s = a + b, so one
    SGD step gives a' = b' = a − 2η(s − 1).
    """
    shared = jnp.full(3, 0.25)

    def tied_loss(params, batch, key):
        residual = params["a"][None, :] + params["b"][None, :] - batch
        return jnp.mean(jnp.sum(residual ** 2, axis=1))

    result = train.fit(tied_loss, optim.sgd(0.05), {"a": shared, "b": shared},
                       np.ones((8, 3), np.float32),
                       key=jax.random.key(0), epochs=1, batch_size=8, progress="none")
    expected = 0.25 - 2 * 0.05 * (0.5 - 1.0)
    np.testing.assert_allclose(result.params["a"], expected, rtol=1e-6)
    np.testing.assert_allclose(result.params["b"], expected, rtol=1e-6)
    assert not shared.is_deleted()


def test_fit_again_with_the_same_loss_and_optimizer_does_not_retrace():
    traces = []

    def counting_loss(params, batch, key):
        traces.append(1)
        return loss_fn(params, batch, key)

    for seed in range(2):
        train.fit(counting_loss, OPTIMIZER, init_mlp(jax.random.key(seed)), (X, Y),
                  key=jax.random.key(seed), epochs=2, batch_size=20, progress="none")
    assert len(traces) == 1


def test_fit_with_params_committed_to_a_device_compiles_its_step_once_per_batch_shape():
    """Parameters put on a device are committed; fit puts the optimizer state there too, so
    the step's outputs are placed like its inputs from the first call.  Oracle: the plain
    step on uncommitted arrays (``fit_oracle``), the same program on the same device."""
    def pinned_loss(params, batch, key):     # a step of its own: its compilations start at 0
        return loss_fn(params, batch, key)

    device = jax.devices()[-1]
    params = jax.device_put(init_mlp(jax.random.key(0)), device)
    with recording_jax_events() as events:
        result = train.fit(pinned_loss, OPTIMIZER, params, (X, Y), key=jax.random.key(11),
                           epochs=2, batch_size=BATCH_SIZE, progress="none")
    assert compilations_of(events, "guarded_step") == 2                  # batches of 16 and the last one of 8
    placed = jax.tree.leaves((result.params, result.opt_state))
    assert all(leaf.committed and leaf.sharding == params["out"]["w"].sharding
               for leaf in placed)
    expected_params, expected_state, _ = fit_oracle(
        init_mlp(jax.random.key(0)), (X, Y), jax.random.key(11), epochs=2, batch_size=BATCH_SIZE)
    assert_trees_equal(result.params, expected_params)
    assert_trees_equal(result.opt_state, expected_state)


class UnhashableLoss:
    __hash__ = None

    def __call__(self, params, batch, key):
        return loss_fn(params, batch, key)


def test_fit_accepts_an_unhashable_loss_callable():
    # batches of 8 only: the unhashable loss gets a step of its own, compiled for one shape
    result = train.fit(UnhashableLoss(), OPTIMIZER, init_mlp(jax.random.key(0)), (X, Y),
                       key=jax.random.key(11), epochs=1, batch_size=8, progress="none")
    expected, _, _ = fit_oracle(init_mlp(jax.random.key(0)), (X, Y), jax.random.key(11),
                                epochs=1, batch_size=8)
    assert_trees_equal(result.params, expected)


def test_fit_validation_history_matches_evaluate():
    x_val, y_val = make_data(24, seed=1)
    result = train.fit(loss_with_metrics, OPTIMIZER, init_mlp(jax.random.key(0)), (X, Y),
                       key=jax.random.key(2), epochs=2, batch_size=20, has_aux=True,
                       validation_data=(x_val, y_val), progress="none")
    assert list(result.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(values) == 2 for values in result.history.values())
    logits = np.asarray(mlp_logits(result.params, x_val))
    np.testing.assert_allclose(result.history["val_loss"][-1],
                               numpy_cross_entropy(logits, y_val).mean(), rtol=1e-5)
    np.testing.assert_allclose(result.history["val_accuracy"][-1],
                               numpy_accuracy(logits, y_val))


def quadratic_loss(params, batch, key):
    """(w − t)² averaged over the batch; every example has the same target t."""
    return jnp.mean((params["w"] - batch) ** 2)


def gd_trajectory(w0, target, learning_rate, steps):
    """w_{k+1} = w_k − η·2(w_k − t), in float64."""
    ws = [w0]
    for _ in range(steps):
        ws.append(ws[-1] - learning_rate * 2 * (ws[-1] - target))
    return np.array(ws)


def test_early_stopping_stops_after_patience_and_restores_best(tmp_path):
    # training pulls w from -1 towards +1; validation wants w = 0.3, so val_loss first
    # falls, then rises once w has passed 0.3.
    learning_rate, patience = 0.05, 3
    train_targets = np.ones(8, np.float32)
    val_targets = np.full(4, 0.3, np.float32)
    ws = gd_trajectory(-1.0, 1.0, learning_rate, 40)[1:]       # w after epoch e (1 step each)
    val_losses = (ws - 0.3) ** 2
    best = int(np.argmin(val_losses))                         # 0-based epoch
    assert 0 < best < 30
    optimizer = optim.sgd(learning_rate)

    def run():
        return train.fit(quadratic_loss, optimizer, {"w": jnp.float32(-1.0)}, train_targets,
                         key=jax.random.key(0), epochs=40, batch_size=8,
                         validation_data=val_targets,
                         early_stopping=train.EarlyStopping(patience),
                         checkpointing=train.Checkpointing(tmp_path / "run.npz", resume=True),
                         progress="none")

    result = run()
    assert result.stop_reason == "early_stopping"
    assert len(result.history["val_loss"]) == best + 1 + patience
    assert result.best_epoch == best + 1
    np.testing.assert_allclose(result.params["w"], ws[best], rtol=1e-5)
    np.testing.assert_allclose(result.history["val_loss"], val_losses[:best + 1 + patience],
                               rtol=1e-4, atol=1e-7)
    assert f"epoch {best + 1 + patience}" in result.message
    # resuming the finished run trains no further epoch and returns the same result
    again = run()
    assert again.stop_reason == "early_stopping" and again.best_epoch == best + 1
    assert again.history == result.history
    assert_trees_equal(again.params, result.params)


def test_nan_in_data_stops_at_its_step_and_keeps_last_good_params():
    key = jax.random.key(4)
    shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, 0))
    order = np.asarray(jax.random.permutation(shuffle_key, len(X)))
    x = X.copy()
    x[order[BATCH_SIZE + 3], 2] = np.nan           # in the second batch of the first epoch
    plan = [(batch, jax.random.fold_in(step_key, i))
            for i, batch in enumerate(train.batches(shuffle_key, (x, Y), BATCH_SIZE))][:1]
    expected_params, _ = hand_written_steps(init_mlp(jax.random.key(0)), plan)
    with pytest.warns(RuntimeWarning, match="epoch 1, step 2 "):
        result = train.fit(loss_fn, OPTIMIZER, init_mlp(jax.random.key(0)), (x, Y), key=key,
                           epochs=3, batch_size=BATCH_SIZE, progress="none")
    assert result.stop_reason == "non_finite"
    assert result.history == {}
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.params))
    assert_trees_close(result.params, expected_params)


def test_divergence_names_epoch_and_step():
    # w_{k+1} − 1 = (1 − 2η)(w_k − 1) = −99 (w_k − 1): the loss (w − 1)² overflows float32
    # at the first step k with |w_k − 1| > sqrt(max float32).
    learning_rate, steps_per_epoch = 50.0, 4
    ws = gd_trajectory(2.0, 1.0, learning_rate, 40)
    bad_step = int(np.argmax(np.abs(ws - 1) > np.sqrt(np.finfo(np.float32).max)))
    epoch, step = divmod(bad_step, steps_per_epoch)
    with pytest.warns(RuntimeWarning, match=f"at epoch {epoch + 1}, step {step + 1} "):
        result = train.fit(quadratic_loss, optim.sgd(learning_rate), {"w": jnp.float32(2.0)},
                           np.ones(8, np.float32), key=jax.random.key(0), epochs=20,
                           batch_size=2, progress="none")
    assert result.stop_reason == "non_finite"
    assert len(result.history["loss"]) == epoch
    np.testing.assert_allclose(result.params["w"], ws[bad_step], rtol=1e-5)


def test_a_nan_loss_alone_does_not_stop_fit_when_asked_and_apply_if_finite_skips_it():
    """One example is NaN, so one batch per epoch has a NaN loss and NaN gradients.
    Oracle: the documented key schedule with that batch left out (``apply_if_finite`` of a
    finite gradient is the plain optimizer), the epoch loss its mean over the other batches."""
    key, epochs, batch_size = jax.random.key(4), 2, 8
    x = X.copy()
    x[5, 2] = np.nan
    result = train.fit(loss_fn, optim.apply_if_finite(OPTIMIZER), init_mlp(jax.random.key(0)),
                       (x, Y), key=key, epochs=epochs, batch_size=batch_size,
                       stop_on_non_finite_loss=False, progress="none")
    params = init_mlp(jax.random.key(0))
    state = OPTIMIZER.init(params)
    epoch_losses = []
    for epoch in range(epochs):
        shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
        finite_losses = []
        for i, batch in enumerate(train.batches(shuffle_key, (x, Y), batch_size)):
            step_key_i = jax.random.fold_in(step_key, i)
            loss = float(loss_fn(params, batch, step_key_i))
            if np.isfinite(loss):
                finite_losses.append(loss)
                updates, state = ORACLE_UPDATE(ORACLE_GRAD(params, batch, step_key_i), state,
                                               params)
                params = ORACLE_APPLY(params, updates)
        assert len(finite_losses) == len(x) // batch_size - 1
        epoch_losses.append(np.mean(finite_losses))
    assert result.stop_reason == "completed"
    assert_trees_close(result.params, params)
    assert_trees_close(result.opt_state.inner_state, state)
    assert int(result.opt_state.notfinite_count) == epochs
    np.testing.assert_allclose(result.history["loss"], epoch_losses, rtol=1e-5)
    assert result.history["non_finite_loss_steps"] == [1.0] * epochs


def test_non_finite_parameters_stop_fit_even_when_a_non_finite_loss_does_not():
    # a NaN target: loss and gradient NaN, so plain SGD makes w NaN at that step
    targets = np.ones(8, np.float32)
    targets[3] = np.nan
    shuffle_key = jax.random.split(jax.random.fold_in(jax.random.key(0), 0))[0]
    bad_step = int(np.argmax(np.asarray(jax.random.permutation(shuffle_key, 8)) == 3)) // 2
    with pytest.warns(RuntimeWarning, match=f"at epoch 1, step {bad_step + 1} "):
        result = train.fit(quadratic_loss, optim.sgd(0.05), {"w": jnp.float32(2.0)}, targets,
                           key=jax.random.key(0), epochs=3, batch_size=2,
                           stop_on_non_finite_loss=False, progress="none")
    assert result.stop_reason == "non_finite" and result.history == {}
    np.testing.assert_allclose(result.params["w"], gd_trajectory(2.0, 1.0, 0.05, bad_step)[-1],
                               rtol=1e-6)


def test_non_scalar_aux_metric_is_rejected_before_the_first_step_naming_it():
    def loss_with_per_example_metric(params, batch, key):
        losses = cross_entropy(mlp_logits(params, batch[0]), batch[1])
        return losses.mean(), {"accuracy": jnp.float32(0.5), "per_example": losses}

    def broken_step(*args):
        raise AssertionError("no step may run")

    match = r"metric 'per_example' must be a scalar .*shape \(8,\)"
    with pytest.raises(ValueError, match=match):
        train.fit(loss_with_per_example_metric, optim.sgd(0.1), init_mlp(jax.random.key(0)),
                  (X, Y), key=jax.random.key(0), epochs=1, batch_size=8, has_aux=True,
                  progress="none")
    step = train.make_train_step(loss_with_per_example_metric, optim.sgd(0.1), has_aux=True)
    params = init_mlp(jax.random.key(0))
    with pytest.raises(ValueError, match=match):
        step(params, optim.sgd(0.1).init(params), (X[:8], Y[:8]), None)


# ---------------------------------------------------------------- the per-step hook

EMA_DECAY = 0.75
LOGGED = []


def _log_step(step, loss):
    LOGGED.append((int(step), float(loss)))


def _ema_init(params):
    return {"ema": params, "steps": jnp.zeros((), jnp.int32), "last_step": jnp.int32(-1)}


def _ema_update(hook_state, step, params, opt_state, metrics):
    """ē ← d·ē + (1 − d)·θ after each step; counts the steps; logs (step, loss)."""
    jax.debug.callback(_log_step, step, metrics["loss"])
    ema = jax.tree.map(lambda e, p: EMA_DECAY * e + (1 - EMA_DECAY) * p, hook_state["ema"],
                       params)
    return {"ema": ema, "steps": hook_state["steps"] + 1, "last_step": step}


EMA_HOOK = train.StepHook(_ema_init, _ema_update)


def numpy_ema(ws, decay):
    """ē_0 = w_0, ē_k = d·ē_{k−1} + (1 − d)·w_k, in float64."""
    ema = ws[0]
    for w in ws[1:]:
        ema = decay * ema + (1 - decay) * w
    return ema


def test_on_step_keeps_an_ema_of_the_parameters_logs_every_step_and_resumes(tmp_path):
    learning_rate, epochs, steps_per_epoch = 0.05, 3, 4
    ws = gd_trajectory(-1.0, 1.0, learning_rate, epochs * steps_per_epoch)

    def run(num_epochs, resume=False):
        del LOGGED[:]
        return train.fit(quadratic_loss, optim.sgd(learning_rate), {"w": jnp.float32(-1.0)},
                         np.ones(8, np.float32), key=jax.random.key(0), epochs=num_epochs,
                         batch_size=2, on_step=EMA_HOOK, progress="none",
                         checkpointing=train.Checkpointing(tmp_path / "ema.npz", resume=resume))

    result = run(epochs)
    jax.effects_barrier()
    np.testing.assert_allclose(result.params["w"], ws[-1], rtol=1e-5)
    np.testing.assert_allclose(result.hook_state["ema"]["w"], numpy_ema(ws, EMA_DECAY),
                               rtol=1e-5)
    assert int(result.hook_state["steps"]) == epochs * steps_per_epoch
    assert int(result.hook_state["last_step"]) == epochs * steps_per_epoch - 1
    logged = sorted(LOGGED)
    assert [step for step, _ in logged] == list(range(epochs * steps_per_epoch))
    np.testing.assert_allclose([loss for _, loss in logged], (ws[:-1] - 1.0) ** 2, rtol=1e-5)

    run(epochs - 1)                                  # checkpointed after epoch 2
    resumed = run(epochs, resume=True)               # the hook state comes back from the file
    jax.effects_barrier()
    assert sorted(step for step, _ in LOGGED) == list(range(8, 12))
    assert_trees_equal(resumed.hook_state, result.hook_state)
    assert_trees_equal(resumed.params, result.params)


def test_on_step_must_keep_the_structure_and_dtypes_of_its_state():
    for update, error, match in [
            (lambda h, step, p, s, m: {"other": h["w"]}, ValueError, "tree structure"),
            (lambda h, step, p, s, m: {"w": h["w"].astype(jnp.int32)}, TypeError, "dtypes")]:
        with pytest.raises(error, match=match):
            train.fit(quadratic_loss, optim.sgd(0.1), {"w": jnp.float32(0.0)},
                      np.ones(4, np.float32), key=jax.random.key(0), epochs=1, batch_size=4,
                      on_step=train.StepHook(lambda p: {"w": p["w"]}, update),
                      progress="none")


# ---------------------------------------------------------------- early stopping, options

def numpy_early_stopping(values, patience, mode, min_delta):
    """Brute force: the epoch (1-based) training stops after, and the best epoch then."""
    sign = 1.0 if mode == "min" else -1.0
    best, best_epoch = np.inf, 0
    for epoch, value in enumerate(values, start=1):
        if sign * value < best - min_delta:
            best, best_epoch = sign * value, epoch
        elif epoch - best_epoch >= patience:
            return epoch, best_epoch
    return None, best_epoch


@pytest.mark.parametrize("mode, min_delta", [("min", 0.0), ("max", 0.0), ("min", 0.05)])
def test_early_stopping_update_is_the_documented_rule(mode, min_delta):
    rng = np.random.default_rng(1)
    for trial in range(20):
        values = rng.normal(size=12).cumsum() * 0.1
        values[rng.integers(0, 12)] = np.nan if trial % 5 == 0 else values[0]
        patience = 1 + trial % 3
        options = train.EarlyStopping(patience, mode=mode, min_delta=min_delta)
        state, stopped_after = options.init(), None
        for epoch, value in enumerate(values, start=1):
            state = options.update(state, float(value), epoch)
            if options.should_stop(state):
                stopped_after = epoch
                break
        assert (stopped_after, state.best_epoch) == numpy_early_stopping(
            values, patience, mode, min_delta)


@pytest.mark.parametrize("build, error, match", [
    (lambda: train.EarlyStopping(0), ValueError, "EarlyStopping: patience must be an int >= 1"),
    (lambda: train.EarlyStopping(2.0), TypeError, "EarlyStopping: patience must be an int"),
    (lambda: train.EarlyStopping(2, mode="up"), ValueError,
     "EarlyStopping: mode must be one of 'min', 'max'"),
    (lambda: train.EarlyStopping(2, min_delta=-1.0), ValueError, "EarlyStopping: min_delta"),
    (lambda: train.EarlyStopping(2, monitor=3), TypeError, "EarlyStopping: monitor"),
    (lambda: train.EarlyStopping(2, restore_best="yes"), TypeError,
     "EarlyStopping: restore_best must be True or False"),
    (lambda: train.Checkpointing(None), TypeError,
     "Checkpointing: path must be a str or os.PathLike"),
    (lambda: train.Checkpointing("run.npz", every=0), ValueError,
     "Checkpointing: every must be an int >= 1"),
    (lambda: train.Checkpointing("run.npz", resume=1), TypeError,
     "Checkpointing: resume must be True or False"),
])
def test_option_groups_are_checked_when_built(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_fit_progress_lines_and_none(capsys):
    kwargs = dict(key=jax.random.key(0), epochs=2, batch_size=BATCH_SIZE)
    train.fit(loss_fn, OPTIMIZER, init_mlp(jax.random.key(0)), (X, Y), progress="lines",
              **kwargs)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert all("loss" in line for line in lines)
    train.fit(loss_fn, OPTIMIZER, init_mlp(jax.random.key(0)), (X, Y), progress="none",
              **kwargs)
    assert capsys.readouterr().out == ""


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_auto_on_a_terminal_is_a_bar_and_lines_without_tqdm(monkeypatch):
    pytest.importorskip("tqdm")
    from functional_dl.train import progress
    stream = FakeTerminal()
    reporter = progress.make_reporter("auto", total=2, stream=stream)
    reporter.epoch_done(1, {"loss": 0.5}, 0.1)
    reporter.close()
    bar = stream.getvalue()
    assert "\r" in bar and "1/2" in bar and "loss 0.5000" in bar and not bar.startswith("epoch")
    monkeypatch.setattr(progress, "_tqdm_or_none", lambda: None)
    stream = FakeTerminal()
    reporter = progress.make_reporter("auto", total=2, stream=stream)
    reporter.epoch_done(1, {"loss": 0.5}, 0.1)
    reporter.close()
    assert stream.getvalue() == "epoch 1/2  loss 0.5000  (0.10 s)\n"


def test_progress_auto_prints_lines_when_not_a_terminal():
    from functional_dl.train.progress import make_reporter
    stream = io.StringIO()
    reporter = make_reporter("auto", total=3, stream=stream)
    reporter.epoch_done(1, {"loss": 0.5, "val_loss": 0.25}, 0.1)
    reporter.close()
    assert stream.getvalue() == "epoch 1/3  loss 0.5000  val_loss 0.2500  (0.10 s)\n"


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epochs=0), ValueError, "epochs must be an int >= 1"),
    (dict(batch_size=0), ValueError, "batch_size must be an int >= 1"),
    (dict(key=None), ValueError, "key"),
    (dict(progress="fancy"), ValueError, "progress must be one of"),
    (dict(early_stopping=3), TypeError, "early_stopping must be None or a train.EarlyStopping"),
    (dict(checkpointing="run.npz"), TypeError,
     "checkpointing must be None or a train.Checkpointing"),
    (dict(on_step=print), TypeError, r"on_step must be None or a train.StepHook\(init, update\)"),
    (dict(stop_on_non_finite_loss=None), TypeError, "stop_on_non_finite_loss must be True or"),
    (dict(early_stopping_patience=3, resume=True), TypeError,
     r"instead of early_stopping_patience=, pass early_stopping=EarlyStopping\(patience=\.\.\.\)"
     r"; instead of resume=, pass checkpointing=Checkpointing\(path, resume=True\)"),
    (dict(batch_size=41, drop_last=True), ValueError,
     "batch_size=41 with drop_last=True leaves no batch of the 40 training examples"),
    (dict(early_stopping=train.EarlyStopping(1, monitor="val_loss")), ValueError,
     r"monitor='val_loss' is not a logged metric; available: \['loss'\]"),
    (dict(early_stopping=train.EarlyStopping(1, monitor="accuracy")), ValueError,
     r"monitor='accuracy' is not a logged metric; available: \['loss'\]"),
    (dict(mesh="data"), TypeError, "mesh must be a jax.sharding.Mesh .*, got str"),
    (dict(mesh=jax.devices()), TypeError, "mesh must be a jax.sharding.Mesh .*, got list"),
    (dict(axis_name="data"), ValueError, "axis_name='data' names an axis of a mesh; pass mesh"),
    (dict(mesh=ONE_DEVICE_MESH, axis_name="model"), ValueError,
     r"axis_name 'model' is not an axis of mesh, whose axes are \('data',\)"),
])
def test_fit_bad_arguments(kwargs, error, match):
    arguments = dict(key=jax.random.key(0), epochs=1, batch_size=8, progress="none")
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        train.fit(loss_fn, OPTIMIZER, init_mlp(jax.random.key(0)), (X, Y), **arguments)


@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_a_mesh_is_refused_on_several_processes_before_any_work(monkeypatch, call):
    # fit and evaluate place whole batches from this process's arrays (the short final batch
    # replicated), which is only right when one process holds all the data
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(NotImplementedError, match="mesh: .*one process, this is one of 2"):
        if call == "fit":
            train.fit(loss_fn, OPTIMIZER, init_mlp(jax.random.key(0)), (X, Y),
                      key=jax.random.key(0), epochs=1, batch_size=8, progress="none",
                      mesh=ONE_DEVICE_MESH)
        else:
            train.evaluate(eval_metrics, init_mlp(jax.random.key(0)), (X, Y), 8,
                           mesh=ONE_DEVICE_MESH)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(mesh="data"), TypeError, "mesh must be a jax.sharding.Mesh"),
    (dict(axis_name="data"), ValueError, "axis_name='data' names an axis of a mesh"),
])
def test_evaluate_bad_mesh_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        train.evaluate(eval_metrics, init_mlp(jax.random.key(0)), (X, Y), 8, **kwargs)


# ---------------------------------------------------------------- checkpoint and resume

def noisy_run(path, epochs=6, patience=10, every=2):
    """A run whose every step uses its key (input noise) and that checkpoints every 2 epochs."""
    x_val, y_val = make_data(16, seed=2)
    return train.fit(loss_fn, OPTIMIZER, init_mlp(jax.random.key(0)), (X, Y),
                     key=jax.random.key(8), epochs=epochs, batch_size=BATCH_SIZE,
                     validation_data=(x_val, y_val),
                     early_stopping=train.EarlyStopping(patience),
                     checkpointing=train.Checkpointing(path, every=every, resume=True),
                     progress="none")


def test_stop_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, monkeypatch):
    uninterrupted = noisy_run(tmp_path / "a.npz")        # resume=True, no file yet: fresh start
    assert uninterrupted.stop_reason == "completed"
    assert os.path.exists(tmp_path / "a.npz")

    real_batches, calls = train.epoch.batches, []

    def batches_interrupted_in_epoch_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_batches(*args, **kwargs)

    monkeypatch.setattr(train.epoch, "batches", batches_interrupted_in_epoch_5)
    with pytest.raises(KeyboardInterrupt):
        noisy_run(tmp_path / "b.npz")                      # killed in epoch 5: file at epoch 4
    monkeypatch.setattr(train.epoch, "batches", real_batches)
    fit_step = train.epoch.make_guarded_step(loss_fn, OPTIMIZER, False, True, None, True)
    programs = fit_step._cache_size()
    with recording_jax_events() as events:
        resumed = noisy_run(tmp_path / "b.npz")
    # the restored state is placed like a fresh one: the resumed run reuses the compiled step
    assert compilations_of(events, "guarded_step") == 0 and fit_step._cache_size() == programs

    assert_trees_equal(resumed.params, uninterrupted.params)
    assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)
    assert resumed.history == uninterrupted.history
    assert resumed.best_epoch == uninterrupted.best_epoch


def test_resume_with_early_stopping_state_matches_uninterrupted(tmp_path):
    # patience 1 with noisy validation: the early-stopping state crosses the checkpoint.
    uninterrupted = noisy_run(tmp_path / "a.npz", epochs=12, patience=1, every=1)
    first_part = noisy_run(tmp_path / "b.npz", epochs=1, patience=1, every=1)
    assert len(first_part.history["loss"]) == 1
    resumed = noisy_run(tmp_path / "b.npz", epochs=12, patience=1, every=1)
    assert resumed.stop_reason == uninterrupted.stop_reason
    assert resumed.history == uninterrupted.history
    assert_trees_equal(resumed.params, uninterrupted.params)


def test_resume_from_a_checkpoint_of_another_model_fails_clearly(tmp_path):
    from functional_dl.checkpoint import CheckpointError
    path = tmp_path / "run.npz"
    noisy_run(path, epochs=2)
    other = {"w": jnp.zeros((NUM_FEATURES, NUM_CLASSES)), "b": jnp.zeros(NUM_CLASSES)}
    with pytest.raises(CheckpointError, match="does not match like"):
        train.fit(lambda p, b, k: jnp.mean(b[0] @ p["w"]), OPTIMIZER, other, (X, Y),
                  key=jax.random.key(0), epochs=3, batch_size=8,
                  checkpointing=train.Checkpointing(path, resume=True), progress="none")


def test_evaluate_keeps_float64_and_accepts_boolean_per_example_values():
    with jax.enable_x64(True):
        values = np.random.default_rng(0).normal(size=37)
        result = train.evaluate(lambda p, b: {"mean": jnp.mean(b), "positive": b > 0}, None,
                                values, 5)
    np.testing.assert_allclose(result["mean"], values.mean(), rtol=1e-13)
    assert result["positive"] == np.mean(values > 0)


# ---------------------------------------------------------------- model state (BatchNorm)
# Oracles: the hand-written loop with the state threaded by hand, the closed form of the
# first running mean, the uninterrupted run for resume, and the run without a mesh.

BN_MODEL = nn.serial(nn.Dense(NUM_HIDDEN), nn.BatchNorm(momentum=0.2), nn.Tanh,
                     nn.Dense(NUM_CLASSES))


def bn_init():
    _, params, model_state = BN_MODEL.init(jax.random.key(0), (-1, NUM_FEATURES))
    return params, model_state


def bn_loss(params, model_state, batch, key):
    """Cross-entropy of the BatchNorm MLP: batch statistics with a key, running ones without."""
    x, y = batch
    logits, model_state = BN_MODEL.apply(params, x, state=model_state, train=key is not None)
    return cross_entropy(logits, y).mean(), model_state


# SGD, not Adam: the bias of the Dense before BatchNorm has a gradient that is 0 up to
# rounding, which Adam would turn into full steps whose sign depends on how XLA fused the
# step, so the hand-written loop and the compiled step would part by O(lr).
BN_OPTIMIZER = optim.sgd(0.05)
BN_ORACLE_UPDATE = jax.jit(BN_OPTIMIZER.update)
BN_STEP = train.make_train_step(bn_loss, BN_OPTIMIZER, has_state=True)
BN_ORACLE_GRAD = jax.jit(jax.value_and_grad(bn_loss, has_aux=True))


def test_step_with_model_state_matches_hand_written_loop():
    keys = jax.random.split(jax.random.key(3), 4)
    plan = [((X[i::2][:BATCH_SIZE], Y[i::2][:BATCH_SIZE]), keys[2 * i + j])
            for i in range(2) for j in range(2)]
    params, model_state = bn_init()
    opt_state = BN_OPTIMIZER.init(params)
    expected_params, expected_model_state = params, model_state
    expected_opt_state = opt_state
    for batch, key in plan:
        (_, expected_model_state), grads = BN_ORACLE_GRAD(expected_params, expected_model_state,
                                                          batch, key)
        updates, expected_opt_state = BN_ORACLE_UPDATE(grads, expected_opt_state, expected_params)
        expected_params = ORACLE_APPLY(expected_params, updates)
    first_hidden = np.asarray(plan[0][0][0], np.float64) @ np.asarray(params["dense_0"]["w"]) \
        + np.asarray(params["dense_0"]["b"])
    params, opt_state, model_state = copy_tree((params, opt_state, model_state))
    for index, (batch, key) in enumerate(plan):
        params, opt_state, model_state, metrics = BN_STEP(params, opt_state, model_state, batch,
                                                          key)
        if index == 0:   # mean' = (1 − m)·0 + m·μ_B, m = 0.2
            np.testing.assert_allclose(model_state["batch_norm_0"]["mean"],
                                       0.2 * first_hidden.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert_trees_close(params, expected_params)
    assert_trees_close(opt_state, expected_opt_state)
    assert_trees_close(model_state, expected_model_state)
    assert set(metrics) == {"loss"}


def bn_fit_oracle(params, model_state, data, key, epochs, batch_size):
    """fit's key schedule written out with BN_STEP."""
    opt_state = BN_OPTIMIZER.init(params)
    params, opt_state, model_state = copy_tree((params, opt_state, model_state))
    for epoch in range(epochs):
        shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
        for i, batch in enumerate(train.batches(shuffle_key, data, batch_size)):
            params, opt_state, model_state, _ = BN_STEP(params, opt_state, model_state, batch,
                                                        jax.random.fold_in(step_key, i))
    return params, opt_state, model_state


def bn_run(epochs, path=None):
    params, model_state = bn_init()
    x_val, y_val = make_data(16, seed=2)
    return train.fit(bn_loss, BN_OPTIMIZER, params, (X, Y), model_state=model_state,
                     key=jax.random.key(8), epochs=epochs, batch_size=BATCH_SIZE,
                     validation_data=(x_val, y_val), progress="none",
                     checkpointing=None if path is None else train.Checkpointing(
                         path, resume=True))


def test_fit_threads_the_model_state_and_validates_with_the_running_statistics():
    result = bn_run(3)
    params, model_state = bn_init()
    expected = bn_fit_oracle(params, model_state, (X, Y), jax.random.key(8), 3, BATCH_SIZE)
    assert_trees_close((result.params, result.opt_state, result.model_state), expected)
    # validation ran in eval mode: the state it returns is the training one, unmoved
    val = make_data(16, seed=2)
    evaluated = train.evaluate(lambda p, s, b: bn_loss(p, s, b, None)[0], result.params, val,
                               5, model_state=result.model_state)
    np.testing.assert_allclose(result.history["val_loss"][-1], evaluated, rtol=1e-5)
    running_var = np.asarray(result.model_state["batch_norm_0"]["var"])
    assert running_var.shape == (NUM_HIDDEN,) and not np.allclose(running_var, 1.0)


def test_fit_with_model_state_resumes_as_an_uninterrupted_run(tmp_path):
    from functional_dl import checkpoint
    uninterrupted = bn_run(4, tmp_path / "a.npz")
    first_part = bn_run(2, tmp_path / "b.npz")
    assert len(first_part.history["loss"]) == 2
    saved = checkpoint.restore(tmp_path / "b.npz")
    assert_trees_equal(saved.state.model_state, first_part.model_state)   # state is saved
    resumed = bn_run(4, tmp_path / "b.npz")
    assert_trees_equal(resumed.model_state, uninterrupted.model_state)
    assert_trees_equal(resumed.params, uninterrupted.params)
    assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)
    assert resumed.history == uninterrupted.history


@pytest.mark.parametrize("bad_loss, error, match", [
    (lambda p, s, b, k: bn_loss(p, s, b, k)[0], TypeError,
     r"loss_fn with model state must return \(loss, new_model_state\)"),
    (lambda p, s, b, k: (bn_loss(p, s, b, k)[0], {}), ValueError,
     r"the model_state loss_fn returns"),
    (lambda p, s, b, k: (bn_loss(p, s, b, k)[0], jax.tree.map(lambda v: v[:2], s)), ValueError,
     r"model_state loss_fn returns\['batch_norm_0'\]\['mean'\] has shape \(2,\)"),
])
def test_a_stateful_loss_must_return_its_state_unchanged_in_kind(bad_loss, error, match):
    params, model_state = bn_init()
    step = train.make_train_step(bad_loss, BN_OPTIMIZER, has_state=True, donate=False)
    with pytest.raises(error, match=match):
        step(params, BN_OPTIMIZER.init(params), model_state, (X[:8], Y[:8]), jax.random.key(0))


MESH_SCRIPT = """
import json, jax, jax.numpy as jnp, numpy as np
from functional_dl import distributed, nn, optim, train
model = nn.serial(nn.Dense(8), nn.BatchNorm(), nn.Relu, nn.Dense(3))
_, params, state = model.init(jax.random.key(0), (-1, 4))
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype(np.float32)
y = (np.abs(x[:, 0]) // 0.7).clip(0, 2).astype(np.int32)
def loss_fn(params, state, batch, key):
    logits, state = model.apply(params, batch[0], state=state, train=key is not None)
    log_p = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(log_p, batch[1][:, None], axis=1).mean(), state
# SGD: the bias before BatchNorm has a zero gradient up to rounding, which Adam would
# normalize into full steps of either sign
run = lambda **kw: train.fit(loss_fn, optim.sgd(0.1), params, (x, y), model_state=state,
                             key=jax.random.key(1), epochs=2, batch_size=16,
                             progress="none", **kw)
single, sharded = run(), run(mesh=distributed.make_mesh())
difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
    jax.tree.leaves((single.params, single.model_state)),
    jax.tree.leaves((sharded.params, sharded.model_state))))
print(json.dumps({"devices": len(jax.devices()), "difference": difference, "replicated": all(
    leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
    for leaf in jax.tree.leaves(sharded.model_state))}))
"""


def test_fit_on_a_mesh_keeps_the_model_state_replicated_with_global_batch_statistics():
    import json
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parent.parent
    environment = dict(os.environ, JAX_PLATFORMS="cpu",
                       XLA_FLAGS="--xla_force_host_platform_device_count=4")
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(root), environment.get("PYTHONPATH")]))
    completed = subprocess.run([sys.executable, "-c", MESH_SCRIPT], cwd=root, env=environment,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4 and report["replicated"]
    # global statistics: the sharded run follows the one-device run up to summation order
    assert report["difference"] < 1e-4


def test_early_stopping_restores_the_best_epochs_model_state_with_its_params():
    x_val, y_val = make_data(16, seed=2)
    params, model_state = bn_init()

    def run(epochs, **options):
        return train.fit(bn_loss, BN_OPTIMIZER, params, (X, Y), model_state=model_state,
                         key=jax.random.key(8), epochs=epochs, batch_size=BATCH_SIZE,
                         validation_data=(x_val, y_val), progress="none", **options)
    # min_delta so large that only epoch 1 counts as an improvement: the best is epoch 1
    stopped = run(6, early_stopping=train.EarlyStopping(patience=2, min_delta=100.0))
    assert stopped.stop_reason == "early_stopping" and stopped.best_epoch == 1
    one_epoch = run(1)                                   # the oracle: a run of that length
    assert_trees_equal(stopped.params, one_epoch.params)
    assert_trees_equal(stopped.model_state, one_epoch.model_state)
