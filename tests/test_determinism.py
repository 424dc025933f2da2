"""Determinism and compilation counts.

Same key, same result: every random function is called twice directly (as a user calls
it: op by op, or through the function's own compiled core) and twice inside ``jax.jit`` (one
jitted function holds all of them, so they compile once together), and the repeats must be
bit-identical.  Between the direct and the jitted call the random bits
are the same, so discrete outcomes (dropout masks, batch orders, sampled states and symbols,
perceptron mistakes) must be identical too; floating-point results may differ by rounding
(XLA fuses the jitted program differently) and are compared to 1e-6.  A different key must
change the result, so none of these tests can pass with a function that ignores its key.

No retracing: ``fit`` over 100 steps traces its loss once for training and once for
validation, and a second ``fit`` with the same loss and optimizer compiles nothing.
(``make_train_step``'s own 100-step count is in ``test_train.py``.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm, losses, nn, optim, perceptron, train

NETWORK = nn.mlp([8, 3], dropout=0.3)
NUM_FEATURES = 6
rng = np.random.default_rng(0)
X = rng.normal(size=(40, NUM_FEATURES)).astype(np.float32)
Y = rng.integers(0, 3, size=40).astype(np.int32)
SIGNS = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, 1, -1).astype(np.int32)
CATEGORICAL_HMM = hmm.HMM(jnp.array([0.6, 0.4]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                          hmm.Categorical(jnp.array([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])))


def leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def assert_bit_identical(first, second):
    first, second = leaves(first), leaves(second)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def assert_same_up_to_rounding(direct, jitted):
    """Discrete leaves identical, floating-point leaves equal to 1e-6."""
    for a, b in zip(leaves(direct), leaves(jitted), strict=True):
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(a, b)


def differs(first, second):
    return any(a.shape != b.shape or not np.array_equal(a, b)
               for a, b in zip(leaves(first), leaves(second)))


DROPOUT_INPUT = np.arange(1.0, 65.0, dtype=np.float32).reshape(8, 8)


def dropout(key):
    return nn.Dropout(0.5).apply({}, DROPOUT_INPUT, key=key, train=True)


def init_mlp(key):
    return NETWORK.init(key, (-1, NUM_FEATURES))[1]


def sample_hmm(key):
    return hmm.sample(key, CATEGORICAL_HMM, 12)


def shuffled_perceptron(key):
    return perceptron.fit_with_history(X[:16], SIGNS[:16], epochs=2, key=key)


def loss_fn(params, batch, key):
    x, y = batch
    logits = NETWORK.apply(params, x, key=key, train=key is not None)
    return losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()


OPTIMIZER = optim.adam(1e-2)
STEP = train.make_train_step(loss_fn, OPTIMIZER, donate=False)


def three_training_steps(key):
    """Init, shuffle and dropout all driven by ``key``."""
    init_key, shuffle_key, dropout_key = jax.random.split(key, 3)
    params = init_mlp(init_key)
    state = OPTIMIZER.init(params)
    for i, batch in enumerate(train.batches(shuffle_key, (X[:24], Y[:24]), 8)):
        params, state, _ = STEP(params, state, batch, jax.random.fold_in(dropout_key, i))
    return params, state


RANDOM_FUNCTIONS = {
    "dropout": dropout,
    "mlp init": init_mlp,
    "hmm sample": sample_hmm,
    "perceptron shuffled fit": shuffled_perceptron,
    "three training steps": three_training_steps,
}


@pytest.fixture(scope="module")
def jitted_runs():
    """Every random function inside one ``jax.jit`` (one compilation instead of one each),
    run twice with key 7 and once with key 8."""
    all_jitted = jax.jit(lambda key: {name: fn(key) for name, fn in RANDOM_FUNCTIONS.items()})
    return all_jitted(jax.random.key(7)), all_jitted(jax.random.key(7)), all_jitted(
        jax.random.key(8))


@pytest.mark.parametrize("name", list(RANDOM_FUNCTIONS))
def test_same_key_same_result_jitted_or_not(name, jitted_runs):
    fn = RANDOM_FUNCTIONS[name]
    key = jax.random.key(7)
    direct_first, direct_second = fn(key), fn(key)
    jitted_first, jitted_second, jitted_other_key = (run[name] for run in jitted_runs)
    assert_bit_identical(direct_first, direct_second)
    assert_bit_identical(jitted_first, jitted_second)
    assert_same_up_to_rounding(direct_first, jitted_first)
    assert differs(jitted_first, jitted_other_key)


def test_batches_repeat_their_order_for_the_same_key():
    def epoch(key):
        return [batch for batch in train.batches(key, (X, Y), 8)]
    assert_bit_identical(epoch(jax.random.key(3)), epoch(jax.random.key(3)))
    assert differs(epoch(jax.random.key(3)), epoch(jax.random.key(4)))


def counting(loss, counts):
    """``loss`` that records, at each trace, whether it was traced for training or evaluation."""
    def counted(params, batch, key):
        counts["train" if key is not None else "eval"] += 1
        return loss(params, batch, key)
    return counted


def test_fit_is_bit_identical_for_the_same_key_and_compiles_its_step_once():
    counts = {"train": 0, "eval": 0}
    counted_loss = counting(loss_fn, counts)
    validation = (X[:24], Y[:24])  # the size the training-steps check stages too

    def run(key, epochs):
        return train.fit(counted_loss, OPTIMIZER, init_mlp(jax.random.key(0)), (X, Y), key=key,
                         epochs=epochs, batch_size=4, validation_data=validation,
                         progress="none")

    first = run(jax.random.key(5), epochs=10)                  # 10 epochs x 10 steps
    assert len(first.history["loss"]) == 10
    assert counts == {"train": 1, "eval": 1}                  # one trace each, 100 steps
    second = run(jax.random.key(5), epochs=10)
    assert counts == {"train": 1, "eval": 1}                  # the second fit compiles nothing
    assert_bit_identical((first.params, first.opt_state), (second.params, second.opt_state))
    assert first.history == second.history
    assert differs(run(jax.random.key(5), epochs=1).params, run(jax.random.key(6), epochs=1).params)
