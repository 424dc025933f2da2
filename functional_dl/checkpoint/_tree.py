"""The containers of a checkpoint: a pytree described as JSON, and rebuilt from it.

Dicts (str or int keys), lists, tuples, NamedTuples (recorded as ``"module:qualname"`` and
fields, never imported when read back) and ``None``; everything else must be a leaf.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any, Optional

import jax
import numpy as np

from functional_dl.checkpoint._leaves import (_PYTHON_SCALARS, CheckpointError, _decode_leaf)


def _node_kind(tree: Any, path: str) -> str:
    """``none``, ``namedtuple``, ``dict``, ``list``, ``tuple`` or ``leaf``; TypeError otherwise."""
    if tree is None:
        return "none"
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        return "namedtuple"
    if type(tree) in (dict, list, tuple):
        return type(tree).__name__
    if isinstance(tree, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)) or \
            type(tree) in _PYTHON_SCALARS:
        return "leaf"
    raise TypeError(f"{path} is a {type(tree).__module__}.{type(tree).__qualname__}; "
                    "checkpoints hold dicts, lists, tuples, NamedTuples and None with array "
                    "or scalar leaves")


def _children(tree: Any, kind: str, path: str) -> list[tuple[Any, str, Any]]:
    """``(label, child path, child)`` of a container, in its own order."""
    if kind == "namedtuple":
        return [(f, f"{path}.{f}", v) for f, v in zip(type(tree)._fields, tree)]
    if kind == "dict":
        return [(k, f"{path}[{k!r}]", v) for k, v in tree.items()]
    return [(i, f"{path}[{i}]", v) for i, v in enumerate(tree)]


def _describe(tree: Any, leaves: list, path: str) -> dict:
    """JSON description of ``tree``'s containers; appends ``(path, leaf)`` to ``leaves``."""
    kind = _node_kind(tree, path)
    if kind in ("none", "leaf"):
        if kind == "leaf":
            leaves.append((path, tree))
        return {"node": kind}
    entries = _children(tree, kind, path)
    description = {"node": kind, "children": [_describe(v, leaves, p) for _, p, v in entries]}
    if kind == "dict":
        bad_keys = [k for k, _, _ in entries if type(k) not in (str, int)]
        if bad_keys:
            raise TypeError(f"{path}: dict keys must be str or int, got {bad_keys[0]!r}")
        description["keys"] = [k for k, _, _ in entries]
    if kind == "namedtuple":
        cls = type(tree)
        description.update({"class": f"{cls.__module__}:{cls.__qualname__}",
                            "fields": list(cls._fields)})
    return description


def _attach(description: Any, leaves) -> dict:
    """Validate a header's tree description and put each leaf's ``(spec, array)`` in place."""
    node = description.get("node") if isinstance(description, dict) else None
    if node == "none":
        return description
    if node == "leaf":
        payload = next(leaves, None)
        if payload is None:
            raise CheckpointError("the header's tree has more leaves than its leaf list")
        return {"node": "leaf", "payload": payload}
    children = description.get("children") if node else None
    labels = {"dict": "keys", "namedtuple": "fields"}.get(node)
    ok = node in ("dict", "list", "tuple", "namedtuple") and isinstance(children, list)
    if ok and labels:
        names = description.get(labels)
        ok = isinstance(names, list) and len(names) == len(children) and all(
            type(name) in ((str, int) if node == "dict" else (str,)) for name in names)
    if not ok or (node == "namedtuple" and not isinstance(description.get("class"), str)):
        raise CheckpointError(f"malformed tree entry {str(description)[:80]!r} in the header")
    return {**description, "children": [_attach(child, leaves) for child in children]}


def _resolve_namedtuple(class_path: str, fields: list) -> Optional[type]:
    """The recorded class if its module is already imported and its fields match, else None."""
    module_name, _, qualname = class_path.partition(":")
    target = sys.modules.get(module_name)  # never import: a file must not trigger code
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, tuple) and \
            list(getattr(target, "_fields", ())) == fields:
        return target
    return None


def _rebuild(description: dict, path: str) -> Any:
    """The saved containers and leaf types (restore with ``like=None``)."""
    node = description["node"]
    if node in ("none", "leaf"):
        return None if node == "none" else _decode_leaf(path, *description["payload"])
    labels = description.get("keys") or description.get("fields") or \
        range(len(description["children"]))
    step = "." if node == "namedtuple" else ""
    children = [_rebuild(child, f"{path}{step}{label}" if step else f"{path}[{label!r}]")
                for label, child in zip(labels, description["children"])]
    if node in ("list", "tuple"):
        return children if node == "list" else tuple(children)
    if node == "dict":
        return dict(zip(description["keys"], children))
    cls = _resolve_namedtuple(description["class"], description["fields"])
    if cls is not None:
        return cls(*children)
    warnings.warn(f"restore: {description['class']} is not imported; returning a dict of its "
                  "fields (import its module or pass like= to get the class)", stacklevel=3)
    return dict(zip(description["fields"], children))


def _fill_like(description: dict, like: Any, path: str) -> Any:
    """``like``'s containers holding the saved leaves; CheckpointError where they differ."""
    node, like_node = description["node"], _node_kind(like, path)
    if node != like_node:
        raise CheckpointError(f"does not match like at {path}: the file has a {node}, like has "
                              f"a {like_node}")
    if node in ("none", "leaf"):
        return None if node == "none" else _decode_leaf(path, *description["payload"], like)
    entries = _children(like, node, path)
    if node == "namedtuple":
        cls = type(like)
        if [description["class"], description["fields"]] != \
                [f"{cls.__module__}:{cls.__qualname__}", list(cls._fields)]:
            raise CheckpointError(
                f"does not match like at {path}: the file has {description['class']}"
                f"{tuple(description['fields'])}, like has {cls.__module__}:{cls.__qualname__}"
                f"{cls._fields}")
    if node == "dict":
        saved_by_key = dict(zip(description["keys"], description["children"]))
        missing = [k for k, _, _ in entries if k not in saved_by_key]
        extra = [k for k in saved_by_key if k not in like]
        if missing or extra:
            raise CheckpointError(f"does not match like at {path}: keys only in like "
                                  f"{missing}, keys only in the file {extra}")
        saved_children = [saved_by_key[k] for k, _, _ in entries]
    else:
        saved_children = description["children"]
        if len(saved_children) != len(entries):
            raise CheckpointError(f"does not match like at {path}: the file has "
                                  f"{len(saved_children)} entries, like has {len(entries)}")
    filled = [_fill_like(saved, child, child_path)
              for saved, (_, child_path, child) in zip(saved_children, entries)]
    if node == "dict":
        return {k: value for (k, _, _), value in zip(entries, filled)}
    return type(like)(*filled) if node == "namedtuple" else type(like)(filled)
