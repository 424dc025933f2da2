"""Bad input to hmm: each case raises the stated exception type with a message that names
the offending argument (a regular expression searched in the message)."""
import jax.numpy as jnp
import numpy as np

from _bad_input import *  # noqa: F401,F403 (the shared models, data, case() and files fixture)
from _bad_input import case, files, table_tests  # noqa: F401

CASES = [
    # ---- hmm
    case("negative initial probability", lambda f: hmm.log_likelihood(
        categorical_hmm(initial=[1.2, -0.2]), SYMBOLS), ValueError, "initial_probs"),
    case("transition rows not summing to 1", lambda f: hmm.log_likelihood(
        categorical_hmm(transition=[[0.9, 0.2], [0.2, 0.8]]), SYMBOLS), ValueError,
        "transition_matrix"),
    case("emission rows not summing to 1", lambda f: hmm.posteriors(
        categorical_hmm(probs=[[0.5, 0.6, 0.0], [0.1, 0.2, 0.7]]), SYMBOLS), ValueError,
        r"emissions\.probs"),
    case("K of transition_matrix", lambda f: hmm.log_likelihood(
        categorical_hmm(transition=jnp.eye(3)), SYMBOLS), ValueError, "transition_matrix"),
    case("K of emissions", lambda f: hmm.log_likelihood(
        categorical_hmm(probs=jnp.ones((3, 3)) / 3), SYMBOLS), ValueError, "emissions"),
    case("symbol >= V", lambda f: hmm.log_likelihood(CATEGORICAL_HMM, jnp.array([0, 3, 1])),
         ValueError, "observations"),
    case("negative symbol (viterbi)", lambda f: hmm.viterbi(CATEGORICAL_HMM, jnp.array([0, -1])),
         ValueError, "observations"),
    case("symbol >= V (parallel)", lambda f: hmm.parallel.log_likelihood(
        CATEGORICAL_HMM, jnp.array([0, 3, 1])), ValueError, "observations"),
    case("float symbols", lambda f: hmm.log_likelihood(CATEGORICAL_HMM, jnp.array([0.0, 1.0])),
         TypeError, "observations"),
    case("D of observations", lambda f: hmm.log_likelihood(gaussian_hmm(), jnp.zeros((5, 3))),
         ValueError, "observations"),
    case("D of covariances", lambda f: hmm.log_likelihood(
        gaussian_hmm(covariances=jnp.stack([jnp.eye(3)] * 2)), VECTORS), ValueError,
        "covariances"),
    case("covariance not positive-definite", lambda f: hmm.log_likelihood(
        gaussian_hmm(covariances=jnp.stack([jnp.eye(2), jnp.array([[1.0, 2.0], [2.0, 1.0]])])),
        VECTORS), ValueError, "covariances"),
    case("zero variance", lambda f: hmm.log_likelihood(hmm.HMM(
        INITIAL, TRANSITION, hmm.DiagonalGaussian(MEANS, jnp.array([[1.0, 1.0], [0.0, 1.0]]))),
        VECTORS), ValueError, "variances"),
    case("length 0", lambda f: hmm.log_likelihood(CATEGORICAL_HMM, SYMBOLS, 0), ValueError,
         "length"),
    case("length > T", lambda f: hmm.log_likelihood(CATEGORICAL_HMM, SYMBOLS, 9), ValueError,
         "length"),
    case("Baum-Welch lengths shape", lambda f: hmm.baum_welch(
        CATEGORICAL_HMM, jnp.zeros((2, 4), jnp.int32), jnp.array([4, 4, 4])), ValueError,
        "lengths"),
    case("Baum-Welch max_iter = 0", lambda f: hmm.baum_welch(
        CATEGORICAL_HMM, jnp.zeros((2, 4), jnp.int32), max_iter=0), ValueError, "max_iter"),
    case("sample num_steps = 0", lambda f: hmm.sample(KEY, CATEGORICAL_HMM, 0), ValueError,
         "num_steps"),
    case("model not an HMM", lambda f: hmm.log_likelihood((INITIAL, TRANSITION), SYMBOLS),
         TypeError, "model"),
    # ---- empty arrays
    case("hmm sequence of no steps", lambda f: hmm.log_likelihood(
        CATEGORICAL_HMM, jnp.zeros(0, jnp.int32)), ValueError, "observations"),
]


(test_case_names_are_unique,
 test_bad_input_raises_a_clear_error_naming_the_argument) = table_tests(CASES)
