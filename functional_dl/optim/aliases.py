"""The named optimizers, each a chain of a direction and a step.

::

    sgd(η)             = scale_by_learning_rate(η)
    momentum(η, β)     = chain(trace(β), scale_by_learning_rate(η))
    adagrad(η)         = chain(scale_by_adagrad(), scale_by_learning_rate(η))
    rmsprop(η)         = chain(scale_by_rms() or scale_by_stddev(), scale_by_learning_rate(η))
    adam(η)            = chain(scale_by_adam(), scale_by_learning_rate(η))
    adamw(η, λ)        = chain(scale_by_adam(), add_decayed_weights(λ), scale_by_learning_rate(η))

Written the same way elsewhere: ``nadam``, ``nadamw``, ``radam``, ``adamax``, ``adabelief``
(:mod:`~functional_dl.optim.adam_variants`), ``lion``, ``lamb``
(:mod:`~functional_dl.optim.sign_and_trust`) and ``adafactor``
(:mod:`~functional_dl.optim.factored`).

The state is the chain's tuple of member states (e.g. ``adam``'s is
``(ScaleByAdamState(count, mu, nu), EmptyState())``), the same layout as optax's aliases.
Each alias checks its inputs under its own name (``adam.update: grads['w'] has shape ...``).
Arithmetic runs in float32 at least (float64 for float64 leaves); state leaves keep their
dtype and updates come back in each gradient leaf's dtype.  With float16 parameters the
second moments are stored in float16, where ``g²`` below about 6e-8 flushes to zero: train
float16 models with float32 (or bfloat16) master parameters, or pass ``nu_dtype``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

from functional_dl import checks
from functional_dl._types import PyTree, ScalarOrSchedule
from functional_dl.optim import _tree
from functional_dl.optim.base import Optimizer, chain
from functional_dl.optim.directions import (scale_by_adagrad, scale_by_adam, scale_by_rms,
                                            scale_by_stddev, trace)
from functional_dl.optim.transforms import add_decayed_weights, scale_by_learning_rate

__all__ = ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", "named_chain"]

Mask = Union[PyTree, Callable[[PyTree], PyTree]]


def named_chain(owner: str, *members: Optimizer) -> Optimizer:
    """``chain(*members)`` whose ``init``/``update`` check their inputs under ``owner``'s name."""
    inner = chain(*members)

    def init(params: PyTree):
        _tree.check_float_leaves(f"{owner}.init", "params", params)
        return inner.init(params)

    def update(grads: PyTree, state, params: PyTree | None = None, **extra_args):
        grads = _tree.as_float_arrays(f"{owner}.update", "grads", grads)
        if params is not None:
            _tree.check_same_structure(f"{owner}.update", "grads", grads, "params", params)
        return inner.update(grads, state, params, **extra_args)

    return Optimizer(init, update)


def sgd(learning_rate: ScalarOrSchedule) -> Optimizer:
    """Stochastic gradient descent (Robbins & Monro 1951): ``u_t = −η_t g_t``.

    Same numbers as ``torch.optim.SGD(lr)`` and ``optax.sgd(lr)``.

    Args:
      learning_rate: finite ``η >= 0`` or a schedule ``step -> η``.
    """
    _tree.check_learning_rate("sgd", learning_rate)
    return named_chain("sgd", scale_by_learning_rate(learning_rate))


