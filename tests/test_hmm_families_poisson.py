"""Poisson emissions beyond the registry's common tests (``_hmm_families.POISSON``: brute-force
inference, scipy log-pmf, M-step oracle, sampling): hmmlearn's ``PoissonHMM`` and dynamax's
(with its Gamma prior) from the same start, zero rates, the MAP prior, per-state priors,
initialisation, parameter count and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_family_checks import (check_initialize, fit_like_dynamax, fit_like_hmmlearn,
                                hmmlearn_options, start_model)
from functional_dl import hmm

K, D = 3, 2


def sequences(rng):
    rates = np.array([[1.0, 6.0], [4.0, 0.5], [9.0, 3.0]])
    return [rng.poisson(rates[rng.integers(0, K, n)]) for n in (40, 25, 33)]


def test_em_matches_hmmlearn_poisson_hmm():
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        data = sequences(rng)
        start = rng.uniform(1.0, 8.0, (K, D))
        reference = hmmlearn_hmm.PoissonHMM(params="stl", **hmmlearn_options(K))
        reference.n_features = D
        reference.lambdas_ = start.copy()
        fitted = fit_like_hmmlearn(reference, start_model(rng, hmm.Poisson(jnp.asarray(start)), K),
                                   data)
        np.testing.assert_allclose(fitted.emissions.rates, reference.lambdas_, rtol=1e-8)


def test_em_with_gamma_prior_matches_dynamax_poisson_hmm():
    """dynamax's Gamma(c, r) mode is the MAP here with prior_shape = c, prior_rate = r."""
    models = pytest.importorskip("dynamax.hidden_markov_model")
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        data = sequences(rng)
        data = [sequence[:25] for sequence in data]
        start = rng.uniform(1.0, 8.0, (K, D))
        reference = models.PoissonHMM(K, D, initial_probs_concentration=1.5,
                                      transition_matrix_concentration=1.5,
                                      emission_prior_concentration=2.0, emission_prior_rate=0.5)
        fitted, emissions = fit_like_dynamax(
            reference, start_model(rng, hmm.Poisson(jnp.asarray(start)), K), data, 0.5,
            {"prior_shape": 2.0, "prior_rate": 0.5}, emission_rates=jnp.asarray(start))
        np.testing.assert_allclose(fitted.emissions.rates, emissions.rates, rtol=1e-8)


def test_zero_rate_makes_positive_counts_impossible_and_zero_counts_certain():
    with jax.enable_x64(True):
        emissions = hmm.Poisson(jnp.array([[0.0, 2.0], [1.0, 1.0]]))
        lls = np.asarray(emissions.log_likelihoods(jnp.array([[0, 0], [3, 0]])))
        np.testing.assert_allclose(lls[0], [-2.0, -2.0], rtol=1e-12)
        assert lls[1, 0] == -np.inf and np.isfinite(lls[1, 1])


