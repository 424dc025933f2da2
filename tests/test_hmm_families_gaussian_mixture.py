"""Gaussian-mixture emissions (full and diagonal) beyond the registry's common tests
(``_hmm_families.GAUSSIAN_MIXTURE`` and ``DIAGONAL_GAUSSIAN_MIXTURE``: brute-force inference,
scipy log-pdf, the exact M-step against a NumPy oracle, sampling): one component equals the
Gaussian families; hmmlearn's ``GMMHMM`` agrees on weights and means and differs on the
covariances by exactly δδᵀ (it centres them on the old means); initialisation, parameter
counts and bad input.  (That EM never decreases the log-likelihood is a registry test.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_family_checks import (assert_kmeans_fixed_point, check_initialize, fit_like_hmmlearn,
                                hmmlearn_options, start_model)
from functional_dl import hmm

K, M, D = 2, 2, 2
CENTRES = np.array([[[0.0, 0.0], [4.0, 0.0]], [[0.0, 5.0], [-4.0, -3.0]]])


def sequences(rng, lengths=(40, 25, 33)):
    out = []
    for n in lengths:
        states, components = rng.integers(0, K, n), rng.integers(0, M, n)
        out.append(CENTRES[states, components] + 0.7 * rng.normal(size=(n, D)))
    return out


def start(rng, diagonal):
    weights = rng.dirichlet(np.full(M, 3.0), size=K)
    means = CENTRES + rng.normal(size=CENTRES.shape)
    if diagonal:
        return weights, means, rng.uniform(0.5, 2.0, (K, M, D))
    factors = rng.normal(size=(K, M, D, D))
    return weights, means, 0.3 * factors @ np.swapaxes(factors, -1, -2) + np.eye(D)


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_one_em_step_against_hmmlearn_gmmhmm(diagonal):
    """Same π, A, weights and means; hmmlearn's covariances are the exact ones plus δδᵀ."""
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        data = sequences(rng)
        weights, means, spreads = start(rng, diagonal)
        reference = hmmlearn_hmm.GMMHMM(n_mix=M, covariance_type="diag" if diagonal else "full",
                                        params="stmcw", **{**hmmlearn_options(K), "n_iter": 1})
        reference.n_features = D
        reference.weights_, reference.means_, reference.covars_ = (
            weights.copy(), means.copy(), spreads.copy())
        family = hmm.DiagonalGaussianMixture if diagonal else hmm.GaussianMixture
        model = start_model(rng, family(*(jnp.asarray(a) for a in (weights, means, spreads))), K)
        fitted = fit_like_hmmlearn(reference, model, data,
                                   {"min_covar": 1e-9, "pseudo_count": 0.0}, num_iterations=1)
        emissions = fitted.emissions
        np.testing.assert_allclose(emissions.weights, reference.weights_, rtol=1e-8)
        np.testing.assert_allclose(emissions.means, reference.means_, rtol=1e-8, atol=1e-12)
        delta = np.asarray(emissions.means) - means
        if diagonal:
            np.testing.assert_allclose(np.asarray(emissions.variances) + delta**2,
                                       reference.covars_, rtol=1e-8)
        else:
            np.testing.assert_allclose(np.asarray(emissions.covariances)
                                       + np.einsum("kmd,kme->kmde", delta, delta),
                                       reference.covars_, rtol=1e-8, atol=1e-12)
        assert np.abs(delta).max() > 0.1  # the difference is not negligible here


