"""``fit``: the plain epoch loop, built from ``run_epoch``, ``evaluate`` and early stopping.

It is meant to be read and copied.  Its randomness is a pure function of ``key``: epoch
``e = 0, 1, ...`` runs ``run_epoch`` with ``fold_in(key, e)`` (which shuffles with one half
of it and gives step ``i`` the key ``fold_in(step_key, i)``), so a run resumed from a
checkpoint at an epoch boundary is bit-identical to one that never stopped.  Per epoch::

    state, summary = run_epoch(step, state, train_data, fold_in(key, epoch), batch_size)
    logs = summary.means (+ val_* from evaluate)       # appended to the history
    stopping = early_stopping.update(stopping, logs[monitor], epoch + 1)
    save a checkpoint if due; stop if early_stopping.should_stop(stopping)

The step (``epoch.make_guarded_step``) is ``make_train_step``'s with a sticky ``healthy``
flag (``fit`` stops at the first non-finite loss or parameter, returning the parameters from
before that step) and the ``on_step`` hook.

With ``model_state=`` (a stateful model: ``nn.BatchNorm``'s running statistics) the loss is
``loss_fn(params, model_state, batch, key) -> (loss, model_state')`` and the state is one more
field of the training state: threaded through the steps, checkpointed, given to validation.

With ``mesh=`` the loop is data-parallel and otherwise unchanged: the training state is
replicated over the mesh once, and each batch is split along the mesh's data axis
(``distributed.split_or_replicate``) before it reaches the same jitted step, whose SPMD
partitioning then averages the per-device gradients.
"""
from __future__ import annotations

import functools
import time
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from functional_dl import checks, distributed
from functional_dl._types import PRNGKey, PyTree
from functional_dl.train import resume as resume_lib
from functional_dl.train.data import check_mesh_arguments, num_batches
from functional_dl.train.epoch import (StepHook, TrainState, make_guarded_step,
                                       memoized_when_hashable, run_epoch)
from functional_dl.train.metrics import evaluate
from functional_dl.train.progress import MODES, make_reporter
from functional_dl.train.resume import Checkpointing
from functional_dl.train.step import LossFn
from functional_dl.train.stopping import EarlyStopping


class FitResult(NamedTuple):
    """What ``fit`` returns.

    ``history[name][e]`` is the value of metric ``name`` after epoch ``e + 1``: training
    metrics are means over the epoch's examples (``loss``, ``loss_fn``'s aux metrics),
    validation metrics carry the prefix ``val_``.  ``stop_reason`` is ``"completed"``,
    ``"early_stopping"`` or ``"non_finite"``; ``message`` says more.  ``best_epoch`` is the
    (1-based) epoch whose parameters are returned when early stopping restored the best ones.
    ``hook_state`` is the final state of ``on_step`` (``None`` without one); ``model_state``
    the final state of a stateful model (``None`` without ``fit(..., model_state=...)``), the
    best epoch's when early stopping restored its parameters.
    """
    params: PyTree
    opt_state: PyTree
    history: dict[str, list[float]]
    stop_reason: str
    message: str
    best_epoch: int | None
    hook_state: PyTree = None
    model_state: PyTree = None


@memoized_when_hashable
def _loss_as_eval_fn(loss_fn: LossFn, has_aux: bool, has_state: bool = False) -> Callable:
    """``eval_fn(params, batch) = {"loss": L, **aux}`` with ``loss_fn(params, batch, key=None)``;
    with state ``eval_fn(params, model_state, batch)`` from ``loss_fn(params, model_state,
    batch, None)``, whose new state is dropped (evaluation does not change it)."""
    def as_metrics(out):
        loss, metrics = out if has_aux else (out, {})
        return {"loss": loss, **metrics}

    if has_state:
        return lambda params, model_state, batch: as_metrics(
            loss_fn(params, model_state, batch, None)[0])
    return lambda params, batch: as_metrics(loss_fn(params, batch, None))


