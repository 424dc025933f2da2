"""HMM benchmark: ``functional_dl.hmm`` against dynamax and hmmlearn, same data, same run.

Workloads (issue 4, §7):

(a) categorical emissions, K = 8 states, V = 16 symbols, B = 64 sequences × T = 1000:
    log-likelihood, posterior marginals, Viterbi, one EM iteration;
(b) the published comparison of HiddenMarkovModels.jl (``libs/HMMComparison`` in its
    repository): univariate diagonal Gaussian emissions, 50 sequences × T = 100,
    K = 2, 4, 6, 8, 10; uniform π, transition rows uniform(0, 1) then normalised, means
    N(0, 1), standard deviations 1; data sampled from that model; forward, Viterbi,
    forward-backward and 5 Baum–Welch iterations started from the true parameters;
(c) one sequence, T = 1 000 … 100 000, the model of (a): the sequential (``lax.scan``) and
    parallel-in-time (``lax.associative_scan``) versions of log-likelihood, posteriors and
    Viterbi.

Each call is timed as the median of several repeats after a first call, which is reported
separately (for JAX, ``compile`` = first call − median); the implementations of one row are
timed interleaved (see ``compare``).  Arrays are float64 everywhere (``jax_enable_x64``), as
hmmlearn computes in float64 and as HiddenMarkovModels.jl ran dynamax; ``--float32`` runs the
two JAX libraries in float32 instead (hmmlearn stays float64).  Batches are
``jax.jit(jax.vmap(...))`` of the single-sequence functions, for both JAX libraries.

Peers, each called the way its documentation shows (skipped when not installed):

- dynamax: ``hmm_filter`` / ``hmm_smoother`` / ``hmm_posterior_mode`` (and the parallel
  ``hmm_filter`` / ``hmm_smoother``; it has no parallel Viterbi) on the log-likelihoods its
  own emission model computes; EM twice: ``fit_em(..., verbose=False)`` as users call it
  (it builds and compiles a new ``jit`` on every call) and its ``e_step`` + ``m_step``
  compiled once (its steady-state speed).  Dirichlet concentrations are set to 1 so that
  its M-step for π, A and categorical emissions is maximum likelihood like ours (its
  Gaussian emissions keep their weak normal-inverse-gamma prior).
- hmmlearn: ``CategoricalHMM`` / ``GaussianHMM(covariance_type="diag")`` with the same
  parameters, ``implementation="scaling"`` (its faster mode), ``init_params=""``;
  ``score``, ``predict_proba``, ``decode`` and ``fit`` with ``n_iter`` set to the number of
  iterations and ``tol=-inf`` so that exactly that many run.

The column ``max |Δ|`` is the largest difference between our result and the peers' (log-
likelihood relative, posteriors absolute, fraction of differing Viterbi states, EM: fitted
transition matrix absolute): all three compute the same thing.

The batch sweep (B = 1 … 4096 sequences, K = 4, 8, 32, float32 and float64, with a roofline
estimate per row) is its sibling ``benchmarks/hmm_batch.py``, which reuses this module's
timing, peers and models.

Run:  python benchmarks/hmm.py [--quick] [--float32]
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
import time
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # for _timing
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout first
from _timing import block, machine_description, print_table  # noqa: E402

from functional_dl import hmm  # noqa: E402

try:
    from dynamax.hidden_markov_model import (CategoricalHMM as DynamaxCategorical,  # noqa: E402
                                             DiagonalGaussianHMM as DynamaxDiagonalGaussian)
    from dynamax.hidden_markov_model import inference as dynamax_core  # noqa: E402
    from dynamax.hidden_markov_model import parallel_inference as dynamax_parallel  # noqa: E402
except ImportError:
    dynamax_core = None
try:
    from hmmlearn import hmm as hmmlearn_hmm  # noqa: E402
except ImportError:
    hmmlearn_hmm = None

HEADERS = ["workload", "operation", "ours (ms)", "ours compile (s)", "dynamax (ms)",
           "hmmlearn (ms)", "hmmlearn/ours", "dynamax/ours", "max |Δ|"]


# ---------------------------------------------------------------- timing and comparison

class Timing(NamedTuple):
    median: float  # seconds per call
    first: float  # seconds of the first call (compilation included)
    output: Any


def compare(thunks: dict[str, Callable[[], Any]], repeats: int,
            min_sample_s: float = 0.02) -> dict[str, Timing]:
    """Time several implementations of one computation, interleaved.

    Each thunk is called once (``first``), then ``repeats`` rounds each time every thunk in
    turn, ``number`` calls per sample so a sample lasts about ``min_sample_s`` (sub-millisecond
    calls are otherwise dominated by timer and scheduler noise).  Interleaving makes the load
    of a shared machine hit all implementations alike, so the ratios are steadier than the
    times.  Returns the median seconds per call, the first-call seconds and the last output.
    """
    firsts, numbers, outputs = {}, {}, {}
    for name, fn in thunks.items():
        started = time.perf_counter()
        outputs[name] = block(fn())
        firsts[name] = time.perf_counter() - started
        started = time.perf_counter()
        block(fn())
        once = time.perf_counter() - started
        numbers[name] = max(1, min(100, int(min_sample_s / max(once, 1e-7))))
    samples = {name: [] for name in thunks}
    for _ in range(repeats):
        for name, fn in thunks.items():
            started = time.perf_counter()
            for _ in range(numbers[name]):
                out = fn()
            block(out)
            samples[name].append((time.perf_counter() - started) / numbers[name])
    return {name: Timing(statistics.median(samples[name]), firsts[name], outputs[name])
            for name in thunks}


def row(workload, operation, ours: Timing, dynamax: Timing | None = None,
        hmmlearn: Timing | None = None, difference: float | None = None) -> list[str]:
    def ms(timing):
        return "n/a" if timing is None else f"{1e3 * timing.median:.3g}"

    def ratio(peer):
        return "n/a" if peer is None else f"{peer.median / ours.median:.3g}×"

    compile_s = max(ours.first - ours.median, 0.0)
    return [workload, operation, ms(ours), f"{compile_s:.2f}", ms(dynamax), ms(hmmlearn),
            ratio(hmmlearn), ratio(dynamax), "" if difference is None else f"{difference:.1e}"]


def path_log_probs(model: hmm.HMM, observations, paths) -> np.ndarray:
    """``log p(z, x)`` of given state paths (B, T), in NumPy float64, for the Viterbi check."""
    log_likelihoods = np.asarray(jax.vmap(model.emissions.log_likelihoods)(observations))
    paths = np.asarray(paths).reshape(log_likelihoods.shape[:2])
    with np.errstate(divide="ignore"):
        log_initial = np.log(np.asarray(model.initial_probs))
        log_transition = np.log(np.asarray(model.transition_matrix))
    emission_terms = np.take_along_axis(log_likelihoods, paths[..., None], axis=2)[..., 0]
    return (log_initial[paths[:, 0]] + log_transition[paths[:, :-1], paths[:, 1:]].sum(axis=1)
            + emission_terms.sum(axis=1))


def disagreement(kind: str, ours, peers: list, model=None, observations=None) -> float | None:
    """Largest difference between our output and the peers' (kinds: see the module docstring).

    Viterbi paths are compared by their joint log-probability (relative), not state by
    state: equally probable paths exist and each library breaks such ties its own way.
    """
    peers = [p for p in peers if p is not None]
    if not peers:
        return None
    if kind == "path":
        reference = path_log_probs(model, observations, ours)
        return max(float(np.max(np.abs(path_log_probs(model, observations, p) - reference)
                                / np.abs(reference))) for p in peers)
    ours = np.asarray(ours, np.float64)
    differences = [np.abs(np.asarray(p, np.float64).reshape(ours.shape) - ours) for p in peers]
    if kind == "relative":
        return max(float(np.max(d / np.abs(ours))) for d in differences)
    return max(float(np.max(d)) for d in differences)


# ---------------------------------------------------------------- our functions (jitted once)

def _batched(fn):
    return jax.jit(jax.vmap(fn, in_axes=(None, 0)))


OURS = {
    "log_likelihood": _batched(hmm.log_likelihood),
    "posteriors": _batched(hmm.posteriors),
    "viterbi": _batched(lambda model, x: hmm.viterbi(model, x)[0]),
}
OURS_SINGLE = {
    ("sequential", "log_likelihood"): jax.jit(hmm.log_likelihood),
    ("sequential", "posteriors"): jax.jit(hmm.posteriors),
    ("sequential", "viterbi"): jax.jit(lambda model, x: hmm.viterbi(model, x)[0]),
    ("parallel", "log_likelihood"): jax.jit(hmm.parallel.log_likelihood),
    ("parallel", "posteriors"): jax.jit(hmm.parallel.posteriors),
    ("parallel", "viterbi"): jax.jit(lambda model, x: hmm.parallel.viterbi(model, x)[0]),
}


def ours_em(model, observations, num_iters):
    """The public ``baum_welch_with_history`` (eager checks, then one compiled while_loop)."""
    return hmm.baum_welch_with_history(model, observations, max_iter=num_iters, tol=0.0)


# ---------------------------------------------------------------- peers

class DynamaxRunner:
    """dynamax's core inference functions and EM on the same parameters."""

    def __init__(self, model: hmm.HMM):
        num_states = model.num_states
        if isinstance(model.emissions, hmm.Categorical):
            num_classes = model.emissions.probs.shape[1]
            self.model = DynamaxCategorical(num_states, 1, num_classes,
                                            initial_probs_concentration=1.0,
                                            transition_matrix_concentration=1.0,
                                            emission_prior_concentration=1.0)
            self.params, self.props = self.model.initialize(
                initial_probs=model.initial_probs, transition_matrix=model.transition_matrix,
                emission_probs=model.emissions.probs[:, None, :])
            self.prepare = lambda x: x[..., None]  # (T,) symbols -> (T, 1)
        else:
            self.model = DynamaxDiagonalGaussian(num_states, model.emissions.means.shape[1],
                                                 initial_probs_concentration=1.0,
                                                 transition_matrix_concentration=1.0)
            self.params, self.props = self.model.initialize(
                initial_probs=model.initial_probs, transition_matrix=model.transition_matrix,
                emission_means=model.emissions.means,
                emission_scale_diags=jnp.sqrt(model.emissions.variances))
            self.prepare = lambda x: x
        args = lambda params, x: self.model._inference_args(params, x, None)  # noqa: E731
        self.single = {
            ("sequential", "log_likelihood"):
                lambda p, x: dynamax_core.hmm_filter(*args(p, x)).marginal_loglik,
            ("sequential", "posteriors"):
                lambda p, x: dynamax_core.hmm_smoother(*args(p, x)).smoothed_probs,
            ("sequential", "viterbi"): lambda p, x: dynamax_core.hmm_posterior_mode(*args(p, x)),
            ("parallel", "log_likelihood"):
                lambda p, x: dynamax_parallel.hmm_filter(*args(p, x)).marginal_loglik,
            ("parallel", "posteriors"):
                lambda p, x: dynamax_parallel.hmm_smoother(*args(p, x)).smoothed_probs,
        }
        self.batched = {op: _batched(fn) for (kind, op), fn in self.single.items()
                        if kind == "sequential"}
        self.single = {key: jax.jit(fn) for key, fn in self.single.items()}
        self._em_step = jax.jit(self._one_em_step)

    def _one_em_step(self, params, emissions):
        """One EM iteration from dynamax's own e_step and m_step (which sums the batch)."""
        batch_stats, _ = jax.vmap(lambda x: self.model.e_step(params, x))(emissions)
        m_step_state = self.model.initialize_m_step_state(params, self.props)
        return self.model.m_step(params, self.props, batch_stats, m_step_state)[0]

    def em_steps(self, emissions, num_iters):
        params = self.params
        for _ in range(num_iters):
            params = self._em_step(params, emissions)
        return params.transitions.transition_matrix

    def fit_em(self, emissions, num_iters):
        params, _ = self.model.fit_em(self.params, self.props, emissions, num_iters=num_iters,
                                      verbose=False)
        return params.transitions.transition_matrix


