"""``fit``: the plain epoch loop, built from ``batches``, the train step and ``evaluate``.

It is meant to be read and copied.  Its randomness is a pure function of ``key``:

    epoch_key            = fold_in(key, epoch)              # epoch = 0, 1, ...
    shuffle_key, step_key = split(epoch_key)
    batch order           = permutation(shuffle_key, n)      # via ``batches``
    key of step i         = fold_in(step_key, i)             # given to loss_fn (dropout)

so a run resumed from a checkpoint at an epoch boundary is bit-identical to one that never
stopped.  The step it runs is ``make_train_step``'s with one addition: a device-side flag
``healthy`` that turns false at the first non-finite loss or parameter, after which every
update is skipped; the loop reads the flag once per epoch (no per-step host sync) and stops
with the parameters from before the bad step.

With ``mesh=`` the loop is data-parallel and otherwise unchanged: parameters and optimizer
state are replicated over the mesh once, and each batch is split along the mesh's data axis
(``placement.split_or_replicate``) before it reaches the same jitted step, whose SPMD
partitioning then averages the per-device gradients.
"""
from __future__ import annotations

import functools
import os
import time
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from functional_dl._types import PRNGKey, PyTree
from functional_dl.optim import apply_updates
from functional_dl.train import placement
from functional_dl.train import resume as resume_lib
from functional_dl.train.data import _check_batch_size, batches, num_batches, num_examples
from functional_dl.train.metrics import evaluate
from functional_dl.train.progress import make_reporter
from functional_dl.train.step import LossFn, _check_optimizer, all_finite, loss_and_grads


class FitResult(NamedTuple):
    """What ``fit`` returns.

    ``history[name][e]`` is the value of metric ``name`` after epoch ``e + 1``: training
    metrics are means over the epoch's examples (``loss``, ``loss_fn``'s aux metrics),
    validation metrics carry the prefix ``val_``.  ``stop_reason`` is ``"completed"``,
    ``"early_stopping"`` or ``"non_finite"``; ``message`` says more.  ``best_epoch`` is the
    (1-based) epoch whose parameters are returned when early stopping restored the best ones.
    """
    params: PyTree
    opt_state: PyTree
    history: dict[str, list[float]]
    stop_reason: str
    message: str
    best_epoch: int | None


def _memoized_when_hashable(factory: Callable) -> Callable:
    """``factory`` cached on its arguments when they hash (functions and ``Optimizer`` tuples
    do), so a second ``fit`` with the same ``loss_fn`` and ``optimizer`` does not recompile."""
    cached = functools.lru_cache(maxsize=32)(factory)

    @functools.wraps(factory)
    def memoized(*args):
        try:
            hash(args)
        except TypeError:
            return factory(*args)
        return cached(*args)
    return memoized


@_memoized_when_hashable
def _make_guarded_step(loss_fn: LossFn, optimizer: Any, has_aux: bool, donate: bool):
    """The train step plus a sticky ``healthy`` flag: ``healthy' = healthy ∧ finite(L) ∧ finite(θ')``.

    When ``healthy'`` is false the step returns its inputs ``(θ, s)`` unchanged.
    """
    compute = loss_and_grads(loss_fn, has_aux=has_aux)

    def guarded_step(params, opt_state, batch, key, healthy):
        loss, metrics, grads = compute(params, batch, key)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = apply_updates(params, updates)
        healthy = healthy & jnp.isfinite(loss) & all_finite(new_params)

        def keep_if_healthy(new, old):
            return jnp.where(healthy, new, old)
        new_params = jax.tree.map(keep_if_healthy, new_params, params)
        new_opt_state = jax.tree.map(keep_if_healthy, new_opt_state, opt_state)
        return new_params, new_opt_state, {"loss": loss, **metrics}, healthy

    return jax.jit(guarded_step, donate_argnums=(0, 1) if donate else ())


@_memoized_when_hashable
def _loss_as_eval_fn(loss_fn: LossFn, has_aux: bool) -> Callable:
    """``eval_fn(params, batch) = {"loss": L, **aux}`` with ``loss_fn(params, batch, key=None)``."""
    def eval_fn(params, batch):
        out = loss_fn(params, batch, None)
        loss, metrics = out if has_aux else (out, {})
        return {"loss": loss, **metrics}
    return eval_fn


