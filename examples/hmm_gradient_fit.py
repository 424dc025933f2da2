"""Fitting an HMM by gradient ascent on the log-likelihood, compared with Baum–Welch.

Baum–Welch is not the only way to fit an HMM: ``hmm.log_likelihood`` is differentiable, so
the parameters can be written as unconstrained logits,

    π = softmax(a),    A_i = softmax(B_i),    b_k = softmax(C_k),

and the mean log-likelihood per observation of a batch of sequences,

    L(a, B, C) = (1 / (N T)) Σ_n log p(x_n; π, A, b),

maximised with ``jax.grad`` (through ``jax.vmap`` over the batch) and
``functional_dl.optim.adam``.  This is how an HMM becomes one layer of a larger model
trained end to end; here it is checked against Baum–Welch run from the same starting point
on the same data (the dishonest casino of ``hmm_casino.py``: 2 states, a fair and a loaded die).
Both should reach the same maximum of the likelihood.  The script prints how many steps each
needed to come within 1e-4 per observation of its final value: EM's monotone but linear
convergence can be slow when the states overlap, as they do here, while Adam on the logits
is not monotone but often gets there in fewer (similarly priced) steps.

Saves ``hmm_gradient_fit.png``: the distance of each method's log-likelihood from the best one
found, step by step.

Run:  python examples/hmm_gradient_fit.py [--quick] [--steps N] [--out DIR]
"""
from __future__ import annotations

import argparse
import itertools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from functional_dl import hmm, optim


def casino_model() -> hmm.HMM:
    """Fair die and a die that shows six half of the time (Durbin et al. 1998, §3.2)."""
    return hmm.HMM(initial_probs=jnp.asarray([0.5, 0.5]),
                   transition_matrix=jnp.asarray([[0.95, 0.05], [0.10, 0.90]]),
                   emissions=hmm.Categorical(jnp.asarray([[1 / 6] * 6,
                                                          [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]])))


def model_from_logits(logits: dict) -> hmm.HMM:
    """The HMM whose probabilities are the (row-wise) softmax of ``logits``."""
    return hmm.HMM(jax.nn.softmax(logits["initial"]),
                   jax.nn.softmax(logits["transition"], axis=-1),
                   hmm.Categorical(jax.nn.softmax(logits["emission"], axis=-1)))


def random_logits(rng: np.random.Generator, num_states: int, num_symbols: int) -> dict:
    """Small random logits; the diagonal of A gets +1.5 so that states persist at first.

    (Drawn with NumPy: set-up code with nothing to compile.)
    """
    logits = {"initial": 0.5 * rng.normal(size=num_states),
              "transition": 0.5 * rng.normal(size=(num_states, num_states)) + 1.5 * np.eye(num_states),
              "emission": 0.3 * rng.normal(size=(num_states, num_symbols))}
    return {name: jnp.asarray(value, jnp.float32) for name, value in logits.items()}


def mean_log_likelihood(logits: dict, sequences: jax.Array) -> jax.Array:
    """``(1 / (N T)) Σ_n log p(x_n)`` for a batch (N, T) of symbol sequences."""
    model = model_from_logits(logits)
    per_sequence = jax.vmap(hmm.log_likelihood, in_axes=(None, 0))(model, sequences)
    return jnp.mean(per_sequence) / sequences.shape[1]


def make_trainer(optimizer: optim.Optimizer, num_steps: int):
    """``num_steps`` optimizer steps on ``−mean_log_likelihood``, all in one jitted ``lax.scan``."""
    loss_and_grad = jax.value_and_grad(lambda logits, x: -mean_log_likelihood(logits, x))

    @jax.jit
    def train(logits, opt_state, sequences):
        def _step(carry, _):
            """One gradient step; records the objective before the step."""
            logits, opt_state = carry
            loss, grads = loss_and_grad(logits, sequences)
            updates, opt_state = optimizer.update(grads, opt_state, logits)
            return (optim.apply_updates(logits, updates), opt_state), -loss

        (logits, opt_state), objective = jax.lax.scan(_step, (logits, opt_state), None,
                                                      length=num_steps)
        return logits, opt_state, objective

    return train


def steps_to_reach(trajectory: np.ndarray, final: float, within: float = 1e-4) -> int:
    """First index from which the trajectory stays within ``within`` of ``final``."""
    far = np.flatnonzero(np.abs(trajectory - final) > within)
    return 0 if len(far) == 0 else int(far[-1]) + 1


