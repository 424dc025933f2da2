"""Choosing the number of hidden states by BIC, for a Gaussian and a Poisson HMM.

For each K = 1..6 an HMM is fitted from scratch by ``hmm.fit``: ``--restarts`` random starts
(Dirichlet rows for π and A; k-means means and the data variance for Gaussians, the data's
mean times random factors for Poisson rates), all run as one compiled program, the best
kept.  The Bayesian information criterion

    BIC = −2 log p(x) + p log T,    p = (K − 1) + K (K − 1) + (emission parameters)

(``hmm.bic``, hmmlearn's formula) trades the fit against the number of free parameters.

1. The annual flow of the Nile, 1871–1970 (``load_nile``), with Gaussian emissions: BIC is
   lowest at K = 2, the two levels before and after the drop near 1898.
2. The yearly mean sunspot numbers 1700–2008 (``load_sunspots``), rounded to counts, with
   Poisson emissions ``x_t | z_t = k ~ Poisson(λ_k)``: the counts are so over-dispersed that
   BIC keeps falling up to K = 6; the decoded rates follow the solar cycle.

Saves ``hmm_model_selection.png``: BIC against K and the decoded series, for both.

Run:  python examples/hmm_model_selection.py [--max-states 6] [--restarts 8] [--out DIR]
"""
from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import hmm
from functional_dl.datasets import load_nile, load_sunspots


def select(name, observations, family, max_states, restarts, max_iter):
    """Fit K = 1..max_states from scratch; print and return the BICs and the models."""
    print(f"{name}:")
    bics, models = [], []
    for num_states in range(1, max_states + 1):
        result = hmm.fit(jax.random.key(num_states), observations, num_states=num_states,
                         emissions=family, num_restarts=restarts, max_iter=max_iter)
        bics.append(float(hmm.bic(result.model, observations)))
        models.append(result.model)
        print(f"  K = {num_states}: log-likelihood {float(result.log_likelihood):9.1f}, "
              f"{hmm.num_parameters(result.model):2d} parameters, BIC {bics[-1]:8.1f}")
    best = int(np.argmin(bics))
    print(f"  chosen by BIC: K = {best + 1}")
    return bics, models[best]


def decoded_levels(model, observations, levels):
    states, _ = hmm.viterbi(model, observations)
    return np.asarray(levels)[np.asarray(states)]


def save_plot(path: pathlib.Path, panels) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 3.6 * len(panels)),
                             gridspec_kw={"width_ratios": [1, 3]}, squeeze=False)
    for (left, right), (title, bics, years, values, levels, ylabel) in zip(axes, panels):
        ks = np.arange(1, len(bics) + 1)
        best = int(np.argmin(bics))
        left.plot(ks, bics, "o-", color="C0")
        left.plot([ks[best]], [bics[best]], "o", color="C3", ms=10, label=f"K = {ks[best]}")
        left.set(xlabel="number of states K", ylabel="BIC (lower is better)")
        left.legend(fontsize=8)
        right.plot(years, values, color="0.5", lw=0.8, label="data")
        right.step(years, levels, where="mid", color="C3", lw=1.5,
                   label="level of the Viterbi state")
        right.set(xlabel="year", ylabel=ylabel, title=f"{title}: K = {ks[best]} by BIC")
        right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-states", type=int, default=6, help="fit K = 1..max-states")
    parser.add_argument("--restarts", type=int, default=8, help="random starts per K")
    parser.add_argument("--max-iter", type=int, default=200, help="EM iterations per start")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."),
                        help="folder for hmm_model_selection.png (default: current folder)")
    args = parser.parse_args()
    started = time.perf_counter()
    options = (args.max_states, args.restarts, args.max_iter)

    nile = load_nile()
    flow = jnp.asarray(nile.values)[:, None]  # (T, D = 1)
    nile_bics, nile_model = select(f"{nile.name} ({len(nile.values)} years), Gaussian", flow,
                                   hmm.Gaussian, *options)
    nile_levels = decoded_levels(nile_model, flow, nile_model.emissions.means[:, 0])

    spots = load_sunspots()
    counts = np.rint(spots.values).astype(np.int32)
    observations = jnp.asarray(counts)[:, None]  # (T, D = 1) counts
    spot_bics, spot_model = select(
        f"{spots.name} rounded to counts ({len(counts)} years; mean {counts.mean():.1f}, "
        f"variance {counts.var():.1f}), Poisson", observations, hmm.Poisson, *options)
    spot_levels = decoded_levels(spot_model, observations, spot_model.emissions.rates[:, 0])
    rates = np.sort(np.asarray(spot_model.emissions.rates[:, 0]))
    print(f"  rates of the chosen model: {', '.join(f'{r:.1f}' for r in rates)}")

    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "hmm_model_selection.png"
    save_plot(figure, [("Nile flow, Gaussian HMM", nile_bics, nile.time, nile.values,
                        nile_levels, "10⁸ m³"),
                       ("Sunspots, Poisson HMM", spot_bics, spots.time, counts, spot_levels,
                        "sunspot number")])
    print(f"saved {figure} ({time.perf_counter() - started:.1f} s in all)")


if __name__ == "__main__":
    main()