def _as_metric_dict(values: Any) -> dict[str, float]:
    """``{"loss": v}`` for a scalar, else the dict with ``"loss"`` (if any) first."""
    if not isinstance(values, dict):
        return {"loss": values}
    names = [n for n in ("loss",) if n in values] + sorted(n for n in values if n != "loss")
    return {name: values[name] for name in names}


def _epoch_means(step_metrics: list[dict], sizes: list[int]) -> dict[str, float]:
    """Example-weighted means ``Σ_k B_k m_k / Σ_k B_k`` of the per-step batch means."""
    host = jax.device_get(step_metrics)
    weights = np.asarray(sizes, dtype=np.float64)
    names = ["loss"] + sorted(name for name in host[0] if name != "loss")
    return {name: float(np.dot(weights, [np.float64(m[name]) for m in host]) / weights.sum())
            for name in names}


_jitted_all_finite = jax.jit(all_finite)   # one dispatch per epoch, not three per leaf


class _EarlyStopping(NamedTuple):
    best: float
    best_epoch: int     # 1-based; 0 = none yet
    wait: int


def _improved(value: float, best: float, mode: str, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _private_copy(tree: PyTree) -> PyTree:
    """A fresh buffer for every leaf (same sharding), so donating the copy to the step can
    neither delete the caller's arrays nor donate one buffer twice (tied leaves)."""
    return jax.tree.map(jnp.copy, tree)


def _placed_like_params(opt_state: PyTree, params: PyTree) -> PyTree:
    """``opt_state`` put on the parameters' sharding when they all share one fully replicated
    committed sharding (one device, or a copy on every device of a mesh); else unchanged.

    ``jit`` compiles one program per placement of its arguments (each array's sharding and
    whether it is committed) and commits its outputs to the devices of its committed inputs.
    ``optimizer.init`` builds its state uncommitted on the default device whatever the
    parameters' placement (``zeros_like`` drops it; under ``jit`` the state's constants do
    not depend on the inputs, so they come back uncommitted too).  Beside parameters
    replicated over a mesh, the first step would then take an uncommitted state and return a
    replicated one, and compile again for the same shapes.  Put where the step returns it,
    the state has the same placement going in and coming out, so the step compiles once per
    batch shape.

    Why this and not explicit ``in_shardings``/``out_shardings`` on the step: those would bind
    the memoized step to one mesh (one ``jit`` per placement) and reject inputs placed
    otherwise; here the placement of ``params`` decides (``fit(mesh=...)`` replicates them,
    or the caller did), and the one step serves one device and any mesh.  It also mirrors how
    a data-parallel state is built by hand (``distributed.replicate(optimizer.init(params),
    mesh)``).
    Uncommitted parameters leave the state as it is (everything then stays uncommitted);
    parameters split over devices (model parallelism, per-leaf shardings) need a state
    placed by the caller.
    """
    leaves = jax.tree.leaves(params)
    if not leaves or not all(isinstance(leaf, jax.Array) and leaf.committed for leaf in leaves):
        return opt_state
    shardings = {leaf.sharding for leaf in leaves}
    if len(shardings) != 1:
        return opt_state
    (sharding,) = shardings
    if not sharding.is_fully_replicated:
        return opt_state

    def place(leaf):
        is_array = isinstance(leaf, (jax.Array, np.ndarray, np.generic))
        return jax.device_put(leaf, sharding) if is_array else leaf
    return jax.tree.map(place, opt_state)


def _check_fit_arguments(epochs, patience, mode, min_delta, checkpoint_every, checkpoint_path,
                         resume):
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                 or patience < 1):
        raise ValueError(f"early_stopping_patience must be None or an int >= 1, got {patience!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not min_delta >= 0:
        raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path (the file to resume from)")
    if checkpoint_every is not None:
        if checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
                or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")


def fit(loss_fn: LossFn, optimizer: Any, params: PyTree, train_data: PyTree, *,
        key: PRNGKey, epochs: int, batch_size: int, has_aux: bool = False,
        opt_state: PyTree = None, drop_last: bool = False,
        validation_data: PyTree = None, eval_fn: Callable | None = None,
        early_stopping_patience: int | None = None, monitor: str | None = None,
        mode: str = "min", min_delta: float = 0.0, restore_best: bool = True,
        checkpoint_path: str | os.PathLike | None = None, checkpoint_every: int | None = None,
        resume: bool = False, progress: str = "auto", donate: bool = True,
        mesh: Mesh | None = None, axis_name: str | None = None) -> FitResult:
    """Train ``params`` for ``epochs`` passes over ``train_data`` with minibatch steps.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> L`` (scalar), or ``(L, metrics)`` with
        ``has_aux=True``.  It is called with ``key=None`` for validation: use that to switch
        dropout off (``train=key is not None``).
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
      validation_data, eval_fn: data for ``evaluate(eval_fn, params, validation_data, b)``
        after each epoch, logged with prefix ``val_``; the default ``eval_fn`` is ``loss_fn``
        with ``key=None`` (``{"loss": L, **aux}``).
      early_stopping_patience: stop after this many epochs without improvement of
        ``monitor`` (default ``"val_loss"`` with validation data, else ``"loss"``) by more
        than ``min_delta`` in direction ``mode``; with ``restore_best`` the best epoch's
        parameters are returned (the optimizer state is the last one).
      checkpoint_path, checkpoint_every: save ``(params, opt_state, epoch, key, history,
        early-stopping state)`` every ``checkpoint_every`` epochs (default 1) and at the end.
      resume: continue from ``checkpoint_path`` when it exists (its key and epoch are used;
        ``params``/``opt_state`` passed in then only give the structure).  A checkpoint of a
        run that early stopping had ended returns at once with ``"early_stopping"``.
      progress: ``"auto"`` (tqdm bar on a terminal, else a line per epoch), ``"bar"``,
        ``"lines"`` or ``"none"``.
      donate: donate params and optimizer state to each step (in-place update; costs one
        copy of both when ``fit`` starts).
      mesh, axis_name: data parallelism over a ``jax.sharding.Mesh`` of this process
        (``distributed.make_mesh()``).  ``params`` and ``opt_state`` are replicated over
        ``mesh`` (as ``distributed.replicate``) and every training and validation batch is
        split along the mesh axis ``axis_name`` (default the first) before the step (as
        ``distributed.shard_batch``): each device computes its rows and XLA inserts the mean
        of the gradients.  ``batch_size`` must be a multiple of the devices on that axis.
        An epoch's short final batch (``drop_last=False``, and of the validation data) that
        does not divide is computed whole on every device, so losses, metrics and
        parameters are those without a mesh up to floating-point summation order.  The
        returned parameters and optimizer state are replicated; the step compiles once per
        batch shape, and checkpoints resume onto the mesh.

    Returns:
      ``FitResult(params, opt_state, history, stop_reason, message, best_epoch)``.  A
      non-finite loss (or parameter) stops training with a ``RuntimeWarning`` naming the epoch
      and step; the returned parameters are those from before that step.

    Raises:
      ValueError: a bad argument (the message names it), e.g. a ``batch_size`` that is not a
        multiple of the devices on the mesh axis (it names both and the nearest multiples).
      TypeError: ``mesh`` is not a ``jax.sharding.Mesh``, or ``batch_size`` not an int.
    """
    _check_optimizer(optimizer)
    _check_fit_arguments(epochs, early_stopping_patience, mode, min_delta, checkpoint_every,
                         checkpoint_path, resume)
    if key is None:
        raise ValueError("key: fit needs a PRNG key; pass key=jax.random.key(0)")
    batch_size = _check_batch_size(batch_size)
    placement.check_data_parallel_arguments(mesh, axis_name, batch_size)
    num_train = num_examples(train_data, "train_data")
    if num_batches(num_train, batch_size, drop_last=drop_last) == 0:
        raise ValueError(f"batch_size={batch_size} with drop_last=True leaves no batch of the "
                         f"{num_train} training examples; use a batch_size <= {num_train} or "
                         "drop_last=False")
    train_data = jax.tree.map(jnp.asarray, train_data)
    if validation_data is not None:
        num_examples(validation_data, "validation_data")
        eval_fn = eval_fn if eval_fn is not None else _loss_as_eval_fn(loss_fn, has_aux)
    if monitor is None:
        monitor = "val_loss" if validation_data is not None else "loss"
    if checkpoint_path is not None and checkpoint_every is None:
        checkpoint_every = 1
    if mesh is not None:   # placed, not copied: with donate, _private_copy below copies once
        params, opt_state = jax.device_put((params, opt_state), placement.replicated_sharding(mesh))
    if opt_state is None:
        opt_state = optimizer.init(params)
    step = _make_guarded_step(loss_fn, optimizer, has_aux, donate)

    start_epoch, history = 0, {}
    stopping = _EarlyStopping(np.inf if mode == "min" else -np.inf, 0, 0)
    best_params = None
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        saved = resume_lib.load(checkpoint_path, params, opt_state)
        params, opt_state, key, start_epoch, history = (saved.params, saved.opt_state, saved.key,
                                                        saved.epoch, saved.history)
        stopping = _EarlyStopping(saved.best, saved.best_epoch, saved.wait)
        best_params = saved.best_params
    opt_state = _placed_like_params(opt_state, params)
    if donate:
        params, opt_state = _private_copy((params, opt_state))

    stop_reason, message = "completed", f"trained {epochs} epochs"
    if early_stopping_patience is not None and stopping.wait >= early_stopping_patience:
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
            shuffle_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
            # "the parameters are finite", computed from them so that it is placed like them
            # (a committed or sharded flag beside committed parameters): the step's output flag
            # then has the input's placement and the step compiles once, resumed or sharded
            healthy = _jitted_all_finite(params)
            step_metrics, sizes, health = [], [], []
            for i, batch in enumerate(batches(shuffle_key, train_data, batch_size,
                                              drop_last=drop_last)):
                if mesh is not None:
                    batch = placement.split_or_replicate(batch, mesh, axis_name)
                params, opt_state, metrics, healthy = step(
                    params, opt_state, batch, jax.random.fold_in(step_key, i), healthy)
                step_metrics.append(metrics)
                sizes.append(jax.tree.leaves(batch)[0].shape[0])
                health.append(healthy)

            if not bool(healthy):
                bad = int(np.argmin(np.asarray(jax.device_get(health))))
                loss = float(jax.device_get(step_metrics[bad]["loss"]))
                stop_reason = "non_finite"
                message = (f"non-finite loss or parameters at epoch {epoch + 1}, step {bad + 1} "
                           f"(loss={loss}); stopped, returning the parameters from before "
                           "that step")
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                break

            logs = _epoch_means(step_metrics, sizes)
            if validation_data is not None:
                val = _as_metric_dict(evaluate(eval_fn, params, validation_data, batch_size,
                                               mesh=mesh, axis_name=axis_name))
                logs.update({f"val_{name}": value for name, value in val.items()})
            for name, value in logs.items():
                history.setdefault(name, []).append(value)
            reporter.epoch_done(epoch + 1, logs, time.perf_counter() - started)

            stop = False
            if early_stopping_patience is not None:
                if monitor not in logs:
                    raise ValueError(f"monitor={monitor!r} is not a logged metric; "
                                     f"available: {sorted(logs)}")
                if _improved(logs[monitor], stopping.best, mode, min_delta):
                    stopping = _EarlyStopping(logs[monitor], epoch + 1, 0)
                    if restore_best:
                        best_params = jax.tree.map(jnp.copy, params)
                else:
                    stopping = stopping._replace(wait=stopping.wait + 1)
                    stop = stopping.wait >= early_stopping_patience
            done = epoch + 1
            if checkpoint_path is not None and (done % checkpoint_every == 0 or done == epochs):
                resume_lib.save(checkpoint_path, resume_lib.TrainingCheckpoint(
                    params, opt_state, key, done, history, stopping.best, stopping.best_epoch,
                    stopping.wait, best_params))
            if stop:
                stop_reason = "early_stopping"
                message = (f"early stopping after epoch {done}: {monitor} did not improve for "
                           f"{early_stopping_patience} epochs (best {stopping.best:.6g} at "
                           f"epoch {stopping.best_epoch})")
                break
    finally:
        reporter.close()

    best_epoch = None
    if (early_stopping_patience is not None and restore_best and best_params is not None
            and stop_reason != "non_finite"):
        params, best_epoch = best_params, stopping.best_epoch
    return FitResult(params, opt_state, history, stop_reason, message, best_epoch)
