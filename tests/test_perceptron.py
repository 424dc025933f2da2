"""Perceptron: exactly the plain-loop rule; convergence on separable data; one-vs-rest."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _jax_events import COMPILE, TRACE, recording_jax_events
from functional_dl import perceptron

RNG = np.random.default_rng(5)


def np_perceptron(X, y, orders, learning_rate):
    """The rule written as a plain loop: w ← w + ηyx, b ← b + ηy whenever y(w·x + b) ≤ 0."""
    w, b = np.zeros(X.shape[1]), 0.0
    mistakes = []
    for order in orders:
        count = 0
        for i in order:
            if y[i] * (sum(w_j * x_j for w_j, x_j in zip(w, X[i])) + b) <= 0:
                w = w + learning_rate * y[i] * X[i]
                b = b + learning_rate * y[i]
                count += 1
        mistakes.append(count)
    return w, b, mistakes


def jax_orders(key, epochs, n):
    """The documented visiting order (see the module docstring)."""
    if key is None:
        return [np.arange(n)] * epochs
    return [np.asarray(jax.random.permutation(k, n)) for k in jax.random.split(key, epochs)]


def integer_data(n=24, d=3, separable=False):
    """Small integer features: every sum is exact in float32, so results match bit for bit."""
    X = RNG.integers(-4, 5, size=(n, d)).astype(np.float64)
    if separable:
        scores = X @ np.array([2.0, -1.0, 1.0]) + 0.5
        y = np.where(scores > 0, 1, -1)
    else:
        y = RNG.choice([-1, 1], size=n)
    return X, y


@pytest.mark.parametrize("key", [None, jax.random.key(3)], ids=["given-order", "shuffled"])
@pytest.mark.parametrize("learning_rate", [1.0, 0.5])
def test_fit_equals_plain_loop_exactly(key, learning_rate):
    X, y = integer_data()
    params, mistakes = perceptron.fit_with_history(X, y, epochs=4, learning_rate=learning_rate,
                                                   key=key)
    w, b, expected_mistakes = np_perceptron(X, y, jax_orders(key, 4, len(y)), learning_rate)
    np.testing.assert_array_equal(params["w"], w)
    assert float(params["b"]) == b
    np.testing.assert_array_equal(mistakes, expected_mistakes)
    assert params["w"].shape == (3,) and params["b"].shape == ()


def test_fit_matches_plain_loop_on_real_valued_data_float64():
    with jax.enable_x64(True):
        X = RNG.normal(size=(30, 4))
        y = np.where(X @ RNG.normal(size=4) > 0, 1, -1)
        params, mistakes = perceptron.fit_with_history(X, y, epochs=3, learning_rate=0.3)
        w, b, expected_mistakes = np_perceptron(X, y, jax_orders(None, 3, 30), 0.3)
        np.testing.assert_allclose(params["w"], w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(params["b"], b, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(mistakes, expected_mistakes)


def test_converges_on_separable_data():
    X, y = integer_data(n=40, separable=True)
    params, mistakes = perceptron.fit_with_history(X, y, epochs=50, key=jax.random.key(0))
    assert int(mistakes[-1]) == 0 and int(mistakes[0]) > 0
    np.testing.assert_array_equal(perceptron.predict(params, X), y)
    assert np.array_equal(perceptron.fit(X, y, epochs=50, key=jax.random.key(0))["w"], params["w"])


def test_a_score_of_exactly_zero_is_a_mistake_also_after_the_first_update():
    # Worked by hand: (x=[1,0], y=+1) at w=0 is a mistake: w=[1,0], b=1. Then (x=[-1,0],
    # y=+1) scores -1 + 1 = 0, on the boundary: a mistake under y·(w·x + b) ≤ 0, giving
    # w=[0,0], b=2, after which both samples score 2 > 0.
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    params, mistakes = perceptron.fit_with_history(X, np.array([1, 1]), epochs=2)
    np.testing.assert_array_equal(params["w"], [0.0, 0.0])
    assert float(params["b"]) == 2.0
    np.testing.assert_array_equal(mistakes, [2, 0])


def test_predict_matches_numpy():
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    X = RNG.normal(size=(9, 2))
    X[0] = [1.5, 1.0]  # score exactly 0 → -1
    expected = np.where(X @ np.array([1.0, -2.0]) + 0.5 > 0, 1, -1)
    np.testing.assert_array_equal(perceptron.predict(params, X), expected)
    assert int(perceptron.predict(params, X)[0]) == -1


def test_one_vs_rest_equals_one_binary_fit_per_class():
    X = RNG.integers(-3, 4, size=(30, 2)).astype(np.float64)
    labels = np.argmax(X @ np.array([[1.0, -1.0, 0.2], [0.3, 1.0, -1.0]]) + [0.1, 0.2, 0.3], axis=1)
    key = jax.random.key(1)
    params, mistakes = perceptron.fit_one_vs_rest_with_history(X, labels, 3, epochs=5, key=key)
    assert params["w"].shape == (3, 2) and params["b"].shape == (3,)
    assert mistakes.shape == (3, 5)
    for c in range(3):
        signs = np.where(labels == c, 1, -1)
        w, b, expected_mistakes = np_perceptron(X, signs, jax_orders(key, 5, 30), 1.0)
        np.testing.assert_array_equal(params["w"][c], w)
        assert float(params["b"][c]) == b
        np.testing.assert_array_equal(mistakes[c], expected_mistakes)
    scores = X @ np.asarray(params["w"]).T + np.asarray(params["b"])
    np.testing.assert_array_equal(perceptron.predict_one_vs_rest(params, X), scores.argmax(axis=1))
    np.testing.assert_array_equal(
        perceptron.fit_one_vs_rest(X, labels, 3, epochs=5, key=key)["w"], params["w"])


def test_matches_scikit_learn_perceptron_in_the_given_order():
    """The module docstring's recipe: Perceptron(eta0, max_iter, shuffle=False, tol=None)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y = integer_data(n=30)
    labels = RNG.integers(0, 3, size=30)
    for learning_rate, epochs in ((1.0, 1), (0.5, 3)):
        settings = dict(eta0=learning_rate, max_iter=epochs, shuffle=False, tol=None)
        with warnings.catch_warnings():  # some versions warn that max_iter was reached
            warnings.simplefilter("ignore")
            binary = linear_model.Perceptron(**settings).fit(X, y)
        params = perceptron.fit(X, y, epochs=epochs, learning_rate=learning_rate)
        np.testing.assert_array_equal(params["w"], binary.coef_[0])
        np.testing.assert_array_equal(params["b"], binary.intercept_[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            multi = linear_model.Perceptron(**settings).fit(X, labels)
        params = perceptron.fit_one_vs_rest(X, labels, num_classes=3, epochs=epochs,
                                            learning_rate=learning_rate)
        np.testing.assert_array_equal(params["w"], multi.coef_)
        np.testing.assert_array_equal(params["b"], multi.intercept_)


def test_with_history_returns_a_named_pair():
    X, y = integer_data(n=8)
    result = perceptron.fit_with_history(X, y, epochs=2)
    assert isinstance(result, perceptron.PerceptronResult)
    params, mistakes = result
    assert params is result.params and mistakes is result.mistakes
    ovr = perceptron.fit_one_vs_rest_with_history(X, (y > 0).astype(int), num_classes=2, epochs=2)
    assert isinstance(ovr, perceptron.PerceptronResult) and ovr.mistakes.shape == (2, 2)


def test_bad_input():
    X, y = integer_data(n=6)
    with pytest.raises(ValueError, match=r"-1 or \+1"):
        perceptron.fit(X, np.array([0, 1, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match="X and y must all have the same length"):
        perceptron.fit(X, y[:5])
    with pytest.raises(ValueError, match="X and y must all have the same length"):
        perceptron.fit_one_vs_rest(X, np.zeros(5, int), 2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        perceptron.fit_one_vs_rest(X, np.array([0, 1, 2, 3, 0, 1]), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        perceptron.fit_one_vs_rest(X, np.array([0, 1, 2, -1, 0, 1]), 3)
    with pytest.raises(TypeError, match="y must hold integer"):  # a wrong kind of label
        perceptron.fit_one_vs_rest(X, np.zeros(6), 3)
    with pytest.raises(ValueError, match="num_classes"):
        perceptron.fit_one_vs_rest(X, np.zeros(6, int), num_classes=1)
    with pytest.raises(TypeError, match="epochs"):
        perceptron.fit(X, y, epochs=2.0)
    with pytest.raises(ValueError, match="epochs"):
        perceptron.fit(X, y, epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        perceptron.fit(X, y, learning_rate=0.0)
    with pytest.raises(ValueError, match="n_samples, n_features"):
        perceptron.fit(X[0], y)
    with pytest.raises(ValueError, match="features"):
        perceptron.predict({"w": jnp.ones(2), "b": jnp.zeros(())}, X)
    for bad_w in (jnp.ones((4, 2)), jnp.ones(3)):  # wrong feature count, no class axis
        with pytest.raises(ValueError, match=r"params\['w'\] must have shape .*features of X"):
            perceptron.predict_one_vs_rest({"w": bad_w, "b": jnp.zeros(4)}, X)
    for bad_value in (np.nan, np.inf):
        X_bad = X.copy()
        X_bad[2, 1] = bad_value
        with pytest.raises(ValueError, match="X must be finite"):
            perceptron.fit(X_bad, y)
        with pytest.raises(ValueError, match="X must be finite"):
            perceptron.fit_one_vs_rest(X_bad, np.zeros(6, int), 2)
    for bad_key in (3, jax.random.split(jax.random.key(0), 2), np.zeros(2, np.float32)):
        with pytest.raises(TypeError, match="key must be (a|one) PRNG key"):
            perceptron.fit(X, y, key=bad_key)
    perceptron.fit(X, y, key=jax.random.PRNGKey(0))  # a raw uint32 key is a key too


def loops_in(jaxpr, depth=0):
    """``(nesting depth, primitive, length)`` of every scan / while loop, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        is_loop = eqn.primitive.name in ("scan", "while")
        if is_loop:
            found.append((depth, eqn.primitive.name, eqn.params.get("length")))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns"):
                    found += loops_in(sub, depth + is_loop)
    return found


def test_the_whole_fit_is_one_jit_around_one_nested_scan():
    X, y = jnp.zeros((13, 2)), jnp.ones(13, jnp.int32)
    closed = jax.make_jaxpr(lambda X, y: perceptron.fit_with_history(
        X, y, epochs=3, learning_rate=0.5, key=jax.random.key(0)))(X, y)
    assert [eqn.primitive.name for eqn in closed.jaxpr.eqns].count("jit") == 1
    # epochs outside, samples inside, and no other loop anywhere
    assert loops_in(closed.jaxpr) == [(0, "scan", 3), (1, "scan", 13)]


@pytest.mark.parametrize("one_vs_rest", [False, True], ids=["binary", "one-vs-rest"])
def test_refitting_new_data_of_the_same_shape_neither_retraces_nor_recompiles(one_vs_rest):
    """epochs (and num_classes) are static; X, y, learning_rate and key are traced."""
    jitted = "_fit_one_vs_rest" if one_vs_rest else "_fit_binary"
    n, d = (19, 4) if one_vs_rest else (17, 5)  # shapes no other test uses: not yet compiled
    data = [(RNG.integers(-3, 4, (n, d)).astype(np.float32), RNG.integers(0, 3, n))
            for _ in range(2)]
    data = [(jnp.asarray(X), jnp.asarray(labels if one_vs_rest else 2 * (labels % 2) - 1,
                                         jnp.int32)) for X, labels in data]
    # binary: shuffled, a new key must not retrace; one-vs-rest: in the given order
    keys = [None, None] if one_vs_rest else [jax.random.key(10), jax.random.key(11)]

    def fit(X, y, learning_rate, key, epochs):
        if one_vs_rest:
            return perceptron.fit_one_vs_rest_with_history(X, y, 3, epochs=epochs,
                                                           learning_rate=learning_rate, key=key)
        return perceptron.fit_with_history(X, y, epochs=epochs, learning_rate=learning_rate,
                                           key=key)

    with recording_jax_events() as events:
        fit(*data[0], 1.0, keys[0], 3)
        first, events[:] = list(events), []
        params, mistakes = fit(*data[1], 0.5, keys[1], 3)
        second, events[:] = list(events), []
        fit(*data[1], 0.5, keys[1], 4)  # a new epoch count is a new program: the listener sees it
        third = list(events)
    compiled_once = [(TRACE, jitted), (COMPILE, f"jit({jitted})")]
    # the first call may also compile JAX's own helpers once (e.g. casting the learning rate)
    assert [e for e in first if e[1] in (jitted, f"jit({jitted})")] == compiled_once
    assert second == []
    assert third == compiled_once
    # ... and the cached program used the new values, not the first call's
    X, y = (np.asarray(a) for a in data[1])
    for c in range(3 if one_vs_rest else 1):
        signs = np.where(y == c, 1, -1) if one_vs_rest else y
        w, b, expected_mistakes = np_perceptron(X, signs, jax_orders(keys[1], 3, n), 0.5)
        at = (c,) if one_vs_rest else ()
        np.testing.assert_array_equal(params["w"][at], w)
        assert float(params["b"][at]) == b
        np.testing.assert_array_equal(mistakes[at], expected_mistakes)