def momentum(learning_rate: ScalarOrSchedule, beta: float = 0.9,
             nesterov: bool = False, *, dampening: float = 0.0,
             accumulator_dtype: Any = None) -> Optimizer:
    """Gradient descent with heavy-ball momentum (Polyak 1964) or Nesterov's form::

        b_t = β b_{t-1} + g_t,  b_0 = 0
        u_t = −η_t b_t                   nesterov=False
        u_t = −η_t (g_t + β b_t)         nesterov=True

    The rate multiplies the buffer after it is formed (it does not enter it), so with a
    schedule too this is ``torch.optim.SGD(lr=η, momentum=β, nesterov=nesterov)`` and
    ``optax.sgd(η, momentum=β, nesterov=nesterov)``.  (Sutskever et al. 2013 write
    ``m_t = β m_{t-1} − η_t g_t``, which is the same for a constant rate but lets each
    gradient keep the rate it entered with; chain ``trace`` after ``scale_by_learning_rate``
    for that form.)

    ``dampening = τ`` is torch's: ``b_1 = g_1``, then ``b_t = β b_{t-1} + (1 − τ) g_t``
    (``torch.optim.SGD(lr, momentum=β, dampening=τ)``; see
    :func:`~functional_dl.optim.directions.trace`).

    Args:
      learning_rate: ``η >= 0`` or a schedule ``step -> η``.
      beta: momentum ``β`` in ``[0, 1)``.
      nesterov: use the Nesterov form.
      dampening: ``τ`` in ``[0, 1]`` (0 with ``nesterov``).
      accumulator_dtype: stored dtype of ``b`` (default the parameter's).
    """
    _tree.check_learning_rate("momentum", learning_rate)
    checks.real_in("momentum: beta", beta, 0.0, 1.0, high_closed=False)
    checks.real_in("momentum: dampening", dampening, 0.0, 1.0)
    return named_chain("momentum", trace(beta, nesterov, accumulator_dtype,
                                         dampening=dampening),
                       scale_by_learning_rate(learning_rate))


def _decayed_rate(learning_rate: ScalarOrSchedule, lr_decay: float) -> Callable:
    """``t -> η_t / (1 + t · lr_decay)``, ``t`` the number of earlier updates."""
    def rate(count):
        base = learning_rate(count) if callable(learning_rate) else learning_rate
        return base / (1.0 + count * lr_decay)
    return rate


def adagrad(learning_rate: ScalarOrSchedule, eps: float = 1e-10,
            initial_accumulator_value: float = 0.0, eps_in_sqrt: bool = True, *,
            lr_decay: float = 0.0) -> Optimizer:
    """Adagrad (Duchi, Hazan & Singer 2011)::

        G_t = G_{t-1} + g_t²,            G_0 = initial_accumulator_value
        u_t = −η'_t g_t / √(G_t + ε)      eps_in_sqrt=True
        u_t = −η'_t g_t / (√G_t + ε)      eps_in_sqrt=False
        η'_t = η_{t-1} / (1 + (t − 1) · lr_decay)

    (``η_{t-1}`` the rate, or the schedule at ``t − 1`` earlier updates).

    * PyTorch ``torch.optim.Adagrad(lr, lr_decay, eps=1e-10, initial_accumulator_value)``:
      ``adagrad(lr, eps_in_sqrt=False, lr_decay=lr_decay, initial_accumulator_value=...)``.
    * optax ``optax.adagrad(lr)`` (``initial_accumulator_value=0.1, eps=1e-7``, ε inside):
      ``adagrad(lr, eps=1e-7, initial_accumulator_value=0.1)``.

    Args as :func:`~functional_dl.optim.directions.scale_by_adagrad`, plus ``learning_rate``
    and ``lr_decay >= 0`` (finite; a positive value makes the step keep an int32 ``count``).
    """
    _tree.check_learning_rate("adagrad", learning_rate)
    _tree.check_finite_non_negative("adagrad: lr_decay", lr_decay)
    if not checks.is_concrete(lr_decay) or float(lr_decay) != 0.0:
        learning_rate = _decayed_rate(learning_rate, lr_decay)
    return named_chain("adagrad", scale_by_adagrad(eps, initial_accumulator_value, eps_in_sqrt),
                       scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate: ScalarOrSchedule, decay: float = 0.9, eps: float = 1e-8,
            eps_in_sqrt: bool = True, centered: bool = False) -> Optimizer:
    """RMSprop (Tieleman & Hinton 2012); centered form (Graves 2013)::

        E_t = ρ E_{t-1} + (1 − ρ) g_t²,  ḡ_t = ρ ḡ_{t-1} + (1 − ρ) g_t  (centered only)
        s_t = E_t  or  max(E_t − ḡ_t², 0)  (centered)
        u_t = −η_t g_t / √(s_t + ε)  or  −η_t g_t / (√s_t + ε)  (eps_in_sqrt=False)

    * optax ``optax.rmsprop(lr, decay, eps, centered=...)``: the defaults here.
    * PyTorch ``torch.optim.RMSprop(lr, alpha=0.99, eps=1e-8, centered=...)``:
      ``rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False, centered=...)``.

    Args:
      learning_rate: ``η >= 0`` or a schedule ``step -> η``.
      decay: ``ρ`` in ``[0, 1)``.
      eps: ``ε > 0``.
      eps_in_sqrt: where ε is added.
      centered: divide by the estimated standard deviation instead of the RMS.
    """
    _tree.check_learning_rate("rmsprop", learning_rate)
    checks.real_in("rmsprop: decay", decay, 0.0, 1.0, high_closed=False)
    checks.positive("rmsprop: eps", eps)
    direction = (scale_by_stddev if centered else scale_by_rms)(decay, eps, eps_in_sqrt)
    return named_chain("rmsprop", direction, scale_by_learning_rate(learning_rate))


