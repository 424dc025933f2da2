"""Weight penalties over parameter pytrees: ``l1_penalty`` and ``l2_penalty``.

``l1_penalty(params) = Σ |w|`` and ``l2_penalty(params) = Σ w²``, summed over every entry of
every selected leaf (in float32 at least, so float16 and bfloat16 weights give a float32
penalty instead of overflowing to inf); the caller scales by ``λ`` and adds the result to
the data loss:

    loss = data_loss(params) + lam * l2_penalty(params, mask=weights_only_mask)

Gradients (what ``jax.grad`` returns, and the closed forms the tests check):

    ∂/∂w  Σ|w| = +sign(w)        ∂/∂w  Σw² = +2w

so gradient descent subtracts ``η λ sign(w)`` / ``η λ 2w`` from the weights.

Peers: ``lam * l2_penalty(params)`` adds ``2 λ w`` to the gradient, which is what PyTorch's
``weight_decay=2 * lam`` (SGD, Adam: coupled decay) and ``optax.add_decayed_weights(2 * lam)``
before the optimizer add; there is no ½ in ``l2_penalty``.

Reference: Goodfellow, Bengio & Courville, *Deep Learning* (2016), §7.1.1 (L2 parameter
regularization) and §7.1.2 (L1 regularization).

Masks.  ``mask`` selects which leaves are penalised.  It is either

* a pytree of Python bools with the structure of ``params`` or a prefix of it (a bool at a
  dict entry applies to the whole sub-tree below it), e.g.
  ``{"dense_0": {"w": True, "b": False}, "dense_1": True}``; a leaf may also be a boolean
  array broadcastable to the parameter's shape to select single entries; or
* a function ``params -> such a pytree`` (evaluated on the same ``params``).

The usual choice penalises weight matrices and convolution kernels but not biases (a bias
only shifts the output, and shrinking it adds bias without reducing variance):
:func:`weights_only_mask` builds that mask; pass it as ``mask=weights_only_mask``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl._types import Array, PyTree

__all__ = ["l1_penalty", "l2_penalty", "weights_only_mask"]

Mask = Union[PyTree, Callable[[PyTree], PyTree]]


def weights_only_mask(params: PyTree) -> PyTree:
    """Mask that is ``True`` for weight leaves (``ndim ≥ 2``) and ``False`` for the rest.

    Dense weights ``(n_in, n_out)`` and convolution kernels ``(kh, kw, c_in, c_out)`` are
    selected; biases ``(n,)`` and scalars are not.
    """
    return jax.tree.map(lambda leaf: bool(jnp.ndim(leaf) >= 2), params)


def l1_penalty(params: PyTree, mask: Optional[Mask] = None) -> Array:
    """``Σ |w|`` over the entries of the selected leaves of ``params`` (a scalar).

    Gradient: ``+sign(w)`` for selected entries (0 at ``w = 0``, so a weight that is exactly
    zero stays zero under a pure L1 step), 0 for the others.
    """
    return _masked_sum(_abs_with_sign_gradient, params, mask)


def _abs_with_sign_gradient(w: Array) -> Array:
    """``|w|`` written as ``w · sign(w)`` with the sign held constant: gradient ``sign(w)``.

    ``jax.grad(jnp.abs)`` is 1 at 0, which would push exact zeros to ``-η λ``.
    """
    return w * jax.lax.stop_gradient(jnp.sign(w))


def l2_penalty(params: PyTree, mask: Optional[Mask] = None) -> Array:
    """``Σ w²`` over the entries of the selected leaves of ``params`` (a scalar).

    Gradient: ``+2w`` for selected entries, 0 for the others (no ½ in front of the sum).
    """
    return _masked_sum(jnp.square, params, mask)


def _masked_sum(term: Callable[[Array], Array], params: PyTree, mask: Optional[Mask]) -> Array:
    """``Σ term(w)`` over the entries of ``params`` that ``mask`` selects."""
    if mask is None:
        leaves = jax.tree.leaves(params)
        return _total([_term_sum(term, leaf) for leaf in leaves])
    if callable(mask):
        mask = mask(params)
    try:
        # A bool leaf of ``mask`` meets the whole sub-tree of ``params`` below it.
        per_leaf = jax.tree.map(
            lambda selected, subtree: _subtree_sum(term, selected, subtree), mask, params)
    except ValueError as error:
        raise ValueError(
            "mask must have the structure of params or a prefix of it; got mask structure "
            f"{jax.tree.structure(mask)} for params structure {jax.tree.structure(params)}"
        ) from error
    return _total(jax.tree.leaves(per_leaf))


def _subtree_sum(term: Callable[[Array], Array], selected: Any, subtree: PyTree) -> Array:
    """``Σ term(w)`` over ``subtree``: all, none, or the entries a bool array selects."""
    leaves = jax.tree.leaves(subtree)
    if isinstance(selected, (bool, np.bool_)):
        if not selected:
            return _total([jnp.zeros((), _sum_dtype(leaf)) for leaf in leaves])
        return _total([_term_sum(term, leaf) for leaf in leaves])
    selected = jnp.asarray(selected)
    if selected.dtype != jnp.bool_:
        raise TypeError(f"mask leaves must be bools or bool arrays, got dtype {selected.dtype}")
    sums = []
    for leaf in leaves:
        if jnp.ndim(selected) > jnp.ndim(leaf):
            raise ValueError(
                f"mask leaf of shape {selected.shape} does not fit parameter of shape "
                f"{jnp.shape(leaf)}")
        sums.append(_term_sum(term, leaf, jnp.broadcast_to(selected, jnp.shape(leaf))))
    return _total(sums)


def _sum_dtype(leaf) -> Any:
    """float32 at least: a float16 sum of squares overflows (65504) for an ordinary layer."""
    return jnp.promote_types(jnp.result_type(leaf), jnp.float32)


def _term_sum(term: Callable[[Array], Array], leaf: Any, entries: Optional[Array] = None) -> Array:
    """``Σ term(w)`` over the leaf's entries (where ``entries`` is True), all in ``_sum_dtype``
    (each |w| or w² is exact before the sum, too)."""
    values = term(jnp.asarray(leaf).astype(_sum_dtype(leaf)))
    if entries is not None:
        values = jnp.where(entries, values, jnp.zeros_like(values))
    return jnp.sum(values)


def _total(values: list) -> Array:
    """The sum of a list of scalars; a float32 zero for an empty list."""
    if not values:
        return jnp.zeros(())
    return sum(values[1:], values[0])
