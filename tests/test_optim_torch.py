"""The docstrings' torch settings against ``torch.optim`` itself: 50-step float64 trajectories.

Each case builds our optimizer with the arguments its docstring gives for a torch optimizer
and steps both on the same random gradients (a 4 × 3 leaf, magnitudes from 1e-3 to 5, one
entry always 0), in float64 (x64 on; torch's default dtype float64 for its scalar state,
e.g. NAdam's ``mu_product``).  The whole trajectories must agree to 1e-12.  Skipped when
torch is not installed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

torch = pytest.importorskip("torch")
N_STEPS = 50
S = optim.schedules


def problem(seed: int):
    rng = np.random.default_rng(seed)
    p0 = rng.uniform(-2.0, 2.0, (4, 3))
    grads = rng.standard_normal((N_STEPS, 4, 3)) * rng.choice([1e-3, 1.0, 5.0], (N_STEPS, 1, 1))
    grads[:, 0, 0] = 0.0
    return p0, grads


def our_trajectory(optimizer, p0, grads):
    with jax.enable_x64(True):
        step = jax.jit(lambda p, s, g: optimizer.update(g, s, p))
        params = jnp.asarray(p0)
        state = optimizer.init(params)
        out = []
        for g in grads:
            updates, state = step(params, state, jnp.asarray(g))
            params = optim.apply_updates(params, updates)
            out.append(np.asarray(params))
        return np.stack(out)


def torch_trajectory(build, p0, grads, lr_lambda=None):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        weight = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
        reference = build([weight])
        scheduler = (torch.optim.lr_scheduler.LambdaLR(reference, lr_lambda)
                     if lr_lambda is not None else None)
        out = []
        for g in grads:
            weight.grad = torch.tensor(g, dtype=torch.float64)
            reference.step()
            if scheduler is not None:
                scheduler.step()
            out.append(weight.detach().numpy().copy())
        return np.stack(out)
    finally:
        torch.set_default_dtype(previous)


T = torch.optim

# name -> (ours, torch's, torch's LambdaLR multiplier or None)
CASES = {
    "adam_amsgrad": (lambda: optim.adam(0.01, b2=0.9, amsgrad=True),
                     lambda w: T.Adam(w, lr=0.01, betas=(0.9, 0.9), amsgrad=True), None),
    "adamw_amsgrad": (lambda: optim.adamw(0.01, b1=0.8, b2=0.95, weight_decay=0.1, amsgrad=True),
                      lambda w: T.AdamW(w, lr=0.01, betas=(0.8, 0.95), weight_decay=0.1,
                                        amsgrad=True), None),
    "sgd_dampening": (lambda: optim.momentum(0.01, beta=0.9, dampening=0.3),
                      lambda w: T.SGD(w, lr=0.01, momentum=0.9, dampening=0.3), None),
    "sgd_dampening_schedule": (
        lambda: optim.momentum(S.exponential_decay(0.02, 10, 0.5), beta=0.8, dampening=0.5),
        lambda w: T.SGD(w, lr=0.02, momentum=0.8, dampening=0.5), lambda t: 0.5 ** (t / 10)),
    "adagrad_lr_decay": (
        lambda: optim.adagrad(0.1, eps_in_sqrt=False, lr_decay=0.05),
        lambda w: T.Adagrad(w, lr=0.1, lr_decay=0.05), None),
    "adagrad_lr_decay_initial": (
        lambda: optim.adagrad(0.1, eps=1e-6, eps_in_sqrt=False, lr_decay=0.2,
                              initial_accumulator_value=0.3),
        lambda w: T.Adagrad(w, lr=0.1, lr_decay=0.2, eps=1e-6, initial_accumulator_value=0.3),
        None),
    "nadam": (lambda: optim.nadam(0.01, momentum_decay=4e-3),
              lambda w: T.NAdam(w, lr=0.01), None),
    "nadam_options": (lambda: optim.nadam(0.01, b1=0.8, b2=0.99, eps=1e-6, momentum_decay=0.05),
                      lambda w: T.NAdam(w, lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                                        momentum_decay=0.05), None),
    "nadamw": (lambda: optim.nadamw(0.01, weight_decay=0.1, momentum_decay=4e-3),
               lambda w: T.NAdam(w, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
               None),
    "nadam_l2": (lambda: optim.chain(optim.add_decayed_weights(0.1),
                                     optim.nadam(0.01, momentum_decay=4e-3)),
                 lambda w: T.NAdam(w, lr=0.01, weight_decay=0.1), None),
    "radam": (lambda: optim.radam(0.01, eps_before_correction=True),
              lambda w: T.RAdam(w, lr=0.01), None),
    "radam_options": (lambda: optim.radam(0.01, b1=0.8, b2=0.9, eps=1e-3,
                                          eps_before_correction=True),
                      lambda w: T.RAdam(w, lr=0.01, betas=(0.8, 0.9), eps=1e-3), None),
    "adamax": (lambda: optim.adamax(2e-3), lambda w: T.Adamax(w, lr=2e-3), None),
    "adamax_options": (lambda: optim.adamax(0.01, b1=0.5, b2=0.9, eps=1e-3),
                       lambda w: T.Adamax(w, lr=0.01, betas=(0.5, 0.9), eps=1e-3), None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_torch_float64(name):
    ours, theirs, lr_lambda = CASES[name]
    p0, grads = problem(len(name))
    want = torch_trajectory(theirs, p0, grads, lr_lambda)
    got = our_trajectory(ours(), p0, grads)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    assert np.abs(want[-1] - p0).max() > 1e-2  # the trajectory went somewhere


def test_the_default_forms_differ_from_torch_where_the_docstrings_say():
    """optax's NAdam (no momentum schedule) and RAdam's ε inside the correction are not
    torch's: without the documented options the trajectories must differ."""
    p0, grads = problem(3)
    for ours, theirs in [(optim.nadam(0.01), lambda w: T.NAdam(w, lr=0.01)),
                         (optim.radam(0.01, b2=0.9, eps=1e-2),
                          lambda w: T.RAdam(w, lr=0.01, betas=(0.9, 0.9), eps=1e-2))]:
        gap = np.abs(our_trajectory(ours, p0, grads) - torch_trajectory(theirs, p0, grads))
        assert gap.max() > 1e-6
