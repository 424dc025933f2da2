"""Write a per-coordinate transform once: :func:`leafwise`.

Almost every optimizer acts on each parameter leaf on its own: it keeps a few arrays per
leaf (moments, accumulators) and maps ``(g, slots...) -> (u, new slots...)``.  ``leafwise``
turns such a leaf function into an :class:`~functional_dl.optim.base.Optimizer` and does,
once for every transform of the package, what each would otherwise repeat:

* ``init(params)`` checks that every leaf is a float array and fills each slot with a
  constant, in the slot's dtype (default the parameter leaf's), keeping the parameter
  leaf's sharding (``jnp.full_like``), so an FSDP-sharded model gets sharded moments;
* ``update(grads, state, params=None, **extra_args)`` checks the float leaves and the tree
  structure against the state (and ``params``), computes each leaf in its compute dtype
  (float32 at least, float64 when a leaf is float64: ``_tree.compute_dtype``), casts the
  update back to the gradient leaf's dtype and each slot back to its stored dtype, and
  counts the updates in an int32 ``count`` that stops at the int32 maximum.

The state is the NamedTuple ``state_type``: its fields are ``count`` (optional) and the
slots, one pytree shaped like ``params`` each, e.g. ``ScaleByAdamState(count, mu, nu)``.
``leaf_update(g, *slots, count=..., param=...)`` receives the gradient leaf and the slot
leaves already in the compute dtype, ``count`` (int32, the number of earlier updates; only
when the state has a ``count``) and ``param`` (only with ``uses_params=True``), and returns
``(u, *new_slots)``.  The checks look only at structure and dtypes, so under ``jit`` they run
while tracing and cost nothing per step.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional

import jax
import jax.numpy as jnp

from functional_dl._types import PyTree
from functional_dl.optim import _tree
from functional_dl.optim.base import Optimizer

__all__ = ["leafwise"]


def _slot_init(fill_value: float, dtype: Any) -> Callable:
    def fill(leaf):
        leaf = jnp.asarray(leaf)
        return jnp.full_like(leaf, fill_value, dtype=dtype or leaf.dtype)
    return fill


def leafwise(owner: str, state_type: type, leaf_update: Callable[..., tuple], *,
             initial: Optional[Mapping[str, float]] = None,
             slot_dtypes: Optional[Mapping[str, Any]] = None,
             uses_params: bool = False, input_name: str = "grads") -> Optimizer:
    """The ``Optimizer`` that applies ``leaf_update`` to every leaf (see the module).

    Args:
      owner: the transform's name, used in error messages (``"scale_by_adam"``).
      state_type: a NamedTuple whose fields are ``count`` (optional) and the slot names.
      leaf_update: ``(g, *slots, [count=], [param=]) -> (u, *new_slots)`` in compute dtype.
      initial: fill value per slot name (default 0).
      slot_dtypes: stored dtype per slot name (``None`` or absent: the parameter's dtype).
      uses_params: pass each parameter leaf as ``param=`` (``update`` then needs ``params``).
      input_name: what the incoming tree is called in messages (``"grads"``/``"updates"``).
    """
    fields = tuple(state_type._fields)
    counted = "count" in fields
    slots = tuple(name for name in fields if name != "count")
    initial = dict(initial or {})
    slot_dtypes = dict(slot_dtypes or {})
    unknown = (set(initial) | set(slot_dtypes)) - set(slots)
    if unknown:
        raise ValueError(f"{owner}: initial/slot_dtypes name unknown slots {sorted(unknown)}; "
                         f"the state's slots are {list(slots)}")

    def init(params: PyTree):
        _tree.check_float_leaves(f"{owner}.init", "params", params)
        values = {name: jax.tree_util.tree_map(
            _slot_init(initial.get(name, 0.0), slot_dtypes.get(name)), params) for name in slots}
        if counted:
            values["count"] = _tree.zero_count()
        return state_type(**values)

    def update(grads: PyTree, state, params: PyTree | None = None, **extra_args):
        del extra_args  # accepted so that chains written for extra-args optimizers run
        where = f"{owner}.update"
        grads = _tree.as_float_arrays(where, input_name, grads)
        if not isinstance(state, state_type):
            raise TypeError(f"{where}: state must be a {state_type.__name__} (from "
                            f"{owner}(...).init), got {type(state).__name__}")
        for name in slots:
            _tree.check_same_structure(where, input_name, grads, f"state.{name}",
                                       getattr(state, name))
        if uses_params and params is None:
            raise ValueError(f"{where}: params are required; call "
                             f"update({input_name}, state, params)")
        if params is not None:
            _tree.check_same_structure(where, input_name, grads, "params", params)
        keywords = {"count": state.count} if counted else {}

        def one_leaf(g, *rest):
            slot_leaves = rest[:len(slots)]
            cdt = _tree.compute_dtype(g.dtype, *(s.dtype for s in slot_leaves))
            leaf_keywords = dict(keywords)
            if uses_params:
                leaf_keywords["param"] = jnp.asarray(rest[len(slots)]).astype(cdt)
            outputs = leaf_update(g.astype(cdt), *(s.astype(cdt) for s in slot_leaves),
                                  **leaf_keywords)
            u, new_slots = outputs[0], outputs[1:]
            return (u.astype(g.dtype),) + tuple(
                new.astype(old.dtype) for new, old in zip(new_slots, slot_leaves))

        others = [getattr(state, name) for name in slots] + ([params] if uses_params else [])
        results = _tree.map_leaves(one_leaf, 1 + len(slots), grads, *others)
        values = dict(zip(slots, results[1:]))
        if counted:
            values["count"] = _tree.increment_count(state.count)
        return results[0], state_type(**values)

    return Optimizer(init, update)
