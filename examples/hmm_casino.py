"""The dishonest casino: sample, fit by Baum–Welch, decode.

A casino rolls a fair die most of the time and secretly swaps in a loaded one that shows a
six half of the time (Durbin, Eddy, Krogh & Mitchison, *Biological Sequence Analysis*, 1998,
§3.2).  Hidden state 0 = fair, 1 = loaded:

    A = [[0.95, 0.05],        b_fair   = (1/6, ..., 1/6)
         [0.10, 0.90]],       b_loaded = (0.1, 0.1, 0.1, 0.1, 0.1, 0.5)

The script

1. samples a batch of roll sequences from that model (``hmm.sample`` vmapped over keys);
2. fits a 2-state categorical HMM by Baum–Welch from several random starting points at once
   (``hmm.baum_welch_with_history`` vmapped over the starts: one compiled EM loop for all
   of them) and
   keeps the start with the highest log-likelihood;
3. matches the fitted states to the true ones (EM identifies states only up to a
   permutation) and prints fitted against true parameters;
4. decodes held-out sequences with Viterbi and with the posterior marginals and prints the
   decoding accuracy, next to that of the true model for reference (the two dice are hard to
   tell apart: even the true model calls only about 80 % of the rolls right);
5. saves ``hmm_casino.png``: p(loaded | all rolls) along one held-out sequence against the
   true die.

Run:  python examples/hmm_casino.py [--quick] [--out DIR] [--seed N]
"""
from __future__ import annotations

import argparse
import itertools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import hmm

FAIR, LOADED = 0, 1
STATE_NAMES = ("fair", "loaded")


def casino_model() -> hmm.HMM:
    """The true model (Durbin et al. 1998): switch fair→loaded 0.05, loaded→fair 0.1."""
    fair_die = [1.0 / 6.0] * 6
    loaded_die = [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]
    return hmm.HMM(initial_probs=jnp.asarray([0.5, 0.5]),
                   transition_matrix=jnp.asarray([[0.95, 0.05], [0.10, 0.90]]),
                   emissions=hmm.Categorical(jnp.asarray([fair_die, loaded_die])))


def random_starts(rng: np.random.Generator, num_starts: int) -> hmm.HMM:
    """``num_starts`` random 2-state, 6-symbol models stacked on a leading axis.

    Staying is likelier than switching.  The emission rows must differ (identical rows are a
    fixed point of EM), so each is the softmax of its own small Gaussian noise: near uniform,
    far from the truth.  (Drawn with NumPy: set-up code with nothing to compile.)
    """
    def softmax(logits):
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return weights / weights.sum(axis=-1, keepdims=True)

    initial_probs = softmax(rng.normal(size=(num_starts, 2)))
    stay = rng.uniform(0.6, 0.95, size=(num_starts, 2))
    transition_matrix = np.stack([np.stack([stay[:, 0], 1 - stay[:, 0]], axis=-1),
                                  np.stack([1 - stay[:, 1], stay[:, 1]], axis=-1)], axis=1)
    probs = softmax(0.3 * rng.normal(size=(num_starts, 2, 6)))
    return hmm.HMM(*(jnp.asarray(a, jnp.float32) for a in (initial_probs, transition_matrix)),
                   hmm.Categorical(jnp.asarray(probs, jnp.float32)))


def best_permutation(fitted: hmm.HMM, truth: hmm.HMM) -> tuple[int, ...]:
    """The relabelling ``perm`` (fitted state ``perm[k]`` is true state ``k``) closest in emissions."""
    fitted_probs = np.asarray(fitted.emissions.probs)
    true_probs = np.asarray(truth.emissions.probs)
    num_states = true_probs.shape[0]
    return min(itertools.permutations(range(num_states)),
               key=lambda perm: np.abs(fitted_probs[list(perm)] - true_probs).sum())


def permute_states(model: hmm.HMM, perm: tuple[int, ...]) -> hmm.HMM:
    """The same model (NumPy arrays) with its states listed in the order ``perm``."""
    order = np.asarray(perm)
    return hmm.HMM(np.asarray(model.initial_probs)[order],
                   np.asarray(model.transition_matrix)[order][:, order],
                   hmm.Categorical(np.asarray(model.emissions.probs)[order]))


def print_parameters(fitted: hmm.HMM, truth: hmm.HMM) -> None:
    fitted, truth = (jax.tree.map(np.asarray, model) for model in (fitted, truth))
    print("\nfitted (true) parameters, states matched to the truth:")
    for i, name in enumerate(STATE_NAMES):
        row = ", ".join(f"{float(fitted.transition_matrix[i, j]):.3f} "
                        f"({float(truth.transition_matrix[i, j]):.3f})" for j in range(2))
        print(f"  p(next | {name:6s}) = [{row}]")
    for i, name in enumerate(STATE_NAMES):
        row = " ".join(f"{float(p):.3f}" for p in fitted.emissions.probs[i])
        true_row = " ".join(f"{float(p):.3f}" for p in truth.emissions.probs[i])
        print(f"  faces 1..6 | {name:6s}: {row}\n  {'(true)':>19s}: {true_row}")


