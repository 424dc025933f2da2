"""An LSTM classifier on variable-length sequences.

    python examples/lstm_sequences.py [--epochs 20] [--out DIR] [--small]

The task, generated from a fixed key: each sequence is 3 to 24 symbols from an alphabet of
6, padded to length 24; its label is 1 when its last real symbol equals its first, else 0
(half of each).  The network reads the symbols with ``nn.Embedding(6, 16)``, runs
``nn.RNN(nn.LSTMCell(32), return_sequences=False)`` with the sequence ``lengths`` (so the
padding never touches the state and the output is the one at each sequence's own last
step), and classifies with ``nn.Dense(2)``; trained with Adam.  To solve it the LSTM must
carry the first symbol across up to 22 distractors.  Prints the test accuracy, overall and
for short (<= 12) and long sequences, and saves the accuracy by length to
DIR/lstm_sequences_accuracy.png.  ``--small`` trains briefly on fewer sequences (the
tests' setting).
"""
import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import losses, nn, optim, train

NUM_SYMBOLS, MIN_LENGTH, MAX_LENGTH = 6, 3, 24


def make_sequences(key, num_sequences):
    """``(ids (N, T), lengths (N,), labels (N,))``: the task of the module docstring."""
    length_key, symbol_key, label_key, other_key = jax.random.split(key, 4)
    lengths = jax.random.randint(length_key, (num_sequences,), MIN_LENGTH, MAX_LENGTH + 1)
    ids = jax.random.randint(symbol_key, (num_sequences, MAX_LENGTH), 0, NUM_SYMBOLS)
    labels = jax.random.bernoulli(label_key, 0.5, (num_sequences,)).astype(jnp.int32)
    # the last real symbol: the first one (label 1) or one of the other five (label 0)
    other = (ids[:, 0] + jax.random.randint(other_key, (num_sequences,), 1, NUM_SYMBOLS)) \
        % NUM_SYMBOLS
    last = jnp.where(labels == 1, ids[:, 0], other)
    rows = jnp.arange(num_sequences)
    ids = ids.at[rows, lengths - 1].set(last)
    # padding: id 0 past each length (never read: the RNN stops at the length)
    ids = jnp.where(jnp.arange(MAX_LENGTH)[None, :] < lengths[:, None], ids, 0)
    return np.asarray(ids), np.asarray(lengths), np.asarray(labels)


EMBED = nn.Embedding(NUM_SYMBOLS, 16)
LSTM = nn.RNN(nn.LSTMCell(32), return_sequences=False)
HEAD = nn.Dense(2)


def init(key):
    embed_key, lstm_key, head_key = jax.random.split(key, 3)
    shape, embedding = EMBED.init(embed_key, (-1, MAX_LENGTH))
    shape, lstm = LSTM.init(lstm_key, shape)
    _, head = HEAD.init(head_key, shape)
    return {"embedding": embedding, "lstm": lstm, "head": head}


def apply(params, ids, lengths):
    """Logits ``(N, 2)``; ``serial`` passes no ``lengths``, so the three layers are composed
    here."""
    vectors = EMBED.apply(params["embedding"], ids)                  # (N, T, 16)
    last = LSTM.apply(params["lstm"], vectors, lengths=lengths)      # (N, 32) at t = length-1
    return HEAD.apply(params["head"], last)


def loss_fn(params, batch, key):
    del key  # no dropout
    ids, lengths, labels = batch
    logits = apply(params, ids, lengths)
    loss = losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"accuracy": train.accuracy(logits, labels)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true",
                        help="train briefly on fewer sequences (the tests' setting)")
    args = parser.parse_args()
    num_train, num_test, epochs = (2048, 256, 12) if args.small else (4096, 1024, args.epochs)
    data_key, init_key, fit_key = jax.random.split(jax.random.key(args.seed), 3)
    train_key, test_key = jax.random.split(data_key)
    train_data = make_sequences(train_key, num_train)
    test_data = make_sequences(test_key, num_test)

    params = init(init_key)
    result = train.fit(loss_fn, optim.adam(3e-3), params, train_data, key=fit_key,
                       epochs=epochs, batch_size=64, has_aux=True, validation_data=test_data)
    ids, lengths, labels = test_data
    correct = np.asarray(jnp.argmax(jax.jit(apply)(result.params, ids, lengths), -1) == labels)
    short = lengths <= 12
    print(f"test accuracy: {correct.mean():.4f} (short sequences {correct[short].mean():.4f}, "
          f"long {correct[~short].mean():.4f}; {len(labels)} test / {num_train} training "
          f"sequences of length {MIN_LENGTH}-{MAX_LENGTH})")
    save_accuracy_by_length(lengths, correct, args.out / "lstm_sequences_accuracy.png")


def save_accuracy_by_length(lengths, correct, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.arange(MIN_LENGTH, MAX_LENGTH + 1)
    accuracy = [correct[lengths == size].mean() if np.any(lengths == size) else np.nan
                for size in sizes]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar(sizes, accuracy)
    axis.axhline(0.5, color="grey", linestyle="--", label="chance")
    axis.set_xlabel("sequence length")
    axis.set_ylabel("test accuracy")
    axis.set_ylim(0, 1.05)
    axis.set_title("LSTM: is the last symbol the first?")
    axis.legend(loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
