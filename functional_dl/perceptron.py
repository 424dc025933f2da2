"""Rosenblatt's perceptron: fit inside one ``lax.scan``, one-vs-rest by ``vmap``.

Model: ``score(x) = w · x + b``; ``predict(x) = +1`` if ``score(x) > 0`` else ``-1``.

Learning rule (Rosenblatt 1958), labels ``y ∈ {-1, +1}``, ``w = 0``, ``b = 0`` at the start;
for each sample in turn:

    if y (w · x + b) ≤ 0:   w ← w + η y x,   b ← b + η y        (a "mistake")

This is stochastic subgradient descent on the perceptron criterion
``max(0, -y (w · x + b))`` (:func:`functional_dl.losses.perceptron_loss`), counting the
boundary ``y s = 0`` as a mistake so that learning starts from ``w = 0``.  On linearly
separable data it makes finitely many mistakes (Novikoff's theorem), after which an epoch
has none.

Order: samples are visited in the given order; with a ``key``, epoch ``e`` visits them in
the order ``jax.random.permutation(jax.random.split(key, epochs)[e], n)``.

The whole fit, ``epochs × samples`` updates, is one nested ``lax.scan`` under one ``jit``.
``fit`` returns the params; ``fit_with_history`` returns ``(params, mistakes)`` with
``mistakes[e]`` the number of updates made during epoch ``e`` (0 in the last epoch means the
training data are separated).  The one-vs-rest variants do the same for ``n_classes``
binary perceptrons at once (``vmap`` over the ±1 label vectors, same sample order).

Params: ``{"w": (d,), "b": ()}`` (binary) and ``{"w": (n_classes, d), "b": (n_classes,)}``
(one-vs-rest).  Arguments are checked eagerly (``ValueError`` for labels outside
``{-1, +1}`` / ``[0, n_classes)``, for ``X``, ``y`` of different lengths and for NaN or
inf in ``X``; ``TypeError`` for a ``key`` that is not one PRNG key).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from functional_dl._checks import check_positive, is_concrete
from functional_dl._types import Array, PRNGKey, PyTree

__all__ = ["fit", "fit_with_history", "predict", "fit_one_vs_rest",
           "fit_one_vs_rest_with_history", "predict_one_vs_rest"]


# --------------------------------------------------------------------------- checks


def _as_float_features(X) -> Array:
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n_samples, n_features), got {X.shape}")
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    return X


def _check_finite_features(X: Array) -> None:
    # A NaN or inf feature would turn w and b into NaN at the first update, silently.
    if is_concrete(X) and not np.all(np.isfinite(np.asarray(X))):
        raise ValueError("X must hold finite numbers, got NaN or inf")


def _check_shuffle_key(key) -> None:
    if key is None:
        return
    is_typed_key = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    is_raw_key = (isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32
                  and key.shape == (2,))
    if not ((is_typed_key and key.shape == ()) or is_raw_key):
        raise TypeError(f"key must be one PRNG key such as jax.random.key(0), or None to visit "
                        f"the samples in the given order; got {key!r}")


def _check_lengths(X: Array, y: Array) -> None:
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n_samples,), got {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of samples, got X shape {X.shape} "
                         f"and y shape {y.shape}")
    if X.shape[0] == 0:
        raise ValueError("X and y must hold at least one sample")


def _check_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    return int(epochs)


def _check_binary_labels(y) -> Array:
    y = jnp.asarray(y)
    if is_concrete(y):
        values = np.asarray(y)
        bad = ~((values == 1) | (values == -1))
        if bad.any():
            raise ValueError(f"y must hold binary labels -1 or +1, got values "
                             f"{np.unique(values[bad])[:5].tolist()}")
    return y


def _check_class_labels(y, n_classes) -> Array:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if is_concrete(y):
        values = np.asarray(y)
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"y must hold class labels in [0, {n_classes}), got min "
                             f"{int(values.min())} and max {int(values.max())}")
    return y


# ---------------------------------------------------------------------------- core


def _visit_orders(key: Optional[PRNGKey], epochs: int, n: int) -> Array:
    if key is None:
        return jnp.broadcast_to(jnp.arange(n), (epochs, n))
    return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, epochs))


def _perceptron_scan(X: Array, y: Array, orders: Array, learning_rate: Array):
    """Rosenblatt updates over ``orders`` (epochs, n); returns ``(w, b)`` and mistakes."""
    def sample_step(carry, index):
        """One sample: update (w, b) when y (w·x + b) ≤ 0."""
        w, b = carry
        x_i, y_i = X[index], y[index].astype(X.dtype)
        mistake = y_i * (jnp.dot(w, x_i) + b) <= 0
        step = jnp.where(mistake, learning_rate * y_i, jnp.zeros((), X.dtype))
        return (w + step * x_i, b + step), mistake.astype(jnp.int32)

    def epoch_step(carry, order):
        """One epoch: every sample once, in ``order``; counts the mistakes."""
        carry, mistakes = lax.scan(sample_step, carry, order)
        return carry, jnp.sum(mistakes)

    start = (jnp.zeros(X.shape[1], X.dtype), jnp.zeros((), X.dtype))
    (w, b), mistakes = lax.scan(epoch_step, start, orders)
    return {"w": w, "b": b}, mistakes


@partial(jax.jit, static_argnames=("epochs",))
def _fit_binary(X, y, learning_rate, key, epochs):
    orders = _visit_orders(key, epochs, X.shape[0])
    return _perceptron_scan(X, y, orders, learning_rate)


@partial(jax.jit, static_argnames=("epochs", "n_classes"))
def _fit_one_vs_rest(X, y, learning_rate, key, epochs, n_classes):
    orders = _visit_orders(key, epochs, X.shape[0])
    signs = jnp.where(y[None, :] == jnp.arange(n_classes)[:, None], 1, -1)  # (C, n)
    return jax.vmap(lambda y_c: _perceptron_scan(X, y_c, orders, learning_rate))(signs)


# ------------------------------------------------------------------------- binary


def fit_with_history(X, y, *, epochs: int = 10, learning_rate: float = 1.0,
                     key: Optional[PRNGKey] = None) -> tuple[PyTree, Array]:
    """Train a binary perceptron; return ``(params, mistakes)``.

    Args:
      X: ``(n, d)`` features.
      y: ``(n,)`` labels in ``{-1, +1}``.
      epochs: passes over the data.
      learning_rate: ``η > 0``.
      key: optional PRNG key; when given, samples are reshuffled every epoch.

    Returns:
      ``params = {"w": (d,), "b": ()}`` and ``mistakes``: int32 ``(epochs,)``, the number
      of updates made in each epoch.
    """
    X = _as_float_features(X)
    y = _check_binary_labels(y)
    _check_lengths(X, y)
    _check_finite_features(X)
    epochs = _check_epochs(epochs)
    check_positive("learning_rate", learning_rate)
    _check_shuffle_key(key)
    return _fit_binary(X, y, jnp.asarray(learning_rate, X.dtype), key, epochs)


def fit(X, y, *, epochs: int = 10, learning_rate: float = 1.0,
        key: Optional[PRNGKey] = None) -> PyTree:
    """Train a binary perceptron; return ``{"w": (d,), "b": ()}`` (see :func:`fit_with_history`)."""
    return fit_with_history(X, y, epochs=epochs, learning_rate=learning_rate, key=key)[0]


def predict(params: PyTree, X) -> Array:
    """``+1`` where ``w · x + b > 0``, else ``-1`` (int32, shape ``(n,)``)."""
    X = _as_float_features(X)
    w, b = params["w"], params["b"]
    if w.shape != (X.shape[1],):
        raise ValueError(f"X has {X.shape[1]} features but params['w'] has shape {w.shape}")
    return jnp.where(X @ w + b > 0, 1, -1).astype(jnp.int32)


# -------------------------------------------------------------------- one-vs-rest


def fit_one_vs_rest_with_history(X, y, n_classes: int, *, epochs: int = 10,
                                 learning_rate: float = 1.0,
                                 key: Optional[PRNGKey] = None) -> tuple[PyTree, Array]:
    """One binary perceptron per class (+1 for the class, -1 for the rest), trained together.

    Returns ``params = {"w": (n_classes, d), "b": (n_classes,)}`` and ``mistakes`` of shape
    ``(n_classes, epochs)``.  All classes visit the samples in the same order.
    """
    X = _as_float_features(X)
    y = _check_class_labels(y, n_classes)
    _check_lengths(X, y)
    _check_finite_features(X)
    epochs = _check_epochs(epochs)
    check_positive("learning_rate", learning_rate)
    _check_shuffle_key(key)
    return _fit_one_vs_rest(X, y, jnp.asarray(learning_rate, X.dtype), key, epochs,
                            int(n_classes))


def fit_one_vs_rest(X, y, n_classes: int, *, epochs: int = 10, learning_rate: float = 1.0,
                    key: Optional[PRNGKey] = None) -> PyTree:
    """Params of :func:`fit_one_vs_rest_with_history`, without the mistake counts."""
    return fit_one_vs_rest_with_history(X, y, n_classes, epochs=epochs,
                                        learning_rate=learning_rate, key=key)[0]


def predict_one_vs_rest(params: PyTree, X) -> Array:
    """Class with the largest score ``w_c · x + b_c`` (int32, shape ``(n,)``)."""
    X = _as_float_features(X)
    w, b = params["w"], params["b"]
    if w.ndim != 2 or w.shape[1] != X.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features but params['w'] has shape {w.shape}; "
                         "expected (n_classes, n_features)")
    scores = X @ w.T
    return jnp.argmax(scores + jnp.broadcast_to(b, scores.shape), axis=-1).astype(jnp.int32)
