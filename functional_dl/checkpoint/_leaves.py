"""One leaf of a checkpoint: how an array, scalar or PRNG key is stored and read back.

The ``.npy`` format names only NumPy's own dtypes, so ml_dtypes (bfloat16, float8, ...) are
stored as their unsigned-integer bits and typed keys as their key data; the header entry
(``kind``, ``dtype``, ``shape``, and ``impl`` for keys, ``weak_type`` for JAX arrays) says how
to undo that.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt, not a checkpoint, or does not match ``like``."""


_NATIVE_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64", "complex128"])
_EXTENDED_DTYPES = frozenset(  # bfloat16, float8_*, int4, ...: the scalar types ml_dtypes adds
    name for name, value in vars(ml_dtypes).items()
    if isinstance(value, type) and issubclass(value, np.generic))
_PYTHON_SCALARS = {bool: "bool", int: "int", float: "float", complex: "complex"}
_KIND_WORDS = {"jax": "a JAX array", "numpy": "a NumPy array", "numpy_scalar": "a NumPy scalar",
               "key": "a typed PRNG key", **{k: f"a Python {k}" for k in _PYTHON_SCALARS.values()}}


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
    return _place_like(result, like)


def _place_like(result: jax.Array, like: Any) -> jax.Array:
    """``result`` (uncommitted, on the default device) placed as ``like`` is.

    ``jit`` keys its compiled programs on each argument's sharding *and* on whether it is
    committed; an uncommitted array (``jnp.asarray``, a fresh ``init``) lets ``jit`` place it,
    a committed one pins the program to its devices.  A restored leaf therefore stays
    uncommitted when ``like``'s leaf is (``device_put`` onto ``like.sharding`` would commit
    it, and a train step fed the restored state would compile a second time), and takes
    ``like``'s sharding when that leaf is committed or is a ``ShapeDtypeStruct`` with one.
    ``device_put`` keeps dtype and weak type.
    """
    if isinstance(like, jax.Array) and not like.committed:
        return result
    sharding = getattr(like, "sharding", None)
    return jax.device_put(result, sharding) if sharding is not None else result
