"""HMM inference, sequential and parallel, against brute-force enumeration of all K^T paths.

The common tests run for every emission family of the registry (``_hmm_families``) and for
both implementations (``hmm`` and ``hmm.parallel`` have the same functions).

Speed: every jitted check goes through ``run_all``, one compiled program per implementation,
emission family (and dtype / sequence length) that returns everything the tests look at:
forward, backward, smoothed and Viterbi results, transition counts and (sequential)
gradients.  ``length`` is a traced argument, so the brute-force comparison (length T) and
the padding tests (length 4) share a compilation; ``length=None`` (no masks at all) runs
un-jitted against brute force and jitted on the long float32 sequence (against a NumPy
float64 oracle).
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _hmm_families import (BY_NAME, FAMILIES, REPRESENTATIVE, brute_force, observations,
                           parametrize_families, random_hmm)
from functional_dl import hmm
from functional_dl.hmm import inference

K, T = 3, 6
IMPLEMENTATIONS = {"sequential": hmm, "parallel": hmm.parallel}
CATEGORICAL = BY_NAME["categorical"]


def random_model(rng, family, dtype=np.float64, num_steps=T):
    model = random_hmm(rng, family, K, dtype)
    return model, jnp.asarray(observations(rng, family, (num_steps,), dtype))


def _everything(implementation, model, x, length):
    """The public functions' results for one sequence (jitted by ``run_all``)."""
    functions = IMPLEMENTATIONS[implementation]
    log_lik, filtered = functions.forward(model, x, length)
    states, log_prob = functions.viterbi(model, x, length)
    lls = model.emissions.log_likelihoods(x)
    post = functions.smoother(model.initial_probs, model.transition_matrix, lls, length)
    backward = functions.backward_filter(model.transition_matrix, lls, length, post.filtered_probs)
    result = {"forward_log_lik": log_lik, "log_lik": functions.log_likelihood(model, x, length),
              "filtered": filtered, "gamma": functions.posteriors(model, x, length),
              "counts": post.transition_counts, "smoother_gamma": post.smoothed_probs,
              "smoother_log_lik": post.log_likelihood, "smoother_filtered": post.filtered_probs,
              "backward": backward, "states": states, "log_prob": log_prob, "emission_lls": lls}
    if implementation == "sequential":  # the parallel functions are not for differentiation
        result["grads"] = jax.grad(hmm.log_likelihood)(model, x, length)
    return result


_run = jax.jit(_everything, static_argnums=0)
run_all = functools.partial(_run, "sequential")


def unjitted(model, x):
    """The smoother (which contains the forward pass) and Viterbi with jit disabled: Python
    loops, op by op, every ``lax.cond`` on a concrete flag."""
    with jax.disable_jit():
        lls = model.emissions.log_likelihoods(x)
        post = hmm.smoother(model.initial_probs, model.transition_matrix, lls)
        states, log_prob = hmm.viterbi(model, x)
    return {"forward_log_lik": post.log_likelihood, "log_lik": post.log_likelihood,
            "gamma": post.smoothed_probs, "smoother_gamma": post.smoothed_probs,
            "counts": post.transition_counts, "states": states, "log_prob": log_prob}


