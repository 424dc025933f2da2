"""Multinomial emissions beyond the registry's common tests (``_hmm_families.MULTINOMIAL``:
brute-force inference, scipy log-pmf with varying trials, M-step oracle, sampling):
hmmlearn's ``MultinomialHMM`` from the same start (trials varying per observation), zero
trials and zero probabilities, initialisation, parameter count and bad input."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_family_checks import check_initialize, fit_like_hmmlearn, hmmlearn_options, start_model
from functional_dl import hmm

K, V = 3, 4
PROBS = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4], [0.25, 0.25, 0.25, 0.25]])


def sequences(rng, lengths=(40, 25, 33)):
    return [rng.multinomial(rng.integers(1, 8, n), PROBS[rng.integers(0, K, n)])
            for n in lengths]


def test_em_matches_hmmlearn_multinomial_hmm_with_varying_trials():
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        data = sequences(rng)
        assert len(np.unique(np.concatenate(data).sum(axis=1))) > 1
        start = rng.dirichlet(np.full(V, 3.0), size=K)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hmmlearn's notice on MultinomialHMM's semantics
            reference = hmmlearn_hmm.MultinomialHMM(params="ste", **hmmlearn_options(K))
        reference.n_features = V
        reference.emissionprob_ = start.copy()
        fitted = fit_like_hmmlearn(reference, start_model(rng, hmm.Multinomial(jnp.asarray(start)),
                                                          K), data, {"pseudo_count": 0.0})
        np.testing.assert_allclose(fitted.emissions.probs, reference.emissionprob_, rtol=1e-8)
        # hmmlearn's log-likelihood includes the multinomial coefficient, as ours does
        x = np.concatenate(data)
        np.testing.assert_allclose(fitted.emissions.log_likelihoods(jnp.asarray(x)),
                                   reference._compute_log_likelihood(x), rtol=1e-10)


def test_zero_trials_and_zero_probabilities():
    with jax.enable_x64(True):
        emissions = hmm.Multinomial(jnp.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]))
        lls = np.asarray(emissions.log_likelihoods(jnp.array([[0, 0, 0], [1, 1, 0], [0, 0, 2]])))
        np.testing.assert_allclose(lls[0], [0.0, 0.0], atol=1e-15)  # no trials: certain
        np.testing.assert_allclose(lls[1], np.log([2 * 0.25, 2 * 0.06]), rtol=1e-12)
        assert lls[2, 0] == -np.inf and np.isclose(lls[2, 1], np.log(0.25))


def test_sampling_needs_num_trials():
    model = hmm.HMM(jnp.array([1.0]), jnp.array([[1.0]]), hmm.Multinomial(jnp.array([[0.5, 0.5]])))
    with pytest.raises(ValueError, match="needs emissions.num_trials"):
        hmm.sample(jax.random.key(0), model, 3)
    _, x = hmm.sample(jax.random.key(0), model._replace(emissions=model.emissions._replace(
        num_trials=jnp.asarray(4.0))), 3)
    np.testing.assert_array_equal(np.asarray(x).sum(axis=1), 4)


def test_initialize_and_num_free_parameters():
    with jax.enable_x64(True):
        data = np.concatenate(sequences(np.random.default_rng(2)))
        emissions = check_initialize(hmm.Multinomial, data, K, garbage=(-7, 10**6))
        assert emissions.num_trials is None  # the data's trials vary
        assert emissions.num_free_parameters == K * (V - 1)
        same = np.random.default_rng(3).multinomial(6, np.full(V, 1 / V), size=20)
        emissions = hmm.Multinomial.initialize(jax.random.key(0), same, np.ones(20), K)
        assert float(emissions.num_trials) == 6.0
        np.testing.assert_allclose(np.asarray(emissions.probs).sum(axis=1), 1.0, rtol=1e-12)


MODEL = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                hmm.Multinomial(jnp.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])))


@pytest.mark.parametrize("observations, error, match", [
    (np.array([[1, 2, -1]]), ValueError, "non-negative integer counts"),
    (np.array([[1.0, 2.5, 0.0]]), ValueError, "non-negative integer counts"),
    (np.array([[1, 2]]), ValueError, r"D = 3 \(from emissions.probs\)"),
    (np.array([1, 2, 3]), ValueError, "observations must have at least 2 dimension"),
])
def test_bad_observations(observations, error, match):
    with pytest.raises(error, match=match):
        hmm.check(MODEL, observations)
    with pytest.raises(error, match=match):
        hmm.log_likelihood(MODEL, observations)


def test_bad_parameters_and_hyperparameters():
    for emissions, match in [
            (hmm.Multinomial(jnp.array([[0.5, 0.6]])), "emissions.probs must sum to 1"),
            (hmm.Multinomial(jnp.array([[1.5, -0.5]])), "emissions.probs must be non-negative"),
            (hmm.Multinomial(jnp.array([[0.5, 0.5]]), jnp.asarray(2.5)),
             "emissions.num_trials must be a whole number >= 0"),
            (hmm.Multinomial(jnp.array([[0.5, 0.5]]), jnp.ones(2)),
             "emissions.num_trials must be a scalar")]:
        with pytest.raises(ValueError, match=match):
            emissions.check()
    with pytest.raises(ValueError, match="pseudo_count must be >= 0"):
        hmm.baum_welch(MODEL, jnp.ones((1, 4, 3), jnp.int32), max_iter=1,
                       emission_hyperparameters={"pseudo_count": -1.0})


def test_a_zero_in_a_per_entry_pseudo_count_keeps_a_structural_zero():
    with jax.enable_x64(True):
        emissions = hmm.Multinomial(jnp.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]))
        x = jnp.array([[2, 1, 0], [0, 1, 3]])
        stats = emissions.sufficient_stats(x, jnp.array([[1.0, 0.0], [0.0, 1.0]]))
        pseudo_count = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
        emissions.check_hyperparameters(pseudo_count=pseudo_count)
        updated = emissions.m_step(stats, pseudo_count=pseudo_count)
        np.testing.assert_allclose(updated.probs, [[3 / 5, 2 / 5, 0.0], [1 / 7, 2 / 7, 4 / 7]],
                                   rtol=1e-12)
