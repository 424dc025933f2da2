"""Baum–Welch: one EM step against brute-force expected counts and the family's closed-form
M-step, monotonicity, states without mass, hmmlearn's M-step, traced hyperparameters,
parameter recovery, padding, compilation, gradient fitting.

The common tests run for every family of the registry (``_hmm_families``); each compiles the
EM loop once (``max_iter=1``, the same hyperparameter names in every call) and reuses it.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_families import (BY_NAME, brute_force, observations, parametrize_families,
                           random_hmm)
from _jax_events import recording_jax_events, traces
from functional_dl import hmm

K = 2
LENGTHS = np.array([5, 3, 4])
CATEGORICAL = BY_NAME["categorical"]
V = CATEGORICAL.event_size


def small_problem(family, rng):
    """A K-state model and three sequences of lengths 5, 3, 4 (garbage beyond sequence 1's)."""
    model = random_hmm(rng, family, K, concentration=2.0)
    x = observations(rng, family, (len(LENGTHS), LENGTHS.max()))
    x[1, 3:] = family.garbage[0]
    return model, jnp.asarray(x)


def observed(x, lengths):
    """The non-padded steps of a batch, concatenated."""
    return np.concatenate([np.asarray(seq)[:length] for seq, length in zip(x, lengths)])


def oracle_em_step(family, model, x, lengths, pseudo_count, hyperparameters):
    """One EM step from brute-force posteriors and the family's NumPy M-step."""
    pi, A = np.asarray(model.initial_probs), np.asarray(model.transition_matrix)
    total, n_pi, n_A, gammas = 0.0, np.zeros(K), np.zeros((K, K)), []
    for sequence, length in zip(np.asarray(x), lengths):
        lls = family.log_pdf(model.emissions, sequence[:length])
        log_evidence, gamma, xi, _, _ = brute_force(pi, A, lls)
        total += log_evidence
        n_pi += gamma[0]
        n_A += xi
        gammas.append(gamma)
    new_pi = (n_pi + pseudo_count) / (n_pi + pseudo_count).sum()
    new_A = (n_A + pseudo_count) / (n_A + pseudo_count).sum(axis=1, keepdims=True)
    emissions = family.m_step(model.emissions, observed(x, lengths), np.concatenate(gammas),
                              **hyperparameters)
    return total, (new_pi, new_A) + tuple(emissions)


def em_step(model, x, family, pseudo_count=0.0, hyperparameters=None):
    """``baum_welch_with_history`` for one iteration (one compilation per family)."""
    return hmm.baum_welch_with_history(
        model, x, jnp.asarray(LENGTHS), max_iter=1, pseudo_count=pseudo_count,
        emission_hyperparameters=family.hyperparameters[0] if hyperparameters is None
        else hyperparameters)


@parametrize_families()
def test_one_em_step_matches_oracle_with_variable_lengths(family):
    """Brute-force expected counts and the family's M-step, at two settings of π/A's
    pseudo-count and the family's hyperparameters (traced: one compilation); then other
    garbage in the padding gives bit-identical results."""
    with jax.enable_x64(True):
        model, x = small_problem(family, np.random.default_rng(0))
        for pseudo_count, hyperparameters in zip((0.0, 0.5), family.hyperparameters):
            result = em_step(model, x, family, pseudo_count, hyperparameters)
            expected_log_lik, expected = oracle_em_step(family, model, x, LENGTHS, pseudo_count,
                                                        hyperparameters)
            np.testing.assert_allclose(result.history, [expected_log_lik], rtol=1e-10)
            assert int(result.num_iterations) == 1
            for leaf, value in zip(jax.tree.leaves(result.model), expected, strict=True):
                np.testing.assert_allclose(leaf, value, rtol=1e-8, atol=1e-12)
        other_garbage = x.at[1, 3:].set(family.garbage[1]).at[2, 4:].set(family.garbage[1])
        again = em_step(model, other_garbage, family, 0.5, family.hyperparameters[-1])
        for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(again)):
            np.testing.assert_array_equal(a, b)


