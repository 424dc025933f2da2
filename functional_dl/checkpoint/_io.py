"""``save`` and ``restore``: the ``.npz`` file, its JSON header and checksum, atomic writes."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import secrets

import numpy as np

from functional_dl._types import PyTree
from functional_dl.checkpoint._leaves import (CheckpointError, _check_spec, _dtype_from_name,
                                              _encode_leaf, _stored_dtype)
from functional_dl.checkpoint._tree import _attach, _describe, _fill_like, _rebuild

_FORMAT, _VERSION = "functional_dl.checkpoint", 1


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
