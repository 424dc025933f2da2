"""Fitting from scratch: the padding helper, random starts, restarts in one program against
separate Baum–Welch runs, hmmlearn's fit from the same start, its parameter counts, AIC and
BIC, and the bad input of ``hmm.fit``.

Oracles: NumPy slicing (padding), separate ``fit_from`` runs (restarts), hmmlearn (EM
trajectory, score, aic, bic), hand counts of free parameters, k-means' defining property.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_families import observations, parametrize_families
from functional_dl import hmm

LENGTHS = [7, 4, 9]  # hmmlearn's concatenated layout, N = 20
MAX_ITER = 8


def gaussian_data(rng, num_features=2):
    """Two well separated clusters, 20 steps in hmmlearn's concatenated layout."""
    centres = np.array([[0.0, 0.0], [4.0, -3.0]])[:, :num_features]
    labels = rng.integers(0, 2, sum(LENGTHS))
    return centres[labels] + rng.normal(size=(sum(LENGTHS), num_features))


def symbol_data(rng):
    return rng.integers(0, 3, sum(LENGTHS))


def test_pad_sequences_slices_the_concatenated_layout():
    x = np.arange(40.0).reshape(20, 2)
    padded, lengths = hmm.pad_sequences(x, LENGTHS)
    assert padded.shape == (3, 9, 2)
    np.testing.assert_array_equal(lengths, LENGTHS)
    starts = np.cumsum([0] + LENGTHS[:-1])
    for row, (start, length) in enumerate(zip(starts, LENGTHS)):
        np.testing.assert_array_equal(padded[row, :length], x[start:start + length])
        np.testing.assert_array_equal(padded[row, length:], 0.0)


@pytest.mark.parametrize("lengths, match", [
    ([7, 4, 8], "sum to N = 20"),
    ([[7, 4, 9]], r"shape \(S,\)"),
    ([7, 0, 13], "positive"),
])
def test_pad_sequences_says_which_layout_it_expects(lengths, match):
    with pytest.raises(ValueError, match=match) as error:
        hmm.pad_sequences(np.zeros((20, 2)), lengths)
    assert "concatenated layout" in str(error.value)


def test_fit_reports_the_layouts_for_lengths_of_the_wrong_shape():
    x = np.zeros((3, 9, 2))
    with pytest.raises(ValueError, match="concatenated layout"):
        hmm.fit(jax.random.key(0), x, [9, 9], num_states=2, num_restarts=1)
    with pytest.raises(ValueError, match="sum to N = 20"):
        hmm.fit(jax.random.key(0), np.zeros((20, 2)), [9, 9], num_states=2, num_restarts=1)