@parametrize_families()
def test_em_iterations_never_decrease_the_log_likelihood(family):
    """Eight EM steps, one call each (the compilation of the oracle test)."""
    with jax.enable_x64(True):
        model, x = small_problem(family, np.random.default_rng(1))
        log_liks = []
        for _ in range(8):
            result = em_step(model, x, family)
            log_liks.append(float(result.history[0]))
            model = result.model
        assert np.all(np.isfinite(log_liks))
        assert np.all(np.diff(log_liks) >= -1e-9 * np.abs(log_liks[:-1]))


@parametrize_families()
def test_m_step_keeps_a_state_without_mass_jitted_or_not(family):
    """Statistics in which state 1 has no weight: it keeps its parameters, state 0 gets the
    oracle's; the eager Python path gives the same model as the compiled one."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        model, x = small_problem(family, rng)
        steps = observed(x, LENGTHS)
        weights = np.stack([rng.uniform(0.2, 1.0, len(steps)), np.zeros(len(steps))], axis=1)
        emission_stats = model.emissions.sufficient_stats(jnp.asarray(steps), jnp.asarray(weights))
        stats = hmm.SufficientStats(jnp.array([2.5, 0.5]), jnp.array([[4.0, 1.0], [0.0, 0.0]]),
                                    emission_stats)
        hyperparameters = family.hyperparameters[0]
        updated = hmm.m_step(model, stats, 0.0, hyperparameters)
        with jax.disable_jit():
            updated_eager = hmm.m_step(model, stats, 0.0, hyperparameters)
        for eager, jitted in zip(jax.tree.leaves(updated_eager), jax.tree.leaves(updated)):
            np.testing.assert_allclose(eager, jitted, rtol=1e-12)
        expected = family.m_step(model.emissions, steps, weights, **hyperparameters)
        for name, leaf, old, value in zip(model.emissions._fields, updated.emissions,
                                          model.emissions, expected, strict=True):
            np.testing.assert_allclose(leaf, value, rtol=1e-10, atol=1e-12)
            if name not in family.shared_fields:
                np.testing.assert_array_equal(leaf[1], old[1])
        np.testing.assert_array_equal(updated.transition_matrix[1], model.transition_matrix[1])
        np.testing.assert_allclose(updated.initial_probs, [5 / 6, 1 / 6], rtol=1e-12)


def test_categorical_em_step_matches_hmmlearn():
    """hmmlearn's own M-step on three sequences of 5 (the oracle test's compilation)."""
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        model, _ = small_problem(CATEGORICAL, rng)
        x = rng.integers(0, V, (len(LENGTHS), LENGTHS.max()))
        reference = hmmlearn_hmm.CategoricalHMM(n_components=K, n_iter=1, init_params="", params="ste",
                                                implementation="scaling")
        reference.n_features = V
        reference.startprob_ = np.asarray(model.initial_probs)
        reference.transmat_ = np.asarray(model.transition_matrix)
        reference.emissionprob_ = np.asarray(model.emissions.probs)
        reference.fit(x.reshape(-1, 1), lengths=[x.shape[1]] * len(x))
        lengths = jnp.asarray(np.full(len(x), x.shape[1]))
        fitted = hmm.baum_welch(model, jnp.asarray(x), lengths, max_iter=1,
                                emission_hyperparameters=CATEGORICAL.hyperparameters[0])
        np.testing.assert_allclose(fitted.initial_probs, reference.startprob_, rtol=1e-8)
        np.testing.assert_allclose(fitted.transition_matrix, reference.transmat_, rtol=1e-8)
        np.testing.assert_allclose(fitted.emissions.probs, reference.emissionprob_, rtol=1e-8)


def test_hyperparameters_are_traced_so_vmap_fits_one_model_per_value():
    """``jax.vmap`` over π/A's pseudo-count and the categorical emissions' own pseudo-count
    gives, value by value, the models of separate calls."""
    with jax.enable_x64(True):
        model, x = small_problem(CATEGORICAL, np.random.default_rng(0))
        values = jnp.array([0.0, 0.5, 2.0])

        def fit(value):
            return em_step(model, x, CATEGORICAL, value, {"pseudo_count": value}).model

        fitted = jax.vmap(fit)(values)
        for index, value in enumerate(values.tolist()):
            single = fit(value)
            for batched, leaf in zip(jax.tree.leaves(fitted), jax.tree.leaves(single)):
                np.testing.assert_allclose(batched[index], leaf, rtol=1e-12)


# Two (B, T, D) = (6, 20, 2) float64 configurations, max_iter=40, each compiled once and
# shared by two tests: diagonal (monotonicity, variance floor), full (empty state, floor).
BATCH, STEPS, MAX_ITER, D = 6, 20, 40, 2
FLOOR = {"min_covar": 1e-3}


def test_log_likelihood_never_decreases_and_history_convention():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        model, _ = small_problem(BY_NAME["diagonal_gaussian"], rng)
        x = jnp.asarray(rng.normal(size=(BATCH, STEPS, D))
                        + np.r_[0, 3][rng.integers(0, 2, (BATCH, STEPS))][..., None])
        result = hmm.baum_welch_with_history(model, x, max_iter=MAX_ITER, tol=0.0,
                                             emission_hyperparameters=FLOOR)
        count = int(result.num_iterations)
        history = np.asarray(result.history)
        assert count >= 5 and np.all(np.isfinite(history[:count])) and np.all(np.isnan(history[count:]))
        assert np.all(np.diff(history[:count]) >= -1e-9 * np.abs(history[:count - 1]))
        # a huge tol stops after the second E-step (the first improvement is below it) ...
        stopped = hmm.baum_welch_with_history(model, x, max_iter=MAX_ITER, tol=1e9,
                                              emission_hyperparameters=FLOOR)
        assert int(stopped.num_iterations) == 2 and bool(stopped.converged)
        np.testing.assert_allclose(stopped.history[:2], history[:2], rtol=1e-12)
        # ... and the model returned has had two M-steps: history[2] is its log-likelihood
        np.testing.assert_allclose(history[2], hmm.e_step(stopped.model, x)[0], rtol=1e-12)
        fitted = hmm.baum_welch(model, x, max_iter=MAX_ITER, tol=1e9, emission_hyperparameters=FLOOR)
        for a, b in zip(jax.tree.leaves(fitted), jax.tree.leaves(stopped.model), strict=True):
            np.testing.assert_array_equal(a, b)


def best_permutation(fitted_values, true_values):
    return min(itertools.permutations(range(len(true_values))),
               key=lambda p: np.abs(np.asarray(fitted_values)[list(p)] - true_values).sum())


def numpy_sample(rng, initial_probs, transition_matrix, num_sequences, num_steps):
    """Hidden state paths drawn in NumPy (independently of ``hmm.sample``), vectorised over
    the sequences: each state by inverse-CDF from a uniform."""
    cumulative = np.cumsum(np.asarray(transition_matrix, np.float64), axis=1)
    states = np.empty((num_sequences, num_steps), dtype=np.int64)
    states[:, 0] = rng.choice(len(cumulative), size=num_sequences, p=np.asarray(initial_probs))
    for t in range(1, num_steps):
        rows = cumulative[states[:, t - 1]]
        states[:, t] = np.sum(rows <= rng.random(num_sequences)[:, None] * rows[:, -1:], axis=1)
    return states


def test_recovers_categorical_parameters_from_200_sequences():
    pi = np.array([0.6, 0.3, 0.1])
    A = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    B = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.05, 0.05, 0.1, 0.8]])
    rng = np.random.default_rng(0)
    states = numpy_sample(rng, pi, A, 200, 60)
    cumulative = np.cumsum(B, axis=1)[states]
    x = np.sum(cumulative <= rng.random(states.shape)[..., None] * cumulative[..., -1:], axis=-1)
    lengths = rng.integers(30, 61, 200)
    start = hmm.HMM(jnp.asarray([0.4, 0.3, 0.3]), jnp.asarray(np.full((3, 3), 0.4 / 3) + 0.6 * np.eye(3)),
                    hmm.Categorical(jnp.asarray([[0.4, 0.2, 0.2, 0.2], [0.2, 0.4, 0.2, 0.2],
                                                 [0.2, 0.2, 0.2, 0.4]])))
    fitted = hmm.baum_welch(start, jnp.asarray(x), jnp.asarray(lengths), max_iter=300, tol=1e-5)
    assert np.all(np.isfinite(fitted.emissions.probs))
    order = np.array(best_permutation(fitted.emissions.probs, B))
    np.testing.assert_allclose(fitted.emissions.probs[order], B, atol=0.05)
    np.testing.assert_allclose(fitted.transition_matrix[np.ix_(order, order)], A, atol=0.05)
    np.testing.assert_allclose(fitted.initial_probs[order], pi, atol=0.1)


def test_recovers_gaussian_parameters_from_200_sequences():
    A = np.array([[0.9, 0.1], [0.2, 0.8]])
    means = np.array([[0.0, 0.0], [3.0, -2.0]])
    covariances = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]]])
    rng = np.random.default_rng(2)
    states = numpy_sample(rng, [0.5, 0.5], A, 200, 40)
    noise = rng.normal(size=states.shape + (2,))
    x = means[states] + np.einsum("btde,bte->btd", np.linalg.cholesky(covariances)[states], noise)
    start = hmm.HMM(jnp.asarray([0.5, 0.5]), jnp.asarray([[0.6, 0.4], [0.4, 0.6]]),
                    hmm.Gaussian(jnp.asarray([[1.0, 1.0], [2.0, -1.0]]),
                                 jnp.asarray(np.stack([np.eye(2)] * 2))))
    fitted = hmm.baum_welch(start, jnp.asarray(x, jnp.float32), max_iter=200, tol=1e-5)
    order = np.array(best_permutation(fitted.emissions.means, means))
    np.testing.assert_allclose(fitted.emissions.means[order], means, atol=0.1)
    np.testing.assert_allclose(fitted.emissions.covariances[order], covariances, atol=0.15)
    np.testing.assert_allclose(fitted.transition_matrix[np.ix_(order, order)], A, atol=0.03)


def test_second_call_with_new_data_does_not_retrace():
    """New data, lengths, tol and pseudo_count of the same shapes: no new trace or compile."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        model, x1 = small_problem(CATEGORICAL, rng)  # the oracle test's shapes
        x2 = jnp.asarray(rng.integers(0, V, x1.shape))
        lengths1, lengths2 = jnp.asarray(LENGTHS), jnp.asarray(rng.integers(1, x1.shape[1] + 1, 3))
        with recording_jax_events() as events:
            hmm.baum_welch(model, x1, lengths1, max_iter=1, tol=1e-3,  # compiles unless cached
                           emission_hyperparameters=CATEGORICAL.hyperparameters[0])
            jax.jit(lambda v: v + 1)(jnp.arange(3.0))  # a new function: the listener sees it
            assert traces(events) >= 1
            before = traces(events)
            fitted = hmm.baum_welch(model, x2, lengths2, max_iter=1, tol=2e-3, pseudo_count=0.1,
                                    emission_hyperparameters=CATEGORICAL.hyperparameters[1])
    assert traces(events) == before
    assert np.all(np.isfinite(fitted.emissions.probs))


