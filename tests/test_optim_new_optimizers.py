"""NAdam, RAdam, Adamax, AdaBelief, Lion, LAMB, Adafactor and the new options: what the
registry's oracle and optax tests (tests/_optimizers.py) do not cover.

Oracles: closed forms of single steps, optax itself (``optax.adafactor`` and
``optax.scale_by_amsgrad``, imported only here and skipped when absent), the sizes the
papers give for the factored state, and the documented ranges of every hyperparameter.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

S = optim.schedules


def run(optimizer, p0, grads):
    """Trajectory (len(grads), *shape) of one leaf, in the dtype of ``p0``."""
    params = jnp.asarray(p0)
    state = optimizer.init(params)
    step = jax.jit(lambda p, s, g: optimizer.update(g, s, p))
    out = []
    for g in grads:
        updates, state = step(params, state, jnp.asarray(g))
        params = optim.apply_updates(params, updates)
        out.append(np.asarray(params))
    return np.stack(out)


# ----------------------------------------------------------------------------- bad input

CONSTRUCTION_ERRORS = [
    ("adam_amsgrad", lambda: optim.adam(0.1, amsgrad=1), TypeError, "amsgrad"),
    ("momentum_dampening_neg", lambda: optim.momentum(0.1, dampening=-0.1), ValueError,
     "dampening"),
    ("momentum_dampening_big", lambda: optim.momentum(0.1, dampening=1.5), ValueError,
     "dampening"),
    ("momentum_dampening_nesterov", lambda: optim.momentum(0.1, nesterov=True, dampening=0.1),
     ValueError, "dampening"),
    ("adagrad_lr_decay", lambda: optim.adagrad(0.1, lr_decay=-0.1), ValueError, "lr_decay"),
    ("adagrad_lr_decay_inf", lambda: optim.adagrad(0.1, lr_decay=float("inf")), ValueError,
     "lr_decay must be finite"),
    ("nadam_lr", lambda: optim.nadam(-1.0), ValueError, "nadam: learning_rate"),
    ("nadam_b1", lambda: optim.nadam(0.1, b1=1.0), ValueError, "b1"),
    ("nadam_b2", lambda: optim.nadam(0.1, b2=-0.5), ValueError, "b2"),
    ("nadam_eps", lambda: optim.nadam(0.1, eps=0.0), ValueError, "eps"),
    ("nadam_eps_root", lambda: optim.nadam(0.1, eps_root=-1.0), ValueError, "eps_root"),
    ("nadam_momentum_decay", lambda: optim.nadam(0.1, momentum_decay=-4e-3), ValueError,
     "momentum_decay"),
    ("nadamw_weight_decay", lambda: optim.nadamw(0.1, weight_decay=-0.1), ValueError,
     "nadamw: weight_decay"),
    ("radam_b2", lambda: optim.radam(0.1, b2=1.0), ValueError, "b2"),
    ("radam_threshold", lambda: optim.radam(0.1, threshold=4.0), ValueError, "threshold"),
    ("radam_eps", lambda: optim.radam(0.1, eps=-1e-8), ValueError, "eps"),
    ("adamax_lr", lambda: optim.adamax(float("nan")), ValueError, "adamax: learning_rate"),
    ("adamax_b1", lambda: optim.adamax(0.1, b1=-0.1), ValueError, "b1"),
    ("adamax_eps", lambda: optim.adamax(0.1, eps=0.0), ValueError, "eps"),
    ("adabelief_eps_root", lambda: optim.adabelief(0.1, eps_root=-1e-16), ValueError,
     "eps_root"),
    ("adabelief_b2", lambda: optim.adabelief(0.1, b2=2.0), ValueError, "b2"),
    ("lion_b1", lambda: optim.lion(0.1, b1=1.5), ValueError, "b1"),
    ("lion_b2", lambda: optim.lion(0.1, b2=-0.1), ValueError, "b2"),
    ("lion_weight_decay", lambda: optim.lion(0.1, weight_decay=-1.0), ValueError,
     "lion: weight_decay"),
    ("lamb_eps", lambda: optim.lamb(0.1, eps=0.0), ValueError, "eps"),
    ("lamb_weight_decay", lambda: optim.lamb(0.1, weight_decay=float("inf")), ValueError,
     "weight_decay must be finite"),
    ("trust_ratio_min_norm", lambda: optim.scale_by_trust_ratio(min_norm=-1.0), ValueError,
     "min_norm"),
    ("trust_ratio_coefficient", lambda: optim.scale_by_trust_ratio(trust_coefficient=0.0),
     ValueError, "trust_coefficient"),
    ("adafactor_lr", lambda: optim.adafactor(-0.1), ValueError, "adafactor: learning_rate"),
    ("adafactor_min_dim", lambda: optim.adafactor(min_dim_size_to_factor=0), ValueError,
     "min_dim_size_to_factor"),
    ("adafactor_min_dim_type", lambda: optim.adafactor(min_dim_size_to_factor=2.5), TypeError,
     "min_dim_size_to_factor"),
    ("adafactor_decay_rate", lambda: optim.adafactor(decay_rate=-0.8), ValueError,
     "decay_rate"),
    ("adafactor_decay_offset", lambda: optim.adafactor(decay_offset=-1), ValueError,
     "decay_offset"),
    ("adafactor_clipping", lambda: optim.adafactor(clipping_threshold=0.0), ValueError,
     "clipping_threshold"),
    ("adafactor_momentum", lambda: optim.adafactor(momentum=1.0), ValueError, "momentum"),
    ("adafactor_weight_decay", lambda: optim.adafactor(weight_decay_rate=-1e-3), ValueError,
     "weight_decay_rate"),
    ("adafactor_eps", lambda: optim.adafactor(eps=0.0), ValueError, "eps"),
    ("adafactor_factored", lambda: optim.adafactor(factored="yes"), TypeError, "factored"),
]


@pytest.mark.parametrize("build,error,argument", [c[1:] for c in CONSTRUCTION_ERRORS],
                         ids=[c[0] for c in CONSTRUCTION_ERRORS])
def test_out_of_range_hyperparameters_raise_at_construction_naming_them(build, error, argument):
    with pytest.raises(error, match=argument):
        build()


def test_boundary_values_are_accepted():
    optim.momentum(0.1, dampening=1.0)
    optim.momentum(0.1, nesterov=True, dampening=0.0)
    optim.adagrad(0.1, lr_decay=0.0)
    optim.nadam(0.1, b1=0.0, momentum_decay=0.0)
    optim.radam(0.1, b2=0.0, threshold=4.5)
    optim.lion(0.1, b1=1.0, b2=1.0, weight_decay=0.0)
    optim.adafactor(decay_rate=0.0, min_dim_size_to_factor=1, clipping_threshold=None,
                    momentum=0.0, weight_decay_rate=0.0)


def test_adafactor_state_of_another_shape_is_named():
    optimizer = optim.adafactor(0.1, min_dim_size_to_factor=2)
    state = optimizer.init({"w": jnp.ones((3, 4))})
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(4, 4\)"):
        optimizer.update({"w": jnp.ones((4, 4))}, state, {"w": jnp.ones((4, 4))})
    with pytest.raises(TypeError, match="state must be a FactoredState"):
        optim.scale_by_factored_rms().update({"w": jnp.ones(2)}, optim.EmptyState())


# ------------------------------------------------------------------------ closed forms


def test_lion_moves_every_coordinate_by_the_rate():
    """|u| = η wherever β₁ m + (1 − β₁) g ≠ 0 (no decay): the sign, not the size, counts."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((10, 6)) * np.array([1e-4, 1e-2, 1.0, 1e2, 1e4, 0.0])
    trajectory = run(optim.lion(0.01, weight_decay=0.0), np.zeros(6, np.float32), grads)
    steps = np.abs(np.diff(np.concatenate([np.zeros((1, 6)), trajectory]), axis=0))
    np.testing.assert_allclose(steps[:, :5], 0.01, rtol=1e-6)
    assert np.all(steps[:, 5] == 0)


