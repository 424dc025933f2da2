"""MAP-EM: the log priors of π, A and every emission family, the M-steps as MAP estimates,
and Baum–Welch's convergence judged on ℓ + log p(θ).

Oracles: SciPy's densities (dirichlet, beta, gamma) in float64 for the log priors, compared as
differences between two parameter settings (the library drops the constants); for the
M-steps an independent NumPy objective (the registry's log-pdfs weighted by the posteriors,
plus the SciPy log prior) that no perturbation of the M-step's output may increase; a
manual loop of ``e_step``/``m_step`` on the sunspot counts; dynamax's ``fit_em`` with the same
priors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_families import (BY_NAME, _mixture_log_terms, observations, parametrize_families,
                           random_hmm)
from functional_dl import hmm
from functional_dl.datasets import load_sunspots

stats = pytest.importorskip("scipy.stats")

K = 2
NUM_STEPS = 40
STEP = 1e-3  # perturbation size: its second-order loss (~1e-5) dwarfs float64 rounding


def _f64(x):
    return np.asarray(x, np.float64)


# ---------------------------------------------------------------- the SciPy priors

def _floor_log_indicator(emissions, min_covar) -> float:
    """0 where every variance (eigenvalue) respects the floor, −inf elsewhere."""
    if hasattr(emissions, "covariances") or hasattr(emissions, "covariance"):
        covariances = getattr(emissions, "covariances", None)
        spread = np.linalg.eigvalsh(_f64(emissions.covariance if covariances is None
                                         else covariances))
    else:
        spread = _f64(emissions.variances)
    floor = _f64(min_covar)
    if floor.ndim == 1:  # one floor per state
        floor = floor.reshape((-1,) + (1,) * (spread.ndim - 1))
    return 0.0 if np.all(spread >= floor * (1 - 1e-9)) else -np.inf


def scipy_log_prior(emissions, hyperparameters) -> float:
    """log p(θ) with its constants, from SciPy's densities (−inf outside a floor's set)."""
    total = 0.0
    if "pseudo_count" in hyperparameters:
        if isinstance(emissions, hmm.Bernoulli):
            probs = _f64(emissions.probs)
            alpha = np.broadcast_to(hyperparameters["pseudo_count"], probs.shape)
            total += stats.beta.logpdf(probs, alpha + 1, alpha + 1).sum()
        else:
            rows = _f64(emissions.weights if hasattr(emissions, "weights") else emissions.probs)
            alpha = np.broadcast_to(hyperparameters["pseudo_count"], rows.shape)
            total += sum(stats.dirichlet.logpdf(row, a + 1) for row, a in zip(rows, alpha))
    if "prior_shape" in hyperparameters:
        rates = _f64(emissions.rates)
        shape, rate = (np.broadcast_to(hyperparameters[name], rates.shape)
                       for name in ("prior_shape", "prior_rate"))
        if not (np.all(shape == 1) and np.all(rate == 0)):  # else flat (improper)
            total += stats.gamma.logpdf(rates, shape, scale=1 / rate).sum()
    if "min_covar" in hyperparameters:
        total += _floor_log_indicator(emissions, hyperparameters["min_covar"])
    return total


def prior_settings(family, emissions, rng, *, with_floors=False) -> list[dict]:
    """The registry's settings of the family with scalar priors, and a per-entry variant of
    its pseudo-counts or Gamma parameters; floors kept at the default's (``with_floors``:
    the registry's larger floor too)."""
    default, other = family.hyperparameters
    scalar = dict(other)
    if "min_covar" in scalar and not with_floors:
        scalar["min_covar"] = default["min_covar"]
    per_entry = dict(scalar)
    if "pseudo_count" in per_entry:
        rows = emissions.weights if hasattr(emissions, "weights") else emissions.probs
        per_entry["pseudo_count"] = rng.uniform(0.0, 2.0, np.shape(rows))
    if "prior_shape" in per_entry:
        shape = np.shape(emissions.rates)
        per_entry["prior_shape"] = rng.uniform(1.0, 3.0, shape)
        per_entry["prior_rate"] = rng.uniform(0.1, 1.0, shape[:1] + (1,))  # one per state
    return [scalar, per_entry]


