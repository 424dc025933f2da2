"""The named checks of structured values: pytrees and probability distributions.

Part of :mod:`functional_dl.checks` (which re-exports every name here; import them from
there): the same conventions, ``TypeError`` for a wrong kind and ``ValueError`` for a wrong
value, messages ``"{name} must ..., got ..."``, value checks skipped on jit tracers.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl.checks import concrete_values

PROBABILITY_ROW_RTOL = 1e-4


# ------------------------------------------------------------------ pytrees


def leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    """``[(path, leaf), ...]`` with paths written as ``['w'][0]`` (``keystr``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


def float_leaves(name: str, tree: Any, *, owner: str = "") -> None:
    """TypeError naming the first leaf of ``tree`` that is not a real floating-point array."""
    prefix = f"{owner}: " if owner else ""
    for path, leaf in leaves_with_paths(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{prefix}every leaf of {name} must be a real floating-point array "
                f"(float16, bfloat16, float32 or float64); leaf {name}{path or '[root]'} "
                f"has dtype {dtype}")


def same_structure(name: str, tree: Any, reference_name: str, reference: Any, *,
                   owner: str = "") -> None:
    """ValueError unless ``tree`` and ``reference`` have one tree structure and leaf shapes."""
    prefix = f"{owner}: " if owner else ""
    tree_def = jax.tree_util.tree_structure(tree)
    reference_def = jax.tree_util.tree_structure(reference)
    if tree_def != reference_def:
        raise ValueError(
            f"{prefix}the tree structure of {name} differs from that of {reference_name}.\n"
            f"  {name}: {tree_def}\n  {reference_name}: {reference_def}")
    for (path, leaf), (_, ref_leaf) in zip(leaves_with_paths(tree), leaves_with_paths(reference)):
        if jnp.shape(leaf) != jnp.shape(ref_leaf):
            raise ValueError(
                f"{prefix}leaf {name}{path or '[root]'} has shape {jnp.shape(leaf)}, but "
                f"{reference_name}{path or '[root]'} has shape {jnp.shape(ref_leaf)}")


# ------------------------------------------------------------------ distributions


def _finite_float64(name: str, x: Any):
    """The concrete values of ``x`` in float64, checked finite; None when ``x`` is traced."""
    values = concrete_values(x)
    if values is None:
        return None
    array = values[0].astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    return array


def probability_rows(name: str, x: Any, *, rtol: float = PROBABILITY_ROW_RTOL) -> None:
    """Every entry finite and ``>= 0``, every last-axis row summing to 1 within ``rtol``."""
    probs = _finite_float64(name, x)
    if probs is None:
        return
    if np.any(probs < 0):
        raise ValueError(f"{name} must be non-negative probabilities, got minimum {probs.min():.6g}")
    sums = probs.sum(axis=-1)
    if np.max(np.abs(sums - 1.0), initial=0.0) > rtol:
        where = "" if probs.ndim == 1 else " along its last axis (each row)"
        raise ValueError(f"{name} must sum to 1{where} within {rtol:g} relative, "
                         f"got sums {np.array2string(sums, precision=6)}")


def positive_definite(name: str, matrices: Any) -> None:
    """Each trailing ``(D, D)`` matrix finite, symmetric and positive-definite."""
    cov = _finite_float64(name, matrices)
    if cov is None:
        return
    scale = np.maximum(np.abs(cov).max(axis=(-2, -1), keepdims=True), np.finfo(np.float64).tiny)
    if np.any(np.abs(cov - np.swapaxes(cov, -1, -2)) > 1e-6 * scale):
        raise ValueError(f"{name} must be symmetric, got an asymmetric matrix")
    smallest = np.linalg.eigvalsh(cov)[..., 0]
    if np.any(smallest <= 0):
        bad = np.unravel_index(int(np.argmin(smallest)), smallest.shape)
        where = f"{name}[{', '.join(map(str, bad))}]" if bad else name
        raise ValueError(f"{name} must be positive-definite, but {where} has smallest "
                         f"eigenvalue {smallest.min():.6g}")
