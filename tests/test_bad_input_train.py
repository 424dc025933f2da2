"""Bad input to train: each case raises the stated exception type with a message that names
the offending argument (a regular expression searched in the message)."""
import jax.numpy as jnp
import numpy as np

from _bad_input import *  # noqa: F401,F403 (the shared models, data, case() and files fixture)
from _bad_input import case, files, table_tests  # noqa: F401

CASES = [
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
    case("fit with a keyword the option groups replaced", lambda f: fit(checkpoint_every=1),
         TypeError, "checkpointing=Checkpointing"),
    case("fit early_stopping not an EarlyStopping", lambda f: fit(early_stopping=3), TypeError,
         "early_stopping"),
    case("fit on_step not a StepHook", lambda f: fit(on_step=print), TypeError, "on_step"),
    case("EarlyStopping patience = 0", lambda f: train.EarlyStopping(0), ValueError,
         "patience"),
    case("EarlyStopping unknown mode", lambda f: train.EarlyStopping(1, mode="up"), ValueError,
         "mode"),
    case("Checkpointing without a path", lambda f: train.Checkpointing(None), TypeError,
         "path"),
    case("Checkpointing every = 0", lambda f: train.Checkpointing("run.npz", every=0),
         ValueError, "every"),
    case("fit with an array-valued aux metric", lambda f: fit(
        loss_fn=lambda p, b, k: (squared_loss(p, b, k), {"rows": b[0][:, 0]}), has_aux=True),
        ValueError, "rows"),
    case("evaluate batch_size = 0", lambda f: train.evaluate(lambda p, b: 0.0, PARAMS, (X4,), 0),
         ValueError, "batch_size"),
    case("accuracy with float labels", lambda f: train.accuracy(jnp.ones((4, 3)), jnp.ones(4)),
         TypeError, "labels"),
    case("accuracy shapes", lambda f: train.accuracy(jnp.ones((4, 3)), jnp.ones(5, jnp.int32)),
         ValueError, "labels"),
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
    # ---- empty arrays
    case("batches of no examples", lambda f: train.batches(KEY, (np.zeros((0, 2)),), 2),
         ValueError, "arrays"),
    case("evaluate on no examples", lambda f: train.evaluate(
        lambda p, b: 0.0, PARAMS, (np.zeros((0, 2)),), 2), ValueError, "arrays"),
    case("fit on no examples", lambda f: fit(data=(np.zeros((0, 2), np.float32),)), ValueError,
         "train_data"),
    case("shard_batch of no examples", lambda f: distributed.shard_batch(
        np.zeros((0, 2)), ONE_DEVICE_MESH), ValueError, "batch"),
]


(test_case_names_are_unique,
 test_bad_input_raises_a_clear_error_naming_the_argument) = table_tests(CASES)
