"""The hidden Markov model as data, its checks, and the bridge from a model to the inference.

``HMM(initial_probs, transition_matrix, emissions)`` with K hidden states:
``initial_probs[k] = p(z_1 = k)``, ``transition_matrix[i, j] = p(z_t = j | z_{t−1} = i)``, and
``emissions`` an ``EmissionModel`` (``b_k(x) = p(x_t = x | z_t = k)``).  The joint probability
of states and observations is

    p(z_{1:T}, x_{1:T}) = π_{z_1} b_{z_1}(x_1) Π_{t=2..T} A_{z_{t−1} z_t} b_{z_t}(x_t).

Inference, sequential (``inference``, ``decoding``) and parallel (``parallel``) alike, works on
``(π, A, log_likelihoods, length)``; ``on_model`` turns such a function into one of
``(model, observations, length)``; ``check_inference_shapes`` and ``SmootherResult`` are
shared by both.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array
from functional_dl.hmm import validation
from functional_dl.hmm._numerics import replace_padding
from functional_dl.hmm.emissions import EmissionModel, check_emission_model


class HMM(NamedTuple):
    """A K-state HMM; a pytree, so it can be jitted, vmapped, differentiated and checkpointed."""
    initial_probs: Array  # (K,)
    transition_matrix: Array  # (K, K), rows sum to 1
    emissions: EmissionModel  # num_states == K

    @property
    def num_states(self) -> int:
        return self.initial_probs.shape[0]


class SmootherResult(NamedTuple):
    """What ``smoother`` (sequential or parallel) returns (padded rows of the (T, K) arrays are 0)."""
    log_likelihood: Array  # scalar, log p(x_{1:L})
    filtered_probs: Array  # (T, K), p(z_t | x_{1:t})
    smoothed_probs: Array  # (T, K), γ_t = p(z_t | x_{1:L})
    transition_counts: Array  # (K, K), Σ_t ξ_t(i, j) = Σ_t p(z_t = i, z_{t+1} = j | x_{1:L})


def check(model: HMM, observations: Any = None, lengths: Any = None, *,
          lengths_name: str = "lengths") -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad argument; return None if all is well.

    Checks: ``model`` an ``HMM`` whose ``emissions`` implement ``EmissionModel``;
    ``initial_probs`` ``(K,)`` and ``transition_matrix`` ``(K, K)`` non-negative, finite,
    each row summing to 1 within 1e-4 relative; the emission model's K agrees; the emission
    model's own checks (e.g. categorical probabilities, symbols in ``[0, V)``, Gaussian D and
    positive-definite covariances) on the non-padded observations; ``lengths`` integers in
    ``[1, T]`` with the batch shape of ``observations``.

    ``observations`` is one sequence ``(T,) + event_shape`` (then ``lengths`` is None or a scalar)
    or a batch ``(B, T) + event_shape`` (then ``lengths`` is None or ``(B,)``); with
    ``observations=None`` only the parameters are checked.  Shape checks are
    static and run inside ``jit`` too; value checks run only on concrete (non-traced) arrays.
    ``lengths_name`` is the argument's name in messages (``length`` for one sequence).
    """
    if not isinstance(model, HMM):
        raise TypeError(f"model must be an HMM(initial_probs, transition_matrix, emissions), "
                        f"got {type(model).__name__}")
    _no_lists(model)
    emissions = model.emissions
    check_emission_model("model.emissions", emissions)
    checks.rank("initial_probs", model.initial_probs, 1, "(K,)")
    num_states = np.shape(model.initial_probs)[0]
    checks.shape_is("transition_matrix", model.transition_matrix, (num_states, num_states),
                    "(K, K) to match initial_probs")
    if emissions.num_states != num_states:
        raise ValueError(f"emissions must describe K = {num_states} states (from initial_probs), "
                         f"got {emissions.num_states}")
    checks.probability_rows("initial_probs", model.initial_probs)
    checks.probability_rows("transition_matrix", model.transition_matrix)
    if observations is None:
        emissions.check(None)
        return
    valid = validation.valid_positions(observations, lengths, emissions.event_ndim,
                                       name=lengths_name)
    emissions.check(observations, valid)


def _fields(model: HMM) -> list[tuple[str, Any]]:
    """``[(name, value)]`` of the model's parameters, emission fields as ``emissions.<field>``."""
    fields = [("initial_probs", model.initial_probs), ("transition_matrix", model.transition_matrix)]
    emissions = model.emissions
    if hasattr(emissions, "_fields"):  # a NamedTuple family
        fields += [(f"emissions.{name}", getattr(emissions, name)) for name in emissions._fields]
    return fields


def _no_lists(model: HMM) -> None:
    """TypeError naming the first parameter given as a Python list or tuple (not an array)."""
    for name, value in _fields(model):
        if isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be an array, got a Python {type(value).__name__}; "
                            f"pass jnp.asarray(...) (hmm.baum_welch and hmm.fit convert lists "
                            f"themselves)")