def _as_metric_dict(values: Any) -> dict[str, float]:
    """``{"loss": v}`` for a scalar, else the dict with ``"loss"`` (if any) first."""
    if not isinstance(values, dict):
        return {"loss": values}
    names = [n for n in ("loss",) if n in values] + sorted(n for n in values if n != "loss")
    return {name: values[name] for name in names}


def _private_copy(tree: PyTree) -> PyTree:
    """A fresh buffer for every leaf (same sharding), so donating the copy to the step can
    neither delete the caller's arrays nor donate one buffer twice (tied leaves)."""
    return jax.tree.map(jnp.copy, tree)


def _placed_like_params(tree: PyTree, params: PyTree) -> PyTree:
    """``tree`` put on the parameters' sharding when they all share one fully replicated
    committed sharding (one device, or a copy on every device of a mesh); else unchanged.

    ``jit`` compiles one program per placement of its arguments and commits its outputs to
    the devices of its committed inputs, while ``optimizer.init`` builds its state
    uncommitted whatever the parameters' placement.  Beside committed parameters the first
    step would then take an uncommitted state, return a committed one and compile again for
    the same shapes.  Placed where the step returns it, the state goes in as it comes out,
    so the step compiles once per batch shape, and the one memoized step serves one device
    and any mesh (explicit ``in_shardings`` would bind it to one mesh).  Parameters split
    over devices (model parallelism) need a state placed by the caller.
    """
    leaves = jax.tree.leaves(params)
    if not leaves or not all(isinstance(leaf, jax.Array) and leaf.committed for leaf in leaves):
        return tree
    shardings = {leaf.sharding for leaf in leaves}
    if len(shardings) != 1:
        return tree
    (sharding,) = shardings
    if not sharding.is_fully_replicated:
        return tree

    def place(leaf):
        is_array = isinstance(leaf, (jax.Array, np.ndarray, np.generic))
        return jax.device_put(leaf, sharding) if is_array else leaf
    return jax.tree.map(place, tree)


# the keyword arguments that fit took before they were grouped, and where each one went
_MOVED = {"early_stopping_patience": "early_stopping=EarlyStopping(patience=...)",
          "monitor": "early_stopping=EarlyStopping(..., monitor=...)",
          "mode": "early_stopping=EarlyStopping(..., mode=...)",
          "min_delta": "early_stopping=EarlyStopping(..., min_delta=...)",
          "restore_best": "early_stopping=EarlyStopping(..., restore_best=...)",
          "checkpoint_path": "checkpointing=Checkpointing(path)",
          "checkpoint_every": "checkpointing=Checkpointing(path, every=...)",
          "resume": "checkpointing=Checkpointing(path, resume=True)"}


def _reject_moved_keywords(fit_function: Callable) -> Callable:
    """A TypeError that names the new option group for a keyword ``fit`` no longer takes."""
    @functools.wraps(fit_function)
    def fit(*args, **kwargs):
        moved = [name for name in kwargs if name in _MOVED]
        if moved:
            raise TypeError("fit() takes its early-stopping and checkpoint options grouped: "
                            + "; ".join(f"instead of {name}=, pass {_MOVED[name]}"
                                        for name in moved)
                            + " (train.EarlyStopping, train.Checkpointing)")
        return fit_function(*args, **kwargs)
    return fit


def _check_option(name: str, value: Any, kind: type) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be None or a train.{kind.__name__}, got "
                        f"{type(value).__name__}")


def _check_kinds(optimizer, key, progress, early_stopping, checkpointing, on_step,
                 eval_fn) -> None:
    """``fit``'s checks of the arguments that are not numbers or data."""
    checks.optimizer("optimizer", optimizer)
    checks.prng_key("key", key, what="fit", single=True)
    checks.one_of("progress", progress, MODES)
    _check_option("early_stopping", early_stopping, EarlyStopping)
    _check_option("checkpointing", checkpointing, Checkpointing)
    if on_step is not None and not (isinstance(on_step, tuple) and len(on_step) == 2
                                    and all(map(callable, on_step))):
        raise TypeError(f"on_step must be None or a train.StepHook(init, update), got "
                        f"{type(on_step).__name__}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be None or callable, got {type(eval_fn).__name__}")


