"""Bad input to misc: each case raises the stated exception type with a message that names
the offending argument (a regular expression searched in the message)."""
import jax.numpy as jnp
import numpy as np

from _bad_input import *  # noqa: F401,F403 (the shared models, data, case() and files fixture)
from _bad_input import case, files, table_tests  # noqa: F401

CASES = [
    # ---- losses
    case("softmax_cross_entropy shapes", lambda f: losses.softmax_cross_entropy(
        jnp.zeros((4, 3)), jnp.zeros((4, 2))), ValueError, "labels"),
    case("integer labels out of range", lambda f: losses.softmax_cross_entropy_with_integer_labels(
        jnp.zeros((4, 3)), jnp.array([0, 1, 2, 3])), ValueError, "labels"),
    case("integer labels of float dtype",
         lambda f: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((4, 3)),
                                                                    jnp.zeros(4)),
         TypeError, "labels"),
    case("integer labels batch shape", lambda f: losses.softmax_cross_entropy_with_integer_labels(
        jnp.zeros((4, 3)), jnp.zeros(5, jnp.int32)), ValueError, "labels"),
    case("integer logits", lambda f: losses.softmax_cross_entropy(
        jnp.zeros((4, 3), jnp.int32), jnp.zeros((4, 3))), TypeError, "logits"),
    case("squared_error shapes", lambda f: losses.squared_error(jnp.zeros(4), jnp.zeros(5)),
         ValueError, "targets"),
    case("hinge labels 0/1", lambda f: losses.hinge_loss(jnp.zeros(4), jnp.array([0, 1, 0, 1])),
         ValueError, "labels"),
    case("l2_penalty mask structure", lambda f: regularizers.l2_penalty(PARAMS, {"w": True}),
         ValueError, "mask"),
    # ---- perceptron
    case("perceptron labels 0/1", lambda f: perceptron.fit(X4, np.array([0, 1, 0, 1])),
         ValueError, r"\by\b"),
    case("perceptron length mismatch", lambda f: perceptron.fit(X4, Y_SIGNS[:3]), ValueError,
         "X and y"),
    case("perceptron epochs = 0", lambda f: perceptron.fit(X4, Y_SIGNS, epochs=0), ValueError,
         "epochs"),
    case("perceptron learning_rate = 0", lambda f: perceptron.fit(X4, Y_SIGNS, learning_rate=0.0),
         ValueError, "learning_rate"),
    case("perceptron 1-d X", lambda f: perceptron.fit(np.ones(4), Y_SIGNS), ValueError, r"\bX\b"),
    case("one-vs-rest label >= num_classes", lambda f: perceptron.fit_one_vs_rest(
        X4, np.array([0, 1, 2, 3]), 3), ValueError, r"\by\b"),
    case("one-vs-rest num_classes = 1", lambda f: perceptron.fit_one_vs_rest(
        X4, np.zeros(4, np.int32), 1), ValueError, "num_classes"),
    case("one-vs-rest float labels", lambda f: perceptron.fit_one_vs_rest(
        X4, np.zeros(4), 2), TypeError, r"\by\b"),
    case("perceptron epochs = 2.0", lambda f: perceptron.fit(X4, Y_SIGNS, epochs=2.0), TypeError,
         "epochs"),
    case("perceptron predict features", lambda f: perceptron.predict(PARAMS, X4), ValueError,
         r"\bX\b"),
    case("perceptron NaN feature", lambda f: perceptron.fit(
        np.array([[0.0, np.nan]] * 4), Y_SIGNS), ValueError, r"\bX\b"),
    case("perceptron key not a key", lambda f: perceptron.fit(X4, Y_SIGNS, key=0), TypeError,
         r"\bkey\b"),
    # ---- datasets
    case("train_test_split test_size > 1", lambda f: datasets.train_test_split(
        KEY, X4, test_size=1.5), ValueError, "test_size"),
    case("train_test_split lengths", lambda f: datasets.train_test_split(KEY, X4, np.ones(3)),
         ValueError, "arrays"),
    case("train_test_split without key", lambda f: datasets.train_test_split(None, X4),
         ValueError, "key"),
    case("standardize trailing shapes", lambda f: datasets.standardize(
        np.ones((4, 3)), np.ones((2, 2))), ValueError, "test"),
    case("load_digits integer dtype", lambda f: datasets.load_digits(dtype=np.int32), TypeError,
         "dtype"),
    # ---- empty arrays
    case("perceptron on no samples", lambda f: perceptron.fit(np.zeros((0, 2)), np.zeros(0)),
         ValueError, "X and y"),
    case("standardize no training rows", lambda f: datasets.standardize(
        np.zeros((0, 3)), np.zeros((2, 3))), ValueError, "train"),
    case("train_test_split no examples", lambda f: datasets.train_test_split(KEY, np.zeros((0, 2))),
         ValueError, r"arrays must hold at least one example"),
]


(test_case_names_are_unique,
 test_bad_input_raises_a_clear_error_naming_the_argument) = table_tests(CASES)
