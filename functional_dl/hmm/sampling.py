"""Ancestral sampling of one HMM sequence with ``lax.scan``.

``z_1 ~ Cat(π)``, ``z_t ~ Cat(A[z_{t−1}])``, ``x_t ~ b_{z_t}``; batches by ``jax.vmap`` over keys.
"""
from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl._types import Array, PRNGKey
from functional_dl.hmm._numerics import safe_log
from functional_dl.hmm.model import HMM, check


@functools.partial(jax.jit, static_argnums=2)
def _sample(key: PRNGKey, model: HMM, num_steps: int) -> tuple[Array, Array]:
    key_initial, key_transitions, key_observations = jax.random.split(key, 3)
    log_transition = safe_log(model.transition_matrix)
    first = jax.random.categorical(key_initial, safe_log(model.initial_probs))

    def _step(state, step_key):
        """Draw z_t from the row of A selected by z_{t−1}."""
        following = jax.random.categorical(step_key, log_transition[state])
        return following, following

    _, rest = lax.scan(_step, first, jax.random.split(key_transitions, num_steps - 1))
    states = jnp.concatenate([first[None], rest])
    return states, model.emissions.sample(key_observations, states)


def sample(key: PRNGKey, model: HMM, num_steps: int) -> tuple[Array, Array]:
    """``(states, observations)`` of one sequence of ``num_steps`` steps drawn from ``model``.

    ``states`` has shape ``(num_steps,)``; ``observations`` ``(num_steps,) + event_shape``.
    The same key gives the same sequence, jitted or not.  ``num_steps`` is static (a new value
    compiles once more).
    """
    if key is None:
        raise ValueError("key: a PRNG key is needed to sample; pass key=jax.random.key(0)")
    check(model)
    try:
        num_steps = operator.index(num_steps)
    except TypeError:
        raise TypeError(f"num_steps must be an int, got {num_steps!r}") from None
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return _sample(key, model, num_steps)
