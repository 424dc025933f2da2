"""HMM fit from scratch: ``hmm.fit`` with restarts against hmmlearn and dynamax, same starts.

Workload (issue 13): the model-selection example's Poisson HMM, K = 3 states, on the yearly
sunspot numbers rounded to counts (one sequence, T = 309), 10 restarts × at most 50 EM
iterations.

- ours: ``hmm.fit(key, x, num_states=3, emissions=hmm.Poisson, num_restarts=10,
  max_iter=50, tol=0)`` — the random starts and all 10 EM runs in one compiled program;
- hmmlearn: ``PoissonHMM(3, n_iter=50, tol=-inf, init_params="")`` given each of the same
  10 starts (``hmm.random_starts`` with the same key), ``fit`` in a Python loop, as a user
  loops over seeds; maximum-likelihood settings (no priors);
- dynamax: ``PoissonHMM(3, 1).fit_em(params, props, x, num_iters=50)`` per start with its
  default priors (Dirichlet 1.1 rows, Gamma(1.1, 0.1) rates; with maximum-likelihood
  settings its EM gives NaN on these counts), against ours run with the same priors
  (``pseudo_count=0.1``, ``prior_shape=1.1``, ``prior_rate=0.1``).

Ours judges convergence on the EM objective, ℓ + log p(θ) with priors (MAP-EM raises that,
not ℓ alone): with ``tol=0`` a restart stops at its first non-increase, which on these data
is a rounding-level change (a few 1e-12) once EM has reached its fixed point; the numbers of
iterations run are printed below the table.  dynamax and hmmlearn (``tol=-inf``) run all 50.

Each library is timed as the median of ``--repeats`` calls after a first call (ours: compile
reported apart; dynamax's ``fit_em`` compiles on every call, which is how users call it).
The best final log-likelihoods must agree where the EM is the same (ours and hmmlearn;
ours with dynamax's priors and dynamax, the latter scored by our log-likelihood): the last
column is the relative difference to the row above it of the same settings.

Run:  python benchmarks/hmm_fit.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # for _timing
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout first
from _timing import machine_description, print_table, time_fn  # noqa: E402

from functional_dl import hmm  # noqa: E402
from functional_dl.datasets import load_sunspots  # noqa: E402

NUM_STATES, NUM_RESTARTS, NUM_ITERS = 3, 10, 50


def data():
    return np.rint(load_sunspots(dtype=np.float64).values).astype(np.int64)[:, None]


def ours_result(key, x, **priors):
    return hmm.fit(key, jnp.asarray(x), num_states=NUM_STATES, emissions=hmm.Poisson,
                   num_restarts=NUM_RESTARTS, max_iter=NUM_ITERS, tol=0.0, **priors)


def ours(key, x, **priors):
    return float(ours_result(key, x, **priors).log_likelihood)


#: dynamax's default priors (Dirichlet(1.1) rows, Gamma(1.1, 0.1) rates) in our terms: its
#: maximum-likelihood settings give NaN on these data (a rate driven to 0 on the zero counts)
DYNAMAX_PRIORS = dict(pseudo_count=0.1,
                      emission_hyperparameters={"prior_shape": 1.1, "prior_rate": 0.1})


def starts(key, x):
    stacked = hmm.random_starts(key, jnp.asarray(x), num_states=NUM_STATES,
                                emissions=hmm.Poisson, num_restarts=NUM_RESTARTS)
    return [jax.tree.map(lambda leaf: np.asarray(leaf[r], np.float64), stacked)
            for r in range(NUM_RESTARTS)]


def hmmlearn_fit(models, x):
    from hmmlearn.hmm import PoissonHMM
    best = -np.inf
    for model in models:
        peer = PoissonHMM(NUM_STATES, n_iter=NUM_ITERS, tol=-np.inf, init_params="",
                          params="stl", implementation="scaling")
        peer.startprob_ = model.initial_probs
        peer.transmat_ = model.transition_matrix
        peer.lambdas_ = model.emissions.rates
        peer.fit(x)
        best = max(best, peer.score(x))
    return best


def dynamax_fit(models, x):
    from dynamax.hidden_markov_model import PoissonHMM
    peer = PoissonHMM(NUM_STATES, 1)  # its default priors: DYNAMAX_PRIORS
    emissions = jnp.asarray(x, jnp.float64)
    best = -np.inf
    for model in models:
        params, props = peer.initialize(initial_probs=jnp.asarray(model.initial_probs),
                                        transition_matrix=jnp.asarray(model.transition_matrix),
                                        emission_rates=jnp.asarray(model.emissions.rates))
        params, _ = peer.fit_em(params, props, emissions, num_iters=NUM_ITERS, verbose=False)
        # scored by our log-likelihood (its marginal_log_prob adds the log prior)
        fitted = hmm.HMM(params.initial.probs, params.transitions.transition_matrix,
                         hmm.Poisson(params.emissions.rates))
        best = max(best, float(hmm.score(fitted, emissions)))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    warnings.filterwarnings("ignore")
    x = data()
    key = jax.random.key(0)
    models = starts(key, x)
    runners = {"functional_dl (hmm.fit, one program)": lambda: ours(key, x)}
    try:
        import hmmlearn  # noqa: F401
        runners[f"hmmlearn {hmmlearn.__version__} (PoissonHMM.fit, loop)"] = \
            lambda: hmmlearn_fit(models, x)
    except ImportError:
        pass
    try:
        import dynamax  # noqa: F401
        runners["functional_dl with dynamax's priors"] = lambda: ours(key, x, **DYNAMAX_PRIORS)
        runners[f"dynamax {dynamax.__version__} (fit_em, loop; its priors)"] = \
            lambda: dynamax_fit(models, x)
    except ImportError:
        pass
    print(f"# HMM fit from scratch: Poisson, K = {NUM_STATES}, sunspot counts T = {len(x)}, "
          f"{NUM_RESTARTS} restarts × at most {NUM_ITERS} EM iterations, float64\n")
    print(f"{machine_description()}; median of {args.repeats} calls after a first call\n")
    results, medians, rows = {}, {}, []
    for name, run in runners.items():
        timing = time_fn(run, repeats=args.repeats)  # its first call compiles
        results[name], medians[name] = run(), timing["median"]
        rows.append([name, f"{timing['median'] * 1e3:.1f}", f"{timing['first'] * 1e3:.0f}",
                     f"{results[name]:.6f}"])
    names = list(results)
    pairs = {names[1]: names[0]} if len(names) > 1 else {}
    if len(names) > 3:
        pairs[names[3]] = names[2]
    for row, name in zip(rows, names):
        same_settings = pairs.get(name, name)
        row.append(f"{medians[name] / medians[same_settings]:.2f}")
        row.append(f"{abs(results[name] - results[same_settings]) / abs(results[same_settings]):.1e}")
    print_table(["", "ms (median)", "first call ms", "best log-likelihood",
                 "time / ours (same settings)", "relative difference to ours"], rows)
    for label, priors in (("ours", {}), ("ours with dynamax's priors", DYNAMAX_PRIORS)):
        if label == "ours" or len(names) > 3:
            restarts = ours_result(key, x, **priors).restarts
            statuses = sorted({hmm.EMStatus(int(s)).name for s in restarts.status})
            print(f"\n{label}: EM iterations per restart {restarts.num_iterations.tolist()} "
                  f"({', '.join(statuses)})", end="")
    print()


if __name__ == "__main__":
    main()