def _monitored_metric(early_stopping: EarlyStopping | None, validating: bool) -> str | None:
    """The history name early stopping watches; a ``val_`` name without validation data is
    an error before training (other names are known after the first epoch)."""
    if early_stopping is None:
        return None
    monitor = early_stopping.monitor or ("val_loss" if validating else "loss")
    if monitor.startswith("val_") and not validating:
        raise ValueError(f"EarlyStopping: monitor={monitor!r} is not a logged metric; "
                         "available: ['loss'] and loss_fn's aux metrics (pass "
                         "validation_data to log val_ metrics)")
    return monitor


@_reject_moved_keywords
def fit(loss_fn: LossFn, optimizer: Any, params: PyTree, train_data: PyTree, *,
        key: PRNGKey, epochs: int, batch_size: int, has_aux: bool = False,
        opt_state: PyTree = None, model_state: PyTree = None, drop_last: bool = False,
        validation_data: PyTree = None, eval_fn: Callable | None = None,
        early_stopping: EarlyStopping | None = None,
        checkpointing: Checkpointing | None = None,
        on_step: StepHook | None = None, stop_on_non_finite_loss: bool = True,
        progress: str = "auto", donate: bool = True,
        mesh: Mesh | None = None, axis_name: str | None = None) -> FitResult:
    """Train ``params`` for ``epochs`` passes over ``train_data`` with minibatch steps.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> L`` (scalar), or ``(L, metrics)`` with
        ``has_aux=True`` (``metrics`` a dict of scalars; another shape is a ``ValueError``
        naming the metric before the first step runs).  It is called with ``key=None`` for
        validation: use that to switch dropout off (``train=key is not None``).  With
        ``model_state``: ``loss_fn(params, model_state, batch, key)`` returns ``(L,
        new_model_state)`` (``((L, metrics), new_model_state)`` with ``has_aux``), as
        ``make_train_step(..., has_state=True)`` says.
      optimizer: an ``optim.Optimizer``.
      params: initial parameters.  ``fit`` copies them (and ``opt_state``) once and donates
        only its own copies to the steps, so the arrays passed in stay valid.
      train_data: pytree of arrays with a common leading axis; each ``batch`` has its structure.
      key: PRNG key; the whole run is a deterministic function of it (see the module doc).
      epochs: number of passes over the data.
      batch_size: examples per step; ``drop_last`` drops the short final batch (an error
        when that leaves no batch).
      opt_state: optimizer state to continue from (default ``optimizer.init(params)``).
        With ``params`` replicated over a mesh (``distributed.replicate``) or committed to
        one device, the state is put there too, so the step compiles once per batch shape.
      model_state: the initial state of a stateful model (``nn.BatchNorm``'s running
        statistics; from its ``init``).  It is threaded through every step, replicated over
        ``mesh`` like the parameters (BatchNorm's statistics are then those of the global
        batch, as XLA reduces across the shards), saved in checkpoints, given to validation
        (``eval_fn(params, model_state, batch)``) and returned as ``FitResult.model_state``.
        A step that makes it non-finite stops training like a non-finite parameter.
      validation_data, eval_fn: data for ``evaluate(eval_fn, params, validation_data, b)``
        after each epoch, logged with prefix ``val_``; the default ``eval_fn`` is ``loss_fn``
        with ``key=None`` (``{"loss": L, **aux}``).
      early_stopping: a ``train.EarlyStopping(patience, monitor, mode, min_delta,
        restore_best)``; ``None`` trains every epoch.
      checkpointing: a ``train.Checkpointing(path, every, resume)``: save ``(state, key,
        epoch, history, early-stopping state, best parameters)`` every ``every`` epochs and
        at the end, and with ``resume`` continue from ``path``.
      on_step: a ``train.StepHook(init, update)`` whose state is updated inside every step
        (a parameter EMA, logging through ``jax.debug.callback``); returned as
        ``FitResult.hook_state`` and checkpointed.
      stop_on_non_finite_loss: stop at the first step whose loss is NaN or infinite (the
        default).  With ``False`` only non-finite parameters stop training: an optimizer
        that skips bad steps itself (``optim.apply_if_finite(opt)``) then carries on, the
        epoch means leave the non-finite steps out, and the history gains
        ``"non_finite_loss_steps"``, their number per epoch.
      progress: ``"auto"`` (tqdm bar on a terminal, else a line per epoch), ``"bar"``,
        ``"lines"`` or ``"none"``.
      donate: donate the training state to each step (in-place update; costs one copy of it
        when ``fit`` starts).
      mesh, axis_name: data parallelism over a ``jax.sharding.Mesh`` of this process
        (``distributed.make_mesh()``).  The training state is replicated over ``mesh`` (as
        ``distributed.replicate``) and every training and validation batch is split along
        the mesh axis ``axis_name`` (default the first) before the step (as
        ``distributed.shard_batch``): each device computes its rows and XLA inserts the mean
        of the gradients.  ``batch_size`` must be a multiple of the devices on that axis.
        An epoch's short final batch (``drop_last=False``, and of the validation data) that
        does not divide is computed whole on every device, so losses, metrics and
        parameters are those without a mesh up to floating-point summation order.  The
        returned parameters and optimizer state are replicated; the step compiles once per
        batch shape, and checkpoints resume onto the mesh.

    Returns:
      ``FitResult(params, opt_state, history, stop_reason, message, best_epoch,
      hook_state, model_state)``.  A non-finite loss (or parameter) stops training with a
      ``RuntimeWarning`` naming the epoch and step; the returned parameters are those from
      before that step.

    Raises:
      ValueError: a bad argument (the message names it), e.g. a ``batch_size`` that is not a
        multiple of the devices on the mesh axis (it names both and the nearest multiples).
      TypeError: an argument of the wrong kind (``mesh`` not a ``Mesh``, ``batch_size`` not
        an int, ...), or a keyword of the flat form that the option groups replaced.
    """
    _check_kinds(optimizer, key, progress, early_stopping, checkpointing, on_step, eval_fn)
    epochs = checks.whole_number("epochs", epochs, minimum=1)
    batch_size = checks.whole_number("batch_size", batch_size, minimum=1)
    has_aux, drop_last, donate, stop_on_non_finite_loss = (
        checks.boolean(name, value) for name, value in [
            ("has_aux", has_aux), ("drop_last", drop_last), ("donate", donate),
            ("stop_on_non_finite_loss", stop_on_non_finite_loss)])
    check_mesh_arguments(mesh, axis_name, batch_size)
    num_train = checks.leading_length("train_data", train_data)
    steps_per_epoch = num_batches(num_train, batch_size, drop_last=drop_last)
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} with drop_last=True leaves no batch of the "
                         f"{num_train} training examples; use a batch_size <= {num_train} or "
                         "drop_last=False")
    has_state = model_state is not None
    if validation_data is not None:
        checks.leading_length("validation_data", validation_data)
        eval_fn = eval_fn if eval_fn is not None else _loss_as_eval_fn(loss_fn, has_aux,
                                                                       has_state)
    monitor = _monitored_metric(early_stopping, validation_data is not None)
    train_data = jax.tree.map(jnp.asarray, train_data)

    if mesh is not None:   # placed, not copied: with donate, _private_copy below copies once
        params, opt_state, model_state = jax.device_put(
            (params, opt_state, model_state), distributed.replicated_sharding(mesh))
    if opt_state is None:
        opt_state = optimizer.init(params)
    state = TrainState(params, opt_state, None if on_step is None else on_step.init(params),
                       model_state)
    step = make_guarded_step(loss_fn, optimizer, has_aux, donate, on_step,
                             stop_on_non_finite_loss, has_state)

    start_epoch, history, best_params, best_model_state = 0, {}, None, None
    stopping = None if early_stopping is None else early_stopping.init()
    if checkpointing is not None and checkpointing.can_resume():
        saved = resume_lib.load(checkpointing.path, state)
        state, key, start_epoch, history, best_params, best_model_state = (
            saved.state, saved.key, saved.epoch, saved.history, saved.best_params,
            saved.best_model_state)
        if early_stopping is not None and saved.stopping is not None:
            stopping = saved.stopping
    state = state._replace(opt_state=_placed_like_params(state.opt_state, state.params),
                           hook_state=_placed_like_params(state.hook_state, state.params),
                           model_state=_placed_like_params(state.model_state, state.params))
    if donate:
        state = _private_copy(state)

    stop_reason, message = "completed", f"trained {epochs} epochs"
    if early_stopping is not None and early_stopping.should_stop(stopping):
        # resumed from the checkpoint of a run that early stopping had already ended
        stop_reason, message = "early_stopping", (
            f"early stopping: the checkpoint at epoch {start_epoch} had already waited "
            f"{stopping.wait} epochs without improvement of {monitor} (best "
            f"{stopping.best:.6g} at epoch {stopping.best_epoch})")
        start_epoch = epochs
    reporter = make_reporter(progress, epochs, start_epoch)
    try:
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            state, summary = run_epoch(step, state, train_data, jax.random.fold_in(key, epoch),
                                       batch_size, drop_last=drop_last,
                                       first_step=epoch * steps_per_epoch, mesh=mesh,
                                       axis_name=axis_name)
            if summary.failed_step is not None:
                stop_reason = "non_finite"
                message = (f"non-finite loss or parameters at epoch {epoch + 1}, step "
                           f"{summary.failed_step + 1} (loss={summary.failed_loss}); stopped, "
                           "returning the parameters from before that step")
                warnings.warn(message, RuntimeWarning, stacklevel=3)
                break

            logs = dict(summary.means)
            if not stop_on_non_finite_loss:
                logs["non_finite_loss_steps"] = float(summary.num_non_finite_loss)
            if validation_data is not None:
                val = _as_metric_dict(evaluate(eval_fn, state.params, validation_data,
                                               batch_size, model_state=state.model_state,
                                               mesh=mesh, axis_name=axis_name))
                logs.update({f"val_{name}": value for name, value in val.items()})
            for name, value in logs.items():
                history.setdefault(name, []).append(value)
            reporter.epoch_done(epoch + 1, logs, time.perf_counter() - started)

            done = epoch + 1
            if early_stopping is not None:
                if monitor not in logs:
                    raise ValueError(f"EarlyStopping: monitor={monitor!r} is not a logged "
                                     f"metric; available: {sorted(logs)}")
                stopping = early_stopping.update(stopping, logs[monitor], done)
                if early_stopping.restore_best and stopping.best_epoch == done:
                    best_params, best_model_state = jax.tree.map(
                        jnp.copy, (state.params, state.model_state))
            if checkpointing is not None and checkpointing.due(done, epochs):
                resume_lib.save(checkpointing.path, resume_lib.TrainingCheckpoint(
                    state, key, done, history, stopping, best_params, best_model_state))
            if early_stopping is not None and early_stopping.should_stop(stopping):
                stop_reason = "early_stopping"
                message = (f"early stopping after epoch {done}: {monitor} did not improve for "
                           f"{early_stopping.patience} epochs (best {stopping.best:.6g} at "
                           f"epoch {stopping.best_epoch})")
                break
    finally:
        reporter.close()

    params, model_state, best_epoch = state.params, state.model_state, None
    if (early_stopping is not None and early_stopping.restore_best and best_params is not None
            and stop_reason != "non_finite"):
        params, model_state, best_epoch = best_params, best_model_state, stopping.best_epoch
    return FitResult(params, state.opt_state, history, stop_reason, message, best_epoch,
                     state.hook_state, model_state)