def assert_matches(result, reference, num_steps=T):
    log_evidence, gamma, xi, path, path_log_prob = reference
    for name in ("forward_log_lik", "log_lik", "smoother_log_lik"):
        if name in result:
            np.testing.assert_allclose(result[name], log_evidence, rtol=1e-10)
    np.testing.assert_allclose(result["gamma"][:num_steps], gamma, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(result["smoother_gamma"][:num_steps], gamma, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(result["counts"], xi, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(result["states"][:num_steps], path)
    np.testing.assert_allclose(result["log_prob"], path_log_prob, rtol=1e-10)
    if "backward" in result:  # β_t ∝ p(x_{t+1:L} | z_t): γ_t ∝ α̂_t ⊙ β_t
        product = np.asarray(result["filtered"] * result["backward"])[:num_steps]
        np.testing.assert_allclose(product / product.sum(axis=1, keepdims=True), gamma,
                                   rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(result["smoother_filtered"], result["filtered"], rtol=1e-12)


def reference_for(family, model, x):
    return brute_force(model.initial_probs, model.transition_matrix,
                       family.log_pdf(model.emissions, x))


# every family through the sequential functions; the parallel siblings (which meet a family
# only through its log-likelihoods) through one family per kind of observation
BRUTE_FORCE_CASES = ([(family, "sequential") for family in FAMILIES]
                     + [(family, "parallel") for family in REPRESENTATIVE])


@pytest.mark.parametrize("family, implementation", BRUTE_FORCE_CASES,
                         ids=[f"{f.name}-{i}" for f, i in BRUTE_FORCE_CASES])
def test_matches_brute_force_and_padding_changes_nothing(family, implementation):
    """Brute force on the full sequence; then the last steps padded with garbage."""
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(2), family)
        result = _run(implementation, model, x, T)
        np.testing.assert_allclose(result["emission_lls"], family.log_pdf(model.emissions, x),
                                   rtol=1e-10)
        assert_matches(result, reference_for(family, model, x))

        length = 4
        reference = reference_for(family, model, x[:length])
        for garbage in family.garbage:
            result = _run(implementation, model, x.at[length:].set(garbage), length)
            assert_matches(result, reference, num_steps=length)
            np.testing.assert_array_equal(result["gamma"][length:], 0.0)
            np.testing.assert_array_equal(result["filtered"][length:], 0.0)
            np.testing.assert_array_equal(result["states"][length:], -1)
            np.testing.assert_allclose(result["backward"][length - 1:], 1.0 / K, rtol=1e-12)
            assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(result.get("grads", {})))


def test_unjitted_and_without_length_matches_brute_force():
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(2), CATEGORICAL)
        assert_matches(unjitted(model, x), reference_for(CATEGORICAL, model, x))


@parametrize_families(families=[f for f in FAMILIES if f.peer_log_pdf is not None])
def test_emission_log_likelihoods_match_scipy(family):
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(2), family)
        np.testing.assert_allclose(run_all(model, x, T)["emission_lls"],
                                   family.peer_log_pdf(model.emissions, np.asarray(x)), rtol=1e-10)


@parametrize_families()
def test_filtered_probs_match_brute_force_on_prefixes(family):
    with jax.enable_x64(True):
        model, x = random_model(np.random.default_rng(2), family)
        filtered = run_all(model, x, T)["filtered"]
        lls = family.log_pdf(model.emissions, x)
        for t in range(T):
            _, gamma, _, _, _ = brute_force(model.initial_probs, model.transition_matrix, lls[:t + 1])
            np.testing.assert_allclose(filtered[t], gamma[t], rtol=1e-8, atol=1e-12)


def test_zero_probabilities_match_brute_force_without_nan():
    with jax.enable_x64(True):
        pi = jnp.array([0.0, 0.6, 0.4])
        A = jnp.array([[0.5, 0.5, 0.0], [0.0, 0.3, 0.7], [0.2, 0.0, 0.8]])
        B = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.2, 0.8, 0.0], [0.1, 0.0, 0.3, 0.6]])
        model = hmm.HMM(pi, A, hmm.Categorical(B))
        x = jnp.array([1, 2, 3, 0, 1, 2])
        reference = reference_for(CATEGORICAL, model, x)
        assert np.isfinite(reference[0])
        result = run_all(model, x, T)
        assert_matches(result, reference)
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(result["grads"]))