def test_state_without_mass_keeps_its_parameters_and_nothing_is_nan():
    """State 1 is unreachable: hmmlearn divides 0 by 0 here; this M-step keeps the old values."""
    with jax.enable_x64(True):
        pi = jnp.array([1.0, 0.0])
        A = jnp.array([[1.0, 0.0], [0.3, 0.7]])
        gaussian = hmm.Gaussian(jnp.asarray([[0.0, 0.0], [9.0, 9.0]]), jnp.asarray(np.stack([np.eye(2)] * 2)))
        model = hmm.HMM(pi, A, gaussian)
        x = jnp.asarray(np.random.default_rng(5).normal(size=(BATCH, STEPS, D)) + 1.5)
        fitted, history, _, _ = hmm.baum_welch_with_history(model, x, max_iter=MAX_ITER,
                                                            emission_hyperparameters=FLOOR)
        for leaf in jax.tree.leaves(fitted):
            assert np.all(np.isfinite(leaf))
        np.testing.assert_array_equal(fitted.emissions.means[1], gaussian.means[1])
        np.testing.assert_array_equal(fitted.emissions.covariances[1], gaussian.covariances[1])
        np.testing.assert_array_equal(fitted.transition_matrix[1], A[1])
        assert fitted.initial_probs[1] == 0.0
        assert np.all(np.isfinite(history[~np.isnan(history)]))
        # state 0 got everything: its parameters are the plain moments of all the data
        flat = np.asarray(x).reshape(-1, D)
        np.testing.assert_allclose(fitted.emissions.means[0], flat.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(fitted.emissions.covariances[0], np.cov(flat.T, bias=True),
                                   rtol=1e-10)


def test_variances_are_floored_at_min_covar():
    with jax.enable_x64(True):
        line = np.stack([np.arange(STEPS) / 6 - 1.5] * 2, axis=1)  # rank-deficient scatter
        constant = np.full((STEPS, D), 5.0)
        x = jnp.asarray(np.stack([constant] * (BATCH // 2) + [line] * (BATCH // 2)))
        diagonal = hmm.HMM(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.1, 0.9]]),
                           hmm.DiagonalGaussian(jnp.asarray([[4.0, 4.0], [0.0, 0.0]]), jnp.asarray(np.ones((2, 2)))))
        fitted = hmm.baum_welch(diagonal, x, max_iter=MAX_ITER,
                                emission_hyperparameters={"min_covar": 0.01})
        np.testing.assert_allclose(fitted.emissions.variances[0], [0.01, 0.01], rtol=1e-5)
        np.testing.assert_allclose(fitted.emissions.variances[1], np.var(np.asarray(line)[:, 0]),
                                   rtol=1e-4)
        full = diagonal._replace(emissions=hmm.Gaussian(diagonal.emissions.means,
                                                        jnp.asarray(np.stack([np.eye(2)] * 2))))
        fitted = hmm.baum_welch(full, x, max_iter=MAX_ITER,
                                emission_hyperparameters={"min_covar": 0.01})
        eigenvalues = np.linalg.eigvalsh(np.asarray(fitted.emissions.covariances, np.float64))
        np.testing.assert_allclose(eigenvalues[0], [0.01, 0.01], rtol=1e-4)
        np.testing.assert_allclose(eigenvalues[1], [0.01, 2 * np.var(np.asarray(line)[:, 0])],
                                   rtol=1e-4)


def test_gradient_ascent_on_logits_increases_the_likelihood():
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.integers(0, V, (8, 30)))

    def mean_log_likelihood(logits):
        model = hmm.HMM(jax.nn.softmax(logits["initial"]), jax.nn.softmax(logits["transition"], axis=-1),
                        hmm.Categorical(jax.nn.softmax(logits["emission"], axis=-1)))
        return jnp.mean(jax.vmap(hmm.log_likelihood, in_axes=(None, 0))(model, x))

    value_and_grad = jax.jit(jax.value_and_grad(mean_log_likelihood))
    logits = {"initial": jnp.asarray(np.zeros(K, np.float32)), "transition": jnp.asarray(rng.normal(size=(K, K))),
              "emission": jnp.asarray(rng.normal(size=(K, V)))}
    values = []
    for _ in range(20):
        value, grads = value_and_grad(logits)
        values.append(float(value))
        logits = jax.tree.map(lambda p, g: p + 0.05 * g, logits, grads)
    assert values[-1] > values[0] + 0.1
    assert all(np.isfinite(values))


