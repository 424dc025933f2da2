"""Real data: the change in the level of the Nile, found by a 2-state Gaussian HMM.

The annual flow of the Nile at Aswan, 1871–1970 (``functional_dl.datasets.load_nile``), is
known to drop around 1898 (Cobb 1978, "The problem of the Nile: conditional solution to a
changepoint problem", *Biometrika* 65(2); the first Aswan dam was begun in 1898).  A hidden
Markov model with two states, "high" and "low", each with its own Gaussian level

    x_t | z_t = k  ~  N(μ_k, σ²_k),    p(z_t = j | z_{t−1} = i) = A_ij,

is fitted by Baum–Welch (``hmm.baum_welch_with_history``) from a deliberately neutral start:
the two means at the 75 % and 25 % quantiles of the series, both variances equal to the
variance of the whole series, A = [[0.9, 0.1], [0.1, 0.9]].  Nothing tells the model that there is a
single change; it learns from the data that the low state is (almost) never left.
Viterbi (``hmm.viterbi``) gives the decoded regimes and the change year, ``hmm.posteriors``
the probability of the low regime year by year.

Saves ``hmm_nile.png``: the series with the decoded state means.

Run:  python examples/hmm_nile.py [--out DIR]
"""
from __future__ import annotations

import argparse
import pathlib
import time

import jax.numpy as jnp
import numpy as np

from functional_dl import hmm
from functional_dl.datasets import load_nile


def initial_model(flow: np.ndarray) -> hmm.HMM:
    """Two states at the upper and lower quartiles, each with the variance of all the data."""
    low, high = np.quantile(flow, [0.25, 0.75])
    variance = np.var(flow)
    return hmm.HMM(initial_probs=jnp.array([0.5, 0.5]),
                   transition_matrix=jnp.array([[0.9, 0.1], [0.1, 0.9]]),
                   emissions=hmm.DiagonalGaussian(means=jnp.array([[high], [low]]),
                                                  variances=jnp.full((2, 1), variance)))


def save_plot(path: pathlib.Path, years, flow, decoded_levels, low_probability, change_year) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot(years, flow, "o-", color="0.45", ms=3, lw=0.8, label="annual flow")
    top.step(years, decoded_levels, where="mid", color="C3", lw=2,
             label="mean of the Viterbi state")
    top.axvline(change_year - 0.5, color="C0", ls="--", lw=1, label=f"decoded change ({change_year})")
    top.set(ylabel="flow (10⁸ m³)", title="Nile at Aswan, 1871–1970: 2-state Gaussian HMM")
    top.legend(fontsize=8, loc="upper right")
    bottom.fill_between(years, low_probability, step="mid", color="C0", alpha=0.6)
    bottom.set(xlabel="year", ylabel="p(low | data)", ylim=(0, 1.05))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."),
                        help="folder for hmm_nile.png (default: current folder)")
    args = parser.parse_args()
    started = time.perf_counter()

    nile = load_nile()
    years, flow = nile.time, nile.values
    observations = jnp.asarray(flow)[:, None]  # (T, D = 1)
    print(f"{nile.name}, {years[0]}–{years[-1]}: {len(flow)} values in {nile.units}, "
          f"mean {flow.mean():.1f}")

    start = initial_model(flow)
    result = hmm.baum_welch_with_history(start, observations, max_iter=200, tol=1e-4)
    fitted = result.model
    history = np.asarray(result.history)[:int(result.num_iterations)]
    print(f"Baum–Welch: {int(result.num_iterations)} iterations, converged: {bool(result.converged)}, "
          f"log-likelihood {history[0]:.2f} -> {history[-1]:.2f}")

    high, low = (int(k) for k in np.argsort(-np.asarray(fitted.emissions.means[:, 0])))
    means = np.asarray(fitted.emissions.means[:, 0])
    deviations = np.sqrt(np.asarray(fitted.emissions.variances[:, 0]))
    print(f"fitted levels: high {means[high]:.1f} (sd {deviations[high]:.1f}), "
          f"low {means[low]:.1f} (sd {deviations[low]:.1f})")
    transition = np.asarray(fitted.transition_matrix)
    print(f"fitted p(high -> low) = {transition[high, low]:.4f}, "
          f"p(low -> high) = {transition[low, high]:.2e}")

    states, log_prob = hmm.viterbi(fitted, observations)
    states = np.asarray(states)
    switches = years[1:][states[1:] != states[:-1]]
    print(f"Viterbi path (log p = {float(log_prob):.2f}) switches state in: "
          f"{', '.join(str(y) for y in switches) or 'never'}")
    low_years = years[states == low]
    change_year = int(low_years[0]) if len(low_years) else int(years[-1]) + 1
    print(f"Nile change year (first year in the low state): {change_year}")
    before, after = flow[years < change_year], flow[years >= change_year]
    print(f"plain means of the data before / from the change year: {before.mean():.1f} / "
          f"{after.mean():.1f}")

    low_probability = np.asarray(hmm.posteriors(fitted, observations)[:, low])
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "hmm_nile.png"
    save_plot(figure, years, flow, means[states], low_probability, change_year)
    print(f"saved {figure} ({time.perf_counter() - started:.1f} s in all)")


if __name__ == "__main__":
    main()
