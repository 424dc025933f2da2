"""The training step: one gradient evaluation and one optimizer update, as a pure function.

``make_train_step(loss_fn, optimizer)`` returns a jitted

    step(params, opt_state, batch, key) -> (params, opt_state, metrics)

computing

    L, g   = value_and_grad(loss_fn)(params, batch, key)      # L must be a scalar
    u, s'  = optimizer.update(g, opt_state, params)
    θ'     = θ + u                                              # updates carry the minus sign

The step has no device-specific code: when ``batch`` is sharded over several devices and
``params``/``opt_state`` are replicated, XLA's SPMD partitioner runs the same program on every
device and inserts the gradient mean itself.

A model with state (``nn.BatchNorm``'s running statistics, :mod:`functional_dl.nn.state`)
trains with ``make_train_step(..., has_state=True)``: the loss takes the state and returns
the new one beside its usual output,

    loss_fn(params, model_state, batch, key) -> (L, model_state')           # or ((L, aux), ...)
    step(params, opt_state, model_state, batch, key) -> (params, opt_state, model_state, metrics)

and only ``params`` are differentiated (the state is carried as auxiliary output).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree
from functional_dl.optim import apply_updates

LossFn = Callable[[PyTree, Any, PRNGKey | None], Any]
TrainStep = Callable[[PyTree, PyTree, Any, PRNGKey | None], tuple[PyTree, PyTree, dict]]


def _check_metrics(metrics: Mapping) -> None:
    """Every aux metric a numeric scalar (a batch mean), checked on its traced shape."""
    for name, value in metrics.items():
        if not hasattr(value, "dtype") and not isinstance(value, (int, float)):
            raise TypeError(f"loss_fn metric {name!r} must be a scalar array, got "
                            f"{type(value).__name__}")
        if jnp.shape(value) != ():
            raise ValueError(
                f"loss_fn metric {name!r} must be a scalar (a mean over the batch), got an "
                f"array of shape {jnp.shape(value)}; reduce it, e.g. .mean()")


def _scalar_loss_and_metrics(loss_fn: LossFn, has_aux: bool) -> Callable:
    """Wrap ``loss_fn`` so it returns ``(loss, metrics_dict)``; a loss or aux metric that is
    not a scalar is rejected while tracing (shapes are static), so the checks cost nothing
    per step and fail before the first step runs."""
    def wrapped(params, batch, key):
        return _loss_and_metrics(loss_fn(params, batch, key), has_aux)
    return wrapped


def check_model_state(new: PyTree, old: PyTree) -> None:
    """The state ``loss_fn`` returns keeps the structure, shapes and dtypes of the one it got
    (the step donates and replaces it, so it must fit the same buffers and program)."""
    checks.same_structure("the model_state loss_fn returns", new, "the model_state it got",
                          old, owner="loss_fn")
    for (path, a), (_, b) in zip(checks.leaves_with_paths(new), checks.leaves_with_paths(old)):
        if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
            raise ValueError(
                f"loss_fn must return a model_state of the shapes and dtypes it got; leaf "
                f"{path or '[root]'} went from {jnp.shape(b)} {jnp.result_type(b)} to "
                f"{jnp.shape(a)} {jnp.result_type(a)}")


def _stateful_objective(loss_fn: Callable, has_aux: bool) -> Callable:
    """``(params, model_state, batch, key) -> (loss, (metrics, new_model_state))``."""
    def objective(params, model_state, batch, key):
        out = loss_fn(params, model_state, batch, key)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("loss_fn with model state must return (loss, new_model_state) "
                            "(with has_aux: ((loss, metrics), new_model_state)), got "
                            f"{type(out).__name__}")
        value, new_state = out
        check_model_state(new_state, model_state)
        loss, metrics = _loss_and_metrics(value, has_aux)
        return loss, (metrics, new_state)
    return objective


def _loss_and_metrics(out: Any, has_aux: bool) -> tuple[Any, dict]:
    """``(loss, metrics)`` from what ``loss_fn`` returned, checked as ``_scalar_loss_and_metrics``
    says."""
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("loss_fn with has_aux=True must return (loss, metrics), got "
                            f"{type(out).__name__}")
        loss, metrics = out
        if not isinstance(metrics, Mapping):
            raise TypeError("loss_fn with has_aux=True must return metrics as a dict of "
                            f"scalars, got {type(metrics).__name__}")
        if "loss" in metrics:
            raise ValueError("loss_fn metrics must not contain the key 'loss' (the step "
                             "reports the loss itself)")
        _check_metrics(metrics)
    else:
        loss, metrics = out, {}
    shape = jnp.shape(loss)
    if shape != ():
        raise ValueError(
            f"loss_fn must return a scalar loss, got an array of shape {shape}; reduce the "
            "per-example losses, e.g. losses.mean()"
            + ("" if has_aux else ", or pass has_aux=True if it returns (loss, metrics)"))
    checks.floating_dtype("loss_fn's loss", loss)
    return loss, dict(metrics)


def loss_and_grads(loss_fn: LossFn, *, has_aux: bool = False,
                   has_state: bool = False) -> Callable:
    """``(params, batch, key) -> (loss, metrics, grads)`` for a scalar ``loss_fn`` (not jitted).

    With ``has_state``: ``(params, model_state, batch, key) -> (loss, metrics, grads,
    new_model_state)`` for ``loss_fn(params, model_state, batch, key) -> (out, new_state)``.
    """
    if has_state:
        stateful = jax.value_and_grad(_stateful_objective(loss_fn, has_aux), has_aux=True)

        def compute_with_state(params, model_state, batch, key):
            (loss, (metrics, new_state)), grads = stateful(params, model_state, batch, key)
            return loss, metrics, grads, new_state
        return compute_with_state
    value_and_grad = jax.value_and_grad(_scalar_loss_and_metrics(loss_fn, has_aux), has_aux=True)

    def compute(params, batch, key):
        (loss, metrics), grads = value_and_grad(params, batch, key)
        return loss, metrics, grads
    return compute


def make_train_step(loss_fn: LossFn, optimizer: Any, *, has_aux: bool = False,
                    has_state: bool = False, donate: bool = True) -> TrainStep:
    """A jitted pure training step ``(params, opt_state, batch, key) -> (params, opt_state, metrics)``.

    Args:
      loss_fn: ``loss_fn(params, batch, key)`` returning the scalar loss (reduce per-example
        losses yourself, e.g. ``.mean()``); with ``has_aux=True`` it returns
        ``(loss, metrics)`` where ``metrics`` is a dict of scalars (batch means; an array
        of another shape is a ``ValueError`` naming it when the step is first traced).  ``key`` is the PRNG key
        given to the step (for dropout); it may be ``None``.
      optimizer: an ``optim.Optimizer`` (any ``(init, update)`` pair with the optax protocol).
      has_aux: whether ``loss_fn`` returns ``(loss, metrics)``.
      has_state: a model with state (``nn.BatchNorm``): ``loss_fn(params, model_state,
        batch, key)`` returns ``(loss, new_model_state)`` (``((loss, metrics),
        new_model_state)`` with ``has_aux``; the new state must keep the structure, shapes
        and dtypes) and the step is ``step(params, opt_state, model_state, batch, key) ->
        (params, opt_state, model_state, metrics)``, donating ``model_state`` too.
      donate: donate ``params`` and ``opt_state`` to the step, so XLA updates them in place
        (no second copy of the model and optimizer state).  The arrays passed in are then
        invalid after the call: always use the returned ones, and give the first call a copy
        (``jax.tree.map(jnp.copy, params)``) of arrays you still need or that appear twice in
        ``(params, opt_state)`` (tied weights; XLA cannot donate one buffer twice).  ``fit``
        does this itself.

    Returns:
      ``step`` with ``metrics = {"loss": L, **aux}``.  The step is one XLA program
      ``θ' = θ + u`` with ``(u, s') = optimizer.update(∇θ L, s, θ)``; it compiles once per
      input shape/dtype signature.

    Raises:
      TypeError: ``optimizer`` is not an ``(init, update)`` pair or ``loss_fn`` not callable.
      ValueError: (on the first call) when ``loss_fn`` returns a non-scalar loss or metric.

    The same step runs data-parallel unchanged: put ``batch`` on a ``NamedSharding`` split
    along its leading axis and replicate ``params`` and ``opt_state``.  It also ``vmap``s
    over a leading "model" axis to train an ensemble at once::

        ensemble_step = jax.jit(jax.vmap(step, in_axes=(0, 0, None, 0)))
    """
    checks.optimizer("optimizer", optimizer)
    has_aux, donate = checks.boolean("has_aux", has_aux), checks.boolean("donate", donate)
    has_state = checks.boolean("has_state", has_state)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
    compute = loss_and_grads(loss_fn, has_aux=has_aux, has_state=has_state)
    if has_state:
        def stateful_train_step(params, opt_state, model_state, batch, key):
            loss, metrics, grads, model_state = compute(params, model_state, batch, key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = apply_updates(params, updates)
            return params, opt_state, model_state, {"loss": loss, **metrics}
        return jax.jit(stateful_train_step, donate_argnums=(0, 1, 2) if donate else ())

    def train_step(params, opt_state, batch, key):
        loss, metrics, grads = compute(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = apply_updates(params, updates)
        return params, opt_state, {"loss": loss, **metrics}

    return jax.jit(train_step, donate_argnums=(0, 1) if donate else ())


def all_finite(tree: PyTree) -> Array:
    """``True`` when every element of every floating-point leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
