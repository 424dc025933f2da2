"""Parallel-in-time inference (associative scans) against the sequential scans.

``hmm.parallel`` has the sequential functions' names and signatures.  Both are checked
against brute-force enumeration in test_hmm_inference.py on short sequences; here they run
side by side on longer ones (several blocks of the blocked scan), with zero transitions,
for every family of the registry, in float64 to 1e-8 relative.

Speed: ``both`` computes the parallel and the sequential results in one compiled program per
emission family, dtype and sequence length; ``length`` is traced, so full and padded sequences
share it.  (Compiling the parallel functions grows with log T: each level of the associative
scan is compiled on its own.)
"""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_families import BY_NAME, REPRESENTATIVE, observations, parametrize_families
from functional_dl import hmm
from functional_dl.hmm import decoding, inference

K, T = 4, 40
CATEGORICAL = BY_NAME["categorical"]
V = CATEGORICAL.event_size


def random_model(rng, family=CATEGORICAL, num_steps=T, dtype=np.float64):
    """A K-state model with a zero initial probability and zero transitions."""
    pi = rng.dirichlet(np.ones(K))
    pi[1] = 0.0
    pi /= pi.sum()
    A = rng.dirichlet(np.ones(K), size=K)
    A[0, 2] = A[3, 1] = A[2, 2] = A[1, 0] = 0.0
    A /= A.sum(axis=1, keepdims=True)
    emissions = family.random_emissions(rng, K, family.event_size, dtype)
    model = hmm.HMM(jnp.asarray(pi, dtype), jnp.asarray(A, dtype), emissions)
    return model, jnp.asarray(observations(rng, family, (num_steps,), dtype))


def test_parallel_has_the_sequential_names_and_signatures():
    sequential = {name: getattr(hmm, name) for name in hmm.parallel.__all__}
    assert set(sequential) == {"forward_filter", "backward_filter", "smoother",
                               "most_likely_states", "forward", "log_likelihood", "posteriors",
                               "viterbi"}
    for name, function in sequential.items():
        assert function.__module__ in (inference.__name__, decoding.__name__)
        assert (list(inspect.signature(getattr(hmm.parallel, name)).parameters)
                == list(inspect.signature(function).parameters)), name


def _restricted_rows(backward, filtered):
    """β on the states with positive filtered probability, each row renormalised (padded
    rows, with no such state, stay 0)."""
    rows = np.where(np.asarray(filtered) > 0, np.asarray(backward), 0.0)
    totals = rows.sum(axis=1, keepdims=True)
    return rows / np.where(totals > 0, totals, 1.0)


@jax.jit
def both(model, x, length):
    """(parallel, sequential) results of the low-level functions on one sequence.

    (The model-level wrappers only evaluate the emissions first; they run eagerly in
    ``test_eager_entry_points_and_a_single_step_sequence``.)
    """
    lls = model.emissions.log_likelihoods(x)  # garbage rows are masked by length
    args = (model.initial_probs, model.transition_matrix, lls, length)
    results = []
    for functions in (hmm.parallel, hmm):
        post = functions.smoother(*args)
        log_lik, filtered = functions.forward_filter(*args)
        results.append({"log_lik": log_lik, "filtered": filtered, "gamma": post.smoothed_probs,
                        "smoother_log_lik": post.log_likelihood,
                        "smoother_filtered": post.filtered_probs,
                        "counts": post.transition_counts,
                        "backward": functions.backward_filter(model.transition_matrix, lls,
                                                              length, filtered),
                        "viterbi": functions.most_likely_states(*args)})
    return tuple(results)