def _float64(x) -> np.ndarray:
    """hmmlearn computes in float64 (matters only with ``--float32``)."""
    return np.asarray(x, np.float64)


class HmmlearnRunner:
    """hmmlearn on the same parameters; sequences concatenated with ``lengths``."""

    def __init__(self, model: hmm.HMM, num_iters: int):
        common = dict(n_components=model.num_states, init_params="", n_iter=num_iters,
                      tol=-math.inf, implementation="scaling")
        if isinstance(model.emissions, hmm.Categorical):
            self.estimator = hmmlearn_hmm.CategoricalHMM(
                n_features=model.emissions.probs.shape[1], **common)
            self.emission_params = {"emissionprob_": _float64(model.emissions.probs)}
            self.prepare = lambda x: np.asarray(x).reshape(-1, 1)
        else:
            self.estimator = hmmlearn_hmm.GaussianHMM(covariance_type="diag", **common)
            self.emission_params = {"means_": _float64(model.emissions.means),
                                    "covars_": _float64(model.emissions.variances)}
            self.prepare = lambda x: _float64(x).reshape(-1, np.shape(x)[-1])
        self.start = {"startprob_": _float64(model.initial_probs),
                      "transmat_": _float64(model.transition_matrix), **self.emission_params}
        self.reset()

    def reset(self):
        for name, value in self.start.items():
            setattr(self.estimator, name, value.copy())

    def fit(self, data, lengths):
        self.reset()
        self.estimator.fit(data, lengths)
        return self.estimator.transmat_


