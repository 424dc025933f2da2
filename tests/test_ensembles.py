"""vmap recipes from functional_dl.train's docs: per-example gradients and model ensembles.

Oracles: a Python loop of single-example gradients; 16 separate trainings, one per model.
"""
import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import losses, nn, optim, train

NUM_MODELS, NUM_FEATURES, NUM_CLASSES = 16, 4, 3
NETWORK = nn.mlp([8, NUM_CLASSES], dropout=0.2)
OPTIMIZER = optim.adam(0.02)

rng = np.random.default_rng(0)
X = rng.normal(size=(24, NUM_FEATURES)).astype(np.float32)
Y = rng.integers(0, NUM_CLASSES, size=24).astype(np.int32)


@jax.jit
def init_params(key):
    return NETWORK.init(key, (-1, NUM_FEATURES))[1]


def loss_fn(params, batch, key):
    x, y = batch
    logits = NETWORK.apply(params, x, key=key, train=key is not None)
    return losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def example_loss(params, x, y):
    """Loss of one example (no batch axis), the function vmapped over examples."""
    return loss_fn(params, (x[None], y[None]), None)


def test_per_example_gradients_equal_a_loop_of_single_gradients():
    params = init_params(jax.random.key(0))
    per_example = jax.jit(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0)))(params, X, Y)
    per_example = jax.device_get(per_example)
    single = jax.jit(jax.grad(example_loss))
    for i in range(len(X)):
        expected = single(params, X[i], Y[i])
        for leaf, expected_leaf in zip(jax.tree.leaves(per_example), jax.tree.leaves(expected)):
            np.testing.assert_allclose(leaf[i], expected_leaf, rtol=1e-5, atol=1e-6)
    batch_grad = jax.jit(jax.grad(loss_fn))(params, (X, Y), None)
    for leaf, batch_leaf in zip(jax.tree.leaves(per_example), jax.tree.leaves(batch_grad)):
        assert leaf.shape == (len(X),) + batch_leaf.shape
        np.testing.assert_allclose(leaf.mean(axis=0), batch_leaf, rtol=1e-5, atol=1e-6)


def training_plan(steps=6, batch_size=8):
    """(batch, per-model step keys) for each step: every model sees the same batches."""
    return [(next(train.batches(jax.random.key(step), (X, Y), batch_size)),
             jax.random.split(jax.random.key(100 + step), NUM_MODELS))
            for step in range(steps)]


def test_sixteen_models_trained_at_once_equal_sixteen_separate_trainings():
    model_keys = jax.random.split(jax.random.key(1), NUM_MODELS)
    plan = training_plan()

    separate_inits = [init_params(key) for key in model_keys]
    ensemble_params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *separate_inits)
    ensemble_state = jax.jit(jax.vmap(OPTIMIZER.init))(ensemble_params)
    ensemble_step = jax.jit(jax.vmap(train.make_train_step(loss_fn, OPTIMIZER),
                                     in_axes=(0, 0, None, 0)))
    for batch, keys in plan:
        ensemble_params, ensemble_state, metrics = ensemble_step(ensemble_params,
                                                                 ensemble_state, batch, keys)
    assert metrics["loss"].shape == (NUM_MODELS,)
    ensemble_params, ensemble_state, metrics = jax.device_get(
        (ensemble_params, ensemble_state, metrics))

    step = train.make_train_step(loss_fn, OPTIMIZER)
    init_state = jax.jit(OPTIMIZER.init)
    for m in range(NUM_MODELS):
        params = separate_inits[m]
        state = init_state(params)
        for batch, keys in plan:
            params, state, single_metrics = step(params, state, batch, keys[m])
        np.testing.assert_allclose(metrics["loss"][m], single_metrics["loss"], rtol=1e-5)
        for leaf, ensemble_leaf in zip(jax.tree.leaves((params, state)),
                                       jax.tree.leaves((ensemble_params, ensemble_state))):
            np.testing.assert_allclose(ensemble_leaf[m], leaf, rtol=1e-5, atol=1e-6)

    # the models really differ (different inits and dropout masks)
    first = jax.tree.leaves(ensemble_params)[0]
    assert not np.allclose(first[0], first[1])
