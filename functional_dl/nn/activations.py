"""Activations: the functions (``relu``, ``elu``, ...) and their layers (``Relu``, ``Elu``, ...).

Each activation is a plain function of an array and a ready-made ``Layer`` without params,
as in stax (``nn.serial(nn.Dense(64), nn.Relu)``).  An activation with parameters is called
with them to give the layer for those values, as torch's modules are built::

    nn.LeakyRelu                  # negative_slope = 0.01 (the function's default)
    nn.LeakyRelu(0.2)             # negative_slope = 0.2
    nn.Gelu(approximate=True)     # the tanh approximation

(``nn.Relu()`` is a layer that computes what ``nn.Relu`` does.)  :data:`ACTIVATIONS` maps
each name (``"relu"``, ``"silu"``, ``"swish"``, ...) to its layer, for choosing one by name
(``mlp(activation="silu")``).

Where ``jax.nn`` computes the same values and the same derivative at the kinks as torch, the
function calls it.  ``relu``, ``leaky_relu``, ``hard_tanh`` (and ``relu6``, which is
``hard_tanh(x, 0, 6)``), ``celu`` and ``glu`` are written here: ``jax.nn``'s differ in the
derivative at a kink (``leaky_relu``, ``hard_tanh``), in NaN handling or in raising an
``AssertionError`` for a bad shape (``glu``).
Conventions, checked against ``torch.nn.functional`` in the tests: NaN in gives NaN out; at a
kink the derivative is the one-sided one torch takes (stated per function).  Parameters are
checked when the function or layer is built from Python numbers (a ``ValueError`` names the
parameter); traced parameters are not checked.

``softmax``/``log_softmax`` act on the last axis (``axis=`` to choose) and are
``jax.nn.softmax``/``jax.nn.log_softmax``, the implementation ``functional_dl.losses`` uses,
so the package has one ``log_softmax``.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn.base import Layer, check_input_shape

__all__ = [
    "Activation", "ACTIVATIONS", "elementwise",
    "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax",
    "elu", "leaky_relu", "selu", "silu", "swish", "softplus", "hard_tanh", "log_sigmoid",
    "celu", "glu", "relu6",
    "Relu", "Sigmoid", "Tanh", "Gelu", "Softmax", "LogSoftmax",
    "Elu", "LeakyRelu", "Selu", "Silu", "Swish", "Softplus", "HardTanh", "LogSigmoid",
    "Celu", "Glu", "Relu6",
]

# SELU's constants (Klambauer et al., 2017), the values torch and jax.nn use.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ----------------------------------------------------------------- parameter checks
# Each parameterized function checks its parameters with these before it touches x; a
# layer checks them once when it is built.


def _check_elu(alpha: Any = 1.0) -> None:
    checks.non_negative("elu: alpha", alpha)


def _check_celu(alpha: Any = 1.0) -> None:
    checks.positive("celu: alpha", alpha)


def _check_leaky_relu(negative_slope: Any = 0.01) -> None:
    checks.non_negative("leaky_relu: negative_slope", negative_slope)


def _check_gelu(approximate: Any = False) -> bool:
    return checks.boolean("gelu: approximate", approximate)


def _check_hard_tanh(min_value: Any = -1.0, max_value: Any = 1.0) -> None:
    checks.real_in("hard_tanh: min_value", min_value)
    checks.real_in("hard_tanh: max_value", max_value)
    if checks.is_concrete(min_value) and checks.is_concrete(max_value) and not (
            float(min_value) < float(max_value)):
        raise ValueError(f"hard_tanh: min_value must be below max_value, got min_value "
                         f"{min_value!r} and max_value {max_value!r}")


def _check_glu(axis: Any = -1, *, owner: str = "Glu") -> int:
    return checks.whole_number(f"{owner}: axis", axis)


def _check_axis(axis: Any = -1) -> None:
    checks.whole_number("softmax: axis", axis)


# ------------------------------------------------------------------------ functions


def relu(x: Array) -> Array:
    """``max(x, 0)``; its derivative is taken as ``1[x > 0]`` (0 at ``x = 0``); NaN stays NaN."""
    return jnp.where((x > 0) | jnp.isnan(x), x, jnp.zeros_like(x))


def sigmoid(x: Array) -> Array:
    """Logistic function ``σ(x) = 1 / (1 + exp(-x))``; ``σ' = σ (1 - σ)``."""
    return jax.lax.logistic(x)


def tanh(x: Array) -> Array:
    """Hyperbolic tangent; ``tanh' = 1 - tanh²``."""
    return jnp.tanh(x)


def gelu(x: Array, approximate: bool = False) -> Array:
    """Gaussian error linear unit (Hendrycks & Gimpel, 2016).

    ``approximate=False`` (the default): exact ``x Φ(x) = ½ x (1 + erf(x / √2))``, with
    ``gelu'(x) = Φ(x) + x φ(x)`` (``φ`` the standard normal density); torch's
    ``F.gelu(x)``.  ``approximate=True``: ``½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))``,
    torch's ``F.gelu(x, approximate="tanh")`` (``jax.nn.gelu``'s default).
    """
    if _check_gelu(approximate):
        return jax.nn.gelu(x, approximate=True)
    return 0.5 * x * (1 + jax.lax.erf(x / math.sqrt(2.0)))


