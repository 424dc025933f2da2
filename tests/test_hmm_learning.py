"""Baum–Welch: one EM step against brute-force expected counts and the closed-form M-step,
hmmlearn's M-step, monotonicity, parameter recovery, padding, compilation, gradient fitting."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring

from functional_dl import hmm

K, V, D = 2, 3, 2
LENGTHS = np.array([5, 3, 4])


def brute_force_posteriors(pi, A, ll):
    """(log p(x), γ (T, K), Σ_t ξ_t) of one sequence by enumerating all K^T paths."""
    num_steps, num_states = ll.shape
    with np.errstate(divide="ignore"):
        log_pi, log_A = np.log(pi), np.log(A)
    paths = np.array(list(itertools.product(range(num_states), repeat=num_steps)))
    log_joint = (log_pi[paths[:, 0]] + ll[np.arange(num_steps), paths].sum(axis=1)
                 + log_A[paths[:, :-1], paths[:, 1:]].sum(axis=1))
    log_evidence = np.logaddexp.reduce(log_joint)
    weights = np.exp(log_joint - log_evidence)
    gamma = np.zeros((num_steps, num_states))
    xi = np.zeros((num_states, num_states))
    for t in range(num_steps):
        np.add.at(gamma[t], paths[:, t], weights)
        if t + 1 < num_steps:
            np.add.at(xi, (paths[:, t], paths[:, t + 1]), weights)
    return log_evidence, gamma, xi


def gaussian_logpdf(x, mean, covariance):
    """NumPy log N(x; mean, covariance) for rows of x."""
    diff = np.asarray(x, np.float64) - np.asarray(mean, np.float64)
    covariance = np.asarray(covariance, np.float64)
    solved = np.linalg.solve(covariance, diff.T).T
    _, log_det = np.linalg.slogdet(2 * np.pi * covariance)
    return -0.5 * (np.sum(diff * solved, axis=-1) + log_det)


def numpy_log_likelihoods(emissions, x):
    if isinstance(emissions, hmm.Categorical):
        return np.log(np.asarray(emissions.probs))[:, x].T
    if isinstance(emissions, hmm.Gaussian):
        return np.stack([gaussian_logpdf(x, m, c) for m, c in
                         zip(np.asarray(emissions.means), np.asarray(emissions.covariances))], axis=1)
    return np.stack([gaussian_logpdf(x, m, np.diag(s)) for m, s in
                     zip(np.asarray(emissions.means), np.asarray(emissions.variances))], axis=1)


def oracle_em_step(model, observations, lengths, pseudo_count, min_covar):
    """One EM step from brute-force posteriors and the closed-form M-step, in NumPy."""
    pi, A = np.asarray(model.initial_probs), np.asarray(model.transition_matrix)
    total, n_pi, n_A, gammas, xs = 0.0, np.zeros(K), np.zeros((K, K)), [], []
    for x, length in zip(np.asarray(observations), lengths):
        x = x[:length]
        log_evidence, gamma, xi = brute_force_posteriors(pi, A, numpy_log_likelihoods(model.emissions, x))
        total += log_evidence
        n_pi += gamma[0]
        n_A += xi
        gammas.append(gamma)
        xs.append(x)
    gamma, x = np.concatenate(gammas), np.concatenate(xs)
    new_pi = (n_pi + pseudo_count) / (n_pi + pseudo_count).sum()
    new_A = (n_A + pseudo_count) / (n_A + pseudo_count).sum(axis=1, keepdims=True)
    if isinstance(model.emissions, hmm.Categorical):
        counts = gamma.T @ np.eye(V)[x] + pseudo_count
        emissions = (counts / counts.sum(axis=1, keepdims=True),)
    else:
        weights = gamma / gamma.sum(axis=0)
        means = weights.T @ x
        diffs = x[:, None, :] - means[None]
        if isinstance(model.emissions, hmm.Gaussian):
            covariances = np.einsum("tk,tkd,tke->kde", weights, diffs, diffs)
            values, vectors = np.linalg.eigh(covariances)
            floored = np.maximum(values, min_covar)[..., None] * np.swapaxes(vectors, 1, 2)
            emissions = (means, vectors @ floored)
        else:
            emissions = (means, np.maximum(np.einsum("tk,tkd->kd", weights, diffs**2), min_covar))
    return total, (new_pi, new_A) + emissions


def small_problem(kind, rng):
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K) * 2, size=K)
    T = LENGTHS.max()
    if kind == "categorical":
        emissions = hmm.Categorical(jnp.asarray(rng.dirichlet(np.ones(V), size=K)))
        x = rng.integers(0, V, (len(LENGTHS), T))
        x[1, 3:] = -5  # garbage beyond the length of sequence 1
    elif kind == "gaussian":
        factors = rng.normal(size=(K, D, D))
        emissions = hmm.Gaussian(jnp.asarray(rng.normal(size=(K, D))),
                                 jnp.asarray(factors @ factors.transpose(0, 2, 1) + np.eye(D)))
        x = rng.normal(size=(len(LENGTHS), T, D))
        x[1, 3:] = np.nan
    else:
        emissions = hmm.DiagonalGaussian(jnp.asarray(rng.normal(size=(K, D))),
                                         jnp.asarray(rng.uniform(0.5, 2, size=(K, D))))
        x = rng.normal(size=(len(LENGTHS), T, D))
        x[1, 3:] = np.nan
    return hmm.HMM(jnp.asarray(pi), jnp.asarray(A), emissions), jnp.asarray(x)


@pytest.mark.parametrize("kind", ["categorical", "gaussian", "diagonal"])
@pytest.mark.parametrize("pseudo_count", [0.0, 0.5])
def test_one_em_step_matches_oracle_with_variable_lengths(kind, pseudo_count):
    with jax.enable_x64(True):
        model, x = small_problem(kind, np.random.default_rng(0))
        result = hmm.baum_welch_fit(model, x, jnp.asarray(LENGTHS), max_iter=1,
                                    pseudo_count=pseudo_count, min_covar=1e-3)
        expected_log_lik, expected = oracle_em_step(model, x, LENGTHS, pseudo_count, 1e-3)
        np.testing.assert_allclose(result.history, [expected_log_lik], rtol=1e-10)
        assert int(result.num_iterations) == 1
        for leaf, value in zip(jax.tree.leaves(result.model), expected):
            np.testing.assert_allclose(leaf, value, rtol=1e-8, atol=1e-12)


def test_m_step_unjitted_equals_jitted():
    """On hand-made statistics (state 1 has no mass): the eager Python path gives the same model."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        for kind in ("categorical", "gaussian"):
            model, _ = small_problem(kind, rng)
            if kind == "categorical":
                emission_stats = hmm.emissions.CategoricalStats(jnp.array([[2.0, 1.0, 0.5], [0.0, 0.0, 0.0]]))
            else:
                emission_stats = hmm.emissions.GaussianStats(
                    jnp.array([3.0, 0.0]), jnp.array([[0.3, -0.6], [0.0, 0.0]]),
                    jnp.array([[[2.0, 0.4], [0.4, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]))
            stats_ = hmm.SufficientStats(jnp.array([2.5, 0.5]), jnp.array([[4.0, 1.0], [0.0, 0.0]]),
                                         emission_stats)
            updated = hmm.m_step(model, stats_, 0.0, 1e-3)
            with jax.disable_jit():
                updated_eager = hmm.m_step(model, stats_, 0.0, 1e-3)
            for eager, jitted in zip(jax.tree.leaves(updated_eager), jax.tree.leaves(updated)):
                np.testing.assert_allclose(eager, jitted, rtol=1e-12)
            np.testing.assert_array_equal(updated.transition_matrix[1], model.transition_matrix[1])
            np.testing.assert_allclose(updated.initial_probs, [5 / 6, 1 / 6], rtol=1e-12)


def test_categorical_em_step_matches_hmmlearn():
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        model, _ = small_problem("categorical", rng)
        x = rng.integers(0, V, (4, 30))
        reference = hmmlearn_hmm.CategoricalHMM(n_components=K, n_iter=1, init_params="", params="ste",
                                                implementation="scaling")
        reference.n_features = V
        reference.startprob_ = np.asarray(model.initial_probs)
        reference.transmat_ = np.asarray(model.transition_matrix)
        reference.emissionprob_ = np.asarray(model.emissions.probs)
        reference.fit(x.reshape(-1, 1), lengths=[30] * 4)
        fitted, _ = hmm.baum_welch(model, jnp.asarray(x), max_iter=1)
        np.testing.assert_allclose(fitted.initial_probs, reference.startprob_, rtol=1e-8)
        np.testing.assert_allclose(fitted.transition_matrix, reference.transmat_, rtol=1e-8)
        np.testing.assert_allclose(fitted.emissions.probs, reference.emissionprob_, rtol=1e-8)


def test_log_likelihood_never_decreases_and_history_convention():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        model, _ = small_problem("diagonal", rng)
        x = jnp.asarray(rng.normal(size=(6, 20, D)) + np.r_[0, 3][rng.integers(0, 2, (6, 20))][..., None])
        result = hmm.baum_welch_fit(model, x, max_iter=40, tol=0.0)
        count = int(result.num_iterations)
        history = np.asarray(result.history)
        assert count >= 5 and np.all(np.isfinite(history[:count])) and np.all(np.isnan(history[count:]))
        assert np.all(np.diff(history[:count]) >= -1e-9 * np.abs(history[:count - 1]))
        # a huge tol stops after the second E-step (the first improvement is below it) ...
        stopped = hmm.baum_welch_fit(model, x, max_iter=40, tol=1e9)
        assert int(stopped.num_iterations) == 2 and bool(stopped.converged)
        np.testing.assert_allclose(stopped.history[:2], history[:2], rtol=1e-12)
        # ... and the model returned has had two M-steps: history[2] is its log-likelihood
        lengths = jnp.full((6,), 20)
        np.testing.assert_allclose(history[2], hmm.e_step(stopped.model, x, lengths)[0], rtol=1e-12)


def best_permutation(fitted_values, true_values):
    return min(itertools.permutations(range(len(true_values))),
               key=lambda p: np.abs(np.asarray(fitted_values)[list(p)] - true_values).sum())


def test_recovers_categorical_parameters_from_200_sequences():
    true = hmm.HMM(jnp.array([0.6, 0.3, 0.1]),
                   jnp.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]),
                   hmm.Categorical(jnp.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1],
                                              [0.05, 0.05, 0.1, 0.8]])))
    keys = jax.random.split(jax.random.key(0), 200)
    _, x = jax.vmap(hmm.sample, in_axes=(0, None, None))(keys, true, 60)
    lengths = jax.random.randint(jax.random.key(1), (200,), 30, 61)
    start = hmm.HMM(jnp.array([0.4, 0.3, 0.3]), jnp.full((3, 3), 1 / 3) * 0.4 + 0.6 * jnp.eye(3),
                    hmm.Categorical(jnp.array([[0.4, 0.2, 0.2, 0.2], [0.2, 0.4, 0.2, 0.2],
                                               [0.2, 0.2, 0.2, 0.4]])))
    fitted, history = hmm.baum_welch(start, x, lengths, max_iter=300, tol=1e-5)
    assert np.all(np.isfinite(fitted.emissions.probs))
    order = np.array(best_permutation(fitted.emissions.probs, np.asarray(true.emissions.probs)))
    np.testing.assert_allclose(fitted.emissions.probs[order], true.emissions.probs, atol=0.05)
    np.testing.assert_allclose(fitted.transition_matrix[np.ix_(order, order)], true.transition_matrix,
                               atol=0.05)
    np.testing.assert_allclose(fitted.initial_probs[order], true.initial_probs, atol=0.1)


