"""Save and restore pytrees of arrays: no pickle, atomic writes, verified reads.

``save(path, tree)`` takes trees of dicts (str or int keys), lists, tuples, NamedTuples and
``None`` with leaves that are JAX or NumPy arrays, NumPy scalars, Python ``bool``, ``int``,
``float`` or ``complex``, raw ``uint32`` PRNG keys, or typed keys (``jax.random.key``; the
implementation is recorded). ``restore`` gives the leaves back bit for bit, dtypes included
(bfloat16 and the other ml_dtypes).

Format: a NumPy ``.npz`` archive (``numpy.load`` opens it) holding ``leaf_0, leaf_1, ...``
in depth-first order (dtypes the ``.npy`` format cannot name are stored as their
unsigned-integer bits, typed keys as their key data) and ``header``: UTF-8 JSON with the
containers (dict keys; a NamedTuple's ``"module:qualname"`` and fields), each leaf's kind,
dtype and shape, and a SHA-256 of the leaf bytes. Nothing in a file is unpickled or run:
arrays are read with ``allow_pickle=False`` and no module named by a file is imported.

``restore(path, like=None)``:
  * ``like=None`` rebuilds the saved containers and leaf types (JAX arrays on the default
    device, NumPy as NumPy, Python scalars as Python scalars). A NamedTuple is rebuilt as
    its class when that class's module is already imported and the fields agree; otherwise
    it comes back as a ``dict`` of its fields, with a ``UserWarning``.
  * ``like=tree`` takes containers and leaf types from ``like`` (dicts are matched by key,
    order aside). The file must hold the same structure, and each leaf the same kind (array,
    typed key, Python scalar), shape and dtype. A JAX leaf of ``like`` (or a
    ``jax.ShapeDtypeStruct`` with a sharding) gives an array with its sharding, so a
    replicated or sharded training state is restored where it lives.

A damaged or foreign file, a mismatch with ``like``, or a float64 leaf while 64-bit mode is
off raise :class:`CheckpointError` (a ``ValueError``) saying which. ``save`` writes a
temporary file beside ``path``, fsyncs it and renames it over ``path``: a crash mid-save
leaves the previous checkpoint intact. ``save_step``/``restore_step`` number checkpoints.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import operator
import os
import pathlib
import re
import secrets
import sys
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from functional_dl._types import PyTree

__all__ = ["CheckpointError", "save", "restore", "save_step", "restore_step", "latest_step",
           "list_steps", "step_path"]

_FORMAT, _VERSION = "functional_dl.checkpoint", 1
_NATIVE_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64", "complex128"])
_EXTENDED_DTYPES = frozenset(  # bfloat16, float8_*, int4, ...: the scalar types ml_dtypes adds
    name for name, value in vars(ml_dtypes).items()
    if isinstance(value, type) and issubclass(value, np.generic))
_PYTHON_SCALARS = {bool: "bool", int: "int", float: "float", complex: "complex"}
_KIND_WORDS = {"jax": "a JAX array", "numpy": "a NumPy array", "numpy_scalar": "a NumPy scalar",
               "key": "a typed PRNG key", **{k: f"a Python {k}" for k in _PYTHON_SCALARS.values()}}
_STEP_FILE = re.compile(r"^checkpoint_(\d+)\.npz$")


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt, not a checkpoint, or does not match ``like``."""


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


# --- saving -------------------------------------------------------------------------------

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


def _stored_dtype(dtype: np.dtype) -> np.dtype:
    """The ``.npy`` format cannot name ml_dtypes: their bits are stored as unsigned ints."""
    return dtype if dtype.name in _NATIVE_DTYPES else np.dtype(f"uint{8 * dtype.itemsize}")


