"""Bad input to nn: each case raises the stated exception type with a message that names
the offending argument (a regular expression searched in the message)."""
import jax.numpy as jnp
import numpy as np

from _bad_input import *  # noqa: F401,F403 (the shared models, data, case() and files fixture)
from _bad_input import case, files, table_tests  # noqa: F401

CASES = [
    # ---- nn
    case("Dropout rate = 1", lambda f: nn.Dropout(1.0), ValueError, "rate"),
    case("Dropout without key", lambda f: nn.Dropout(0.5).apply({}, jnp.ones(3), train=True),
         ValueError, "key"),
    case("mlp empty layer_sizes", lambda f: nn.mlp([]), ValueError, "layer_sizes"),
    case("mlp unknown activation", lambda f: nn.mlp([3], activation="no_such_activation"), ValueError,
         "activation"),
    case("Dense features = 0", lambda f: nn.Dense(0), ValueError, "features"),
    case("Dense input features", lambda f: nn.Dense(3).apply(
        {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}, jnp.ones((2, 5))), ValueError, r"\bx\b"),
    case("Dense input_shape with a 0", lambda f: nn.Dense(3).init(KEY, (-1, 0)), ValueError,
         "input_shape"),
    case("serial params name of no layer", lambda f: nn.mlp([3]).apply(
        {**MLP_PARAMS_WITHOUT_LAST_LAYER, "dense_7": {}}, jnp.ones((2, 4))), ValueError, "params"),
    case("mlp params missing a layer", lambda f: TWO_LAYER_MLP.apply(
        MLP_PARAMS_WITHOUT_LAST_LAYER, jnp.ones((2, 4))), ValueError, "params"),
    case("Dense input_shape not numbers", lambda f: nn.Dense(3).init(KEY, "abc"), TypeError,
         "input_shape"),
    case("he_normal integer dtype", lambda f: nn.initializers.he_normal()(KEY, (3, 3), jnp.int32),
         TypeError, "dtype"),
    case("Conv2D params without a kernel", lambda f: nn.Conv2D(2, 3).apply(
        {"b": jnp.zeros(2)}, jnp.ones((1, 4, 4, 1))), ValueError, "params"),
    case("Conv2D fractional strides", lambda f: nn.Conv2D(2, 3, strides=1.5), ValueError,
         "strides"),
    case("backprop class target out of range", lambda f: nn.backprop.backprop(
        TWO_LAYER_MLP.init(KEY, (-1, 4))[1], jnp.ones((2, 4)), jnp.array([0, 2])), ValueError,
        "targets"),
]


(test_case_names_are_unique,
 test_bad_input_raises_a_clear_error_naming_the_argument) = table_tests(CASES)