# ---------------------------------------------------------------- EM controls and status

def test_vmapped_pseudo_count_and_tol_equal_a_loop_jitted_or_not():
    """``jax.vmap`` (and ``jax.jit``) over ``pseudo_count`` and ``tol`` of ``fit_from``: value by
    value the results of separate calls, the final score included."""
    with jax.enable_x64(True):
        model, x = small_problem(CATEGORICAL, np.random.default_rng(7))
        values, tols = jnp.array([0.0, 0.5, 2.0]), jnp.array([0.0, 1e9, 1e-3])
        lengths = jnp.asarray(LENGTHS)

        def run(value, tol):
            return hmm.fit_from(model, x, lengths, max_iter=4, tol=tol,
                                pseudo_count=value,
                                emission_hyperparameters={"pseudo_count": value})

        batched = jax.vmap(run)(values, tols)
        jitted = jax.jit(jax.vmap(run))(values, tols)
        for index, (value, tol) in enumerate(zip(values.tolist(), tols.tolist())):
            single = run(value, tol)
            for many, again, leaf in zip(jax.tree.leaves(batched), jax.tree.leaves(jitted),
                                         jax.tree.leaves(single), strict=True):
                np.testing.assert_allclose(many[index], leaf, rtol=1e-12)
                np.testing.assert_allclose(again[index], leaf, rtol=1e-12)
        assert batched.num_iterations.tolist() == [4, 2, int(batched.num_iterations[2])]


