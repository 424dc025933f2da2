"""The registry of emission families that drives every common HMM test, and shared oracles.

A ``Family`` entry gives, for one ``hmm.EmissionModel``: random parameters, random valid
observations, garbage for padded positions, an independent NumPy float64 log-pdf, a NumPy
M-step from weighted data, the hyperparameters to run the M-step with, and a check of
sampled observations against the parameters (moments within a few standard errors).  The
common tests (brute-force inference, padding, M-step, Baum–Welch monotonicity, sampling)
are parametrised over ``FAMILIES``; a new family adds one entry here and nothing else.

``brute_force`` enumerates all K^T state paths; ``random_hmm`` draws π and A from Dirichlet
distributions around any family's emissions.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm


class Family(NamedTuple):
    name: str
    event_size: int  # V symbols or D features of the test models
    # (rng, num_states, event_size, dtype) -> emission model
    random_emissions: Callable[..., Any]
    # (rng, leading_shape, event_size, dtype) -> NumPy observations of that leading shape
    random_observations: Callable[..., np.ndarray]
    # two values written into padded positions (out of range, NaN, huge)
    garbage: tuple[Any, Any]
    # (emissions, x (N,) + event) -> (N, K) log b_k(x_n), NumPy float64
    log_pdf: Callable[[Any, np.ndarray], np.ndarray]
    # (emissions, x (N,) + event, weights (N, K), **hyperparameters) -> new fields, in order
    m_step: Callable[..., tuple]
    # the family's m_step keywords: same keys in each (one compilation), defaults first
    hyperparameters: tuple[dict, ...]
    # (emissions, states (M,), x (M,) + event) -> None; asserts the draws fit the parameters
    check_samples: Callable[[Any, np.ndarray, np.ndarray], None]
    # a peer library's log-pdf (scipy), same signature as log_pdf; None when there is none
    peer_log_pdf: Optional[Callable[[Any, np.ndarray], np.ndarray]] = None
    # fields not indexed by state (a tied covariance, a number of trials)
    shared_fields: tuple[str, ...] = ()


# ---------------------------------------------------------------- shared oracles

def brute_force(initial_probs, transition_matrix, log_likelihoods):
    """log p(x), posteriors γ, Σ_t ξ_t, best path and its log-probability, by enumeration."""
    pi, A, ll = (np.asarray(a, np.float64) for a in
                 (initial_probs, transition_matrix, log_likelihoods))
    num_steps, num_states = ll.shape
    with np.errstate(divide="ignore"):
        log_pi, log_A = np.log(pi), np.log(A)
    paths = np.array(list(itertools.product(range(num_states), repeat=num_steps)))
    log_joint = log_pi[paths[:, 0]] + ll[np.arange(num_steps), paths].sum(axis=1)
    log_joint = log_joint + log_A[paths[:, :-1], paths[:, 1:]].sum(axis=1)
    log_evidence = np.logaddexp.reduce(log_joint)
    best = int(np.argmax(log_joint))
    gamma = np.zeros((num_steps, num_states))
    xi = np.zeros((num_states, num_states))
    if np.isfinite(log_evidence):
        weights = np.exp(log_joint - log_evidence)
        for t in range(num_steps):
            np.add.at(gamma[t], paths[:, t], weights)
            if t + 1 < num_steps:
                np.add.at(xi, (paths[:, t], paths[:, t + 1]), weights)
    return log_evidence, gamma, xi, paths[best], log_joint[best]


def random_hmm(rng, family: Family, num_states: int, dtype=np.float64,
               concentration: float = 1.0) -> hmm.HMM:
    """π and the rows of A from Dirichlet(concentration), emissions from the family."""
    pi = rng.dirichlet(np.ones(num_states))
    A = rng.dirichlet(np.full(num_states, concentration), size=num_states)
    emissions = family.random_emissions(rng, num_states, family.event_size, dtype)
    return hmm.HMM(jnp.asarray(pi, dtype), jnp.asarray(A, dtype), emissions)


def observations(rng, family: Family, leading_shape, dtype=np.float64) -> np.ndarray:
    return family.random_observations(rng, tuple(leading_shape), family.event_size, dtype)


def within_standard_errors(observed_counts, probs, total, sigmas=4.5) -> bool:
    """|count − n p| below a few binomial standard errors, entry by entry."""
    expected = total * probs
    spread = np.sqrt(total * probs * (1 - probs)) + 1e-9
    return bool(np.all(np.abs(observed_counts - expected) <= sigmas * spread))


def _has_mass(weights: np.ndarray) -> np.ndarray:
    return weights.sum(axis=0) > np.finfo(np.float64).eps


# ---------------------------------------------------------------- categorical

def _categorical(rng, num_states, num_symbols, dtype):
    return hmm.Categorical(jnp.asarray(rng.dirichlet(np.ones(num_symbols), size=num_states),
                                       dtype))


def _categorical_log_pdf(emissions, x):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(emissions.probs, np.float64))[:, np.asarray(x, int)].T


def _categorical_m_step(emissions, x, weights, *, pseudo_count):
    probs = np.asarray(emissions.probs, np.float64)
    counts = weights.T @ np.eye(probs.shape[1])[np.asarray(x, int)] + pseudo_count
    totals = counts.sum(axis=1, keepdims=True)
    keep = totals > np.finfo(np.float64).eps
    return (np.where(keep, counts / np.where(keep, totals, 1.0), probs),)


def _categorical_samples(emissions, states, x):
    probs = np.asarray(emissions.probs, np.float64)
    for k in range(len(probs)):
        emitted = np.bincount(x[states == k], minlength=probs.shape[1])
        assert within_standard_errors(emitted, probs[k], emitted.sum())
        assert np.all(emitted[probs[k] == 0] == 0)  # zero probabilities are never drawn


CATEGORICAL = Family(
    name="categorical", event_size=4,
    random_emissions=_categorical,
    random_observations=lambda rng, shape, num_symbols, dtype: rng.integers(0, num_symbols, shape),
    garbage=(-7, 99),
    log_pdf=_categorical_log_pdf,
    m_step=_categorical_m_step,
    hyperparameters=({"pseudo_count": 0.0}, {"pseudo_count": 0.5}),
    check_samples=_categorical_samples)


# ---------------------------------------------------------------- Gaussians

def _gaussian_log_pdf_rows(x, mean, covariance):
    diff = np.asarray(x, np.float64) - np.asarray(mean, np.float64)
    covariance = np.asarray(covariance, np.float64)
    solved = np.linalg.solve(covariance, diff.T).T
    _, log_det = np.linalg.slogdet(2 * np.pi * covariance)
    return -0.5 * (np.sum(diff * solved, axis=-1) + log_det)


def _weighted_moments(x, weights):
    """Per state: total weight (1 where there is none), weighted mean, deviations from it."""
    totals = weights.sum(axis=0)
    totals = np.where(totals > 0, totals, 1.0)  # states without mass are replaced afterwards
    means = (weights.T @ x) / totals[:, None]
    return totals, means, x[:, None, :] - means[None]


def _vector_observations(rng, shape, num_features, dtype):
    return rng.normal(size=shape + (num_features,)).astype(dtype)


def _mean_within_standard_errors(points, mean, variances):
    standard_error = np.sqrt(variances / len(points))
    assert np.all(np.abs(points.mean(axis=0) - mean) < 4.5 * standard_error)


def _gaussian(rng, num_states, num_features, dtype):
    factors = rng.normal(size=(num_states, num_features, num_features))
    covariances = factors @ factors.transpose(0, 2, 1) + 0.5 * np.eye(num_features)
    return hmm.Gaussian(jnp.asarray(rng.normal(size=(num_states, num_features)), dtype),
                        jnp.asarray(covariances, dtype))


def _gaussian_log_pdf(emissions, x):
    return np.stack([_gaussian_log_pdf_rows(x, m, c) for m, c in
                     zip(np.asarray(emissions.means), np.asarray(emissions.covariances))], axis=1)


def _gaussian_m_step(emissions, x, weights, *, min_covar):
    totals, means, diffs = _weighted_moments(np.asarray(x, np.float64), weights)
    covariances = np.einsum("tk,tkd,tke->kde", weights, diffs, diffs) / totals[:, None, None]
    values, vectors = np.linalg.eigh(covariances)
    floored = vectors @ (np.maximum(values, min_covar)[..., None] * np.swapaxes(vectors, 1, 2))
    keep = _has_mass(weights)
    return (np.where(keep[:, None], means, emissions.means),
            np.where(keep[:, None, None], floored, emissions.covariances))


def _gaussian_samples(emissions, states, x):
    means, covariances = np.asarray(emissions.means), np.asarray(emissions.covariances)
    for k in range(len(means)):
        points = x[states == k]
        _mean_within_standard_errors(points, means[k], np.diag(covariances[k]))
        variances = np.diag(covariances[k])
        # standard error of a sample covariance entry: √((Σ_ii Σ_jj + Σ_ij²) / n)
        spread = np.sqrt((np.outer(variances, variances) + covariances[k] ** 2) / len(points))
        assert np.all(np.abs(np.cov(points.T) - covariances[k]) < 4.5 * spread)


def _scipy_gaussian(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    return np.stack([stats.multivariate_normal(m, c).logpdf(x) for m, c in
                     zip(np.asarray(emissions.means), np.asarray(emissions.covariances))], axis=1)


GAUSSIAN = Family(
    name="gaussian", event_size=2,
    random_emissions=_gaussian,
    random_observations=_vector_observations,
    garbage=(np.nan, 1e30),
    log_pdf=_gaussian_log_pdf,
    m_step=_gaussian_m_step,
    hyperparameters=({"min_covar": 1e-3}, {"min_covar": 0.5}),
    check_samples=_gaussian_samples,
    peer_log_pdf=_scipy_gaussian)


def _diagonal(rng, num_states, num_features, dtype):
    return hmm.DiagonalGaussian(jnp.asarray(rng.normal(size=(num_states, num_features)), dtype),
                                jnp.asarray(rng.uniform(0.3, 2.0, size=(num_states, num_features)),
                                            dtype))


def _diagonal_log_pdf(emissions, x):
    return np.stack([_gaussian_log_pdf_rows(x, m, np.diag(v)) for m, v in
                     zip(np.asarray(emissions.means), np.asarray(emissions.variances))], axis=1)


def _diagonal_m_step(emissions, x, weights, *, min_covar):
    totals, means, diffs = _weighted_moments(np.asarray(x, np.float64), weights)
    variances = np.einsum("tk,tkd->kd", weights, diffs**2) / totals[:, None]
    keep = _has_mass(weights)[:, None]
    return (np.where(keep, means, emissions.means),
            np.where(keep, np.maximum(variances, min_covar), emissions.variances))


def _diagonal_samples(emissions, states, x):
    means, variances = np.asarray(emissions.means), np.asarray(emissions.variances)
    for k in range(len(means)):
        points = x[states == k]
        _mean_within_standard_errors(points, means[k], variances[k])
        # standard error of a sample variance: σ² √(2 / n)
        spread = variances[k] * np.sqrt(2.0 / len(points))
        assert np.all(np.abs(points.var(axis=0) - variances[k]) < 4.5 * spread)


def _scipy_diagonal(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    return np.stack([stats.norm(m, np.sqrt(v)).logpdf(x).sum(axis=1) for m, v in
                     zip(np.asarray(emissions.means), np.asarray(emissions.variances))], axis=1)


DIAGONAL_GAUSSIAN = Family(
    name="diagonal_gaussian", event_size=2,
    random_emissions=_diagonal,
    random_observations=_vector_observations,
    garbage=(np.nan, 1e30),
    log_pdf=_diagonal_log_pdf,
    m_step=_diagonal_m_step,
    hyperparameters=({"min_covar": 1e-3}, {"min_covar": 0.5}),
    check_samples=_diagonal_samples,
    peer_log_pdf=_scipy_diagonal)


# ---------------------------------------------------------------- Poisson

def _poisson(rng, num_states, num_features, dtype):
    return hmm.Poisson(jnp.asarray(rng.uniform(0.5, 4.0, size=(num_states, num_features)), dtype))


def _poisson_log_pdf(emissions, x):
    rates, x = np.asarray(emissions.rates, np.float64), np.asarray(x, np.float64)
    log_factorials = np.array([[math.lgamma(v + 1.0) for v in row] for row in x]).sum(axis=1)
    return x @ np.log(rates).T - rates.sum(axis=1)[None, :] - log_factorials[:, None]


def _poisson_m_step(emissions, x, weights, *, prior_shape, prior_rate):
    with np.errstate(invalid="ignore", divide="ignore"):  # states without mass are kept
        rates = (weights.T @ np.asarray(x, np.float64) + prior_shape - 1.0) / (
            weights.sum(axis=0)[:, None] + prior_rate)
    return (np.where(_has_mass(weights)[:, None], rates, emissions.rates),)


def _poisson_samples(emissions, states, x):
    rates = np.asarray(emissions.rates, np.float64)
    assert np.issubdtype(x.dtype, np.integer) and np.all(x >= 0)
    for k in range(len(rates)):
        points = x[states == k].astype(np.float64)
        _mean_within_standard_errors(points, rates[k], rates[k])
        # standard error of a sample variance of Poisson counts: √((λ + 2λ²) / n)
        spread = np.sqrt((rates[k] + 2 * rates[k] ** 2) / len(points))
        assert np.all(np.abs(points.var(axis=0) - rates[k]) < 4.5 * spread)


def _scipy_poisson(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    rates = np.asarray(emissions.rates, np.float64)
    return stats.poisson(rates[None]).logpmf(np.asarray(x)[:, None, :]).sum(axis=-1)


POISSON = Family(
    name="poisson", event_size=2,
    random_emissions=_poisson,
    random_observations=lambda rng, shape, num_features, dtype: rng.poisson(
        2.0, shape + (num_features,)),
    garbage=(-7, 10**6),
    log_pdf=_poisson_log_pdf,
    m_step=_poisson_m_step,
    hyperparameters=({"prior_shape": 1.0, "prior_rate": 0.0},
                     {"prior_shape": 2.5, "prior_rate": 0.5}),
    check_samples=_poisson_samples,
    peer_log_pdf=_scipy_poisson)


# ---------------------------------------------------------------- Bernoulli

def _bernoulli(rng, num_states, num_features, dtype):
    return hmm.Bernoulli(jnp.asarray(rng.uniform(0.1, 0.9, size=(num_states, num_features)),
                                     dtype))


def _bernoulli_log_pdf(emissions, x):
    probs, x = np.asarray(emissions.probs, np.float64), np.asarray(x, np.float64)
    return x @ np.log(probs).T + (1.0 - x) @ np.log1p(-probs).T


def _bernoulli_m_step(emissions, x, weights, *, pseudo_count):
    with np.errstate(invalid="ignore", divide="ignore"):  # states without mass are kept
        probs = (weights.T @ np.asarray(x, np.float64) + pseudo_count) / (
            weights.sum(axis=0)[:, None] + 2.0 * pseudo_count)
    return (np.where(_has_mass(weights)[:, None], probs, emissions.probs),)


def _bernoulli_samples(emissions, states, x):
    probs = np.asarray(emissions.probs, np.float64)
    assert set(np.unique(x)) <= {0, 1}
    for k in range(len(probs)):
        points = x[states == k]
        for d in range(probs.shape[1]):
            assert within_standard_errors(points[:, d].sum(), probs[k, d], len(points))


def _scipy_bernoulli(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    probs = np.asarray(emissions.probs, np.float64)
    return stats.bernoulli(probs[None]).logpmf(np.asarray(x)[:, None, :]).sum(axis=-1)


BERNOULLI = Family(
    name="bernoulli", event_size=3,
    random_emissions=_bernoulli,
    random_observations=lambda rng, shape, num_features, dtype: rng.integers(
        0, 2, shape + (num_features,)),
    garbage=(-7, 2),
    log_pdf=_bernoulli_log_pdf,
    m_step=_bernoulli_m_step,
    hyperparameters=({"pseudo_count": 0.0}, {"pseudo_count": 0.5}),
    check_samples=_bernoulli_samples,
    peer_log_pdf=_scipy_bernoulli)


# ---------------------------------------------------------------- spherical Gaussian

def _spherical(rng, num_states, num_features, dtype):
    return hmm.SphericalGaussian(
        jnp.asarray(rng.normal(size=(num_states, num_features)), dtype),
        jnp.asarray(rng.uniform(0.3, 2.0, size=num_states), dtype))


def _spherical_log_pdf(emissions, x):
    num_features = np.shape(emissions.means)[1]
    return np.stack([_gaussian_log_pdf_rows(x, m, v * np.eye(num_features)) for m, v in
                     zip(np.asarray(emissions.means), np.asarray(emissions.variances))], axis=1)


def _spherical_m_step(emissions, x, weights, *, min_covar):
    totals, means, diffs = _weighted_moments(np.asarray(x, np.float64), weights)
    variances = np.einsum("tk,tkd->k", weights, diffs**2) / totals / means.shape[1]
    keep = _has_mass(weights)
    return (np.where(keep[:, None], means, emissions.means),
            np.where(keep, np.maximum(variances, min_covar), emissions.variances))


def _spherical_samples(emissions, states, x):
    means, variances = np.asarray(emissions.means), np.asarray(emissions.variances)
    for k in range(len(means)):
        points = x[states == k]
        _mean_within_standard_errors(points, means[k], variances[k])
        spread = variances[k] * np.sqrt(2.0 / len(points))  # of each feature's sample variance
        assert np.all(np.abs(points.var(axis=0) - variances[k]) < 4.5 * spread)
        assert abs(np.corrcoef(points.T)[0, 1]) < 4.5 / np.sqrt(len(points))


def _scipy_spherical(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    return np.stack([stats.norm(m, np.sqrt(v)).logpdf(x).sum(axis=1) for m, v in
                     zip(np.asarray(emissions.means), np.asarray(emissions.variances))], axis=1)


SPHERICAL_GAUSSIAN = Family(
    name="spherical_gaussian", event_size=2,
    random_emissions=_spherical,
    random_observations=_vector_observations,
    garbage=(np.nan, 1e30),
    log_pdf=_spherical_log_pdf,
    m_step=_spherical_m_step,
    hyperparameters=({"min_covar": 1e-3}, {"min_covar": 0.5}),
    check_samples=_spherical_samples,
    peer_log_pdf=_scipy_spherical)


# ---------------------------------------------------------------- tied Gaussian

def _tied(rng, num_states, num_features, dtype):
    factor = rng.normal(size=(num_features, num_features))
    return hmm.TiedGaussian(jnp.asarray(rng.normal(size=(num_states, num_features)), dtype),
                            jnp.asarray(factor @ factor.T + 0.5 * np.eye(num_features), dtype))


def _tied_log_pdf(emissions, x):
    covariance = np.asarray(emissions.covariance)
    return np.stack([_gaussian_log_pdf_rows(x, m, covariance)
                     for m in np.asarray(emissions.means)], axis=1)


def _tied_m_step(emissions, x, weights, *, min_covar):
    totals, means, diffs = _weighted_moments(np.asarray(x, np.float64), weights)
    covariance = np.einsum("tk,tkd,tke->de", weights, diffs, diffs) / weights.sum()
    values, vectors = np.linalg.eigh(covariance)
    floored = vectors @ (np.maximum(values, min_covar)[:, None] * vectors.T)
    return (np.where(_has_mass(weights)[:, None], means, emissions.means), floored)


def _tied_samples(emissions, states, x):
    means, covariance = np.asarray(emissions.means), np.asarray(emissions.covariance)
    variances = np.diag(covariance)
    spread = np.sqrt((np.outer(variances, variances) + covariance**2) / len(x))
    for k in range(len(means)):
        _mean_within_standard_errors(x[states == k], means[k], variances)
    # the deviations from each state's mean pooled: one covariance
    deviations = x - means[states]
    assert np.all(np.abs(deviations.T @ deviations / len(x) - covariance) < 4.5 * spread)


def _scipy_tied(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    return np.stack([stats.multivariate_normal(m, np.asarray(emissions.covariance)).logpdf(x)
                     for m in np.asarray(emissions.means)], axis=1)


TIED_GAUSSIAN = Family(
    name="tied_gaussian", event_size=2,
    random_emissions=_tied,
    random_observations=_vector_observations,
    garbage=(np.nan, 1e30),
    log_pdf=_tied_log_pdf,
    m_step=_tied_m_step,
    hyperparameters=({"min_covar": 1e-3}, {"min_covar": 0.5}),
    check_samples=_tied_samples,
    peer_log_pdf=_scipy_tied,
    shared_fields=("covariance",))


# ---------------------------------------------------------------- multinomial

def _multinomial(rng, num_states, num_categories, dtype):
    return hmm.Multinomial(jnp.asarray(rng.dirichlet(np.ones(num_categories), size=num_states),
                                       dtype), jnp.asarray(5.0, dtype))


def _multinomial_observations(rng, shape, num_categories, dtype):
    """Counts whose number of trials varies from step to step (0 to 5)."""
    return rng.multinomial(rng.integers(0, 6, shape), np.full(num_categories, 1 / num_categories))


def _multinomial_log_pdf(emissions, x):
    probs, x = np.asarray(emissions.probs, np.float64), np.asarray(x, np.float64)
    log_factorial = np.vectorize(lambda v: math.lgamma(v + 1.0))
    coefficients = log_factorial(x.sum(axis=1)) - log_factorial(x).sum(axis=1)
    return coefficients[:, None] + x @ np.log(probs).T


def _multinomial_m_step(emissions, x, weights, *, pseudo_count):
    probs = np.asarray(emissions.probs, np.float64)
    counts = weights.T @ np.asarray(x, np.float64) + pseudo_count
    totals = counts.sum(axis=1, keepdims=True)
    keep = totals > np.finfo(np.float64).eps
    return np.where(keep, counts / np.where(keep, totals, 1.0), probs), emissions.num_trials


def _multinomial_samples(emissions, states, x):
    probs, trials = np.asarray(emissions.probs, np.float64), float(emissions.num_trials)
    assert np.issubdtype(x.dtype, np.integer) and np.all(x.sum(axis=1) == trials)
    for k in range(len(probs)):
        emitted = x[states == k].sum(axis=0)
        # each category's total over n draws of `trials` trials is Binomial(n · trials, p)
        assert within_standard_errors(emitted, probs[k], emitted.sum())


def _scipy_multinomial(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    x = np.asarray(x)
    return np.stack([stats.multinomial.logpmf(x, x.sum(axis=1), p)
                     for p in np.asarray(emissions.probs, np.float64)], axis=1)


MULTINOMIAL = Family(
    name="multinomial", event_size=3,
    random_emissions=_multinomial,
    random_observations=_multinomial_observations,
    garbage=(-7, 10**6),
    log_pdf=_multinomial_log_pdf,
    m_step=_multinomial_m_step,
    hyperparameters=({"pseudo_count": 0.0}, {"pseudo_count": 0.5}),
    check_samples=_multinomial_samples,
    peer_log_pdf=_scipy_multinomial,
    shared_fields=("num_trials",))


# ---------------------------------------------------------------- Gaussian mixtures

NUM_COMPONENTS = 2


def _full_covariances(emissions):
    """``(K, M, D, D)`` covariances of either mixture family, float64."""
    if hasattr(emissions, "covariances"):
        return np.asarray(emissions.covariances, np.float64)
    variances = np.asarray(emissions.variances, np.float64)
    return variances[..., :, None] * np.eye(variances.shape[-1])


def _mixture_log_terms(emissions, x):
    """``(N, K, M)``: log w_km + log N(x_t; μ_km, Σ_km)."""
    weights, means = np.asarray(emissions.weights), np.asarray(emissions.means)
    covariances = _full_covariances(emissions)
    num_states, num_components = weights.shape
    return np.stack([np.stack([np.log(weights[k, m])
                               + _gaussian_log_pdf_rows(x, means[k, m], covariances[k, m])
                               for m in range(num_components)], axis=1)
                     for k in range(num_states)], axis=1)


def _mixture_log_pdf(emissions, x):
    return np.logaddexp.reduce(_mixture_log_terms(emissions, np.asarray(x, np.float64)), axis=-1)


def _mixture_m_step(emissions, x, weights, *, min_covar, pseudo_count):
    """The exact M-step from the joint state-component posterior, about the new means."""
    x = np.asarray(x, np.float64)
    terms = _mixture_log_terms(emissions, x)
    joint = weights[:, :, None] * np.exp(terms - np.logaddexp.reduce(terms, axis=-1)[..., None])
    sums = joint.sum(axis=0)
    diagonal = not hasattr(emissions, "covariances")
    mixture_weights = np.array(emissions.weights, np.float64)
    means = np.array(emissions.means, np.float64)
    spreads = np.array(emissions.variances if diagonal else emissions.covariances, np.float64)
    num_states, num_components = sums.shape
    for k in range(num_states):
        if sums[k].sum() > np.finfo(np.float64).eps:
            mixture_weights[k] = (sums[k] + pseudo_count) / (sums[k].sum()
                                                             + num_components * pseudo_count)
        for m in range(num_components):
            if sums[k, m] <= np.finfo(np.float64).eps:
                continue
            means[k, m] = joint[:, k, m] @ x / sums[k, m]
            diffs = x - means[k, m]
            covariance = (joint[:, k, m, None] * diffs).T @ diffs / sums[k, m]
            if diagonal:
                spreads[k, m] = np.maximum(np.diag(covariance), min_covar)
            else:
                values, vectors = np.linalg.eigh(covariance)
                spreads[k, m] = vectors @ (np.maximum(values, min_covar)[:, None] * vectors.T)
    return mixture_weights, means, spreads


def _mixture_samples(emissions, states, x):
    """Each state's mean and covariance, Σ_m w (Σ_m + μ_m μ_mᵀ) − μ μᵀ, within a few
    standard errors (estimated from the draws' own fourth moments)."""
    weights, means = np.asarray(emissions.weights), np.asarray(emissions.means)
    covariances = _full_covariances(emissions)
    for k in range(len(weights)):
        points = x[states == k].astype(np.float64)
        mean = weights[k] @ means[k]
        second = np.einsum("m,mde->de", weights[k],
                           covariances[k] + np.einsum("md,me->mde", means[k], means[k]))
        covariance = second - np.outer(mean, mean)
        _mean_within_standard_errors(points, mean, np.diag(covariance))
        products = np.einsum("td,te->tde", points - mean, points - mean)
        spread = products.std(axis=0) / np.sqrt(len(points))
        assert np.all(np.abs(products.mean(axis=0) - covariance) < 4.5 * spread)


def _scipy_mixture(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    weights, means = np.asarray(emissions.weights), np.asarray(emissions.means)
    covariances = _full_covariances(emissions)
    return np.stack([special.logsumexp(
        [np.log(weights[k, m]) + stats.multivariate_normal(means[k, m], covariances[k, m]).logpdf(x)
         for m in range(weights.shape[1])], axis=0) for k in range(len(weights))], axis=1)


def _mixture_parameters(rng, num_states, num_features):
    weights = rng.dirichlet(np.full(NUM_COMPONENTS, 2.0), size=num_states)
    means = 1.5 * rng.normal(size=(num_states, NUM_COMPONENTS, num_features))
    return weights, means


def _gaussian_mixture(rng, num_states, num_features, dtype):
    weights, means = _mixture_parameters(rng, num_states, num_features)
    factors = rng.normal(size=(num_states, NUM_COMPONENTS, num_features, num_features))
    covariances = 0.5 * factors @ np.swapaxes(factors, -1, -2) + 0.3 * np.eye(num_features)
    return hmm.GaussianMixture(*(jnp.asarray(a, dtype) for a in (weights, means, covariances)))


def _diagonal_gaussian_mixture(rng, num_states, num_features, dtype):
    weights, means = _mixture_parameters(rng, num_states, num_features)
    variances = rng.uniform(0.3, 1.5, size=means.shape)
    return hmm.DiagonalGaussianMixture(*(jnp.asarray(a, dtype) for a in (weights, means,
                                                                          variances)))


_MIXTURE = dict(event_size=2, random_observations=_vector_observations,
                garbage=(np.nan, 1e30), log_pdf=_mixture_log_pdf, m_step=_mixture_m_step,
                hyperparameters=({"min_covar": 1e-3, "pseudo_count": 0.0},
                                 {"min_covar": 0.5, "pseudo_count": 0.5}),
                check_samples=_mixture_samples, peer_log_pdf=_scipy_mixture)
GAUSSIAN_MIXTURE = Family(name="gaussian_mixture", random_emissions=_gaussian_mixture,
                          **_MIXTURE)
DIAGONAL_GAUSSIAN_MIXTURE = Family(name="diagonal_gaussian_mixture",
                                   random_emissions=_diagonal_gaussian_mixture, **_MIXTURE)


# ---------------------------------------------------------------- Gamma

def _gamma(rng, num_states, num_features, dtype):
    return hmm.Gamma(jnp.asarray(rng.uniform(1.0, 5.0, size=(num_states, num_features)), dtype),
                     jnp.asarray(rng.uniform(0.5, 3.0, size=(num_states, num_features)), dtype))


def _gamma_log_pdf(emissions, x):
    a, b = (np.asarray(v, np.float64) for v in (emissions.concentrations, emissions.rates))
    x = np.asarray(x, np.float64)
    log_gamma = np.vectorize(math.lgamma)
    return ((a * np.log(b) - log_gamma(a)).sum(axis=1)[None, :] + np.log(x) @ (a - 1.0).T
            - x @ b.T)


def _gamma_m_step(emissions, x, weights):
    """Weighted maximum likelihood, the concentration by bracketing root-finding."""
    optimize = pytest.importorskip("scipy.optimize")
    special = pytest.importorskip("scipy.special")
    x = np.asarray(x, np.float64)
    a = np.array(emissions.concentrations, np.float64)
    b = np.array(emissions.rates, np.float64)
    for k in range(len(a)):
        total = weights[:, k].sum()
        if total <= np.finfo(np.float64).eps:
            continue
        mean, mean_log = weights[:, k] @ x / total, weights[:, k] @ np.log(x) / total
        for d in range(a.shape[1]):
            gap = np.log(mean[d]) - mean_log[d]
            a[k, d] = optimize.brentq(lambda c: np.log(c) - special.digamma(c) - gap,
                                      1e-8, 1e8, xtol=1e-14, rtol=1e-14)
            b[k, d] = a[k, d] / mean[d]
    return a, b


def _gamma_samples(emissions, states, x):
    a, b = (np.asarray(v, np.float64) for v in (emissions.concentrations, emissions.rates))
    assert np.all(x > 0)
    for k in range(len(a)):
        points = x[states == k].astype(np.float64)
        variances = a[k] / b[k] ** 2
        _mean_within_standard_errors(points, a[k] / b[k], variances)
        # standard error of a sample variance: σ² √((2 + 6 / a) / n) (excess kurtosis 6 / a)
        spread = variances * np.sqrt((2.0 + 6.0 / a[k]) / len(points))
        assert np.all(np.abs(points.var(axis=0) - variances) < 4.5 * spread)


def _scipy_gamma(emissions, x):
    stats = pytest.importorskip("scipy.stats")
    a, b = (np.asarray(v, np.float64) for v in (emissions.concentrations, emissions.rates))
    return stats.gamma(a[None], scale=1.0 / b[None]).logpdf(np.asarray(x)[:, None, :]).sum(-1)


GAMMA = Family(
    name="gamma", event_size=2,
    random_emissions=_gamma,
    random_observations=lambda rng, shape, num_features, dtype: rng.gamma(
        2.0, 1.0, shape + (num_features,)).astype(dtype),
    garbage=(np.nan, -5.0),
    log_pdf=_gamma_log_pdf,
    m_step=_gamma_m_step,
    hyperparameters=({}, {}),
    check_samples=_gamma_samples,
    peer_log_pdf=_scipy_gamma)


FAMILIES = [CATEGORICAL, GAUSSIAN, DIAGONAL_GAUSSIAN]
FAMILIES += [POISSON, BERNOULLI, SPHERICAL_GAUSSIAN, TIED_GAUSSIAN, MULTINOMIAL,
             GAUSSIAN_MIXTURE, DIAGONAL_GAUSSIAN_MIXTURE, GAMMA]
BY_NAME = {family.name: family for family in FAMILIES}

#: One family per kind of observation (symbols, real vectors, counts), for the tests of code
#: that meets the emissions only through the (T, K) log-likelihoods and the padding
#: replacement (the parallel siblings, online filtering, prediction): every family's own
#: members are tested over FAMILIES, so running those paths over all of them adds nothing.
REPRESENTATIVE = [BY_NAME[name] for name in ("categorical", "gaussian", "poisson")]


def parametrize_families(argname: str = "family", families=None):
    """``pytest.mark.parametrize`` over the families, with their names as test ids."""
    families = FAMILIES if families is None else families
    return pytest.mark.parametrize(argname, families, ids=[f.name for f in families])