def test_lamb_step_has_the_leaf_norm_times_the_rate():
    """‖u‖ = η ‖θ‖ per leaf; a zero leaf takes the plain Adam step (ratio 1)."""
    params = {"big": jnp.full((3,), 10.0), "small": jnp.full((2, 2), 0.1), "zero": jnp.zeros(2)}
    grads = {"big": jnp.array([1.0, -2.0, 3.0]), "small": jnp.ones((2, 2)),
             "zero": jnp.array([0.5, -0.5])}
    optimizer = optim.lamb(0.1)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    for name in ("big", "small"):
        np.testing.assert_allclose(float(jnp.linalg.norm(updates[name])),
                                   0.1 * float(jnp.linalg.norm(params[name])), rtol=1e-5)
    # first Adam step: m̂/(√v̂ + ε) = g/(|g| + ε) ≈ sign(g)
    np.testing.assert_allclose(np.asarray(updates["zero"]), [-0.1, 0.1], rtol=1e-5)


def test_radam_takes_plain_momentum_steps_until_rho_passes_the_threshold():
    """β₂ = 0.999: ρ_t ≈ t early on (ρ_1 = 1, ρ_5 < 5, ρ_6 > 5); until then u = −η m̂."""
    g = np.array([2.0, -0.5])
    optimizer = optim.radam(0.1)
    params = jnp.zeros(2)
    state = optimizer.init(params)
    for t in range(1, 8):
        updates, state = optimizer.update(jnp.asarray(g), state, params)
        b2t = 0.999 ** t
        rho = 2 / 0.001 - 1 - 2 * t * b2t / (1 - b2t)
        if rho < 5:
            np.testing.assert_allclose(np.asarray(updates), -0.1 * g, rtol=1e-5)
        else:
            assert t >= 6
            assert np.all(np.abs(np.asarray(updates)) < 0.1 * np.abs(g))