def brute_force_counts(model, x, lengths, family=CATEGORICAL):
    """Expected initial and transition counts by enumeration, summed over the sequences."""
    num_states = len(model.initial_probs)
    n_pi, n_A = np.zeros(num_states), np.zeros((num_states, num_states))
    for sequence, length in zip(np.asarray(x), lengths):
        lls = family.log_pdf(model.emissions, sequence[:length])
        _, gamma, xi, _, _ = brute_force(model.initial_probs, model.transition_matrix, lls)
        n_pi += gamma[0]
        n_A += xi
    return n_pi, n_A


def bakis_problem():
    """A 3-state left-right model (A upper triangular, π = e_1) and three symbol sequences."""
    rng = np.random.default_rng(8)
    A = np.array([[0.6, 0.3, 0.1], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]])
    model = hmm.HMM(jnp.array([1.0, 0.0, 0.0]), jnp.asarray(A),
                    hmm.Categorical(jnp.asarray(rng.dirichlet(np.ones(V), size=3))))
    return model, jnp.asarray(rng.integers(0, V, (len(LENGTHS), LENGTHS.max())))


def test_per_entry_pseudo_counts_keep_a_bakis_model_left_to_right():
    """α^A = ½ on and above the diagonal (0 below), α^π = (1, 0, 0): one M-step is
    (n + α) / Σ (n + α) with brute-force counts, and after ten the zeros are still exact
    zeros; a scalar pseudo-count, by contrast, fills them."""
    with jax.enable_x64(True):
        model, x = bakis_problem()
        alpha_A, alpha_pi = 0.5 * np.triu(np.ones((3, 3))), np.array([1.0, 0.0, 0.0])
        lengths = jnp.asarray(LENGTHS)
        options = dict(initial_pseudo_counts=alpha_pi, transition_pseudo_counts=alpha_A)
        one = hmm.baum_welch(model, x, lengths, max_iter=1, **options)
        n_pi, n_A = brute_force_counts(model, x, LENGTHS)
        np.testing.assert_allclose(one.transition_matrix, (n_A + alpha_A) / (n_A + alpha_A).sum(
            axis=1, keepdims=True), rtol=1e-10)
        np.testing.assert_allclose(one.initial_probs, [1.0, 0.0, 0.0], rtol=1e-12)
        many = hmm.baum_welch(model, x, lengths, max_iter=10, tol=0.0, **options)
        assert np.all(np.asarray(many.transition_matrix)[np.tril_indices(3, -1)] == 0.0)
        assert np.all(np.asarray(many.initial_probs)[1:] == 0.0)
        filled = hmm.baum_welch(model, x, lengths, max_iter=1, pseudo_count=0.5)
        assert np.all(np.asarray(filled.transition_matrix)[np.tril_indices(3, -1)] > 0.0)