def assert_parallel_equals_sequential(model, x, length=None):
    parallel, sequential = both(model, x, x.shape[0] if length is None else length)
    for name in ("log_lik", "smoother_log_lik"):
        np.testing.assert_allclose(parallel[name], sequential[name], rtol=1e-8)
    for name in ("gamma", "filtered", "smoother_filtered", "counts"):
        np.testing.assert_allclose(parallel[name], sequential[name], rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(_restricted_rows(parallel["backward"], sequential["filtered"]),
                               _restricted_rows(sequential["backward"], sequential["filtered"]),
                               rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(parallel["backward"].sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(parallel["viterbi"][0], sequential["viterbi"][0])
    np.testing.assert_allclose(parallel["viterbi"][1], sequential["viterbi"][1], rtol=1e-8)
    return parallel


@parametrize_families(families=REPRESENTATIVE)
def test_zero_initial_probability_and_zero_transitions(family):
    with jax.enable_x64(True):
        for seed in (0, 1):
            assert_parallel_equals_sequential(*random_model(np.random.default_rng(seed), family))


def test_padding_with_garbage_changes_nothing():
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(5))
        garbage = x.at[25:].set(-3)
        parallel = assert_parallel_equals_sequential(model, garbage, 25)
        unpadded, _ = both(model, x, 25)  # same length, meaningful symbols in the padding
        np.testing.assert_allclose(parallel["log_lik"], unpadded["log_lik"], rtol=1e-12)
        np.testing.assert_allclose(parallel["gamma"], unpadded["gamma"], rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(parallel["viterbi"][0][25:], -1)
        np.testing.assert_array_equal(parallel["gamma"][25:], 0.0)


def test_eager_entry_points_and_a_single_step_sequence():
    """The public functions called eagerly (their own jit), on T = 1."""
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(6), num_steps=1)
        expected_states, expected_log_prob = hmm.viterbi(model, x)
        states, log_prob = hmm.parallel.viterbi(model, x)
        np.testing.assert_array_equal(states, expected_states)
        np.testing.assert_allclose(log_prob, expected_log_prob, rtol=1e-12)
        np.testing.assert_allclose(hmm.parallel.log_likelihood(model, x),
                                   hmm.log_likelihood(model, x), rtol=1e-12)
        np.testing.assert_allclose(hmm.parallel.posteriors(model, x), hmm.posteriors(model, x),
                                   rtol=1e-12)
        for a, b in zip(hmm.parallel.forward(model, x), hmm.forward(model, x)):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_impossible_observation_gives_minus_inf_not_nan():
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(8))
        probs = np.asarray(model.emissions.probs).copy()
        probs[:, V - 1] = 0.0  # the last symbol cannot be emitted by any state
        probs /= probs.sum(axis=1, keepdims=True)
        model = model._replace(emissions=hmm.Categorical(jnp.asarray(probs)))
        parallel, _ = both(model, x.at[10].set(V - 1), T)
        assert parallel["log_lik"] == -np.inf
        np.testing.assert_array_equal(parallel["gamma"], 0.0)
        np.testing.assert_array_equal(parallel["counts"], 0.0)
        states, log_prob = parallel["viterbi"]
        assert log_prob == -np.inf and np.all((states >= 0) & (states < K))


def test_unreachable_state_that_fits_far_better_does_not_underflow():
    """States 2 and 3 are unreachable and fit x by thousands of nats: still no −inf or zeros."""
    with jax.enable_x64(True):
        A = jnp.array([[0.9, 0.1, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0],
                       [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.5, 0.5]])
        means = jnp.array([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0], [90.0, 90.0]])
        model = hmm.HMM(jnp.array([0.5, 0.5, 0.0, 0.0]), A, hmm.DiagonalGaussian(means, jnp.ones((K, 2))))
        x = jnp.asarray(np.random.default_rng(9).normal(size=(T, 2)) + 95.0)
        parallel = assert_parallel_equals_sequential(model, x)
        assert np.isfinite(parallel["log_lik"])
        np.testing.assert_allclose(parallel["gamma"][:, 2:], 0.0)
        np.testing.assert_allclose(parallel["gamma"].sum(axis=1), 1.0, rtol=1e-12)


def test_long_sequence_float32_matches_sequential():
    """Per-row log-scales keep float32 accurate where plain log-space sums lose digits.

    300 steps make 10 blocks of 32, so this also runs the associative scan across blocks
    (with 40 steps there are two blocks; the scan machinery itself is tested below).
    """
    model, x = random_model(np.random.default_rng(7), num_steps=300, dtype=np.float32)
    parallel, sequential = both(model, x, 300)
    np.testing.assert_allclose(parallel["log_lik"], sequential["log_lik"], rtol=1e-5)
    assert np.all(np.isfinite(parallel["gamma"]))
    np.testing.assert_allclose(parallel["gamma"], sequential["gamma"], atol=1e-3)
    np.testing.assert_allclose(parallel["viterbi"][1], sequential["viterbi"][1], rtol=1e-5)


@pytest.mark.parametrize("num_steps, block_size, reverse", [(1, 4, False), (7, 2, False),
                                                             (7, 3, True), (16, 4, True)])
def test_blocked_scan_pushes_a_vector_like_a_loop(num_steps, block_size, reverse):
    """The blocked scan behind the parallel functions, on products of random 2×2 matrices:
    every block count, partial last blocks and both directions, against a NumPy loop."""
    from functional_dl.hmm._blocked_scan import blocked_vector_scan

    with jax.enable_x64(True):
        rng = np.random.default_rng(num_steps)
        matrices = rng.normal(size=(num_steps, 2, 2))
        initial = rng.normal(size=2)
        if reverse:  # v_t = M_t v_{t+1}: matrices met later multiply from the left
            scan = jax.jit(lambda m, v: blocked_vector_scan(
                lambda first, then: then @ first, lambda v, m: m @ v, m, v,
                reverse=True, block_size=block_size))
        else:  # v_t = v_{t−1} M_t
            scan = jax.jit(lambda m, v: blocked_vector_scan(
                lambda earlier, later: earlier @ later, lambda v, m: v @ m, m, v,
                block_size=block_size))
        expected, vector = [], initial
        for m in (matrices[::-1] if reverse else matrices):
            vector = m @ vector if reverse else vector @ m
            expected.append(vector)
        expected = np.array(expected[::-1] if reverse else expected)
        np.testing.assert_allclose(scan(jnp.asarray(matrices), jnp.asarray(initial)), expected,
                                   rtol=1e-12)
