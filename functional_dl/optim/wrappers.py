"""Apply an optimizer to part of the parameters: ``masked``, ``partition``, ``freeze``.

``masked(inner, mask)`` runs ``inner`` on the leaves where the mask is ``True`` and passes
the other leaves' updates through unchanged.  ``inner`` never sees the masked-out leaves:
they are replaced by :class:`MaskedNode` (an empty pytree node) in the gradients, the
parameters and therefore in ``inner``'s state, which holds slots for the masked-in leaves
only.  ``partition({label: optimizer}, labels)`` gives each parameter leaf the optimizer of
its label (parameter groups: a learning rate per group, a frozen group, ...); it is one
``masked`` per label.  ``set_to_zero()`` returns zero updates and ``freeze(mask)`` is
``masked(set_to_zero(), mask)``: the leaves where ``mask`` is ``True`` stay where they are.

Masks and labels are static: a mask leaf is a Python bool (it decides the inner state's
structure, which cannot depend on a traced value), a label any hashable Python value.
Both may be given for a prefix of the parameter tree (``{"encoder": False, "head": True}``)
or as a function ``params -> tree``.  The same as optax's ``masked``, ``multi_transform``,
``set_to_zero`` and ``freeze``: ``MaskedState`` and ``PartitionState`` hold the inner
states as optax's ``MaskedState`` and ``MultiTransformState`` do.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import PyTree
from functional_dl.optim import _tree
from functional_dl.optim.base import EmptyState, Optimizer, call_update
from functional_dl.optim.leafwise import leafwise

__all__ = ["MaskedNode", "MaskedState", "PartitionState", "masked", "partition",
           "set_to_zero", "freeze"]

Mask = Union[PyTree, Callable[[PyTree], PyTree]]


class MaskedNode(NamedTuple):
    """Stands in for a masked-out leaf in what the inner optimizer sees: a pytree node with
    no children, so it holds no array and ``tree_map`` passes over it."""


class MaskedState(NamedTuple):
    """``inner_state``: the inner optimizer's state, built on the masked-in leaves only."""

    inner_state: PyTree


def _is_masked_node(x: Any) -> bool:
    return isinstance(x, MaskedNode)


def _static_flags(owner: str, mask: Any, tree: PyTree) -> list[bool]:
    """One Python bool per leaf of ``tree`` (leaf order), from a mask as ``resolve_mask``."""
    mask_tree = _tree.resolve_mask(owner, mask, tree)
    flags = []
    for path, leaf in _tree.leaves_with_paths(mask_tree):
        if isinstance(leaf, (bool, np.bool_)):
            flags.append(bool(leaf))
        elif (checks.is_concrete(leaf) and np.ndim(leaf) == 0
              and jnp.result_type(leaf) == jnp.bool_):
            flags.append(bool(leaf))
        else:
            raise TypeError(
                f"{owner}: mask leaf mask{path or '[root]'} must be a Python bool (the mask "
                f"decides which leaves the inner state holds, so it cannot be an array or a "
                f"traced value), got {checks.describe(leaf)}; for an elementwise mask of "
                f"weight decay use add_decayed_weights(mask=...)")
    return flags


def _hide(tree: PyTree, flags: list[bool]) -> PyTree:
    """``tree`` with each leaf whose flag is False replaced by ``MaskedNode()``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef.unflatten([leaf if keep else MaskedNode() for leaf, keep in zip(leaves, flags)])


def _leaves_with_masked_nodes(tree: PyTree) -> list:
    return jax.tree_util.tree_leaves(tree, is_leaf=_is_masked_node)


def _run_masked(owner: str, inner: Any, flags: list[bool], updates: PyTree, inner_state: PyTree,
                params: PyTree | None, extra_args: dict) -> tuple[list, PyTree]:
    """The inner optimizer on the flagged leaves: (its update per leaf, None elsewhere; state)."""
    hidden_params = None if params is None else _hide(params, flags)
    new, inner_state = call_update(inner, _hide(updates, flags), inner_state, hidden_params,
                                   extra_args)
    new_leaves = _leaves_with_masked_nodes(new)
    if len(new_leaves) != len(flags):
        raise ValueError(f"{owner}: the inner optimizer returned updates with "
                         f"{len(new_leaves)} leaves for {len(flags)} (MaskedNode included); "
                         f"it must keep the structure of its input")
    return [leaf if keep else None for leaf, keep in zip(new_leaves, flags)], inner_state


def masked(inner: Optimizer, mask: Mask) -> Optimizer:
    """``inner`` on the leaves where ``mask`` is ``True``; the other updates pass through.

    ``u_i = inner(g)_i`` where ``M_i``, ``u_i = g_i`` elsewhere; ``inner`` sees the
    gradients and parameters with the masked-out leaves replaced by ``MaskedNode()``, so
    its state holds only the masked-in leaves (``MaskedState(inner_state)``).  As
    ``optax.masked(inner, mask)``.

    Args:
      inner: the optimizer to apply where the mask is ``True``.
      mask: a pytree of Python bools with the structure of the parameters, or a prefix of it
        (``{"dense": True, "norm": False}``), or a function ``params -> such a tree`` (called
        on the parameters in ``init`` and on the gradients in ``update``).

    Raises:
      ValueError: when the mask's structure is not a prefix of the parameters'.
      TypeError: when a mask leaf is not a Python bool.
    """
    checks.optimizer("masked: inner", inner)

    def init(params: PyTree) -> MaskedState:
        flags = _static_flags("masked", mask, params)
        return MaskedState(inner.init(_hide(params, flags)))

    def update(grads: PyTree, state: MaskedState, params: PyTree | None = None, **extra_args):
        if not isinstance(state, MaskedState):
            raise TypeError(f"masked.update: state must be a MaskedState (from masked(...)"
                            f".init), got {type(state).__name__}")
        if params is not None:
            _tree.check_same_structure("masked.update", "grads", grads, "params", params)
        flags = _static_flags("masked", mask, grads)
        new, inner_state = _run_masked("masked", inner, flags, grads, state.inner_state,
                                       params, extra_args)
        leaves, treedef = jax.tree_util.tree_flatten(grads)
        merged = [old if value is None else value for value, old in zip(new, leaves)]
        return treedef.unflatten(merged), MaskedState(inner_state)

    return Optimizer(init, update)


class PartitionState(NamedTuple):
    """``inner_states``: ``{label: MaskedState}``, each optimizer's state on its own leaves."""

    inner_states: dict


