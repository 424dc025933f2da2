"""Pytree helpers and eager checks shared by the optimizers (internal).

The checks look only at tree structure, shapes and dtypes, so under ``jit`` they run once,
while tracing, and cost nothing per step.  Each raises an exception whose message names
the argument.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PyTree

_INT32_MAX = np.iinfo(np.int32).max


leaves_with_paths = checks.leaves_with_paths


def check_float_leaves(owner: str, name: str, tree: PyTree) -> None:
    """:func:`functional_dl.checks.float_leaves`: integer and boolean leaves are rejected
    rather than passed through (a gradient step on them cannot be represented)."""
    checks.float_leaves(name, tree, owner=owner)


def as_float_arrays(owner: str, name: str, tree: PyTree) -> PyTree:
    """``tree`` with every leaf made a JAX array, after ``check_float_leaves``."""
    check_float_leaves(owner, name, tree)
    return jax.tree_util.tree_map(jnp.asarray, tree)


def check_same_structure(owner: str, name: str, tree: PyTree,
                         reference_name: str, reference: PyTree) -> None:
    """:func:`functional_dl.checks.same_structure` (the message prints both structures)."""
    checks.same_structure(name, tree, reference_name, reference, owner=owner)


def check_finite_non_negative(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless a concrete scalar ``value`` is finite and ``>= 0``.

    An infinite rate or decay would turn a zero gradient or parameter into ``inf · 0 = NaN``.
    Tracers (a value ``vmap``ped or ``jit``ted over) are not inspected.
    """
    checks.real_number(name, value)
    if checks.is_concrete(value) and np.isinf(float(np.asarray(value))):
        raise ValueError(f"{name} must be finite, got {value!r}")
    checks.non_negative(name, value)


def check_learning_rate(owner: str, learning_rate: Any) -> None:
    """A learning rate is a schedule (callable) or a finite scalar ``>= 0``."""
    if callable(learning_rate):
        return
    if jnp.ndim(learning_rate) != 0:
        raise ValueError(f"{owner}: learning_rate must be a scalar or a schedule step -> rate, "
                         f"got an array of shape {jnp.shape(learning_rate)}")
    check_finite_non_negative(f"{owner}: learning_rate", learning_rate)


def learning_rate_at(learning_rate: Any, count: Array) -> Any:
    """The rate for the update that follows ``count`` earlier updates."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


def compute_dtype(*dtypes: Any) -> Any:
    """Arithmetic dtype for a leaf: at least float32, float64 when a leaf is float64.

    float16 and bfloat16 leaves are computed in float32 and the results cast back, so a
    small ``eps`` (1e-8 underflows in float16) or a squared gradient keeps its meaning.
    """
    return jnp.result_type(jnp.float32, *dtypes)


def zeros_like_tree(tree: PyTree, fill_value: float = 0.0) -> PyTree:
    """A tree of arrays shaped, typed and sharded like ``tree``'s leaves, filled with
    ``fill_value`` (``full_like`` keeps a sharded leaf's sharding; ``full(shape)`` would not)."""
    return jax.tree_util.tree_map(
        lambda leaf: jnp.full_like(jnp.asarray(leaf), fill_value), tree)


def zero_count() -> Array:
    """The update counter of a fresh state: an int32 scalar 0."""
    return jnp.zeros((), jnp.int32)


def increment_count(count: Array) -> Array:
    """``count + 1`` that stops at the int32 maximum instead of wrapping to negative."""
    return count + (count < _INT32_MAX).astype(jnp.int32)


def broadcast_prefix(owner: str, name: str, prefix: Any, params: PyTree,
                     requirement: str) -> PyTree:
    """``prefix`` (a pytree whose structure is a prefix of ``params``', or a function
    ``params -> such a tree``) with each of its leaves repeated over the ``params`` leaves
    below it: one value per parameter leaf.  Otherwise ValueError ``"{owner}: {name} must
    {requirement}"`` showing both structures."""
    if callable(prefix):
        prefix = prefix(params)
    try:
        return jax.tree_util.tree_map(
            lambda value, sub: jax.tree_util.tree_map(lambda _: value, sub), prefix, params)
    except ValueError as err:
        raise ValueError(
            f"{owner}: {name} must {requirement}.\n"
            f"  {name}: {jax.tree_util.tree_structure(prefix)}\n"
            f"  params: {jax.tree_util.tree_structure(params)}") from err


def resolve_mask(owner: str, mask: Any, params: PyTree) -> PyTree:
    """Expand ``mask`` (a bool pytree, a prefix of ``params``, or ``params -> tree``) to a
    tree with one bool leaf per parameter leaf (``broadcast_prefix``).

    A mask leaf may be a Python bool (decided while tracing) or a bool array (selected
    elementwise with ``jnp.where``).
    """
    return broadcast_prefix(owner, "mask", mask, params, "be a pytree of bools with the "
                            "structure of params (or a prefix of it)")


def check_mask_leaves(owner: str, mask_tree: PyTree) -> None:
    """Every mask leaf must be a Python/NumPy bool or a bool array."""
    for path, leaf in leaves_with_paths(mask_tree):
        if jnp.result_type(leaf) != jnp.bool_:
            raise TypeError(f"{owner}: mask leaf mask{path or '[root]'} must be a bool, "
                            f"got {leaf!r} of dtype {jnp.result_type(leaf)}")


def select_masked(mask_leaf: Any, value: Array) -> Array:
    """``value`` where the mask is true, else zeros (static when the mask is a Python bool)."""
    if isinstance(mask_leaf, (bool, np.bool_)):
        return value if mask_leaf else jnp.zeros_like(value)
    return jnp.where(mask_leaf, value, jnp.zeros_like(value))


def map_leaves(fn: Any, n_outputs: int, tree: PyTree, *others: PyTree) -> tuple[PyTree, ...]:
    """Apply ``fn(leaf, *other_leaves) -> n_outputs-tuple`` leaf by leaf.

    ``others`` have ``tree``'s structure; returns ``n_outputs`` trees shaped like ``tree``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    other_leaves = [treedef.flatten_up_to(other) for other in others]
    results = [fn(*args) for args in zip(leaves, *other_leaves)]
    return tuple(treedef.unflatten([r[k] for r in results]) for k in range(n_outputs))