def _encode_leaf(path: str, leaf: Any) -> tuple[dict, np.ndarray]:
    """The header entry and the array to store for one leaf."""
    if isinstance(leaf, (jax.core.Tracer, jax.ShapeDtypeStruct)):
        raise TypeError(f"save: {path} is abstract ({type(leaf).__name__}); save needs "
                        "concrete arrays (call it outside jit/vmap/grad)")
    spec: dict[str, Any] = {"kind": _PYTHON_SCALARS.get(type(leaf))}
    if isinstance(leaf, jax.Array):
        if not leaf.is_fully_addressable:
            raise ValueError(f"save: {path} spans several processes; save its local shards")
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            spec.update(kind="key", impl=str(jax.random.key_impl(leaf)))
            leaf = jax.random.key_data(leaf)
        else:
            spec.update(kind="jax", weak_type=bool(leaf.weak_type))
    elif spec["kind"] is None:
        spec["kind"] = "numpy" if isinstance(leaf, np.ndarray) else "numpy_scalar"
    value = np.asarray(leaf)
    if value.dtype.name not in _NATIVE_DTYPES | _EXTENDED_DTYPES:
        raise TypeError(f"save: {path} has dtype {value.dtype}; only numeric arrays are saved")
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    spec.update(dtype=value.dtype.name, shape=list(value.shape))
    value = np.require(value, requirements="C")  # (ascontiguousarray would make 0-d 1-d)
    return spec, value.view(_stored_dtype(value.dtype))


def _digest(arrays) -> str:
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(memoryview(np.require(array, requirements="C").reshape(-1)).cast("B"))
    return sha.hexdigest()


def _write_npz(file, members: dict, compress: bool) -> None:
    (np.savez_compressed if compress else np.savez)(file, **members)


def _write_atomically(path: pathlib.Path, members: dict, compress: bool) -> None:
    """Temporary file beside ``path``, fsync, rename over ``path``, fsync the directory."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            _write_npz(file, members, compress)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
            os.fsync(directory)
        os.close(directory)


def save(path: str | os.PathLike, tree: PyTree, *, compress: bool = False) -> pathlib.Path:
    """Write ``tree`` to ``path`` atomically, creating parent directories; returns the path.

    ``path`` is used as given (no suffix is added; ``.npz`` is the convention). ``compress``
    deflates the arrays (smaller file, slower save). A leaf or container that cannot be
    saved raises ``TypeError`` naming its place in the tree, before anything is written.
    """
    path = pathlib.Path(path)
    leaves: list = []
    description = _describe(tree, leaves, "tree")
    encoded = [_encode_leaf(leaf_path, leaf) for leaf_path, leaf in leaves]
    arrays = [array for _, array in encoded]
    header = {"format": _FORMAT, "version": _VERSION, "tree": description,
              "leaves": [spec for spec, _ in encoded], "sha256": _digest(arrays)}
    members = {f"leaf_{i}": array for i, array in enumerate(arrays)}
    members["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, members, compress)
    return path


# --- reading ------------------------------------------------------------------------------

def _dtype_from_name(name: str) -> np.dtype:
    if name in _NATIVE_DTYPES:
        return np.dtype(name)
    if name in _EXTENDED_DTYPES:
        return np.dtype(getattr(ml_dtypes, name))
    raise CheckpointError(f"unsupported dtype {name!r} in the header")


def _check_spec(spec: Any) -> None:
    """CheckpointError unless ``spec`` is a well-formed leaf entry of the header."""
    ok = (isinstance(spec, dict) and spec.get("kind") in _KIND_WORDS
          and isinstance(spec.get("dtype"), str) and isinstance(spec.get("shape"), list)
          and all(type(n) is int and n >= 0 for n in spec["shape"])
          and (spec["kind"] != "key" or isinstance(spec.get("impl"), str)))
    if not ok:
        raise CheckpointError(f"malformed leaf entry {str(spec)[:80]!r} in the header")
    _dtype_from_name(spec["dtype"])


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


def _read(path: pathlib.Path) -> dict:
    """The header's tree description with verified leaf arrays attached."""
    try:
        with open(path, "rb") as file:
            if file.read(4) != b"PK\x03\x04":
                raise CheckpointError("not a checkpoint (not an .npz archive), or its start "
                                      "is corrupt")
        with np.load(path, allow_pickle=False) as archive:
            if "header" not in archive.files:
                raise CheckpointError("not a functional_dl checkpoint (no header)")
            header = json.loads(archive["header"].tobytes().decode("utf-8"))
            if header.get("format") != _FORMAT or header.get("version") != _VERSION:
                raise CheckpointError(f"unknown format {header.get('format')!r} version "
                                      f"{header.get('version')!r}")
            specs = header.get("leaves")
            if not isinstance(specs, list) or not isinstance(header.get("sha256"), str):
                raise CheckpointError("the header is corrupt")
            for spec in specs:
                _check_spec(spec)
            arrays = [archive[f"leaf_{i}"] for i in range(len(specs))]
        remaining = iter(zip(specs, arrays))
        tree = _attach(header.get("tree"), remaining)
        if next(remaining, None) is not None:
            raise CheckpointError("the header's tree has fewer leaves than its leaf list")
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise CheckpointError(f"{path}: holds an object (pickled) array; checkpoints hold "
                                  "numeric arrays only and restore never unpickles") from error
        raise CheckpointError(f"{path}: the checkpoint is corrupt ({error})") from error
    except Exception as error:  # zipfile, zlib, json or numpy choking on damaged bytes
        raise CheckpointError(f"{path}: the checkpoint file is truncated or corrupt "
                              f"({type(error).__name__}: {error})") from error
    for i, (spec, array) in enumerate(zip(specs, arrays)):
        expected = _stored_dtype(_dtype_from_name(spec["dtype"]))
        if array.dtype != expected or list(array.shape) != spec["shape"]:
            raise CheckpointError(f"{path}: leaf_{i} is {array.dtype}{list(array.shape)}, the "
                                  f"header says {expected}{spec['shape']}: corrupt")
    if _digest(arrays) != header["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch, the checkpoint is corrupt")
    return tree


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


