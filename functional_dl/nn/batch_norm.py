"""Batch normalization with running statistics: a stateful layer (:mod:`functional_dl.nn.state`).

With ``c`` the feature axis (``axis``, channels last by default) and the statistics taken
over every other axis (the batch and, for images, the spatial axes: ``n`` values per
feature)::

    training (train=True):
        μ_B = mean(x),   σ²_B = mean((x − μ_B)²)                  # biased, over n values
        y   = γ ⊙ (x − μ_B) / √(σ²_B + ε) + β
        mean' = (1 − m)·mean + m·μ_B
        var'  = (1 − m)·var  + m·σ²_B · n / (n − 1)                # unbiased, as PyTorch
    evaluation (train=False):
        y   = γ ⊙ (x − mean) / √(var + ε) + β,   state unchanged

``m = momentum`` follows **PyTorch's convention** (the weight of the new batch, default
0.1); flax's ``momentum`` is ``1 − m`` (its 0.9 is this 0.1).  The running statistics start
at ``mean = 0``, ``var = 1``.  Gradients flow through ``μ_B`` and ``σ²_B`` (the full batch
norm backward pass); the running statistics are not differentiated (``stop_gradient``).

Reference: Ioffe & Szegedy (2015), "Batch Normalization".  PyTorch recipe: an NHWC input
``x`` and ``torch.nn.BatchNorm2d(C, eps=epsilon, momentum=momentum)`` on
``x.permute(0, 3, 1, 2)`` give the same output, the same ``running_mean`` /
``running_var`` (``state["mean"]``, ``state["var"]``) and the same gradients, with
``weight = params["scale"]``, ``bias = params["bias"]``; ``BatchNorm1d`` for ``(N, C)``.

Params ``{"scale": γ, "bias": β}`` (ones, zeros, of ``param_dtype``); state
``{"mean", "var"}`` (of ``param_dtype``); inside ``serial`` both are the ``batch_norm_i``
entry.  Statistics are computed in float32 at least; the output has ``dtype`` (``None``: the
promotion of ``x`` with the params).

Batch statistics are over the ``x`` that ``apply`` sees.  Under ``jit`` with the batch
sharded over a mesh (``train.fit(..., mesh=...)``) that is the **global** batch: XLA
reduces across the shards, so the statistics and the running averages are those of one
device.  Under ``vmap`` or ``shard_map``, pass ``axis_name`` to average the statistics
over that mapped axis too (``lax.pmean``; equal-sized parts).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp

from functional_dl import checks
from functional_dl._types import Array, PRNGKey, PyTree, Shape
from functional_dl.nn.base import check_input_shape, check_params, dtype_options
from functional_dl.nn.state import StatefulLayer, check_state

__all__ = ["BatchNorm"]


def BatchNorm(*, momentum: float = 0.1, epsilon: float = 1e-5, axis: int = -1,
              use_scale: bool = True, use_bias: bool = True,
              axis_name: Optional[str] = None, dtype: Any = None,
              param_dtype: Any = None) -> StatefulLayer:
    """Batch normalization over every axis but ``axis`` (see the module docstring).

    Args:
      momentum: weight of the batch statistics in the running ones, in ``[0, 1]``
        (PyTorch's convention: 0.1 is flax's 0.9).
      epsilon: added to the variance before the square root (> 0).
      axis: the feature axis (``-1``: channels last, NHWC; ``1``: NCHW).
      use_scale, use_bias: learn ``γ`` / ``β`` (else 1 and 0).
      axis_name: a ``vmap``/``shard_map`` axis whose parts share the statistics.
      dtype, param_dtype: computation and parameter dtypes (:mod:`functional_dl.nn.base`).
    """
    owner = "BatchNorm"
    checks.probability(f"{owner}: momentum", momentum)
    checks.positive(f"{owner}: epsilon", epsilon)
    momentum, epsilon = float(momentum), float(epsilon)
    axis = checks.whole_number(f"{owner}: axis", axis)
    use_scale = checks.boolean(f"{owner}: use_scale", use_scale)
    use_bias = checks.boolean(f"{owner}: use_bias", use_bias)
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(f"{owner}: axis_name must be None or the name of a mapped axis, got "
                        f"{checks.describe(axis_name)}")
    dtype, param_dtype = dtype_options(owner, dtype, param_dtype)
    param_names = [n for n, used in (("scale", use_scale), ("bias", use_bias)) if used]

    def feature_axis(rank: int, shape: tuple) -> int:
        if not -rank <= axis < rank:
            raise ValueError(f"{owner}: axis {axis} is out of range for input of shape "
                             f"{shape} (at least 2 axes: the batch and the features)")
        return axis % rank

    def init(key: PRNGKey, input_shape: Shape):
        del key
        shape = check_input_shape(owner, input_shape, min_rank=2)
        features = shape[feature_axis(len(shape), shape)]
        if features == -1:
            raise ValueError(f"{owner}: the feature axis {axis} of input_shape must be known, "
                             f"got {shape}")
        float_type = checks.float_dtype(param_dtype)
        params = {}
        if use_scale:
            params["scale"] = jnp.ones((features,), float_type)
        if use_bias:
            params["bias"] = jnp.zeros((features,), float_type)
        state = {"mean": jnp.zeros((features,), float_type),
                 "var": jnp.ones((features,), float_type)}
        return shape, params, state

    def apply(params: PyTree, x: Array, *, state: PyTree, key: Optional[PRNGKey] = None,
              train: bool = False):
        del key
        check_params(owner, params, param_names, "batch_norm")
        check_state(owner, state, ("mean", "var"), "batch_norm")
        checks.floating_dtype(f"{owner}: x", x)
        shape = tuple(jnp.shape(x))
        features = state["mean"].shape[0]
        if len(shape) < 2 or shape[feature_axis(len(shape), shape)] != features:
            layout = ("(N, ..., {0})" if axis == -1 else f"{features} features on axis {axis}")
            raise ValueError(f"{owner}: x must have shape {layout.format(features)} (at least "
                             f"a batch and a feature axis), got shape {shape}")
        along = feature_axis(len(shape), shape)
        reduced = tuple(i for i in range(len(shape)) if i != along)
        broadcast = tuple(features if i == along else 1 for i in range(len(shape)))

        out_dtype = dtype or jnp.result_type(x, *params.values())
        stats_dtype = jnp.promote_types(out_dtype, jnp.float32)
        x = jnp.asarray(x).astype(stats_dtype)
        new_state = state
        if train:
            num = math.prod(shape[i] for i in reduced)
            if axis_name is not None:
                num *= jax.lax.psum(1, axis_name)
            if num < 2:
                raise ValueError(f"{owner}: training needs more than one value per feature "
                                 f"to estimate the variance, got x of shape {shape}")
            mean = jnp.mean(x, axis=reduced)
            if axis_name is not None:
                mean = jax.lax.pmean(mean, axis_name)
            variance = jnp.mean(jnp.square(x - mean.reshape(broadcast)), axis=reduced)
            if axis_name is not None:
                variance = jax.lax.pmean(variance, axis_name)
            batch_mean, batch_variance = jax.lax.stop_gradient((mean, variance))
            new_state = {
                "mean": ((1 - momentum) * state["mean"]
                         + momentum * batch_mean).astype(state["mean"].dtype),
                "var": ((1 - momentum) * state["var"]
                        + momentum * batch_variance * (num / (num - 1))).astype(
                            state["var"].dtype)}
        else:
            mean, variance = (state[name].astype(stats_dtype) for name in ("mean", "var"))
        y = (x - mean.reshape(broadcast)) / jnp.sqrt(variance.reshape(broadcast) + epsilon)
        if use_scale:
            y = y * params["scale"].astype(stats_dtype).reshape(broadcast)
        if use_bias:
            y = y + params["bias"].astype(stats_dtype).reshape(broadcast)
        return y.astype(out_dtype), new_state

    return StatefulLayer(init, apply, "batch_norm")
