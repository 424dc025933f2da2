"""A small ResNet with batch normalization on the 8×8 digits.

    python examples/resnet_digits.py [--epochs 12] [--width 16] [--blocks 2] [--small] [--out DIR]

stem: conv 3×3 (width) → BatchNorm → ReLU, then ``blocks`` residual blocks

    y = ReLU(x + BN(conv(ReLU(BN(conv(x))))))          (nn.Residual around nn.serial)

then max-pool 2×2 → flatten → dense 10, on NHWC images of shape (8, 8, 1), trained with Adam.
BatchNorm's running mean and variance are the model's state: the loss takes and returns
it, ``fit(..., model_state=...)`` threads it through the steps, and the test accuracy is
measured in evaluation mode, with the running statistics.  Prints the test accuracy and
saves the training curves to DIR/resnet_digits_curves.png.  ``--small`` is a quick run
(2 epochs, width 8, one block) for the tests.
"""
import argparse
import pathlib

import jax
import numpy as np

from functional_dl import datasets, losses, nn, optim, train


def residual_block(width):
    """``ReLU(x + BN(conv(ReLU(BN(conv(x))))))``: the block keeps the shape (width channels)."""
    return nn.serial(
        nn.Residual(nn.serial(nn.Conv2D(width, 3), nn.BatchNorm(), nn.Relu,
                              nn.Conv2D(width, 3), nn.BatchNorm())),
        nn.Relu)


def resnet(width, num_blocks, num_classes=10):
    return nn.serial(
        nn.Conv2D(width, 3), nn.BatchNorm(), nn.Relu,
        *[residual_block(width) for _ in range(num_blocks)],
        nn.MaxPool(2), nn.Flatten, nn.Dense(num_classes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--small", action="store_true",
                        help="a quick run: 2 epochs, width 8, one block")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.small:
        args.epochs, args.width, args.blocks = 2, 8, 1
    split_key, init_key, fit_key = jax.random.split(jax.random.key(args.seed), 3)

    digits = datasets.load_digits()
    images = (digits.images / 16.0)[..., None]                       # (1797, 8, 8, 1)
    x_train, x_test, y_train, y_test = datasets.train_test_split(
        split_key, images, digits.target, test_size=0.2)

    network = resnet(args.width, args.blocks)
    _, params, model_state = network.init(init_key, (-1, 8, 8, 1))
    num_params = sum(leaf.size for leaf in jax.tree.leaves(params))

    def loss_fn(params, model_state, batch, key):
        x, labels = batch
        # a key during training: batch statistics, running averages updated; None for
        # validation: the running statistics, the state unchanged
        logits, model_state = network.apply(params, x, state=model_state,
                                            train=key is not None)
        loss = losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return (loss, {"accuracy": train.accuracy(logits, labels)}), model_state

    result = train.fit(loss_fn, optim.adam(3e-3), params, (x_train, y_train),
                       model_state=model_state, key=fit_key, epochs=args.epochs,
                       batch_size=64, has_aux=True, validation_data=(x_test, y_test))
    print(f"test accuracy: {result.history['val_accuracy'][-1]:.4f} "
          f"({num_params} parameters, {args.blocks} residual blocks of width {args.width}, "
          f"{len(y_train)} training / {len(y_test)} test images)")
    save_curves(result.history, args.out / "resnet_digits_curves.png")


def save_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, metric in ((left, "loss"), (right, "accuracy")):
        axis.plot(epochs, history[metric], label="training (batch statistics)")
        axis.plot(epochs, history[f"val_{metric}"], label="test (running statistics)")
        axis.set_xlabel("epoch")
        axis.set_title(f"ResNet on 8×8 digits: {metric}")
        axis.legend()
    left.set_yscale("log")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
