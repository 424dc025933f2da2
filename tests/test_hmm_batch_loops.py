"""The batch loops (``hmm._batched_scans``) that large ``vmap`` batches run instead of the
single-sequence loops give the brute-force answers, with and without padding, in float32
and float64, for the written-out (K ≤ 12) and the matrix (K > 12) forms.

The switch is made at trace time from the batch size (``BATCH_LOOP_MIN_SIZE``); here it is
set to 0 so that small, enumerable batches take the batch loops, and each test checks that
they did (the loop functions are counted when traced).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import hmm
from functional_dl.hmm import _batched_scans
from _hmm_families import brute_force
from _jax_events import compilations_of, recording_jax_events

LOOPS = ("forward_loop", "backward_loop", "viterbi_loop")  # all traced by smoothing and Viterbi


@pytest.fixture
def counted_loops(monkeypatch):
    """Yields {batch loop name: times traced}."""
    traced = {name: 0 for name in LOOPS}

    def counting(name):
        original = getattr(_batched_scans, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            traced[name] += 1
            return original(*args, **kwargs)
        return wrapper

    for name in LOOPS:
        monkeypatch.setattr(_batched_scans, name, counting(name))
    jax.clear_caches()  # traces made before must not be reused
    yield traced
    jax.clear_caches()


@pytest.fixture
def batch_loops(counted_loops, monkeypatch):
    """Every vmapped batch takes the batch loops; yields {loop name: times traced}."""
    monkeypatch.setattr(_batched_scans, "BATCH_LOOP_MIN_SIZE", 0)
    jax.clear_caches()
    return counted_loops


def _problem(num_states, num_steps, batch_size, seed, dtype):
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(num_states))
    transition = rng.dirichlet(np.ones(num_states), size=num_states)
    log_likelihoods = 2.0 * rng.normal(size=(batch_size, num_steps, num_states))
    return tuple(jnp.asarray(a, dtype) for a in (initial, transition, log_likelihoods))


def _everything(initial, transition, log_likelihoods, lengths):
    """Log-likelihood (value and gradient wrt the log-likelihoods), filtered, smoothed,
    counts and Viterbi for each sequence of the batch, vmapped."""

    def one(ll, length):
        log_lik, filtered = hmm.forward_filter(initial, transition, ll, length)
        post = hmm.smoother(initial, transition, ll, length)
        states, log_prob = hmm.most_likely_states(initial, transition, ll, length)
        gradient = jax.grad(
            lambda l: hmm.inference._checked_log_likelihood(initial, transition, l, length))(ll)
        return dict(log_lik=log_lik, filtered=filtered, smoothed=post.smoothed_probs,
                    counts=post.transition_counts, smoother_log_lik=post.log_likelihood,
                    states=states, log_prob=log_prob, gradient=gradient)

    return jax.jit(jax.vmap(one))(log_likelihoods, lengths)


def _check_against_brute_force(initial, transition, log_likelihoods, lengths, out, rtol):
    for b in range(log_likelihoods.shape[0]):
        length = int(lengths[b])
        ll = np.asarray(log_likelihoods[b, :length], np.float64)
        log_evidence, gamma, xi, path, best = brute_force(initial, transition, ll)
        np.testing.assert_allclose(out["log_lik"][b], log_evidence, rtol=rtol)
        np.testing.assert_allclose(out["smoother_log_lik"][b], log_evidence, rtol=rtol)
        np.testing.assert_allclose(out["smoothed"][b, :length], gamma, atol=rtol)
        np.testing.assert_allclose(out["gradient"][b, :length], gamma, atol=rtol)
        np.testing.assert_allclose(out["counts"][b], xi, atol=rtol)
        np.testing.assert_allclose(out["log_prob"][b], best, rtol=rtol)
        np.testing.assert_array_equal(out["states"][b, :length], path)
        for t in range(length):  # filtered: the last marginal of the prefix
            np.testing.assert_allclose(out["filtered"][b, t],
                                       brute_force(initial, transition, ll[:t + 1])[1][-1],
                                       atol=rtol)
        assert np.all(np.asarray(out["states"][b, length:]) == -1)
        assert np.all(np.asarray(out["smoothed"][b, length:]) == 0)


@pytest.mark.parametrize("num_states,num_steps", [(3, 6), (14, 3)])
@pytest.mark.parametrize("padded", [False, True])
def test_batch_loops_match_brute_force_float64(batch_loops, num_states, num_steps, padded):
    with jax.enable_x64(True):
        initial, transition, log_likelihoods = _problem(num_states, num_steps, 4, 0,
                                                        jnp.float64)
        lengths = (jnp.asarray([num_steps, 1, 2, num_steps - 1]) if padded
                   else jnp.full((4,), num_steps))
        out = _everything(initial, transition, log_likelihoods, lengths)
        _check_against_brute_force(initial, transition, log_likelihoods, lengths, out, 1e-10)
    assert all(batch_loops[name] > 0 for name in LOOPS), batch_loops


def test_batch_loops_match_brute_force_float32(batch_loops):
    initial, transition, log_likelihoods = _problem(4, 5, 3, 1, jnp.float32)
    lengths = jnp.asarray([5, 3, 4])
    out = _everything(initial, transition, log_likelihoods, lengths)
    _check_against_brute_force(initial, transition, log_likelihoods, lengths, out, 2e-5)
    assert all(batch_loops[name] > 0 for name in LOOPS), batch_loops


def test_batch_loops_without_lengths_equal_the_single_loops(batch_loops):
    """No padding masks at all (``length=None``): the same values as one sequence at a time
    through the single-sequence loops (not vmapped, so they cannot take the batch loops)."""
    with jax.enable_x64(True):
        initial, transition, log_likelihoods = _problem(5, 40, 3, 2, jnp.float64)
        batched = jax.jit(jax.vmap(lambda ll: (
            hmm.forward_filter(initial, transition, ll)[0],
            hmm.smoother(initial, transition, ll).smoothed_probs,
            hmm.most_likely_states(initial, transition, ll)[0])))(log_likelihoods)
        assert all(batch_loops[name] > 0 for name in LOOPS), batch_loops
        for b in range(3):
            ll = log_likelihoods[b]
            np.testing.assert_allclose(batched[0][b],
                                       hmm.forward_filter(initial, transition, ll)[0],
                                       rtol=1e-12)
            np.testing.assert_allclose(batched[1][b],
                                       hmm.smoother(initial, transition, ll).smoothed_probs,
                                       atol=1e-12)
            np.testing.assert_array_equal(batched[2][b],
                                          hmm.most_likely_states(initial, transition, ll)[0])


def test_batch_loops_keep_the_careful_pass_and_nan(batch_loops):
    """A chain stuck beside an unreachable state that fits far better (the fast pass
    underflows, the careful pass reruns the batch) and a sequence with a NaN, batched with an
    ordinary one: each gets what it gets alone (NaN only where it belongs)."""
    initial = jnp.asarray([1.0, 0.0], jnp.float32)
    transition = jnp.asarray([[1.0, 0.0], [0.5, 0.5]], jnp.float32)
    num_steps = 50
    stuck = jnp.tile(jnp.asarray([[0.0, 120.0]], jnp.float32), (num_steps, 1))
    ordinary = jnp.asarray(np.random.default_rng(3).normal(size=(num_steps, 2)), jnp.float32)
    poisoned = ordinary.at[10, 1].set(jnp.nan)
    impossible = ordinary.at[7].set(-jnp.inf)  # no state can emit x_7
    batch = jnp.stack([stuck, ordinary, poisoned, impossible])
    log_liks, filtered = jax.jit(jax.vmap(
        lambda ll: hmm.forward_filter(initial, transition, ll)))(batch)
    assert batch_loops["forward_loop"] > 0
    np.testing.assert_allclose(log_liks[0], 0.0, atol=1e-6)  # state 0 forever: ll = 0
    expected = brute_force_long(initial, transition, ordinary)
    np.testing.assert_allclose(log_liks[1], expected, rtol=1e-5)
    assert np.isnan(log_liks[2]) and np.all(np.isnan(filtered[2, 10:]))
    assert not np.any(np.isnan(filtered[2, :10]))
    assert log_liks[3] == -np.inf and np.all(filtered[3, 7:] == 0)
    np.testing.assert_allclose(filtered[3, :7], filtered[1, :7], rtol=1e-6)
    # a NaN in π or A: every result of every sequence is NaN
    for pi, a in ((initial.at[1].set(jnp.nan), transition),
                  (initial, transition.at[1, 0].set(jnp.nan))):
        log_liks, filtered = jax.jit(jax.vmap(lambda ll: hmm.forward_filter(pi, a, ll)))(batch)
        assert np.all(np.isnan(log_liks)) and np.all(np.isnan(filtered))


def brute_force_long(initial, transition, log_likelihoods):
    """log p(x) by the forward recursion in float64 log space (scipy-free logsumexp)."""
    with np.errstate(divide="ignore"):
        log_a = np.log(np.asarray(transition, np.float64))
        alpha = np.log(np.asarray(initial, np.float64)) + np.asarray(log_likelihoods[0])
    for ll_t in np.asarray(log_likelihoods[1:], np.float64):
        alpha = np.logaddexp.reduce(alpha[:, None] + log_a, axis=0) + ll_t
    return np.logaddexp.reduce(alpha)


def test_a_large_batch_compiles_once_and_takes_the_batch_loops(counted_loops):
    """With the usual threshold a batch of B·K ≥ BATCH_LOOP_MIN_SIZE takes the batch loops;
    calling again with new values of the same shapes compiles nothing new."""
    num_states = 4
    batch_size = _batched_scans.BATCH_LOOP_MIN_SIZE // num_states
    initial, transition, log_likelihoods = _problem(num_states, 8, batch_size, 4, jnp.float32)
    fn = jax.jit(jax.vmap(lambda ll: hmm.smoother(initial, transition, ll).log_likelihood))
    first = fn(log_likelihoods)
    assert counted_loops["forward_loop"] == 1 and counted_loops["backward_loop"] == 1
    small = jax.jit(jax.vmap(lambda ll: hmm.smoother(initial, transition, ll).log_likelihood))
    small(log_likelihoods[:batch_size // 2])  # below the threshold: vmap of the single loops
    assert counted_loops["forward_loop"] == 1
    with recording_jax_events() as events:
        again = fn(log_likelihoods + 1.0)
    assert compilations_of(events, "<lambda>") == 0
    np.testing.assert_allclose(again, first + 8.0, rtol=1e-5)  # ll + 1 adds 1 per step


@pytest.mark.parametrize("batched", [False, True])
def test_viterbi_argmax_form_equals_the_running_comparison(monkeypatch, batched):
    """Above ``MAX_RUNNING_COMPARISON_STATES`` states Viterbi takes a (K, K) max and argmax per
    step; with the limit lowered, K = 20 takes that form and must decode the same paths (ties
    to the lowest index in both), one sequence at a time and in a batch loop."""
    with jax.enable_x64(True):
        initial, transition, log_likelihoods = _problem(20, 30, 3, 5, jnp.float64)

        def decode():
            fn = lambda ll: hmm.most_likely_states(initial, transition, ll)  # noqa: E731
            if batched:
                return jax.jit(jax.vmap(fn))(log_likelihoods)
            return [fn(ll) for ll in log_likelihoods]

        jax.clear_caches()
        if batched:
            monkeypatch.setattr(_batched_scans, "BATCH_LOOP_MIN_SIZE", 0)
        running = decode()
        monkeypatch.setattr(_batched_scans, "MAX_RUNNING_COMPARISON_STATES", 8)
        jax.clear_caches()
        matrix_form = decode()
        jax.clear_caches()
    if batched:
        running, matrix_form = ([(s, p) for s, p in zip(*out)] for out in (running, matrix_form))
    for b, ((states_a, log_prob_a), (states_b, log_prob_b)) in enumerate(
            zip(running, matrix_form)):
        expected_states, expected_log_prob = numpy_viterbi(initial, transition,
                                                           log_likelihoods[b])
        for states, log_prob in ((states_a, log_prob_a), (states_b, log_prob_b)):
            np.testing.assert_array_equal(states, expected_states)
            np.testing.assert_allclose(log_prob, expected_log_prob, rtol=1e-12)


def numpy_viterbi(initial, transition, log_likelihoods):
    """The Viterbi recursion in float64 NumPy (np.argmax: ties to the lowest index)."""
    log_a = np.log(np.asarray(transition, np.float64))
    ll = np.asarray(log_likelihoods, np.float64)
    scores = np.log(np.asarray(initial, np.float64)) + ll[0]
    pointers = []
    for ll_t in ll[1:]:
        candidates = scores[:, None] + log_a
        pointers.append(np.argmax(candidates, axis=0))
        scores = candidates.max(axis=0) + ll_t
    path = [int(np.argmax(scores))]
    for pointer in reversed(pointers):
        path.append(int(pointer[path[-1]]))
    return np.array(path[::-1]), scores.max()


@pytest.mark.parametrize("batch_size,loop_sizes", [(6, {2}), (7, {7})])
def test_chunked_batch_loops_match_brute_force(batch_loops, monkeypatch, batch_size,
                                               loop_sizes):
    """Above ``MAX_LOOP_BATCH`` a batch runs in ``lax.map`` chunks of the batch loops (6 = 3
    chunks of 2); a size no chunk count divides (7) runs whole.  Same brute-force answers."""
    from functional_dl.hmm import _batching
    seen = []
    counted_forward = _batched_scans.forward_loop

    def recording(batch, *args, **kwargs):
        seen.append(batch)
        return counted_forward(batch, *args, **kwargs)
    monkeypatch.setattr(_batched_scans, "forward_loop", recording)
    monkeypatch.setattr(_batching, "MAX_LOOP_BATCH", 2)
    monkeypatch.setattr(_batching, "LOOP_CHUNK", 2)
    jax.clear_caches()
    with jax.enable_x64(True):
        initial, transition, log_likelihoods = _problem(3, 5, batch_size, 4, jnp.float64)
        lengths = jnp.asarray(([5, 1, 3, 4, 2, 5, 5])[:batch_size])
        out = _everything(initial, transition, log_likelihoods, lengths)
        _check_against_brute_force(initial, transition, log_likelihoods, lengths, out, 1e-10)
    assert set(seen) == loop_sizes, seen
    assert all(batch_loops[name] > 0 for name in LOOPS), batch_loops