def _adam_checks(owner: str, learning_rate, b1, b2, eps) -> None:
    _tree.check_learning_rate(owner, learning_rate)
    checks.real_in(f"{owner}: b1", b1, 0.0, 1.0, high_closed=False)
    checks.real_in(f"{owner}: b2", b2, 0.0, 1.0, high_closed=False)
    checks.positive(f"{owner}: eps", eps)


def adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8, *, eps_root: float = 0.0, mu_dtype: Any = None,
         nu_dtype: Any = None, amsgrad: bool = False) -> Optimizer:
    """Adam (Kingma & Ba 2015, Algorithm 1): ``u_t = −η_t m̂_t / (√v̂_t + ε)`` with the
    moments of :func:`~functional_dl.optim.directions.scale_by_adam`.

    ε outside the root, as in the paper, ``torch.optim.Adam`` and ``optax.adam``:
    ``adam(lr, b1, b2, eps)`` gives their numbers for the same arguments.  ``1 − β^t`` is
    formed as ``−expm1(t log β)``: in float32 this keeps digits that a direct ``1 − β^t``
    loses, so early float32 steps can differ from optax's in the fifth digit; in float64 the
    two agree to rounding.

    Args:
      learning_rate: ``η >= 0`` or a schedule ``step -> η`` (``step = t − 1``).
      b1, b2: ``β₁, β₂`` in ``[0, 1)``.
      eps: ``ε > 0``; eps_root: ``ε`` inside the root (optax's ``eps_root``).
      mu_dtype, nu_dtype: stored dtypes of the moments (e.g. ``jnp.bfloat16``).
      amsgrad: AMSGrad, with torch's convention (``torch.optim.Adam(amsgrad=True)``): the
        maximum of the raw ``v``, bias-corrected by ``1 − β₂^t`` (see
        :func:`~functional_dl.optim.directions.scale_by_adam` for how optax's differs).
    """
    _adam_checks("adam", learning_rate, b1, b2, eps)
    return named_chain("adam", scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype,
                                             nu_dtype=nu_dtype, amsgrad=amsgrad),
                       scale_by_learning_rate(learning_rate))


def adamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 1e-4, mask: Mask | None = None, *,
          eps_root: float = 0.0, mu_dtype: Any = None, nu_dtype: Any = None,
          amsgrad: bool = False) -> Optimizer:
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2)::

        u_t = −η_t (m̂_t / (√v̂_t + ε) + λ M θ_{t-1})

    with ``M`` the mask (1 where decayed).  The decay does not pass through ``m`` and ``v``
    (unlike Adam with an L2 penalty).  ``η_t`` is the full learning rate and multiplies both
    terms, as in ``optax.adamw`` and ``torch.optim.AdamW``: ``adamw(lr, b1, b2, eps,
    weight_decay=λ)`` gives their numbers (PyTorch's default ``weight_decay`` is 1e-2,
    optax's 1e-4).  ``update`` needs ``params``.

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, amsgrad: as in :func:`adam`
        (``torch.optim.AdamW(amsgrad=True)`` for ``amsgrad``).
      weight_decay: ``λ >= 0``.
      mask: which parameters decay: a pytree of bools with the structure of ``params`` (or a
        prefix of it, e.g. ``{"dense_0": True, "norm": False}``), or a function
        ``params -> such a tree`` (e.g. ``lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``
        to spare biases and scales).  ``None`` decays every leaf.
    """
    _adam_checks("adamw", learning_rate, b1, b2, eps)
    _tree.check_finite_non_negative("adamw: weight_decay", weight_decay)
    return named_chain("adamw", scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype,
                                              nu_dtype=nu_dtype, amsgrad=amsgrad),
                       add_decayed_weights(weight_decay, mask),
                       scale_by_learning_rate(learning_rate))