@jax.jit
def em_parts(emissions, x, weights):
    """Log-likelihoods and the M-step from given posterior weights (one compilation each)."""
    return (emissions.log_likelihoods(x),
            emissions.m_step(emissions.sufficient_stats(x, weights), min_covar=1e-3))


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_one_component_is_the_gaussian_family(diagonal):
    """M = 1: log-likelihoods and the M-step from random weights equal those of
    Gaussian / DiagonalGaussian."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = jnp.asarray(np.concatenate(sequences(rng)))
        weights = jnp.asarray(rng.dirichlet(np.ones(K), size=len(x)))
        _, means, spreads = start(rng, diagonal)
        if diagonal:
            mixture = hmm.DiagonalGaussianMixture(jnp.ones((K, 1)), jnp.asarray(means[:, :1]),
                                                  jnp.asarray(spreads[:, :1]))
            single = hmm.DiagonalGaussian(jnp.asarray(means[:, 0]), jnp.asarray(spreads[:, 0]))
        else:
            mixture = hmm.GaussianMixture(jnp.ones((K, 1)), jnp.asarray(means[:, :1]),
                                          jnp.asarray(spreads[:, :1]))
            single = hmm.Gaussian(jnp.asarray(means[:, 0]), jnp.asarray(spreads[:, 0]))
        lls_mixture, updated_mixture = em_parts(mixture, x, weights)
        lls_single, updated_single = em_parts(single, x, weights)
        np.testing.assert_allclose(lls_mixture, lls_single, rtol=1e-12)
        np.testing.assert_array_equal(updated_mixture.weights, 1.0)
        for a, b in zip(jax.tree.leaves(updated_mixture)[1:], jax.tree.leaves(updated_single),
                        strict=True):
            np.testing.assert_allclose(np.asarray(a)[:, 0], b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_initialize_and_num_free_parameters(diagonal):
    family = hmm.DiagonalGaussianMixture if diagonal else hmm.GaussianMixture
    with jax.enable_x64(True):
        data = np.concatenate(sequences(np.random.default_rng(3)))
        emissions = check_initialize(family, data, K, garbage=(np.nan, 1e30), num_components=3)
        assert emissions.means.shape == (K, 3, D)
        np.testing.assert_allclose(emissions.weights, 1 / 3)
        points = np.asarray(emissions.means).reshape(-1, D)
        assert len({tuple(p) for p in points}) == K * 3
        assert_kmeans_fixed_point(points, data)
        covariance = np.cov(data.T, bias=True) + 1e-3 * np.eye(D)
        expected = np.diag(covariance) if diagonal else covariance
        spreads = emissions.variances if diagonal else emissions.covariances
        np.testing.assert_allclose(spreads, np.broadcast_to(expected, spreads.shape), rtol=1e-10)
        per_component = 2 * D if diagonal else D + D * (D + 1) // 2
        assert emissions.num_free_parameters == K * (3 - 1 + 3 * per_component)
        with pytest.raises(ValueError, match="num_states · num_components = 6 must be at most"):
            family.initialize(jax.random.key(0), data[:5], np.ones(5), K, num_components=3)
        with pytest.raises(ValueError, match="num_components must be an int >= 1"):
            family.initialize(jax.random.key(0), data, np.ones(len(data)), K, num_components=0)


def test_bad_input():
    weights, means = jnp.full((2, 2), 0.5), jnp.zeros((2, 2, 3))
    identities = jnp.broadcast_to(jnp.eye(3), (2, 2, 3, 3))
    cases = [
        (hmm.GaussianMixture(jnp.full((2, 2), 0.6), means, identities),
         "emissions.weights must sum to 1"),
        (hmm.GaussianMixture(weights, jnp.zeros((2, 3, 3)), jnp.broadcast_to(jnp.eye(3),
                                                                             (2, 3, 3, 3))),
         r"emissions.means must have .*\(K, M, D\) to match emissions.weights"),
        (hmm.GaussianMixture(weights, means, jnp.broadcast_to(-jnp.eye(3), (2, 2, 3, 3))),
         "emissions.covariances must be positive-definite"),
        (hmm.GaussianMixture(weights, means, jnp.ones((2, 2, 3))),
         r"emissions.covariances must have .*\(K, M, D, D\)"),
        (hmm.DiagonalGaussianMixture(weights, means, jnp.zeros((2, 2, 3))),
         "emissions.variances must be finite and > 0"),
        (hmm.DiagonalGaussianMixture(weights, means.at[0, 0, 0].set(jnp.nan), jnp.ones((2, 2, 3))),
         "emissions.means must be finite")]
    for emissions, match in cases:
        with pytest.raises(ValueError, match=match):
            emissions.check()
    model = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                    hmm.DiagonalGaussianMixture(weights, means, jnp.ones((2, 2, 3))))
    with pytest.raises(ValueError, match=r"D = 3 \(from means\)"):
        hmm.log_likelihood(model, jnp.ones((4, 2)))
    for hyperparameters, match in [({"min_covar": 0.0}, "min_covar must be > 0"),
                                   ({"pseudo_count": -1.0}, "pseudo_count must be >= 0")]:
        with pytest.raises(ValueError, match=match):
            hmm.baum_welch(model, jnp.ones((1, 4, 3)), max_iter=1,
                           emission_hyperparameters=hyperparameters)