def as_array_model(model: Any) -> Any:
    """``model`` with parameters given as Python lists or tuples turned into NumPy arrays
    (float64 for floats, cast to the default float type by the compiled code); other values,
    and anything that is not an ``HMM``, are returned as they are."""
    if not isinstance(model, HMM):
        return model

    def convert(value):
        return np.asarray(value) if isinstance(value, (list, tuple)) else value

    emissions = model.emissions
    if hasattr(emissions, "_fields"):
        emissions = emissions._replace(**{name: convert(getattr(emissions, name))
                                          for name in emissions._fields})
    return HMM(convert(model.initial_probs), convert(model.transition_matrix), emissions)


def check_one_sequence(model: HMM, observations: Any, length: Any = None) -> None:
    """``check`` for the single-sequence functions: ``observations`` must be ``(T,) + event_shape``."""
    event_ndim = getattr(model.emissions, "event_ndim", 0) if isinstance(model, HMM) else 0
    shape = tuple(np.shape(observations))
    if len(shape) > 1 + event_ndim:
        raise ValueError(f"observations must be one sequence with {1 + event_ndim} dimension(s) "
                         f"((T,) + event shape), got shape {shape}; use jax.vmap for a batch")
    check(model, observations, length, lengths_name="length")


def check_inference_shapes(initial_probs: Any, transition_matrix: Any, log_likelihoods: Any,
                           length: Any, *, time_varying: bool = False) -> None:
    """Static checks of the low-level arguments (also inside ``jit``); ``initial_probs`` may be
    None.  With ``time_varying`` the transition matrix may also be ``(T − 1, K, K)``, one
    matrix per step: ``A[t]`` takes ``z_t`` to ``z_{t+1}`` (input-driven HMMs)."""
    checks.rank("log_likelihoods", log_likelihoods, 2, "(T, K) with T >= 1")
    if jnp.shape(log_likelihoods)[0] < 1:
        raise ValueError(f"log_likelihoods must have shape (T, K) with T >= 1, "
                         f"got {jnp.shape(log_likelihoods)}")
    checks.floating_dtype("log_likelihoods", log_likelihoods)
    num_states = jnp.shape(log_likelihoods)[1]
    if initial_probs is not None:
        checks.shape_is("initial_probs", initial_probs, (num_states,),
                        "(K,) to match log_likelihoods")
    num_steps = jnp.shape(log_likelihoods)[0]
    if not (time_varying and jnp.ndim(transition_matrix) == 3):
        checks.shape_is("transition_matrix", transition_matrix, (num_states, num_states),
                        "(K, K) to match log_likelihoods"
                        + (", or (T - 1, K, K), one per step" if time_varying else ""))
    else:
        checks.shape_is("transition_matrix", transition_matrix,
                        (max(num_steps - 1, 0), num_states, num_states),
                        "(K, K) or (T - 1, K, K) to match log_likelihoods (T, K)")
    if length is not None and jnp.ndim(length) != 0:
        raise ValueError(f"length must be a scalar (one sequence's length; jax.vmap for a "
                         f"batch), got shape {jnp.shape(length)}")


def model_log_likelihoods(model: HMM, observations: Array, length: Array | None = None) -> Array:
    """The ``(T, K)`` emission log-likelihoods with padded observations replaced first."""
    return model.emissions.log_likelihoods(replace_padding(observations, length))


def _log_likelihood_arguments(model: HMM, observations: Array, length: Array | None):
    """``(π, A, log-likelihoods, length)``, ``length`` None becoming T."""
    lls = model_log_likelihoods(model, observations, length)
    length = lls.shape[0] if length is None else length
    return model.initial_probs, model.transition_matrix, lls, jnp.asarray(length, jnp.int32)


_separate_log_likelihood_arguments = jax.jit(_log_likelihood_arguments)


def on_model(low_level: Callable, *, separate_emissions: bool = False) -> Callable:
    """``(model, observations, length) -> low_level(π, A, log-likelihoods, length)``, jitted.

    By default one compiled program evaluates the emissions and runs ``low_level`` (one
    dispatch: the sequential functions).  With ``separate_emissions`` the emissions are
    evaluated by a small compiled function of their own and ``length=None`` becomes T, so
    one compilation of a jitted ``low_level`` per ``(T, K, dtype)`` serves every emission
    family and both kinds of ``length`` (the parallel functions, slow to compile).
    """
    def run(model, observations, length):
        if separate_emissions:
            return low_level(*_separate_log_likelihood_arguments(model, observations, length))
        lls = model_log_likelihoods(model, observations, length)
        return low_level(model.initial_probs, model.transition_matrix, lls, length)

    run.__name__ = f"{low_level.__name__.lstrip('_')}_on_model"  # names traces and profiles
    return run if separate_emissions else jax.jit(run)