def test_nadam_torch_schedule_state_keeps_a_scalar_product():
    optimizer = optim.nadam(0.1, momentum_decay=4e-3)
    params = {"w": jnp.ones((2, 3))}
    state = optimizer.init(params)
    assert state[0].mu_product.shape == () and state[0].mu_product.dtype == jnp.float32
    _, state = optimizer.update({"w": jnp.ones((2, 3))}, state, params)
    mu_1 = 0.9 * (1 - 0.5 * 0.96 ** 4e-3)
    np.testing.assert_allclose(float(state[0].mu_product), mu_1, rtol=1e-6)
    with jax.enable_x64(True):
        assert optim.nadam(0.1, momentum_decay=4e-3).init(params)[0].mu_product.dtype == \
            jnp.float64


def test_adafactor_factored_state_has_n_plus_m_entries():
    """A 64 × 200 matrix keeps 64 + 200 statistics (the paper's memory saving); a vector or a
    matrix with a short side keeps the full V."""
    params = {"matrix": jnp.ones((64, 200)), "vector": jnp.ones(200),
              "short": jnp.ones((3, 200))}
    factored_state, *_ = optim.adafactor(min_dim_size_to_factor=16).init(params)
    assert factored_state.v_row["matrix"].shape == (64,)
    assert factored_state.v_col["matrix"].shape == (200,)
    assert factored_state.v["matrix"].size == 1
    assert factored_state.v["vector"].shape == (200,)
    assert factored_state.v["short"].shape == (3, 200)


# ------------------------------------------------------------------------------- optax

