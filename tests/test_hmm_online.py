"""Online filtering, prediction, the stationary distribution and posterior path sampling.

Oracles: ``forward_filter`` (a different code path: the scaled scan over the whole sequence),
the identity ``log p(x_{L+1} | x_{1:L}) = log p(x_{1:L+1}) − log p(x_{1:L})``, NumPy's
left eigenvector of A, and brute-force enumeration of all K^T paths for FFBS.
"""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm
from functional_dl.hmm import online, posterior_sampling

import _hmm_families as families
from _jax_events import compilations_of, recording_jax_events


@families.parametrize_families(families=families.REPRESENTATIVE)
def test_filter_steps_equal_forward_filter_at_every_step(family):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        model = families.random_hmm(rng, family, 3)
        x = jnp.asarray(families.observations(rng, family, (12,)))
        log_lik, filtered = hmm.forward(model, x)
        state = online.filter_init(model)
        for t in range(x.shape[0]):
            state = online.filter_step(model, state, x[t])
            np.testing.assert_allclose(state.filtered, filtered[t], rtol=1e-10, atol=1e-12)
            prefix, _ = hmm.forward(model, x, t + 1)  # the first t + 1 steps
            np.testing.assert_allclose(state.log_likelihood, prefix, rtol=1e-10)
            np.testing.assert_allclose(state.predicted,
                                       np.asarray(filtered[t]) @ np.asarray(model.transition_matrix),
                                       rtol=1e-10, atol=1e-12)
        assert int(state.count) == 12
        np.testing.assert_allclose(state.log_likelihood, log_lik, rtol=1e-10)


def test_filter_step_compiles_once_for_a_stream():
    rng = np.random.default_rng(1)
    model = families.random_hmm(rng, families.CATEGORICAL, 4, dtype=np.float32)
    symbols = rng.integers(0, families.CATEGORICAL.event_size, size=20)
    state = online.filter_init(model)
    state = online.filter_step(model, state, jnp.asarray(symbols[0]))  # warm the cache
    with recording_jax_events() as events:
        for s in symbols[1:]:
            state = online.filter_step(model, state, jnp.asarray(s))
        jax.block_until_ready(state)
    assert compilations_of(events, "_model_filter_step") == 0


def test_filter_update_nan_row_is_nan_and_impossible_row_is_minus_inf():
    state = online.FilterState(jnp.array([0.5, 0.5]), jnp.array([0.5, 0.5]), jnp.zeros(()),
                               jnp.zeros((), jnp.int32))
    A = jnp.array([[0.9, 0.1], [0.2, 0.8]])
    nan_state = online.filter_update(A, state, jnp.array([np.nan, 0.0]))
    assert np.isnan(float(nan_state.log_likelihood)) and np.all(np.isnan(nan_state.filtered))
    impossible = online.filter_update(A, state, jnp.array([-np.inf, -np.inf]))
    assert float(impossible.log_likelihood) == -np.inf
    np.testing.assert_allclose(impossible.filtered, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"log_likelihoods must have shape \(2,\)"):
        online.filter_update(A, state, jnp.zeros(3))


def test_filter_step_rejects_a_sequence_instead_of_one_observation():
    model = families.random_hmm(np.random.default_rng(2), families.CATEGORICAL, 2, np.float32)
    with pytest.raises(ValueError, match="observation must be one step"):
        online.filter_step(model, online.filter_init(model), jnp.array([0, 1]))


@families.parametrize_families(families=families.REPRESENTATIVE)
def test_predictive_log_density_is_the_ratio_of_likelihoods(family):
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        model = families.random_hmm(rng, family, 3)
        x = jnp.asarray(families.observations(rng, family, (9,)))
        candidates = jnp.asarray(families.observations(rng, family, (4,)))
        got = online.predictive_log_density(model, x[:8], candidates)
        base = hmm.log_likelihood(model, x[:8])
        want = [hmm.log_likelihood(model, jnp.concatenate([x[:8], c[None]])) - base
                for c in candidates]
        np.testing.assert_allclose(got, want, rtol=1e-10)
        # with padding: the same prefix, padded to 9 steps with length 8
        padded = online.predictive_log_density(model, x, candidates, length=8)
        np.testing.assert_allclose(padded, want, rtol=1e-10)


def test_categorical_predictive_distribution_sums_to_one():
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        model = families.random_hmm(rng, families.CATEGORICAL, 3)
        x = jnp.asarray(families.observations(rng, families.CATEGORICAL, (7,)))
        symbols = jnp.arange(families.CATEGORICAL.event_size)
        total = np.exp(np.asarray(online.predictive_log_density(model, x, symbols))).sum()
        np.testing.assert_allclose(total, 1.0, rtol=1e-12)
        np.testing.assert_allclose(np.sum(online.next_state_probs(model, x)), 1.0, rtol=1e-12)


def test_stationary_distribution_is_the_left_eigenvector_of_eigenvalue_one():
    rng = np.random.default_rng(5)
    A = rng.dirichlet(np.ones(5), size=5)
    with jax.enable_x64(True):
        got = np.asarray(online.stationary_distribution(jnp.asarray(A)))
    values, vectors = np.linalg.eig(A.T)
    want = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    np.testing.assert_allclose(got, want / want.sum(), rtol=1e-10)
    np.testing.assert_allclose(got @ A, got, rtol=1e-10)


def _path_frequencies(paths):
    counts = collections.Counter(map(tuple, np.asarray(paths).tolist()))
    return counts, len(paths)


@pytest.mark.parametrize("length", [None, 3])
def test_posterior_paths_follow_the_brute_force_posterior(length):
    rng = np.random.default_rng(6)
    num_steps, num_samples = 5, 20_000
    with jax.enable_x64(True):
        model = families.random_hmm(rng, families.CATEGORICAL, 3, concentration=2.0)
        x = jnp.asarray(families.observations(rng, families.CATEGORICAL, (num_steps,)))
        keys = jax.random.split(jax.random.key(7), num_samples)
        paths = jax.vmap(lambda k: posterior_sampling.sample_posterior(k, model, x, length))(keys)
        used = num_steps if length is None else length
        lls = model.emissions.log_likelihoods(x[:used])
        log_evidence, *_ = families.brute_force(model.initial_probs, model.transition_matrix, lls)
    paths = np.asarray(paths)
    assert np.all(paths[:, used:] == -1) and np.all(paths[:, :used] >= 0)
    counts, total = _path_frequencies(paths[:, :used])
    pi, A, ll = (np.asarray(a) for a in (model.initial_probs, model.transition_matrix, lls))
    for path in np.ndindex(*(3,) * used):
        p = np.exp(np.log(pi[path[0]]) + sum(ll[t, s] for t, s in enumerate(path))
                   + sum(np.log(A[a, b]) for a, b in zip(path[:-1], path[1:])) - log_evidence)
        assert abs(counts.get(path, 0) / total - p) <= 5 * np.sqrt(p * (1 - p) / total) + 1e-3


def test_posterior_sampling_is_deterministic_per_key_and_checks_filtered():
    model = families.random_hmm(np.random.default_rng(8), families.CATEGORICAL, 2, np.float32)
    x = jnp.array([0, 1, 1, 0])
    a = posterior_sampling.sample_posterior(jax.random.key(1), model, x)
    b = posterior_sampling.sample_posterior(jax.random.key(1), model, x)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="filtered must have the shape"):
        posterior_sampling.sample_posterior_states(
            jax.random.key(0), model.initial_probs, model.transition_matrix, jnp.zeros((4, 2)),
            filtered=jnp.zeros((3, 2)))
