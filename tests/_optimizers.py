"""The registry of optimizers the tests run: one entry per optimizer, read by every test module.

An entry gives the optimizer's constructor, a NumPy float64 transcription of its formula for
one leaf (``oracle(p0, grads, rate, **options)`` returning the trajectory; it takes the
constructor's keyword options with the same defaults, and for ``mask`` the leaf's own flag),
and the configurations each kind of test uses:

- ``variants``: the cases compared with the oracle over 100 steps (``tests/test_optim.py``);
- ``instances``: one instance per option that changes the state or the update path, at a rate
  the test chooses (bad input, state invariants, tracing, half precision);
- ``convergence``: settings that reach the quadratic's and Rosenbrock's minima;
- ``optax_recipes``: our arguments beside optax's for the same numbers (None: no peer).

A new optimizer is one entry here (with its oracle); its tests follow.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from functional_dl import optim

S = optim.schedules


# ----------------------------------------------------------------------------------------
# NumPy transcriptions: one leaf, all steps; return the trajectory (num_steps, *shape).
# ``lr(t)`` is the rate for the update after t earlier updates.


def np_sgd(p, gs, lr):
    out = []
    for t, g in enumerate(gs):
        p = p - lr(t) * g
        out.append(p)
    return np.stack(out)


def np_momentum(p, gs, lr, beta=0.9, nesterov=False, dampening=0.0):
    # the rate multiplies the buffer after it is formed (torch's and optax's convention);
    # torch's dampening: the first gradient enters whole, later ones times (1 - dampening)
    b = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs):
        b = g if t == 0 else beta * b + (1 - dampening) * g
        step = g + beta * b if nesterov else b
        p = p - lr(t) * step
        out.append(p)
    return np.stack(out)


def np_adagrad(p, gs, lr, eps=1e-10, initial_accumulator_value=0.0, eps_in_sqrt=True,
               lr_decay=0.0):
    G = np.full_like(p, initial_accumulator_value)
    out = []
    for t, g in enumerate(gs):
        G = G + g ** 2
        denom = np.sqrt(G + eps) if eps_in_sqrt else np.sqrt(G) + eps
        p = p - lr(t) / (1 + t * lr_decay) * g / denom
        out.append(p)
    return np.stack(out)


def np_rmsprop(p, gs, lr, decay=0.9, eps=1e-8, eps_in_sqrt=True, centered=False):
    E = np.zeros_like(p)
    mean_g = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs):
        E = decay * E + (1 - decay) * g ** 2
        s = E
        if centered:
            mean_g = decay * mean_g + (1 - decay) * g
            s = np.maximum(E - mean_g ** 2, 0)
        denom = np.sqrt(s + eps) if eps_in_sqrt else np.sqrt(s) + eps
        p = p - lr(t) * g / denom
        out.append(p)
    return np.stack(out)


def np_adamw(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, mask=True,
             amsgrad=False):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    v_max = np.zeros_like(p)
    out = []
    for step, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        v_max = np.maximum(v_max, v)  # torch's AMSGrad: the maximum of the raw v
        m_hat = m / (1 - b1 ** step)
        v_hat = (v_max if amsgrad else v) / (1 - b2 ** step)
        decay_term = weight_decay * p if mask else 0.0
        p = p - lr(step - 1) * (m_hat / (np.sqrt(v_hat) + eps) + decay_term)
        out.append(p)
    return np.stack(out)


def np_adam(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8, amsgrad=False):
    return np_adamw(p, gs, lr, b1, b2, eps, weight_decay=0.0, mask=False, amsgrad=amsgrad)


def np_nadamw(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, mask=True,
              eps_root=0.0, momentum_decay=None):
    # Dozat's NAdam: optax's form (momentum_decay None) or torch's momentum schedule
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    product = 1.0
    out = []
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        if momentum_decay is None:
            m_bar = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
        else:
            mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
            mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
            product *= mu
            m_bar = (1 - mu) * g / (1 - product) + mu_next * m / (1 - product * mu_next)
        step = m_bar / (np.sqrt(v / (1 - b2 ** t) + eps_root) + eps)
        p = p - lr(t - 1) * (step + (weight_decay * p if mask else 0.0))
        out.append(p)
    return np.stack(out)


def np_nadam(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, momentum_decay=None):
    return np_nadamw(p, gs, lr, b1, b2, eps, 0.0, False, eps_root, momentum_decay)


def np_radam(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, threshold=5.0,
             eps_before_correction=False):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        step = m_hat
        if rho >= threshold:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            if eps_before_correction:  # torch: r m̂ √(1 − β₂^t) / (√v + ε)
                step = r * m_hat * math.sqrt(1 - b2 ** t) / (
                    np.sqrt((v_hat + eps_root) * (1 - b2 ** t)) + eps)
            else:
                step = r * m_hat / (np.sqrt(v_hat + eps_root) + eps)
        p = p - lr(t - 1) * step
        out.append(p)
    return np.stack(out)


def np_adamax(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros_like(p)
    u = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        p = p - lr(t - 1) * m / ((1 - b1 ** t) * u)
        out.append(p)
    return np.stack(out)


def np_adabelief(p, gs, lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16):
    m = np.zeros_like(p)
    s = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps_root
        p = p - lr(t - 1) * (m / (1 - b1 ** t)) / (np.sqrt(s / (1 - b2 ** t)) + eps)
        out.append(p)
    return np.stack(out)


def np_lion(p, gs, lr, b1=0.9, b2=0.99, weight_decay=1e-3, mask=True):
    m = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs):
        step = np.sign(b1 * m + (1 - b1) * g) + (weight_decay * p if mask else 0.0)
        m = b2 * m + (1 - b2) * g
        p = p - lr(t) * step
        out.append(p)
    return np.stack(out)


def np_lamb(p, gs, lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0, mask=True):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        r = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        r = r + (weight_decay * p if mask else 0.0)
        p_norm, r_norm = np.linalg.norm(p), np.linalg.norm(r)
        ratio = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
        p = p - lr(t - 1) * ratio * r
        out.append(p)
    return np.stack(out)


def np_adafactor(p, gs, lr, min_dim_size_to_factor=128, decay_rate=0.8, decay_offset=0,
                 multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None,
                 weight_decay_rate=None, eps=1e-30, factored=True, momentum_dtype=None):
    # Shazeer & Stern: row/column statistics for a matrix whose smaller side is long enough;
    # everything in float64 here (momentum_dtype is accepted and ignored)
    rms = lambda x: np.sqrt(np.mean(x ** 2))
    is_factored = factored and p.ndim == 2 and min(p.shape) >= min_dim_size_to_factor
    long_axis = int(np.argmax(p.shape)) if p.ndim == 2 and p.shape[0] != p.shape[1] else 1
    short_axis = 1 - long_axis
    rows = np.zeros(p.shape[short_axis]) if is_factored else None
    cols = np.zeros(p.shape[long_axis]) if is_factored else None
    V = np.zeros_like(p)
    m = np.zeros_like(p)
    out = []
    for t, g in enumerate(gs, start=1):
        beta = 1 - max(t - decay_offset, 1) ** (-decay_rate)
        square = g ** 2 + eps
        if is_factored:
            rows = beta * rows + (1 - beta) * square.mean(axis=long_axis)
            cols = beta * cols + (1 - beta) * square.mean(axis=short_axis)
            V = np.expand_dims(rows, long_axis) * np.expand_dims(cols, short_axis) / rows.mean()
        else:
            V = beta * V + (1 - beta) * square
        d = g / np.sqrt(V)
        if clipping_threshold is not None:
            d = d / max(1.0, rms(d) / clipping_threshold)
        d = lr(t - 1) * d
        if multiply_by_parameter_scale:
            d = d * max(rms(p), 1e-3)
        if momentum is not None:
            m = momentum * m + (1 - momentum) * d
            d = m
        if weight_decay_rate is not None:
            d = d + weight_decay_rate * p
        p = p - d
        out.append(p)
    return np.stack(out)


# ----------------------------------------------------------------------------------------
# Schedules the oracle cases use: name -> (build the schedule, NumPy rate t -> float).


def _np_exponential(t):
    return 0.05 * 0.5 ** (t / 40)


def _np_cosine(t):
    return 0.001 + (0.05 - 0.001) * 0.5 * (1 + math.cos(math.pi * min(t, 80) / 80))


def _np_warmup_cosine(t):
    if t < 10:
        return 0.0 + 0.05 * t / 10
    return 0.5 * 0.05 * (1 + math.cos(math.pi * min(t - 10, 70) / 70))


def _np_piecewise(t):
    return 0.05 if t < 30 else (0.02 if t < 60 else 0.005)


SCHEDULES = {
    "constant": (lambda: S.constant(0.1), lambda t: 0.1),
    "exponential": (lambda: S.exponential_decay(0.05, 40, 0.5), _np_exponential),
    "cosine": (lambda: S.cosine_decay(0.05, 80, end_value=0.001), _np_cosine),
    "warmup_cosine": (lambda: S.warmup_cosine_decay(0.0, 0.05, 10, 80), _np_warmup_cosine),
    "piecewise": (lambda: S.piecewise_constant([30, 60], [0.05, 0.02, 0.005]), _np_piecewise),
}


def rate_pair(rate):
    """(the rate to build with, the NumPy rate t -> float) for a float or a SCHEDULES name."""
    if isinstance(rate, str):
        build, numpy_rate = SCHEDULES[rate]
        return build(), numpy_rate
    return rate, lambda t: rate


# ----------------------------------------------------------------------------------------
# The registry.


def no_bias(params):
    """Decay the leaves with two or more axes; spare the 1-D ones (biases)."""
    return jax.tree_util.tree_map(lambda x: x.ndim > 1, params)


class Variant(NamedTuple):
    """An oracle case: the rate (a float or a SCHEDULES name) and the keyword options."""
    rate: Any
    options: dict = {}


class Convergence(NamedTuple):
    """Settings for the minimisation tests; ``distance`` is the allowed distance to (1, 1)."""
    quadratic: Callable[[], Any]
    rosenbrock: Callable[[], Any]
    rosenbrock_steps: int
    distance: float


class Entry(NamedTuple):
    """One optimizer and the configurations every test module reads."""
    name: str
    build: Callable[..., Any]
    oracle: Callable[..., Any]
    stateful: bool
    variants: dict          # case id -> Variant
    instances: dict         # instance id -> keyword options
    convergence: dict       # instance id -> Convergence
    optax_recipes: dict | None  # recipe id -> (build ours, build optax's from the module)


OPTIMIZERS = (
    Entry(
        "sgd", optim.sgd, np_sgd, stateful=False,
        variants={"sgd": Variant(0.05),
                  **{f"sgd_{name}": Variant(name) for name in SCHEDULES if name != "constant"}},
        instances={"sgd": {}},
        convergence={"sgd": Convergence(lambda: optim.sgd(0.05), lambda: optim.sgd(1e-3),
                                        20_000, 1e-3)},
        optax_recipes={"sgd": (lambda: optim.sgd(0.1), lambda optax: optax.sgd(0.1))}),
    Entry(
        "momentum", optim.momentum, np_momentum, stateful=True,
        variants={"momentum": Variant(0.02),
                  "momentum_nesterov": Variant(0.02, dict(beta=0.8, nesterov=True)),
                  "momentum_cosine": Variant("cosine", dict(nesterov=True)),
                  "momentum_dampening": Variant(0.02, dict(beta=0.8, dampening=0.3)),
                  "momentum_dampening_exponential": Variant("exponential",
                                                            dict(dampening=0.9))},
        instances={"momentum": {}, "nesterov": dict(nesterov=True),
                   "momentum_dampening": dict(dampening=0.5)},
        convergence={
            "momentum": Convergence(lambda: optim.momentum(0.01), lambda: optim.momentum(1e-3),
                                    5_000, 1e-5),
            "nesterov": Convergence(lambda: optim.momentum(0.01, nesterov=True),
                                    lambda: optim.momentum(1e-3, nesterov=True), 5_000, 1e-5)},
        optax_recipes={
            "momentum": (lambda: optim.momentum(0.05, beta=0.8),
                         lambda optax: optax.sgd(0.05, momentum=0.8)),
            "nesterov": (lambda: optim.momentum(0.05, nesterov=True),
                         lambda optax: optax.sgd(0.05, momentum=0.9, nesterov=True))}),
    Entry(
        "adagrad", optim.adagrad, np_adagrad, stateful=True,
        variants={
            "adagrad": Variant(0.1),
            # the constant schedule gives the numbers of a float rate
            "adagrad_eps_outside": Variant("constant", dict(eps=1e-2, eps_in_sqrt=False)),
            "adagrad_eps_inside_initial": Variant(0.1, dict(eps=1e-2,
                                                            initial_accumulator_value=0.1)),
            "adagrad_piecewise": Variant("piecewise", dict(eps=1e-6)),
            "adagrad_lr_decay": Variant(0.1, dict(eps_in_sqrt=False, lr_decay=0.05)),
            "adagrad_lr_decay_cosine": Variant("cosine", dict(lr_decay=0.2,
                                                              initial_accumulator_value=0.1))},
        instances={"adagrad": {}, "adagrad_lr_decay": dict(lr_decay=0.01)},
        convergence={"adagrad": Convergence(lambda: optim.adagrad(0.5),
                                            lambda: optim.adagrad(0.5), 5_000, 5e-2)},
        optax_recipes={"adagrad": (
            lambda: optim.adagrad(0.1, eps=1e-7, initial_accumulator_value=0.1),
            lambda optax: optax.adagrad(0.1))}),
    Entry(
        "rmsprop", optim.rmsprop, np_rmsprop, stateful=True,
        variants={
            "rmsprop": Variant(0.01),
            "rmsprop_eps_outside": Variant(0.01, dict(decay=0.99, eps=1e-2, eps_in_sqrt=False)),
            "rmsprop_centered": Variant(0.01, dict(decay=0.8, eps=1e-2, centered=True)),
            "rmsprop_centered_eps_outside": Variant(0.01, dict(eps=1e-2, eps_in_sqrt=False,
                                                               centered=True)),
            "rmsprop_exponential": Variant("exponential", dict(centered=True))},
        instances={"rmsprop": {}, "rmsprop_centered": dict(centered=True, eps_in_sqrt=False)},
        convergence={
            "rmsprop": Convergence(lambda: optim.rmsprop(S.cosine_decay(0.01, 3_000)),
                                   lambda: optim.rmsprop(S.cosine_decay(0.01, 5_000)),
                                   5_000, 1.5e-2),
            "rmsprop_centered": Convergence(
                lambda: optim.rmsprop(S.cosine_decay(0.01, 3_000), centered=True),
                lambda: optim.rmsprop(S.cosine_decay(0.01, 5_000), centered=True),
                5_000, 1.5e-2)},
        optax_recipes={
            "rmsprop": (lambda: optim.rmsprop(0.01), lambda optax: optax.rmsprop(0.01)),
            "rmsprop_centered": (
                lambda: optim.rmsprop(0.01, decay=0.8, eps=1e-3, centered=True),
                lambda optax: optax.rmsprop(0.01, decay=0.8, eps=1e-3, centered=True))}),
    Entry(
        "adam", optim.adam, np_adam, stateful=True,
        variants={"adam": Variant(0.01),
                  "adam_options": Variant(0.01, dict(b1=0.5, b2=0.9, eps=1e-2)),
                  "adam_amsgrad": Variant(0.01, dict(b2=0.9, amsgrad=True)),
                  "adam_amsgrad_cosine": Variant("cosine", dict(b1=0.5, eps=1e-3,
                                                                amsgrad=True))},
        instances={"adam": {}, "adam_amsgrad": dict(amsgrad=True)},
        convergence={"adam": Convergence(lambda: optim.adam(S.cosine_decay(0.05, 3_000)),
                                         lambda: optim.adam(S.cosine_decay(0.02, 5_000)),
                                         5_000, 1e-2)},
        optax_recipes={
            "adam": (lambda: optim.adam(0.01, b1=0.8, b2=0.99, eps=1e-6),
                     lambda optax: optax.adam(0.01, b1=0.8, b2=0.99, eps=1e-6)),
            "adam_schedule": (
                lambda: optim.adam(S.warmup_cosine_decay(0.0, 0.02, 10, 50)),
                lambda optax: optax.adam(optax.warmup_cosine_decay_schedule(0.0, 0.02, 10, 50)))}),
    Entry(
        "adamw", optim.adamw, np_adamw, stateful=True,
        variants={
            "adamw": Variant(0.01, dict(weight_decay=0.5)),
            "adamw_mask_fn": Variant(0.01, dict(weight_decay=0.5, mask=no_bias)),
            "adamw_warmup_cosine_mask_tree": Variant("warmup_cosine", dict(
                weight_decay=0.3, mask={"dense": {"w": True}, "blocks": False, "pair": True})),
            "adamw_amsgrad": Variant(0.01, dict(b2=0.8, weight_decay=0.2, amsgrad=True))},
        instances={"adamw": dict(mask=no_bias), "adamw_amsgrad": dict(amsgrad=True)},
        convergence={"adamw": Convergence(
            lambda: optim.adamw(S.warmup_cosine_decay(0.0, 0.05, 100, 3_000), weight_decay=0.0),
            lambda: optim.adamw(S.cosine_decay(0.02, 5_000), weight_decay=0.0), 5_000, 1e-2)},
        optax_recipes={"adamw": (lambda: optim.adamw(0.01, weight_decay=0.1, mask=no_bias),
                                 lambda optax: optax.adamw(0.01, weight_decay=0.1,
                                                           mask=no_bias))}),

    Entry(
        "nadam", optim.nadam, np_nadam, stateful=True,
        variants={
            "nadam": Variant(0.01),
            "nadam_cosine": Variant("cosine", dict(b1=0.8, eps=1e-3)),
            "nadam_momentum_decay": Variant(0.01, dict(momentum_decay=4e-3)),
            "nadam_momentum_decay_eps_root": Variant(0.01, dict(b2=0.99, eps_root=1e-6,
                                                                momentum_decay=0.1))},
        instances={"nadam": {}, "nadam_momentum_decay": dict(momentum_decay=4e-3)},
        convergence={
            "nadam": Convergence(lambda: optim.nadam(S.cosine_decay(0.05, 3_000)),
                                 lambda: optim.nadam(S.cosine_decay(0.02, 5_000)), 5_000, 1e-2),
            "nadam_momentum_decay": Convergence(
                lambda: optim.nadam(S.cosine_decay(0.05, 3_000), momentum_decay=4e-3),
                lambda: optim.nadam(S.cosine_decay(0.02, 5_000), momentum_decay=4e-3),
                5_000, 1e-2)},
        optax_recipes={"nadam": (lambda: optim.nadam(0.01, b1=0.8, b2=0.99, eps=1e-6),
                                 lambda optax: optax.nadam(0.01, b1=0.8, b2=0.99, eps=1e-6))}),
    Entry(
        "nadamw", optim.nadamw, np_nadamw, stateful=True,
        variants={
            "nadamw": Variant(0.01, dict(weight_decay=0.3)),
            "nadamw_mask_momentum_decay": Variant(0.01, dict(weight_decay=0.3, mask=no_bias,
                                                             momentum_decay=4e-3))},
        instances={"nadamw": dict(mask=no_bias)},
        convergence={},
        optax_recipes={"nadamw": (lambda: optim.nadamw(0.01, weight_decay=0.1, mask=no_bias),
                                  lambda optax: optax.nadamw(0.01, weight_decay=0.1,
                                                             mask=no_bias))}),
    Entry(
        "radam", optim.radam, np_radam, stateful=True,
        variants={
            "radam": Variant(0.01),
            "radam_eps_before_correction": Variant(0.01, dict(b2=0.9, eps=1e-3,
                                                              eps_before_correction=True)),
            "radam_warmup_cosine": Variant("warmup_cosine", dict(b2=0.99, threshold=6.0,
                                                                 eps_root=1e-6))},
        instances={"radam": {}},
        convergence={"radam": Convergence(
            lambda: optim.radam(S.cosine_decay(0.05, 3_000)),
            # RAdam's first steps are plain momentum steps: warm up on Rosenbrock's slopes
            lambda: optim.radam(S.warmup_cosine_decay(0.0, 0.02, 200, 5_000)), 5_000, 1e-2)},
        optax_recipes={"radam": (lambda: optim.radam(0.01, b2=0.99, threshold=6.0),
                                 lambda optax: optax.radam(0.01, b2=0.99, threshold=6.0))}),
    Entry(
        "adamax", optim.adamax, np_adamax, stateful=True,
        variants={"adamax": Variant(0.01),
                  "adamax_exponential": Variant("exponential", dict(b1=0.5, b2=0.9, eps=1e-3))},
        instances={"adamax": {}},
        convergence={"adamax": Convergence(lambda: optim.adamax(S.cosine_decay(0.05, 3_000)),
                                           lambda: optim.adamax(S.cosine_decay(0.1, 10_000)),
                                           10_000, 1e-2)},
        optax_recipes={"adamax": (lambda: optim.adamax(0.01, b1=0.8, eps=1e-6),
                                  lambda optax: optax.adamax(0.01, b1=0.8, eps=1e-6))}),
    Entry(
        "adabelief", optim.adabelief, np_adabelief, stateful=True,
        variants={"adabelief": Variant(0.01),
                  "adabelief_options": Variant(0.01, dict(b1=0.8, b2=0.9, eps=1e-8,
                                                          eps_root=1e-8))},
        instances={"adabelief": {}},
        convergence={"adabelief": Convergence(
            lambda: optim.adabelief(S.cosine_decay(0.05, 3_000)),
            lambda: optim.adabelief(S.cosine_decay(0.02, 5_000)), 5_000, 1e-2)},
        optax_recipes={"adabelief": (lambda: optim.adabelief(0.01),
                                     lambda optax: optax.adabelief(0.01))}),
    Entry(
        "lion", optim.lion, np_lion, stateful=True,
        variants={"lion": Variant(0.01),
                  "lion_cosine_mask": Variant("cosine", dict(b1=0.5, b2=0.9, weight_decay=0.1,
                                                             mask=no_bias))},
        instances={"lion": dict(mask=no_bias)},
        convergence={"lion": Convergence(
            lambda: optim.lion(S.cosine_decay(0.01, 3_000), weight_decay=0.0),
            lambda: optim.lion(S.cosine_decay(0.003, 5_000), weight_decay=0.0), 5_000, 1e-2)},
        optax_recipes={"lion": (lambda: optim.lion(0.01, weight_decay=0.1, mask=no_bias),
                                lambda optax: optax.lion(0.01, weight_decay=0.1,
                                                         mask=no_bias))}),
    Entry(
        # no convergence case: the trust ratio scales a scalar leaf's step by |θ|, so
        # Rosenbrock's x (two scalar leaves) cannot cross 0 on its way from -1.2 to 1
        "lamb", optim.lamb, np_lamb, stateful=True,
        variants={"lamb": Variant(0.01),
                  "lamb_decay_mask": Variant(0.01, dict(weight_decay=0.1, mask=no_bias,
                                                        eps=1e-3))},
        instances={"lamb": dict(weight_decay=0.01, mask=no_bias)},
        convergence={},
        optax_recipes={"lamb": (lambda: optim.lamb(0.01, weight_decay=0.1, mask=no_bias),
                                lambda optax: optax.lamb(0.01, weight_decay=0.1,
                                                         mask=no_bias))}),
    Entry(
        "adafactor", optim.adafactor, np_adafactor, stateful=True,
        variants={
            "adafactor": Variant(0.05),
            "adafactor_factored": Variant(0.05, dict(min_dim_size_to_factor=2)),
            "adafactor_factored_momentum_decay": Variant("cosine", dict(
                min_dim_size_to_factor=2, momentum=0.9, weight_decay_rate=0.01,
                clipping_threshold=None, decay_rate=0.5, momentum_dtype=None)),
            "adafactor_unfactored_offset": Variant(0.05, dict(
                multiply_by_parameter_scale=False, decay_offset=3, factored=False))},
        instances={"adafactor": {},
                   "adafactor_factored": dict(min_dim_size_to_factor=2, momentum=0.9,
                                              weight_decay_rate=1e-3,
                                              weight_decay_mask=no_bias)},
        convergence={"adafactor": Convergence(
            lambda: optim.adafactor(S.cosine_decay(0.05, 3_000),
                                    multiply_by_parameter_scale=False),
            lambda: optim.adafactor(S.cosine_decay(0.02, 5_000),
                                    multiply_by_parameter_scale=False, momentum=0.9),
            5_000, 1e-2)},
        # optax forms Adafactor's decay 1 − t^(−0.8) in float32 even under x64: its pieces
        # with a float64 decay give our numbers exactly (optax.adafactor itself: ~1e-7)
        optax_recipes={"adafactor": (
            lambda: optim.adafactor(0.05, min_dim_size_to_factor=2, momentum=0.9,
                                    momentum_dtype=None),
            lambda optax: optax.chain(
                optax.scale_by_factored_rms(min_dim_size_to_factor=2,
                                            decay_rate_fn=lambda i, c: 1.0 - (i + 1.0) ** -c),
                optax.clip_by_block_rms(1.0),
                optax.scale_by_learning_rate(0.05, flip_sign=False),
                optax.scale_by_param_block_rms(), optax.ema(0.9, debias=False),
                optax.scale(-1.0)))}),
)


def _merged(field: str) -> dict:
    """One field's dicts of every entry, merged, with each value paired with its entry."""
    merged = {}
    for entry in OPTIMIZERS:
        for key, value in (getattr(entry, field) or {}).items():
            assert key not in merged, f"{field} id {key!r} appears twice"
            merged[key] = (entry, value)
    return merged


