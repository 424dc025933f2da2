"""Bad input to optim: each case raises the stated exception type with a message that names
the offending argument (a regular expression searched in the message)."""
import jax.numpy as jnp
import numpy as np

from _bad_input import *  # noqa: F401,F403 (the shared models, data, case() and files fixture)
from _bad_input import case, files, table_tests  # noqa: F401

CASES = [
    # ---- optim: hyperparameters
    case("adam negative learning_rate", lambda f: optim.adam(-1.0), ValueError, "learning_rate"),
    case("adam b1 = 1", lambda f: optim.adam(1e-3, b1=1.0), ValueError, r"\bb1\b"),
    case("adam negative b2", lambda f: optim.adam(1e-3, b2=-0.1), ValueError, r"\bb2\b"),
    case("adam eps = 0", lambda f: optim.adam(1e-3, eps=0.0), ValueError, r"\beps\b"),
    case("adamw negative weight_decay", lambda f: optim.adamw(1e-3, weight_decay=-1.0),
         ValueError, "weight_decay"),
    case("rmsprop decay > 1", lambda f: optim.rmsprop(1e-3, decay=1.5), ValueError, "decay"),
    case("momentum beta = 1", lambda f: optim.momentum(0.1, beta=1.0), ValueError, "beta"),
    case("sgd learning_rate array", lambda f: optim.sgd(jnp.ones(3)), ValueError,
         "learning_rate"),
    case("sgd learning_rate NaN", lambda f: optim.sgd(float("nan")), ValueError, "learning_rate"),
    case("clip max_norm = 0", lambda f: optim.clip_by_global_norm(0.0), ValueError, "max_norm"),
    case("cosine_decay decay_steps = 0", lambda f: optim.schedules.cosine_decay(0.1, 0),
         ValueError, "decay_steps"),
    case("piecewise_constant value count",
         lambda f: optim.schedules.piecewise_constant([10], [1.0]), ValueError, "values"),
    case("chain member not an optimizer", lambda f: optim.chain(optim.sgd(0.1), "adam"),
         TypeError, "argument 1"),
    # ---- optim: trees and dtypes
    case("adam init integer params", lambda f: optim.adam(1e-3).init({"w": jnp.ones(3, jnp.int32)}),
         TypeError, r"params\['w'\]"),
    case("sgd grads tree differs from params",
         lambda f: optimizer_update(optim.sgd(0.1), {"w": jnp.ones(3)}), ValueError, "grads"),
    case("adam grads leaf shape", lambda f: optimizer_update(
        optim.adam(1e-3), {"w": jnp.ones(4), "b": jnp.zeros(())}), ValueError, r"grads\['w'\]"),
    case("momentum integer grads", lambda f: optimizer_update(
        optim.momentum(0.1), {"w": jnp.ones(3, jnp.int32), "b": jnp.zeros(())}),
        TypeError, r"grads\['w'\]"),
    case("apply_updates tree differs", lambda f: optim.apply_updates(PARAMS, {"w": jnp.ones(3)}),
         ValueError, "updates"),
]


(test_case_names_are_unique,
 test_bad_input_raises_a_clear_error_naming_the_argument) = table_tests(CASES)