def test_frozen_parts_do_not_move_and_the_rest_matches_hmmlearn_params():
    """``update={"transition"}``: π and the emissions stay bit for bit, A follows the
    brute-force M-step; ``update={"initial", "transition"}`` is hmmlearn's ``params="st"``."""
    with jax.enable_x64(True):
        model, x = small_problem(CATEGORICAL, np.random.default_rng(9))
        lengths = jnp.asarray(LENGTHS)
        frozen = hmm.baum_welch(model, x, lengths, max_iter=1, update={"transition"})
        np.testing.assert_array_equal(frozen.initial_probs, model.initial_probs)
        np.testing.assert_array_equal(frozen.emissions.probs, model.emissions.probs)
        _, n_A = brute_force_counts(model, x, LENGTHS)
        np.testing.assert_allclose(frozen.transition_matrix, n_A / n_A.sum(1, keepdims=True),
                                   rtol=1e-10)
        hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
        full = np.asarray(rng_symbols := np.random.default_rng(10).integers(0, V, (3, 6)))
        ours = hmm.baum_welch(model, jnp.asarray(rng_symbols), max_iter=5, tol=0.0,
                              update={"initial", "transition"})
        reference = hmmlearn_hmm.CategoricalHMM(n_components=K, n_iter=5, tol=-np.inf,
                                                init_params="", params="st",
                                                implementation="scaling")
        reference.n_features = V
        reference.startprob_ = np.asarray(model.initial_probs)
        reference.transmat_ = np.asarray(model.transition_matrix)
        reference.emissionprob_ = np.asarray(model.emissions.probs)
        reference.fit(full.reshape(-1, 1), lengths=[6] * 3)
        np.testing.assert_allclose(ours.initial_probs, reference.startprob_, rtol=1e-8)
        np.testing.assert_allclose(ours.transition_matrix, reference.transmat_, rtol=1e-8)
        np.testing.assert_array_equal(ours.emissions.probs, model.emissions.probs)