def test_recovers_gaussian_parameters_from_200_sequences():
    true = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]),
                   hmm.Gaussian(jnp.array([[0.0, 0.0], [3.0, -2.0]]),
                                jnp.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]]])))
    keys = jax.random.split(jax.random.key(2), 200)
    _, x = jax.vmap(hmm.sample, in_axes=(0, None, None))(keys, true, 40)
    start = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.6, 0.4], [0.4, 0.6]]),
                    hmm.Gaussian(jnp.array([[1.0, 1.0], [2.0, -1.0]]), jnp.stack([jnp.eye(2)] * 2)))
    fitted, _ = hmm.baum_welch(start, x, max_iter=200, tol=1e-5)
    order = np.array(best_permutation(fitted.emissions.means, np.asarray(true.emissions.means)))
    np.testing.assert_allclose(fitted.emissions.means[order], true.emissions.means, atol=0.1)
    np.testing.assert_allclose(fitted.emissions.covariances[order], true.emissions.covariances, atol=0.15)
    np.testing.assert_allclose(fitted.transition_matrix[np.ix_(order, order)], true.transition_matrix,
                               atol=0.03)


def test_garbage_padding_changes_nothing():
    model, x = small_problem("diagonal", np.random.default_rng(3))
    x = x.astype(jnp.float32)
    model = jax.tree.map(lambda a: a.astype(jnp.float32), model)
    lengths = jnp.asarray(LENGTHS)
    other = x.at[1, 3:].set(1e30).at[2, 4:].set(-7.0)
    first = hmm.baum_welch(model, x, lengths, max_iter=5)
    second = hmm.baum_welch(model, other, lengths, max_iter=5)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(a, b)


