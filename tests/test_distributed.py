"""Data parallelism on jax.sharding: 8 fake CPU devices against one device.

JAX fixes its device count when it starts, so the checks run once in a subprocess started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (this file, run as a script,
prints a JSON report) and the tests below assert on that report.  Oracles: the same train
step run on unsharded arrays (one device), ``fit`` without a mesh for ``fit(mesh=...)``, the
batch rows themselves for the shard contents, and the unsharded vmap for HMM inference.
"""
import ast
import json
import pathlib

import pytest

from _fake_devices import report_from_script

NUM_DEVICES = 8
NUM_STEPS = 20
BATCH_SIZE = 32          # 4 rows per device
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _max_abs_difference(tree_a, tree_b) -> float:
    import jax
    import numpy as np
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))


def _describe_shards(array) -> dict:
    """Shard shapes, their devices and whether each shard holds the rows its index says."""
    import numpy as np
    full = np.asarray(array)
    shards = array.addressable_shards
    return {
        "spec": [None if axis is None else str(axis) for axis in array.sharding.spec],
        "fully_replicated": bool(array.sharding.is_fully_replicated),
        "global_shape": list(array.shape),
        "shard_shapes": [list(shard.data.shape) for shard in shards],
        "distinct_devices": len({shard.device.id for shard in shards}),
        "shards_hold_their_rows": all(
            np.array_equal(np.asarray(shard.data), full[shard.index]) for shard in shards),
    }


def _count_compilations(function_name: str, run) -> tuple[int, object]:
    """``run()``'s result and how many XLA compilations of the jitted ``function_name`` it made."""
    from _jax_events import compilations_of, recording_jax_events
    with recording_jax_events() as events:
        result = run()
    return compilations_of(events, function_name), result


def _fit_checks(report, loss_fn, optimizer, initial, mesh, data) -> None:
    """fit with replicated parameters: one compilation of its step per batch shape, resumed or
    not, the optimizer state replicated like the parameters; the one-device run as oracle."""
    import tempfile

    import jax

    from functional_dl import distributed, train

    def run(params, epochs, **options):
        return train.fit(loss_fn, optimizer, params, data, key=jax.random.key(2), epochs=epochs,
                         batch_size=BATCH_SIZE, progress="none", **options)

    report["fit_one_device_compilations"], single = _count_compilations(
        "guarded_step", lambda: run(initial, 3))
    report["fit_mesh_compilations"], sharded = _count_compilations(
        "guarded_step", lambda: run(distributed.replicate(initial, mesh), 3))
    report["fit_mesh_state_replicated"] = [
        leaf.sharding == distributed.replicated_sharding(mesh)
        for leaf in jax.tree.leaves((sharded.params, sharded.opt_state))]
    report["fit_mesh_vs_one_device_difference"] = _max_abs_difference(
        (sharded.params, sharded.opt_state), (single.params, single.opt_state))
    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/run.npz"
        run(distributed.replicate(initial, mesh), 2, checkpointing=train.Checkpointing(path))
        report["fit_mesh_resumed_compilations"], resumed = _count_compilations(
            "guarded_step",
            lambda: run(distributed.replicate(initial, mesh), 3,
                        checkpointing=train.Checkpointing(path, resume=True)))
    report["fit_mesh_resumed_vs_uninterrupted_difference"] = _max_abs_difference(
        (resumed.params, resumed.opt_state), (sharded.params, sharded.opt_state))