def _resolve_labels(transforms: Mapping, labels: Any, tree: PyTree) -> list:
    """One label per leaf of ``tree`` (leaf order), each checked to have a transform."""
    label_tree = _tree.broadcast_prefix(
        "partition", "labels", labels, tree,
        "have the structure of params (or of a prefix of it), one label per leaf")
    per_leaf = []
    for path, label in _tree.leaves_with_paths(label_tree):
        if not isinstance(label, Hashable) or hasattr(label, "shape"):
            raise TypeError(f"partition: labels{path or '[root]'} must be a hashable Python "
                            f"value naming a transform, got {checks.describe(label)}")
        if label not in transforms:
            raise ValueError(f"partition: labels{path or '[root]'} (for params{path}) is "
                             f"{label!r}, which has no transform; transforms has labels "
                             f"{sorted(map(repr, transforms))}")
        per_leaf.append(label)
    return per_leaf


def partition(transforms: Mapping[Hashable, Optimizer], labels: Any) -> Optimizer:
    """A different optimizer for each group of parameters (parameter groups).

    Leaf ``i`` gets the updates of ``transforms[labels_i]``; each optimizer runs as
    ``masked(transforms[label], labels == label)``, so its state holds only its own leaves.
    Equal to ``optax.multi_transform(transforms, labels)``, and to torch's parameter groups
    (``torch.optim.Adam([{"params": ..., "lr": ...}, ...])``) with one optimizer per group::

        optimizer = partition({"decay": adamw(1e-3), "no_decay": adam(1e-3),
                               "frozen": set_to_zero()},
                              {"encoder": "frozen", "head": {"w": "decay", "b": "no_decay"}})

    Args:
      transforms: ``{label: optimizer}``.  A label that no parameter has is allowed (its
        optimizer then keeps an empty state).
      labels: a pytree of labels with the structure of the parameters (or a prefix of it),
        or a function ``params -> such a tree``.

    Raises:
      ValueError: when the labels' structure does not match the parameters', or a label has
        no transform (the message names the label, its leaf and the transforms' labels).
    """
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(f"partition: transforms must be a non-empty dict {{label: optimizer}}, "
                        f"got {checks.describe(transforms)}")
    for label, transform in transforms.items():
        checks.optimizer(f"partition: transforms[{label!r}]", transform)

    def flags_of(label, per_leaf: list) -> list[bool]:
        return [leaf_label == label for leaf_label in per_leaf]

    def init(params: PyTree) -> PartitionState:
        per_leaf = _resolve_labels(transforms, labels, params)
        return PartitionState({label: MaskedState(transform.init(
            _hide(params, flags_of(label, per_leaf)))) for label, transform in transforms.items()})

    def update(grads: PyTree, state: PartitionState, params: PyTree | None = None,
               **extra_args):
        if not isinstance(state, PartitionState) or set(state.inner_states) != set(transforms):
            raise TypeError(f"partition.update: state must be the PartitionState of "
                            f"partition(...).init, with labels {sorted(map(repr, transforms))}")
        if params is not None:
            _tree.check_same_structure("partition.update", "grads", grads, "params", params)
        per_leaf = _resolve_labels(transforms, labels, grads)
        leaves, treedef = jax.tree_util.tree_flatten(grads)
        merged = list(leaves)
        new_states = {}
        for label, transform in transforms.items():
            new, inner_state = _run_masked(f"partition[{label!r}]", transform,
                                           flags_of(label, per_leaf), grads,
                                           state.inner_states[label].inner_state, params,
                                           extra_args)
            merged = [old if value is None else value for value, old in zip(new, merged)]
            new_states[label] = MaskedState(inner_state)
        return treedef.unflatten(merged), PartitionState(new_states)

    return Optimizer(init, update)


def set_to_zero() -> Optimizer:
    """``u ← 0`` (stateless): the parameters it is applied to do not move.  As
    ``optax.set_to_zero()``; the ``"frozen"`` member of a :func:`partition`."""
    return leafwise("set_to_zero", EmptyState, lambda u: (jnp.zeros_like(u),),
                    input_name="updates")


def freeze(mask: Mask) -> Optimizer:
    """Zero the updates of the leaves where ``mask`` is ``True``; pass the others through.

    ``masked(set_to_zero(), mask)``, as ``optax.freeze(mask)``.  Chained after an optimizer
    (``chain(adam(η), freeze(mask))``) it stops the frozen leaves, but the optimizer still
    keeps state for them; ``partition({"train": adam(η), "frozen": set_to_zero()}, labels)``
    keeps none.
    """
    return masked(set_to_zero(), mask)