def test_second_call_with_new_data_does_not_retrace():
    traces = []

    def count_traces(name, *args, **kwargs):
        if name.endswith("jaxpr_trace_duration"):
            traces.append(name)

    rng = np.random.default_rng(4)
    model, _ = small_problem("categorical", rng)
    model = jax.tree.map(lambda a: a.astype(jnp.float32), model)
    x1, x2 = (jnp.asarray(rng.integers(0, V, (7, 9))) for _ in range(2))
    lengths1, lengths2 = jnp.asarray(rng.integers(1, 10, 7)), jnp.asarray(rng.integers(1, 10, 7))
    monitoring.register_event_duration_secs_listener(count_traces)
    try:
        hmm.baum_welch(model, x1, lengths1, max_iter=13, tol=1e-3)
        assert len(traces) >= 1  # the listener sees the first compilation
        before = len(traces)
        fitted, _ = hmm.baum_welch(model, x2, lengths2, max_iter=13, tol=2e-3, pseudo_count=0.1)
    finally:
        monitoring.unregister_event_duration_listener(count_traces)
    assert len(traces) == before
    assert np.all(np.isfinite(fitted.emissions.probs))


def test_state_without_mass_keeps_its_parameters_and_nothing_is_nan():
    """State 2 is unreachable: hmmlearn divides 0 by 0 here; this M-step keeps the old values."""
    pi = jnp.array([0.5, 0.5, 0.0])
    A = jnp.array([[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.1, 0.1, 0.8]])
    gaussian = hmm.Gaussian(jnp.array([[0.0, 0.0], [3.0, 3.0], [9.0, 9.0]]), jnp.stack([jnp.eye(2)] * 3))
    model = hmm.HMM(pi, A, gaussian)
    x = jax.random.normal(jax.random.key(5), (4, 25, 2)) + 1.5
    fitted, history = hmm.baum_welch(model, x, max_iter=10)
    for leaf in jax.tree.leaves(fitted):
        assert np.all(np.isfinite(leaf))
    np.testing.assert_array_equal(fitted.emissions.means[2], gaussian.means[2])
    np.testing.assert_array_equal(fitted.emissions.covariances[2], gaussian.covariances[2])
    np.testing.assert_array_equal(fitted.transition_matrix[2], A[2])
    assert fitted.initial_probs[2] == 0.0
    assert np.all(np.isfinite(history[~np.isnan(history)]))