def _fit_with_mesh_checks(report, loss_fn, optimizer, initial, mesh, rng) -> None:
    """fit(mesh=...) against fit without a mesh (the oracle): 150 training examples in batches
    of 32 (four split batches and a short one of 22 that 8 devices cannot split), 45
    validation examples (32 split, 13 not), dropout on.  The sharding XLA chose for each
    batch the loss sees is recorded when the step compiles (``inspect_array_sharding``)."""
    import tempfile

    import jax
    import numpy as np

    from functional_dl import distributed, train

    shardings_seen = []

    def recording_loss(params, batch, key):
        rows = batch[0].shape[0]

        def record(sharding):
            shardings_seen.append({
                "rows": rows, "training": key is not None,
                "devices": len(sharding.device_set),
                "replicated": bool(sharding.is_fully_replicated),
                "shard_rows": sharding.shard_shape(batch[0].shape)[0]})
        jax.debug.inspect_array_sharding(batch[0], callback=record)
        return loss_fn(params, batch, key)

    x = rng.normal(size=(150 + 45, 12)).astype(np.float32)
    y = rng.integers(0, 4, size=150 + 45).astype(np.int32)

    def run(epochs, **options):
        return train.fit(recording_loss, optimizer, initial, (x[:150], y[:150]),
                         validation_data=(x[150:], y[150:]), key=jax.random.key(3),
                         epochs=epochs, batch_size=BATCH_SIZE, progress="none", **options)

    def history_difference(a, b):
        if sorted(a) != sorted(b) or any(len(a[k]) != len(b[k]) for k in a):
            return float("inf")
        return max(abs(u - v) / abs(v) for k in a for u, v in zip(a[k], b[k]))

    without = run(3)
    del shardings_seen[:]                     # keep the mesh run's compilations only
    report["fit_mesh_argument_compilations"], with_mesh = _count_compilations(
        "guarded_step", lambda: run(3, mesh=mesh))
    report["fit_mesh_argument_shardings"] = list(shardings_seen)
    report["fit_mesh_argument_params_difference"] = _max_abs_difference(
        (with_mesh.params, with_mesh.opt_state), (without.params, without.opt_state))
    report["fit_mesh_argument_distance_travelled"] = _max_abs_difference(without.params, initial)
    report["fit_mesh_argument_history_difference"] = history_difference(with_mesh.history,
                                                                        without.history)
    report["fit_mesh_argument_history_keys"] = sorted(with_mesh.history)
    report["fit_mesh_argument_state_replicated"] = [
        leaf.sharding == distributed.replicated_sharding(mesh)
        for leaf in jax.tree.leaves((with_mesh.params, with_mesh.opt_state))]
    report["fit_mesh_argument_left_its_input_intact"] = not any(
        leaf.is_deleted() for leaf in jax.tree.leaves(initial))

    # early stopping: val_loss falls, so mode="max" stops after epoch 2 and restores epoch 1
    stopped = {name: run(4, early_stopping=train.EarlyStopping(1, mode="max"), **options)
               for name, options in [("without", {}), ("with", dict(mesh=mesh))]}
    report["fit_mesh_early_stopping"] = [
        (result.stop_reason, result.best_epoch) for result in stopped.values()]
    report["fit_mesh_early_stopping_difference"] = max(
        _max_abs_difference(stopped["with"].params, stopped["without"].params),
        history_difference(stopped["with"].history, stopped["without"].history))

    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/run.npz"
        run(2, mesh=mesh, checkpointing=train.Checkpointing(path))
        report["fit_mesh_argument_resumed_compilations"], resumed = _count_compilations(
            "guarded_step",
            lambda: run(3, mesh=mesh, checkpointing=train.Checkpointing(path, resume=True)))
    report["fit_mesh_argument_resumed_vs_uninterrupted_difference"] = max(
        _max_abs_difference((resumed.params, resumed.opt_state),
                            (with_mesh.params, with_mesh.opt_state)),
        history_difference(resumed.history, with_mesh.history))
    report["fit_mesh_argument_resumed_state_replicated"] = [
        leaf.sharding == distributed.replicated_sharding(mesh)
        for leaf in jax.tree.leaves((resumed.params, resumed.opt_state))]

    for name, options in [("batch_size", dict(batch_size=12)),
                          ("axis_name", dict(axis_name="model"))]:
        try:
            train.fit(recording_loss, optimizer, initial, (x, y), key=jax.random.key(3),
                      epochs=1, progress="none", mesh=mesh, **{"batch_size": BATCH_SIZE,
                                                               **options})
            report[f"fit_mesh_{name}_error"] = None
        except ValueError as error:
            report[f"fit_mesh_{name}_error"] = str(error)