# ---------------------------------------------------------------- the three workloads

def batch_rows(label, model, observations, num_em_iters, repeats):
    """Rows for a batch (B, T): the three inferences and ``num_em_iters`` EM iterations."""
    batch_size, num_steps = observations.shape[:2]
    dyn = DynamaxRunner(model) if dynamax_core is not None else None
    learn = HmmlearnRunner(model, num_em_iters) if hmmlearn_hmm is not None else None
    dyn_x = dyn.prepare(observations) if dyn else None
    learn_x = learn.prepare(observations) if learn else None
    lengths = np.full(batch_size, num_steps)
    rows = []
    for op, learn_method, kind in (("log_likelihood", "score", "relative"),
                                   ("posteriors", "predict_proba", "absolute"),
                                   ("viterbi", "decode", "path")):
        thunks = {"ours": lambda op=op: OURS[op](model, observations)}
        if dyn:
            thunks["dynamax"] = lambda op=op: dyn.batched[op](dyn.params, dyn_x)
        if learn:
            thunks["hmmlearn"] = lambda m=learn_method: getattr(learn.estimator, m)(learn_x, lengths)
        timings = compare(thunks, repeats)
        outputs = {name: timing.output for name, timing in timings.items()}
        if op == "log_likelihood":  # hmmlearn returns the total over the batch
            outputs = {name: np.sum(np.asarray(out)) for name, out in outputs.items()}
        if op == "viterbi" and learn:
            outputs["hmmlearn"] = outputs["hmmlearn"][1]  # decode -> (log_prob, states)
        difference = disagreement(kind, outputs["ours"],
                                  [outputs.get("dynamax"), outputs.get("hmmlearn")],
                                  model, observations)
        rows.append(row(label, op, timings["ours"], timings.get("dynamax"),
                        timings.get("hmmlearn"), difference))

    em_label = f"EM, {num_em_iters} iteration{'s' * (num_em_iters > 1)}"
    thunks = {"ours": lambda: ours_em(model, observations, num_em_iters)}
    if dyn:
        thunks["dynamax"] = lambda: dyn.em_steps(dyn_x, num_em_iters)
    if learn:
        thunks["hmmlearn"] = lambda: learn.fit(learn_x, lengths)
    timings = compare(thunks, repeats)
    result = timings["ours"].output
    if int(result.num_iterations) != num_em_iters:
        print(f"warning: {label}: our EM stopped after {int(result.num_iterations)} iterations")
    fitted = {name: t.output for name, t in timings.items() if name != "ours"}
    rows.append(row(label, em_label + " (dynamax: e_step + m_step jitted once)", timings["ours"],
                    timings.get("dynamax"), timings.get("hmmlearn"),
                    disagreement("absolute", result.model.transition_matrix,
                                 [fitted.get("dynamax"), fitted.get("hmmlearn")])))
    if dyn:  # fit_em compiles anew on every call: few repeats, ours not re-timed
        fit_em = compare({"dynamax": lambda: dyn.fit_em(dyn_x, num_em_iters)}, max(1, repeats // 3))
        rows.append(row(label, em_label + " (dynamax: fit_em as called)", timings["ours"],
                        fit_em["dynamax"], None,
                        disagreement("absolute", result.model.transition_matrix,
                                     [fit_em["dynamax"].output])))
    return rows


def random_categorical_model(rng, num_states, num_symbols) -> hmm.HMM:
    return hmm.HMM(jnp.asarray(rng.dirichlet(np.ones(num_states))),
                   jnp.asarray(rng.dirichlet(np.ones(num_states), size=num_states)),
                   hmm.Categorical(jnp.asarray(rng.dirichlet(np.ones(num_symbols), size=num_states))))


def sample_batch(key, model, batch_size, num_steps):
    keys = jax.random.split(key, batch_size)
    return jax.jit(jax.vmap(lambda k: hmm.sample(k, model, num_steps)[1]))(keys)


def workload_a(repeats):
    rng = np.random.default_rng(0)
    model = random_categorical_model(rng, 8, 16)
    observations = sample_batch(jax.random.key(0), model, 64, 1000).astype(jnp.int32)
    return batch_rows("(a) categorical K=8 V=16, 64×1000", model, observations, 1, repeats)


def workload_b(repeats, state_counts):
    rows = []
    for num_states in state_counts:
        rng = np.random.default_rng(num_states)
        transition = rng.uniform(size=(num_states, num_states))
        model = hmm.HMM(jnp.full((num_states,), 1.0 / num_states),
                        jnp.asarray(transition / transition.sum(axis=1, keepdims=True)),
                        hmm.DiagonalGaussian(jnp.asarray(rng.normal(size=(num_states, 1))),
                                             jnp.ones((num_states, 1))))
        observations = sample_batch(jax.random.key(num_states), model, 50, 100)
        rows += batch_rows(f"(b) Gaussian K={num_states}, 50×100", model, observations, 5,
                           repeats)
    return rows


def workload_c(repeats, lengths):
    """One sequence of the (a) model: sequential and parallel scans, T = lengths."""
    rng = np.random.default_rng(0)
    model = random_categorical_model(rng, 8, 16)
    dyn = DynamaxRunner(model) if dynamax_core is not None else None
    learn = HmmlearnRunner(model, 1) if hmmlearn_hmm is not None else None
    rows, parallel_over_sequential = [], []
    for num_steps in lengths:
        x = sample_batch(jax.random.key(num_steps), model, 1, num_steps)[0].astype(jnp.int32)
        label = f"(c) one sequence, T={num_steps}"
        for op, learn_method, kind in (("log_likelihood", "score", "relative"),
                                       ("posteriors", "predict_proba", "absolute"),
                                       ("viterbi", "decode", "path")):
            thunks = {}
            for variant in ("sequential", "parallel"):
                thunks[f"ours {variant}"] = lambda f=OURS_SINGLE[(variant, op)]: f(model, x)
                if dyn and (variant, op) in dyn.single:
                    dyn_x = dyn.prepare(x)
                    thunks[f"dynamax {variant}"] = (
                        lambda f=dyn.single[(variant, op)], dyn_x=dyn_x: f(dyn.params, dyn_x))
            if learn:
                learn_x = learn.prepare(x)
                thunks["hmmlearn"] = lambda m=learn_method: getattr(learn.estimator, m)(learn_x)
            timings = compare(thunks, repeats)
            learn_out = None
            if learn:
                learn_out = timings["hmmlearn"].output
                learn_out = learn_out[1] if op == "viterbi" else learn_out
            for variant in ("sequential", "parallel"):
                ours = timings[f"ours {variant}"]
                dyn_timing = timings.get(f"dynamax {variant}")
                peers = [None if dyn_timing is None else dyn_timing.output, learn_out]
                difference = disagreement(kind, ours.output, peers, model, x[None])
                rows.append(row(label, f"{op}, {variant}", ours, dyn_timing,
                                timings.get("hmmlearn"), difference))
            ratio = timings["ours parallel"].median / timings["ours sequential"].median
            parallel_over_sequential.append([num_steps, op, f"{ratio:.3g}"])
    return rows, parallel_over_sequential


def target_summary(rows: list[list[str]]) -> list[str]:
    """Which rows meet the issue's targets: hmmlearn/ours >= 25 and dynamax/ours >= 1.

    ``fit_em`` rows are left out (they time dynamax's compiler); the parallel rows of (c)
    count for dynamax (against its parallel functions) but not for hmmlearn, which has no
    parallel version (the sequential row is the comparison there).
    """
    lines = []
    for column, target, name in ((6, 25.0, "≥ 25× faster than hmmlearn"),
                                 (7, 1.0, "no slower than dynamax")):
        ratios = [(r[0], r[1], float(r[column].rstrip("×"))) for r in rows
                  if r[column] != "n/a" and "fit_em" not in r[1]
                  and not (column == 6 and r[1].endswith("parallel"))]
        missed = [f"{w} / {op}: {ratio:.3g}×" for w, op, ratio in ratios if ratio < target]
        lines.append(f"- {name}: met on {len(ratios) - len(missed)} of {len(ratios)} rows"
                     + ("" if not missed else "; missed on:\n    " + "\n    ".join(missed)))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 repeats, K in {2, 10} for (b), T up to 10 000 for (c)")
    parser.add_argument("--float32", action="store_true",
                        help="run the JAX libraries in float32 (default float64, like hmmlearn)")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", not args.float32)
    warnings.filterwarnings("ignore")  # hmmlearn's and dynamax's deprecation chatter
    repeats = 3 if args.quick else 7
    state_counts = (2, 10) if args.quick else (2, 4, 6, 8, 10)
    lengths = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)

    print(f"# HMM benchmark ({'quick' if args.quick else 'full'} run)\n")
    print(f"{machine_description()}; {os.cpu_count()} CPU(s) visible; "
          f"{'float32' if args.float32 else 'float64'}; median of {repeats} interleaved "
          f"repeats after a first call")
    peers = []
    if dynamax_core is not None:
        import dynamax
        peers.append(f"dynamax {dynamax.__version__}")
    if hmmlearn_hmm is not None:
        import hmmlearn
        peers.append(f"hmmlearn {hmmlearn.__version__}")
    print("peers: " + (", ".join(peers) or "none installed") + "\n")

    rows = workload_a(repeats) + workload_b(repeats, state_counts)
    rows_c, parallel_over_sequential = workload_c(repeats, lengths)
    print_table(HEADERS, rows + rows_c)
    print("\nparallel / sequential time, one sequence (ours; < 1 means the parallel scan wins):\n")
    print_table(["T", "operation", "parallel / sequential"], parallel_over_sequential)
    print("\ntargets of issue 4 §7 (timings on a shared machine are noisy; see the docstring):")
    print("\n".join(target_summary(rows + rows_c)))


if __name__ == "__main__":
    main()
