"""Ancestral sampling of one HMM sequence with ``lax.scan``.

``z_1 ~ Cat(π)``, ``z_t ~ Cat(A[z_{t−1}])``, ``x_t ~ b_{z_t}``; batches by ``jax.vmap`` over keys.
Every draw is inverse-CDF sampling from one uniform: all uniforms come from a single call to
the random generator before the loop, so the loop body is a row lookup and a comparison
(``inverse_cdf``), which compiles and runs several times faster than a random draw per step.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm._numerics import inverse_cdf
from functional_dl.hmm.model import HMM, check


@functools.partial(jax.jit, static_argnums=2)
def _sample(key: PRNGKey, model: HMM, num_steps: int) -> tuple[Array, Array]:
    key_states, key_observations = jax.random.split(key)
    dtype = jnp.result_type(model.transition_matrix.dtype, jnp.float32)
    uniforms = jax.random.uniform(key_states, (num_steps,), dtype)
    first = inverse_cdf(jnp.cumsum(model.initial_probs.astype(dtype)), uniforms[0])
    cumulative_rows = jnp.cumsum(model.transition_matrix.astype(dtype), axis=1)

    def _step(state, uniform):
        """Draw z_t from the row of A selected by z_{t−1}."""
        following = inverse_cdf(cumulative_rows[state], uniform)
        return following, following

    _, rest = lax.scan(_step, first, uniforms[1:])
    states = jnp.concatenate([first[None], rest])
    return states, model.emissions.sample(key_observations, states)


def sample(key: PRNGKey, model: HMM, num_steps: int) -> tuple[Array, Array]:
    """``(states, observations)`` of one sequence of ``num_steps`` steps drawn from ``model``.

    ``states`` has shape ``(num_steps,)``; ``observations`` ``(num_steps,) + event_shape``.
    The same key gives the same sequence, jitted or not.  ``num_steps`` is static (a new value
    compiles once more).
    """
    checks.prng_key("key", key, what="sampling", single=True)
    check(model)
    num_steps = checks.whole_number("num_steps", num_steps, minimum=1)
    return _sample(key, model, num_steps)