def _child_checks() -> dict:
    """Everything that needs 8 devices; returns plain numbers and strings for JSON."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from functional_dl import distributed, hmm, losses, nn, optim, train

    jax.config.update("jax_numpy_rank_promotion", "raise")
    report = {"num_devices": jax.device_count()}
    mesh = distributed.make_mesh()

    # ---- 20 train steps, data-parallel vs one device (dropout on: same masks expected)
    network = nn.mlp([16, 4], dropout=0.1)

    def loss_fn(params, batch, key):
        x, y = batch
        logits = network.apply(params, x, key=key, train=key is not None)
        return losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 12)).astype(np.float32)
    y = rng.integers(0, 4, size=160).astype(np.int32)
    optimizer = optim.adam(1e-2)
    step = train.make_train_step(loss_fn, optimizer)
    initial = network.init(jax.random.key(0), (-1, 12))[1]

    sharded_params = distributed.replicate(initial, mesh)
    sharded_state = distributed.replicate(optimizer.init(initial), mesh)
    report["params_before"] = _describe_shards(sharded_params["dense_0"]["w"])
    single_params = jax.tree.map(jnp.copy, initial)
    single_state = optimizer.init(single_params)
    sharded_losses, single_losses = [], []
    steps = 0
    for epoch in range(NUM_STEPS // (160 // BATCH_SIZE)):
        for batch in train.batches(jax.random.key(epoch), (x, y), BATCH_SIZE, drop_last=True):
            step_key = jax.random.fold_in(jax.random.key(1), steps)
            sharded_batch = distributed.shard_batch(batch, mesh)
            if steps == 0:
                report["batch_x"] = _describe_shards(sharded_batch[0])
                report["batch_y"] = _describe_shards(sharded_batch[1])
                compiled = step.lower(sharded_params, sharded_state, sharded_batch,
                                      step_key).compile().as_text()
                report["hlo_has_all_reduce"] = "all-reduce" in compiled
            sharded_params, sharded_state, metrics = step(sharded_params, sharded_state,
                                                          sharded_batch, step_key)
            sharded_losses.append(float(metrics["loss"]))
            single_params, single_state, metrics = step(single_params, single_state, batch,
                                                        step_key)
            single_losses.append(float(metrics["loss"]))
            steps += 1
    report["steps"] = steps
    report["params_after"] = _describe_shards(sharded_params["dense_0"]["w"])
    report["opt_state_replicated"] = [leaf.sharding.is_fully_replicated and
                                      tuple(leaf.sharding.spec) == ()
                                      for leaf in jax.tree.leaves(sharded_state)]
    report["params_difference"] = _max_abs_difference(sharded_params, single_params)
    report["opt_state_difference"] = _max_abs_difference(sharded_state, single_state)
    report["loss_difference"] = _max_abs_difference(sharded_losses, single_losses)
    report["replicate_left_its_input_intact"] = not any(
        leaf.is_deleted() for leaf in jax.tree.leaves(initial))   # despite 20 donated steps
    report["distance_travelled"] = _max_abs_difference(single_params, initial)
    _fit_checks(report, loss_fn, optimizer, initial, mesh, (x, y))
    _fit_with_mesh_checks(report, loss_fn, optimizer, initial, mesh, rng)

    # ---- HMM log-likelihoods of a batch of padded sequences, sharded vs not
    model = hmm.HMM(jnp.array([0.5, 0.3, 0.2]),
                    jnp.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]]),
                    hmm.Categorical(jnp.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1],
                                               [0.25, 0.25, 0.25, 0.25]])))
    observations = rng.integers(0, 4, size=(16, 20)).astype(np.int32)
    lengths = rng.integers(1, 21, size=16).astype(np.int32)
    batch_log_likelihood = jax.jit(jax.vmap(hmm.log_likelihood, in_axes=(None, 0, 0)))
    sharded = batch_log_likelihood(distributed.replicate(model, mesh),
                                   *distributed.shard_batch((observations, lengths), mesh))
    unsharded = batch_log_likelihood(model, observations, lengths)
    report["hmm_output"] = _describe_shards(sharded)
    report["hmm_max_relative_difference"] = float(
        np.max(np.abs(np.asarray(sharded) - np.asarray(unsharded)) / np.abs(unsharded)))

    # ---- batches that do not divide by 8
    for name, call in [("shard_batch", lambda: distributed.shard_batch((x[:4], y[:4]), mesh)),
                       ("sharded_batches",
                        lambda: train.sharded_batches(jax.random.key(0), (x, y), 12, mesh))]:
        try:
            call()
            report[f"{name}_error"] = None
        except ValueError as error:
            report[f"{name}_error"] = str(error)
    epoch = list(train.sharded_batches(jax.random.key(0), (x, y), 48, mesh))
    report["sharded_batches"] = [_describe_shards(batch[0]) for batch in epoch]
    report["sharded_batches_alias"] = distributed.sharded_batches is train.sharded_batches
    return report


@pytest.fixture(scope="module")
def report():
    return report_from_script(__file__, NUM_DEVICES)


def test_the_subprocess_sees_eight_devices(report):
    assert report["num_devices"] == NUM_DEVICES


def test_twenty_steps_on_eight_devices_equal_twenty_steps_on_one(report):
    assert report["steps"] == NUM_STEPS
    assert report["distance_travelled"] > 1e-2          # training moved the parameters
    assert report["params_difference"] < 1e-5
    assert report["opt_state_difference"] < 1e-5
    assert report["loss_difference"] < 1e-5


def test_xla_inserts_the_cross_device_gradient_reduction(report):
    assert report["hlo_has_all_reduce"]


@pytest.mark.parametrize("when", ["params_before", "params_after"])
def test_params_are_replicated_on_every_device(report, when):
    shards = report[when]
    assert shards["fully_replicated"] and shards["spec"] == []
    assert shards["shard_shapes"] == [shards["global_shape"]] * NUM_DEVICES
    assert shards["distinct_devices"] == NUM_DEVICES
    assert shards["shards_hold_their_rows"]


def test_replicate_copies_so_donating_the_replica_keeps_the_original(report):
    assert report["replicate_left_its_input_intact"]


def test_optimizer_state_stays_replicated(report):
    assert report["opt_state_replicated"] and all(report["opt_state_replicated"])


def test_fit_compiles_its_step_once_on_one_device_and_on_the_mesh(report):
    # 160 examples in batches of 32: one batch shape, so one program per placement
    assert report["fit_one_device_compilations"] == 1
    assert report["fit_mesh_compilations"] == 1
    assert report["fit_mesh_state_replicated"] and all(report["fit_mesh_state_replicated"])
    assert report["fit_mesh_vs_one_device_difference"] < 1e-5


def test_fit_resumed_on_the_mesh_reuses_its_step_and_is_bit_identical(report):
    assert report["fit_mesh_resumed_compilations"] == 0
    assert report["fit_mesh_resumed_vs_uninterrupted_difference"] == 0.0


def test_fit_with_a_mesh_equals_fit_without_one(report):
    assert report["fit_mesh_argument_distance_travelled"] > 1e-2    # training moved them
    assert report["fit_mesh_argument_params_difference"] < 1e-6
    assert report["fit_mesh_argument_history_keys"] == ["loss", "val_loss"]
    assert report["fit_mesh_argument_history_difference"] < 1e-6
    assert report["fit_mesh_argument_left_its_input_intact"]


def test_fit_with_a_mesh_splits_every_batch_that_divides_and_replicates_the_short_ones(report):
    # sorted by (training, rows): validation 13 and 32, then training 22 and 32
    seen = sorted(report["fit_mesh_argument_shardings"],
                  key=lambda s: (s["training"], s["rows"]))
    assert [(s["training"], s["rows"]) for s in seen] == [
        (False, 13), (False, 32), (True, 22), (True, 32)]
    for shards in seen:
        assert shards["devices"] == NUM_DEVICES
        if shards["rows"] == BATCH_SIZE:
            assert not shards["replicated"]
            assert shards["shard_rows"] == BATCH_SIZE // NUM_DEVICES
        else:                          # 22 and 13 do not divide by 8: whole on every device
            assert shards["replicated"] and shards["shard_rows"] == shards["rows"]


def test_fit_with_a_mesh_compiles_its_step_once_per_batch_shape_and_returns_replicas(report):
    assert report["fit_mesh_argument_compilations"] == 2           # batches of 32 and of 22
    for replicated in ("fit_mesh_argument_state_replicated",
                       "fit_mesh_argument_resumed_state_replicated"):
        assert report[replicated] and all(report[replicated])


def test_fit_with_a_mesh_resumes_bit_identically_without_recompiling(report):
    assert report["fit_mesh_argument_resumed_compilations"] == 0
    assert report["fit_mesh_argument_resumed_vs_uninterrupted_difference"] == 0.0


def test_fit_with_a_mesh_stops_early_like_fit_without_one(report):
    assert report["fit_mesh_early_stopping"] == [["early_stopping", 1]] * 2
    assert report["fit_mesh_early_stopping_difference"] < 1e-6


def test_fit_with_a_mesh_rejects_a_batch_size_that_does_not_divide_and_unknown_axes(report):
    message = report["fit_mesh_batch_size_error"]
    assert message is not None
    assert "batch_size=12" in message and f"{NUM_DEVICES} devices of mesh axis 'data'" in message
    assert "use batch_size=8 or 16" in message
    assert "'model' is not an axis of mesh" in report["fit_mesh_axis_name_error"]


@pytest.mark.parametrize("leaf, row_shape", [("batch_x", [12]), ("batch_y", [])])
def test_the_batch_is_split_along_its_leading_axis(report, leaf, row_shape):
    shards = report[leaf]
    assert shards["spec"] == ["data"] and not shards["fully_replicated"]
    assert shards["global_shape"] == [BATCH_SIZE] + row_shape
    assert shards["shard_shapes"] == [[BATCH_SIZE // NUM_DEVICES] + row_shape] * NUM_DEVICES
    assert shards["distinct_devices"] == NUM_DEVICES
    assert shards["shards_hold_their_rows"]


def test_sharded_hmm_log_likelihoods_equal_unsharded_ones(report):
    shards = report["hmm_output"]
    assert shards["spec"] == ["data"]
    assert shards["shard_shapes"] == [[2]] * NUM_DEVICES
    assert report["hmm_max_relative_difference"] < 1e-5


@pytest.mark.parametrize("name", ["shard_batch", "sharded_batches"])
def test_a_batch_that_does_not_divide_by_the_device_count_is_an_error(report, name):
    message = report[f"{name}_error"]
    assert message is not None
    size = 4 if name == "shard_batch" else 12
    assert f"{size}" in message and f"{NUM_DEVICES} devices" in message


def test_sharded_batches_splits_every_full_batch(report):
    assert report["sharded_batches_alias"]        # distributed.sharded_batches is the same
    epoch = report["sharded_batches"]
    assert len(epoch) == 160 // 48                     # the short last batch is dropped
    for shards in epoch:
        assert shards["shard_shapes"] == [[6, 12]] * NUM_DEVICES
        assert shards["shards_hold_their_rows"]


def test_distributed_does_not_import_train():
    """``train`` builds on ``distributed``: no import of ``functional_dl.train`` at the top
    level of distributed.py (``sharded_batches`` is an alias resolved on first use)."""
    tree = ast.parse((REPO_ROOT / "functional_dl" / "distributed.py").read_text())
    imported = [alias.name for node in tree.body if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [f"{node.module}.{alias.name}" for node in tree.body
                 if isinstance(node, ast.ImportFrom) for alias in node.names]
    assert imported and not [name for name in imported if "train" in name.split(".")]
    assert not (REPO_ROOT / "functional_dl" / "train" / "placement.py").exists()


if __name__ == "__main__":
    print(json.dumps(_child_checks()))
