"""Per-example losses: pure functions of arrays, no reduction.

Every loss returns one value per example and the caller reduces (``loss(...).mean()``).
Classes live on the last axis: ``logits`` of shape ``(..., C)`` give losses of shape
``(...)``.  Elementwise losses (``squared_error``, ``sigmoid_binary_cross_entropy``,
``hinge_loss``, ``perceptron_loss``) return the shape of their inputs.  Written for one
example; batches and any leading axes work as they are, and ``jax.vmap`` over examples gives
the same numbers.

Numerics.  Cross-entropies are computed in log space with ``jax.nn.log_softmax``, which
subtracts the maximum first (``logsumexp(z) = m + log Σ exp(z - m)``, ``m = max z``), so
logits of ±1e4 give finite values and finite gradients in float32 and float64.  Terms
``p log p`` and ``p log q`` use the convention ``0 · log 0 = 0`` with a "double where", so
probabilities with exact zeros give finite values *and* finite gradients (never
``0 · inf = nan``).  Cross entropy and KL divergence differ by the entropy of the targets:
``CE(p, q) = H(p) + KL(p || q)``.

Bad input.  Shapes that disagree raise ``ValueError`` naming both shapes.  Integer labels
outside ``[0, C)`` raise ``ValueError`` when the labels are concrete (eager call); inside
``jit`` the labels cannot be inspected, and the loss of each such example is **NaN** (its
gradient is zero), so a bad label shows up loudly in the mean instead of as a plausible
number.  :func:`check_integer_labels` is the explicit eager check to call on a data set.

Peers (per example, no reduction): ``optax.softmax_cross_entropy``,
``optax.softmax_cross_entropy_with_integer_labels``, ``optax.sigmoid_binary_cross_entropy``,
``optax.kl_divergence(log_predictions, targets)``, ``optax.hinge_loss`` and
``optax.squared_error`` compute the same formulas; in PyTorch ``F.cross_entropy``,
``F.binary_cross_entropy_with_logits`` and ``F.mse_loss`` (``squared_error``) with
``reduction="none"``, and ``F.kl_div(log_predictions, targets, reduction="none").sum(-1)``.

References: Goodfellow, Bengio & Courville, *Deep Learning* (2016), §3.13 (cross entropy,
KL divergence) and §6.2.2 (sigmoid and softmax output units); Bishop, *Pattern Recognition
and Machine Learning* (2006), §4.1.7 (the perceptron criterion); Cortes & Vapnik,
"Support-vector networks", Machine Learning 20 (1995) (the hinge loss).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array

__all__ = [
    "check_integer_labels",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "sigmoid_binary_cross_entropy",
    "squared_error",
    "mean_squared_error",
    "kl_divergence",
    "hinge_loss",
    "perceptron_loss",
]


# --------------------------------------------------------------------------- checks


def _class_axis(name: str, x: Array) -> None:
    """ValueError unless ``x`` has at least one axis, the last being the classes."""
    checks.rank(name, x, range(1, 65), "(..., C) with the classes on the last axis")


def check_integer_labels(labels: Array, num_classes: int) -> None:
    """Eagerly check that ``labels`` are integers in ``[0, num_classes)``; raise otherwise.

    Call it on concrete data (outside ``jit``); it raises ``TypeError`` for a non-integer
    dtype and ``ValueError`` naming the smallest and largest labels when one is out of range.
    """
    num_classes = checks.whole_number("num_classes", num_classes, minimum=1)
    if checks.concrete_values(labels) is None:
        raise TypeError("labels must be concrete for check_integer_labels; call it outside jit")
    checks.integer_dtype("labels", labels, what="class labels of an integer dtype")
    checks.labels_in("labels", labels, num_classes)


# ----------------------------------------------------------------- safe log helpers


def _xlogy(x: Array, y: Array) -> Array:
    """``x · log y`` with ``0 · log y = 0`` for every ``y`` (also ``y = 0``), finite gradients.

    The inner ``where`` keeps ``log`` away from 0 where ``x = 0``, so the unselected branch
    has a finite derivative and ``where``'s gradient does not become ``0 · inf = nan``.
    """
    nonzero = x != 0
    safe_y = jnp.where(nonzero, y, jnp.ones_like(y))
    return jnp.where(nonzero, x * jnp.log(safe_y), jnp.zeros_like(x * safe_y))


def _x_times(x: Array, y: Array) -> Array:
    """``x · y`` with ``0 · y = 0`` even where ``y = -inf`` (for ``p · log q`` in log space)."""
    nonzero = x != 0
    safe_y = jnp.where(nonzero, y, jnp.zeros_like(y))
    return jnp.where(nonzero, x * safe_y, jnp.zeros_like(x * safe_y))


# --------------------------------------------------------------------- classification


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
    """Cross entropy between a target distribution and ``softmax(logits)``, per example.

    ``ℓ(z, y) = -Σ_c y_c log softmax(z)_c = (Σ_c y_c) · logsumexp(z) - Σ_c y_c z_c``,
    which is ``logsumexp(z) - Σ_c y_c z_c`` for targets summing to one.

    Gradient: ``∂ℓ/∂z = (Σ_c y_c) softmax(z) - y`` (``softmax(z) - y`` for a distribution).

    Args:
      logits: ``(..., C)`` unnormalised scores.
      labels: ``(..., C)`` target probabilities (rows of a one-hot matrix, or soft labels);
        exact zeros are fine, also against a logit of ``-inf`` (a masked-out class).

    Returns:
      ``(...)`` loss per example.
    """
    _class_axis("logits", logits)
    checks.same_shape("logits", logits, "labels", labels)
    checks.floating_dtype("logits", logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    # A class masked out with a logit of -inf has log_prob -inf; where its label is 0 the term
    # is 0 (not 0 · -inf = nan).  Finite log_probs keep the plain product, so
    # ∂ℓ/∂y_c = -log softmax(z)_c also where y_c = 0.
    # (Two nested selects, not one on ``(labels == 0) & isneginf``: for float16 that fused
    # select crashes XLA's CPU code generator, jaxlib 0.10.)
    safe_log_probs = jnp.where(
        labels == 0,
        jnp.where(jnp.isneginf(log_probs), jnp.zeros_like(log_probs), log_probs),
        log_probs)
    return -jnp.sum(labels * safe_log_probs, axis=-1)


def softmax_cross_entropy_with_integer_labels(logits: Array, labels: Array) -> Array:
    """Softmax cross entropy with the true class given as an integer, per example.

    ``ℓ(z, k) = -log softmax(z)_k = logsumexp(z) - z_k``;  ``∂ℓ/∂z = softmax(z) - e_k``.

    Args:
      logits: ``(..., C)`` unnormalised scores.
      labels: ``(...)`` integer class indices in ``[0, C)``.

    Returns:
      ``(...)`` loss per example.  Labels outside ``[0, C)``: ``ValueError`` when the labels
      are concrete; under ``jit`` the loss of that example is NaN with a zero gradient (see
      the module docstring and :func:`check_integer_labels`).
    """
    _class_axis("logits", logits)
    checks.floating_dtype("logits", logits)
    logits_shape = jnp.shape(logits)
    checks.shape_is("labels", labels, logits_shape[:-1],
                    f"(logits shape {logits_shape} without its class axis)")
    checks.integer_dtype("labels", labels, what="class indices of an integer dtype (for "
                         "probability labels use softmax_cross_entropy)")
    num_classes = logits_shape[-1]
    checks.labels_in("labels", labels, num_classes)
    labels = jnp.asarray(labels)
    in_range = labels >= 0
    if num_classes <= jnp.iinfo(labels.dtype).max:  # else C itself wraps in the label dtype
        in_range = in_range & (labels < num_classes)
    safe_labels = jnp.where(in_range, labels, 0)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    return jnp.where(in_range, -picked, jnp.full_like(picked, jnp.nan))


def sigmoid_binary_cross_entropy(logits: Array, labels: Array) -> Array:
    """Binary cross entropy between ``labels`` and ``sigmoid(logits)``, elementwise.

    ``ℓ(z, y) = -[y log σ(z) + (1 - y) log(1 - σ(z))] = softplus(z) - y z``,
    ``softplus(z) = log(1 + exp(z)) = logaddexp(0, z)``;  ``∂ℓ/∂z = σ(z) - y``.

    ``logaddexp`` is evaluated as ``max(0, z) + log1p(exp(-|z|))`` (finite for logits of
    ±1e4) and differentiated as ``σ(z)`` everywhere.  Writing that expression out by hand
    would get the gradient wrong at ``z = 0``: the kinks of ``max`` and ``|·|`` meet there
    and autodiff gives ``-y`` instead of ``½ - y`` (the gradient of a zero-initialised
    logistic regression).

    Args:
      logits: any shape; one independent binary problem per entry (multi-label works).
      labels: same shape, targets in ``[0, 1]``.

    Returns:
      loss of the same shape as ``logits``.
    """
    checks.same_shape("logits", logits, "labels", labels)
    checks.floating_dtype("logits", logits)
    return jnp.logaddexp(jnp.zeros_like(logits), logits) - labels * logits


def kl_divergence(log_predictions: Array, targets: Array) -> Array:
    """Kullback–Leibler divergence ``KL(p || q)`` over the last axis, per example.

    ``KL(p || q) = Σ_c p_c (log p_c - log q_c)`` with ``0 · log 0 = 0``, where
    ``p = targets`` are probabilities and ``log q = log_predictions`` (e.g. a log-softmax).
    Classes with ``p_c = 0`` contribute 0 even where ``q_c = 0`` (``log q_c = -inf``).

    Gradients: ``∂KL/∂log q_c = -p_c``.  ``∂KL/∂p_c = log p_c + 1 - log q_c`` diverges at
    ``p_c = 0``; there it is defined as 0 (targets are usually constants).

    Args:
      log_predictions: ``(..., C)`` log-probabilities of the model.
      targets: ``(..., C)`` target probabilities, exact zeros allowed.

    Returns:
      ``(...)`` divergence per example (``≥ 0`` for normalised inputs).
    """
    _class_axis("log_predictions", log_predictions)
    checks.same_shape("log_predictions", log_predictions, "targets", targets)
    checks.floating_dtype("log_predictions", log_predictions)
    return jnp.sum(_xlogy(targets, targets) - _x_times(targets, log_predictions), axis=-1)


def hinge_loss(scores: Array, labels: Array) -> Array:
    """Binary hinge loss ``max(0, 1 - y s)`` for labels ``y ∈ {-1, +1}``, elementwise.

    Subgradient ``∂ℓ/∂s = -y`` where ``y s < 1``, else 0.  Concrete labels outside
    ``{-1, +1}`` raise ``ValueError`` (0/1 labels are the usual mistake).
    """
    checks.same_shape("scores", scores, "labels", labels)
    checks.sign_labels("labels", labels)
    margin = labels * scores
    # ``where`` (not ``maximum``, whose gradient at a tie is ½) gives the stated subgradient.
    return jnp.where(margin < 1, 1 - margin, jnp.zeros_like(margin))


def perceptron_loss(scores: Array, labels: Array) -> Array:
    """Perceptron criterion ``max(0, -y s)`` for labels ``y ∈ {-1, +1}``, elementwise.

    Subgradient ``∂ℓ/∂s = -y`` where ``y s ≤ 0`` (a mistake, the boundary included), else 0;
    for ``s = w · x + b`` a descent step with step size ``η`` is the Rosenblatt update of
    :mod:`functional_dl.perceptron` (``w ← w + η y x`` on a mistake, also from ``w = 0``).
    Concrete labels outside ``{-1, +1}`` raise ``ValueError``.
    """
    checks.same_shape("scores", scores, "labels", labels)
    checks.sign_labels("labels", labels)
    margin = labels * scores
    # ``where`` puts the boundary margin = 0 on the mistake side: subgradient -y there.
    return jnp.where(margin <= 0, -margin, jnp.zeros_like(margin))


# ------------------------------------------------------------------------- regression


def squared_error(predictions: Array, targets: Array) -> Array:
    """Elementwise squared difference ``(y - ŷ)²`` .

    Gradient ``∂ℓ/∂ŷ = 2 (ŷ - y)``.  Returns the shape of the inputs (no reduction).
    """
    checks.same_shape("predictions", predictions, "targets", targets)
    return jnp.square(predictions - targets)


def mean_squared_error(predictions: Array, targets: Array) -> Array:
    """Mean squared error over the last axis, per example.

    ``ℓ(ŷ, y) = (1/K) Σ_k (ŷ_k - y_k)²`` for ``(..., K)`` inputs, giving ``(...)``;
    ``∂ℓ/∂ŷ = 2 (ŷ - y) / K``.
    """
    _class_axis("predictions", predictions)
    checks.same_shape("predictions", predictions, "targets", targets)
    return jnp.mean(jnp.square(predictions - targets), axis=-1)
