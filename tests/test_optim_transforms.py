"""chain, apply_updates and the transforms, against NumPy and against manual composition."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim


def random_tree(seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(scale * rng.standard_normal((3, 4)), jnp.float32),
            "layers": [jnp.asarray(scale * rng.standard_normal(5), jnp.float32),
                       (jnp.asarray(scale * rng.standard_normal((2, 2)), jnp.float32),)]}


def to_numpy(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def assert_trees_close(a, b, rtol=1e-6):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(to_numpy(a), to_numpy(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(np.abs(y).max(), 1e-30))


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_chain_equals_manual_composition(jitted):
    members = [optim.clip_by_global_norm(2.0), optim.add_decayed_weights(0.1),
               optim.momentum(0.05, nesterov=True)]
    chained = optim.chain(*members)
    params = random_tree(0)
    state = chained.init(params)
    manual_states = [m.init(params) for m in members]
    assert isinstance(state, tuple) and len(state) == 3
    update = jax.jit(chained.update) if jitted else chained.update
    for step in range(5):
        grads = random_tree(10 + step, scale=3.0)
        updates, state = update(grads, state, params)
        manual = grads
        for k, member in enumerate(members):
            manual, manual_states[k] = member.update(manual, manual_states[k], params)
        assert_trees_close(updates, manual)
        for s, m in zip(state, manual_states):
            assert_trees_close(s, m)
        params = optim.apply_updates(params, updates)


def test_empty_chain_is_identity_and_adamw_is_decoupled_decay_chain():
    params, grads = random_tree(1), random_tree(2)
    identity = optim.chain()
    updates, state = identity.update(grads, identity.init(params), params)
    assert state == () and updates is grads
    # adamw(η, λ) = −η (adam direction + λ θ) = chain(adam(1), scale(−1), decay(λ), scale(−η))
    adamw = optim.adamw(0.01, weight_decay=0.3)
    composed = optim.chain(optim.adam(1.0), optim.scale(-1.0), optim.add_decayed_weights(0.3),
                           optim.scale(-0.01))
    s1, s2 = adamw.init(params), composed.init(params)
    for step in range(4):
        g = random_tree(20 + step)
        u1, s1 = adamw.update(g, s1, params)
        u2, s2 = composed.update(g, s2, params)
        assert_trees_close(u1, u2, rtol=1e-5)
        params = optim.apply_updates(params, u1)


@pytest.mark.parametrize("scale", [0.0, 0.1, 10.0])
def test_clip_by_global_norm_matches_numpy(scale):
    grads = random_tree(3, scale)
    max_norm = 1.5
    leaves = to_numpy(grads)
    norm = np.sqrt(sum(np.sum(x ** 2) for x in leaves))
    factor = 1.0 if norm <= max_norm else max_norm / norm
    clip = optim.clip_by_global_norm(max_norm)
    for update in (clip.update, jax.jit(clip.update)):
        clipped, _ = update(grads, clip.init(grads))
        for got, leaf in zip(to_numpy(clipped), leaves):
            np.testing.assert_allclose(got, leaf * factor, rtol=1e-6)
        clipped_norm = np.sqrt(sum(np.sum(x ** 2) for x in to_numpy(clipped)))
        assert clipped_norm <= max_norm * (1 + 1e-6)


def test_scale_and_scale_by_schedule_match_numpy():
    grads = random_tree(4)
    scaled, _ = optim.scale(-2.5).update(grads, optim.EmptyState())
    for got, leaf in zip(to_numpy(scaled), to_numpy(grads)):
        np.testing.assert_allclose(got, -2.5 * leaf, rtol=1e-7)
    by_schedule = optim.scale_by_schedule(lambda t: 0.5 ** t)
    state = by_schedule.init(grads)
    update = jax.jit(by_schedule.update)
    for t in range(6):
        out, state = update(grads, state)
        for got, leaf in zip(to_numpy(out), to_numpy(grads)):
            np.testing.assert_allclose(got, 0.5 ** t * leaf, rtol=1e-6)
    assert int(state.count) == 6 and state.count.dtype == jnp.int32


@pytest.mark.parametrize("mask", [None, {"w": True, "layers": False},
                                  lambda p: jax.tree_util.tree_map(lambda x: x.ndim == 2, p)],
                         ids=["none", "prefix_tree", "function"])
def test_add_decayed_weights_matches_numpy(mask):
    params, grads = random_tree(5), random_tree(6)
    decayed_leaf = {None: [True, True, True], "prefix_tree": [False, False, True],
                    "function": [False, True, True]}
    key = None if mask is None else ("prefix_tree" if isinstance(mask, dict) else "function")
    transform = optim.add_decayed_weights(0.2, mask=mask)
    out, _ = jax.jit(transform.update)(grads, transform.init(params), params)
    # leaf order: layers[0] (5,), layers[1][0] (2, 2), w (3, 4)
    for got, g, p, on in zip(to_numpy(out), to_numpy(grads), to_numpy(params),
                             decayed_leaf[key]):
        np.testing.assert_allclose(got, g + 0.2 * p * on, rtol=1e-6)


def test_add_decayed_weights_with_bool_array_mask():
    params, grads = {"w": jnp.ones(4)}, {"w": jnp.zeros(4)}
    transform = optim.add_decayed_weights(0.5, mask={"w": jnp.array([True, False, True, False])})
    out, _ = transform.update(grads, transform.init(params), params)
    np.testing.assert_array_equal(np.asarray(out["w"]), [0.5, 0.0, 0.5, 0.0])


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_apply_if_finite_skips_non_finite_steps_and_counts_them(jitted):
    inner = optim.adam(0.05)
    guarded = optim.apply_if_finite(inner)
    grads = [random_tree(30 + t) for t in range(10)]
    bad_steps = {3: np.nan, 7: np.inf}
    for t, value in bad_steps.items():
        grads[t]["layers"][0] = grads[t]["layers"][0].at[2].set(value)
    update = jax.jit(guarded.update) if jitted else guarded.update
    params = reference = random_tree(40)
    state, reference_state = guarded.init(params), inner.init(reference)
    for t, g in enumerate(grads):
        before = params
        updates, state = update(g, state, params)
        params = optim.apply_updates(params, updates)
        assert bool(state.last_finite) == (t not in bad_steps)
        if t in bad_steps:
            assert_trees_close(params, before, rtol=0)
        else:  # the inner optimizer run on the finite steps only
            u, reference_state = inner.update(g, reference_state, reference)
            reference = optim.apply_updates(reference, u)
        assert_trees_close(params, reference, rtol=1e-6)
        assert_trees_close(state.inner_state, reference_state, rtol=1e-6)
    assert int(state.notfinite_count) == 2 and state.notfinite_count.dtype == jnp.int32
    assert int(state.inner_state[0].count) == 8  # adam's ScaleByAdamState


def test_apply_updates_keeps_parameter_dtypes_and_checks_structure():
    params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(3, jnp.float16)}
    # 1 + 2⁻⁸ + 2⁻¹⁶ lies just above the midpoint of the bfloat16 neighbours 1 and 1 + 2⁻⁷:
    # added in float32 and rounded once it becomes 1 + 2⁻⁷; rounding the update to
    # bfloat16 first (2⁻⁸) would leave a tie that rounds to 1
    updates = {"a": jnp.full(3, 2.0 ** -8 + 2.0 ** -16, jnp.float32),
               "b": jnp.full(3, 0.5, jnp.float16)}
    new = optim.apply_updates(params, updates)
    assert new["a"].dtype == jnp.bfloat16 and new["b"].dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(new["a"], np.float32), 1 + 2.0 ** -7)
    np.testing.assert_array_equal(np.asarray(new["b"], np.float32), 1.5)
    with pytest.raises(ValueError, match="tree structure of updates differs from that of params"):
        optim.apply_updates(params, {"a": jnp.ones(3)})


def test_transform_bad_input():
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_by_global_norm(0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.add_decayed_weights(-0.1)
    with pytest.raises(ValueError, match="factor must be a scalar"):
        optim.scale(jnp.ones(2))
    with pytest.raises(ValueError, match="factor must be finite"):
        optim.scale(float("nan"))
    with pytest.raises(ValueError, match="weight_decay must be finite"):
        optim.add_decayed_weights(float("inf"))
    with pytest.raises(TypeError, match="schedule must be a function"):
        optim.scale_by_schedule(0.1)
    with pytest.raises(TypeError, match=re.escape("chain: argument 1 must be an Optimizer")):
        optim.chain(optim.sgd(0.1), 0.1)
    with pytest.raises(TypeError, match="apply_if_finite: optimizer must be an Optimizer"):
        optim.apply_if_finite(optim.sgd)
    chained = optim.chain(optim.sgd(0.1), optim.scale(2.0))
    with pytest.raises(ValueError, match="state must be a tuple of 2 member states"):
        chained.update({"w": jnp.ones(2)}, optim.sgd(0.1).init({"w": jnp.ones(2)}))
    decay = optim.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="params are required"):
        decay.update({"w": jnp.ones(2)}, decay.init({"w": jnp.ones(2)}))
    clip = optim.clip_by_global_norm(1.0)
    with pytest.raises(TypeError, match=re.escape("updates['w'] has dtype int32")):
        clip.update({"w": jnp.ones(2, jnp.int32)}, clip.init(None))


def test_clip_by_global_norm_neither_overflows_nor_underflows_and_differentiates_at_zero():
    """Squares of 1e20 overflow float32 and squares of 1e-30 underflow; the oracle is the
    exact norm in float64."""
    clip = optim.clip_by_global_norm(1.0)
    for values, max_norm in (([1e20, 0.0, 3e19], 1.0), ([5e-30, 0.0, -1e-30], 1e-30)):
        grads = {"a": jnp.asarray(values[:2], jnp.float32), "b": jnp.asarray(values[2:], jnp.float32)}
        clip = optim.clip_by_global_norm(max_norm)
        exact = np.asarray(values, np.float64)
        expected = exact * min(1.0, max_norm / np.linalg.norm(exact))
        for update in (clip.update, jax.jit(clip.update)):
            clipped, _ = update(grads, clip.init(grads))
            got = np.concatenate([np.asarray(clipped["a"]), np.asarray(clipped["b"])])
            np.testing.assert_allclose(got, expected, rtol=1e-6)
    # a non-finite gradient still gives a non-finite update (for apply_if_finite to catch)
    clipped, _ = clip.update({"a": jnp.asarray([jnp.inf, 1.0])}, clip.init(None))
    assert not np.all(np.isfinite(np.asarray(clipped["a"])))
    # the gradient through the clip at u = 0 is the identity (factor 1), not NaN
    through = jax.grad(lambda u: optim.clip_by_global_norm(1.0).update(
        {"u": u}, optim.EmptyState())[0]["u"].sum())(jnp.zeros(3))
    np.testing.assert_array_equal(through, np.ones(3))
