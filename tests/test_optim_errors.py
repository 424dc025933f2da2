"""Bad input: wrong tree structure or shapes, integer/bool leaves, out-of-range options."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from functional_dl import optim

from _optimizers import INSTANCES, instances

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}

STATEFUL = sorted(instances(0.1, stateful_only=True))
ALL = sorted(INSTANCES)


@pytest.mark.parametrize("name", STATEFUL)
@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_grads_with_other_structure_show_both_structures(name, jitted):
    optimizer = instances(0.1)[name]
    state = optimizer.init(PARAMS)
    grads = {"w": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
    update = jax.jit(optimizer.update) if jitted else optimizer.update
    with pytest.raises(ValueError) as err:
        update(grads, state, PARAMS)
    message = str(err.value)
    assert "tree structure of grads" in message
    assert str(jax.tree_util.tree_structure(grads)) in message
    assert str(jax.tree_util.tree_structure(PARAMS)) in message


def test_sgd_checks_grads_against_params():
    optimizer = optim.sgd(0.1)
    with pytest.raises(ValueError, match="tree structure of grads differs from that of params"):
        optimizer.update([jnp.ones(2)], optimizer.init(PARAMS), PARAMS)


@pytest.mark.parametrize("name", ALL)
def test_grads_with_other_leaf_shape_name_the_leaf(name):
    optimizer = instances(0.1)[name]
    grads = {"w": jnp.ones((2, 3)), "b": jnp.zeros(2)}
    with pytest.raises(ValueError, match=re.escape("grads['w'] has shape (2, 3)")):
        optimizer.update(grads, optimizer.init(PARAMS), PARAMS)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad_dtype", [jnp.int32, jnp.bool_, jnp.complex64])
def test_integer_bool_complex_leaves_raise_type_error_naming_the_leaf(name, bad_dtype):
    optimizer = instances(0.1)[name]
    bad_params = {"w": jnp.ones((3, 2)), "steps": jnp.zeros(2, bad_dtype)}
    with pytest.raises(TypeError, match=re.escape("params['steps'] has dtype")):
        optimizer.init(bad_params)
    bad_grads = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2, bad_dtype)}
    with pytest.raises(TypeError, match=re.escape("grads['b'] has dtype")):
        optimizer.update(bad_grads, optimizer.init(PARAMS), PARAMS)


CONSTRUCTION_ERRORS = [
    ("sgd", lambda: optim.sgd(-0.1), "learning_rate"),
    ("sgd_array", lambda: optim.sgd(jnp.ones(2)), "learning_rate"),
    ("sgd_nan", lambda: optim.sgd(float("nan")), "learning_rate"),
    ("sgd_inf", lambda: optim.sgd(float("inf")), "learning_rate must be finite"),
    ("momentum_lr", lambda: optim.momentum(-1e-3), "learning_rate"),
    ("momentum_beta_1", lambda: optim.momentum(0.1, beta=1.0), "beta"),
    ("momentum_beta_neg", lambda: optim.momentum(0.1, beta=-0.1), "beta"),
    ("adagrad_lr", lambda: optim.adagrad(-0.1), "learning_rate"),
    ("adagrad_eps", lambda: optim.adagrad(0.1, eps=-1e-10), "eps"),
    ("adagrad_eps0", lambda: optim.adagrad(0.1, eps=0.0), "eps"),
    ("adagrad_init", lambda: optim.adagrad(0.1, initial_accumulator_value=-1.0),
     "initial_accumulator_value"),
    ("rmsprop_lr", lambda: optim.rmsprop(-0.1), "learning_rate"),
    ("rmsprop_decay_1", lambda: optim.rmsprop(0.1, decay=1.0), "decay"),
    ("rmsprop_decay_neg", lambda: optim.rmsprop(0.1, decay=-0.5), "decay"),
    ("rmsprop_eps", lambda: optim.rmsprop(0.1, eps=-1e-8), "eps"),
    ("rmsprop_eps0", lambda: optim.rmsprop(0.1, eps=0.0), "eps"),
    ("adam_lr", lambda: optim.adam(-1e-3), "learning_rate"),
    ("adam_b1", lambda: optim.adam(1e-3, b1=1.0), "b1"),
    ("adam_b1_neg", lambda: optim.adam(1e-3, b1=-0.1), "b1"),
    ("adam_b2", lambda: optim.adam(1e-3, b2=1.5), "b2"),
    ("adam_eps", lambda: optim.adam(1e-3, eps=-1e-8), "eps"),
    ("adamw_b2", lambda: optim.adamw(1e-3, b2=1.0), "b2"),
    ("adamw_eps", lambda: optim.adamw(1e-3, eps=-1.0), "eps"),
    ("adamw_wd", lambda: optim.adamw(1e-3, weight_decay=-1e-4), "weight_decay"),
    ("adamw_wd_inf", lambda: optim.adamw(1e-3, weight_decay=float("inf")),
     "weight_decay must be finite"),
    ("adam_lr_inf", lambda: optim.adam(float("inf")), "learning_rate must be finite"),
    ("adamw_lr", lambda: optim.adamw(-1e-3), "learning_rate"),
]


@pytest.mark.parametrize("build,argument", [c[1:] for c in CONSTRUCTION_ERRORS],
                         ids=[c[0] for c in CONSTRUCTION_ERRORS])
def test_out_of_range_options_raise_at_construction(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


def test_boundary_values_are_accepted():
    optim.sgd(0.0)
    optim.momentum(0.1, beta=0.0)
    optim.rmsprop(0.1, decay=0.0)
    optim.adam(0.1, b1=0.0, b2=0.0)
    optim.adagrad(0.1, eps=0.0, initial_accumulator_value=0.1)
    optim.adamw(0.1, weight_decay=0.0)


def test_adamw_needs_params():
    optimizer = optim.adamw(0.1)
    with pytest.raises(ValueError, match="params are required"):
        optimizer.update(PARAMS, optimizer.init(PARAMS))


def test_adamw_mask_errors():
    wrong_structure = optim.adamw(0.1, mask={"w": True, "x": False})
    with pytest.raises(ValueError, match="mask must be a pytree of bools"):
        wrong_structure.update(PARAMS, wrong_structure.init(PARAMS), PARAMS)
    not_bool = optim.adamw(0.1, mask={"w": 1.0, "b": 0.0})
    with pytest.raises(TypeError, match=re.escape("mask leaf mask['b'] must be a bool")):
        not_bool.update(PARAMS, not_bool.init(PARAMS), PARAMS)


@pytest.mark.parametrize("build, match", [
    (lambda: optim.sgd("0.1"), "sgd: learning_rate must be a real number, got str"),
    (lambda: optim.adamw(1e-3, weight_decay=None), "adamw: weight_decay must be a real number"),
    (lambda: optim.schedules.cosine_decay(1.0, "10"), "decay_steps must be an int >= 1, got str"),
    (lambda: optim.schedules.exponential_decay(1.0, None, 0.5), "transition_steps must be an int >= 1, got NoneType"),
])
def test_hyperparameters_of_the_wrong_type_are_named(build, match):
    with pytest.raises(TypeError, match=match):
        build()
