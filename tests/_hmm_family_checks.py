"""Helpers shared by the per-family tests ``tests/test_hmm_families_*.py``.

``concatenated_and_padded`` gives the same sequences in hmmlearn's layout (concatenated
``X`` and ``lengths``) and in this library's (a padded batch and ``lengths``);
``fit_like_hmmlearn`` runs a few Baum–Welch iterations of both from one start;
``check_initialize`` is the contract every family's ``initialize`` meets.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm

LENGTHS = np.array([40, 25, 33])
NUM_ITERATIONS = 5


def concatenated_and_padded(sequences):
    """``(X (ΣT,) + event, lengths, padded (B, T_max) + event)`` (padding repeats row 0)."""
    lengths = np.array([len(s) for s in sequences])
    padded = np.stack([np.concatenate([s, np.repeat(s[:1], lengths.max() - len(s), axis=0)])
                       for s in sequences])
    return np.concatenate(sequences), lengths, padded


def start_model(rng, emissions, num_states):
    """π and A from Dirichlet(2) around given emissions (float64)."""
    return hmm.HMM(jnp.asarray(rng.dirichlet(np.full(num_states, 2.0))),
                   jnp.asarray(rng.dirichlet(np.full(num_states, 2.0), size=num_states)),
                   emissions)


def fit_like_hmmlearn(reference, model, sequences, hyperparameters=None,
                      num_iterations=NUM_ITERATIONS):
    """Fit hmmlearn's ``reference`` (its emission parameters already set, ``init_params=""``)
    and this library's ``model`` for ``num_iterations`` EM steps from the same start; return
    this library's fitted model after checking π and A against hmmlearn's."""
    x, lengths, padded = concatenated_and_padded(sequences)
    reference.startprob_ = np.asarray(model.initial_probs)
    reference.transmat_ = np.asarray(model.transition_matrix)
    reference.fit(x, lengths=lengths)
    assert reference.monitor_.iter == num_iterations
    fitted = hmm.baum_welch(model, jnp.asarray(padded), jnp.asarray(lengths),
                            max_iter=num_iterations, tol=0.0,
                            emission_hyperparameters=hyperparameters)
    np.testing.assert_allclose(fitted.initial_probs, reference.startprob_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fitted.transition_matrix, reference.transmat_, rtol=1e-8,
                               atol=1e-12)
    return fitted


def hmmlearn_options(num_states):
    """The constructor arguments that make hmmlearn start from given parameters and run
    exactly ``NUM_ITERATIONS`` maximum-likelihood EM steps (tol=-inf never stops it early)."""
    return dict(n_components=num_states, n_iter=NUM_ITERATIONS, tol=-np.inf, init_params="",
                startprob_prior=1.0, transmat_prior=1.0, implementation="scaling")


def check_initialize(family, observations, num_states, garbage, **options):
    """``initialize``: K states, passes its own check, reproducible by key, vmappable over
    keys (each slice equal to the single call), different keys give different models, what
    zero-weight (padded) steps hold changes nothing, and bad arguments raise."""
    observations = np.asarray(observations)
    weights = np.ones(len(observations))
    first = family.initialize(jax.random.key(0), observations, weights, num_states, **options)
    assert first.num_states == num_states
    first.check(np.asarray(observations))
    again = family.initialize(jax.random.key(0), observations, weights, num_states, **options)
    other = family.initialize(jax.random.key(1), observations, weights, num_states, **options)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(first), jax.tree.leaves(other)))
    keys = jax.random.split(jax.random.key(2), 3)
    batched = jax.vmap(lambda key: family.initialize(key, observations, weights, num_states,
                                                     **options))(keys)
    single = family.initialize(keys[1], observations, weights, num_states, **options)
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
        np.testing.assert_allclose(a[1], b, rtol=1e-6)
    assert batched.num_free_parameters == single.num_free_parameters  # counts trailing axes
    padded = np.concatenate([observations, np.full_like(observations[:3], garbage[0])])
    padded_weights = np.r_[weights, np.zeros(3)]
    with_padding = family.initialize(jax.random.key(0), padded, padded_weights, num_states,
                                     **options)
    padded[-3:] = garbage[1]
    other_padding = family.initialize(jax.random.key(0), padded, padded_weights, num_states,
                                      **options)
    for a, b in zip(jax.tree.leaves(with_padding), jax.tree.leaves(other_padding), strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="num_states"):
        family.initialize(jax.random.key(0), observations, np.zeros(len(observations)),
                          num_states, **options)
    with pytest.raises(ValueError, match="num_states"):
        family.initialize(jax.random.key(0), observations, weights, 0, **options)
    with pytest.raises(ValueError, match="weights"):
        family.initialize(jax.random.key(0), observations, weights[:-1], num_states, **options)
    return first


def fit_like_dynamax(reference, model, sequences, pseudo_count, hyperparameters,
                     **emission_parameters):
    """``NUM_ITERATIONS`` EM steps of dynamax's ``fit_em`` (``reference`` a dynamax HMM whose
    Dirichlet concentrations are ``1 + pseudo_count``) and of this library's from one start,
    on equal-length sequences; return (ours, dynamax's emission parameters) after checking
    π and A."""
    data = jnp.asarray(np.stack(sequences))
    params, props = reference.initialize(initial_probs=model.initial_probs,
                                         transition_matrix=model.transition_matrix,
                                         **emission_parameters)
    params, _ = reference.fit_em(params, props, data, num_iters=NUM_ITERATIONS, verbose=False)
    fitted = hmm.baum_welch(model, data, max_iter=NUM_ITERATIONS, tol=0.0,
                            pseudo_count=pseudo_count, emission_hyperparameters=hyperparameters)
    np.testing.assert_allclose(fitted.initial_probs, params.initial.probs, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fitted.transition_matrix, params.transitions.transition_matrix,
                               rtol=1e-8, atol=1e-12)
    return fitted, params.emissions


def assert_kmeans_fixed_point(centres, data, rtol=1e-8):
    """Each centre is the mean of the data points nearest to it (one NumPy Lloyd step leaves
    the centres where they are): what k-means converges to."""
    centres, data = np.asarray(centres, np.float64), np.asarray(data, np.float64)
    nearest = np.argmin(((data[:, None, :] - centres[None, :, :]) ** 2).sum(-1), axis=1)
    for index, centre in enumerate(centres):
        members = data[nearest == index]
        assert len(members) > 0, f"centre {index} has no points"
        np.testing.assert_allclose(centre, members.mean(axis=0), rtol=rtol, atol=1e-10)
