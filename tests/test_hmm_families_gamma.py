"""Gamma emissions beyond the registry's common tests (``_hmm_families.GAMMA``: brute-force
inference, scipy log-pdf, the exact M-step against a root-finding oracle, sampling): the
concentration solver, a state whose values are all equal, initialisation, parameter count
and bad input (no peer: hmmlearn has no Gamma HMM and dynamax's M-step is approximate)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_family_checks import check_initialize
from functional_dl import hmm
from functional_dl.hmm.emissions.gamma import gamma_concentration

K, D = 3, 2


def test_concentration_solves_log_a_minus_digamma_a():
    optimize = pytest.importorskip("scipy.optimize")
    special = pytest.importorskip("scipy.special")
    with jax.enable_x64(True):
        gaps = np.array([1e-4, 1e-2, 0.1, 0.5, 1.0, 3.0, 20.0])
        solved = np.asarray(gamma_concentration(jnp.asarray(gaps)))
        expected = [optimize.brentq(lambda a: np.log(a) - special.digamma(a) - s, 1e-10, 1e10,
                                    xtol=1e-300, rtol=1e-15) for s in gaps]
        np.testing.assert_allclose(solved, expected, rtol=1e-10)


def test_equal_values_give_a_large_finite_concentration_and_the_right_mean():
    with jax.enable_x64(True):
        emissions = hmm.Gamma(jnp.ones((1, 1)), jnp.ones((1, 1)))
        x = jnp.full((5, 1), 2.5)
        updated = emissions.m_step(emissions.sufficient_stats(x, jnp.ones((5, 1))))
        a, b = float(updated.concentrations[0, 0]), float(updated.rates[0, 0])
        assert np.isfinite(a) and a > 1e6
        np.testing.assert_allclose(a / b, 2.5, rtol=1e-12)


def test_em_recovers_the_parameters_of_one_state():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = rng.gamma([2.0, 7.0], 1 / np.array([3.0, 0.5]), size=(4000, D))
        emissions = hmm.Gamma(jnp.ones((1, D)), jnp.ones((1, D)))
        updated = emissions.m_step(emissions.sufficient_stats(jnp.asarray(x),
                                                              jnp.ones((len(x), 1))))
        np.testing.assert_allclose(updated.concentrations[0], [2.0, 7.0], rtol=0.1)
        np.testing.assert_allclose(updated.rates[0], [3.0, 0.5], rtol=0.1)


def test_initialize_and_num_free_parameters():
    with jax.enable_x64(True):
        data = np.random.default_rng(2).gamma(3.0, 2.0, size=(90, D))
        emissions = check_initialize(hmm.Gamma, data, K, garbage=(np.nan, -5.0))
        assert emissions.num_free_parameters == 2 * K * D
        np.testing.assert_allclose(emissions.concentrations,
                                   np.broadcast_to(data.mean(0) ** 2 / data.var(0), (K, D)),
                                   rtol=1e-10)
        with pytest.raises(ValueError, match="observations must be finite and > 0"):
            hmm.Gamma.initialize(jax.random.key(0), -data, np.ones(len(data)), K)


MODEL = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                hmm.Gamma(jnp.ones((2, 2)), jnp.ones((2, 2))))


def test_bad_input():
    for x in (np.array([[1.0, 0.0]]), np.array([[1.0, -2.0]]), np.array([[np.inf, 1.0]])):
        with pytest.raises(ValueError, match="observations must be finite and > 0"):
            hmm.check(MODEL, x)
    with pytest.raises(ValueError, match=r"D = 2 \(from emissions.concentrations\)"):
        hmm.log_likelihood(MODEL, jnp.ones((3, 3)))
    for emissions, match in [
            (hmm.Gamma(jnp.zeros((2, 2)), jnp.ones((2, 2))),
             "emissions.concentrations must be finite and > 0"),
            (hmm.Gamma(jnp.ones((2, 2)), -jnp.ones((2, 2))), "emissions.rates must be finite"),
            (hmm.Gamma(jnp.ones((2, 2)), jnp.ones((2, 3))),
             r"emissions.rates must have .*\(K, D\) to match")]:
        with pytest.raises(ValueError, match=match):
            emissions.check()
    with pytest.raises(TypeError, match="min_covar"):
        hmm.baum_welch(MODEL, jnp.ones((1, 3, 2)), max_iter=1,
                       emission_hyperparameters={"min_covar": 1.0})
