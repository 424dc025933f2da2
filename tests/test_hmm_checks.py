"""Bad input: every eager entry point raises ValueError/TypeError naming the argument."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm

PI = jnp.array([0.5, 0.3, 0.2])
A = jnp.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
B = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]])
GOOD = hmm.HMM(PI, A, hmm.Categorical(B))
X = jnp.array([0, 1, 2, 3, 1])
MEANS = jnp.zeros((3, 2))
GAUSSIAN = hmm.HMM(PI, A, hmm.Gaussian(MEANS, jnp.stack([jnp.eye(2)] * 3)))
Y = jnp.ones((5, 2))

SINGLE_SEQUENCE = [hmm.forward, hmm.log_likelihood, hmm.posteriors, hmm.viterbi,
                   hmm.parallel.log_likelihood, hmm.parallel.posteriors, hmm.parallel.viterbi]


def all_entry_points(model, observations, length=None):
    """Call every eager entry point; each must raise the same kind of error."""
    calls = [lambda f=f: f(model, observations, length) for f in SINGLE_SEQUENCE]
    calls.append(lambda: hmm.check(model, observations, length))
    lengths = None if length is None else jnp.asarray([length])
    calls.append(lambda: hmm.baum_welch(model, jnp.asarray(observations)[None], lengths, max_iter=1))
    return calls


def assert_all_raise(error, match, model, observations, length=None):
    for call in all_entry_points(model, observations, length):
        with pytest.raises(error, match=match):
            call()


def test_good_input_passes():
    hmm.check(GOOD, X)
    hmm.check(GOOD, X[None], jnp.array([3]))
    hmm.check(GAUSSIAN, Y, 5)
    hmm.check(GOOD)


@pytest.mark.parametrize("field, value, match", [
    ("initial_probs", PI.at[0].set(-0.1).at[1].set(0.9), "initial_probs must be non-negative"),
    ("transition_matrix", A.at[0, 0].set(1.0).at[0, 1].set(-0.1), "transition_matrix must be non-negative"),
    ("initial_probs", PI * 0.9, "initial_probs must sum to 1"),
    ("transition_matrix", A.at[2, 2].set(0.5), "transition_matrix must sum to 1"),
    ("initial_probs", PI.at[0].set(jnp.nan), "initial_probs must be finite"),
])
def test_bad_state_probabilities(field, value, match):
    assert_all_raise(ValueError, match, GOOD._replace(**{field: value}), X)


def test_bad_emission_probabilities():
    negative = B.at[0, 0].set(-0.5).at[0, 1].set(1.0).at[0, 2].set(0.5)
    negative_model = GOOD._replace(emissions=hmm.Categorical(negative))
    assert_all_raise(ValueError, "emissions.probs must be non-negative", negative_model, X)
    unnormalised = hmm.Categorical(B.at[1, 1].set(0.3))
    assert_all_raise(ValueError, "emissions.probs must sum to 1", GOOD._replace(emissions=unnormalised), X)


def test_row_sum_tolerance_is_1e_4_relative():
    hmm.check(GOOD._replace(initial_probs=PI.at[0].add(5e-5)), X)
    with pytest.raises(ValueError, match="initial_probs must sum to 1 within 0.0001"):
        hmm.check(GOOD._replace(initial_probs=PI.at[0].add(2e-4)), X)


def test_shapes_that_disagree_on_k():
    assert_all_raise(ValueError, "transition_matrix must have shape",
                     GOOD._replace(transition_matrix=A[:2, :2]), X)
    assert_all_raise(ValueError, "emissions must describe K = 3",
                     GOOD._replace(emissions=hmm.Categorical(B[:2])), X)
    two_covariances = GAUSSIAN._replace(emissions=hmm.Gaussian(MEANS, jnp.stack([jnp.eye(2)] * 2)))
    assert_all_raise(ValueError, "emissions.covariances must have shape", two_covariances, Y)
    assert_all_raise(ValueError, "initial_probs must have shape", GOOD._replace(initial_probs=A), X)


def test_observations_outside_the_alphabet():
    assert_all_raise(ValueError, r"observations must be symbols in \[0, 4\)", GOOD, X.at[2].set(4))
    assert_all_raise(ValueError, r"observations must be symbols in \[0, 4\)", GOOD, X.at[0].set(-1))
    assert_all_raise(TypeError, "observations must hold integer symbols", GOOD,
                     X.astype(jnp.float32))


def test_observations_with_the_wrong_dimension():
    assert_all_raise(ValueError, "D = 2", GAUSSIAN, jnp.ones((5, 3)))
    wrong = GAUSSIAN._replace(emissions=hmm.DiagonalGaussian(MEANS, jnp.ones((3, 3))))
    assert_all_raise(ValueError, "emissions.variances must have shape", wrong, Y)
    with pytest.raises(ValueError, match="use jax.vmap for a batch"):
        hmm.log_likelihood(GOOD, X[None])
    with pytest.raises(ValueError, match="for scalar data use observations"):
        hmm.log_likelihood(GAUSSIAN, jnp.ones(5))


def test_non_finite_gaussian_observations_are_rejected_except_in_padding():
    assert_all_raise(ValueError, "observations must be finite", GAUSSIAN, Y.at[1, 0].set(jnp.nan))
    hmm.check(GAUSSIAN, Y.at[4, 0].set(jnp.nan), 4)  # padding may hold anything


@pytest.mark.parametrize("covariance, match", [
    (jnp.array([[1.0, 2.0], [2.0, 1.0]]), "must be positive-definite"),
    (jnp.zeros((2, 2)), "must be positive-definite"),
    (jnp.array([[1.0, 0.5], [0.0, 1.0]]), "must be symmetric"),
])
def test_covariances_that_are_not_positive_definite(covariance, match):
    covariances = jnp.stack([jnp.eye(2), covariance, jnp.eye(2)])
    model = GAUSSIAN._replace(emissions=hmm.Gaussian(MEANS, covariances))
    assert_all_raise(ValueError, "emissions.covariances " + match, model, Y)


def test_variances_that_are_not_positive():
    model = GAUSSIAN._replace(emissions=hmm.DiagonalGaussian(MEANS, jnp.ones((3, 2)).at[1, 1].set(0.0)))
    assert_all_raise(ValueError, "emissions.variances must be finite and > 0", model, Y)


@pytest.mark.parametrize("length", [0, 6, -2])
def test_lengths_outside_one_to_t(length):
    assert_all_raise(ValueError, r"lengths? must be in \[1, T\] = \[1, 5\]", GOOD, X, length)
    for single in SINGLE_SEQUENCE:  # the single-sequence functions name their own argument
        with pytest.raises(ValueError, match=r"^length must be in"):
            single(GOOD, X, length)


def test_lengths_with_the_wrong_shape_or_dtype():
    with pytest.raises(ValueError, match="lengths must have the batch shape"):
        hmm.check(GOOD, jnp.stack([X, X]), jnp.array([5]))
    with pytest.raises(ValueError, match="lengths must have the batch shape"):
        hmm.baum_welch(GOOD, jnp.stack([X, X]), jnp.array([5, 5, 5]))
    with pytest.raises(TypeError, match="lengths must hold integers"):
        hmm.check(GOOD, jnp.stack([X, X]), jnp.array([5.0, 4.0]))


def test_baum_welch_options():
    x = jnp.stack([X, X])
    for kwargs, match in [({"max_iter": 0}, "max_iter"), ({"tol": -1.0}, "tol"),
                          ({"pseudo_count": -0.5}, "pseudo_count")]:
        with pytest.raises(ValueError, match=match):
            hmm.baum_welch(GOOD, x, **kwargs)
    # the emission family owns its hyperparameters and checks them
    with pytest.raises(ValueError, match="Categorical: pseudo_count"):
        hmm.baum_welch(GOOD, x, emission_hyperparameters={"pseudo_count": -0.5})
    with pytest.raises(ValueError, match="Gaussian: min_covar"):
        hmm.baum_welch(GAUSSIAN, jnp.stack([Y, Y]), emission_hyperparameters={"min_covar": 0.0})
    with pytest.raises(TypeError, match="Categorical emissions have no hyperparameter 'min_covar'"):
        hmm.baum_welch(GOOD, x, emission_hyperparameters={"min_covar": 1e-3})


def test_model_and_emissions_types():
    with pytest.raises(TypeError, match="model must be an HMM"):
        hmm.log_likelihood((PI, A, B), X)
    with pytest.raises(TypeError, match="model.emissions must be an emission model"):
        hmm.check(GOOD._replace(emissions=B), X)


def test_sample_arguments():
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        hmm.sample(jax.random.key(0), GOOD, 0)
    with pytest.raises(TypeError, match="num_steps must be an int"):
        hmm.sample(jax.random.key(0), GOOD, 2.5)
    with pytest.raises(ValueError, match="key"):
        hmm.sample(None, GOOD, 3)
    with pytest.raises(ValueError, match="transition_matrix must sum to 1"):
        hmm.sample(jax.random.key(0), GOOD._replace(transition_matrix=A * 2), 3)


def test_low_level_functions_check_shapes():
    lls = jnp.zeros((5, 3))
    for function in (hmm.forward_filter, hmm.smoother, hmm.most_likely_states,
                     hmm.parallel.forward_filter, hmm.parallel.smoother,
                     hmm.parallel.most_likely_states):
        with pytest.raises(ValueError, match="initial_probs must have shape"):
            function(PI[:2], A, lls)
        with pytest.raises(ValueError, match="transition_matrix must have shape"):
            function(PI, A[:2], lls)
        with pytest.raises(ValueError, match="log_likelihoods must have shape"):
            function(PI, A, lls[0])
        with pytest.raises(ValueError, match="length must be a scalar"):
            function(PI, A, lls, jnp.array([5]))


def test_inside_jit_shapes_are_checked_but_values_are_not():
    with pytest.raises(ValueError, match="emissions must describe K = 3"):
        jax.jit(hmm.log_likelihood)(GOOD._replace(emissions=hmm.Categorical(B[:2])), X)
    # value checks need concrete numbers: inside jit an unnormalised model is not rejected
    value = jax.jit(hmm.log_likelihood)(GOOD._replace(initial_probs=PI * 2), X)
    np.testing.assert_allclose(value, hmm.log_likelihood(GOOD, X) + np.log(2), rtol=1e-5)
