"""Sequential HMM inference against brute-force enumeration of all K^T state paths."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm
from functional_dl.hmm import inference

K, V, D, T = 3, 4, 2, 6


def brute_force(initial_probs, transition_matrix, log_likelihoods):
    """log p(x), posteriors γ, Σ_t ξ_t, best path and its log-probability, by enumeration."""
    pi, A, ll = (np.asarray(a, np.float64) for a in (initial_probs, transition_matrix, log_likelihoods))
    num_steps, num_states = ll.shape
    with np.errstate(divide="ignore"):
        log_pi, log_A = np.log(pi), np.log(A)
    paths = np.array(list(itertools.product(range(num_states), repeat=num_steps)))
    log_joint = log_pi[paths[:, 0]] + ll[np.arange(num_steps), paths].sum(axis=1)
    log_joint = log_joint + log_A[paths[:, :-1], paths[:, 1:]].sum(axis=1)
    log_evidence = np.logaddexp.reduce(log_joint)
    best = int(np.argmax(log_joint))
    gamma = np.zeros((num_steps, num_states))
    xi = np.zeros((num_states, num_states))
    if np.isfinite(log_evidence):
        weights = np.exp(log_joint - log_evidence)
        for t in range(num_steps):
            np.add.at(gamma[t], paths[:, t], weights)
            if t + 1 < num_steps:
                np.add.at(xi, (paths[:, t], paths[:, t + 1]), weights)
    return log_evidence, gamma, xi, paths[best], log_joint[best]


def random_model(rng, kind, dtype=np.float64):
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    if kind == "categorical":
        emissions = hmm.Categorical(jnp.asarray(rng.dirichlet(np.ones(V), size=K), dtype))
        observations = rng.integers(0, V, T)
    elif kind == "gaussian":
        factors = rng.normal(size=(K, D, D))
        covariances = factors @ factors.transpose(0, 2, 1) + 0.5 * np.eye(D)
        emissions = hmm.Gaussian(jnp.asarray(rng.normal(size=(K, D)), dtype), jnp.asarray(covariances, dtype))
        observations = rng.normal(size=(T, D)).astype(dtype)
    else:
        emissions = hmm.DiagonalGaussian(jnp.asarray(rng.normal(size=(K, D)), dtype),
                                         jnp.asarray(rng.uniform(0.3, 2.0, size=(K, D)), dtype))
        observations = rng.normal(size=(T, D)).astype(dtype)
    model = hmm.HMM(jnp.asarray(pi, dtype), jnp.asarray(A, dtype), emissions)
    return model, jnp.asarray(observations)


def gaussian_logpdf(x, mean, covariance):
    """NumPy log N(x; mean, covariance) for rows of x."""
    diff = np.asarray(x, np.float64) - np.asarray(mean, np.float64)
    covariance = np.asarray(covariance, np.float64)
    solved = np.linalg.solve(covariance, diff.T).T
    _, log_det = np.linalg.slogdet(2 * np.pi * covariance)
    return -0.5 * (np.sum(diff * solved, axis=-1) + log_det)


def numpy_log_likelihoods(emissions, observations):
    """Independent (T, K) emission log-likelihoods from NumPy / SciPy."""
    x = np.asarray(observations, np.float64)
    if isinstance(emissions, hmm.Categorical):
        with np.errstate(divide="ignore"):
            return np.log(np.asarray(emissions.probs, np.float64))[:, x.astype(int)].T
    if isinstance(emissions, hmm.Gaussian):
        return np.stack([gaussian_logpdf(x, m, c) for m, c in
                         zip(emissions.means, emissions.covariances)], axis=1)
    return np.stack([gaussian_logpdf(x, m, np.diag(np.asarray(s))) for m, s in
                     zip(emissions.means, emissions.variances)], axis=1)


KINDS = ["categorical", "gaussian", "diagonal"]


@pytest.mark.parametrize("kind", KINDS)
def test_emission_log_likelihoods_match_scipy(kind):
    stats = pytest.importorskip("scipy.stats")
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(1), kind)
        ours = model.emissions.log_likelihoods(x)
        np.testing.assert_allclose(ours, numpy_log_likelihoods(model.emissions, x), rtol=1e-10)
        if kind == "gaussian":
            scipy_values = np.stack([stats.multivariate_normal(m, c).logpdf(x) for m, c in
                                     zip(np.asarray(model.emissions.means),
                                         np.asarray(model.emissions.covariances))], axis=1)
            np.testing.assert_allclose(ours, scipy_values, rtol=1e-10)
        elif kind == "diagonal":
            scipy_values = np.stack([stats.norm(m, np.sqrt(v)).logpdf(x).sum(axis=1) for m, v in
                                     zip(np.asarray(model.emissions.means),
                                         np.asarray(model.emissions.variances))], axis=1)
            np.testing.assert_allclose(ours, scipy_values, rtol=1e-10)


def run_jitted(f, *args):
    return f(*args)


def run_unjitted(f, *args):
    with jax.disable_jit():
        return f(*args)


@pytest.mark.parametrize("kind, run", [(kind, run_jitted) for kind in KINDS]
                         + [("categorical", run_unjitted)])
def test_matches_brute_force(kind, run):
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(2), kind)
        log_evidence, gamma, xi, path, path_log_prob = brute_force(
            model.initial_probs, model.transition_matrix, numpy_log_likelihoods(model.emissions, x))
        log_lik, _ = run(hmm.forward, model, x)
        np.testing.assert_allclose(log_lik, log_evidence, rtol=1e-10)
        np.testing.assert_allclose(run(hmm.log_likelihood, model, x), log_evidence, rtol=1e-10)
        np.testing.assert_allclose(run(hmm.posteriors, model, x), gamma, rtol=1e-8, atol=1e-12)
        lls = model.emissions.log_likelihoods(x)
        post = run(hmm.smoother, model.initial_probs, model.transition_matrix, lls)
        np.testing.assert_allclose(post.transition_counts, xi, rtol=1e-8, atol=1e-12)
        states, log_prob = run(hmm.viterbi, model, x)
        np.testing.assert_array_equal(states, path)
        np.testing.assert_allclose(log_prob, path_log_prob, rtol=1e-10)


def test_filtered_probs_match_brute_force_on_prefixes():
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(3), "categorical")
        _, filtered = hmm.forward(model, x)
        lls = numpy_log_likelihoods(model.emissions, x)
        for t in range(T):
            _, gamma, _, _, _ = brute_force(model.initial_probs, model.transition_matrix, lls[:t + 1])
            np.testing.assert_allclose(filtered[t], gamma[t], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_with_garbage_changes_nothing(kind):
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(4), kind)
        length = 4
        if kind == "categorical":
            garbage = jnp.concatenate([x[:length], jnp.array([-7, 99])])
            other = jnp.concatenate([x[:length], jnp.array([3, 0])])
        else:
            garbage = x.at[length:].set(jnp.nan)
            other = x.at[length:].set(1e30)
        reference = brute_force(model.initial_probs, model.transition_matrix,
                                numpy_log_likelihoods(model.emissions, x[:length]))
        for padded in (garbage, other):
            log_lik, filtered = hmm.forward(model, padded, length)
            np.testing.assert_allclose(log_lik, reference[0], rtol=1e-10)
            gamma = hmm.posteriors(model, padded, length)
            np.testing.assert_allclose(gamma[:length], reference[1], rtol=1e-8, atol=1e-12)
            np.testing.assert_array_equal(gamma[length:], 0.0)
            np.testing.assert_array_equal(filtered[length:], 0.0)
            states, log_prob = hmm.viterbi(model, padded, length)
            np.testing.assert_array_equal(states[:length], reference[3])
            np.testing.assert_array_equal(states[length:], -1)
            np.testing.assert_allclose(log_prob, reference[4], rtol=1e-10)
            grads = jax.grad(hmm.log_likelihood)(model, padded, length)
            assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_zero_probabilities_match_brute_force_without_nan():
    with jax.enable_x64(True):
        pi = jnp.array([0.0, 0.6, 0.4])
        A = jnp.array([[0.5, 0.5, 0.0], [0.0, 0.3, 0.7], [0.2, 0.0, 0.8]])
        B = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.2, 0.8, 0.0], [0.1, 0.0, 0.3, 0.6]])
        model = hmm.HMM(pi, A, hmm.Categorical(B))
        x = jnp.array([1, 2, 3, 0, 1, 2])
        reference = brute_force(pi, A, numpy_log_likelihoods(model.emissions, x))
        assert np.isfinite(reference[0])
        np.testing.assert_allclose(hmm.log_likelihood(model, x), reference[0], rtol=1e-10)
        np.testing.assert_allclose(hmm.posteriors(model, x), reference[1], rtol=1e-8, atol=1e-12)
        states, log_prob = hmm.viterbi(model, x)
        np.testing.assert_array_equal(states, reference[3])
        np.testing.assert_allclose(log_prob, reference[4], rtol=1e-10)
        grads = jax.grad(hmm.log_likelihood)(model, x)
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_impossible_observation_gives_minus_inf_not_nan():
    pi = jnp.array([0.5, 0.5, 0.0])
    A = jnp.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
    B = jnp.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    model = hmm.HMM(pi, A, hmm.Categorical(B))
    x = jnp.array([0, 1, 2, 0])  # symbol 2 only comes from the unreachable state
    log_lik, filtered = hmm.forward(model, x)
    assert log_lik == -np.inf
    assert np.all(np.isfinite(filtered))
    gamma = hmm.posteriors(model, x)
    np.testing.assert_array_equal(gamma, 0.0)
    states, log_prob = hmm.viterbi(model, x)
    assert log_prob == -np.inf and np.all((states >= 0) & (states < 3))
    grads = jax.grad(hmm.log_likelihood)(model, x)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_unreachable_state_that_fits_the_future_cannot_overflow():
    """A left-to-right chain in float32: backward messages of a state with α = 0 stay finite."""
    A = jnp.array([[0.999, 0.001], [0.0, 1.0]])
    model = hmm.HMM(jnp.array([1.0, 0.0]), A,
                    hmm.DiagonalGaussian(jnp.array([[0.0], [10.0]]), jnp.array([[1.0], [1.0]])))
    x = jnp.concatenate([jnp.zeros((5, 1)), jnp.full((3000, 1), 10.0)])
    gamma = hmm.posteriors(model, x)
    assert np.all(np.isfinite(gamma))
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, rtol=1e-5)
    states, _ = hmm.viterbi(model, x)
    np.testing.assert_array_equal(states, np.r_[np.zeros(5), np.ones(3000)])


def test_reachable_states_far_worse_than_an_unreachable_one_do_not_underflow():
    """The chain is stuck in state 0; x fits the unreachable state 1 by 450 nats per step.

    Scaling by the best of *all* states would give exp(−450) = 0 in float32 and log p = −inf.
    """
    model = hmm.HMM(jnp.array([1.0, 0.0]), jnp.array([[1.0, 0.0], [0.5, 0.5]]),
                    hmm.DiagonalGaussian(jnp.array([[0.0], [30.0]]), jnp.array([[1.0], [1.0]])))
    x = jnp.full((5, 1), 30.0)
    expected = 5 * (-0.5 * np.log(2 * np.pi) - 0.5 * 30.0**2)
    np.testing.assert_allclose(hmm.log_likelihood(model, x), expected, rtol=1e-6)
    np.testing.assert_array_equal(hmm.posteriors(model, x), np.tile([1.0, 0.0], (5, 1)))
    states, log_prob = hmm.viterbi(model, x)
    np.testing.assert_array_equal(states, 0)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-6)
    grads = jax.grad(hmm.log_likelihood)(model, x)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_long_sequence_float32_is_finite_and_accurate():
    rng = np.random.default_rng(5)
    model32, _ = random_model(rng, "categorical", np.float32)
    x = jnp.asarray(rng.integers(0, V, 100_000))
    log_lik32 = hmm.log_likelihood(model32, x)
    gamma = hmm.posteriors(model32, x)
    states32, log_prob32 = hmm.viterbi(model32, x)
    assert np.isfinite(log_lik32) and np.isfinite(log_prob32)
    assert np.all(np.isfinite(gamma))
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, rtol=1e-5)
    with jax.enable_x64(True):
        model64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model32)
        np.testing.assert_allclose(log_lik32, hmm.log_likelihood(model64, x), rtol=2e-6)
        lls = np.asarray(model64.emissions.log_likelihoods(x))
        log_A = np.log(np.asarray(model64.transition_matrix))
        s = np.asarray(states32)
        path_score = (np.log(np.asarray(model64.initial_probs))[s[0]]
                      + lls[np.arange(len(s)), s].sum() + log_A[s[:-1], s[1:]].sum())
        _, best64 = hmm.viterbi(model64, x)
        np.testing.assert_allclose(path_score, best64, rtol=1e-6)


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        rng = np.random.default_rng(6)
        model, x = random_model(rng, "gaussian")
        # zeros in π and A: the gradient there is still exact (no log of π or A is taken)
        model = model._replace(initial_probs=model.initial_probs.at[0].set(0.0),
                               transition_matrix=model.transition_matrix.at[1, 2].set(0.0))
        grads = jax.grad(hmm.log_likelihood)(model, x)
        # jitted: the perturbed rows no longer sum to 1, which the eager check would reject
        log_likelihood = jax.jit(hmm.log_likelihood)
        leaves, treedef = jax.tree.flatten(model)
        grad_leaves = jax.tree.leaves(grads)
        step = 1e-6
        for index, (leaf, grad) in enumerate(zip(leaves, grad_leaves)):
            numeric = np.zeros(leaf.shape)
            for position in np.ndindex(leaf.shape):
                shifted = []
                for sign in (1.0, -1.0):
                    moved = list(leaves)
                    moved[index] = leaf.at[position].add(sign * step)
                    if index == len(leaves) - 1:  # keep each covariance symmetric
                        swapped = position[:1] + position[:0:-1]
                        moved[index] = moved[index].at[swapped].set(moved[index][position])
                    shifted.append(log_likelihood(jax.tree.unflatten(treedef, moved), x))
                numeric[position] = (shifted[0] - shifted[1]) / (2 * step)
            if index == len(leaves) - 1:
                # a symmetric perturbation of an off-diagonal pair moves two entries at once
                expected = np.asarray(grad) + np.where(np.eye(D, dtype=bool), 0.0,
                                                       np.swapaxes(np.asarray(grad), -1, -2))
            else:
                expected = np.asarray(grad)
            np.testing.assert_allclose(expected, numeric, rtol=1e-5, atol=1e-7)


def test_low_level_functions_accept_any_log_likelihood_matrix():
    with jax.enable_x64(True):
        rng = np.random.default_rng(7)
        lls = jnp.asarray(rng.normal(size=(T, K)) * 3)
        pi, A = jnp.asarray(rng.dirichlet(np.ones(K))), jnp.asarray(rng.dirichlet(np.ones(K), size=K))
        log_evidence, gamma, xi, path, best = brute_force(pi, A, lls)
        post = hmm.smoother(pi, A, lls)
        np.testing.assert_allclose(post.log_likelihood, log_evidence, rtol=1e-10)
        np.testing.assert_allclose(post.smoothed_probs, gamma, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(post.transition_counts, xi, rtol=1e-8, atol=1e-12)
        backward = hmm.backward_filter(A, lls)
        np.testing.assert_allclose(backward.sum(axis=1), 1.0, rtol=1e-12)
        states, log_prob = hmm.most_likely_states(pi, A, lls)
        np.testing.assert_array_equal(states, path)
        np.testing.assert_allclose(log_prob, best, rtol=1e-10)
        batched = jax.vmap(inference.forward_filter, in_axes=(None, None, 0, 0))(
            pi, A, jnp.stack([lls, lls]), jnp.array([T, 3]))[0]
        np.testing.assert_allclose(batched[0], log_evidence, rtol=1e-10)
        np.testing.assert_allclose(batched[1], brute_force(pi, A, lls[:3])[0], rtol=1e-10)
