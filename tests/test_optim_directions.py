"""The direction transforms, the step, ``leafwise`` and ``chain``'s extra arguments.

Oracles: NumPy float64 transcriptions of each direction's formula, optax's transforms of the
same names and PyTorch's SGD under a learning-rate schedule (peers imported only here and
skipped when absent).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import optim

S = optim.schedules
STEPS = 25


def gradients(seed: int, shape=(4, 3)):
    return np.random.default_rng(seed).normal(size=(STEPS,) + shape)


def run_direction(transform, grads):
    """The directions ``d_t`` for a stream of gradients of one leaf, in float64."""
    with jax.enable_x64(True):
        state = transform.init(jnp.zeros(grads.shape[1:]))
        out = []
        for g in grads:
            d, state = transform.update(jnp.asarray(g), state)
            out.append(np.asarray(d))
        return np.stack(out)


def np_adam_direction(gs, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0):
    m, v, out = 0 * gs[0], 0 * gs[0], []
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        out.append((m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t) + eps_root) + eps))
    return np.stack(out)


def np_rms_direction(gs, decay, eps, centered=False, initial_scale=0.0, eps_in_sqrt=True):
    e, mean, out = 0 * gs[0] + initial_scale, 0 * gs[0], []
    for g in gs:
        e = decay * e + (1 - decay) * g * g
        mean = decay * mean + (1 - decay) * g
        s = np.maximum(e - mean ** 2, 0) if centered else e
        out.append(g / (np.sqrt(s + eps) if eps_in_sqrt else np.sqrt(s) + eps))
    return np.stack(out)


def np_adagrad_direction(gs, eps, initial, eps_in_sqrt):
    acc, out = 0 * gs[0] + initial, []
    for g in gs:
        acc = acc + g * g
        out.append(g / (np.sqrt(acc + eps) if eps_in_sqrt else np.sqrt(acc) + eps))
    return np.stack(out)


def np_trace_direction(gs, decay, nesterov):
    b, out = 0 * gs[0], []
    for g in gs:
        b = decay * b + g
        out.append(g + decay * b if nesterov else b)
    return np.stack(out)


CASES = {
    "adam": (lambda: optim.scale_by_adam(0.8, 0.95, 1e-3),
             lambda gs: np_adam_direction(gs, 0.8, 0.95, 1e-3)),
    "adam_eps_root": (lambda: optim.scale_by_adam(eps=1e-6, eps_root=1e-4),
                      lambda gs: np_adam_direction(gs, eps=1e-6, eps_root=1e-4)),
    "rms": (lambda: optim.scale_by_rms(0.8, 1e-2, initial_scale=0.5),
            lambda gs: np_rms_direction(gs, 0.8, 1e-2, initial_scale=0.5)),
    "rms_eps_outside": (lambda: optim.scale_by_rms(0.99, 1e-2, eps_in_sqrt=False),
                        lambda gs: np_rms_direction(gs, 0.99, 1e-2, eps_in_sqrt=False)),
    "stddev": (lambda: optim.scale_by_stddev(0.7, 1e-2),
               lambda gs: np_rms_direction(gs, 0.7, 1e-2, centered=True)),
    "adagrad": (lambda: optim.scale_by_adagrad(1e-2, 0.1),
                lambda gs: np_adagrad_direction(gs, 1e-2, 0.1, True)),
    "adagrad_eps_outside": (lambda: optim.scale_by_adagrad(1e-3, eps_in_sqrt=False),
                            lambda gs: np_adagrad_direction(gs, 1e-3, 0.0, False)),
    "trace": (lambda: optim.trace(0.8), lambda gs: np_trace_direction(gs, 0.8, False)),
    "trace_nesterov": (lambda: optim.trace(0.9, nesterov=True),
                       lambda gs: np_trace_direction(gs, 0.9, True)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_direction_matches_numpy_float64(case):
    build, oracle = CASES[case]
    grads = gradients(1)
    np.testing.assert_allclose(run_direction(build(), grads), oracle(grads), rtol=1e-12,
                               atol=1e-14)


OPTAX_TWINS = {
    "adam_eps_root": (lambda: optim.scale_by_adam(0.8, 0.95, 1e-6, 1e-4),
                      lambda optax: optax.scale_by_adam(0.8, 0.95, 1e-6, 1e-4)),
    "rms": (lambda: optim.scale_by_rms(0.8, 1e-2, initial_scale=0.5),
            lambda optax: optax.scale_by_rms(0.8, 1e-2, initial_scale=0.5)),
    "stddev": (lambda: optim.scale_by_stddev(0.7, 1e-2),
               lambda optax: optax.scale_by_stddev(0.7, 1e-2)),
    "trace_nesterov": (lambda: optim.trace(0.9, nesterov=True),
                       lambda optax: optax.trace(0.9, nesterov=True)),
}


@pytest.mark.parametrize("case", sorted(OPTAX_TWINS))
def test_direction_matches_optax_transform_of_the_same_name(case):
    optax = pytest.importorskip("optax")
    ours, theirs = OPTAX_TWINS[case]
    grads = gradients(2)
    np.testing.assert_allclose(run_direction(ours(), grads), run_direction(theirs(optax), grads),
                               rtol=1e-11, atol=1e-14)


def test_scheduled_momentum_applies_the_rate_after_the_buffer_as_torch_does():
    torch = pytest.importorskip("torch")
    schedule = S.exponential_decay(0.1, 5, 0.5)
    grads = gradients(3, (5,))
    p0 = np.linspace(-1.0, 1.0, 5)
    with jax.enable_x64(True):
        for nesterov in (False, True):
            optimizer = optim.momentum(schedule, beta=0.9, nesterov=nesterov)
            params = jnp.asarray(p0)
            state = optimizer.init(params)
            weight = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
            reference = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=nesterov)
            rates = torch.optim.lr_scheduler.LambdaLR(reference, lambda t: 0.5 ** (t / 5))
            for g in grads:
                updates, state = optimizer.update(jnp.asarray(g), state, params)
                params = optim.apply_updates(params, updates)
                weight.grad = torch.tensor(g, dtype=torch.float64)
                reference.step()
                rates.step()
                np.testing.assert_allclose(np.asarray(params), weight.detach().numpy(),
                                           rtol=1e-12, atol=1e-14)


def test_bfloat16_moments_are_stored_in_bfloat16_and_track_float32_adam():
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)}
    low = optim.adam(0.01, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    full = optim.adam(0.01)
    low_state, full_state = low.init(params), full.init(params)
    assert low_state[0].mu["w"].dtype == jnp.bfloat16 == low_state[0].nu["w"].dtype
    for g in gradients(4):
        grads = {"w": jnp.asarray(g, jnp.float32)}
        low_updates, low_state = low.update(grads, low_state, params)
        full_updates, full_state = full.update(grads, full_state, params)
        assert low_updates["w"].dtype == jnp.float32
        assert low_state[0].nu["w"].dtype == jnp.bfloat16
        # bf16 keeps 8 bits: moments within ~1%, the normalized step within a few percent
        np.testing.assert_allclose(np.asarray(low_updates["w"]), np.asarray(full_updates["w"]),
                                   rtol=5e-2, atol=1e-4)


def test_learning_rate_flips_the_sign_and_follows_a_schedule():
    d = {"w": jnp.array([1.0, -2.0])}
    step = optim.scale_by_learning_rate(S.piecewise_constant([2], [0.5, 0.1]))
    state = step.init(d)
    got = []
    for _ in range(4):
        u, state = step.update(d, state)
        got.append(np.asarray(u["w"]))
    np.testing.assert_allclose(np.stack(got), [[-0.5, 1.0]] * 2 + [[-0.1, 0.2]] * 2, rtol=1e-6)
    u, _ = optim.scale_by_learning_rate(0.5, flip_sign=False).update(d, optim.EmptyState())
    np.testing.assert_allclose(np.asarray(u["w"]), [0.5, -1.0])


def test_chain_forwards_extra_args_to_members_that_take_them():
    seen = []

    def init(params):
        return optim.EmptyState()

    def update_with_extras(updates, state, params=None, **extra_args):
        seen.append(sorted(extra_args))
        return jax.tree.map(lambda u: u * extra_args["value"], updates), state

    def update_plain(updates, state, params=None):  # no **kwargs: the extras are dropped
        return updates, state

    chained = optim.chain(optim.Optimizer(init, update_plain), optim.clip_by_global_norm(10.0),
                          optim.Optimizer(init, update_with_extras), optim.adam(0.1))
    grads = {"w": jnp.array([0.3, -0.4])}
    updates, _ = chained.update(grads, chained.init(grads), grads, value=2.0, grad=grads)
    assert seen == [["grad", "value"]]
    # adam's first step is −η·sign(g) whatever the scale: the 2× must not change it
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.1, 0.1], rtol=1e-5)


def test_leafwise_rejects_a_state_of_another_transform():
    adam_state = optim.scale_by_adam().init({"w": jnp.ones(2)})
    with pytest.raises(TypeError, match="scale_by_rms.update: state must be a ScaleByRmsState"):
        optim.scale_by_rms().update({"w": jnp.ones(2)}, adam_state)


def test_direction_hyperparameters_out_of_range_name_themselves():
    with pytest.raises(ValueError, match=r"scale_by_adam: eps_root"):
        optim.scale_by_adam(eps_root=-1.0)
    with pytest.raises(ValueError, match=r"trace: decay"):
        optim.trace(1.0)
    with pytest.raises(ValueError, match=r"scale_by_rms: initial_scale"):
        optim.scale_by_rms(initial_scale=-0.1)
