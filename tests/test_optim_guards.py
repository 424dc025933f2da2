"""clip, zero_nans and apply_if_finite(max_consecutive_errors=): against NumPy and against
optax.clip / zero_nans / apply_if_finite on the same inputs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

from _optimizers import np_momentum


def test_clip_is_elementwise_and_matches_numpy_and_optax():
    rng = np.random.default_rng(0)
    updates = {"a": jnp.asarray(3 * rng.standard_normal((3, 4)), jnp.float32),
               "b": jnp.asarray([np.nan, -5.0, 0.2], jnp.float32)}
    transform = optim.clip(0.5)
    for update in (transform.update, jax.jit(transform.update)):
        out, _ = update(updates, transform.init(updates))
        for name in ("a", "b"):
            np.testing.assert_array_equal(out[name], np.clip(np.asarray(updates[name]), -0.5, 0.5))
    optax = pytest.importorskip("optax")
    theirs, _ = optax.clip(0.5).update(updates, optax.clip(0.5).init(updates))
    jax.tree.map(np.testing.assert_array_equal, out, theirs)
    with pytest.raises(ValueError, match="clip: max_delta must be > 0"):
        optim.clip(0.0)


def test_zero_nans_replaces_nans_only_and_records_them_per_leaf():
    updates = {"a": jnp.asarray([1.0, np.nan, np.inf]), "b": jnp.asarray([2.0, -3.0])}
    transform = optim.zero_nans()
    state = transform.init(updates)
    assert not any(bool(x) for x in jax.tree.leaves(state))
    for update in (transform.update, jax.jit(transform.update)):
        out, new_state = update(updates, state)
        np.testing.assert_array_equal(out["a"], [1.0, 0.0, np.inf])
        np.testing.assert_array_equal(out["b"], [2.0, -3.0])
        assert bool(new_state.found_nan["a"]) and not bool(new_state.found_nan["b"])
    optax = pytest.importorskip("optax")
    theirs, their_state = optax.zero_nans().update(updates, optax.zero_nans().init(updates))
    jax.tree.map(np.testing.assert_array_equal, out, theirs)
    jax.tree.map(np.testing.assert_array_equal, new_state.found_nan, their_state.found_nan)


# a run of three non-finite steps, a finite one, then two more non-finite ones
PATTERN = [True, False, False, False, True, False, False, True]


def numpy_rule(gs, max_consecutive_errors):
    """optax's rule: apply when finite or consecutive > m; the inner state moves only then.
    Returns which steps are applied and (applied, consecutive, total) after each step."""
    applied, consecutive, total, out = [], 0, 0, []
    for g in gs:
        finite = bool(np.all(np.isfinite(g)))
        consecutive = 0 if finite else consecutive + 1
        total += not finite
        apply = finite or (max_consecutive_errors is not None
                           and consecutive > max_consecutive_errors)
        applied.append(apply)
        out.append((apply, consecutive, total))
    return applied, out


@pytest.mark.parametrize("max_consecutive_errors", [None, 0, 2])
def test_apply_if_finite_max_consecutive_errors_follows_optax_rule(max_consecutive_errors):
    rng = np.random.default_rng(1)
    gs = rng.standard_normal((len(PATTERN), 3))
    for t, finite in enumerate(PATTERN):
        if not finite:
            gs[t, 1] = np.inf if t % 2 else np.nan
    p0 = np.linspace(-1.0, 1.0, 3)
    guarded = optim.apply_if_finite(optim.momentum(0.1), max_consecutive_errors)
    applied, counters = numpy_rule(gs, max_consecutive_errors)
    update = jax.jit(guarded.update)
    params = {"p": jnp.asarray(p0, jnp.float32)}
    state = guarded.init(params)
    for t, g in enumerate(gs):
        updates, state = update({"p": jnp.asarray(g, jnp.float32)}, state, params)
        apply, consecutive, total = counters[t]
        assert int(state.consecutive_notfinite_count) == consecutive
        assert int(state.notfinite_count) == total
        assert bool(state.last_finite) == PATTERN[t]
        if not apply:
            np.testing.assert_array_equal(updates["p"], 0.0)
        params = optim.apply_updates(params, updates)
    # the applied steps only, by the NumPy momentum (non-finite applied ones make it non-finite)
    kept = gs[np.asarray(applied)]
    expected = np_momentum(p0, kept, lambda t: 0.1)[-1] if len(kept) else p0
    np.testing.assert_allclose(params["p"], expected, rtol=1e-6)
    if max_consecutive_errors is not None:
        optax = pytest.importorskip("optax")
        theirs = optax.apply_if_finite(optax.sgd(0.1, momentum=0.9), max_consecutive_errors)
        their_params = {"p": jnp.asarray(p0, jnp.float32)}
        their_state = theirs.init(their_params)
        for g in gs:
            u, their_state = theirs.update({"p": jnp.asarray(g, jnp.float32)}, their_state)
            their_params = optax.apply_updates(their_params, u)
        np.testing.assert_allclose(params["p"], their_params["p"], rtol=1e-6)
        assert int(their_state.notfinite_count) == int(state.consecutive_notfinite_count)
        assert int(their_state.total_notfinite) == int(state.notfinite_count)


def test_apply_if_finite_bad_input():
    with pytest.raises(ValueError, match="max_consecutive_errors must be an int >= 0"):
        optim.apply_if_finite(optim.sgd(0.1), -1)
    with pytest.raises(TypeError, match="max_consecutive_errors must be an int"):
        optim.apply_if_finite(optim.sgd(0.1), 2.5)
    guarded = optim.apply_if_finite(optim.sgd(0.1))
    with pytest.raises(TypeError, match="state must be an ApplyIfFiniteState"):
        guarded.update({"w": jnp.ones(2)}, optim.EmptyState())


def test_a_guarded_train_step_copies_no_array():
    """The inner step runs under a conditional whose skipping branch passes its operands
    through, so a donated step that forms its gradients in the same program keeps Adam's
    moments in place (computing the update always and selecting copies them every step)."""
    size = 1000
    params = {"a": jnp.ones(size, jnp.float32), "b": jnp.ones(size, jnp.float32)}
    guarded = optim.apply_if_finite(optim.adam(1e-3), max_consecutive_errors=2)

    def step(params, state, x):
        grads = jax.grad(lambda p: sum(jnp.sum(jnp.sin(v) * x) for v in p.values()))(params)
        updates, state = guarded.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
        params, guarded.init(params), jnp.ones(size, jnp.float32)).compile()
    copies = [line for line in compiled.as_text().splitlines()
              if " copy(" in line and f"[{size}]" in line.split("copy(")[0]]
    assert copies == []
