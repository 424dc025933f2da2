"""What the count, binary and Gaussian families share: observation checks, initialisation, priors.

Checks (beyond ``functional_dl.hmm.validation``): ``count_observations`` (non-negative whole
numbers, for Poisson and Multinomial), ``binary_observations`` (values in {0, 1}, for
Bernoulli) and ``non_negative_entries`` (rates may be 0).

Initialisation from data (each family's ``initialize`` classmethod).  ``observations`` is
``(N,) + event_shape`` (every step of every sequence, flattened) and ``weights`` ``(N,)`` (1
for a real step, 0 for padding); both are concrete, so the data summaries are computed
eagerly in NumPy float64.  Only ``key`` may be traced (``initialize`` is vmapped over
restarts): the random parts use ``jax.random`` alone.

Log priors (each family's ``log_prior``, ``learning``'s Dirichlet terms of π and A): the log
density, up to an additive constant independent of the parameters, of the conjugate prior
whose MAP estimate the M-step computes, written with pseudo-counts as the M-steps are:

    dirichlet_log_prior:  Σ α log p                  (Dirichlet(α + 1) on each row),
    beta_log_prior:       Σ α [log p + log(1 − p)]   (Beta(α + 1, α + 1) on each probability),
    gamma_log_prior:      Σ (a − 1) log λ − b λ      (Gamma(shape a, rate b) on each value),

each 0 at the maximum-likelihood settings (α = 0; a = 1, b = 0), and ``x log y`` read as 0
where x = 0, so a structural zero with a zero pseudo-count costs nothing.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlog1py, xlogy

from functional_dl import checks
from functional_dl._types import Array, PRNGKey
from functional_dl.hmm import initialization, validation


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def _event_shaped(observations: Any, num_features: int, source: str, *,
                  allow_bool: bool = False) -> None:
    shape = tuple(np.shape(observations))
    if len(shape) < 2 or shape[-1] != num_features:
        raise ValueError(f"observations must have shape (T, D) or (B, T, D) with D = "
                         f"{num_features} (from {source}), got shape {shape}; "
                         "for scalar data use observations[..., None]")
    if not (allow_bool and _dtype(observations) == np.bool_):
        checks.real_dtype("observations", observations)


def count_observations(observations: Any, valid: Optional[np.ndarray], num_features: int, *,
                       source: str) -> None:
    """Non-negative whole numbers ``(T, D)`` or ``(B, T, D)`` (an integer or float dtype)."""
    _event_shaped(observations, num_features, source)
    values = validation.observed_values(observations, valid, 1)
    if values is None:
        return
    values = values.astype(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
    if np.any(bad):
        raise ValueError(f"observations must be non-negative integer counts at non-padded "
                         f"positions, got {values[bad].flat[0]:.6g}")


def binary_observations(observations: Any, valid: Optional[np.ndarray], num_features: int, *,
                        source: str) -> None:
    """Values in {0, 1}, shape ``(T, D)`` or ``(B, T, D)`` (a boolean, integer or float dtype)."""
    _event_shaped(observations, num_features, source, allow_bool=True)
    values = validation.observed_values(observations, valid, 1)
    if values is None:
        return
    values = values.astype(np.float64)
    bad = (values != 0) & (values != 1)
    if np.any(bad):
        raise ValueError(f"observations must be binary (0 or 1) at non-padded positions, "
                         f"got {values[bad].flat[0]:.6g}")


def non_negative_entries(name: str, x: Any) -> None:
    """ValueError unless every entry of a concrete ``x`` is finite and ``>= 0``."""
    values = checks.concrete_values(x)
    if values is not None and not np.all(np.isfinite(values[0]) & (values[0] >= 0)):
        raise ValueError(f"{name} must be finite and >= 0, got minimum {np.min(values[0]):.6g}")


def initialization_data(family: str, observations: Any, weights: Any, num_states: Any,
                        event_ndim: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(x float64 (N,) + event, w float64 (N,), K)`` after checking the arguments of ``initialize``.

    ``num_states`` an int in ``[1, number of steps with weight > 0]``; ``weights`` finite and
    ``>= 0`` with the leading shape of ``observations``.  Steps of weight 0 are overwritten
    with the first real one, so what padding holds never reaches the data summaries.
    """
    num_states = checks.whole_number(f"{family}.initialize: num_states", num_states, minimum=1)
    values = checks.concrete_values(observations, weights)
    if values is None:
        raise TypeError(f"{family}.initialize: observations and weights must be concrete "
                        "arrays (only key may be traced)")
    x, w = values
    if x.ndim != 1 + event_ndim:
        raise ValueError(f"{family}.initialize: observations must have {1 + event_ndim} "
                         f"dimension(s) ((N,) + event shape, all steps flattened), got shape "
                         f"{x.shape}")
    if w.shape != x.shape[:1]:
        raise ValueError(f"{family}.initialize: weights must have shape (N,) = {x.shape[:1]} "
                         f"to match observations, got {w.shape}")
    checks.real_dtype("observations", x)
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError(f"{family}.initialize: weights must be finite and >= 0")
    num_real = int(np.count_nonzero(w))
    if num_states > num_real:
        raise ValueError(f"{family}.initialize: num_states must be at most the number of "
                         f"observations with weight > 0, {num_real}, got {num_states}")
    x = x.astype(np.float64)
    x[w == 0] = x[np.argmax(w > 0)]  # padding may hold anything (NaN, out-of-range counts)
    return x, w, num_states


