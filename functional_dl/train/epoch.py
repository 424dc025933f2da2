"""One epoch of ``fit``: the guarded train step, the per-step hook, and ``run_epoch``.

The state that a step updates is ``TrainState(params, opt_state, hook_state, model_state)``
(``model_state``: a stateful model's, e.g. ``nn.BatchNorm``'s running statistics).  The step is
``make_train_step``'s with two additions:

    L, g        = value_and_grad(loss_fn)(θ, batch, key)
    u, s'       = optimizer.update(g, s, θ);   θ' = θ + u
    h'          = on_step.update(h, t, θ', s', {"loss": L, **aux})   # h' = h without a hook
    healthy'    = healthy ∧ finite(θ') [∧ finite(L)]
    (θ, s, h)  ← (θ', s', h') if healthy' else (θ, s, h)

``t`` is the number of steps the run took before this one (0 for its first step).  The flag
``healthy`` is sticky: after the first step that clears it every update is skipped, and
``run_epoch`` reads it once, at the end of the epoch (no per-step host sync), so ``fit`` can
stop with the parameters from before the bad step.  The ``[∧ finite(L)]`` term is there
unless ``fit(..., stop_on_non_finite_loss=False)``, which lets an optimizer that skips bad
steps itself (``optim.apply_if_finite``) carry on past a non-finite loss.

``run_epoch`` is the inner loop over the batches; its randomness is that of ``fit``:

    shuffle_key, step_key = split(epoch_key)
    batch order           = permutation(shuffle_key, n)      # via ``batches``
    key of step i         = fold_in(step_key, i)             # given to loss_fn (dropout)
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from functional_dl import checks, distributed
from functional_dl._types import Array, PRNGKey, PyTree
from functional_dl.optim import apply_updates
from functional_dl.train.data import batches
from functional_dl.train.step import LossFn, all_finite, loss_and_grads


class StepHook(NamedTuple):
    """A pure per-step hook of ``fit``: state of its own, updated inside the jitted step.

    ``init(params) -> hook_state`` builds the state (a pytree of arrays) from the initial
    parameters; ``update(hook_state, step, params, opt_state, metrics) -> hook_state`` runs
    after every step with ``step`` the number of steps taken before this one (an int32
    scalar), the updated ``params`` and ``opt_state``, and the step's ``metrics``
    (``{"loss": L, **aux}``, ``L`` before the update).  It must return a state of the same
    structure, shapes and dtypes.  ``fit`` returns the final state as
    ``FitResult.hook_state`` and saves it in its checkpoints, so a resumed run continues it.

    An exponential moving average of the parameters, ``ē_t = d·ē_{t−1} + (1 − d)·θ_t``::

        ema = StepHook(init=lambda params: params,
                       update=lambda ema, step, params, opt_state, metrics: jax.tree.map(
                           lambda e, p: 0.99 * e + 0.01 * p, ema, params))

    Logging from inside the step: call ``jax.debug.callback(log, step, metrics["loss"])`` in
    ``update`` and return the state unchanged.  The hook observes; it does not change the
    parameters or the optimizer state: a change to the update belongs in the optimizer
    (``optim.chain``), a learning-rate schedule in its ``learning_rate``.
    """
    init: Callable[[PyTree], PyTree]
    update: Callable[[PyTree, Array, PyTree, PyTree, dict], PyTree]


class TrainState(NamedTuple):
    """What one step of ``fit`` updates: ``hook_state`` is ``None`` without ``on_step``,
    ``model_state`` (``nn.BatchNorm``'s running statistics) ``None`` for a stateless model."""
    params: PyTree
    opt_state: PyTree
    hook_state: PyTree = None
    model_state: PyTree = None


def memoized_when_hashable(factory: Callable) -> Callable:
    """``factory`` cached on its (positional) arguments when they hash, as functions and
    ``Optimizer`` tuples do, so a second ``fit`` with the same ones does not recompile."""
    cached = functools.lru_cache(maxsize=32)(factory)

    @functools.wraps(factory)
    def memoized(*args):
        try:
            hash(args)
        except TypeError:
            return factory(*args)
        return cached(*args)
    return memoized


def _check_hook_state(new: PyTree, old: PyTree) -> None:
    """``on_step.update`` keeps the structure, shapes and dtypes of ``on_step.init``'s state."""
    checks.same_structure("on_step.update's result", new, "the hook state", old,
                          owner="fit")
    for (path, a), (_, b) in zip(checks.leaves_with_paths(new), checks.leaves_with_paths(old)):
        if jnp.result_type(a) != jnp.result_type(b):
            raise TypeError(f"fit: on_step.update must keep the dtypes of the hook state; leaf "
                            f"{path or '[root]'} went from {jnp.result_type(b)} to "
                            f"{jnp.result_type(a)}")


@memoized_when_hashable
def make_guarded_step(loss_fn: LossFn, optimizer: Any, has_aux: bool, donate: bool,
                      on_step: Optional[StepHook], stop_on_non_finite_loss: bool,
                      has_state: bool = False) -> Callable:
    """The jitted ``guarded_step(state, batch, key, step, healthy) -> (state, metrics, healthy)``
    of the module doc; ``state`` is donated when ``donate``.  With ``has_state`` the loss is
    ``loss_fn(params, model_state, batch, key) -> (out, model_state')`` (``make_train_step``'s
    ``has_state``) and a non-finite ``model_state'`` clears ``healthy`` too."""
    compute = loss_and_grads(loss_fn, has_aux=has_aux, has_state=has_state)

    def guarded_step(state, batch, key, step, healthy):
        if has_state:
            loss, metrics, grads, model_state = compute(state.params, state.model_state, batch,
                                                        key)
        else:
            (loss, metrics, grads), model_state = compute(state.params, batch, key), None
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = apply_updates(state.params, updates)
        metrics = {"loss": loss, **metrics}
        hook_state = state.hook_state
        if on_step is not None:
            hook_state = on_step.update(hook_state, jnp.asarray(step, jnp.int32), params,
                                        opt_state, metrics)
            _check_hook_state(hook_state, state.hook_state)
        healthy = healthy & all_finite(params) & all_finite(model_state)
        if stop_on_non_finite_loss:
            healthy = healthy & jnp.isfinite(loss)
        new_state = TrainState(params, opt_state, hook_state, model_state)
        new_state = jax.tree.map(lambda new, old: jnp.where(healthy, new, old), new_state, state)
        return new_state, metrics, healthy

    return jax.jit(guarded_step, donate_argnums=(0,) if donate else ())


class EpochSummary(NamedTuple):
    """What ``run_epoch`` reports.

    ``means``: example-weighted means ``Σ_k B_k m_k / Σ_k B_k`` of every metric over the
    steps whose loss was finite; ``num_non_finite_loss``: how many steps had a non-finite
    loss; ``failed_step``: the 0-based index of the step that cleared ``healthy`` (its
    updates and all later ones were skipped), ``None`` when every step was healthy;
    ``failed_loss``: that step's loss.
    """
    means: dict[str, float]
    num_non_finite_loss: int
    failed_step: Optional[int]
    failed_loss: Optional[float]


_jitted_all_finite = jax.jit(all_finite)   # one dispatch per epoch, not three per leaf


def _summarize(step_metrics: list[dict], sizes: list[int],
               health: Optional[list]) -> EpochSummary:
    """``EpochSummary`` from the host copies of the steps' metrics and health flags."""
    losses = np.asarray([np.float64(m["loss"]) for m in step_metrics])
    finite = np.isfinite(losses)
    weights = np.where(finite, np.asarray(sizes, dtype=np.float64), 0.0)
    total = weights.sum()
    names = ["loss"] + sorted(name for name in step_metrics[0] if name != "loss")
    means = {}
    for name in names:
        values = np.where(finite, [np.float64(m[name]) for m in step_metrics], 0.0)
        means[name] = float(np.dot(weights, values) / total) if total else math.nan
    failed = None if health is None else int(np.argmin(np.asarray(health)))
    return EpochSummary(means, int((~finite).sum()), failed,
                        None if failed is None else float(losses[failed]))


def run_epoch(step: Callable, state: TrainState, train_data: PyTree, epoch_key: PRNGKey,
              batch_size: int, *, drop_last: bool = False, first_step: int = 0,
              mesh: Mesh | None = None,
              axis_name: str | None = None) -> tuple[TrainState, EpochSummary]:
    """One pass of ``step`` (a ``make_guarded_step``) over ``train_data`` in shuffled batches.

    Args:
      step: ``guarded_step(state, batch, key, step, healthy) -> (state, metrics, healthy)``.
      state: the ``TrainState`` to start from (donated to ``step`` if it donates).
      train_data: pytree of arrays sharing the leading example axis.
      epoch_key: this epoch's key; ``fit`` passes ``fold_in(key, epoch)``.
      batch_size, drop_last: as in ``batches``.
      first_step: the steps taken before this epoch (the hook's ``step`` counts on from it).
      mesh, axis_name: split each batch over the mesh axis (a batch that does not divide is
        replicated, ``distributed.split_or_replicate``).

    Returns:
      ``(state, summary)``: the state after the last healthy step, and ``EpochSummary``.
    """
    shuffle_key, step_key = jax.random.split(epoch_key)
    # "the parameters are finite", computed from them so that it is placed like them (a
    # committed or sharded flag beside committed parameters): the step's output flag then
    # has the input's placement and the step compiles once, resumed or sharded
    healthy = _jitted_all_finite(state.params)
    step_metrics, sizes, health = [], [], []
    for i, batch in enumerate(batches(shuffle_key, train_data, batch_size, drop_last=drop_last)):
        if mesh is not None:
            batch = distributed.split_or_replicate(batch, mesh, axis_name)
        state, metrics, healthy = step(state, batch, jax.random.fold_in(step_key, i),
                                       first_step + i, healthy)
        step_metrics.append(metrics)
        sizes.append(jax.tree.leaves(batch)[0].shape[0])
        health.append(healthy)
    # the epoch's one wait for the device; the per-step flags only when a step failed
    failed = not bool(healthy)
    step_metrics, health = jax.device_get((step_metrics, health if failed else None))
    return state, _summarize(step_metrics, sizes, health)
