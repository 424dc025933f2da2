"""A character-level causal transformer language model on Shakespeare's sonnets I-XX.

    python examples/char_transformer.py [--epochs 25] [--layers 2] [--context 64] [--out DIR]

The bundled text (``datasets.load_sonnets()``, 12.6 thousand characters, public domain) is
split into its first 90 % for training and the last 10 % for validation, and cut into
windows of ``--context`` characters; the model predicts every next character of a window:

    ids -> Embedding(V, d) + learned positions -> TransformerBlock(causal) x layers
        -> LayerNorm -> Dense(V) -> logits

trained with AdamW (no decay on biases, norm scales and position vectors) by
``train.fit``.  Prints the loss per epoch, the validation loss in bits per character beside
the uniform guess (log2 V), and a sampled continuation of a prompt; saves the loss curves
to DIR/char_transformer_curves.png.
"""
import argparse
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import datasets, losses, nn, optim, train


def positional_embedding(context: int, stddev: float = 0.02) -> nn.Layer:
    """A layer adding a learned vector per position: ``y[..., t, :] = x[..., t, :] + P[t]``."""
    def init(key, input_shape):
        table = stddev * jax.random.normal(key, (context, input_shape[-1]))
        return tuple(input_shape), {"positions": table}

    def apply(params, x, *, key=None, train=False):
        steps = x.shape[-2]
        return x + jnp.broadcast_to(params["positions"][:steps], x.shape)

    return nn.Layer(init, apply, "positional_embedding")


def windows(ids: np.ndarray, context: int, stride: int):
    """``(inputs, targets)``: windows ``ids[s : s+T]`` and ``ids[s+1 : s+T+1]``."""
    starts = np.arange(0, len(ids) - context - 1, stride)
    inputs = np.stack([ids[s:s + context] for s in starts])
    return inputs, np.stack([ids[s + 1:s + context + 1] for s in starts])


def make_sampler(network, context: int, length: int, temperature: float):
    """A jitted ``(params, prompt_buffer, prompt_length, key) -> buffer of ids``.

    The model reads a window of ``context`` ids; once it is full, the window slides by one
    character per step.  Every step samples from ``softmax(logits / temperature)``.
    """
    def _step(carry, step_key):
        """One character: sample at the last filled position, then append it."""
        params, window, filled = carry
        logits = network.apply(params, window[None])[0, filled - 1]
        token = jax.random.categorical(step_key, logits / temperature).astype(window.dtype)
        slid = jnp.roll(window, -1).at[context - 1].set(token)
        window = jnp.where(filled < context, window.at[filled].set(token), slid)
        return (params, window, jnp.minimum(filled + 1, context)), token

    @jax.jit
    def sample(params, window, filled, key):
        _, tokens = jax.lax.scan(_step, (params, window, filled), jax.random.split(key, length))
        return tokens
    return sample


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--features", type=int, default=64, help="model width d")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=64, help="characters per window")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--sample-length", type=int, default=200)
    parser.add_argument("--prompt", default="From fairest creatures ")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    init_key, fit_key, sample_key = jax.random.split(jax.random.key(args.seed), 3)

    text = datasets.load_sonnets()
    vocabulary = sorted(set(text))
    index = {character: i for i, character in enumerate(vocabulary)}
    ids = np.array([index[c] for c in text], np.int32)
    split = int(0.9 * len(ids))
    train_data = windows(ids[:split], args.context, stride=args.context // 2)
    validation_data = windows(ids[split:], args.context, stride=args.context)

    blocks = [nn.TransformerBlock(args.heads, 4 * args.features, causal=True,
                                  dropout_rate=args.dropout) for _ in range(args.layers)]
    network = nn.serial(nn.Embedding(len(vocabulary), args.features),
                        positional_embedding(args.context), *blocks, nn.LayerNorm(),
                        nn.Dense(len(vocabulary)))
    _, params = network.init(init_key, (-1, args.context))
    num_params = sum(leaf.size for leaf in jax.tree.leaves(params))

    def loss_fn(params, batch, key):
        """Mean next-character cross entropy (nats) over every position of the batch."""
        inputs, targets = batch
        logits = network.apply(params, inputs, key=key, train=key is not None)
        return losses.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    # Decay the matrices only: biases, norm scales and the position table keep their size.
    decayed = lambda p: jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf.ndim == 2 and path[-1].key != "positions", p)
    optimizer = optim.adamw(args.learning_rate, weight_decay=1e-2, mask=decayed)
    print(f"{len(text)} characters, vocabulary {len(vocabulary)}, "
          f"{len(train_data[0])} training windows of {args.context}, {num_params} parameters")
    result = train.fit(loss_fn, optimizer, params, train_data, key=fit_key,
                       epochs=args.epochs, batch_size=args.batch_size,
                       validation_data=validation_data, progress="lines")

    bits = result.history["val_loss"][-1] / math.log(2)
    print(f"validation: {bits:.3f} bits per character (uniform guess "
          f"{math.log2(len(vocabulary)):.3f})")
    prompt = np.array([index[c] for c in args.prompt[-args.context:]], np.int32)
    window = np.zeros(args.context, np.int32)
    window[:len(prompt)] = prompt
    sample = make_sampler(network, args.context, args.sample_length, temperature=0.8)
    tokens = sample(result.params, jnp.asarray(window), len(prompt), sample_key)
    print("sample:")
    print(args.prompt + "".join(vocabulary[int(t)] for t in tokens))
    save_curves(result.history, args.out / "char_transformer_curves.png")


def save_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(epochs, np.array(history["loss"]) / math.log(2), label="training")
    axis.plot(epochs, np.array(history["val_loss"]) / math.log(2), label="validation")
    axis.set_xlabel("epoch")
    axis.set_ylabel("bits per character")
    axis.set_title("character transformer on the sonnets")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