def test_variances_are_floored_at_min_covar():
    line = jnp.stack([jnp.arange(10.0) / 3.0 - 1.5] * 2, axis=1)  # rank-deficient scatter
    x = jnp.stack([jnp.full((10, 2), 5.0), jnp.full((10, 2), 5.0), line, line])  # and a constant
    diagonal = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.1, 0.9]]),
                       hmm.DiagonalGaussian(jnp.array([[4.0, 4.0], [0.0, 0.0]]), jnp.ones((2, 2))))
    fitted, _ = hmm.baum_welch(diagonal, x, max_iter=30, min_covar=0.01)
    np.testing.assert_allclose(fitted.emissions.variances[0], [0.01, 0.01], rtol=1e-5)
    np.testing.assert_allclose(fitted.emissions.variances[1], np.var(np.asarray(line)[:, 0]), rtol=1e-4)
    full = diagonal._replace(emissions=hmm.Gaussian(diagonal.emissions.means, jnp.stack([jnp.eye(2)] * 2)))
    fitted, _ = hmm.baum_welch(full, x, max_iter=30, min_covar=0.01)
    eigenvalues = np.linalg.eigvalsh(np.asarray(fitted.emissions.covariances, np.float64))
    np.testing.assert_allclose(eigenvalues[0], [0.01, 0.01], rtol=1e-4)
    np.testing.assert_allclose(eigenvalues[1], [0.01, 2 * np.var(np.asarray(line)[:, 0])], rtol=1e-4)


def test_gradient_ascent_on_logits_increases_the_likelihood():
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.integers(0, V, (8, 30)))

    def mean_log_likelihood(logits):
        model = hmm.HMM(jax.nn.softmax(logits["initial"]), jax.nn.softmax(logits["transition"], axis=-1),
                        hmm.Categorical(jax.nn.softmax(logits["emission"], axis=-1)))
        return jnp.mean(jax.vmap(hmm.log_likelihood, in_axes=(None, 0))(model, x))

    value_and_grad = jax.jit(jax.value_and_grad(mean_log_likelihood))
    logits = {"initial": jnp.zeros(K), "transition": jnp.asarray(rng.normal(size=(K, K))),
              "emission": jnp.asarray(rng.normal(size=(K, V)))}
    values = []
    for _ in range(20):
        value, grads = value_and_grad(logits)
        values.append(float(value))
        logits = jax.tree.map(lambda p, g: p + 0.05 * g, logits, grads)
    assert values[-1] > values[0] + 0.1
    assert all(np.isfinite(values))
