"""Backpropagation by hand for dense networks, and a finite-difference gradient check.

The classic BP algorithm (Rumelhart, Hinton & Williams 1986) written out, for networks built
by ``mlp(layer_sizes, activation)`` (params ``{"dense_0": {"w", "b"}, ..., "dense_{L-1}": ...}``,
no dropout).  It exists to show the algorithm and to be checked against ``jax.grad``; in
practice ``jax.grad`` computes the same numbers for any network.

Notation (row vectors, a batch of ``N`` examples).  Layer ``l = 1..L`` is ``dense_{l-1}``
with ``W^l: (n_{l-1}, n_l)`` and ``b^l: (n_l,)``; ``f`` is the elementwise activation.

    forward:   a^0 = x,   z^l = a^{l-1} W^l + b^l,   a^l = f(z^l)  (l < L),   ŷ = z^L

    loss:      L = (1/N) Σ_n ℓ(z^L_n, y_n)
      softmax cross entropy:  ℓ = logsumexp(z) - Σ_c y_c z_c    → δ^L = (softmax(z^L) - y) / N
      mean squared error:     ℓ = (1/K) Σ_k (z_k - y_k)²         → δ^L = 2 (z^L - y) / (N K)
      (δ^l = ∂L/∂z^l; for CE with soft labels δ^L = (Σ_c y_c · softmax(z^L) - y) / N.)

    backward:  ∂L/∂W^l = (a^{l-1})ᵀ δ^l,   ∂L/∂b^l = Σ_n δ^l_n,
               δ^{l-1} = (δ^l (W^l)ᵀ) ⊙ f'(z^{l-1})

    f'(z):     relu 1[z > 0],  sigmoid σ(z)(1 - σ(z)),  tanh 1 - tanh²(z),
               gelu Φ(z) + z φ(z)

The forward pass keeps the pre-activations ``z^l`` because ``f'`` is evaluated there; the
quantity propagated backwards is the delta ``δ^l = ∂L/∂z^l``, and each weight gradient is
formed from it as above.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from functional_dl.checks import is_concrete
from functional_dl._types import Array, PyTree
from functional_dl.nn.layers import gelu, relu, sigmoid, softmax, tanh

__all__ = ["ForwardPass", "forward", "backprop", "numerical_gradient", "check_gradient",
           "ACTIVATION_DERIVATIVES", "LOSSES"]


def _gelu_derivative(z: Array) -> Array:
    cdf = 0.5 * (1 + jax.lax.erf(z / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


#: name -> (f, f') with f' written in terms of the pre-activation z.
ACTIVATION_DERIVATIVES: dict[str, tuple[Callable, Callable]] = {
    "relu": (relu, lambda z: (z > 0).astype(z.dtype)),
    "sigmoid": (sigmoid, lambda z: sigmoid(z) * (1 - sigmoid(z))),
    "tanh": (tanh, lambda z: 1 - jnp.square(tanh(z))),
    "gelu": (gelu, _gelu_derivative),
}

LOSSES = ("softmax_cross_entropy", "mean_squared_error")


class ForwardPass(NamedTuple):
    """What the backward pass needs: ``activations[l] = a^l`` for ``l = 0..L-1``
    (``a^0`` is the input) and ``pre_activations[l-1] = z^l`` for ``l = 1..L``
    (the last one is the network output)."""

    activations: list
    pre_activations: list


def _dense_names(params: PyTree) -> list[str]:
    if not isinstance(params, dict) or not params:
        raise ValueError("params must be a non-empty dict {'dense_0': {'w', 'b'}, ...} as built "
                         "by mlp(...)")
    names = [f"dense_{i}" for i in range(len(params))]
    if set(params) != set(names):
        raise ValueError(f"params must have exactly the keys {names} (an mlp without dropout), "
                         f"got {sorted(params)}")
    for name in names:
        layer = params[name]
        if not (isinstance(layer, dict) and set(layer) == {"w", "b"}
                and jnp.ndim(layer["w"]) == 2 and jnp.ndim(layer["b"]) == 1
                and layer["b"].shape[0] == layer["w"].shape[1]):
            raise ValueError(f"params[{name!r}] must be {{'w': (n_in, n_out), 'b': (n_out,)}}")
    return names


def _activation(name: str) -> tuple[Callable, Callable]:
    if name not in ACTIVATION_DERIVATIVES:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_DERIVATIVES)}, "
                         f"got {name!r}")
    return ACTIVATION_DERIVATIVES[name]


def _add_bias(y: Array, b: Array) -> Array:
    return y + jnp.broadcast_to(b, y.shape)


def forward(params: PyTree, inputs: Array, activation: str = "relu") -> ForwardPass:
    """Forward pass that keeps every ``a^l`` and ``z^l`` (see the module docstring)."""
    names = _dense_names(params)
    f, _ = _activation(activation)
    if jnp.ndim(inputs) != 2 or inputs.shape[1] != params[names[0]]["w"].shape[0]:
        raise ValueError(f"inputs must have shape (batch, {params[names[0]]['w'].shape[0]}), "
                         f"got {jnp.shape(inputs)}")
    activations, pre_activations = [inputs], []
    for index, name in enumerate(names):
        z = _add_bias(activations[-1] @ params[name]["w"], params[name]["b"])
        pre_activations.append(z)
        if index < len(names) - 1:
            activations.append(f(z))
    return ForwardPass(activations, pre_activations)


def _loss_and_output_delta(loss: str, outputs: Array, targets: Array) -> tuple[Array, Array]:
    """Mean loss over the batch and ``δ^L = ∂L/∂z^L``."""
    batch, width = outputs.shape
    if loss == "softmax_cross_entropy":
        if jnp.issubdtype(targets.dtype, jnp.integer):
            if targets.shape != (batch,):
                raise ValueError(f"integer targets must have shape ({batch},), got {targets.shape}")
            _check_class_indices(targets, width)
            targets = jax.nn.one_hot(targets, width, dtype=outputs.dtype)
        _check_targets(targets, outputs)
        shifted = outputs - jnp.max(outputs, axis=-1, keepdims=True)
        log_probs = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
        value = -jnp.sum(targets * log_probs) / batch
        label_mass = jnp.sum(targets, axis=-1, keepdims=True)
        delta = (softmax(outputs) * label_mass - targets) / batch
        return value, delta
    if loss == "mean_squared_error":
        _check_targets(targets, outputs)
        residual = outputs - targets
        return jnp.sum(jnp.square(residual)) / (batch * width), 2 * residual / (batch * width)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def _check_class_indices(targets: Array, num_classes: int) -> None:
    """Concrete integer targets must lie in ``[0, num_classes)``.  (Under ``jit`` they cannot
    be inspected; an index outside the range one-hot encodes to a row of zeros, which gives
    that example zero loss and zero gradient.)"""
    if is_concrete(targets):
        values = np.asarray(targets)
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"integer targets must be class indices in [0, {num_classes}), "
                             f"got min {int(values.min())} and max {int(values.max())}")


def _check_targets(targets: Array, outputs: Array) -> None:
    if targets.shape != outputs.shape:
        raise ValueError(f"targets shape {targets.shape} must equal the network output shape "
                         f"{outputs.shape}")


def backprop(params: PyTree, inputs: Array, targets: Array, *, activation: str = "relu",
             loss: str = "softmax_cross_entropy") -> tuple[Array, PyTree]:
    """Mean loss over the batch and its gradient, by the δ recursion (module docstring).

    Args:
      params: ``{"dense_0": {"w", "b"}, ...}`` from ``mlp(sizes, activation).init``.
      inputs: ``(batch, n_in)``.
      targets: ``(batch, n_out)`` probabilities / regression targets, or ``(batch,)``
        integer classes in ``[0, n_out)`` for ``loss="softmax_cross_entropy"`` (checked
        when concrete: ``ValueError``).
      activation: ``"relu"``, ``"sigmoid"``, ``"tanh"`` or ``"gelu"`` (hidden layers).
      loss: ``"softmax_cross_entropy"`` or ``"mean_squared_error"``.

    Returns:
      ``(loss_value, grads)``; ``grads`` has the structure of ``params`` and equals
      ``jax.grad`` of ``mean(loss(mlp.apply(params, inputs), targets))``.
      Jit with ``jax.jit(backprop, static_argnames=("activation", "loss"))``.
    """
    names = _dense_names(params)
    _, f_prime = _activation(activation)
    cache = forward(params, inputs, activation)
    value, delta = _loss_and_output_delta(loss, cache.pre_activations[-1], jnp.asarray(targets))
    grads = {}
    for layer in reversed(range(len(names))):
        w = params[names[layer]]["w"]
        grads[names[layer]] = {"w": cache.activations[layer].T @ delta,
                               "b": jnp.sum(delta, axis=0)}
        if layer > 0:
            delta = (delta @ w.T) * f_prime(cache.pre_activations[layer - 1])
    return value, {name: grads[name] for name in names}


# ------------------------------------------------------------ finite differences


def _default_eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps) ** (1.0 / 3.0)


def numerical_gradient(fn: Callable[[PyTree], Array], params: PyTree, *,
                       eps: Optional[float] = None) -> PyTree:
    """Central finite differences of a scalar function, one coordinate at a time.

    ``∂f/∂θ_i ≈ (f(θ + ε e_i) - f(θ - ε e_i)) / (2ε)``, error ``O(ε²)`` plus rounding
    ``O(u/ε)``; the default ``ε = u^{1/3}`` (``u`` the machine epsilon of the params'
    dtype) balances the two.  Costs ``2 · size(params)`` evaluations of ``fn`` (compiled
    once, run in batches of 64 coordinates), so use it on small problems, and in float64
    (``with jax.enable_x64(True):``): float32 differences are only good to ~1e-2.
    ``fn`` must be a pure JAX function (it is traced).  Returns a pytree with the
    structure of ``params``.  With leaves of several precisions each leaf gets the default
    ``ε`` of its own dtype, and each difference is divided by the step really taken (a
    float32 leaf rounds ``θ ± ε``).
    """
    flat, unravel = ravel_pytree(params)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        raise TypeError(f"params must be floating point, got dtype {flat.dtype}")
    if flat.size == 0:
        return unravel(flat)
    if eps is not None and not float(eps) > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    value = jax.eval_shape(fn, params)
    if value.shape != ():
        raise ValueError(f"fn must return a scalar, got shape {value.shape}")
    # one step per coordinate: each leaf's default suits its own precision
    steps = jax.tree.map(lambda leaf: jnp.full(jnp.shape(leaf), _default_eps(
        jnp.result_type(leaf)) if eps is None else float(eps), flat.dtype), params)
    return _central_differences(fn, params, ravel_pytree(steps)[0])


_COORDINATES_PER_BATCH = 64


@partial(jax.jit, static_argnums=0)
def _central_differences(fn: Callable[[PyTree], Array], params: PyTree, eps: Array) -> PyTree:
    """``eps``: the step of every coordinate, shaped like the flattened ``params``."""
    flat, unravel = ravel_pytree(params)
    size = flat.size
    per_batch = min(_COORDINATES_PER_BATCH, size)
    batches = -(-size // per_batch)
    # Indices past the end take a zero step (difference 0) and are dropped afterwards.
    indices = jnp.arange(batches * per_batch).reshape(batches, per_batch)
    positions = jnp.arange(size)

    def partial_derivative(index: Array) -> Array:
        step = jnp.where(positions == index, eps, 0.0)
        ahead, behind = unravel(flat + step), unravel(flat - step)
        # the step a leaf really took (a float32 leaf rounds θ ± ε), not the nominal 2ε
        taken = ravel_pytree(ahead)[0] - ravel_pytree(behind)[0]
        taken = jnp.sum(jnp.where(positions == index, taken, 0.0))
        return (fn(ahead) - fn(behind)) / jnp.where(taken > 0, taken, 1.0)

    differences = jax.lax.map(jax.vmap(partial_derivative), indices).reshape(-1)[:size]
    return unravel(differences.astype(flat.dtype))


def check_gradient(fn: Callable[[PyTree], Array], params: PyTree,
                   grads: Optional[PyTree] = None, *, eps: Optional[float] = None,
                   rtol: Optional[float] = None, atol: Optional[float] = None) -> float:
    """Check ``grads`` (default ``jax.grad(fn)(params)``) against finite differences.

    Passes when ``|g - g_fd| ≤ atol + rtol · |g_fd|`` for every entry; otherwise raises
    ``AssertionError`` naming the parameter (pytree path), the entry and both values.
    Defaults: float64 ``rtol=1e-6, atol=1e-8``; float32 (or any leaf not float64)
    ``rtol=5e-2, atol=5e-3``.
    Returns the largest absolute difference.
    """
    if grads is None:
        grads = jax.grad(fn)(params)
    if jax.tree.structure(grads) != jax.tree.structure(params):
        raise ValueError(f"grads structure {jax.tree.structure(grads)} must equal params "
                         f"structure {jax.tree.structure(params)}")
    numerical = numerical_gradient(fn, params, eps=eps)
    leaves = jax.tree.leaves(params)
    is_double = bool(leaves) and all(jnp.result_type(leaf) == jnp.float64 for leaf in leaves)
    rtol = (1e-6 if is_double else 5e-2) if rtol is None else rtol
    atol = (1e-8 if is_double else 5e-3) if atol is None else atol
    worst = 0.0
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    # Compared in NumPy (float64): no device work or compilation for the bookkeeping.
    leaves = zip(paths, jax.tree.leaves(grads), jax.tree.leaves(numerical), strict=True)
    for (path, _), given, estimate in leaves:
        given = np.asarray(given, np.float64)
        estimate = np.asarray(estimate, np.float64)
        if given.shape != estimate.shape:
            raise ValueError(f"grads{jax.tree_util.keystr(path)} has shape {given.shape}, "
                             f"expected {estimate.shape}")
        if given.size == 0:
            continue
        error = np.abs(given - estimate)
        excess = np.where(np.isnan(error), np.inf, error - (atol + rtol * np.abs(estimate)))
        worst = max(worst, float(np.max(np.where(np.isnan(error), np.inf, error))))
        if np.any(excess > 0):
            index = np.unravel_index(np.argmax(excess), error.shape)
            raise AssertionError(
                f"gradient mismatch at params{jax.tree_util.keystr(path)}"
                f"{[int(i) for i in index]}: given {float(given[index])!r}, finite differences "
                f"{float(estimate[index])!r} (atol={atol}, rtol={rtol})")
    return worst