def test_kmeans_centres_are_the_means_of_their_nearest_points_and_ignore_padding():
    """After Lloyd's iterations have converged each centre is the mean of the points nearest
    to it; points of weight 0 (far away) change nothing."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        points = np.concatenate([rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 6.0])
        padded = np.concatenate([points, np.full((5, 2), 1e6)])
        weights = np.r_[np.ones(60), np.zeros(5)]
        centres = np.asarray(hmm.initialization.kmeans(jax.random.key(1), jnp.asarray(padded),
                                                       jnp.asarray(weights), 2,
                                                       num_iterations=20))
        nearest = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        for k in range(2):
            np.testing.assert_allclose(centres[k], points[nearest == k].mean(axis=0), rtol=1e-12)
        assert sorted(np.bincount(nearest).tolist()) == [30, 30]


def test_random_starts_follow_hmmlearn_initialisation():
    """Rows of π and A on the simplex, different per restart; Gaussian covariances are the
    data covariance + min_covar·I (np.cov, as hmmlearn); categorical V = max symbol + 1."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = gaussian_data(rng)
        starts = hmm.random_starts(jax.random.key(0), x, LENGTHS, num_states=2, num_restarts=3)
        assert starts.transition_matrix.shape == (3, 2, 2)
        np.testing.assert_allclose(starts.transition_matrix.sum(-1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(starts.initial_probs.sum(-1), 1.0, rtol=1e-12)
        assert not np.allclose(starts.initial_probs[0], starts.initial_probs[1])
        expected = np.cov(x.T) + 1e-3 * np.eye(2)
        np.testing.assert_allclose(starts.emissions.covariances,
                                   np.broadcast_to(expected, (3, 2, 2, 2)), rtol=1e-12)
        symbols = hmm.random_starts(jax.random.key(0), symbol_data(rng), LENGTHS, num_states=2,
                                    emissions=hmm.Categorical, num_restarts=3)
        assert symbols.emissions.probs.shape == (3, 2, 3)
        np.testing.assert_allclose(symbols.emissions.probs.sum(-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("family", [hmm.Gaussian, hmm.Categorical], ids=lambda f: f.__name__)
def test_fit_is_the_best_of_separate_runs_from_the_same_starts(family):
    """``fit`` (all restarts in one program) equals ``fit_from`` run from each start of
    ``random_starts`` with the same key, keeps the best one, and its log-likelihood is the
    returned model's own score."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        x = symbol_data(rng) if family is hmm.Categorical else gaussian_data(rng)
        key = jax.random.key(3)
        result = hmm.fit(key, x, LENGTHS, num_states=2, emissions=family, num_restarts=3,
                         max_iter=MAX_ITER)
        starts = hmm.random_starts(key, x, LENGTHS, num_states=2, emissions=family,
                                   num_restarts=3)
        scores = []
        for restart in range(3):
            start = jax.tree.map(lambda leaf: leaf[restart], starts)
            single = hmm.fit_from(start, x, LENGTHS, max_iter=MAX_ITER)
            scores.append(float(single.log_likelihood))
            for batched, leaf in zip(jax.tree.leaves(result.restarts.model),
                                     jax.tree.leaves(single.model), strict=True):
                np.testing.assert_allclose(batched[restart], leaf, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(result.restarts.history[restart], single.history,
                                       rtol=1e-10)
        assert int(result.best_restart) == int(np.argmax(scores))
        np.testing.assert_allclose(result.log_likelihood, max(scores), rtol=1e-10)
        np.testing.assert_allclose(result.log_likelihood, hmm.score(result.model, x, LENGTHS),
                                   rtol=1e-10)
        padded, lengths = hmm.pad_sequences(x, LENGTHS)  # the padded layout: the same fit
        again = hmm.fit(key, padded, lengths, num_states=2, emissions=family, num_restarts=3,
                        max_iter=MAX_ITER)
        np.testing.assert_allclose(again.log_likelihood, result.log_likelihood, rtol=1e-12)


def _hmmlearn_model(module, model, **settings):
    """An hmmlearn model holding ``model``'s parameters, fitted from them (init_params="")."""
    pi, A = np.asarray(model.initial_probs), np.asarray(model.transition_matrix)
    emissions = model.emissions
    if isinstance(emissions, hmm.Categorical):
        reference = module.CategoricalHMM(n_components=len(pi), init_params="",
                                          implementation="scaling", **settings)
        reference.n_features = emissions.probs.shape[1]
        reference.emissionprob_ = np.asarray(emissions.probs)
    else:
        diagonal = isinstance(emissions, hmm.DiagonalGaussian)
        reference = module.GaussianHMM(n_components=len(pi), init_params="",
                                       covariance_type="diag" if diagonal else "full",
                                       covars_prior=0.0, implementation="scaling", **settings)
        reference.n_features = emissions.means.shape[1]
        reference.means_ = np.asarray(emissions.means)
        reference.covars_ = np.asarray(emissions.variances if diagonal
                                       else emissions.covariances)
    reference.startprob_, reference.transmat_ = pi, A
    return reference


@pytest.mark.parametrize("family", [hmm.Gaussian, hmm.DiagonalGaussian, hmm.Categorical],
                         ids=lambda f: f.__name__)
def test_em_from_a_random_start_matches_hmmlearn(family):
    """From one of ``random_starts``: hmmlearn's fit with ``n_iter=MAX_ITER`` gives the same
    model, the same per-iteration log-likelihoods and, for the returned model, the same
    score; its aic and bic equal ours."""
    hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        x = symbol_data(rng) if family is hmm.Categorical else gaussian_data(rng)
        starts = hmm.random_starts(jax.random.key(5), x, LENGTHS, num_states=2,
                                   emissions=family, num_restarts=3)  # the shapes above
        start = jax.tree.map(lambda leaf: leaf[0], starts)
        ours = hmm.fit_from(start, x, LENGTHS, max_iter=MAX_ITER, tol=0.0,
                            emission_hyperparameters=None if family is hmm.Categorical
                            else {"min_covar": 1e-12})
        assert hmm.EMStatus(int(ours.status)) is hmm.EMStatus.MAX_ITERATIONS
        reference = _hmmlearn_model(hmmlearn_hmm, start, n_iter=MAX_ITER, tol=-np.inf)
        x_hmmlearn = x[:, None] if family is hmm.Categorical else x
        reference.fit(x_hmmlearn, LENGTHS)
        fitted = _hmmlearn_model(hmmlearn_hmm, ours.model)
        names = ("emissionprob_",) if family is hmm.Categorical else ("means_", "covars_")
        for name in ("startprob_", "transmat_") + names:
            np.testing.assert_allclose(getattr(fitted, name), getattr(reference, name),
                                       rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(ours.history, reference.monitor_.history, rtol=1e-10)
        np.testing.assert_allclose(ours.log_likelihood, reference.score(x_hmmlearn, LENGTHS),
                                   rtol=1e-10)
        assert hmm.num_parameters(ours.model) == sum(
            reference._get_n_fit_scalars_per_param().values())
        np.testing.assert_allclose(hmm.aic(ours.model, x, LENGTHS),
                                   reference.aic(x_hmmlearn, LENGTHS), rtol=1e-10)
        np.testing.assert_allclose(hmm.bic(ours.model, x, LENGTHS),
                                   reference.bic(x_hmmlearn, LENGTHS), rtol=1e-10)


@pytest.mark.parametrize("emissions, expected", [
    (hmm.Categorical(jnp.full((3, 5), 0.2)), 2 + 6 + 3 * 4),
    (hmm.Gaussian(jnp.zeros((3, 4)), jnp.broadcast_to(jnp.eye(4), (3, 4, 4))), 2 + 6 + 12 + 30),
    (hmm.DiagonalGaussian(jnp.zeros((3, 4)), jnp.ones((3, 4))), 2 + 6 + 24),
], ids=["categorical", "gaussian", "diagonal"])
def test_num_parameters_counts_the_free_parameters(emissions, expected):
    """(K − 1) + K(K − 1) + the emissions' K(V − 1), KD + KD(D + 1)/2 or 2KD, by hand."""
    model = hmm.HMM(jnp.full(3, 1 / 3), jnp.full((3, 3), 1 / 3), emissions)
    assert hmm.num_parameters(model) == expected


@pytest.mark.parametrize("arguments, error, match", [
    (dict(num_states=0), ValueError, "num_states"),
    (dict(num_states=21), ValueError, "num_states must be at most the number of observed steps, 20"),
    (dict(num_states=2, num_restarts=0), ValueError, "num_restarts"),
    (dict(num_states=2.0), TypeError, "num_states"),
    (dict(num_states=2, emissions=hmm.Gaussian(jnp.zeros((2, 2)), jnp.ones((2, 2, 2)))),
     TypeError, "emissions must be an emission family class"),
    (dict(num_states=2, update={"means"}), ValueError, "update"),
    (dict(num_states=2, tol=-1.0), ValueError, "tol"),
    (dict(num_states=2, transition_pseudo_counts=np.ones(3)), ValueError,
     "transition_pseudo_counts"),
])
def test_fit_rejects_bad_arguments_naming_them(arguments, error, match):
    x = np.zeros((20, 2))
    with pytest.raises(error, match=match):
        hmm.fit(jax.random.key(0), x, LENGTHS, **{"num_restarts": 1, **arguments})


@parametrize_families()
def test_initialize_gives_a_valid_start_ignoring_padded_steps(family):
    """Every family of the registry with ``initialize``: a valid K-state model for the data,
    the same for the same key (also under ``vmap``), unchanged by padded steps of weight 0
    holding garbage, and ``num_free_parameters`` a positive int."""
    rng = np.random.default_rng(14)
    with jax.enable_x64(True):
        cls = type(family.random_emissions(rng, 2, family.event_size, np.float64))
        if not hasattr(cls, "initialize"):
            pytest.skip(f"{cls.__name__} has no initialize")
        x = observations(rng, family, (20,))
        padded = np.concatenate([x, np.full((5,) + x.shape[1:], family.garbage[0], x.dtype)])
        weights = np.r_[np.ones(20), np.zeros(5)]
        key = jax.random.key(15)
        clean = cls.initialize(key, x, np.ones(20), 3)
        ignored = cls.initialize(key, padded, weights, 3)
        for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(ignored), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        assert clean.num_states == 3
        clean.check(x)
        batched = jax.vmap(lambda k: cls.initialize(k, padded, weights, 3))(
            jnp.stack([key, jax.random.key(16)]))
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(clean), strict=True):
            np.testing.assert_allclose(a[0], b, rtol=1e-12)
        count = clean.num_free_parameters
        assert isinstance(count, int) and count > 0