@parametrize_families()
def test_log_prior_differences_equal_scipy_densities(family):
    """``log_prior(θ₁) − log_prior(θ₂)`` is SciPy's ``log p(θ₁) − log p(θ₂)``, with scalar and
    per-entry priors, eagerly and jitted; it is 0 at the maximum-likelihood settings."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        first, second = (family.random_emissions(rng, K, family.event_size, np.float64)
                         for _ in range(2))
        jitted = jax.jit(lambda emissions, h: emissions.log_prior(**h))
        for hyperparameters in prior_settings(family, first, rng):
            expected = (scipy_log_prior(first, hyperparameters)
                        - scipy_log_prior(second, hyperparameters))
            ours = first.log_prior(**hyperparameters) - second.log_prior(**hyperparameters)
            again = jitted(first, hyperparameters) - jitted(second, hyperparameters)
            np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(again, expected, rtol=1e-10, atol=1e-10)
        assert float(first.log_prior(**family.hyperparameters[0])) == 0.0
        assert float(first.log_prior()) == 0.0


# ---------------------------------------------------------------- the M-steps are MAP

def _perturbed(family, emissions, directions, step):
    """``emissions`` moved by ``step`` along ``directions``, staying a valid parameter set:
    probability rows on the simplex, positive values positive, covariances symmetric."""
    fields = {}
    for name, value in emissions._asdict().items():
        if name not in directions:
            fields[name] = value
            continue
        v, d = _f64(value), step * directions[name]
        if name in ("probs", "weights") and family.name != "bernoulli":
            moved = v * np.exp(d)
            moved = moved / moved.sum(axis=-1, keepdims=True)
        elif name == "probs":  # independent probabilities, on the logit scale
            moved = 1 / (1 + np.exp(-(np.log(v) - np.log1p(-v) + d)))
        elif name in ("rates", "concentrations", "variances"):
            moved = v * np.exp(d)
        elif name == "means":
            moved = v + d
        else:  # covariances
            moved = v + 0.5 * (d + np.swapaxes(d, -1, -2))
        fields[name] = jnp.asarray(moved)
    return type(emissions)(**fields)


def _directions(family, emissions, rng) -> dict:
    known = ("probs", "weights", "rates", "concentrations", "variances", "means",
             "covariances", "covariance")
    directions = {}
    for name, value in emissions._asdict().items():
        if value is None or name == "num_trials":  # not a fitted parameter
            continue
        if name not in known:
            pytest.fail(f"{family.name}.{name}: say in _perturbed how to move it validly")
        directions[name] = rng.normal(size=np.shape(value))
    return directions


def expected_complete_log_likelihood(start, emissions, family, x, weights) -> float:
    """``Σ_t Σ_k γ_t(k) log b_k(x_t)``; for mixtures ``Σ_t Σ_km γ_t(k) r_t(k, m) [log w_km +
    log N(x_t; μ_km, Σ_km)]`` with the responsibilities r of ``start`` (NumPy float64)."""
    if hasattr(start, "weights"):
        terms = _mixture_log_terms(start, x)
        responsibilities = np.exp(terms - np.logaddexp.reduce(terms, axis=-1)[..., None])
        return float(np.sum(weights[:, :, None] * responsibilities
                            * _mixture_log_terms(emissions, x)))
    return float(np.sum(weights * family.log_pdf(emissions, x)))


@parametrize_families()
def test_m_step_maximises_expected_complete_log_likelihood_plus_log_prior(family):
    """At every setting (maximum likelihood, scalar and per-entry priors, an active floor) no
    move of the M-step's output, either way along four random directions, raises the NumPy
    objective Σ γ log b + log p(θ)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        start = family.random_emissions(rng, K, family.event_size, np.float64)
        x = np.asarray(observations(rng, family, (NUM_STEPS,)))
        weights = rng.uniform(0.05, 1.0, (NUM_STEPS, K))
        suff_stats = start.sufficient_stats(jnp.asarray(x), jnp.asarray(weights))
        settings = [family.hyperparameters[0]] + prior_settings(family, start, rng,
                                                               with_floors=True)
        for hyperparameters in settings:
            best = start.m_step(suff_stats, **hyperparameters)

            def objective(emissions):
                return (expected_complete_log_likelihood(start, emissions, family, x, weights)
                        + scipy_log_prior(emissions, hyperparameters))

            at_best = objective(best)
            assert np.isfinite(at_best)
            for _ in range(4):
                directions = _directions(family, best, rng)
                for step in (STEP, -STEP):
                    moved = objective(_perturbed(family, best, directions, step))
                    assert moved <= at_best + 1e-10 * abs(at_best), (hyperparameters, step)


