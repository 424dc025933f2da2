"""Training as plain functions: a jitted step, minibatches, evaluation and an epoch loop.

    step = make_train_step(loss_fn, optimizer)          # jitted, params/opt_state donated
    for epoch in range(epochs):
        for batch in batches(jax.random.fold_in(key, epoch), (x, y), 128):
            params, opt_state, metrics = step(params, opt_state, batch, step_key)
    evaluate(eval_fn, params, (x_test, y_test), 512)    # exact data-set means

``fit`` is that loop with a progress bar, history, validation, early stopping, a NaN guard
and checkpoint/resume; read it in ``loop.py`` and copy it when you need something else.
``fit(..., mesh=distributed.make_mesh())`` is the same loop data-parallel: parameters
replicated over the devices, every batch split over them (``placement.py``).

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
from functional_dl.train.data import batches, num_batches, num_examples
from functional_dl.train.loop import FitResult, fit
from functional_dl.train.metrics import accuracy, evaluate
from functional_dl.train.step import all_finite, loss_and_grads, make_train_step

__all__ = [
    "FitResult", "accuracy", "all_finite", "batches", "evaluate", "fit", "loss_and_grads",
    "make_train_step", "num_batches", "num_examples",
]