VARIANTS = _merged("variants")
INSTANCES = _merged("instances")
CONVERGENCE = {key: value for key, (_, value) in _merged("convergence").items()}
OPTAX_RECIPES = {key: value for key, (_, value) in _merged("optax_recipes").items()}


def instances(rate: float, *, stateful_only: bool = False) -> dict:
    """instance id -> a fresh optimizer at ``rate``, one per entry's instance."""
    return {key: entry.build(rate, **options) for key, (entry, options) in INSTANCES.items()
            if entry.stateful or not stateful_only}


#: instance ids, beyond the ``adam*`` ones, whose state keeps an int32 step count
#: (tests/test_optim_properties.py checks that exactly these do).
COUNTED_INSTANCES = frozenset({"momentum_dampening", "adagrad_lr_decay", "nadam",
                               "nadam_momentum_decay", "nadamw", "radam", "adabelief", "lamb",
                               "adafactor", "adafactor_factored"})


# ----------------------------------------------------------------------------------------
# Wrappers and transforms whose state must keep the parameters' sharding
# (tests/test_optim_sharding.py), beside every instance above.  A new wrapper adds a line.

#: case ids whose state holds no parameter-shaped leaf (nothing to check but the update).
STATELESS = frozenset({"sgd", "scale_by_schedule", "clip_then_sgd"})


