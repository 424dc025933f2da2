"""Sixteen networks trained at once: ``vmap`` over a leading "model" axis of the parameters.

    python examples/ensembles.py [--epochs 20] [--models 16] [--out DIR]

Each model has its own initialization and dropout keys; all see the same minibatches.  The
step is ``make_train_step``'s, vmapped over parameters, optimizer state and keys (the batch
is shared) and jitted once: one XLA program updates all models.  Prints each model's test
accuracy and that of the ensemble (the class with the largest mean probability), and saves
the sixteen training-loss curves to DIR/ensembles.png.
"""
import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import datasets, losses, nn, optim, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    split_key, init_key, data_key, dropout_key = jax.random.split(jax.random.key(args.seed), 4)

    digits = datasets.load_digits()
    x_train, x_test, y_train, y_test = datasets.train_test_split(
        split_key, digits.data / 16.0, digits.target, test_size=0.2)
    network = nn.mlp([64, 10], dropout=0.2)
    optimizer = optim.adam(2e-3)

    def loss_fn(params, batch, key):
        images, labels = batch
        logits = network.apply(params, images, key=key, train=key is not None)
        return losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def init_params(key):
        return network.init(key, (-1, x_train.shape[1]))[1]

    # Parameters and optimizer state with a leading axis of length M (one slice per model).
    params = jax.jit(jax.vmap(init_params))(jax.random.split(init_key, args.models))
    opt_state = jax.jit(jax.vmap(optimizer.init))(params)
    ensemble_step = jax.jit(jax.vmap(train.make_train_step(loss_fn, optimizer),
                                     in_axes=(0, 0, None, 0)), donate_argnums=(0, 1))

    started = time.perf_counter()
    curves = []
    for epoch in range(args.epochs):
        epoch_losses = []
        for i, batch in enumerate(train.batches(jax.random.fold_in(data_key, epoch),
                                                (x_train, y_train), 64, drop_last=True)):
            step_key = jax.random.fold_in(jax.random.fold_in(dropout_key, epoch), i)
            step_keys = jax.random.split(step_key, args.models)       # one key per model
            params, opt_state, metrics = ensemble_step(params, opt_state, batch, step_keys)
            epoch_losses.append(metrics["loss"])                  # shape (M,)
        curves.append(np.mean(jax.device_get(epoch_losses), axis=0))
    seconds = time.perf_counter() - started

    logits = jax.jit(jax.vmap(network.apply, in_axes=(0, None)))(params, x_test)  # (M, n, 10)
    member_accuracy = np.asarray(jax.vmap(train.accuracy, in_axes=(0, None))(logits, y_test))
    mean_probabilities = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
    ensemble_accuracy = float(train.accuracy(mean_probabilities, y_test))
    print(f"{args.models} networks of {network_size(params) // args.models} parameters, "
          f"{args.epochs} epochs, trained together in {seconds:.1f} s")
    print("test accuracy of each network: "
          + " ".join(f"{a:.3f}" for a in member_accuracy))
    print(f"  mean {member_accuracy.mean():.4f}, min {member_accuracy.min():.4f}, "
          f"max {member_accuracy.max():.4f}")
    print(f"test accuracy of the ensemble (mean probability): {ensemble_accuracy:.4f}")
    save_curves(np.stack(curves, axis=1), args.out / "ensembles.png")


def network_size(params):
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def save_curves(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    epochs = np.arange(1, curves.shape[1] + 1)
    for curve in curves:
        axis.plot(epochs, curve, linewidth=1, alpha=0.7)
    axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss (with dropout)")
    axis.set_title(f"{len(curves)} networks trained at once with vmap")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
