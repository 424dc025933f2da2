"""HMM batch sweep (issue 14): time per sequence-step as the batch grows, against dynamax and
hmmlearn, with a roofline estimate for each row.

Workload: categorical emissions, V = 16 symbols, T = 1000 steps, K ∈ {4, 8, 32} states,
B ∈ {1, 16, 64, 256, 1024, 4096} sequences sampled from a random model, float32 and
float64.  Operations: log-likelihood, posterior marginals, Viterbi, one EM iteration.

- ours: ``jax.jit(jax.vmap(...))`` of ``hmm.forward_filter`` / ``hmm.smoother`` /
  ``hmm.most_likely_states`` on the precomputed ``(B, T, K)`` log-likelihoods; EM: one
  jitted ``hmm.e_step`` + ``hmm.m_step`` on the observations (emission log-likelihoods
  included);
- dynamax: ``jax.jit(jax.vmap(...))`` of ``hmm_filter`` / ``hmm_smoother`` /
  ``hmm_posterior_mode`` on the same log-likelihoods; EM: its ``e_step`` + ``m_step``
  jitted once (Dirichlet concentrations 1: maximum likelihood, like ours);
- hmmlearn ``CategoricalHMM``, ``implementation="scaling"`` and ``"log"`` (its two): ``score``,
  ``predict_proba``, ``decode``, ``fit`` with ``n_iter=1``, on the concatenated sequences
  (float64 always; hmmlearn rows are skipped above ``--hmmlearn-max-steps`` B·T steps).

Each implementation of a row is timed interleaved with the others (``hmm.compare``): median
of several repeats after a first call.  ``ns/step`` is ours per sequence-step.  Roofline:
``flops`` is the arithmetic of the recursion per sequence-step (forward ``2K² + 5K``, twice
that plus ``3K`` for posteriors, ``2K² + 2K`` for Viterbi, posteriors plus ``2K²`` for EM)
at the machine's measured matmul rate; ``bytes`` are the ``(B, T, K)`` arrays read and
written (log-likelihoods; posteriors and EM also write γ) at the measured copy bandwidth;
the estimate is the larger of the two and ``roofline`` is estimate / ours (1 = at the bound).

Run:  python benchmarks/hmm_batch.py [--quick] [--states 8] [--batches 1 256 4096]
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # for _timing, hmm
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout first
import hmm as hmm_bench  # noqa: E402  (benchmarks/hmm.py: timing, peers, models)
from _timing import machine_description, print_table  # noqa: E402

from functional_dl import hmm  # noqa: E402

HEADERS = ["dtype", "K", "B", "operation", "ours (ms)", "ns/step", "dynamax/ours",
           "hmmlearn scaling/ours", "hmmlearn log/ours", "roofline", "max |Δ|"]
NUM_STEPS = 1000
NUM_SYMBOLS = 16


def machine_rates(dtype) -> tuple[float, float]:
    """(matmul FLOP/s, copy bytes/s) measured here: a 1024² matmul, a 256 MiB ``x + 1``."""
    a = jnp.ones((1024, 1024), dtype)
    matmul = jax.jit(lambda x: x @ x)
    copy = jax.jit(lambda x: x + 1)
    big = jnp.ones((2 ** 28 // jnp.dtype(dtype).itemsize,), dtype)
    rates = []
    for fn, x, work in ((matmul, a, 2 * 1024 ** 3), (copy, big, 2 * big.nbytes)):
        fn(x).block_until_ready()
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            fn(x).block_until_ready()
            samples.append(time.perf_counter() - started)
        rates.append(work / min(samples))
    return rates[0], rates[1]


def roofline_seconds(op, batch_size, num_states, itemsize, rates) -> float:
    k = num_states
    forward = 2 * k * k + 5 * k
    flops = {"log_likelihood": forward, "posteriors": 2 * forward + 3 * k,
             "viterbi": 2 * k * k + 2 * k, "EM iteration": 2 * forward + 3 * k + 2 * k * k}[op]
    arrays = {"log_likelihood": 1, "posteriors": 2, "viterbi": 1, "EM iteration": 2}[op]
    steps = batch_size * NUM_STEPS
    return max(steps * flops / rates[0], steps * k * itemsize * arrays / rates[1])


def _ours():
    batched = lambda fn: jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))  # noqa: E731
    return {
        "log_likelihood": batched(lambda pi, a, ll: hmm.forward_filter(pi, a, ll)[0]),
        "posteriors": batched(lambda pi, a, ll: hmm.smoother(pi, a, ll).smoothed_probs),
        "viterbi": batched(lambda pi, a, ll: hmm.most_likely_states(pi, a, ll)[0]),
        "EM iteration": jax.jit(lambda model, x: hmm.m_step(model, hmm.e_step(model, x)[1])),
    }


def _dynamax():
    if hmm_bench.dynamax_core is None:
        return None
    core = hmm_bench.dynamax_core
    batched = lambda fn: jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))  # noqa: E731
    return {
        "log_likelihood": batched(lambda pi, a, ll: core.hmm_filter(pi, a, ll).marginal_loglik),
        "posteriors": batched(lambda pi, a, ll: core.hmm_smoother(pi, a, ll).smoothed_probs),
        "viterbi": batched(lambda pi, a, ll: core.hmm_posterior_mode(pi, a, ll)),
    }


def _hmmlearn(model, implementation):
    estimator = hmm_bench.hmmlearn_hmm.CategoricalHMM(
        n_components=model.num_states, n_features=NUM_SYMBOLS, init_params="", n_iter=1,
        tol=-math.inf, implementation=implementation)
    start = {"startprob_": np.asarray(model.initial_probs, np.float64),
             "transmat_": np.asarray(model.transition_matrix, np.float64),
             "emissionprob_": np.asarray(model.emissions.probs, np.float64)}

    def fit(x, lengths):
        for name, value in start.items():
            setattr(estimator, name, value.copy())
        return estimator.fit(x, lengths).transmat_

    for name, value in start.items():
        setattr(estimator, name, value.copy())
    return {"log_likelihood": lambda x, n: estimator.score(x, n),  # the total over the batch
            "posteriors": lambda x, n: estimator.predict_proba(x, n).reshape(len(n), -1,
                                                                             model.num_states),
            "viterbi": lambda x, n: estimator.decode(x, n)[1].reshape(len(n), -1),
            "EM iteration": fit}


def sweep_rows(dtype, num_states, batch_sizes, repeats, hmmlearn_max_steps, rates,
               max_em_bytes):
    ours, dyn = _ours(), _dynamax()
    rng = np.random.default_rng(num_states)
    model = hmm_bench.random_categorical_model(rng, num_states, NUM_SYMBOLS)
    model = jax.tree.map(lambda a: a.astype(dtype), model)
    rows = []
    for batch_size in batch_sizes:
        x = hmm_bench.sample_batch(jax.random.key(batch_size), model, batch_size,
                                   NUM_STEPS).astype(jnp.int32)
        ll = jax.jit(jax.vmap(model.emissions.log_likelihoods))(x)
        dyn_em = hmm_bench.DynamaxRunner(model) if dyn is not None else None
        learners = {}
        if hmm_bench.hmmlearn_hmm is not None and batch_size * NUM_STEPS <= hmmlearn_max_steps:
            learners = {impl: _hmmlearn(model, impl) for impl in ("scaling", "log")}
        flat, lengths = np.asarray(x).reshape(-1, 1), np.full(batch_size, NUM_STEPS)
        pi, a = model.initial_probs, model.transition_matrix
        for op in ("log_likelihood", "posteriors", "viterbi", "EM iteration"):
            if op == "EM iteration" and ll.nbytes > max_em_bytes:
                print(f"| {jnp.dtype(dtype).name} | {num_states} | {batch_size} | {op} | "
                      f"skipped: (B, T, K) arrays of {ll.nbytes / 2**20:.0f} MiB exceed "
                      f"--max-em-mib |", flush=True)
                continue
            if op == "EM iteration":
                thunks = {"ours": lambda: ours[op](model, x).transition_matrix}
                if dyn_em is not None:
                    thunks["dynamax"] = lambda: dyn_em.em_steps(dyn_em.prepare(x), 1)
            else:
                thunks = {"ours": lambda op=op: ours[op](pi, a, ll)}
                if dyn is not None:
                    thunks["dynamax"] = lambda op=op: dyn[op](pi, a, ll)
            for impl, methods in learners.items():
                thunks[f"hmmlearn {impl}"] = lambda m=methods[op]: m(flat, lengths)
            timings = hmm_bench.compare(thunks, repeats)
            ours_t = timings["ours"].median
            outputs = {name: np.asarray(t.output) for name, t in timings.items()}
            if op == "viterbi":  # compare path log-probabilities: ties break differently
                outputs = {n: hmm_bench.path_log_probs(model, x, o.astype(np.int64))
                           for n, o in outputs.items()}
            outputs = {name: o.astype(np.float64) for name, o in outputs.items()}
            if op == "log_likelihood":  # hmmlearn gives the total: compare totals
                outputs = {name: np.sum(o) for name, o in outputs.items()}
            ref = outputs.pop("ours")
            scale = np.abs(ref) if op in ("log_likelihood", "viterbi") else 1.0
            difference = max((float(np.max(np.abs(o.reshape(ref.shape) - ref) / scale))
                              for o in outputs.values()), default=None)

            def ratio(name):
                return "n/a" if name not in timings else f"{timings[name].median / ours_t:.3g}×"

            estimate = roofline_seconds(op, batch_size, num_states, jnp.dtype(dtype).itemsize,
                                        rates)
            rows.append([jnp.dtype(dtype).name, num_states, batch_size, op,
                         f"{1e3 * ours_t:.3g}", f"{1e9 * ours_t / (batch_size * NUM_STEPS):.3g}",
                         ratio("dynamax"), ratio("hmmlearn scaling"), ratio("hmmlearn log"),
                         f"{estimate / ours_t:.2f}",
                         "" if difference is None else f"{difference:.1e}"])
            print("| " + " | ".join(str(c) for c in rows[-1]) + " |", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, K = 8, float32 only")
    parser.add_argument("--states", type=int, nargs="*", default=None)
    parser.add_argument("--batches", type=int, nargs="*", default=None)
    parser.add_argument("--dtypes", nargs="*", default=None, choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--hmmlearn-max-steps", type=int, default=1_100_000,
                        help="largest B·T for which hmmlearn is timed (it is slow)")
    parser.add_argument("--max-em-mib", type=float, default=600,
                        help="skip EM rows whose (B, T, K) log-likelihoods exceed this size "
                             "(EM holds several such arrays, for both JAX libraries)")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)  # float64 rows need it; float32 arrays stay so
    warnings.filterwarnings("ignore")  # the peers' deprecation chatter
    states = args.states or ([8] if args.quick else [4, 8, 32])
    batches = args.batches or [1, 16, 64, 256, 1024, 4096]
    dtypes = args.dtypes or (["float32"] if args.quick else ["float32", "float64"])
    repeats = args.repeats or (3 if args.quick else 5)
    print(f"# HMM batch sweep, T = {NUM_STEPS}, V = {NUM_SYMBOLS}\n")
    print(f"{machine_description()}; median of {repeats} interleaved repeats\n")
    all_rows = []
    for dtype in dtypes:
        rates = machine_rates(jnp.dtype(dtype))
        print(f"{dtype}: matmul {rates[0] / 1e9:.3g} GFLOP/s, copy {rates[1] / 1e9:.3g} GB/s\n")
        print_table(HEADERS, [])
        for num_states in states:
            all_rows += sweep_rows(jnp.dtype(dtype), num_states, batches, repeats,
                                   args.hmmlearn_max_steps, rates, args.max_em_mib * 2**20)
        print()
    print_table(HEADERS, all_rows)


if __name__ == "__main__":
    main()