ADAFACTOR_SETTINGS = {
    "defaults": dict(),
    "factored": dict(min_dim_size_to_factor=2),
    "factored_momentum_decay": dict(min_dim_size_to_factor=2, momentum=0.9,
                                    weight_decay_rate=0.01, clipping_threshold=None),
    "no_parameter_scale": dict(multiply_by_parameter_scale=False, min_dim_size_to_factor=3,
                               decay_rate=0.5),
}


@pytest.mark.parametrize("setting,learning_rate", [
    ("defaults", None), ("factored", None), ("factored", 0.05),
    ("factored_momentum_decay", 0.05), ("no_parameter_scale", 0.05)])
def test_adafactor_matches_optax_adafactor(setting, learning_rate):
    """Same arguments, same numbers, up to optax's float32 decay ``1 − t^{−c}`` (1e-7 per
    step; without a rate the steps are the size of θ, which carries it to ~2e-6 in 30)."""
    optax = pytest.importorskip("optax")
    options = ADAFACTOR_SETTINGS[setting]
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        for shape in [(6, 5), (3, 6, 5), (5,)]:
            p0 = rng.standard_normal(shape)
            grads = rng.standard_normal((20,) + shape)
            grads[:, 0] = 0.0
            ours = run(optim.adafactor(learning_rate, **options), p0, grads)
            tx = optax.adafactor(learning_rate, **options)
            theirs = run(optim.Optimizer(tx.init, tx.update), p0, grads)
            np.testing.assert_allclose(ours, theirs, rtol=1e-5,
                                       atol=1e-5 * np.abs(p0).max())


def test_amsgrad_follows_torch_not_optax_once_v_falls():
    """Large then small gradients: v falls, so the maximum of the raw v (torch's, ours) and
    of the corrected v̂ (optax.scale_by_amsgrad) give different denominators."""
    optax = pytest.importorskip("optax")
    grads = np.concatenate([np.full((5, 2), 3.0), np.full((20, 2), 0.1)])
    with jax.enable_x64(True):
        ours = run(optim.adam(0.01, b2=0.9, amsgrad=True), np.zeros(2), grads)
        tx = optax.chain(optax.scale_by_amsgrad(b2=0.9), optax.scale(-0.01))
        theirs = run(optim.Optimizer(tx.init, tx.update), np.zeros(2), grads)
    assert np.abs(ours - theirs).max() > 1e-4
    # the first steps, while v grows, agree
    np.testing.assert_allclose(ours[:5], theirs[:5], rtol=1e-10)


def test_adafactor_runs_with_donated_state():
    """No state leaf may alias another (a donated buffer given twice is an XLA error)."""
    params = {"matrix": jnp.ones((4, 3)), "vector": jnp.ones(3), "other": jnp.ones(3)}
    grads = jax.tree_util.tree_map(lambda x: 0.1 * x, params)
    for optimizer in [optim.adafactor(0.1), optim.adafactor(0.1, min_dim_size_to_factor=2)]:
        def step(params, state, grads):
            updates, state = optimizer.update(grads, state, params)
            return optim.apply_updates(params, updates), state

        donated = jax.jit(step, donate_argnums=(0, 1))
        p, state = jax.tree_util.tree_map(jnp.copy, params), optimizer.init(params)
        for _ in range(3):
            p, state = donated(p, state, grads)
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(p))


LOW_PRECISION_MOMENTS = {
    "adam_amsgrad": lambda dtype: optim.adam(0.01, amsgrad=True, mu_dtype=dtype, nu_dtype=dtype),
    "nadam": lambda dtype: optim.nadam(0.01, mu_dtype=dtype, nu_dtype=dtype),
    "radam": lambda dtype: optim.radam(0.01, mu_dtype=dtype, nu_dtype=dtype),
    "adamax": lambda dtype: optim.adamax(0.01, mu_dtype=dtype, nu_dtype=dtype),
    "adabelief": lambda dtype: optim.adabelief(0.01, eps=1e-8, mu_dtype=dtype, nu_dtype=dtype),
    "lamb": lambda dtype: optim.lamb(0.01, mu_dtype=dtype, nu_dtype=dtype),
    "lion": lambda dtype: optim.lion(0.01, mu_dtype=dtype),
    "adafactor": lambda dtype: optim.adafactor(0.01, momentum=0.9, momentum_dtype=dtype),
    "momentum_dampening": lambda dtype: optim.momentum(0.01, dampening=0.5,
                                                       accumulator_dtype=dtype),
}


