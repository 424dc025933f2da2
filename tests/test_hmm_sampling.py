"""Sampling: empirical frequencies against the model's probabilities, determinism by key."""
import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import hmm

PI = jnp.array([0.2, 0.5, 0.3])
A = jnp.array([[0.7, 0.3, 0.0], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
N, T = 400, 50
KEYS = jax.random.split(jax.random.key(0), N)
sample_batch = jax.jit(jax.vmap(hmm.sample, in_axes=(0, None, None)), static_argnums=2)


def within_standard_errors(observed_counts, probs, total, sigmas=4.5):
    """|count − n p| below a few binomial standard errors, entry by entry."""
    expected = total * probs
    spread = np.sqrt(total * probs * (1 - probs)) + 1e-9
    return np.all(np.abs(observed_counts - expected) <= sigmas * spread)


def test_categorical_frequencies_match_the_model():
    B = jnp.array([[0.6, 0.4, 0.0], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    states, x = sample_batch(KEYS, hmm.HMM(PI, A, hmm.Categorical(B)), T)
    states, x = np.asarray(states), np.asarray(x)
    assert states.shape == (N, T) and x.shape == (N, T)
    assert within_standard_errors(np.bincount(states[:, 0], minlength=3), np.asarray(PI), N)
    transitions = np.zeros((3, 3))
    np.add.at(transitions, (states[:, :-1], states[:, 1:]), 1)
    for i in range(3):
        assert within_standard_errors(transitions[i], np.asarray(A[i]), transitions[i].sum())
        emitted = np.bincount(x[states == i], minlength=3)
        assert within_standard_errors(emitted, np.asarray(B[i]), emitted.sum())
    assert transitions[0, 2] == 0 and np.all(x[states == 0] != 2)  # zero probabilities never drawn


def test_gaussian_moments_match_the_model():
    means = jnp.array([[0.0, 0.0], [5.0, -5.0], [-5.0, 5.0]])
    covariances = jnp.array([[[1.0, 0.8], [0.8, 1.0]], [[2.0, 0.0], [0.0, 0.5]], [[0.3, -0.1], [-0.1, 0.3]]])
    states, x = sample_batch(KEYS, hmm.HMM(PI, A, hmm.Gaussian(means, covariances)), T)
    states, x = np.asarray(states), np.asarray(x)
    for i in range(3):
        points = x[states == i]
        standard_error = np.sqrt(np.diag(np.asarray(covariances[i])) / len(points))
        assert np.all(np.abs(points.mean(axis=0) - np.asarray(means[i])) < 4.5 * standard_error)
        np.testing.assert_allclose(np.cov(points.T), covariances[i], atol=0.1)
    diagonal = hmm.HMM(PI, A, hmm.DiagonalGaussian(means, jnp.array([[1.0, 4.0], [0.25, 1.0], [2.0, 2.0]])))
    states, x = sample_batch(KEYS, diagonal, T)
    points = np.asarray(x)[np.asarray(states) == 0]
    np.testing.assert_allclose(points.var(axis=0), [1.0, 4.0], rtol=0.1)


def test_same_key_same_sequence_inside_an_outer_jit_or_not():
    model = hmm.HMM(PI, A, hmm.Categorical(jnp.full((3, 4), 0.25)))
    first = hmm.sample(jax.random.key(3), model, 4)
    again = jax.jit(hmm.sample, static_argnums=2)(jax.random.key(3), model, 4)
    other = hmm.sample(jax.random.key(4), model, 4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    single = hmm.sample(jax.random.key(3), model, 1)
    assert single[0].shape == (1,) and single[1].shape == (1,)
