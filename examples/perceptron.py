"""Rosenblatt's perceptron on real data: breast cancer (binary) and digits (one-vs-rest).

    python examples/perceptron.py [--epochs 20] [--out DIR]

Breast cancer: 30 measurements standardized with the training part's mean and standard
deviation, labels malignant → -1, benign → +1.  Digits: ten perceptrons, one per class,
trained at once (``vmap``) and combined by the largest score.  Prints the mistakes made in
each epoch (an epoch with 0 mistakes means the training data are separated) and the test
accuracies; saves the mistake curves to DIR/perceptron_mistakes.png.
"""
import argparse
import pathlib

import jax
import numpy as np

from functional_dl import datasets, perceptron


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cancer_split, cancer_order, digits_split, digits_order = jax.random.split(
        jax.random.key(args.seed), 4)

    cancer = datasets.load_breast_cancer()
    x_train, x_test, y_train, y_test = datasets.train_test_split(
        cancer_split, cancer.data, cancer.target, test_size=0.25)
    x_train, x_test = datasets.standardize(x_train, x_test)
    signs_train, signs_test = 2 * y_train - 1, 2 * y_test - 1       # {0, 1} → {-1, +1}
    params, cancer_mistakes = perceptron.fit_with_history(
        x_train, signs_train, epochs=args.epochs, key=cancer_order)
    cancer_accuracy = np.mean(np.asarray(perceptron.predict(params, x_test)) == signs_test)
    print(f"breast cancer ({len(x_train)} train / {len(x_test)} test, standardized)")
    print(f"  mistakes per epoch: {np.asarray(cancer_mistakes).tolist()}")
    print(f"  test accuracy: {cancer_accuracy:.4f}")

    digits = datasets.load_digits()
    x_train, x_test, y_train, y_test = datasets.train_test_split(
        digits_split, digits.data / 16.0, digits.target, test_size=0.25)
    params, digit_mistakes = perceptron.fit_one_vs_rest_with_history(
        x_train, y_train, num_classes=10, epochs=args.epochs, key=digits_order)
    digits_accuracy = np.mean(np.asarray(perceptron.predict_one_vs_rest(params, x_test))
                              == y_test)
    total_mistakes = np.asarray(digit_mistakes).sum(axis=0)
    print(f"digits, one-vs-rest ({len(x_train)} train / {len(x_test)} test)")
    print(f"  mistakes per epoch, all ten perceptrons: {total_mistakes.tolist()}")
    print(f"  test accuracy: {digits_accuracy:.4f}")
    save_mistakes(np.asarray(cancer_mistakes), np.asarray(digit_mistakes),
                  args.out / "perceptron_mistakes.png")


def save_mistakes(cancer_mistakes, digit_mistakes, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(cancer_mistakes) + 1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, cancer_mistakes, marker="o")
    left.set_title("breast cancer")
    for digit, mistakes in enumerate(digit_mistakes):
        right.plot(epochs, mistakes, label=str(digit))
    right.set_title("digits: one perceptron per class")
    right.legend(ncol=2, fontsize="small", title="class")
    for axis in (left, right):
        axis.set_xlabel("epoch")
        axis.set_ylabel("mistakes (updates) in the epoch")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