@jax.jit
def evaluate(model: hmm.HMM, rolls: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-sequence log-likelihoods, Viterbi paths and posterior marginals for a batch (B, T).

    One compiled function for every model and for the training and test rolls together.
    """
    log_liks = jax.vmap(hmm.log_likelihood, in_axes=(None, 0))(model, rolls)
    paths, _ = jax.vmap(hmm.viterbi, in_axes=(None, 0))(model, rolls)
    marginals = jax.vmap(hmm.posteriors, in_axes=(None, 0))(model, rolls)
    return log_liks, paths, marginals


def save_plot(path: pathlib.Path, rolls, true_states, loaded_posterior, viterbi_path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(len(rolls))
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.fill_between(steps, 0, np.asarray(true_states == LOADED, float), step="mid", color="0.85",
                    label="true: loaded die")
    ax.plot(steps, loaded_posterior, color="C3", lw=1.4, label="p(loaded | all rolls), fitted model")
    ax.plot(steps, np.where(viterbi_path == LOADED, 1.04, np.nan), "|", color="C0", ms=5,
            label="Viterbi: loaded")
    ax.set(xlabel="roll", ylabel="probability", ylim=(-0.02, 1.3), xlim=(0, len(rolls) - 1),
           title="Dishonest casino: posterior probability of the loaded die")
    ax.legend(loc="upper center", fontsize=8, ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter sequences")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."),
                        help="folder for hmm_casino.png (default: current folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    num_train, num_test, num_rolls, num_starts = (24, 8, 200, 4) if args.quick else (100, 20, 300, 8)
    started = time.perf_counter()

    truth = casino_model()
    sample_batch = jax.vmap(lambda key: hmm.sample(key, truth, num_rolls))
    states, rolls = sample_batch(jax.random.split(jax.random.key(args.seed), num_train + num_test))
    states = np.asarray(states)
    train_rolls, test_states = rolls[:num_train], states[num_train:]
    print(f"sampled {num_train} training and {num_test} test sequences of {num_rolls} rolls; "
          f"{np.mean(states == LOADED):.1%} of rolls used the loaded die")

    starts = random_starts(np.random.default_rng(args.seed), num_starts)
    fit_all = jax.vmap(lambda start: hmm.baum_welch_with_history(start, train_rolls,
                                                                 max_iter=500, tol=1e-4))
    results = fit_all(starts)
    final_log_liks = np.nanmax(np.asarray(results.history), axis=1)
    best = int(np.argmax(final_log_liks))
    print(f"Baum–Welch from {num_starts} random starts (one vmapped, jitted EM loop): "
          f"iterations {np.asarray(results.num_iterations).tolist()}")
    print("  final total log-likelihood per start: "
          + ", ".join(f"{x:.1f}" for x in final_log_liks) + f"; keeping start {best}")
    fitted = jax.tree.map(lambda leaf: np.asarray(leaf)[best], results.model)
    fitted = permute_states(fitted, best_permutation(fitted, truth))
    evaluations = {label: evaluate(model, rolls) for label, model in
                   (("fitted", fitted), ("true", truth))}
    true_log_lik = float(np.sum(evaluations["true"][0][:num_train]))
    print(f"  log-likelihood of the training data: fitted (last iteration) "
          f"{final_log_liks[best]:.1f}, true model {true_log_lik:.1f}")
    print_parameters(fitted, truth)
    error = max(np.max(np.abs(fitted.transition_matrix - np.asarray(truth.transition_matrix))),
                np.max(np.abs(fitted.emissions.probs - np.asarray(truth.emissions.probs))))
    print(f"largest error in a transition or emission probability: {error:.3f}")

    print("\ndecoding the held-out sequences (fraction of rolls whose die is called right):")
    accuracies = {}
    for label, (_, paths, marginals) in evaluations.items():
        paths, marginals = np.asarray(paths)[num_train:], np.asarray(marginals)[num_train:]
        viterbi_accuracy = float(np.mean(paths == test_states))
        posterior_accuracy = float(np.mean(np.argmax(marginals, axis=-1) == test_states))
        accuracies[label] = (viterbi_accuracy, posterior_accuracy, paths, marginals)
        print(f"  {label} model: Viterbi accuracy {viterbi_accuracy:.3f}, "
              f"posterior accuracy {posterior_accuracy:.3f}")
    print(f"casino decoding accuracy (fitted model, Viterbi): {accuracies['fitted'][0]:.3f}")

    args.out.mkdir(parents=True, exist_ok=True)
    _, _, paths, marginals = accuracies["fitted"]
    figure = args.out / "hmm_casino.png"
    save_plot(figure, np.asarray(rolls[num_train]), test_states[0], marginals[0, :, LOADED], paths[0])
    print(f"saved {figure} ({time.perf_counter() - started:.1f} s in all)")


if __name__ == "__main__":
    main()