def softmax(x: Array, axis: int = -1) -> Array:
    """``exp(x - m) / Σ exp(x - m)`` over ``axis`` (``m = max x``, for stability);
    ``jax.nn.softmax``."""
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x: Array, axis: int = -1) -> Array:
    """``x - m - log Σ exp(x - m)`` over ``axis`` (``m = max x``); ``jax.nn.log_softmax``."""
    return jax.nn.log_softmax(x, axis=axis)


def elu(x: Array, alpha: float = 1.0) -> Array:
    """Exponential linear unit (Clevert et al., 2016), ``alpha >= 0``::

        elu(x) = x              (x > 0)
               = α (eˣ - 1)     (x <= 0)          elu'(0) = α (the left derivative)

    ``jax.nn.elu``; torch's ``F.elu(x, alpha)``.
    """
    _check_elu(alpha)
    return jax.nn.elu(x, alpha)


def leaky_relu(x: Array, negative_slope: float = 0.01) -> Array:
    """``x`` for ``x > 0``, ``negative_slope · x`` otherwise (``negative_slope >= 0``).

    The derivative at 0 is ``negative_slope`` (torch's choice; ``jax.nn.leaky_relu`` takes
    1); torch's ``F.leaky_relu(x, negative_slope)``.  Maas et al. (2013).
    """
    _check_leaky_relu(negative_slope)
    return jnp.where(x > 0, x, negative_slope * x)


def selu(x: Array) -> Array:
    """Scaled ELU (Klambauer et al., 2017): ``λ · elu(x, α)`` with ``α ≈ 1.6733``,
    ``λ ≈ 1.0507`` (:data:`SELU_ALPHA`, :data:`SELU_SCALE`); ``selu'(0) = λ α``.
    ``jax.nn.selu``; torch's ``F.selu``."""
    return jax.nn.selu(x)


def silu(x: Array) -> Array:
    """Sigmoid linear unit ``x σ(x)`` (Hendrycks & Gimpel, 2016; "swish" with β = 1 in
    Ramachandran et al., 2017); ``silu' = σ(x) (1 + x (1 - σ(x)))``.  ``jax.nn.silu``;
    torch's ``F.silu``."""
    return jax.nn.silu(x)


swish = silu


def softplus(x: Array) -> Array:
    """``log(1 + eˣ)``, computed as ``logaddexp(x, 0)`` (no overflow); ``softplus' = σ``.

    ``jax.nn.softplus``; torch's ``F.softplus(x)`` (whose ``threshold=20`` returns ``x`` for
    ``x > 20``, a difference below ``2.1e-9``).
    """
    return jax.nn.softplus(x)


def log_sigmoid(x: Array) -> Array:
    """``log σ(x) = -softplus(-x)``, stable for large ``|x|``; ``jax.nn.log_sigmoid``;
    torch's ``F.logsigmoid``."""
    return jax.nn.log_sigmoid(x)


def hard_tanh(x: Array, min_value: float = -1.0, max_value: float = 1.0) -> Array:
    """``x`` clipped to ``[min_value, max_value]`` (``min_value < max_value``).

    The derivative is ``1`` strictly inside and ``0`` at and beyond the bounds (torch's;
    ``jax.nn.hard_tanh`` takes 1 at the bounds); NaN stays NaN.  torch's
    ``F.hardtanh(x, min_val, max_val)``.
    """
    _check_hard_tanh(min_value, max_value)
    low = jnp.asarray(min_value, jnp.result_type(x))
    high = jnp.asarray(max_value, jnp.result_type(x))
    # the bounds win ties, so the derivative there is 0; NaN fails both tests and passes
    return jnp.where(x <= low, low, jnp.where(x >= high, high, x))


def relu6(x: Array) -> Array:
    """``min(max(x, 0), 6)`` = ``hard_tanh(x, 0, 6)``: derivative 0 at 0 and at 6 (torch's
    ``F.relu6``; Krizhevsky, 2010)."""
    return hard_tanh(x, 0.0, 6.0)


def celu(x: Array, alpha: float = 1.0) -> Array:
    """Continuously differentiable ELU (Barron, 2017), ``alpha > 0``::

        celu(x) = max(0, x) + min(0, α (e^{x/α} - 1))        celu'(0) = 1

    torch's ``F.celu(x, alpha)`` (``jax.nn.celu`` computes the same values).
    """
    _check_celu(alpha)
    negative = jnp.where(x > 0, jnp.zeros_like(x), x)  # no overflow in the unused branch
    return jnp.where(x > 0, x, alpha * jnp.expm1(negative / alpha))


