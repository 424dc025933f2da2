"""Training as plain functions: a jitted step, minibatches, evaluation and an epoch loop.

    step = make_train_step(loss_fn, optimizer)          # jitted, params/opt_state donated
    for epoch in range(epochs):
        for batch in batches(jax.random.fold_in(key, epoch), (x, y), 128):
            params, opt_state, metrics = step(params, opt_state, batch, step_key)
    evaluate(eval_fn, params, (x_test, y_test), 512)    # exact data-set means

``fit`` is that loop with a progress bar, history, validation, a NaN guard and the option
groups ``EarlyStopping(patience, monitor, mode, min_delta, restore_best)``,
``Checkpointing(path, every, resume)`` and a per-step hook ``StepHook(init, update)``::

    result = fit(loss_fn, optimizer, params, (x, y), key=key, epochs=20, batch_size=128,
                 validation_data=(x_val, y_val), early_stopping=EarlyStopping(patience=3),
                 checkpointing=Checkpointing("run.npz", resume=True))

Its parts are here to read and copy: ``epoch.run_epoch`` (one pass over the batches with the
guarded step of ``epoch.make_guarded_step``), ``EarlyStopping.update`` (the pure
early-stopping rule) and the loop itself in ``loop.py``.  ``fit(...,
mesh=distributed.make_mesh())`` is the same loop data-parallel: parameters replicated over
the devices, every batch split over them (``functional_dl.distributed``);
``sharded_batches`` is ``batches`` with each batch split so.

A model with state (``nn.BatchNorm``'s running statistics) passes it in and gets it back:
the loss is ``loss_fn(params, model_state, batch, key) -> (loss, model_state)``, the step
``make_train_step(loss_fn, optimizer, has_state=True)`` is
``step(params, opt_state, model_state, batch, key) -> (params, opt_state, model_state,
metrics)``, and ``fit(..., model_state=state)`` / ``evaluate(..., model_state=state)`` carry
it (checkpoints included); stateless models are written exactly as above::

    _, params, model_state = model.init(key, (-1, 8, 8, 1))
    def loss_fn(params, model_state, batch, key):
        logits, model_state = model.apply(params, batch[0], state=model_state,
                                          train=key is not None)
        return cross_entropy(logits, batch[1]).mean(), model_state
    result = fit(loss_fn, optimizer, params, (x, y), model_state=model_state, ...)
    result.model_state                                  # the running statistics

Per-example gradients are ``vmap`` of ``grad`` over the batch axis, the parameters shared::

    def example_loss(params, x, y):                   # one example, no batch axis
        return cross_entropy(apply(params, x[None]), y[None])[0]
    per_example = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(params, xs, ys)
    # per_example leaves have a leading axis of len(xs); their mean is grad of the mean loss

An ensemble of M models trains at once by ``vmap`` over a leading "model" axis of the
parameters and optimizer state, every model seeing the same batch with its own key::

    ensemble_params = jax.vmap(init_params)(jax.random.split(key, M))
    ensemble_state = jax.vmap(optimizer.init)(ensemble_params)
    ensemble_step = jax.jit(jax.vmap(make_train_step(loss_fn, optimizer),
                                     in_axes=(0, 0, None, 0)))
    ensemble_params, ensemble_state, metrics = ensemble_step(
        ensemble_params, ensemble_state, batch, jax.random.split(step_key, M))

Model m of the ensemble follows exactly the trajectory of a separate training of model m
(``tests/test_ensembles.py``).
"""
from functional_dl.train.data import batches, num_batches, num_examples, sharded_batches
from functional_dl.train.epoch import StepHook, TrainState
from functional_dl.train.loop import FitResult, fit
from functional_dl.train.metrics import accuracy, evaluate
from functional_dl.train.resume import Checkpointing
from functional_dl.train.step import all_finite, loss_and_grads, make_train_step
from functional_dl.train.stopping import EarlyStopping, EarlyStoppingState

__all__ = [
    "Checkpointing", "EarlyStopping", "EarlyStoppingState", "FitResult", "StepHook",
    "TrainState", "accuracy", "all_finite", "batches", "evaluate", "fit", "loss_and_grads",
    "make_train_step", "num_batches", "num_examples", "sharded_batches",
]
