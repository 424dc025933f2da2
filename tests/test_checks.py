"""The shared vocabulary of argument checks: each accepts what it should and raises the
stated exception, naming the argument, for what it should not."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import checks


@pytest.mark.parametrize("value", [3, np.int64(3), jnp.asarray(3)])
def test_whole_number_accepts_integers(value):
    assert checks.whole_number("n", value, minimum=1) == 3


@pytest.mark.parametrize("value, error", [
    (True, TypeError), (2.0, TypeError), ("3", TypeError), (None, TypeError),
    (jnp.ones(2, jnp.int32), TypeError), (0, ValueError), (11, ValueError)])
def test_whole_number_rejects(value, error):
    with pytest.raises(error, match=r"^epochs must be an int"):
        checks.whole_number("epochs", value, minimum=1, maximum=10)


def test_whole_number_rejects_tracer():
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda n: checks.whole_number("n", n))(3)


@pytest.mark.parametrize("call, ok", [
    (lambda v: checks.positive("lr", v), [1e-3, 1, np.float32(2.0), jnp.asarray(0.5)]),
    (lambda v: checks.non_negative("lr", v), [0.0, 0, 5.0]),
    (lambda v: checks.probability("p", v), [0.0, 1.0, 0.5]),
    (lambda v: checks.real_in("b1", v, 0.0, 1.0, high_closed=False), [0.0, 0.999]),
])
def test_real_checks_accept(call, ok):
    for value in ok:
        call(value)


@pytest.mark.parametrize("call, value, error", [
    (lambda v: checks.positive("lr", v), 0.0, ValueError),
    (lambda v: checks.positive("lr", v), float("inf"), ValueError),
    (lambda v: checks.positive("lr", v), float("nan"), ValueError),
    (lambda v: checks.positive("lr", v), "0.1", TypeError),
    (lambda v: checks.positive("lr", v), None, TypeError),
    (lambda v: checks.positive("lr", v), True, TypeError),
    (lambda v: checks.positive("lr", v), jnp.ones(2), ValueError),
    (lambda v: checks.non_negative("lr", v), -1e-9, ValueError),
    (lambda v: checks.probability("lr", v), 1.5, ValueError),
    (lambda v: checks.real_in("lr", v, 0.0, 1.0, high_closed=False), 1.0, ValueError),
])
def test_real_checks_reject(call, value, error):
    with pytest.raises(error, match=r"^lr must be"):
        call(value)


def test_value_checks_skip_tracers_and_allow_schedules():
    assert jax.jit(lambda v: (checks.positive("lr", v), v)[1])(-1.0) == -1.0
    checks.positive("lr", lambda step: 0.1, allow_schedule=True)
    with pytest.raises(TypeError, match="lr"):
        checks.positive("lr", lambda step: 0.1)


def test_prng_key():
    checks.prng_key("key", jax.random.key(0), single=True)
    checks.prng_key("key", jax.random.PRNGKey(0), single=True)
    checks.prng_key("key", None, allow_none=True)
    with pytest.raises(ValueError, match="key: a PRNG key is needed for shuffling"):
        checks.prng_key("key", None, what="shuffling")
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        checks.prng_key("key", 0)
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        checks.prng_key("key", jax.random.split(jax.random.key(0)), single=True)


def test_optimizer_and_dtypes():
    class Fake:
        init = update = staticmethod(lambda *a: None)
    checks.optimizer("optimizer", Fake())
    with pytest.raises(TypeError, match="optimizer must be an Optimizer"):
        checks.optimizer("optimizer", object())
    assert checks.float_dtype(None) == checks.default_float_dtype()
    assert checks.float_dtype(jnp.bfloat16) == jnp.bfloat16
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype"):
        checks.float_dtype(jnp.int32)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        checks.floating_dtype("x", np.arange(3))
    with pytest.raises(TypeError, match="x must hold integers"):
        checks.integer_dtype("x", np.ones(3))


def test_labels():
    checks.labels_in("y", np.array([0, 2, 1]), 3)
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 3\), got min 0 and max 3"):
        checks.labels_in("y", np.array([0, 3]), 3)
    with pytest.raises(TypeError, match="y must hold integer class labels"):
        checks.labels_in("y", np.array([0.0, 1.0]), 3)
    checks.sign_labels("y", np.array([1, -1]))
    with pytest.raises(ValueError, match=r"y must hold binary labels -1 or \+1, got values \[0\]"):
        checks.sign_labels("y", np.array([1, 0]))


def test_shapes_and_values():
    checks.rank("x", np.ones((2, 3)), 2, "(T, K)")
    with pytest.raises(ValueError, match=r"x must have shape \(T, K\), got shape \(2,\)"):
        checks.rank("x", np.ones(2), 2, "(T, K)")
    with pytest.raises(ValueError, match=r"x must have shape \(3,\)"):
        checks.shape_is("x", np.ones(2), (3,))
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        checks.same_shape("a", np.ones(2), "b", np.ones(3))
    checks.finite("x", np.array([1.0, np.nan]), where=np.array([True, False]))
    with pytest.raises(ValueError, match="x must be finite"):
        checks.finite("x", np.array([1.0, np.inf]))
    assert checks.leading_length("data", (np.ones((4, 2)), np.ones(4))) == 4
    with pytest.raises(ValueError, match="same length"):
        checks.leading_length("data", (np.ones((4, 2)), np.ones(3)))
    with pytest.raises(ValueError, match="at least one example"):
        checks.leading_length("data", np.ones((0, 2)))
    assert checks.one_of("mode", "min", ("min", "max")) == "min"
    with pytest.raises(ValueError, match="mode must be one of 'min', 'max', got 'low'"):
        checks.one_of("mode", "low", ("min", "max"))


def test_trees():
    checks.float_leaves("params", {"w": jnp.ones(2)})
    with pytest.raises(TypeError, match=r"adam: every leaf of params .* leaf params\['n'\] has dtype int32"):
        checks.float_leaves("params", {"w": jnp.ones(2), "n": jnp.ones(2, jnp.int32)}, owner="adam")
    checks.same_structure("updates", {"w": 1.0}, "params", {"w": 2.0})
    with pytest.raises(ValueError, match="tree structure of updates differs"):
        checks.same_structure("updates", {"w": 1.0}, "params", {"v": 2.0})
    with pytest.raises(ValueError, match=r"leaf updates\['w'\] has shape \(2,\)"):
        checks.same_structure("updates", {"w": jnp.ones(2)}, "params", {"w": jnp.ones(3)})


def test_distributions():
    checks.probability_rows("A", np.array([[0.5, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="A must sum to 1 along its last axis"):
        checks.probability_rows("A", np.array([[0.5, 0.6], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="A must be non-negative"):
        checks.probability_rows("A", np.array([1.5, -0.5]))
    checks.positive_definite("S", np.eye(2)[None])
    with pytest.raises(ValueError, match=r"S must be positive-definite, but S\[1\] has"):
        checks.positive_definite("S", np.stack([np.eye(2), -np.eye(2)]))
    with pytest.raises(ValueError, match="S must be symmetric"):
        checks.positive_definite("S", np.array([[1.0, 0.5], [0.0, 1.0]]))


def test_boolean():
    assert checks.boolean("flag", np.bool_(True)) is True
    with pytest.raises(TypeError, match="flag must be True or False, got int 1"):
        checks.boolean("flag", 1)
