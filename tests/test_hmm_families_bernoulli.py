"""Bernoulli emissions beyond the registry's common tests (``_hmm_families.BERNOULLI``:
brute-force inference, scipy log-pmf, M-step oracle, sampling): dynamax's ``BernoulliHMM``
from the same start (hmmlearn has none), certain features, initialisation, parameter count
and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_family_checks import check_initialize, fit_like_dynamax, start_model
from functional_dl import hmm

K, D = 3, 4


def sequences(rng, lengths=(40, 25, 33)):
    probs = np.array([[0.9, 0.1, 0.5, 0.2], [0.2, 0.8, 0.5, 0.9], [0.5, 0.5, 0.1, 0.1]])
    return [(rng.uniform(size=(n, D)) < probs[rng.integers(0, K, n)]).astype(np.int32)
            for n in lengths]


def test_em_matches_dynamax_bernoulli_hmm():
    """dynamax's Beta(1 + α, 1 + α) and Dirichlet(1 + α) modes are the MAP here with α = 0.5."""
    models = pytest.importorskip("dynamax.hidden_markov_model")
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        data = sequences(rng, (30, 30, 30))
        start = rng.uniform(0.2, 0.8, (K, D))
        reference = models.BernoulliHMM(K, D, initial_probs_concentration=1.5,
                                        transition_matrix_concentration=1.5,
                                        emission_prior_concentration0=1.5,
                                        emission_prior_concentration1=1.5)
        fitted, emissions = fit_like_dynamax(
            reference, start_model(rng, hmm.Bernoulli(jnp.asarray(start)), K), data, 0.5,
            {"pseudo_count": 0.5}, emission_probs=jnp.asarray(start))
        np.testing.assert_allclose(fitted.emissions.probs, emissions.probs, rtol=1e-8)


def test_certain_features_make_the_other_value_impossible():
    with jax.enable_x64(True):
        emissions = hmm.Bernoulli(jnp.array([[1.0, 0.5], [0.0, 0.25]]))
        lls = np.asarray(emissions.log_likelihoods(jnp.array([[1, 1], [0, 0]])))
        np.testing.assert_allclose(lls, [[np.log(0.5), -np.inf], [-np.inf, np.log(0.75)]])
        # booleans and floats are the same observations
        np.testing.assert_array_equal(
            emissions.log_likelihoods(jnp.array([[True, True], [False, False]])), lls)


def test_initialize_and_num_free_parameters():
    with jax.enable_x64(True):
        data = np.concatenate(sequences(np.random.default_rng(2)))
        emissions = check_initialize(hmm.Bernoulli, data, K, garbage=(-7, 2))
        probs = np.asarray(emissions.probs)
        assert probs.shape == (K, D) and np.all((probs > 0) & (probs < 1))
        assert emissions.num_free_parameters == K * D
        draws = np.concatenate([hmm.Bernoulli.initialize(jax.random.key(s), data,
                                                         np.ones(len(data)), K).probs
                                for s in range(30)])
        np.testing.assert_allclose(draws.mean(axis=0), data.mean(axis=0), atol=0.06)
        with pytest.raises(ValueError, match="observations must be binary"):
            hmm.Bernoulli.initialize(jax.random.key(0), data + 1, np.ones(len(data)), K)


MODEL = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                hmm.Bernoulli(jnp.array([[0.1, 0.2], [0.7, 0.6]])))


@pytest.mark.parametrize("observations, error, match", [
    (np.array([[1, 2], [0, 0]]), ValueError, r"binary \(0 or 1\)"),
    (np.array([[1.0, 0.5]]), ValueError, r"binary \(0 or 1\)"),
    (np.array([[-1, 0]]), ValueError, r"binary \(0 or 1\)"),
    (np.array([[1.0, np.nan]]), ValueError, r"binary \(0 or 1\)"),
    (np.array([[1, 0, 1]]), ValueError, r"D = 2 \(from emissions.probs\)"),
    (np.array([["a", "b"]]), TypeError, "observations must hold real numbers"),
])
def test_bad_observations(observations, error, match):
    with pytest.raises(error, match=match):
        hmm.check(MODEL, observations)
    with pytest.raises(error, match=match):
        hmm.log_likelihood(MODEL, observations)


def test_bad_probs_and_hyperparameters():
    for probs, match in [(jnp.array([[0.5, 1.5]]), r"emissions.probs must be probabilities"),
                         (jnp.array([[0.5, -0.1]]), r"emissions.probs must be probabilities"),
                         (jnp.array([[0.5, jnp.nan]]), r"emissions.probs must be probabilities"),
                         (jnp.ones(2), r"emissions.probs must have .*\(K, D\)")]:
        with pytest.raises(ValueError, match=match):
            hmm.Bernoulli(probs).check()
    with pytest.raises(ValueError, match="pseudo_count must be >= 0"):
        hmm.baum_welch(MODEL, jnp.ones((1, 4, 2), jnp.int32), max_iter=1,
                       emission_hyperparameters={"pseudo_count": -1.0})
