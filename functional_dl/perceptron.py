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

Peer: in the given order (``key=None``) the fit equals scikit-learn's
``Perceptron(eta0=learning_rate, max_iter=epochs, shuffle=False, tol=None)``, binary and
one-vs-rest (its multi-class default), weights and intercepts alike.

The whole fit, ``epochs × samples`` updates, is one nested ``lax.scan`` under one ``jit``.
``fit`` returns the params; ``fit_with_history`` returns ``PerceptronResult(params,
mistakes)`` with ``mistakes[e]`` the number of updates made during epoch ``e`` (0 in the
last epoch means the training data are separated).  The one-vs-rest variants do the same
for ``num_classes`` binary perceptrons at once (``vmap`` over the ±1 label vectors, same
sample order).

Params: ``{"w": (d,), "b": ()}`` (binary) and ``{"w": (num_classes, d), "b":
(num_classes,)}`` (one-vs-rest).  Arguments are checked eagerly with
:mod:`functional_dl.checks`: ``ValueError`` for labels outside ``{-1, +1}`` /
``[0, num_classes)``, for ``X``, ``y`` of different lengths and for NaN or inf in ``X``;
``TypeError`` for a ``key`` that is not one PRNG key, non-integer class labels or counts.

References: F. Rosenblatt, "The perceptron: a probabilistic model for information storage
and organization in the brain", Psychological Review 65(6), 1958; A. B. J. Novikoff, "On
convergence proofs on perceptrons", Symposium on the Mathematical Theory of Automata, 1962;
Bishop, *Pattern Recognition and Machine Learning* (2006), §4.1.7.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree

__all__ = ["PerceptronResult", "fit", "fit_with_history", "predict", "fit_one_vs_rest",
           "fit_one_vs_rest_with_history", "predict_one_vs_rest"]


class PerceptronResult(NamedTuple):
    """What the ``*_with_history`` fits return; unpacks as ``params, mistakes``.

    Attributes:
      params: the fitted ``{"w": ..., "b": ...}``.
      mistakes: int32 updates per epoch: ``(epochs,)`` binary, ``(num_classes, epochs)``
        one-vs-rest.
    """
    params: PyTree
    mistakes: Array


# --------------------------------------------------------------------------- checks


def _as_float_features(X) -> Array:
    """``X`` as a ``(n_samples, n_features)`` floating array (integers become the default float)."""
    X = jnp.asarray(X)
    checks.rank("X", X, 2, "(n_samples, n_features)")
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(checks.default_float_dtype())
    return X


def _check_fit_arguments(X: Array, y: Array, epochs, learning_rate, key) -> int:
    """The checks both fits share; returns ``epochs`` as an int."""
    checks.rank("y", y, 1, "(n_samples,)")
    checks.leading_length("X and y", (X, y))
    # A NaN or inf feature would turn w and b into NaN at the first update, silently.
    checks.finite("X", X)
    epochs = checks.whole_number("epochs", epochs, minimum=1)
    checks.positive("learning_rate", learning_rate)
    checks.prng_key("key", key, allow_none=True, single=True)
    return epochs


# ---------------------------------------------------------------------------- core


def _visit_orders(key: Optional[PRNGKey], epochs: int, n: int) -> Array:
    """``(epochs, n)`` sample indices: the given order, or one permutation per epoch."""
    if key is None:
        return jnp.broadcast_to(jnp.arange(n), (epochs, n))
    return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, epochs))


def _perceptron_scan(X: Array, y: Array, orders: Array, learning_rate: Array) -> PerceptronResult:
    """Rosenblatt updates over ``orders`` (epochs, n) from ``w = 0, b = 0``."""
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
    return PerceptronResult({"w": w, "b": b}, mistakes)


@partial(jax.jit, static_argnames=("epochs",))
def _fit_binary(X, y, learning_rate, key, epochs):
    orders = _visit_orders(key, epochs, X.shape[0])
    return _perceptron_scan(X, y, orders, learning_rate)