def test_impossible_observation_gives_minus_inf_not_nan():
    with jax.enable_x64(True):
        pi = jnp.array([0.5, 0.5, 0.0])
        A = jnp.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
        B = jnp.array([[0.5, 0.4, 0.0, 0.1], [0.5, 0.4, 0.0, 0.1], [0.0, 0.0, 1.0, 0.0]])
        model = hmm.HMM(pi, A, hmm.Categorical(B))
        x = jnp.array([0, 1, 2, 0, 3, 1])  # symbol 2 only comes from the unreachable state
        result = run_all(model, x, T)
        assert result["log_lik"] == -np.inf and result["forward_log_lik"] == -np.inf
        assert np.all(np.isfinite(result["filtered"]))
        np.testing.assert_array_equal(result["gamma"], 0.0)
        np.testing.assert_array_equal(result["counts"], 0.0)
        assert result["log_prob"] == -np.inf and np.all((result["states"] >= 0) & (result["states"] < 3))
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(result["grads"]))


# Two float32 chains with an unreachable state, one compilation for both (same shapes).
STUCK_STEPS = 3005


def two_state_chain(initial_probs, transition_matrix, means):
    return hmm.HMM(jnp.array(initial_probs), jnp.array(transition_matrix),
                   hmm.DiagonalGaussian(jnp.array(means), jnp.ones((2, 1))))


def test_unreachable_state_that_fits_the_future_cannot_overflow():
    """A left-to-right chain in float32: backward messages of a state with α = 0 stay finite."""
    model = two_state_chain([1.0, 0.0], [[0.999, 0.001], [0.0, 1.0]], [[0.0], [10.0]])
    x = jnp.concatenate([jnp.zeros((5, 1), jnp.float32),
                         jnp.full((STUCK_STEPS - 5, 1), 10.0, jnp.float32)])
    result = run_all(model, x, STUCK_STEPS)
    assert np.all(np.isfinite(result["gamma"]))
    np.testing.assert_allclose(result["gamma"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result["states"], np.r_[np.zeros(5), np.ones(STUCK_STEPS - 5)])


def test_reachable_states_far_worse_than_an_unreachable_one_do_not_underflow():
    """The chain is stuck in state 0; x fits the unreachable state 1 by 450 nats per step.

    Scaling by the best of *all* states would give exp(−450) = 0 in float32 and log p = −inf.
    """
    model = two_state_chain([1.0, 0.0], [[1.0, 0.0], [0.5, 0.5]], [[0.0], [30.0]])
    x = jnp.full((STUCK_STEPS, 1), 30.0, jnp.float32)
    expected = STUCK_STEPS * (-0.5 * np.log(2 * np.pi) - 0.5 * 30.0**2)
    result = run_all(model, x, STUCK_STEPS)
    np.testing.assert_allclose(result["log_lik"], expected, rtol=1e-6)
    np.testing.assert_array_equal(result["gamma"], np.tile([1.0, 0.0], (STUCK_STEPS, 1)))
    np.testing.assert_array_equal(result["states"], 0)
    np.testing.assert_allclose(result["log_prob"], expected, rtol=1e-6)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(result["grads"]))