def matched_max_difference(first: hmm.HMM, second: hmm.HMM) -> float:
    """Largest difference in A or the emission probabilities under the best state relabelling."""
    num_states = first.initial_probs.shape[0]
    best = np.inf
    for perm in itertools.permutations(range(num_states)):
        order = np.asarray(perm)
        difference = max(
            np.abs(np.asarray(first.transition_matrix)[order][:, order]
                   - np.asarray(second.transition_matrix)).max(),
            np.abs(np.asarray(first.emissions.probs)[order] - np.asarray(second.emissions.probs)).max())
        best = min(best, float(difference))
    return best


def save_plot(path: pathlib.Path, gradient_trajectory, em_trajectory, learning_rate) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = max(gradient_trajectory.max(), em_trajectory.max())
    floor = 1e-7  # so that the best point itself shows on the log scale
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.semilogy(best - gradient_trajectory + floor, color="C0",
                label=f"Adam on logits (lr {learning_rate:g}), per step")
    ax.semilogy(best - em_trajectory + floor, color="C3", label="Baum–Welch, per iteration")
    ax.set(xlabel="step / iteration", ylabel="best − mean log-likelihood per roll",
           title="Fitting the casino HMM: gradient ascent vs EM")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less data, fewer steps")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default 600, quick 300)")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."),
                        help="folder for hmm_gradient_fit.png (default: current folder)")
    args = parser.parse_args()
    num_sequences, num_rolls = (32, 200) if args.quick else (64, 300)
    num_steps = args.steps or (300 if args.quick else 600)
    started = time.perf_counter()

    truth = casino_model()
    sample_batch = jax.vmap(lambda key: hmm.sample(key, truth, num_rolls))
    _, rolls = sample_batch(jax.random.split(jax.random.key(args.seed), num_sequences))
    initial_logits = random_logits(np.random.default_rng(args.seed), 2, 6)
    num_observations = num_sequences * num_rolls
    print(f"{num_sequences} casino sequences of {num_rolls} rolls; objective: mean "
          f"log-likelihood per roll (the true model scores "
          f"{float(mean_log_likelihood_of(truth, rolls)):.5f})")

    optimizer = optim.adam(args.learning_rate)
    train = make_trainer(optimizer, num_steps)
    logits, _, objective = train(initial_logits, optimizer.init(initial_logits), rolls)
    gradient_model = model_from_logits(logits)
    gradient_score = float(mean_log_likelihood_of(gradient_model, rolls))
    trajectory = np.append(np.asarray(objective), gradient_score)
    print(f"\ngradient ascent: Adam(learning rate {args.learning_rate}) on the logits, "
          f"jax.grad through the vmapped log_likelihood")
    for step in sorted({0, 1, 2, 5, 10, 20, 50, 100, 200, num_steps}):
        if step <= num_steps:
            print(f"  step {step:4d}: {trajectory[step]:.5f}")

    start = model_from_logits(initial_logits)
    result = hmm.baum_welch_with_history(start, rolls, max_iter=500, tol=1e-6 * num_observations)
    em_score = float(mean_log_likelihood_of(result.model, rolls))
    em_history = np.append(np.asarray(result.history)[:int(result.num_iterations)],
                           em_score * num_observations) / num_observations
    print(f"\nBaum–Welch from the same start (tol {1e-6:g} per roll): "
          f"{int(result.num_iterations)} iterations")
    for iteration in sorted({0, 1, 2, 5, 10, 20, 50, 100, len(em_history) - 1}):
        if iteration < len(em_history):
            print(f"  iteration {iteration:4d}: {em_history[iteration]:.5f}")

    print(f"\nsteps to come within 1e-4 per roll of the final value: gradient "
          f"{steps_to_reach(trajectory, gradient_score)}, Baum–Welch "
          f"{steps_to_reach(em_history, em_score)}")
    gap = em_score - gradient_score
    print(f"final mean log-likelihood per roll: gradient {gradient_score:.5f} after "
          f"{num_steps} steps, Baum–Welch {em_score:.5f} after {int(result.num_iterations)} "
          f"iterations")
    print(f"gap (Baum–Welch − gradient) per roll: {gap:.2e}")
    print(f"largest difference between the two fitted models' probabilities: "
          f"{matched_max_difference(gradient_model, result.model):.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "hmm_gradient_fit.png"
    save_plot(figure, trajectory, em_history, args.learning_rate)
    print(f"saved {figure} ({time.perf_counter() - started:.1f} s in all)")


@jax.jit
def mean_log_likelihood_of(model: hmm.HMM, sequences: jax.Array) -> jax.Array:
    """``mean_log_likelihood`` for a model given by its probabilities."""
    per_sequence = jax.vmap(hmm.log_likelihood, in_axes=(None, 0))(model, sequences)
    return jnp.mean(per_sequence) / sequences.shape[1]


if __name__ == "__main__":
    main()