@partial(jax.jit, static_argnames=("epochs", "num_classes"))
def _fit_one_vs_rest(X, y, learning_rate, key, epochs, num_classes):
    orders = _visit_orders(key, epochs, X.shape[0])
    signs = jnp.where(y[None, :] == jnp.arange(num_classes)[:, None], 1, -1)  # (C, n)
    return jax.vmap(lambda y_c: _perceptron_scan(X, y_c, orders, learning_rate))(signs)


# ------------------------------------------------------------------------- binary


def fit_with_history(X, y, *, epochs: int = 10, learning_rate: float = 1.0,
                     key: Optional[PRNGKey] = None) -> PerceptronResult:
    """Train a binary perceptron; return ``PerceptronResult(params, mistakes)``.

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
    y = jnp.asarray(y)
    checks.sign_labels("y", y)
    epochs = _check_fit_arguments(X, y, epochs, learning_rate, key)
    return _fit_binary(X, y, jnp.asarray(learning_rate, X.dtype), key, epochs)


def fit(X, y, *, epochs: int = 10, learning_rate: float = 1.0,
        key: Optional[PRNGKey] = None) -> PyTree:
    """Train a binary perceptron; return ``{"w": (d,), "b": ()}`` (see :func:`fit_with_history`)."""
    return fit_with_history(X, y, epochs=epochs, learning_rate=learning_rate, key=key).params


def predict(params: PyTree, X) -> Array:
    """``+1`` where ``w · x + b > 0``, else ``-1`` (int32, shape ``(n,)``)."""
    X = _as_float_features(X)
    w, b = params["w"], params["b"]
    checks.shape_is("params['w']", w, (X.shape[1],), "to match the features of X")
    return jnp.where(X @ w + b > 0, 1, -1).astype(jnp.int32)


# -------------------------------------------------------------------- one-vs-rest


def fit_one_vs_rest_with_history(X, y, num_classes: int, *, epochs: int = 10,
                                 learning_rate: float = 1.0,
                                 key: Optional[PRNGKey] = None) -> PerceptronResult:
    """One binary perceptron per class (+1 for the class, -1 for the rest), trained together.

    Args:
      X: ``(n, d)`` features.
      y: ``(n,)`` integer class labels in ``[0, num_classes)``.
      num_classes: number of classes ``C >= 2``.
      epochs, learning_rate, key: as for :func:`fit_with_history`; every class visits the
        samples in the same order.

    Returns:
      ``PerceptronResult(params, mistakes)`` with ``params = {"w": (C, d), "b": (C,)}`` and
      ``mistakes`` int32 ``(C, epochs)``.
    """
    X = _as_float_features(X)
    y = jnp.asarray(y)
    num_classes = checks.whole_number("num_classes", num_classes, minimum=2)
    checks.labels_in("y", y, num_classes)
    epochs = _check_fit_arguments(X, y, epochs, learning_rate, key)
    return _fit_one_vs_rest(X, y, jnp.asarray(learning_rate, X.dtype), key, epochs,
                            num_classes)


def fit_one_vs_rest(X, y, num_classes: int, *, epochs: int = 10, learning_rate: float = 1.0,
                    key: Optional[PRNGKey] = None) -> PyTree:
    """Params of :func:`fit_one_vs_rest_with_history`, without the mistake counts."""
    return fit_one_vs_rest_with_history(X, y, num_classes, epochs=epochs,
                                        learning_rate=learning_rate, key=key).params


def predict_one_vs_rest(params: PyTree, X) -> Array:
    """Class with the largest score ``w_c · x + b_c`` (int32, shape ``(n,)``)."""
    X = _as_float_features(X)
    w, b = params["w"], params["b"]
    checks.rank("params['w']", w, 2, f"(num_classes, {X.shape[1]}) to match the features of X")
    checks.shape_is("params['w']", w, (w.shape[0], X.shape[1]), "to match the features of X")
    scores = X @ w.T
    return jnp.argmax(scores + jnp.broadcast_to(b, scores.shape), axis=-1).astype(jnp.int32)
