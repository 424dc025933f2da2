"""No hidden NaN: a NaN in the log-likelihood matrix, π or A comes out as NaN from the
sequential and the parallel inference (forward filter, smoother, Viterbi), while −inf (an impossible
observation) keeps its meaning.  Oracle: the brute-force enumeration of ``_hmm_families``
for the NaN-free parts, and the definition (NaN in, NaN out) for the rest.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_families import brute_force
from functional_dl import hmm

PI = np.array([0.6, 0.4])
A = np.array([[0.7, 0.3], [0.2, 0.8]])


def log_likelihoods():
    return jnp.asarray(np.random.default_rng(0).normal(size=(5, 2)))


SIBLINGS = pytest.mark.parametrize("hmm", [hmm, hmm.parallel], ids=["sequential", "parallel"])


@SIBLINGS
@pytest.mark.parametrize("row", [0, 2, 4])
def test_nan_log_likelihood_propagates_through_forward_smoother_and_viterbi(row, hmm):
    with jax.enable_x64(True):
        lls = log_likelihoods().at[row, 1].set(jnp.nan)
        log_p, filtered = hmm.forward_filter(PI, A, lls)
        assert np.isnan(log_p)
        assert np.all(np.isnan(filtered[row:])) and np.all(np.isfinite(filtered[:row]))
        # the rows before the NaN are the NaN-free filter's
        np.testing.assert_allclose(filtered[:row], hmm.forward_filter(PI, A, log_likelihoods())[1][:row],
                                   rtol=1e-12)
        smoothed = hmm.smoother(PI, A, lls)
        assert np.isnan(smoothed.log_likelihood)
        assert np.all(np.isnan(smoothed.smoothed_probs))
        assert np.all(np.isnan(smoothed.transition_counts))
        _, log_prob = hmm.most_likely_states(PI, A, lls)
        assert np.isnan(log_prob)


@SIBLINGS
def test_nan_in_the_padding_changes_nothing_and_nan_in_parameters_propagates(hmm):
    with jax.enable_x64(True):
        lls = log_likelihoods()
        padded = lls.at[4].set(jnp.nan)
        expected, gamma, _, _, best = brute_force(PI, A, np.asarray(lls)[:4])
        log_p, _ = hmm.forward_filter(PI, A, padded, 4)
        np.testing.assert_allclose(log_p, expected, rtol=1e-12)
        np.testing.assert_allclose(hmm.smoother(PI, A, padded, 4).smoothed_probs[:4], gamma,
                                   rtol=1e-10)
        np.testing.assert_allclose(hmm.most_likely_states(PI, A, padded, 4)[1], best, rtol=1e-12)
        bad_A = jnp.asarray(A).at[0, 1].set(jnp.nan)
        assert np.isnan(hmm.forward_filter(PI, bad_A, lls)[0])
        assert np.isnan(hmm.most_likely_states(PI, bad_A, lls)[1])
        assert np.isnan(hmm.forward_filter(jnp.asarray(PI).at[0].set(jnp.nan), A, lls)[0])


@SIBLINGS
def test_minus_infinity_still_means_impossible(hmm):
    """A step impossible in every state: log p = −inf (not NaN), Viterbi's −inf too."""
    with jax.enable_x64(True):
        lls = log_likelihoods().at[2].set(-jnp.inf)
        log_p, _ = hmm.forward_filter(PI, A, lls)
        assert log_p == -np.inf
        assert hmm.most_likely_states(PI, A, lls)[1] == -np.inf
        assert hmm.smoother(PI, A, lls).log_likelihood == -np.inf
