"""Parallel-in-time inference (associative scans) against the sequential scans.

The sequential functions are checked against brute-force enumeration in test_hmm_inference.py;
here both run on the same random models, with zero transitions, in float64 to 1e-8 relative.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm

K, V, T = 4, 5, 40


def random_categorical(rng, num_steps=T, dtype=np.float64):
    pi = rng.dirichlet(np.ones(K))
    pi[1] = 0.0
    pi /= pi.sum()
    A = rng.dirichlet(np.ones(K), size=K)
    A[0, 2] = A[3, 1] = A[2, 2] = 0.0  # zero transitions
    A /= A.sum(axis=1, keepdims=True)
    B = rng.dirichlet(np.ones(V), size=K)
    model = hmm.HMM(jnp.asarray(pi, dtype), jnp.asarray(A, dtype), hmm.Categorical(jnp.asarray(B, dtype)))
    return model, jnp.asarray(rng.integers(0, V, num_steps))


def random_gaussian(rng, dtype=np.float64):
    A = rng.dirichlet(np.ones(K), size=K)
    A[1, 0] = 0.0
    A /= A.sum(axis=1, keepdims=True)
    emissions = hmm.DiagonalGaussian(jnp.asarray(rng.normal(size=(K, 2)) * 2, dtype),
                                     jnp.asarray(rng.uniform(0.5, 2, size=(K, 2)), dtype))
    model = hmm.HMM(jnp.asarray(rng.dirichlet(np.ones(K)), dtype), jnp.asarray(A, dtype), emissions)
    return model, jnp.asarray(rng.normal(size=(T, 2)) * 2, dtype)


def assert_parallel_equals_sequential(model, x, length=None):
    np.testing.assert_allclose(hmm.parallel.log_likelihood(model, x, length),
                               hmm.log_likelihood(model, x, length), rtol=1e-8)
    np.testing.assert_allclose(hmm.parallel.posteriors(model, x, length),
                               hmm.posteriors(model, x, length), rtol=1e-8, atol=1e-14)
    states, log_prob = hmm.parallel.viterbi(model, x, length)
    expected_states, expected_log_prob = hmm.viterbi(model, x, length)
    np.testing.assert_array_equal(states, expected_states)
    np.testing.assert_allclose(log_prob, expected_log_prob, rtol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_categorical_with_zero_transitions(seed):
    with jax.enable_x64(True):
        assert_parallel_equals_sequential(*random_categorical(np.random.default_rng(seed)))


def test_gaussian():
    with jax.enable_x64(True):
        assert_parallel_equals_sequential(*random_gaussian(np.random.default_rng(3)))


def test_filtered_probs_and_low_level_functions():
    with jax.enable_x64(True):
        model, x = random_categorical(np.random.default_rng(4))
        lls = model.emissions.log_likelihoods(x)
        args = (model.initial_probs, model.transition_matrix, lls, jnp.asarray(25, jnp.int32))
        log_lik, filtered = hmm.parallel.forward_filter(*args)
        expected_log_lik, expected_filtered = hmm.forward_filter(*args)
        np.testing.assert_allclose(log_lik, expected_log_lik, rtol=1e-8)
        np.testing.assert_allclose(filtered, expected_filtered, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(hmm.parallel.smoothed_probs(*args),
                                   hmm.smoother(*args).smoothed_probs, rtol=1e-8, atol=1e-14)


def test_padding_with_garbage_changes_nothing():
    with jax.enable_x64(True):
        model, x = random_categorical(np.random.default_rng(5))
        garbage = x.at[25:].set(-3)
        assert_parallel_equals_sequential(model, garbage, 25)
        np.testing.assert_allclose(hmm.parallel.log_likelihood(model, garbage, 25),
                                   hmm.log_likelihood(model, x[:25]), rtol=1e-8)
        states, _ = hmm.parallel.viterbi(model, garbage, 25)
        np.testing.assert_array_equal(states[25:], -1)


def test_single_step_sequence():
    with jax.enable_x64(True):
        model, x = random_categorical(np.random.default_rng(6), num_steps=1)
        assert_parallel_equals_sequential(model, x)


def test_impossible_observation_gives_minus_inf_not_nan():
    with jax.enable_x64(True):
        model, x = random_categorical(np.random.default_rng(8))
        probs = np.asarray(model.emissions.probs).copy()
        probs[:, V - 1] = 0.0  # the last symbol cannot be emitted by any state
        probs /= probs.sum(axis=1, keepdims=True)
        model = model._replace(emissions=hmm.Categorical(jnp.asarray(probs)))
        x = x.at[10].set(V - 1)
        assert hmm.parallel.log_likelihood(model, x) == -np.inf
        np.testing.assert_array_equal(hmm.parallel.posteriors(model, x), 0.0)
        states, log_prob = hmm.parallel.viterbi(model, x)
        assert log_prob == -np.inf and np.all((states >= 0) & (states < K))


def test_unreachable_state_that_fits_far_better_does_not_underflow():
    """States 2 and 3 are unreachable and fit x by thousands of nats: still no −inf or zeros."""
    with jax.enable_x64(True):
        A = jnp.array([[0.9, 0.1, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0],
                       [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.5, 0.5]])
        means = jnp.array([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0], [90.0, 90.0]])
        model = hmm.HMM(jnp.array([0.5, 0.5, 0.0, 0.0]), A, hmm.DiagonalGaussian(means, jnp.ones((K, 2))))
        x = jnp.asarray(np.random.default_rng(9).normal(size=(T, 2)) + 95.0)
        assert np.isfinite(hmm.log_likelihood(model, x))
        np.testing.assert_allclose(hmm.posteriors(model, x)[:, 2:], 0.0)
        np.testing.assert_allclose(hmm.posteriors(model, x).sum(axis=1), 1.0, rtol=1e-12)
        assert_parallel_equals_sequential(model, x)


def test_long_sequence_float32_matches_sequential():
    """Per-element log-scales keep float32 accurate where plain log-space sums lose digits."""
    model, x = random_categorical(np.random.default_rng(7), num_steps=2048, dtype=np.float32)
    np.testing.assert_allclose(hmm.parallel.log_likelihood(model, x),
                               hmm.log_likelihood(model, x), rtol=1e-5)
    gamma = hmm.parallel.posteriors(model, x)
    assert np.all(np.isfinite(gamma))
    np.testing.assert_allclose(gamma, hmm.posteriors(model, x), atol=1e-3)
    _, log_prob = hmm.parallel.viterbi(model, x)
    np.testing.assert_allclose(log_prob, hmm.viterbi(model, x)[1], rtol=1e-5)