def _check_leaf_against_like(path: str, spec: dict, dtype: np.dtype, like: Any) -> None:
    """CheckpointError unless the saved leaf has ``like``'s kind, shape and dtype."""
    kind, where = spec["kind"], f"does not match like at {path}"
    if type(like) in _PYTHON_SCALARS or kind in _PYTHON_SCALARS.values():
        like_kind = _PYTHON_SCALARS.get(type(like), "array")
        if like_kind != kind:
            raise CheckpointError(f"{where}: the file has {_KIND_WORDS[kind]}, like has "
                                  f"{_KIND_WORDS.get(like_kind, 'an array')}")
        return
    like_dtype, shape = like.dtype, like.shape
    like_is_key = jnp.issubdtype(like_dtype, jax.dtypes.prng_key)
    if like_is_key or kind == "key":
        wanted = f"a typed PRNG key ({like_dtype})" if like_is_key else f"a {like_dtype} array"
        saved = _KIND_WORDS[kind] if kind != "key" else "a typed PRNG key ({})".format(
            jax.eval_shape(lambda: jax.random.key(0, impl=spec["impl"])).dtype)
        if saved != wanted:
            raise CheckpointError(f"{where}: the file has {saved}, like has {wanted}")
        key_data = jax.eval_shape(jax.random.key_data, like)
        shape, like_dtype = key_data.shape, key_data.dtype
    if tuple(shape) != tuple(spec["shape"]) or np.dtype(like_dtype) != dtype:
        raise CheckpointError(f"{where}: the file has {dtype}{list(spec['shape'])}, like has "
                              f"{np.dtype(like_dtype)}{list(shape)}")


@functools.lru_cache(maxsize=64)
def _weak_identity(shape: tuple, dtype: np.dtype):
    """Compiled identity whose output is weakly typed, as the saved leaf was (e.g. ``x * 0.5``
    for an int ``x``): weak types steer dtype promotion, so a resumed run must keep them."""
    abstract = jax.ShapeDtypeStruct(shape, dtype, weak_type=True)
    return jax.jit(lambda x: x).lower(abstract).compile()


