"""Tests for functional_dl.losses against NumPy transcriptions of each formula."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import losses

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- NumPy oracles


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def np_softmax_ce(z, y):
    return -(np.asarray(y, np.float64) * np_log_softmax(z)).sum(axis=-1)


def np_sigmoid_bce(z, y):
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    p = 1 / (1 + np.exp(-z))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def np_kl(log_q, p):
    p, log_q = np.asarray(p, np.float64), np.asarray(log_q, np.float64)
    out = np.zeros(p.shape[:-1])
    for index in np.ndindex(*p.shape[:-1]):
        out[index] = sum(pc * (np.log(pc) - lq) for pc, lq in zip(p[index], log_q[index]) if pc > 0)
    return out


def random_probs(shape, zero_fraction=0.0):
    p = RNG.random(shape)
    p[RNG.random(shape) < zero_fraction] = 0.0
    p[..., 0] += 1e-3  # keep every row non-empty
    return p / p.sum(axis=-1, keepdims=True)


MAYBE_JIT = [pytest.param(lambda f: f, id="eager"), pytest.param(jax.jit, id="jit")]


# ------------------------------------------------------------- values vs oracles


@pytest.mark.parametrize("wrap", MAYBE_JIT)
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)])
def test_softmax_cross_entropy_matches_numpy(wrap, shape):
    z, y = RNG.normal(size=shape) * 3, random_probs(shape, zero_fraction=0.3)
    got = wrap(losses.softmax_cross_entropy)(jnp.asarray(z, jnp.float32),
                                             jnp.asarray(y, jnp.float32))
    assert got.shape == shape[:-1]
    np.testing.assert_allclose(got, np_softmax_ce(z, y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wrap", MAYBE_JIT)
def test_integer_label_cross_entropy_matches_numpy_and_one_hot(wrap):
    z = RNG.normal(size=(3, 4, 6)) * 2
    k = RNG.integers(0, 6, size=(3, 4))
    got = wrap(losses.softmax_cross_entropy_with_integer_labels)(jnp.asarray(z), jnp.asarray(k))
    expected = -np.take_along_axis(np_log_softmax(z), k[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    one_hot = losses.softmax_cross_entropy(jnp.asarray(z), jax.nn.one_hot(k, 6))
    np.testing.assert_allclose(got, one_hot, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("wrap", MAYBE_JIT)
def test_sigmoid_binary_cross_entropy_matches_numpy(wrap):
    z, y = RNG.normal(size=(4, 3)) * 4, RNG.random((4, 3))
    got = wrap(losses.sigmoid_binary_cross_entropy)(jnp.asarray(z), jnp.asarray(y))
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, np_sigmoid_bce(z, y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wrap", MAYBE_JIT)
def test_squared_and_mean_squared_error_match_numpy(wrap):
    a, b = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    np.testing.assert_allclose(wrap(losses.squared_error)(jnp.asarray(a), jnp.asarray(b)),
                               (b - a) ** 2, rtol=1e-5)
    got = wrap(losses.mean_squared_error)(jnp.asarray(a), jnp.asarray(b))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, ((a - b) ** 2).mean(axis=-1), rtol=1e-5)


@pytest.mark.parametrize("wrap", MAYBE_JIT)
def test_kl_divergence_matches_numpy_with_zero_targets(wrap):
    p = random_probs((4, 5), zero_fraction=0.4)
    log_q = np_log_softmax(RNG.normal(size=(4, 5)))
    got = wrap(losses.kl_divergence)(jnp.asarray(log_q), jnp.asarray(p))
    np.testing.assert_allclose(got, np_kl(log_q, p), rtol=1e-5, atol=1e-6)
    # KL(p || p) = 0 and CE = H(p) + KL.
    np.testing.assert_allclose(losses.kl_divergence(jnp.log(jnp.asarray(p)), jnp.asarray(p)),
                               0.0, atol=1e-6)
    z = RNG.normal(size=(4, 5))
    entropy = -np.array([sum(pc * np.log(pc) for pc in row if pc > 0) for row in p])
    np.testing.assert_allclose(losses.softmax_cross_entropy(jnp.asarray(z), jnp.asarray(p)),
                               entropy + np_kl(np_log_softmax(z), p), rtol=1e-5, atol=1e-5)


def test_kl_divergence_zero_target_ignores_minus_infinite_prediction():
    p = jnp.array([0.5, 0.5, 0.0])
    log_q = jnp.log(jnp.array([0.25, 0.75, 0.0]))  # log 0 = -inf where p = 0
    value, grads = jax.value_and_grad(losses.kl_divergence, argnums=(0, 1))(log_q, p)
    np.testing.assert_allclose(value, 0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75), rtol=1e-6)
    np.testing.assert_allclose(grads[0], -p)
    assert np.all(np.isfinite(grads[1]))


@pytest.mark.parametrize("wrap", MAYBE_JIT)
def test_hinge_and_perceptron_loss_match_numpy(wrap):
    s = RNG.normal(size=(10,)) * 2
    y = RNG.choice([-1.0, 1.0], size=10)
    np.testing.assert_allclose(wrap(losses.hinge_loss)(jnp.asarray(s), jnp.asarray(y)),
                               np.maximum(0, 1 - y * s), rtol=1e-6)
    np.testing.assert_allclose(wrap(losses.perceptron_loss)(jnp.asarray(s), jnp.asarray(y)),
                               np.maximum(0, -y * s), rtol=1e-6)


def test_hinge_and_perceptron_subgradients_including_the_boundaries():
    # Scores on both sides of and exactly at the kinks: y·s = 1 (hinge) and y·s = 0 (perceptron).
    s = jnp.array([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 0.0, 0.5])
    y = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    margin = np.asarray(y * s)
    hinge_grad = jax.jit(jax.grad(lambda s_: losses.hinge_loss(s_, y).sum()))(s)
    perceptron_grad = jax.jit(jax.grad(lambda s_: losses.perceptron_loss(s_, y).sum()))(s)
    # Documented subgradients: -y where y·s < 1 (hinge); -y where y·s ≤ 0 (perceptron, so a
    # descent step from w = 0 is the full Rosenblatt update, not half of it).
    np.testing.assert_array_equal(hinge_grad, np.where(margin < 1, -np.asarray(y), 0.0))
    np.testing.assert_array_equal(perceptron_grad, np.where(margin <= 0, -np.asarray(y), 0.0))


# ------------------------------------------------------ gradients (closed forms)


def test_gradients_match_closed_forms():
    z, y = RNG.normal(size=(3, 4)), random_probs((3, 4), zero_fraction=0.3)
    z[0] = 0.0  # a zero-initialised model: where the kinks of max(z, 0) and |z| meet
    k, t, target = np.array([0, 3, 1]), RNG.random((3, 4)), RNG.normal(size=(3, 4))
    per_example = {
        "ce": lambda z_: losses.softmax_cross_entropy(z_, jnp.asarray(y)),
        "ce_int": lambda z_: losses.softmax_cross_entropy_with_integer_labels(z_, jnp.asarray(k)),
        "bce": lambda z_: losses.sigmoid_binary_cross_entropy(z_, jnp.asarray(t)),
        "mse": lambda z_: losses.mean_squared_error(z_, jnp.asarray(target)),
    }
    grads = jax.jit(lambda z_: {name: jax.grad(lambda a: fn(a).sum())(z_)
                                for name, fn in per_example.items()})(jnp.asarray(z))
    softmax = np.exp(np_log_softmax(z))
    np.testing.assert_allclose(grads["ce"], softmax - y, atol=1e-6)
    np.testing.assert_allclose(grads["ce_int"], softmax - np.eye(4)[k], atol=1e-6)
    np.testing.assert_allclose(grads["bce"], 1 / (1 + np.exp(-z)) - t, atol=1e-6)
    np.testing.assert_allclose(grads["mse"], 2 * (z - target) / 4, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------ extreme inputs (float32/64)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_finite_values_and_gradients_at_extreme_logits(x64):
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        z = jnp.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype)
        y = jnp.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], dtype)  # exact zeros
        k = jnp.array([1, 2])
        cases = {  # loss of z, closed-form value (logsumexp(z) = max z here)
            "ce": (lambda z_: losses.softmax_cross_entropy(z_, y), np.array([2e4, 2e4])),
            "ce_int": (lambda z_: losses.softmax_cross_entropy_with_integer_labels(z_, k),
                       np.array([2e4, 0.0])),
            "bce": (lambda z_: losses.sigmoid_binary_cross_entropy(z_, y),
                    np.array([[1e4, 1e4, np.log(2)], [5e3, 5e3, 1e4]])),
            "kl": (lambda z_: losses.kl_divergence(jax.nn.log_softmax(z_), y),
                   np.array([2e4, 2e4 + np.log(0.5)])),
        }

        @jax.jit  # one compilation for every loss, value and gradient of this dtype
        def values_and_gradients(z_):
            return {name: (fn(z_), jax.grad(lambda a: fn(a).sum())(z_))
                    for name, (fn, _) in cases.items()}

        results = values_and_gradients(z)
        for name, (fn, expected) in cases.items():
            value, grad = results[name]
            assert value.dtype == dtype, name
            np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=name)
            np.testing.assert_allclose(fn(z), expected, rtol=1e-6, err_msg=name)  # un-jitted
            assert np.all(np.isfinite(grad)), name
        # Closed-form gradients at saturated logits: softmax(z) - y and σ(z) - y.
        np.testing.assert_allclose(results["ce"][1], [[1.0, -1.0, 0.0], [-0.5, -0.5, 1.0]],
                                   atol=1e-6)
        np.testing.assert_allclose(results["ce_int"][1], [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]],
                                   atol=1e-6)
        np.testing.assert_allclose(results["bce"][1], [[1.0, -1.0, 0.5], [-0.5, -0.5, 1.0]],
                                   atol=1e-6)


def test_zero_labels_on_minus_infinite_logits_contribute_nothing():
    # A class masked out with logit -inf: its zero label must not give 0 · (-inf) = nan.
    z = jnp.array([[0.0, 1.0, -jnp.inf], [2.0, -jnp.inf, -1.0]])
    y = jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    finite = np.array([[0.0, 1.0], [2.0, -1.0]])  # the logits that are not masked out
    expected = np_softmax_ce(finite, [[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(losses.softmax_cross_entropy(z, y), expected, rtol=1e-6)
    total, grad = jax.jit(jax.value_and_grad(
        lambda z_: losses.softmax_cross_entropy(z_, y).sum()))(z)
    np.testing.assert_allclose(total, expected.sum(), rtol=1e-6)
    softmax = np.exp(np_log_softmax(finite))
    np.testing.assert_allclose(grad, [[softmax[0, 0] - 0.5, softmax[0, 1] - 0.5, 0.0],
                                      [softmax[1, 0] - 1.0, 0.0, softmax[1, 1]]], atol=1e-6)
    # A positive label on a -inf logit is an infinite (not NaN) loss.
    assert losses.softmax_cross_entropy(z[0], jnp.array([0.0, 0.5, 0.5])) == np.inf


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_finite_gradients_with_respect_to_probabilities_with_zeros(x64):
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        p = jnp.array([0.0, 0.25, 0.75], dtype)
        log_q = jnp.log(jnp.array([0.2, 0.3, 0.5], dtype))
        z = jnp.array([3.0, -1.0, 0.5], dtype)
        fns = {"kl": lambda p_: losses.kl_divergence(log_q, p_),
               "ce": lambda p_: losses.softmax_cross_entropy(z, p_),
               "bce": lambda p_: losses.sigmoid_binary_cross_entropy(z, p_).sum()}
        results = jax.jit(lambda p_: {name: jax.value_and_grad(fn)(p_)
                                      for name, fn in fns.items()})(p)
        for name, (value, grad) in results.items():
            assert np.isfinite(value) and np.all(np.isfinite(grad)), name
        # Closed forms, also at p_c = 0: ∂CE/∂y_c = -log softmax(z)_c; ∂BCE/∂y = -z;
        # ∂KL/∂p_c = log p_c + 1 - log q_c for p_c > 0 and 0 (by definition) at p_c = 0.
        np.testing.assert_allclose(results["ce"][1], -np_log_softmax(np.asarray(z)), rtol=1e-5)
        np.testing.assert_allclose(results["bce"][1], -np.asarray(z), rtol=1e-6)
        expected_kl = np.log([1.0, 0.25, 0.75]) + 1 - np.log([0.2, 0.3, 0.5])
        expected_kl[0] = 0.0
        np.testing.assert_allclose(results["kl"][1], expected_kl, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
def test_low_precision_inputs_keep_their_dtype_and_match_float64(dtype):
    z = RNG.normal(size=(3, 6)) * 3
    z[0, :2] = [1e4, -1e4]  # large, yet inside float16's range (65504)
    z[1] = 0.0
    k = np.array([0, 3, 5])
    y = np.eye(6)[k]
    z_low, y_low = jnp.asarray(z, dtype), jnp.asarray(y, dtype)
    z_rounded = np.asarray(z_low, np.float64)  # the oracle sees the same rounded inputs
    per_example = {
        "ce": lambda z_: losses.softmax_cross_entropy(z_, y_low),
        "ce_int": lambda z_: losses.softmax_cross_entropy_with_integer_labels(z_, jnp.asarray(k)),
        "bce": lambda z_: losses.sigmoid_binary_cross_entropy(z_, y_low),
        "kl": lambda z_: losses.kl_divergence(jax.nn.log_softmax(z_), y_low),
    }
    results = jax.jit(lambda z_: {
        name: (fn(z_), jax.grad(lambda a: fn(a).astype(jnp.float32).sum())(z_))
        for name, fn in per_example.items()})(z_low)
    softmax = np.exp(np_log_softmax(z_rounded))
    sigmoid = 0.5 * (1 + np.tanh(z_rounded / 2))
    expected = {"ce": (np_softmax_ce(z_rounded, y), softmax - y),
                "ce_int": (np_softmax_ce(z_rounded, y), softmax - y),
                "bce": (np.logaddexp(0, z_rounded) - y * z_rounded, sigmoid - y),
                "kl": (np_softmax_ce(z_rounded, y), softmax - y)}  # one-hot: H(y) = 0
    tolerance = 4 * float(jnp.finfo(dtype).eps)
    for name, (value, grad) in results.items():
        assert value.dtype == dtype and grad.dtype == dtype, name
        want_value, want_grad = expected[name]
        value, grad = np.asarray(value, np.float64), np.asarray(grad, np.float64)
        error = np.abs(value - want_value)
        assert np.all(error <= tolerance * np.maximum(1, np.abs(want_value))), name
        np.testing.assert_allclose(grad, want_grad, atol=tolerance, err_msg=name)


def test_vmap_over_single_examples_matches_numpy():
    z, k = RNG.normal(size=(6, 4)), RNG.integers(0, 4, size=6)
    y = np.eye(4)[k]
    cases = (
        (losses.softmax_cross_entropy, y, np_softmax_ce(z, y)),
        (losses.softmax_cross_entropy_with_integer_labels, k,
         -np_log_softmax(z)[np.arange(6), k]),
        (losses.mean_squared_error, y, ((z - y) ** 2).mean(axis=-1)),
        (lambda a, b: losses.kl_divergence(jax.nn.log_softmax(a), b), y,
         np_kl(np_log_softmax(z), y)),
    )
    per_example = jax.jit(lambda z_, labels: [jax.vmap(fn)(z_, label) for (fn, _, _), label
                                              in zip(cases, labels)])
    got = per_example(jnp.asarray(z), [jnp.asarray(labels) for _, labels, _ in cases])
    for value, (_, _, expected) in zip(got, cases, strict=True):
        assert value.shape == (6,)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [losses.softmax_cross_entropy, losses.sigmoid_binary_cross_entropy,
                                losses.squared_error, losses.mean_squared_error,
                                losses.kl_divergence, losses.hinge_loss, losses.perceptron_loss])
def test_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        fn(jnp.ones((4, 3)), jnp.ones((4, 2)))


def test_integer_labels_shape_and_dtype_errors():
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(4,\)"):
        losses.softmax_cross_entropy_with_integer_labels(jnp.ones((3, 5)), jnp.zeros(4, jnp.int32))
    with pytest.raises(TypeError, match="integer dtype"):
        losses.softmax_cross_entropy_with_integer_labels(jnp.ones((3, 5)), jnp.zeros(3))


def test_out_of_range_integer_labels():
    logits = jnp.asarray(RNG.normal(size=(3, 4)))
    for bad in ([0, 4, 1], [0, -1, 1]):
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            losses.check_integer_labels(jnp.array(bad), 4)
        with pytest.raises(ValueError, match=r"\[0, 4\)"):  # eager call checks too
            losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array(bad))
        # Documented: inside jit the bad example's loss is NaN, its gradient zero.
        fn = jax.jit(losses.softmax_cross_entropy_with_integer_labels)
        value = fn(logits, jnp.array(bad))
        value = np.asarray(value)
        assert np.isnan(value[1]) and np.all(np.isfinite(value[[0, 2]]))
        grad = jax.jit(jax.grad(lambda z, k: fn(z, k)[1]))(logits, jnp.array(bad))
        np.testing.assert_array_equal(grad, 0.0)
    losses.check_integer_labels(np.array([0, 3, 2]), 4)  # in range: no error
    with pytest.raises(TypeError, match="integer dtype"):
        losses.check_integer_labels(np.array([0.0, 1.0]), 4)


def test_sign_labels_checked_for_hinge_and_perceptron_loss():
    with pytest.raises(ValueError, match="-1 or \\+1"):
        losses.hinge_loss(jnp.ones(3), jnp.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="-1 or \\+1"):
        losses.perceptron_loss(jnp.ones(3), jnp.array([1.0, 2.0, 1.0]))


def test_integer_logits_rejected():
    with pytest.raises(TypeError, match="logits"):
        losses.softmax_cross_entropy(jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3)))


@pytest.mark.parametrize("dtype, num_classes", [(np.uint8, 256), (np.int8, 200), (np.int16, 40000)])
def test_integer_labels_of_a_dtype_too_narrow_for_the_class_count(dtype, num_classes):
    """256 classes with uint8 labels (byte-level models): C itself does not fit the dtype."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, num_classes)).astype(np.float32)
    labels = np.array([0, 5, min(num_classes, np.iinfo(dtype).max + 1) - 1], dtype)
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(3), labels.astype(int)]
    for fn in (losses.softmax_cross_entropy_with_integer_labels,
               jax.jit(losses.softmax_cross_entropy_with_integer_labels)):
        np.testing.assert_allclose(fn(jnp.asarray(logits), jnp.asarray(labels)), expected,
                                   rtol=1e-5)
    grad = jax.grad(lambda z: losses.softmax_cross_entropy_with_integer_labels(
        z, jnp.asarray(labels)).sum())(jnp.asarray(logits))
    softmax = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    softmax[np.arange(3), labels.astype(int)] -= 1.0
    np.testing.assert_allclose(grad, softmax, atol=1e-6)
