"""Quickstart: an MLP on the bundled handwritten digits, with Adam, L2 and dropout.

    python examples/quickstart.py [--epochs 40] [--out DIR]

Trains 64 → 512 → 512 → 10 (ReLU, dropout 0.3) on 80 % of the 8×8 digit images, shows a
progress bar (one line per epoch when the output is not a terminal), prints the accuracy on
the other 20 % and saves the training curves to DIR/quickstart_curves.png (DIR defaults to
this file's folder).  The test set is only watched during training (the curves); nothing
is chosen by it: the hyperparameters are fixed and every epoch is kept.
"""
import argparse
import pathlib

import jax
import numpy as np

from functional_dl import datasets, losses, nn, optim, regularizers, train

L2_STRENGTH = 1e-4


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    key = jax.random.key(args.seed)
    split_key, init_key, fit_key = jax.random.split(key, 3)

    # Data: 1797 images, pixel counts 0..16 scaled to [0, 1]; 20 % held out for testing.
    digits = datasets.load_digits()
    x_train, x_test, y_train, y_test = datasets.train_test_split(
        split_key, digits.data / 16.0, digits.target, test_size=0.2)

    network = nn.mlp([512, 512, 10], activation="relu", dropout=0.3)
    _, params = network.init(init_key, (-1, x_train.shape[1]))

    def loss_fn(params, batch, key):
        """Mean cross-entropy + λ·Σw² over the weight matrices; dropout only with a key."""
        images, labels = batch
        logits = network.apply(params, images, key=key, train=key is not None)
        cross_entropy = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
        penalty = regularizers.l2_penalty(params, mask=regularizers.weights_only_mask)
        return cross_entropy.mean() + L2_STRENGTH * penalty, {
            "accuracy": train.accuracy(logits, labels)}

    result = train.fit(loss_fn, optim.adam(1e-3), params, (x_train, y_train), key=fit_key,
                       epochs=args.epochs, batch_size=64, has_aux=True,
                       validation_data=(x_test, y_test))

    def test_metrics(params, batch):
        return {"accuracy": train.accuracy(network.apply(params, batch[0]), batch[1])}

    test = train.evaluate(test_metrics, result.params, (x_test, y_test), batch_size=512)
    print(f"test accuracy: {test['accuracy']:.4f} ({len(y_test)} test images, "
          f"{len(y_train)} training images, {len(result.history['loss'])} epochs)")
    save_curves(result.history, args.out / "quickstart_curves.png")


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
        axis.set_title(metric)
        axis.legend()
    left.set_yscale("log")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
