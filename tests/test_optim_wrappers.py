"""masked, partition, set_to_zero and freeze: against NumPy float64 transcriptions of the
per-leaf optimizers (tests/_optimizers.py) and against optax's masked / multi_transform /
freeze on the same inputs."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

from _optimizers import np_adam, np_momentum, np_sgd



@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield

NUM_STEPS = 6


def problem(dtype=jnp.float64):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((3, 2)), dtype),
              "b": jnp.asarray(rng.standard_normal(2), dtype),
              "head": {"v": jnp.asarray(rng.standard_normal(4), dtype)}}
    grads = [jax.tree.map(lambda p, k=k: jnp.asarray(
        np.random.default_rng(10 + k).standard_normal(p.shape), dtype), params)
        for k in range(NUM_STEPS)]
    return params, grads


def run(optimizer, params, grads, jitted=True, apply_updates=optim.apply_updates):
    """(the parameters after each step, the updates of each step, the final state)."""
    update = jax.jit(optimizer.update) if jitted else optimizer.update
    state = optimizer.init(params)
    trajectory, all_updates = [], []
    for g in grads:
        updates, state = update(g, state, params)
        params = apply_updates(params, updates)
        trajectory.append(params)
        all_updates.append(updates)
    return trajectory, all_updates, state


def leaf_trajectory(trajectory, name):
    path = name.split(".")
    def get(tree):
        for key in path:
            tree = tree[key]
        return np.asarray(tree)
    return np.stack([get(p) for p in trajectory])


def grads_of(grads, name):
    return leaf_trajectory(grads, name)


def constant(rate):
    return lambda t: rate


# ------------------------------------------------------------------------------- masked


@pytest.mark.parametrize("mask", [{"w": True, "b": False, "head": True},
                                  lambda p: jax.tree.map(lambda x: x.ndim > 1 or x.size == 4, p)],
                         ids=["prefix_tree", "function"])
def test_masked_adam_transforms_the_masked_in_leaves_and_passes_the_others(mask):
    params, grads = problem()
    trajectory, updates, state = run(optim.masked(optim.adam(0.05), mask), params, grads)
    for name in ("w", "head.v"):   # masked in: adam
        np.testing.assert_allclose(leaf_trajectory(trajectory, name),
                                   np_adam(np.asarray(leaf_trajectory([params], name)[0]),
                                           grads_of(grads, name), constant(0.05)),
                                   rtol=1e-12)
    # masked out: the gradient itself is the update
    np.testing.assert_array_equal(leaf_trajectory(updates, "b"), grads_of(grads, "b"))
    # the inner state holds the masked-in leaves only
    adam_state = state.inner_state[0]
    assert isinstance(adam_state.mu["b"], optim.MaskedNode)
    assert {leaf.shape for leaf in jax.tree.leaves(adam_state.mu)} == {(3, 2), (4,)}
    assert len(jax.tree.leaves(state)) == 1 + 2 + 2    # count, mu and nu of w and head.v


def test_masked_matches_optax_and_forwards_extra_args():
    optax = pytest.importorskip("optax")
    params, grads = problem()
    mask = {"w": False, "b": True, "head": True}
    ours, our_updates, _ = run(optim.masked(optim.adamw(0.05, weight_decay=0.1), mask),
                               params, grads)
    theirs, their_updates, _ = run(optax.masked(optax.adamw(0.05, weight_decay=0.1), mask),
                                   params, grads, apply_updates=optax.apply_updates)
    for a, b in zip(our_updates, their_updates):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-12), a, b)
    # an optax optimizer inside our masked sees the same MaskedNode-holed trees
    _, mixed_updates, _ = run(optim.masked(optax.adamw(0.05, weight_decay=0.1), mask),
                              params, grads)
    for a, b in zip(mixed_updates, their_updates):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-12), a, b)
    seen = {}

    def inner_update(updates, state, params=None, **extra_args):
        seen.update(extra_args)
        return updates, state
    spy = optim.Optimizer(lambda p: optim.EmptyState(), inner_update)
    wrapped = optim.masked(spy, mask)
    wrapped.update(grads[0], wrapped.init(params), params, value=jnp.asarray(2.0))
    assert set(seen) == {"value"}


def test_masked_everything_out_is_the_identity_and_keeps_no_state():
    params, grads = problem()
    _, updates, state = run(optim.masked(optim.momentum(0.1), False), params, grads)
    assert jax.tree.leaves(state) == []
    for u, g in zip(updates, grads):
        jax.tree.map(np.testing.assert_array_equal, u, g)


# ------------------------------------------------------------------- partition and freeze


LABELS = {"w": "adam", "b": "frozen", "head": {"v": "momentum"}}


def partitioned():
    return optim.partition({"adam": optim.adam(0.05), "momentum": optim.momentum(0.1, 0.8),
                            "frozen": optim.set_to_zero()}, LABELS)


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_partition_gives_each_group_its_optimizer(jitted):
    params, grads = problem()
    trajectory, _, state = run(partitioned(), params, grads, jitted)
    p0 = {name: leaf_trajectory([params], name)[0] for name in ("w", "b", "head.v")}
    np.testing.assert_allclose(leaf_trajectory(trajectory, "w"),
                               np_adam(p0["w"], grads_of(grads, "w"), constant(0.05)),
                               rtol=1e-12)
    np.testing.assert_allclose(leaf_trajectory(trajectory, "head.v"),
                               np_momentum(p0["head.v"], grads_of(grads, "head.v"),
                                           constant(0.1), beta=0.8), rtol=1e-12)
    np.testing.assert_array_equal(leaf_trajectory(trajectory, "b"),
                                  np.stack([p0["b"]] * NUM_STEPS))
    # each group's state holds its own leaves only
    shapes = {label: sorted(leaf.shape for leaf in jax.tree.leaves(s))
              for label, s in state.inner_states.items()}
    assert shapes == {"adam": [(), (3, 2), (3, 2)], "momentum": [(4,)], "frozen": []}


def test_partition_with_a_label_function_and_a_prefix_matches_optax():
    optax = pytest.importorskip("optax")
    params, grads = problem()
    label_fn = lambda p: {"w": "sgd", "b": "adam", "head": "adam"}   # a prefix of params
    ours, _, _ = run(optim.partition({"sgd": optim.sgd(0.1), "adam": optim.adam(0.05)},
                                     label_fn), params, grads)
    theirs, _, _ = run(optax.multi_transform({"sgd": optax.sgd(0.1), "adam": optax.adam(0.05)},
                                             label_fn), params, grads,
                       apply_updates=optax.apply_updates)
    for a, b in zip(ours, theirs):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-12), a, b)
    np.testing.assert_allclose(leaf_trajectory(ours, "w"),
                               np_sgd(leaf_trajectory([params], "w")[0], grads_of(grads, "w"),
                                      constant(0.1)), rtol=1e-12)


def test_partition_bad_labels_name_the_labels_and_the_params():
    params, grads = problem()
    transforms = {"adam": optim.adam(0.05), "frozen": optim.set_to_zero()}
    wrong_structure = optim.partition(transforms, {"w": "adam", "b": "frozen"})
    with pytest.raises(ValueError, match="labels must have the structure of params") as err:
        wrong_structure.init(params)
    assert "labels: " in str(err.value) and "params: " in str(err.value)
    unknown = optim.partition(transforms, {"w": "adam", "b": "frozen", "head": "sgd"})
    with pytest.raises(ValueError, match=re.escape(
            "labels['head']['v'] (for params['head']['v']) is 'sgd', which has no transform; "
            "transforms has labels [\"'adam'\", \"'frozen'\"]")):
        unknown.init(params)
    with pytest.raises(TypeError, match=r"partition: transforms\['adam'\] must be an Optimizer"):
        optim.partition({"adam": optim.adam}, LABELS)
    with pytest.raises(TypeError, match="transforms must be a non-empty dict"):
        optim.partition({}, LABELS)
    good = partitioned()
    with pytest.raises(TypeError, match="state must be the PartitionState"):
        good.update(grads[0], optim.adam(0.1).init(params), params)


def test_masked_bad_masks():
    params, _ = problem()
    with pytest.raises(ValueError, match="masked: mask must be a pytree of bools"):
        optim.masked(optim.adam(0.1), {"w": True}).init(params)
    with pytest.raises(TypeError, match=re.escape("mask leaf mask['w'] must be a Python bool")):
        optim.masked(optim.adam(0.1), {"w": jnp.array([True, False]), "b": True,
                                       "head": True}).init(params)
    with pytest.raises(TypeError, match="masked: inner must be an Optimizer"):
        optim.masked(optim.adam, True)


def test_freeze_zeroes_the_frozen_leaves_and_matches_optax():
    optax = pytest.importorskip("optax")
    params, grads = problem()
    mask = {"w": True, "b": False, "head": True}
    ours, our_updates, state = run(optim.chain(optim.sgd(0.1), optim.freeze(mask)),
                                   params, grads)
    theirs, _, _ = run(optax.chain(optax.sgd(0.1), optax.freeze(mask)), params, grads,
                       apply_updates=optax.apply_updates)
    for a, b in zip(ours, theirs):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-12), a, b)
    for u, g in zip(our_updates, grads):
        np.testing.assert_array_equal(u["w"], np.zeros((3, 2)))
        np.testing.assert_array_equal(u["head"]["v"], np.zeros(4))
        np.testing.assert_allclose(u["b"], -0.1 * np.asarray(g["b"]), rtol=1e-15)
    zeros, _ = optim.set_to_zero().update(grads[0], optim.EmptyState())
    jax.tree.map(lambda z: np.testing.assert_array_equal(z, 0.0), zeros)