def test_a_batch_runs_the_careful_pass_only_as_a_whole_and_agrees_with_single_runs():
    """Under vmap the fast/careful choice is made for the batch (``any_in_batch``): a stuck
    chain next to an ordinary sequence gives each the result it gets on its own."""
    model = two_state_chain([1.0, 0.0], [[1.0, 0.0], [0.5, 0.5]], [[0.0], [30.0]])
    stuck = jnp.full((STUCK_STEPS, 1), 30.0, jnp.float32)  # needs the careful pass
    ordinary = jnp.asarray(np.random.default_rng(8).normal(size=(STUCK_STEPS, 1)), jnp.float32)
    sequential = functools.partial(_everything, "sequential")
    batched = jax.jit(jax.vmap(sequential, in_axes=(None, 0, None)))(
        model, jnp.stack([stuck, ordinary]), STUCK_STEPS)
    for index, x in enumerate((stuck, ordinary)):
        single = run_all(model, x, STUCK_STEPS)
        for name in ("log_lik", "forward_log_lik", "gamma", "counts", "log_prob"):
            np.testing.assert_allclose(batched[name][index], single[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(batched["states"][index], single["states"])
        for a, b in zip(jax.tree.leaves(batched["grads"]), jax.tree.leaves(single["grads"])):
            np.testing.assert_allclose(a[index], b, rtol=1e-4, atol=1e-5)


def pairwise_log_evidence_and_best_path(pi, A, ll):
    """log p(x) and max_z log p(z, x) in float64 NumPy for long sequences.

    The oracle multiplies the per-step matrices pairwise (O(log T) vectorised levels, each
    product rescaled to max 1): sum-product ``A_ij exp(ll_t(j))`` and max-plus ``log A_ij +
    ll_t(j)``, the first step a row vector ``π ⊙ exp(ll_1)``.
    """
    ll = np.asarray(ll, np.float64)
    log_A = np.log(np.asarray(A, np.float64))
    log_first = np.log(np.asarray(pi, np.float64)) + ll[0]
    shifts = ll.max(axis=1)
    sums = np.asarray(A, np.float64)[None] * np.exp(ll[1:] - shifts[1:, None])[:, None, :]
    maxes = log_A[None] + ll[1:, None, :]
    log_scale = shifts[1:].sum()
    while len(sums) > 1:
        if len(sums) % 2:  # carry the odd one out to the next level
            sums = np.concatenate([sums, np.eye(len(A))[None]])
            maxes = np.concatenate([maxes, np.where(np.eye(len(A)) > 0, 0.0, -np.inf)[None]])
        sums = sums[0::2] @ sums[1::2]
        peaks = sums.max(axis=(1, 2))
        sums /= peaks[:, None, None]
        log_scale += np.log(peaks).sum()
        maxes = (maxes[0::2, :, :, None] + maxes[1::2, None, :, :]).max(axis=2)
    first = np.exp(log_first - shifts[0])
    log_evidence = np.log(first @ sums[0] @ np.ones(len(A))) + shifts[0] + log_scale
    best = (log_first[:, None] + maxes[0]).max()
    return log_evidence, best


def test_long_sequence_float32_is_finite_and_accurate():
    rng = np.random.default_rng(5)
    model32, _ = random_model(rng, CATEGORICAL, np.float32)
    x = jnp.asarray(observations(rng, CATEGORICAL, (100_000,)))
    result = run_all(model32, x, None)  # length=None: the path without padding masks
    assert np.isfinite(result["log_lik"]) and np.isfinite(result["log_prob"])
    assert np.all(np.isfinite(result["gamma"]))
    np.testing.assert_allclose(result["gamma"].sum(axis=1), 1.0, rtol=1e-5)
    lls = CATEGORICAL.log_pdf(model32.emissions, x)
    log_evidence, best = pairwise_log_evidence_and_best_path(model32.initial_probs,
                                                            model32.transition_matrix, lls)
    np.testing.assert_allclose(result["log_lik"], log_evidence, rtol=2e-6)
    log_A = np.log(np.asarray(model32.transition_matrix, np.float64))
    s = np.asarray(result["states"])
    path_score = (np.log(np.asarray(model32.initial_probs, np.float64))[s[0]]
                  + lls[np.arange(len(s)), s].sum() + log_A[s[:-1], s[1:]].sum())
    np.testing.assert_allclose(path_score, best, rtol=1e-6)


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        rng = np.random.default_rng(6)
        model, x = random_model(rng, BY_NAME["gaussian"])
        # zeros in π and A: the gradient there is still exact (no log of π or A is taken)
        model = model._replace(initial_probs=model.initial_probs.at[0].set(0.0),
                               transition_matrix=model.transition_matrix.at[1, 2].set(0.0))
        grads = run_all(model, x, T)["grads"]

        # jitted (run_all): the perturbed rows no longer sum to 1, which eager checks reject
        def log_likelihood(m):
            return run_all(m, x, T)["log_lik"]

        leaves, treedef = jax.tree.flatten(model)
        grad_leaves = jax.tree.leaves(grads)
        step = 1e-6
        for index, (leaf, grad) in enumerate(zip(leaves, grad_leaves)):
            numeric = np.zeros(leaf.shape)
            for position in np.ndindex(leaf.shape):
                shifted = []
                for sign in (1.0, -1.0):
                    moved = list(leaves)
                    moved[index] = leaf.at[position].add(sign * step)
                    if index == len(leaves) - 1:  # keep each covariance symmetric
                        swapped = position[:1] + position[:0:-1]
                        moved[index] = moved[index].at[swapped].set(moved[index][position])
                    shifted.append(log_likelihood(jax.tree.unflatten(treedef, moved)))
                numeric[position] = (shifted[0] - shifted[1]) / (2 * step)
            if index == len(leaves) - 1:
                # a symmetric perturbation of an off-diagonal pair moves two entries at once
                expected = np.asarray(grad) + np.where(np.eye(grad.shape[-1], dtype=bool), 0.0,
                                                       np.swapaxes(np.asarray(grad), -1, -2))
            else:
                expected = np.asarray(grad)
            np.testing.assert_allclose(expected, numeric, rtol=1e-5, atol=1e-7)
        # forward mode gives the same directional derivative
        direction = jax.tree.map(lambda leaf: jnp.linspace(-1.0, 1.0, leaf.size).reshape(leaf.shape),
                                 model)
        _, directional = jax.jvp(lambda m: hmm.log_likelihood(m, x, T), (model,), (direction,))
        np.testing.assert_allclose(directional, sum(jnp.sum(g * d) for g, d in zip(
            grad_leaves, jax.tree.leaves(direction))), rtol=1e-10)


@jax.jit
def low_level(pi, A, lls, lengths):
    post = hmm.smoother(pi, A, lls)
    return (post, hmm.backward_filter(A, lls), hmm.most_likely_states(pi, A, lls),
            jax.vmap(inference.forward_filter, in_axes=(None, None, 0, 0))(
                pi, A, jnp.stack([lls, lls]), lengths)[0])


def test_low_level_functions_accept_any_log_likelihood_matrix():
    with jax.enable_x64(True):
        rng = np.random.default_rng(7)
        lls = jnp.asarray(rng.normal(size=(T, K)) * 3)
        pi, A = jnp.asarray(rng.dirichlet(np.ones(K))), jnp.asarray(rng.dirichlet(np.ones(K), size=K))
        log_evidence, gamma, xi, path, best = brute_force(pi, A, lls)
        post, backward, (states, log_prob), batched = low_level(pi, A, lls, jnp.array([T, 3]))
        np.testing.assert_allclose(post.log_likelihood, log_evidence, rtol=1e-10)
        np.testing.assert_allclose(post.smoothed_probs, gamma, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(post.transition_counts, xi, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(backward.sum(axis=1), 1.0, rtol=1e-12)
        # β_t ∝ p(x_{t+1:T} | z_t): γ_t ∝ α_t ⊙ β_t with α from brute force on prefixes
        for t in (0, T // 2):
            alpha = brute_force(pi, A, lls[:t + 1])[1][t]
            np.testing.assert_allclose(alpha * backward[t] / np.sum(alpha * backward[t]), gamma[t],
                                       rtol=1e-8, atol=1e-12)
        np.testing.assert_array_equal(states, path)
        np.testing.assert_allclose(log_prob, best, rtol=1e-10)
        np.testing.assert_allclose(batched[0], log_evidence, rtol=1e-10)
        np.testing.assert_allclose(batched[1], brute_force(pi, A, lls[:3])[0], rtol=1e-10)


@pytest.mark.parametrize("num_states, num_steps", [(3, 20_000), (16, 2_000)])
def test_viterbi_float64_long_and_many_states_matches_max_plus_oracle(num_states, num_steps):
    """float64 Viterbi keeps δ unshifted (it resolves 1e-10 nats at −1e6); K = 16 takes the
    argmax-reduction branch instead of the unrolled comparisons.  Oracle: the best path
    score by pairwise max-plus products; padding with garbage changes nothing."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(num_states)
        pi = rng.dirichlet(np.ones(num_states))
        A = rng.dirichlet(np.full(num_states, 0.5), size=num_states)
        lls = rng.normal(scale=3.0, size=(num_steps, num_states)) - 5.0
        states, log_prob = hmm.most_likely_states(jnp.asarray(pi), jnp.asarray(A), jnp.asarray(lls))
        _, best = pairwise_log_evidence_and_best_path(pi, A, lls)
        s = np.asarray(states)
        path_score = (np.log(pi)[s[0]] + lls[np.arange(num_steps), s].sum()
                      + np.log(A)[s[:-1], s[1:]].sum())
        np.testing.assert_allclose(path_score, best, rtol=1e-12)
        np.testing.assert_allclose(log_prob, best, rtol=1e-12)
        padded = np.concatenate([lls, rng.normal(scale=50.0, size=(7, num_states))])
        padded_states, padded_log_prob = hmm.most_likely_states(
            jnp.asarray(pi), jnp.asarray(A), jnp.asarray(padded), num_steps)
        np.testing.assert_array_equal(padded_states[:num_steps], s)
        np.testing.assert_array_equal(padded_states[num_steps:], -1)
        np.testing.assert_allclose(padded_log_prob, log_prob, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_viterbi_resolves_small_differences_beside_a_huge_log_probability(dtype):
    """Both paths share an offset of −1e10 nats; they differ by 5e-7 at the second step.
    Unshifted, δ ≈ −1e10 resolves only ~2e-6 in float64 (and nothing in float32)."""
    with jax.enable_x64(dtype == np.float64):
        half = jnp.full((2,), 0.5, dtype)
        lls = jnp.asarray([[-1e10, -1e10], [0.0, 5e-7]], dtype)
        states, _ = hmm.most_likely_states(half, jnp.full((2, 2), 0.5, dtype), lls)
        np.testing.assert_array_equal(states, [0, 1])


def test_viterbi_of_one_step_runs_without_jit_and_non_float_log_likelihoods_are_rejected():
    pi, A = jnp.asarray([0.3, 0.7]), jnp.full((2, 2), 0.5)
    lls = jnp.asarray([[0.0, -0.5]])
    with jax.disable_jit():
        states, log_prob = hmm.most_likely_states(pi, A, lls)
    np.testing.assert_array_equal(states, [1])
    np.testing.assert_allclose(log_prob, np.log(0.7) - 0.5, rtol=1e-6)
    for low_level in (lambda l: hmm.most_likely_states(pi, A, l), lambda l: hmm.forward_filter(pi, A, l)):
        with pytest.raises(TypeError, match="log_likelihoods must be a floating-point array"):
            low_level(jnp.asarray([[0, 1]]))


@pytest.mark.parametrize("with_zeros", [False, True])
def test_gradient_of_smoothed_probabilities_matches_finite_differences(with_zeros):
    """Through the smoother itself (not the custom-JVP log-likelihood): with every state
    possible the backward pass reuses the forward likelihoods; with state 1 impossible at
    t = 0 (π_1 = 0) it restricts them to the support; both branches differentiate correctly."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(11)
        pi = rng.dirichlet(np.ones(K))
        A = rng.dirichlet(np.ones(K), size=K)
        if with_zeros:
            pi[1], A[0, 1] = 0.0, 0.0
            pi, A[0] = pi / pi.sum(), A[0] / A[0].sum()
        pi, A = jnp.asarray(pi), jnp.asarray(A)
        lls = jnp.asarray(rng.normal(size=(T, K)))
        weights = jnp.asarray(rng.normal(size=(T, K)))

        def objective(log_likelihoods):
            return jnp.sum(weights * hmm.smoother(pi, A, log_likelihoods).smoothed_probs)

        grad = jax.grad(objective)(lls)
        step = 1e-6
        for t, k in itertools.product(range(T), range(K)):
            bump = jnp.zeros((T, K)).at[t, k].set(step)
            numeric = (objective(lls + bump) - objective(lls - bump)) / (2 * step)
            np.testing.assert_allclose(grad[t, k], numeric, rtol=1e-6, atol=1e-8)