@pytest.mark.parametrize("name", sorted(LOW_PRECISION_MOMENTS))
def test_bfloat16_moments_are_stored_in_bfloat16_with_float32_arithmetic(name):
    """Float32 parameters, bfloat16 moments: every state leaf shaped like the parameter is
    bfloat16 (adafactor: its momentum), the updates are float32 and within bfloat16's resolution of
    a float32-moment run (the oracle)."""
    build = LOW_PRECISION_MOMENTS[name]
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)}
    low, full = build(jnp.bfloat16), build(None if name != "adafactor" else jnp.float32)
    low_state, full_state = low.init(params), full.init(params)
    grads_list = np.random.default_rng(4).normal(size=(10, 4, 3))
    for g in grads_list:
        grads = {"w": jnp.asarray(g, jnp.float32)}
        low_updates, low_state = low.update(grads, low_state, params)
        full_updates, full_state = full.update(grads, full_state, params)
        assert low_updates["w"].dtype == jnp.float32
    shaped = [x.dtype for x in jax.tree_util.tree_leaves(low_state) if x.shape == (4, 3)]
    # adafactor's second moment keeps the parameter's dtype; its momentum is the option
    want = [jnp.float32, jnp.bfloat16] if name == "adafactor" else [jnp.bfloat16] * len(shaped)
    assert shaped and shaped == want
    # lion's step is a sign: equal unless a coordinate's sign flips on rounding (none here)
    np.testing.assert_allclose(np.asarray(low_updates["w"]), np.asarray(full_updates["w"]),
                               rtol=5e-2, atol=1e-4)


DIRECTION_TWINS = {
    "nadam": (lambda: optim.scale_by_nadam(0.8, 0.95, 1e-6, 1e-4),
              lambda optax: optax.scale_by_adam(0.8, 0.95, 1e-6, 1e-4, nesterov=True)),
    "radam": (lambda: optim.scale_by_radam(0.8, 0.99, 1e-6, threshold=4.5),
              lambda optax: optax.scale_by_radam(0.8, 0.99, 1e-6, threshold=4.5)),
    "adamax": (lambda: optim.scale_by_adamax(0.8, 0.95, 1e-3),
               lambda optax: optax.scale_by_adamax(0.8, 0.95, 1e-3)),
    "belief": (lambda: optim.scale_by_belief(0.8, 0.95, 1e-8, 1e-6),
               lambda optax: optax.scale_by_belief(0.8, 0.95, 1e-8, 1e-6)),
    "lion": (lambda: optim.scale_by_lion(0.8, 0.95), lambda optax: optax.scale_by_lion(0.8, 0.95)),
}


@pytest.mark.parametrize("name", sorted(DIRECTION_TWINS))
def test_direction_matches_optax_transform_of_the_same_name(name):
    optax = pytest.importorskip("optax")
    ours, theirs = DIRECTION_TWINS[name]
    grads = np.random.default_rng(5).normal(size=(25, 4, 3))
    with jax.enable_x64(True):
        def directions(transform):
            state, out = transform.init(jnp.zeros((4, 3))), []
            for g in grads:
                d, state = transform.update(jnp.asarray(g), state, jnp.zeros((4, 3)))
                out.append(np.asarray(d))
            return np.stack(out)
        np.testing.assert_allclose(directions(ours()), directions(theirs(optax)), rtol=1e-11,
                                   atol=1e-14)
