"""Per-coordinate adaptive step sizes: Adagrad and RMSprop.

Both scale the gradient by the inverse root of an accumulated square (Duchi et al. 2011;
Tieleman & Hinton 2012); ε is a small constant that keeps the division finite.

Arithmetic runs in float32 at least (float64 for float64 leaves); the accumulators keep the
parameter leaf's dtype and updates come back in each gradient leaf's dtype.  With float16
parameters the accumulated ``g²`` is stored in float16, where values below about 6e-8 flush
to zero and the step ``g / √ε`` can become large: train float16 models with float32 (or
bfloat16) master parameters.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PyTree, ScalarOrSchedule
from functional_dl.optim import _tree
from functional_dl.optim.base import Optimizer


def _scaled_step(rate, g, accumulator, eps: float, eps_in_sqrt: bool):
    """``−η g / √(a + ε)`` or ``−η g / (√a + ε)``."""
    if eps_in_sqrt:
        return -rate * g / jnp.sqrt(accumulator + eps)
    return -rate * g / (jnp.sqrt(accumulator) + eps)


class AdagradState(NamedTuple):
    """``count``: int32 updates made; ``sum_of_squares``: ``G``, one leaf per parameter leaf."""

    count: Array
    sum_of_squares: PyTree


def adagrad(learning_rate: ScalarOrSchedule, eps: float = 1e-10,
            initial_accumulator_value: float = 0.0, eps_in_sqrt: bool = True) -> Optimizer:
    """Adagrad (Duchi, Hazan & Singer 2011).

    Implemented, per coordinate::

        G_t = G_{t-1} + g_t²,            G_0 = initial_accumulator_value
        u_t = −η_t g_t / √(G_t + ε)       eps_in_sqrt=True
        u_t = −η_t g_t / (√G_t + ε)       eps_in_sqrt=False

    Conventions elsewhere:

    * PyTorch ``torch.optim.Adagrad(lr, eps=1e-10, initial_accumulator_value=0)`` adds ε
      outside the root: ``adagrad(lr, eps=1e-10, eps_in_sqrt=False)``.
    * optax ``optax.adagrad(lr)`` (``initial_accumulator_value=0.1, eps=1e-7``, ε inside):
      ``adagrad(lr, eps=1e-7, initial_accumulator_value=0.1)``.

    Args:
      learning_rate: ``η >= 0`` or a schedule ``step -> η``.
      eps: ``ε >= 0``; 0 only with a positive ``initial_accumulator_value`` (else a
        coordinate whose gradient has always been 0 would compute 0/0).
      initial_accumulator_value: ``G_0 >= 0``.
      eps_in_sqrt: where ε is added (see above).
    """
    _tree.check_learning_rate("adagrad", learning_rate)
    checks.non_negative("adagrad: eps", eps)
    checks.non_negative("adagrad: initial_accumulator_value", initial_accumulator_value)
    if (checks.is_concrete(eps) and checks.is_concrete(initial_accumulator_value)
            and eps == 0 and initial_accumulator_value == 0):
        raise ValueError("adagrad: eps and initial_accumulator_value are both 0, so a "
                         "coordinate with zero gradients would compute 0/0; make one positive")

    def init(params: PyTree) -> AdagradState:
        _tree.check_float_leaves("adagrad.init", "params", params)
        return AdagradState(count=_tree.zero_count(),
                            sum_of_squares=_tree.zeros_like_tree(params, initial_accumulator_value))

    def update(grads: PyTree, state: AdagradState, params: PyTree | None = None):
        grads = _tree.as_float_arrays("adagrad.update", "grads", grads)
        _tree.check_same_structure("adagrad.update", "grads", grads,
                                   "state.sum_of_squares", state.sum_of_squares)
        rate = _tree.learning_rate_at(learning_rate, state.count)

        def leaf_update(g, sum_sq):
            cdt = _tree.compute_dtype(g.dtype, sum_sq.dtype)
            g_c = g.astype(cdt)
            sum_sq_new = sum_sq.astype(cdt) + g_c * g_c
            u = _scaled_step(jnp.asarray(rate).astype(cdt), g_c, sum_sq_new, eps, eps_in_sqrt)
            return u.astype(g.dtype), sum_sq_new.astype(sum_sq.dtype)

        updates, sum_of_squares = _tree.map_leaves(leaf_update, 2, grads, state.sum_of_squares)
        return updates, AdagradState(count=_tree.increment_count(state.count),
                                     sum_of_squares=sum_of_squares)

    return Optimizer(init, update)


class RmspropState(NamedTuple):
    """``count``: int32 updates made; ``mean_square``: ``E[g²]``, one leaf per parameter."""

    count: Array
    mean_square: PyTree


class CenteredRmspropState(NamedTuple):
    """As ``RmspropState`` plus ``mean_grad``: ``E[g]`` (``centered=True``)."""

    count: Array
    mean_square: PyTree
    mean_grad: PyTree


def rmsprop(learning_rate: ScalarOrSchedule, decay: float = 0.9, eps: float = 1e-8,
            eps_in_sqrt: bool = True, centered: bool = False) -> Optimizer:
    """RMSprop (Tieleman & Hinton 2012, COURSERA lecture 6.5); centered form (Graves 2013).

    Implemented, per coordinate, with ``E_0 = ḡ_0 = 0``::

        E_t = ρ E_{t-1} + (1 − ρ) g_t²
        ḡ_t = ρ ḡ_{t-1} + (1 − ρ) g_t              centered=True only
        s_t = E_t                                 centered=False
        s_t = max(E_t − ḡ_t², 0)                  centered=True
        u_t = −η_t g_t / √(s_t + ε)                eps_in_sqrt=True
        u_t = −η_t g_t / (√s_t + ε)                eps_in_sqrt=False

    ``E_t − ḡ_t² >= 0`` holds exactly (Cauchy–Schwarz on the averaging weights); the clamp
    only stops rounding from making it negative, which would give NaN. Where the other
    libraries' numbers are finite they agree with these:

    * optax ``optax.rmsprop(lr, decay, eps, centered=...)`` (ε inside, ``initial_scale=0``):
      the defaults here.
    * PyTorch ``torch.optim.RMSprop(lr, alpha=0.99, eps=1e-8, centered=...)`` (ε outside):
      ``rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False, centered=...)``.

    Args:
      learning_rate: ``η >= 0`` or a schedule ``step -> η``.
      decay: ``ρ`` in ``[0, 1)``.
      eps: ``ε > 0`` (0 would compute 0/0 where every gradient so far was 0).
      eps_in_sqrt: where ε is added (see above).
      centered: divide by the estimated standard deviation instead of the RMS.
    """
    _tree.check_learning_rate("rmsprop", learning_rate)
    checks.real_in("rmsprop: decay", decay, 0.0, 1.0, high_closed=False)
    checks.positive("rmsprop: eps", eps)

    def init(params: PyTree):
        _tree.check_float_leaves("rmsprop.init", "params", params)
        zeros = _tree.zeros_like_tree(params)
        if centered:
            return CenteredRmspropState(count=_tree.zero_count(), mean_square=zeros,
                                        mean_grad=_tree.zeros_like_tree(params))
        return RmspropState(count=_tree.zero_count(), mean_square=zeros)

    def update(grads: PyTree, state, params: PyTree | None = None):
        grads = _tree.as_float_arrays("rmsprop.update", "grads", grads)
        _tree.check_same_structure("rmsprop.update", "grads", grads,
                                   "state.mean_square", state.mean_square)
        rate = _tree.learning_rate_at(learning_rate, state.count)
        count = _tree.increment_count(state.count)

        def leaf_update(g, mean_sq, mean_g=None):
            cdt = _tree.compute_dtype(g.dtype, mean_sq.dtype)
            g_c = g.astype(cdt)
            mean_sq_new = decay * mean_sq.astype(cdt) + (1.0 - decay) * (g_c * g_c)
            if mean_g is None:
                scale_sq, outputs = mean_sq_new, ()
            else:
                mean_g_new = decay * mean_g.astype(cdt) + (1.0 - decay) * g_c
                scale_sq = jnp.maximum(mean_sq_new - mean_g_new * mean_g_new, 0.0)
                outputs = (mean_g_new.astype(mean_g.dtype),)
            u = _scaled_step(jnp.asarray(rate).astype(cdt), g_c, scale_sq, eps, eps_in_sqrt)
            return (u.astype(g.dtype), mean_sq_new.astype(mean_sq.dtype)) + outputs

        if centered:
            updates, mean_square, mean_grad = _tree.map_leaves(
                leaf_update, 3, grads, state.mean_square, state.mean_grad)
            return updates, CenteredRmspropState(count, mean_square, mean_grad)
        updates, mean_square = _tree.map_leaves(leaf_update, 2, grads, state.mean_square)
        return updates, RmspropState(count, mean_square)

    return Optimizer(init, update)
