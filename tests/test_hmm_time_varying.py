"""Time-varying transition matrices ``(T − 1, K, K)`` in the sequential low-level functions.

``A[t]`` takes ``z_t`` to ``z_{t+1}`` (input-driven HMMs).  Oracle: brute-force enumeration
of all K^T paths with the per-step matrices, written here; finite differences for the
gradient; and the constant-matrix path for a matrix repeated T − 1 times.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm
from functional_dl.hmm import inference

K, T = 3, 5


def problem(seed=0):
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=(T - 1, K))
    lls = rng.normal(size=(T, K))
    return pi, A, lls


def enumerate_paths(pi, A, lls):
    """log p(x), γ, Σ_t ξ_t, the best path and its log-probability, over all K^T paths."""
    num_steps = lls.shape[0]
    paths = np.array(list(itertools.product(range(K), repeat=num_steps)))
    log_joint = np.log(pi[paths[:, 0]]) + lls[np.arange(num_steps), paths].sum(axis=1)
    for t in range(num_steps - 1):
        log_joint = log_joint + np.log(A[t][paths[:, t], paths[:, t + 1]])
    evidence = np.logaddexp.reduce(log_joint)
    weights = np.exp(log_joint - evidence)
    gamma = np.zeros((num_steps, K))
    xi = np.zeros((K, K))
    for t in range(num_steps):
        np.add.at(gamma[t], paths[:, t], weights)
        if t + 1 < num_steps:
            np.add.at(xi, (paths[:, t], paths[:, t + 1]), weights)
    best = int(np.argmax(log_joint))
    return evidence, gamma, xi, paths[best], log_joint[best]


def test_forward_smoother_and_viterbi_match_brute_force():
    pi, A, lls = problem()
    evidence, gamma, xi, best_path, best_log_prob = enumerate_paths(pi, A, lls)
    with jax.enable_x64(True):
        log_p, filtered = hmm.forward_filter(pi, A, lls)
        result = hmm.smoother(pi, A, lls)
        states, log_prob = hmm.most_likely_states(pi, A, lls)
        backward = hmm.backward_filter(A, lls)
    np.testing.assert_allclose(log_p, evidence, rtol=1e-12)
    for t in range(T):  # filtered[t] = p(z_t | x_{≤t}): the smoothed marginal of the prefix
        prefix_gamma = enumerate_paths(pi, A[:t], lls[:t + 1])[1]
        np.testing.assert_allclose(filtered[t], prefix_gamma[t], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(result.log_likelihood, evidence, rtol=1e-12)
    np.testing.assert_allclose(result.smoothed_probs, gamma, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(result.transition_counts, xi, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(states, best_path)
    np.testing.assert_allclose(log_prob, best_log_prob, rtol=1e-12)
    # γ ∝ α ⊙ β: the backward messages agree with the smoother
    combined = np.asarray(filtered) * np.asarray(backward)
    np.testing.assert_allclose(combined / combined.sum(1, keepdims=True), gamma, rtol=1e-10)


def test_padding_ignores_the_steps_and_matrices_after_the_length():
    pi, A, lls = problem(1)
    length = 3
    evidence, gamma, _, best_path, _ = enumerate_paths(pi, A[:length - 1], lls[:length])
    garbage_lls = lls.copy()
    garbage_lls[length:] = 1e6
    with jax.enable_x64(True):
        log_p, _ = hmm.forward_filter(pi, A, garbage_lls, length)
        smoothed = hmm.smoother(pi, A, garbage_lls, length).smoothed_probs
        states, _ = hmm.most_likely_states(pi, A, garbage_lls, length)
    np.testing.assert_allclose(log_p, evidence, rtol=1e-12)
    np.testing.assert_allclose(smoothed[:length], gamma, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(smoothed[length:], 0.0)
    np.testing.assert_array_equal(states[:length], best_path)
    np.testing.assert_array_equal(states[length:], -1)


def test_a_repeated_matrix_equals_the_constant_one():
    pi, A, lls = problem(2)
    constant = A[0]
    repeated = np.broadcast_to(constant, (T - 1, K, K))
    with jax.enable_x64(True):
        for function in (hmm.forward_filter, hmm.smoother, hmm.most_likely_states):
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15),
                         function(pi, repeated, lls), function(pi, constant, lls))


def test_gradient_with_respect_to_each_step_matrix_matches_finite_differences():
    pi, A, lls = problem(3)
    with jax.enable_x64(True):
        @jax.jit
        def log_p(A):
            return inference._log_likelihood(jnp.asarray(pi), A, jnp.asarray(lls), None)

        gradient = np.asarray(jax.grad(log_p)(jnp.asarray(A)))
        h = 1e-6
        numeric = np.zeros_like(A)
        for index in np.ndindex(*A.shape):
            up, down = A.copy(), A.copy()
            up[index] += h
            down[index] -= h
            numeric[index] = (float(log_p(jnp.asarray(up))) - float(log_p(jnp.asarray(down)))) / (2 * h)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-8)


def test_a_matrix_stack_of_the_wrong_length_names_the_expected_shape():
    pi, A, lls = problem()
    with pytest.raises(ValueError, match=r"transition_matrix must have shape \(4, 3, 3\)"):
        hmm.forward_filter(pi, np.concatenate([A, A[:1]]), lls)
    with pytest.raises(ValueError, match="transition_matrix"):
        hmm.parallel.forward_filter(pi, A, lls)  # the parallel siblings take (K, K) only
