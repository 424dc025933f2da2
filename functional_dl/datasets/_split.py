"""Random train/test splits from a JAX key, and feature standardization.

``train_test_split`` runs eagerly (the split sizes decide output shapes); ``standardize`` is
a pure ``jnp`` function and can be jitted.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey


def train_test_split(key: PRNGKey, *arrays: Any, test_size: float = 0.25) -> tuple:
    """Shuffle examples with ``key`` and split every array the same way.

    One permutation ``p = jax.random.permutation(key, n)`` of the ``n`` examples is drawn;
    the first ``num_test = ceil(test_size * n)`` entries of ``p`` index the test part and the
    rest, in permuted order, the training part. Every array is indexed along its leading
    axis with the same indices, so rows stay aligned across arrays. NumPy inputs give NumPy
    outputs and JAX inputs JAX outputs. The same key gives the same split.

    Args:
      key: a PRNG key (``jax.random.key(0)`` or a raw ``jax.random.PRNGKey(0)``).
      *arrays: one or more arrays with the same leading length ``n``.
      test_size: fraction of the examples in the test part, in (0, 1).

    Returns:
      ``(a_train, a_test, b_train, b_test, ...)``, two arrays per input, in input order.

    Raises:
      TypeError: ``key`` is not a PRNG key, or ``test_size`` is not a real number.
      ValueError: no key, no arrays, a 0-d array, different leading lengths, ``test_size``
        outside (0, 1), or a split that would leave the training or the test part empty.
    """
    checks.prng_key("key", key, what="shuffling before the split")
    checks.real_in("test_size", test_size, 0.0, 1.0, low_closed=False, high_closed=False)
    arrays = tuple(a if hasattr(a, "shape") else jnp.asarray(a) for a in arrays)
    num_examples = checks.leading_length("arrays", arrays)
    # rounded first: 0.07 · 100 is 7.000000000000001 in binary floating point
    num_test = math.ceil(round(float(test_size) * num_examples, 9))
    if not 0 < num_test < num_examples:
        raise ValueError(
            f"test_size={test_size} on {num_examples} examples leaves {num_test} test and "
            f"{num_examples - num_test} training examples; both parts must be non-empty")
    permutation = jax.device_get(jax.random.permutation(key, num_examples))
    test_indices, train_indices = permutation[:num_test], permutation[num_test:]
    split = []
    for array in arrays:
        split.extend((array[train_indices], array[test_indices]))
    return tuple(split)


def standardize(train: Array, test: Array) -> tuple[Array, Array]:
    """Scale features to zero mean and unit variance using the training part's statistics.

    With ``mu = mean(train, axis=0)`` and ``sigma = std(train, axis=0)`` (population standard
    deviation, ddof = 0), returns ``((train - mu) / s, (test - mu) / s)`` where ``s = sigma``,
    except for a feature whose training values are all equal (to ``c``): there ``mu = c``
    exactly and ``s = 1`` (the computed mean of equal values can be off by ulps, and their
    spread 0), so the training part becomes exactly 0 and the test part ``test - c``, not
    NaN or rounding noise blown up to O(1). The test part never influences ``mu`` or
    ``sigma``.

    Args:
      train: ``(n_train, ...)`` features; at least one example.
      test: ``(n_test, ...)`` features with the same trailing shape as ``train``.

    Returns:
      The two standardized arrays, floating point (integer input is promoted).
    """
    train = jnp.asarray(train)
    test = jnp.asarray(test)
    if train.ndim < 1 or train.shape[0] < 1:
        raise ValueError(
            f"train must have shape (n_train, ...) with n_train >= 1, got {train.shape}")
    if test.ndim != train.ndim or test.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"test must have shape (n_test, *{train.shape[1:]}) to match train, got {test.shape}")
    if not jnp.issubdtype(train.dtype, jnp.floating):
        train = train.astype(jnp.result_type(float))
    is_constant = jnp.all(train == train[:1], axis=0, keepdims=True)
    mean = jnp.where(is_constant, train[:1], jnp.mean(train, axis=0, keepdims=True))
    std = jnp.std(train, axis=0, keepdims=True)
    scale = jnp.where(is_constant, jnp.ones_like(std), std)
    return (train - mean) / scale, (test - mean) / scale