def test_python_lists_are_accepted_by_em_and_named_by_inference():
    with jax.enable_x64(True):
        model, x = small_problem(CATEGORICAL, np.random.default_rng(11))
        as_lists = hmm.HMM(np.asarray(model.initial_probs).tolist(),
                           np.asarray(model.transition_matrix).tolist(),
                           hmm.Categorical(np.asarray(model.emissions.probs).tolist()))
        lengths = LENGTHS.tolist()
        from_lists = hmm.baum_welch(as_lists, np.asarray(x).tolist(), lengths, max_iter=1,
                                    initial_pseudo_counts=[0.5, 0.5], pseudo_count=0.5,
                                    emission_hyperparameters={"pseudo_count": [[0.0] * V]})
        from_arrays = hmm.baum_welch(model, x, jnp.asarray(LENGTHS), max_iter=1,
                                     pseudo_count=0.5)
        for a, b in zip(jax.tree.leaves(from_lists), jax.tree.leaves(from_arrays), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(TypeError, match="initial_probs must be an array, got a Python list"):
        hmm.log_likelihood(as_lists, x[0])
    with pytest.raises(TypeError, match="pseudo_count must be a real number"):
        hmm.baum_welch(model, x, jnp.asarray(LENGTHS), max_iter=1, pseudo_count="0.5")


def test_fit_from_scores_the_model_it_returns():
    """``history`` is one M-step behind; ``log_likelihood`` is the returned model's own."""
    with jax.enable_x64(True):
        model, x = small_problem(CATEGORICAL, np.random.default_rng(12))
        result = hmm.fit_from(model, x, jnp.asarray(LENGTHS), max_iter=4, tol=0.0)
        total, _ = hmm.e_step(result.model, x, jnp.asarray(LENGTHS))
        np.testing.assert_allclose(result.log_likelihood, total, rtol=1e-12)
        assert float(result.log_likelihood) >= float(result.history[3])
        assert hmm.EMStatus(int(result.status)) is hmm.EMStatus.MAX_ITERATIONS
        assert not bool(result.converged)


class _NaNCategorical(hmm.Categorical):
    """A user's emission model with a bug: symbol 3 gets a NaN log-likelihood."""

    def log_likelihoods(self, observations):
        return jnp.where((observations == 3)[:, None], jnp.nan,
                         super().log_likelihoods(observations))

    def m_step(self, stats, **hyperparameters):
        return _NaNCategorical(*super().m_step(stats, **hyperparameters))


def test_nan_and_impossible_observations_stop_em_not_converged():
    """A NaN log-likelihood stops EM with status NAN_LOG_LIKELIHOOD and returns the start;
    data impossible under the model (a symbol of probability 0) stop it with
    IMPOSSIBLE_OBSERVATIONS; neither is 'converged'."""
    with jax.enable_x64(True):
        model, _ = small_problem(CATEGORICAL, np.random.default_rng(13))
        x = jnp.asarray([[0, 1, 3, 2, 0]])
        buggy = model._replace(emissions=_NaNCategorical(model.emissions.probs))
        result = hmm.fit_from(buggy, x, max_iter=5)
        assert hmm.EMStatus(int(result.status)) is hmm.EMStatus.NAN_LOG_LIKELIHOOD
        assert not bool(result.converged) and int(result.num_iterations) == 1
        assert np.isnan(result.history[0]) and np.isnan(result.log_likelihood)
        np.testing.assert_array_equal(result.model.emissions.probs, model.emissions.probs)
        probs = np.asarray(model.emissions.probs).copy()
        probs[:, 3] = 0.0
        probs /= probs.sum(axis=1, keepdims=True)
        impossible = model._replace(emissions=hmm.Categorical(jnp.asarray(probs)))
        result = hmm.fit_from(impossible, x, max_iter=5)
        assert hmm.EMStatus(int(result.status)) is hmm.EMStatus.IMPOSSIBLE_OBSERVATIONS
        assert not bool(result.converged) and result.history[0] == -np.inf
        assert not hmm.baum_welch_with_history(impossible, x, max_iter=5).converged


# the families whose one hyperparameter takes a per-state array; the newer families' per-entry
# priors are tested in their own files (tests/test_hmm_families_*.py)
@parametrize_families(families=[BY_NAME[name] for name in
                                ("categorical", "gaussian", "diagonal_gaussian")])
def test_per_state_emission_hyperparameters_equal_the_oracle_state_by_state(family):
    """A (K,) array of a family's hyperparameter (a (K, 1) one for categorical pseudo-counts)
    gives state k the M-step of the scalar value k (the registry's NumPy M-step)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(15)
        model, x = small_problem(family, rng)
        steps = observed(x, LENGTHS)
        weights = rng.uniform(0.1, 1.0, (len(steps), K))
        stats = model.emissions.sufficient_stats(jnp.asarray(steps), jnp.asarray(weights))
        (name, _), = family.hyperparameters[0].items()
        per_state = [h[name] for h in family.hyperparameters]  # two values, K = 2
        array = np.asarray(per_state)[:, None] if family.name == "categorical" else np.asarray(
            per_state)
        model.emissions.check_hyperparameters(**{name: array})
        updated = model.emissions.m_step(stats, **{name: jnp.asarray(array)})
        for state, value in enumerate(per_state):
            expected = family.m_step(model.emissions, steps, weights, **{name: value})
            for leaf, oracle in zip(jax.tree.leaves(updated), expected, strict=True):
                np.testing.assert_allclose(leaf[state], oracle[state], rtol=1e-10, atol=1e-12)
        with pytest.raises(ValueError, match=name):
            model.emissions.check_hyperparameters(**{name: -np.ones((K,) + array.shape[1:])})