def glu(x: Array, axis: int = -1) -> Array:
    """Gated linear unit (Dauphin et al., 2017): ``x`` split in halves ``a, b`` along
    ``axis``, ``glu(x) = a ⊙ σ(b)``; the size on ``axis`` must be even and is halved.
    torch's ``F.glu(x, dim=axis)``."""
    axis = _check_glu(axis, owner="glu")
    shape = jnp.shape(x)
    if not -len(shape) <= axis < len(shape) or shape[axis] % 2:
        raise ValueError(f"glu: x must have an even size on axis {axis} (it is split in "
                         f"halves), got shape {tuple(shape)}")
    a, b = jnp.split(x, 2, axis=axis)
    return a * sigmoid(b)


# --------------------------------------------------------------------------- layers


def _glu_shape(shape: Shape, axis: int = -1) -> Shape:
    axis = _check_glu(axis)
    if not -len(shape) <= axis < len(shape) or shape[axis] == -1 or shape[axis] % 2:
        raise ValueError(f"Glu: input_shape must have a known even size on axis {axis} (it "
                         f"is split in halves), got {shape}")
    out = list(shape)
    out[axis] //= 2
    return tuple(out)


class Activation(Layer):
    """A parameter-free ``Layer`` applying ``fn`` (shape-preserving unless ``output_shape``
    says otherwise); called with ``fn``'s parameters it gives the layer for those."""

    def __new__(cls, init: Callable, apply: Callable, name: str = "layer",
                fn: Optional[Callable] = None, output_shape: Optional[Callable] = None):
        layer = super().__new__(cls, init, apply, name)
        layer.__dict__.update(fn=fn, output_shape=output_shape)
        return layer

    def __getnewargs__(self):
        return tuple(self) + (self.name, self.fn, self.output_shape)

    def __call__(self, *args: Any, **kwargs: Any) -> "Activation":
        if self.fn is None:
            raise TypeError(f"{self.name}: this layer takes no parameters")
        try:
            bound = inspect.signature(self.fn).bind(None, *args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{self.name}: {error}") from None
        parameters = dict(list(bound.arguments.items())[1:])  # all but x
        return _activation(self.fn, self.name, self.output_shape, **parameters)

    def __repr__(self) -> str:
        return f"Activation(name={self.name!r})"


def _activation(fn: Callable, name: str, output_shape: Optional[Callable] = None,
                **parameters: Any) -> Activation:
    """The layer ``y = fn(x, **parameters)``, its parameters checked now."""
    check = _PARAMETER_CHECKS.get(fn)
    if parameters and check is not None:
        check(**parameters)

    def init(key: PRNGKey, input_shape: Shape):
        del key
        shape = check_input_shape(name, input_shape)
        return (shape if output_shape is None else output_shape(shape, **parameters)), {}

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del params, key, train
        return fn(x, **parameters)

    return Activation(init, apply, name, fn, output_shape)


def elementwise(fn: Callable[..., Array], name: str = "layer", **fn_kwargs: Any) -> Layer:
    """A parameter-free layer applying ``fn(x, **fn_kwargs)`` (shape-preserving) to its input
    (stax's ``elementwise``, with the layer's ``name``)."""
    if not callable(fn):
        raise TypeError(f"elementwise: fn must be a function of an array, got "
                        f"{checks.describe(fn)}")

    def init(key: PRNGKey, input_shape: Shape):
        del key
        return check_input_shape(name, input_shape), {}

    def apply(params: PyTree, x: Array, *, key: Optional[PRNGKey] = None,
              train: bool = False) -> Array:
        del params, key, train
        return fn(x, **fn_kwargs)

    return Layer(init, apply, name)


_PARAMETER_CHECKS = {elu: _check_elu, celu: _check_celu, leaky_relu: _check_leaky_relu,
                     gelu: _check_gelu, hard_tanh: _check_hard_tanh, glu: _check_glu,
                     softmax: _check_axis, log_softmax: _check_axis}

Relu = _activation(relu, "relu")
Sigmoid = _activation(sigmoid, "sigmoid")
Tanh = _activation(tanh, "tanh")
Softmax = _activation(softmax, "softmax")
LogSoftmax = _activation(log_softmax, "log_softmax")
Gelu = _activation(gelu, "gelu")
Elu = _activation(elu, "elu")
LeakyRelu = _activation(leaky_relu, "leaky_relu")
Selu = _activation(selu, "selu")
Silu = _activation(silu, "silu")
Swish = Silu
Softplus = _activation(softplus, "softplus")
LogSigmoid = _activation(log_sigmoid, "log_sigmoid")
HardTanh = _activation(hard_tanh, "hard_tanh")
Relu6 = _activation(relu6, "relu6")
Celu = _activation(celu, "celu")
Glu = _activation(glu, "glu", _glu_shape)

#: name -> activation layer (a ``Layer`` with default parameters; call it with parameters
#: for others): the table for choosing an activation by name.
ACTIVATIONS: dict[str, Activation] = {
    "relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh, "gelu": Gelu, "softmax": Softmax,
    "log_softmax": LogSoftmax, "elu": Elu, "leaky_relu": LeakyRelu, "selu": Selu,
    "silu": Silu, "swish": Swish, "softplus": Softplus, "log_sigmoid": LogSigmoid,
    "hard_tanh": HardTanh, "relu6": Relu6, "celu": Celu, "glu": Glu,
}
