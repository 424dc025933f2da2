"""The five optimizers of the source text on one network: SGD, Momentum, Adagrad, RMSprop, Adam.

    python examples/optimizers_compare.py [--epochs 30] [--out DIR]

The same MLP (64 → 128 → 10, ReLU), the same initial parameters and the same minibatch order
(one key for every run), trained with each optimizer at a usual learning rate for it.
Saves the five training-loss curves to DIR/optimizers_compare.png and prints a table of
final training loss and test accuracy.
"""
import argparse
import pathlib
import time

import jax
import numpy as np

from functional_dl import datasets, losses, nn, optim, train

OPTIMIZERS = {
    "SGD (η=0.1)": optim.sgd(0.1),
    "Momentum (η=0.05, β=0.9)": optim.momentum(0.05, beta=0.9),
    "Adagrad (η=0.05)": optim.adagrad(0.05),
    "RMSprop (η=1e-3, ρ=0.9)": optim.rmsprop(1e-3, decay=0.9),
    "Adam (η=1e-3)": optim.adam(1e-3),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    split_key, init_key, fit_key = jax.random.split(jax.random.key(args.seed), 3)

    digits = datasets.load_digits()
    x_train, x_test, y_train, y_test = datasets.train_test_split(
        split_key, digits.data / 16.0, digits.target, test_size=0.2)
    network = nn.mlp([128, 10])
    _, initial_params = network.init(init_key, (-1, x_train.shape[1]))

    def loss_fn(params, batch, key):
        images, labels = batch
        logits = network.apply(params, images)
        return losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def test_accuracy(params, batch):
        return train.accuracy(network.apply(params, batch[0]), batch[1])

    histories, rows = {}, []
    for name, optimizer in OPTIMIZERS.items():
        started = time.perf_counter()
        # fit donates copies of its own, so initial_params serve every run
        result = train.fit(loss_fn, optimizer, initial_params, (x_train, y_train), key=fit_key,
                           epochs=args.epochs, batch_size=64, progress="none")
        accuracy = train.evaluate(test_accuracy, result.params, (x_test, y_test), 512)
        histories[name] = result.history["loss"]
        rows.append((name, result.history["loss"][-1], accuracy,
                     time.perf_counter() - started))

    print(f"{'optimizer':<26} {'final training loss':>20} {'test accuracy':>14} {'time':>8}")
    for name, loss, accuracy, seconds in rows:
        print(f"{name:<26} {loss:>20.4f} {accuracy:>14.4f} {seconds:>7.1f}s")
    save_curves(histories, args.out / "optimizers_compare.png")


def save_curves(histories, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, loss in histories.items():
        axis.plot(np.arange(1, len(loss) + 1), loss, label=name)
    axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.set_ylabel("training loss (cross-entropy)")
    axis.set_title("Five optimizers, same network, data order and initialization")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
