"""A small convolutional network on the 8×8 digits.

    python examples/cnn_digits.py [--epochs 15] [--out DIR]

conv 3×3 (16) → ReLU → conv 3×3 (32) → ReLU → max-pool 2×2 → flatten → dense 64 → ReLU →
dense 10, on NHWC images of shape (8, 8, 1), trained with Adam.  Prints the test accuracy
and the number of parameters and saves the training curves to DIR/cnn_digits_curves.png.
"""
import argparse
import pathlib

import jax
import numpy as np

from functional_dl import datasets, losses, nn, optim, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    split_key, init_key, fit_key = jax.random.split(jax.random.key(args.seed), 3)

    digits = datasets.load_digits()
    images = (digits.images / 16.0)[..., None]                       # (1797, 8, 8, 1)
    x_train, x_test, y_train, y_test = datasets.train_test_split(
        split_key, images, digits.target, test_size=0.2)

    network = nn.serial(
        nn.Conv2D(16, 3), nn.Relu,
        nn.Conv2D(32, 3), nn.Relu, nn.MaxPool(2),
        nn.Flatten, nn.Dense(64), nn.Relu,
        nn.Dense(10))
    _, params = network.init(init_key, (-1, 8, 8, 1))
    num_params = sum(leaf.size for leaf in jax.tree.leaves(params))

    def loss_fn(params, batch, key):
        x, labels = batch
        logits = network.apply(params, x)
        loss = losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, {"accuracy": train.accuracy(logits, labels)}

    result = train.fit(loss_fn, optim.adam(2e-3), params, (x_train, y_train), key=fit_key,
                       epochs=args.epochs, batch_size=64, has_aux=True,
                       validation_data=(x_test, y_test))
    print(f"test accuracy: {result.history['val_accuracy'][-1]:.4f} "
          f"({num_params} parameters, {len(y_train)} training / {len(y_test)} test images)")
    save_curves(result.history, args.out / "cnn_digits_curves.png")


def save_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, metric in ((left, "loss"), (right, "accuracy")):
        axis.plot(epochs, history[metric], label="training")
        axis.plot(epochs, history[f"val_{metric}"], label="test")
        axis.set_xlabel("epoch")
        axis.set_title(f"CNN on 8×8 digits: {metric}")
        axis.legend()
    left.set_yscale("log")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
