"""Train a small MLP on the bundled digits, data-parallel over every available device.

Each batch is split along its leading axis over the devices of a one-axis mesh, the
parameters and optimizer state are replicated, and the ordinary jitted train step runs on
all devices at once; XLA inserts the gradient mean across devices.

On one machine with several GPUs, just run it:

    python examples/data_parallel.py

Without several accelerators, fake 8 CPU devices (the flags must be set before JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
        python examples/data_parallel.py

``--compare-single-device`` trains a second time on one device with the same global batches
and prints both results: they agree up to floating-point summation order.

On several hosts, run the same script on each after adding ``jax.distributed.initialize()``
at the top and give ``shard_batch`` each host's own slice of the data (see the docstring of
``functional_dl.distributed``).
"""
import argparse

import jax
import numpy as np

from functional_dl import datasets, distributed, losses, nn, optim, train

NETWORK = nn.mlp([64, 10], dropout=0.1)


def loss_fn(params, batch, key):
    """Mean cross-entropy; dropout is on when a key is given."""
    x, y = batch
    logits = NETWORK.apply(params, x, key=key, train=key is not None)
    return losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def accuracy_fn(params, batch):
    x, y = batch
    return train.accuracy(NETWORK.apply(params, x), y)


def describe(name, array):
    shapes = sorted({tuple(shard.data.shape) for shard in array.addressable_shards})
    print(f"  {name:<18} global {tuple(array.shape)}, spec {array.sharding.spec}, "
          f"{len(array.addressable_shards)} shards of shape {shapes}")


def train_and_test(mesh, data, epochs, batch_size):
    """Train from the same start on ``mesh``; return (last epoch's mean loss, test accuracy)."""
    x_train, x_test, y_train, y_test = data
    optimizer = optim.adam(3e-3)
    initial = NETWORK.init(jax.random.key(1), (-1, x_train.shape[1]))[1]
    params = distributed.replicate(initial, mesh)
    opt_state = distributed.replicate(optimizer.init(initial), mesh)
    step = train.make_train_step(loss_fn, optimizer)

    run_key = jax.random.key(2)
    for epoch in range(epochs):
        shuffle_key, step_key = jax.random.split(jax.random.fold_in(run_key, epoch))
        epoch_losses = []
        for i, batch in enumerate(train.sharded_batches(shuffle_key, (x_train, y_train),
                                                        batch_size, mesh)):
            if epoch == 0 and i == 0:
                per_device = batch_size // distributed.num_batch_parts(mesh)
                print(f"global batch {batch_size} = {per_device} per device:")
                describe("batch images", batch[0])
                describe("batch labels", batch[1])
                describe("dense_0 weights", params["dense_0"]["w"])
            params, opt_state, metrics = step(params, opt_state, batch,
                                              jax.random.fold_in(step_key, i))
            epoch_losses.append(metrics["loss"])
        mean_loss = float(np.mean(jax.device_get(epoch_losses)))
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            print(f"epoch {epoch + 1:3d}: mean training loss {mean_loss:.6f}")

    print("after training:")
    describe("dense_0 weights", params["dense_0"]["w"])
    # evaluate splits each test batch over the mesh too; the last, short batch of the 450
    # test digits need not divide by the device count: each device then computes it whole
    test_accuracy = train.evaluate(accuracy_fn, params, (x_test, y_test), batch_size, mesh=mesh)
    print(f"test accuracy: {test_accuracy:.4f} on {len(y_test)} digits")
    return mean_loss, test_accuracy


def main(epochs, examples_per_device, compare_single_device):
    mesh = distributed.make_mesh()
    print(f"{mesh.devices.size} device(s): {', '.join(str(d) for d in mesh.devices.flat)}")
    print(f"mesh: {dict(mesh.shape)}")

    digits = datasets.load_digits()
    data = datasets.train_test_split(jax.random.key(0), digits.data / 16.0, digits.target,
                                     test_size=0.25)
    batch_size = examples_per_device * distributed.num_batch_parts(mesh)
    loss, accuracy = train_and_test(mesh, data, epochs, batch_size)

    if compare_single_device:
        # The same batches, dropout masks and updates on one device: the data-parallel run
        # differs only by the order in which the gradient sums are added up.
        print("\nthe same training on one device:")
        loss_1, accuracy_1 = train_and_test(distributed.make_mesh(jax.devices()[:1]), data,
                                            epochs, batch_size)
        print(f"\n{mesh.devices.size} devices vs one: training loss {loss:.6f} vs "
              f"{loss_1:.6f}, test accuracy {accuracy:.4f} vs {accuracy_1:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--examples-per-device", type=int, default=16,
                        help="the global batch is this times the number of devices")
    parser.add_argument("--compare-single-device", action="store_true",
                        help="train again on one device with the same global batches and "
                             "print both results side by side")
    arguments = parser.parse_args()
    main(arguments.epochs, arguments.examples_per_device, arguments.compare_single_device)
