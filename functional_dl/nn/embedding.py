"""``Embedding``: integer ids to learned vectors, and ``attend`` for tied output logits.

``Embedding`` is a layer on the package's contract::

    init(key, input_shape)                      -> (output_shape, params)
    apply(params, x, *, key=None, train=False)  -> y

whose ``x`` holds integer ids; inside ``serial`` its entry is ``embedding_i``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax.numpy as jnp
import numpy as np

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn import initializers
from functional_dl.nn.base import (Layer, check_input, check_input_shape, dtype_options,
                                   matmul_features, promote)

__all__ = ["Embedding", "attend"]


def _check_table(owner: str, params: PyTree) -> Array:
    if not (isinstance(params, dict) and "embedding" in params
            and jnp.ndim(params["embedding"]) == 2):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{owner}: params must be a dict with key 'embedding' holding the "
                         f"(num_embeddings, features) table (inside serial: is this "
                         f"layer's 'embedding_i' entry missing?), got {got}")
    return params["embedding"]


def Embedding(num_embeddings: int, features: int, *,
              embedding_init: Optional[Callable] = None, dtype: Any = None,
              param_dtype: Any = None) -> Layer:
    """Look-up table: integer ids ``(...)`` -> vectors ``(..., features)``::

        y[..., :] = E[ids[...], :]          E: (num_embeddings, features)

    Params ``{"embedding": E}``, initialized ``N(0, 1)`` by default (``embedding_init``
    takes ``init(key, shape, dtype)``).  ``ids`` must be integers in
    ``[0, num_embeddings)``: checked (ValueError) when they are concrete; inside ``jit``
    an id out of range gives a row of NaN rather than a silently clamped neighbour.  The
    gradient with respect to ``E`` adds up the rows' cotangents (a scatter-add).

    Tie the output layer to the table with :func:`attend` (``logits = h Eᵀ``).
    This is ``torch.nn.Embedding(num_embeddings, features)`` with ``weight = E`` (and the
    same ``N(0, 1)`` initialization); ``flax.linen.Embed`` holds ``embedding = E``.
    """
    num_embeddings = checks.whole_number("Embedding: num_embeddings", num_embeddings,
                                         minimum=1)
    features = checks.whole_number("Embedding: features", features, minimum=1)
    dtype, param_dtype = dtype_options("Embedding", dtype, param_dtype)
    embedding_init = initializers.normal(1.0) if embedding_init is None else embedding_init

    def init(key: PRNGKey, input_shape: Shape):
        shape = check_input_shape("Embedding", input_shape, min_rank=0)
        table = embedding_init(key, (num_embeddings, features), param_dtype)
        return shape + (features,), {"embedding": table}

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del key, train
        table = _check_table("Embedding", params)
        checks.integer_dtype("Embedding: ids (x)", x, what="integer ids")
        values = checks.concrete_values(x)
        if values is not None and values[0].size:
            low, high = int(np.min(values[0])), int(np.max(values[0]))
            if low < 0 or high >= table.shape[0]:
                raise ValueError(f"Embedding: ids (x) must be in [0, {table.shape[0]}), got "
                                 f"min {low} and max {high}")
        (table,) = promote(dtype, table)
        ids = jnp.asarray(x)
        # take's "fill" mode wraps negative ids to the end: move them out of range instead
        ids = jnp.where(ids < 0, table.shape[0], ids)
        return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)

    return Layer(init, apply, "embedding")


def attend(params: PyTree, x: Array, *, dtype: Any = None) -> Array:
    """Logits over the vocabulary from an ``Embedding``'s params (weight tying)::

        logits = x Eᵀ          x: (..., features) -> logits: (..., num_embeddings)

    ``params`` is the ``Embedding``'s own entry (``{"embedding": E}``), so one table both
    embeds the input tokens and scores the output ones (Press & Wolf, 2017, "Using the
    output embedding to improve language models").  ``dtype`` is the computation dtype
    (``None`` promotes ``x`` with ``E``).
    """
    table = _check_table("attend", params)
    dtype, _ = dtype_options("attend", dtype, None)
    check_input("attend", x, features=table.shape[1], layout="(..., {features})")
    x, table = promote(dtype, x, table)
    return matmul_features(x, table.T)
