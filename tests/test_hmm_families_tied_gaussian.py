"""Tied Gaussian emissions beyond the registry's common tests (``_hmm_families.TIED_GAUSSIAN``:
brute-force inference, scipy log-pdf, M-step oracle, sampling): hmmlearn's
``GaussianHMM(covariance_type="tied")`` from the same start, the eigenvalue floor, a state
without mass, initialisation, parameter count and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_family_checks import (assert_kmeans_fixed_point, check_initialize, fit_like_hmmlearn,
                                hmmlearn_options, start_model)
from functional_dl import hmm

K, D = 3, 2
MEANS = np.array([[0.0, 0.0], [3.0, -1.0], [-2.0, 4.0]])
FACTOR = np.array([[1.0, 0.0], [0.6, 0.5]])


def sequences(rng, lengths=(40, 25, 33)):
    return [MEANS[rng.integers(0, K, n)] + rng.normal(size=(n, D)) @ FACTOR.T for n in lengths]


def test_em_matches_hmmlearn_tied_gaussian_hmm():
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        data = sequences(rng)
        means, covariance = MEANS + rng.normal(size=(K, D)), np.array([[2.0, 0.3], [0.3, 1.0]])
        reference = hmmlearn_hmm.GaussianHMM(covariance_type="tied", covars_prior=0.0,
                                             params="stmc", **hmmlearn_options(K))
        reference.n_features = D
        reference.means_, reference.covars_ = means.copy(), covariance.copy()
        start = start_model(rng, hmm.TiedGaussian(jnp.asarray(means), jnp.asarray(covariance)), K)
        fitted = fit_like_hmmlearn(reference, start, data, {"min_covar": 1e-6})
        np.testing.assert_allclose(fitted.emissions.means, reference.means_, rtol=1e-8)
        np.testing.assert_allclose(fitted.emissions.covariance, reference._covars_, rtol=1e-8)


def test_a_state_without_mass_keeps_its_mean_and_adds_nothing_to_the_covariance():
    with jax.enable_x64(True):
        emissions = hmm.TiedGaussian(jnp.array([[0.0, 0.0], [50.0, 50.0]]), jnp.eye(2))
        x = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
        weights = jnp.stack([jnp.ones(4), jnp.zeros(4)], axis=1)
        updated = emissions.m_step(emissions.sufficient_stats(x, weights), min_covar=1e-3)
        np.testing.assert_allclose(updated.means, [[0.0, 0.0], [50.0, 50.0]], atol=1e-15)
        np.testing.assert_allclose(updated.covariance, [[0.5, 0.0], [0.0, 2.0]], rtol=1e-12)
        # a degenerate direction is floored
        flat = emissions.m_step(emissions.sufficient_stats(x[:2], weights[:2]), min_covar=0.1)
        np.testing.assert_allclose(flat.covariance, [[1.0, 0.0], [0.0, 0.1]], rtol=1e-12,
                                   atol=1e-15)


def test_initialize_and_num_free_parameters():
    with jax.enable_x64(True):
        data = np.concatenate(sequences(np.random.default_rng(2)))
        emissions = check_initialize(hmm.TiedGaussian, data, K, garbage=(np.nan, 1e30))
        assert emissions.num_free_parameters == K * D + D * (D + 1) // 2
        means = np.asarray(emissions.means)
        assert_kmeans_fixed_point(means, data)
        np.testing.assert_allclose(emissions.covariance,
                                   np.cov(data.T, bias=True) + 1e-3 * np.eye(D), rtol=1e-10)


MODEL = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                hmm.TiedGaussian(jnp.zeros((2, 2)), jnp.eye(2)))


def test_bad_input():
    for emissions, match in [
            (hmm.TiedGaussian(jnp.zeros((2, 2)), jnp.array([[1.0, 2.0], [2.0, 1.0]])),
             "emissions.covariance must be positive-definite"),
            (hmm.TiedGaussian(jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2)),
             r"emissions.covariance must have .*\(D, D\) to match emissions.means"),
            (hmm.TiedGaussian(jnp.zeros((2, 2)), jnp.array([[1.0, 0.5], [0.0, 1.0]])),
             "emissions.covariance must be symmetric")]:
        with pytest.raises(ValueError, match=match):
            emissions.check()
    with pytest.raises(ValueError, match=r"D = 2 \(from means\)"):
        hmm.log_likelihood(MODEL, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="min_covar must be > 0"):
        hmm.baum_welch(MODEL, jnp.ones((1, 4, 2)), max_iter=1,
                       emission_hyperparameters={"min_covar": -1.0})