def sharding_cases(rate: float) -> dict:
    """case id -> a fresh wrapper or transform chain at ``rate``."""
    return {
        "scale_by_schedule": optim.scale_by_schedule(S.exponential_decay(rate, 10, 0.9)),
        "clip_then_sgd": optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(rate)),
        "apply_if_finite_adam": optim.apply_if_finite(optim.adam(rate)),
        "adam_bfloat16_moments": optim.adam(rate, mu_dtype="bfloat16", nu_dtype="bfloat16"),
        "trace_nesterov": optim.trace(0.9, nesterov=True),
        **wrapper_cases(rate),
        "trace_dampening": optim.trace(0.9, dampening=0.5),
        "adam_amsgrad_bfloat16_moments": optim.adam(rate, amsgrad=True, nu_dtype="bfloat16"),
        "scale_by_factored_rms": optim.scale_by_factored_rms(min_dim_size_to_factor=1),
    }


#: wrappers of functional_dl/optim/wrappers.py and friends (tests/test_optim_wrappers.py)
STATELESS = STATELESS | {"freeze_b", "clip_zero_nans"}


def wrapper_cases(rate: float) -> dict:
    """The parameter-group wrappers on the sharding test's params ``{"w", "b", "v"}``."""
    return {
        "masked_adam": optim.masked(optim.adam(rate), {"w": True, "b": False, "v": True}),
        "partition_adam_momentum_frozen": optim.partition(
            {"adam": optim.adam(rate), "momentum": optim.momentum(rate),
             "frozen": optim.set_to_zero()}, {"w": "adam", "b": "frozen", "v": "momentum"}),
        "freeze_b": optim.freeze({"w": False, "b": True, "v": False}),
        "multi_steps_adam": optim.MultiSteps(optim.adam(rate), 2),
        "inject_hyperparams_adamw": optim.inject_hyperparams(optim.adamw)(
            learning_rate=S.cosine_decay(rate, 10), b1=0.8, weight_decay=1e-2),
        "ema_params": _ema_as_optimizer(optim.ema_params(0.9)),
        "clip_zero_nans_apply_if_finite_adam": optim.apply_if_finite(
            optim.chain(optim.zero_nans(), optim.clip(1.0), optim.adam(rate)),
            max_consecutive_errors=3),
        "clip_zero_nans": optim.chain(optim.zero_nans(), optim.clip(1.0)),
    }


def _ema_as_optimizer(ema):
    """``ema_params`` observes the parameters; as an identity optimizer its average is state."""
    return optim.Optimizer(ema.init, lambda grads, state, params: (grads,
                                                                   ema.update(state, params)))