def float_dtype_of(observations: Any):
    """The observations' floating dtype, or the default float dtype for integer data."""
    dtype = _dtype(observations)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def weighted_mean_and_covariance(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean ``(D,)`` and (biased) covariance ``(D, D)`` of ``x`` ``(N, D)``, float64."""
    mean = w @ x / w.sum()
    centred = x - mean
    return mean, (w[:, None] * centred).T @ centred / w.sum()


def kmeans_means(key: PRNGKey, x: np.ndarray, w: np.ndarray, count: int, dtype) -> Array:
    """``count`` centres of the rows of ``x`` weighted by ``w``: k-means++ seeding, then Lloyd
    iterations (``hmm.initialization.kmeans``), as hmmlearn starts its Gaussian means."""
    points, weights = initialization.as_points(jnp.asarray(x, dtype), jnp.asarray(w, dtype))
    return initialization.kmeans(key, points, weights, count)


def check_prior(name: str, value: Any, shape: tuple[int, ...], *, minimum: float = 0.0) -> None:
    """A real ``>= minimum``, or an array of them broadcastable to ``shape`` (per state, per
    entry); values are checked only when concrete."""
    if np.ndim(value) == 0:
        checks.real_in(name, value, minimum)
        return
    try:
        np.broadcast_shapes(np.shape(value), tuple(shape))
    except ValueError:
        raise ValueError(f"{name} must be a number or an array broadcastable to {tuple(shape)}, "
                         f"got shape {np.shape(value)}") from None
    checks.real_dtype(name, value)
    values = checks.concrete_values(value)
    if values is not None and not np.all(np.isfinite(values[0]) & (values[0] >= minimum)):
        raise ValueError(f"{name} must be finite and >= {minimum:g} entry by entry, got "
                         f"minimum {np.min(values[0]):.6g}")


def positive_observations(observations: Any, valid: Optional[np.ndarray], num_features: int, *,
                          source: str) -> None:
    """Finite reals ``> 0``, shape ``(T, D)`` or ``(B, T, D)``, at non-padded positions."""
    _event_shaped(observations, num_features, source)
    values = validation.observed_values(observations, valid, 1)
    if values is None:
        return
    bad = ~(np.isfinite(values) & (values > 0))
    if np.any(bad):
        raise ValueError(f"observations must be finite and > 0 at non-padded positions, got "
                         f"{values[bad].flat[0]:.6g}")


def dirichlet_log_prior(probs: Array, pseudo_counts: Any) -> Array:
    """``Σ α log p`` over the rows of ``probs``: Dirichlet(α + 1) rows, the prior of the MAP
    ``(n + α) / Σ (n + α)`` (α broadcastable to ``probs``)."""
    return jnp.sum(xlogy(jnp.broadcast_to(pseudo_counts, jnp.shape(probs)), probs))


def beta_log_prior(probs: Array, pseudo_counts: Any) -> Array:
    """``Σ α [log p + log(1 − p)]``: Beta(α + 1, α + 1), the prior of ``(s + α) / (N + 2α)``."""
    pseudo_counts = jnp.broadcast_to(pseudo_counts, jnp.shape(probs))
    return jnp.sum(xlogy(pseudo_counts, probs) + xlog1py(pseudo_counts, -probs))


def gamma_log_prior(values: Array, shape: Any, rate: Any) -> Array:
    """``Σ (a − 1) log λ − b λ``: Gamma(a, b), the prior of the MAP ``(s + a − 1) / (N + b)``."""
    shape, rate = (jnp.broadcast_to(v, jnp.shape(values)) for v in (shape, rate))
    return jnp.sum(xlogy(shape - 1.0, values) - rate * values)


def constraint_log_prior(reference: Array) -> Array:
    """0: the log prior of a family whose hyperparameter is a floor, not a density.

    A variance or eigenvalue floor ``min_covar`` makes the M-step the maximum over the set
    {σ² >= min_covar} (for a covariance, all eigenvalues >= min_covar: clipping the scatter
    matrix's eigenvalues, keeping its eigenvectors, is that constrained maximum), i.e. MAP
    under a prior flat on the set.  It is evaluated as 0 everywhere rather than −inf
    outside: the M-step's output lies in the set by construction, and a −inf from the
    rounding of an eigen-decomposition would only stop EM for nothing.
    """
    return jnp.zeros((), jnp.result_type(reference.dtype, jnp.float32))
