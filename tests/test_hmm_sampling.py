"""Sampling: states and, for every family of the registry, observations against the model's
probabilities and moments (within a few standard errors); determinism by key."""
import jax
import jax.numpy as jnp
import numpy as np

from _hmm_families import BY_NAME, parametrize_families, within_standard_errors
from functional_dl import hmm

PI = jnp.array([0.2, 0.5, 0.3])
A = jnp.array([[0.7, 0.3, 0.0], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
K = 3
N, T = 400, 50
KEYS = jax.random.split(jax.random.key(0), N)
sample_batch = jax.jit(jax.vmap(hmm.sample, in_axes=(0, None, None)), static_argnums=2)


@parametrize_families()
def test_observations_match_the_emission_model(family):
    emissions = family.random_emissions(np.random.default_rng(0), K, family.event_size,
                                        np.float32)
    states, x = sample_batch(KEYS, hmm.HMM(PI, A, emissions), T)
    states, x = np.asarray(states), np.asarray(x)
    assert states.shape == (N, T) and x.shape[:2] == (N, T)
    family.check_samples(emissions, states.reshape(-1), x.reshape((N * T,) + x.shape[2:]))


def test_states_match_the_model_and_zero_probabilities_are_never_drawn():
    """Initial states and transitions; with a Categorical of the registry's shapes (the same
    compilation) whose zero entries must never be drawn."""
    probs = jnp.array([[0.6, 0.4, 0.0, 0.0], [0.1, 0.1, 0.8, 0.0], [0.3, 0.3, 0.2, 0.2]])
    emissions = hmm.Categorical(probs)
    assert probs.shape[1] == BY_NAME["categorical"].event_size
    states, x = sample_batch(KEYS, hmm.HMM(PI, A, emissions), T)
    states, x = np.asarray(states), np.asarray(x)
    assert within_standard_errors(np.bincount(states[:, 0], minlength=K), np.asarray(PI), N)
    transitions = np.zeros((K, K))
    np.add.at(transitions, (states[:, :-1], states[:, 1:]), 1)
    for i in range(K):
        assert within_standard_errors(transitions[i], np.asarray(A[i]), transitions[i].sum())
    assert transitions[0, 2] == 0
    BY_NAME["categorical"].check_samples(emissions, states.reshape(-1), x.reshape(-1))


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
