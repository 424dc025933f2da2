"""Spherical Gaussian emissions beyond the registry's common tests
(``_hmm_families.SPHERICAL_GAUSSIAN``: brute-force inference, scipy log-pdf, M-step oracle,
sampling): hmmlearn's ``GaussianHMM(covariance_type="spherical")`` from the same start, the
variance floor, initialisation, parameter count and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_family_checks import (assert_kmeans_fixed_point, check_initialize, fit_like_hmmlearn,
                                hmmlearn_options, start_model)
from functional_dl import hmm

K, D = 3, 2
MEANS = np.array([[0.0, 0.0], [3.0, -1.0], [-2.0, 4.0]])


def sequences(rng, lengths=(40, 25, 33)):
    scales = np.array([1.0, 0.5, 2.0])
    out = []
    for n in lengths:
        states = rng.integers(0, K, n)
        out.append(MEANS[states] + scales[states, None] * rng.normal(size=(n, D)))
    return out


def test_em_matches_hmmlearn_spherical_gaussian_hmm():
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        data = sequences(rng)
        means, variances = MEANS + rng.normal(size=(K, D)), rng.uniform(0.5, 2.0, K)
        reference = hmmlearn_hmm.GaussianHMM(covariance_type="spherical", covars_prior=0.0,
                                             params="stmc", **hmmlearn_options(K))
        reference.n_features = D
        reference.means_, reference.covars_ = means.copy(), variances.copy()
        start = start_model(rng, hmm.SphericalGaussian(jnp.asarray(means),
                                                       jnp.asarray(variances)), K)
        fitted = fit_like_hmmlearn(reference, start, data, {"min_covar": 1e-6})
        np.testing.assert_allclose(fitted.emissions.means, reference.means_, rtol=1e-8)
        # hmmlearn keeps a spherical variance as a (K, D) array of equal columns
        hmmlearn_variances = np.asarray(reference._covars_)
        assert hmmlearn_variances.shape == (K, D)
        np.testing.assert_allclose(np.broadcast_to(fitted.emissions.variances[:, None], (K, D)),
                                   hmmlearn_variances, rtol=1e-8)


def test_variance_floor():
    with jax.enable_x64(True):
        emissions = hmm.SphericalGaussian(jnp.zeros((1, 2)), jnp.ones(1))
        x = jnp.array([[1.0, 1.0], [1.0, 1.0]])
        stats = emissions.sufficient_stats(x, jnp.ones((2, 1)))
        updated = emissions.m_step(stats, min_covar=0.25)
        np.testing.assert_allclose(updated.means, [[1.0, 1.0]])
        np.testing.assert_allclose(updated.variances, [0.25])


def test_initialize_and_num_free_parameters():
    with jax.enable_x64(True):
        data = np.concatenate(sequences(np.random.default_rng(2)))
        emissions = check_initialize(hmm.SphericalGaussian, data, K, garbage=(np.nan, 1e30))
        assert emissions.num_free_parameters == K * D + K
        means = np.asarray(emissions.means)
        # the means are k-means centres; the variances the data's average variance
        assert len({tuple(m) for m in means}) == K
        assert_kmeans_fixed_point(means, data)
        np.testing.assert_allclose(emissions.variances, data.var(axis=0).mean() + 1e-3,
                                   rtol=1e-10)
        # steps of weight 0 do not count: three points, three centres
        weights = np.zeros(len(data))
        weights[[3, 17, 50]] = 1.0
        chosen = hmm.SphericalGaussian.initialize(jax.random.key(5), data, weights, K).means
        np.testing.assert_array_equal(np.sort(np.asarray(chosen), axis=0),
                                      np.sort(data[[3, 17, 50]], axis=0))


MODEL = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                hmm.SphericalGaussian(jnp.zeros((2, 2)), jnp.ones(2)))


def test_bad_input():
    for emissions, match in [
            (hmm.SphericalGaussian(jnp.zeros((2, 2)), jnp.array([1.0, 0.0])),
             "emissions.variances must be finite and > 0"),
            (hmm.SphericalGaussian(jnp.zeros((2, 2)), jnp.ones((2, 2))),
             r"emissions.variances must have .*\(K,\) to match emissions.means"),
            (hmm.SphericalGaussian(jnp.full((2, 2), jnp.nan), jnp.ones(2)),
             "emissions.means must be finite")]:
        with pytest.raises(ValueError, match=match):
            emissions.check()
    with pytest.raises(ValueError, match=r"D = 2 \(from means\)"):
        hmm.log_likelihood(MODEL, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="observations must be finite"):
        hmm.check(MODEL, jnp.array([[0.0, jnp.inf]]))
    with pytest.raises(ValueError, match="min_covar must be > 0"):
        hmm.baum_welch(MODEL, jnp.ones((1, 4, 2)), max_iter=1,
                       emission_hyperparameters={"min_covar": 0.0})