def _dirichlet_rows(probs, alpha) -> float:
    probs = np.atleast_2d(_f64(probs))
    alpha = np.broadcast_to(alpha, probs.shape)
    return float(sum(stats.dirichlet.logpdf(row, a + 1) for row, a in zip(probs, alpha)))


def test_initial_and_transition_m_step_is_the_dirichlet_map_of_log_prior():
    """π and A: ``hmm.log_prior`` differences are SciPy's Dirichlet(α + 1) ones (only the
    parts in ``update``; the emissions' own term added), and ``m_step``'s π, A maximise
    ``Σ n log π + Σ n log A + log p(π, A)`` (moves along the simplex never raise it)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        categorical = BY_NAME["categorical"]
        first, second = (random_hmm(rng, categorical, 3) for _ in range(2))
        n_pi, n_A = rng.uniform(0.0, 3.0, 3), rng.uniform(0.0, 3.0, (3, 3))
        suff_stats = hmm.SufficientStats(jnp.asarray(n_pi), jnp.asarray(n_A), None)
        parts = {"initial", "transition"}
        for alpha_pi, alpha_A in ((0.5, 0.5), (rng.uniform(0, 2, 3), rng.uniform(0, 2, (3, 3)))):
            def scipy_prior(model, update=parts):
                return (_dirichlet_rows(model.initial_probs, alpha_pi) * ("initial" in update)
                        + _dirichlet_rows(model.transition_matrix, alpha_A)
                        * ("transition" in update))

            for update in (parts, {"initial"}, {"transition"}):
                ours = (hmm.log_prior(first, (alpha_pi, alpha_A), update=update)
                        - hmm.log_prior(second, (alpha_pi, alpha_A), update=update))
                np.testing.assert_allclose(ours, scipy_prior(first, update)
                                           - scipy_prior(second, update), rtol=1e-10)
            best = hmm.m_step(first, suff_stats, (alpha_pi, alpha_A), update=parts)

            def objective(pi, A):
                model = hmm.HMM(pi, A, None)
                return n_pi @ np.log(pi) + np.sum(n_A * np.log(A)) + scipy_prior(model)

            at_best = objective(_f64(best.initial_probs), _f64(best.transition_matrix))
            for _ in range(4):
                d_pi, d_A = rng.normal(size=3), rng.normal(size=(3, 3))
                for step in (STEP, -STEP):
                    pi = _f64(best.initial_probs) * np.exp(step * d_pi)
                    A = _f64(best.transition_matrix) * np.exp(step * d_A)
                    moved = objective(pi / pi.sum(), A / A.sum(axis=1, keepdims=True))
                    assert moved <= at_best + 1e-10 * abs(at_best)
        emission_prior = {"pseudo_count": 0.5}
        np.testing.assert_allclose(hmm.log_prior(first, 0.0, emission_prior),
                                   first.emissions.log_prior(**emission_prior), rtol=1e-12)
        assert float(hmm.log_prior(first)) == 0.0


# ---------------------------------------------------------------- convergence on the sunspots

#: dynamax's default priors in our terms: Dirichlet(1.1) rows, Gamma(1.1, 0.1) rates
PRIORS = dict(pseudo_count=0.1, emission_hyperparameters={"prior_shape": 1.1, "prior_rate": 0.1})
NUM_STATES, NUM_RESTARTS, NUM_ITERATIONS = 3, 10, 25


def sunspot_counts() -> np.ndarray:
    return np.rint(load_sunspots(dtype=np.float64).values).astype(np.int64)[:, None]


@pytest.fixture(scope="module")
def sunspot_em():
    """MAP-EM by hand from the 10 starts of ``hmm.fit(jax.random.key(0), ...)``: ``e_step``
    and ``m_step`` alternately (vmapped over the restarts), NUM_ITERATIONS + 1 E-steps.

    Returns the counts, the starts, ℓ of every iterate (NUM_ITERATIONS + 1, R) and the
    iterates themselves (NumPy float64).
    """
    with jax.enable_x64(True):
        x = jnp.asarray(sunspot_counts())
        starts = hmm.random_starts(jax.random.key(0), x, num_states=NUM_STATES,
                                   emissions=hmm.Poisson, num_restarts=NUM_RESTARTS)
        @jax.jit
        @jax.vmap
        def em_step(model):
            log_lik, suff_stats = hmm.e_step(model, x[None])
            return log_lik, hmm.m_step(model, suff_stats, PRIORS["pseudo_count"],
                                       PRIORS["emission_hyperparameters"])

        models, log_liks, iterates = starts, [], []
        for _ in range(NUM_ITERATIONS + 1):
            iterates.append(jax.tree.map(_f64, models))
            log_lik, models = em_step(models)
            log_liks.append(_f64(log_lik))
    return np.asarray(x), jax.tree.map(_f64, starts), np.array(log_liks), iterates


def scipy_sunspot_log_prior(model) -> float:
    """Dirichlet(1.1) π and rows of A, Gamma(shape 1.1, rate 0.1) rates, with constants."""
    return (stats.dirichlet.logpdf(model.initial_probs, np.full(NUM_STATES, 1.1))
            + sum(stats.dirichlet.logpdf(row, np.full(NUM_STATES, 1.1))
                  for row in model.transition_matrix)
            + stats.gamma.logpdf(model.emissions.rates, 1.1, scale=10.0).sum())


def test_map_objective_never_decreases_while_the_log_likelihood_may(sunspot_em):
    """ℓ + log p(θ) (SciPy's prior) rises at every iteration of every restart; ℓ alone falls
    by more than 1e-3 in some (the old criterion stopped those restarts there)."""
    _, _, log_liks, iterates = sunspot_em
    objective = log_liks + np.array([[scipy_sunspot_log_prior(jax.tree.map(lambda l: l[r], it))
                                      for r in range(NUM_RESTARTS)] for it in iterates])
    assert np.all(np.diff(objective, axis=0) >= -1e-12 * np.abs(objective[1:]))
    assert np.min(np.diff(log_liks, axis=0)) < -1e-3


def test_with_tol_zero_and_priors_em_runs_every_iteration_on_the_sunspots(sunspot_em):
    """``hmm.fit(tol=0)`` with dynamax's priors runs all max_iter iterations of every restart
    (as dynamax's ``fit_em`` does); its history is ℓ of the manual loop's iterates and its
    models are the manual loop's last ones."""
    x, _, log_liks, iterates = sunspot_em
    with jax.enable_x64(True):
        result = hmm.fit(jax.random.key(0), jnp.asarray(x), num_states=NUM_STATES,
                         emissions=hmm.Poisson, num_restarts=NUM_RESTARTS,
                         max_iter=NUM_ITERATIONS, tol=0.0, **PRIORS)
    restarts = result.restarts
    assert restarts.num_iterations.tolist() == [NUM_ITERATIONS] * NUM_RESTARTS
    assert np.all(np.asarray(restarts.status) == hmm.EMStatus.MAX_ITERATIONS)
    np.testing.assert_allclose(restarts.history, log_liks[:NUM_ITERATIONS].T, rtol=1e-12)
    np.testing.assert_allclose(restarts.log_likelihood, log_liks[NUM_ITERATIONS], rtol=1e-12)
    for leaf, expected in zip(jax.tree.leaves(restarts.model),
                              jax.tree.leaves(iterates[NUM_ITERATIONS]), strict=True):
        np.testing.assert_allclose(leaf, expected, rtol=1e-10, atol=1e-14)


def test_one_start_equals_dynamax_fit_em_with_the_same_priors(sunspot_em):
    """From the start whose ℓ falls most, dynamax's ``PoissonHMM.fit_em`` (its default priors)
    and ``fit_from`` with the same priors reach the same model; dynamax's per-iteration
    objective (its ``log_prior`` + ℓ) rises as ℓ + ``hmm.log_prior`` does."""
    dynamax_hmm = pytest.importorskip("dynamax.hidden_markov_model")
    x, starts, log_liks, iterates = sunspot_em
    restart = int(np.argmin(np.diff(log_liks, axis=0).min(axis=0)))
    with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
        start = jax.tree.map(lambda leaf: jnp.asarray(leaf[restart]), starts)
        peer = dynamax_hmm.PoissonHMM(NUM_STATES, 1)
        params, props = peer.initialize(initial_probs=start.initial_probs,
                                        transition_matrix=start.transition_matrix,
                                        emission_rates=start.emissions.rates)
        params, log_probs = peer.fit_em(params, props, jnp.asarray(x, jnp.float64),
                                        num_iters=NUM_ITERATIONS, verbose=False)
        ours = hmm.fit_from(start, jnp.asarray(x), max_iter=NUM_ITERATIONS, tol=0.0, **PRIORS)
        objective = [log_liks[i, restart] + float(hmm.log_prior(
            jax.tree.map(lambda leaf: jnp.asarray(leaf[restart]), iterate),
            PRIORS["pseudo_count"], PRIORS["emission_hyperparameters"]))
            for i, iterate in enumerate(iterates[:NUM_ITERATIONS])]
    for theirs, mine in ((params.initial.probs, ours.model.initial_probs),
                         (params.transitions.transition_matrix, ours.model.transition_matrix),
                         (params.emissions.rates, ours.model.emissions.rates)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.diff(objective), np.diff(_f64(log_probs)), atol=1e-8)


def test_a_parameter_held_at_the_prior_boundary_does_not_stop_em():
    """State 2 is unreachable (π_2 = 0, no transition into it) with rate 0 under a Gamma(2, 1)
    prior: log p(θ) = −inf at every iterate, and the loop compares log-likelihoods instead
    (−inf − (−inf) is not a lack of progress): it runs max_iter iterations."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.poisson(np.where(rng.random(120) < 0.5, 1.0, 5.0))[:, None])
        model = hmm.HMM(jnp.array([0.6, 0.4, 0.0]),
                        jnp.array([[0.7, 0.3, 0.0], [0.4, 0.6, 0.0], [0.3, 0.3, 0.4]]),
                        hmm.Poisson(jnp.array([[2.0], [3.0], [0.0]])))
        prior = {"prior_shape": 2.0, "prior_rate": 1.0}
        result = hmm.fit_from(model, x, max_iter=8, tol=0.0, emission_hyperparameters=prior)
        assert int(result.num_iterations) == 8
        assert hmm.EMStatus(int(result.status)) is hmm.EMStatus.MAX_ITERATIONS
        assert float(result.model.emissions.rates[2, 0]) == 0.0
        assert float(hmm.log_prior(result.model, 0.0, prior)) == -np.inf
        assert np.all(np.diff(np.asarray(result.history)) > 0)