def _decode_leaf(path: str, spec: dict, stored: np.ndarray, like: Any = None) -> Any:
    """One restored leaf: the saved kind, or ``like``'s type when given (checked first)."""
    dtype = _dtype_from_name(spec["dtype"])
    value, kind = stored.view(dtype), spec["kind"]
    if like is not None:
        _check_leaf_against_like(path, spec, dtype, like)
        if isinstance(like, (np.ndarray, np.generic)):
            kind = "numpy" if isinstance(like, np.ndarray) else "numpy_scalar"
        elif kind in ("numpy", "numpy_scalar"):
            kind = "jax"
    if kind in _PYTHON_SCALARS.values():
        return value.item()
    if kind in ("numpy", "numpy_scalar"):
        return value if kind == "numpy" else value[()]
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise CheckpointError(f"{path} is {dtype} but 64-bit mode is off; restore inside "
                              "`with jax.enable_x64(True):`")
    weak_type = spec.get("weak_type") if like is None else getattr(like, "weak_type", False)
    if kind == "key":
        result = jax.random.wrap_key_data(jnp.asarray(value), impl=spec["impl"])
    elif weak_type:
        result = _weak_identity(value.shape, dtype)(jnp.asarray(value))
    else:
        result = jnp.asarray(value)
    sharding = getattr(like, "sharding", None)
    return jax.device_put(result, sharding) if sharding is not None else result


def restore(path: str | os.PathLike, like: PyTree = None) -> PyTree:
    """Read a checkpoint written by :func:`save`; see the module docstring for ``like``.

    Raises ``FileNotFoundError`` when ``path`` does not exist and :class:`CheckpointError`
    when it is truncated, corrupt, not a checkpoint, or does not match ``like``.
    """
    path = pathlib.Path(path)
    description = _read(path)
    try:
        if like is None:
            return _rebuild(description, "tree")
        return _fill_like(description, like, "tree")
    except CheckpointError as error:
        raise CheckpointError(f"{path} {error}" if str(error).startswith("does not match")
                              else f"{path}: {error}") from None


# --- numbered checkpoints for training loops ----------------------------------------------

def _whole_number(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return operator.index(value)


def step_path(directory: str | os.PathLike, step: int) -> pathlib.Path:
    """``directory/checkpoint_<step, 8 digits>.npz``."""
    return pathlib.Path(directory) / f"checkpoint_{_whole_number('step', step, 0):08d}.npz"


def list_steps(directory: str | os.PathLike) -> list[int]:
    """Steps that have a checkpoint in ``directory``, ascending ([] if it does not exist)."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return sorted(int(m.group(1)) for m in map(_STEP_FILE.match, names) if m)


def latest_step(directory: str | os.PathLike) -> Optional[int]:
    """The highest saved step in ``directory``, or None when there is none."""
    steps = list_steps(directory)
    return steps[-1] if steps else None


def save_step(directory: str | os.PathLike, step: int, tree: PyTree, *,
              keep: Optional[int] = None, compress: bool = False) -> pathlib.Path:
    """Save ``tree`` as step ``step``; with ``keep``, delete all but the newest ``keep`` steps."""
    keep = None if keep is None else _whole_number("keep", keep, 1)
    path = save(step_path(directory, step), tree, compress=compress)
    if keep is not None:
        for old in list_steps(directory)[:-keep]:
            step_path(directory, old).unlink(missing_ok=True)
    return path


def restore_step(directory: str | os.PathLike, step: Optional[int] = None,
                 like: PyTree = None) -> PyTree:
    """Restore step ``step`` (default: the latest) from ``directory``."""
    if step is None:
        step = latest_step(directory)
        if step is None:
            raise FileNotFoundError(f"no checkpoint_*.npz in {directory}")
    return restore(step_path(directory, step), like=like)