def test_gamma_prior_is_the_map_estimate():
    """(Σ γ x + α − 1) / (N + β) maximises Σ γ log Poisson(x; λ) + log Gamma(λ; α, β)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = rng.poisson(3.0, (30, 1))
        weights = rng.uniform(size=(30, 1))
        emissions = hmm.Poisson(jnp.ones((1, 1)))
        stats = emissions.sufficient_stats(jnp.asarray(x), jnp.asarray(weights))
        rate = float(emissions.m_step(stats, prior_shape=3.0, prior_rate=2.0).rates[0, 0])
        grid = rate * np.linspace(0.9, 1.1, 201)
        objective = ((weights[:, 0] @ x[:, 0]) * np.log(grid) - weights.sum() * grid
                     + 2.0 * np.log(grid) - 2.0 * grid)
        assert abs(grid[np.argmax(objective)] - rate) <= 1.1 * (grid[1] - grid[0])


def test_initialize_and_num_free_parameters():
    with jax.enable_x64(True):
        data = np.concatenate(sequences(np.random.default_rng(2)))
        emissions = check_initialize(hmm.Poisson, data, K, garbage=(-7, 10**6))
        assert emissions.rates.shape == (K, D) and np.all(np.asarray(emissions.rates) > 0)
        assert emissions.num_free_parameters == K * D
        # the rates scatter around the data means
        draws = np.concatenate([hmm.Poisson.initialize(jax.random.key(s), data, np.ones(len(data)),
                                                       K).rates for s in range(30)])
        np.testing.assert_allclose(draws.mean(axis=0), data.mean(axis=0), rtol=0.25)
        with pytest.raises(ValueError, match="observations must be non-negative integer counts"):
            hmm.Poisson.initialize(jax.random.key(0), data - 1, np.ones(len(data)), K)


MODEL = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                hmm.Poisson(jnp.array([[1.0, 2.0], [3.0, 4.0]])))


@pytest.mark.parametrize("observations, error, match", [
    (np.array([[1, 2], [-1, 0]]), ValueError, "non-negative integer counts"),
    (np.array([[1.0, 2.5], [1.0, 0.0]]), ValueError, "non-negative integer counts"),
    (np.array([[1.0, np.nan], [1.0, 0.0]]), ValueError, "non-negative integer counts"),
    (np.array([[1, 2, 3]]), ValueError, r"D = 2 \(from emissions.rates\)"),
    (np.array([1, 2]), ValueError, "observations must have at least 2 dimension"),
    (np.array([["a", "b"]]), TypeError, "observations must hold real numbers"),
])
def test_bad_observations(observations, error, match):
    with pytest.raises(error, match=match):
        hmm.check(MODEL, observations)
    with pytest.raises(error, match=match):
        hmm.log_likelihood(MODEL, observations)


def test_bad_counts_in_padding_are_ignored():
    hmm.check(MODEL, np.array([[[1, 2], [-5, 0]]]), np.array([1]))


def test_bad_rates_and_hyperparameters():
    for rates, match in [(jnp.array([[1.0, -2.0]]), "emissions.rates must be finite and >= 0"),
                         (jnp.array([[1.0, jnp.inf]]), "emissions.rates must be finite and >= 0"),
                         (jnp.ones(2), r"emissions.rates must have .*\(K, D\)")]:
        with pytest.raises(ValueError, match=match):
            hmm.Poisson(rates).check()
    x = jnp.ones((1, 4, 2), jnp.int32)
    for hyperparameters, match in [({"prior_shape": 0.5}, "prior_shape must be >= 1"),
                                   ({"prior_rate": -1.0}, "prior_rate must be >= 0")]:
        with pytest.raises(ValueError, match=match):
            hmm.baum_welch(MODEL, x, max_iter=1, emission_hyperparameters=hyperparameters)


def test_priors_per_state_and_per_entry():
    """An array prior broadcastable to (K, D) gives, row by row, the scalar prior's rates."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        x, weights = rng.poisson(3.0, (20, D)), rng.dirichlet(np.ones(K), size=20)
        emissions = hmm.Poisson(jnp.ones((K, D)))
        stats = emissions.sufficient_stats(jnp.asarray(x), jnp.asarray(weights))
        shapes, rates = np.array([[1.0], [2.0], [4.0]]), np.array([0.0, 0.5])
        per_state = emissions.m_step(stats, prior_shape=shapes, prior_rate=rates).rates
        for k in range(K):
            for d in range(D):
                single = emissions.m_step(stats, prior_shape=shapes[k, 0],
                                          prior_rate=rates[d]).rates
                np.testing.assert_allclose(per_state[k, d], single[k, d], rtol=1e-12)
        emissions.check_hyperparameters(prior_shape=shapes, prior_rate=rates)
        with pytest.raises(ValueError, match=r"prior_shape must be a number or an array "
                                             r"broadcastable to \(3, 2\)"):
            emissions.check_hyperparameters(prior_shape=np.ones(3))
        with pytest.raises(ValueError, match="prior_shape must be finite and >= 1 entry by entry"):
            emissions.check_hyperparameters(prior_shape=shapes - 0.5)


def test_priors_are_traced_so_vmap_gives_one_m_step_per_value():
    with jax.enable_x64(True):
        rng = np.random.default_rng(6)
        x, weights = rng.poisson(3.0, (20, D)), rng.dirichlet(np.ones(K), size=20)
        emissions = hmm.Poisson(jnp.ones((K, D)))
        stats = emissions.sufficient_stats(jnp.asarray(x), jnp.asarray(weights))
        shapes = jnp.array([1.0, 2.0, 5.0])

        def m_step(prior_shape):
            emissions.check_hyperparameters(prior_shape=prior_shape, prior_rate=0.5)
            return emissions.m_step(stats, prior_shape=prior_shape, prior_rate=0.5).rates

        batched = jax.vmap(m_step)(shapes)
        for index, value in enumerate(shapes.tolist()):
            np.testing.assert_allclose(batched[index], m_step(value), rtol=1e-12)
