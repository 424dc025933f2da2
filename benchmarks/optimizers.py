"""Optimizer step time against the memory-bandwidth bound (and against optax, if installed).

What is timed: one jitted training step ``(params, state, grads) -> (params', state')``
(``update`` followed by ``apply_updates``), with ``params`` and ``state`` donated, as a
training loop runs it.  Two trees: 10M float32 parameters in 4 leaves, and 400 small leaves.

The bound: a donated, jitted ``x + y`` over the same tree moves 3 arrays (read x, y; write
x).  An optimizer must move, per parameter,

    sgd 3 (read θ, g; write θ) · momentum, adagrad, rmsprop, lion 5 (+ one state array read
    and written) · centered rmsprop, adam, adamw, nadam, radam, adamax, adabelief, lamb 7
    (two state arrays) · amsgrad 9 (three) · adafactor 5 on these 1-D leaves (unfactored;
    a factored matrix needs 3 plus its row and column statistics)

so its bound is ``t(x + y) · arrays / 3``.  The table gives the median step time, the
effective bandwidth ``arrays · bytes / time`` and the fraction ``bound / time`` (1.0 means
as fast as streaming the data once).

It also gives the arrays the compiled program really moves (XLA's cost analysis) and the
fraction of *that* bound.  XLA's CPU backend emits one single-output loop per updated
array, so a state array written by the update is read back by the parameter update (e.g.
Adam: m' from (m, g), v' from (v, g), θ' from (θ, m', v'): 10 arrays, not 7); optax compiles
to the same kernels.  On CPU the first fraction is therefore capped at needed / moved
(momentum 5/6, adagrad and rmsprop 5/7, adam 7/10).

``x + y``, ours and optax are timed in alternating rounds per optimizer, so a shared
machine's load falls on all three alike.  Run ``python benchmarks/optimizers.py --quick``
for a short run; numbers on a shared CPU are noisy, so compare columns of one run.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import machine_description, print_table, time_fn  # noqa: E402

from functional_dl import optim  # noqa: E402

try:
    import optax
except ImportError:  # peers are optional
    optax = None

LR = 1e-3

# name: (ours, optax's equivalent with the same settings, arrays moved per parameter)
OPTIMIZERS = {
    "sgd": (lambda: optim.sgd(LR), lambda: optax.sgd(LR), 3),
    "momentum": (lambda: optim.momentum(LR, beta=0.9), lambda: optax.sgd(LR, momentum=0.9), 5),
    "nesterov": (lambda: optim.momentum(LR, beta=0.9, nesterov=True),
                 lambda: optax.sgd(LR, momentum=0.9, nesterov=True), 5),
    "adagrad": (lambda: optim.adagrad(LR, eps=1e-10),
                lambda: optax.adagrad(LR, initial_accumulator_value=0.0, eps=1e-10), 5),
    "rmsprop": (lambda: optim.rmsprop(LR), lambda: optax.rmsprop(LR), 5),
    "rmsprop_centered": (lambda: optim.rmsprop(LR, centered=True),
                         lambda: optax.rmsprop(LR, centered=True), 7),
    "adam": (lambda: optim.adam(LR), lambda: optax.adam(LR), 7),
    "adamw": (lambda: optim.adamw(LR, weight_decay=1e-4),
              lambda: optax.adamw(LR, weight_decay=1e-4), 7),
    # optax's amsgrad takes the maximum of the corrected v̂ (ours: torch's raw v); same traffic
    "adam_amsgrad": (lambda: optim.adam(LR, amsgrad=True), lambda: optax.amsgrad(LR), 9),
    "nadam": (lambda: optim.nadam(LR), lambda: optax.nadam(LR), 7),
    "nadamw": (lambda: optim.nadamw(LR, weight_decay=1e-4),
               lambda: optax.nadamw(LR, weight_decay=1e-4), 7),
    "radam": (lambda: optim.radam(LR), lambda: optax.radam(LR), 7),
    "adamax": (lambda: optim.adamax(LR), lambda: optax.adamax(LR), 7),
    "adabelief": (lambda: optim.adabelief(LR), lambda: optax.adabelief(LR), 7),
    "lion": (lambda: optim.lion(LR), lambda: optax.lion(LR), 5),
    "lamb": (lambda: optim.lamb(LR), lambda: optax.lamb(LR), 7),
    "adafactor": (lambda: optim.adafactor(LR), lambda: optax.adafactor(LR), 5),
}


def make_tree(n_leaves: int, leaf_size: int, seed: int) -> dict:
    keys = jax.random.split(jax.random.key(seed), n_leaves)
    return {f"leaf_{i:03d}": jax.random.normal(k, (leaf_size,), jnp.float32)
            for i, k in enumerate(keys)}


class DonatedLoop:
    """A jitted step whose first arguments are donated, threaded through its own outputs."""

    def __init__(self, step, carry, *constants):
        self.step, self.carry, self.constants = step, carry, constants
        self.donation_checked = None

    def __call__(self):
        previous = jax.tree_util.tree_leaves(self.carry)[0]
        self.carry = self.step(*self.carry, *self.constants)
        if self.donation_checked is None:
            self.donation_checked = previous.is_deleted()
        return self.carry


def make_step(optimizer, apply_updates):
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def compiled_arrays_moved(step, args, array_bytes: int) -> float:
    """Arrays (of one tree's size) that the compiled program reads and writes, from XLA's
    cost analysis: what the kernels XLA actually emits must move, as opposed to the
    minimum an ideal fused update needs."""
    analysis = step.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("bytes accessed", float("nan"))) / array_bytes


def make_add_probe(tree) -> DonatedLoop:
    """A donated, jitted ``x + y`` over ``tree`` (3 arrays moved)."""
    add = jax.jit(lambda x, y: (jax.tree_util.tree_map(jnp.add, x, y),), donate_argnums=0)
    return DonatedLoop(add, (jax.tree_util.tree_map(jnp.copy, tree),),
                       jax.tree_util.tree_map(lambda a: a * 0.5, tree))


def interleaved_times(loops: dict, rounds: int, repeats: int, number: int,
                      statistic: str) -> dict:
    """Seconds per call of each loop, timed in alternating rounds so that the load of a
    shared machine falls on all of them alike: the median over rounds of each round's
    median (``statistic="median"``), or the fastest repeat of all (``"min"``, the better
    estimate of the achievable time when other processes compete for the cores)."""
    samples = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            samples[name].append(time_fn(loop, repeats=repeats, number=number)[statistic])
    reduce = np.median if statistic == "median" else np.min
    return {name: float(reduce(s)) for name, s in samples.items()}


def run_tree(label: str, n_leaves: int, leaf_size: int, names, args) -> None:
    params = make_tree(n_leaves, leaf_size, seed=0)
    grads = make_tree(n_leaves, leaf_size, seed=1)
    array_bytes = 4 * n_leaves * leaf_size
    print(f"\n### {label}: {n_leaves * leaf_size / 1e6:.3g}M float32 parameters in "
          f"{n_leaves} leaves\n")
    rows = []
    for name in names:
        build, build_optax, arrays = OPTIMIZERS[name]
        loops = {"x + y": make_add_probe(params)}
        libraries = [("functional_dl", build, optim.apply_updates)]
        if optax is not None:
            libraries.append(("optax", build_optax, optax.apply_updates))
        kernel_arrays = {}
        for library, builder, apply_updates in libraries:
            optimizer = builder()
            fresh = jax.tree_util.tree_map(jnp.copy, params)
            state = optimizer.init(fresh)
            step = make_step(optimizer, apply_updates)
            kernel_arrays[library] = compiled_arrays_moved(step, (fresh, state, grads),
                                                           array_bytes)
            loops[library] = DonatedLoop(step, (fresh, state), grads)
        times = interleaved_times(loops, args.rounds, args.repeats, args.number,
                                    args.statistic)
        per_array = times["x + y"] / 3
        for library, _, _ in libraries:
            t = times[library]
            rows.append([name, library, f"{t * 1e3:.3f}", f"{times['x + y'] * 1e3:.3f}", arrays,
                         f"{arrays * array_bytes / t / 1e9:.2f}",
                         f"{per_array * arrays / t:.2f}", f"{kernel_arrays[library]:.1f}",
                         f"{per_array * kernel_arrays[library] / t:.2f}",
                         "yes" if loops[library].donation_checked else "NO"])
        del loops
    print_table(["optimizer", "library", f"step ms ({args.statistic})", "x + y ms",
                 "arrays needed", "effective GB/s", "fraction of bound",
                 "arrays moved by XLA's kernels", "fraction of their bound", "donated"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1M parameters, 3 repeats: a smoke run of a few seconds")
    parser.add_argument("--params", type=int, default=10_000_000,
                        help="parameters in the 4-leaf tree (default 10M)")
    parser.add_argument("--small-leaves", type=int, default=400)
    parser.add_argument("--small-leaf-size", type=int, default=2_500,
                        help="entries per small leaf (default 2,500: 1M parameters in all)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds (x + y, ours, optax) per optimizer")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per round")
    parser.add_argument("--statistic", choices=["median", "min"], default="median",
                        help="median of round medians (default) or fastest repeat")
    parser.add_argument("--number", type=int, default=3, help="steps per timed repeat")
    parser.add_argument("--only", nargs="*", choices=sorted(OPTIMIZERS), default=None)
    parser.add_argument("--wrappers-only", action="store_true",
                        help="time only the wrappers table (MultiSteps, inject_hyperparams)")
    args = parser.parse_args()
    if args.quick:
        args.params, args.small_leaf_size = 1_000_000, 250
        args.rounds, args.repeats, args.number = 3, 3, 2
    names = args.only or list(OPTIMIZERS)
    print(machine_description())
    print(f"CPU cores visible: {os.cpu_count()}; optax "
          f"{optax.__version__ if optax is not None else 'not installed'}; "
          f"{args.statistic} over {args.rounds} alternating rounds of {args.repeats} "
          f"repeats x {args.number} steps")
    if not args.wrappers_only:
        run_tree("large leaves", 4, args.params // 4, names, args)
        run_tree("small leaves", args.small_leaves, args.small_leaf_size, names, args)
    run_wrappers(args)



# ----------------------------------------------------------------------------------------
# Wrappers: gradient accumulation (MultiSteps) and injected hyperparameters, beside the
# optimizer they wrap.  MultiSteps(adam, k) steps adam on every k-th call and accumulates on
# the others, so its time is given per call, over whole cycles of k calls (each timed repeat
# is a multiple of k calls): the target is (k − 1) accumulating calls (read g and the
# accumulator, write it; apply the zero update) and one adam step plus the accumulator's read
# and reset.  inject_hyperparams(adam) reads its scalars from the state: the target is
# adam's time.

ACCUMULATION_STEPS = 4


def wrapper_builders() -> dict:
    """row name: (library, build the optimizer, apply_updates)."""
    k = ACCUMULATION_STEPS
    rows = {"adam": ("functional_dl", lambda: optim.adam(LR), optim.apply_updates),
            f"MultiSteps(adam, {k})": ("functional_dl",
                                       lambda: optim.MultiSteps(optim.adam(LR), k),
                                       optim.apply_updates),
            "inject_hyperparams(adam)": ("functional_dl",
                                         lambda: optim.inject_hyperparams(optim.adam)(
                                             learning_rate=LR), optim.apply_updates)}
    if optax is not None:
        rows.update({
            "optax adam": ("optax", lambda: optax.adam(LR), optax.apply_updates),
            f"optax MultiSteps(adam, {k})": (
                "optax", lambda: optax.MultiSteps(optax.adam(LR), k).gradient_transformation(),
                optax.apply_updates),
            "optax inject_hyperparams(adam)": (
                "optax", lambda: optax.inject_hyperparams(optax.adam)(learning_rate=LR),
                optax.apply_updates)})
    return rows


def run_wrappers(args) -> None:
    k = ACCUMULATION_STEPS
    params = make_tree(4, args.params // 4, seed=0)
    grads = make_tree(4, args.params // 4, seed=1)
    print(f"\n### wrappers: {args.params / 1e6:.3g}M float32 parameters in 4 leaves; "
          f"MultiSteps over k = {k} micro-batches\n")
    loops = {"x + y": make_add_probe(params)}
    for name, (_, builder, apply_updates) in wrapper_builders().items():
        optimizer = builder()
        fresh = jax.tree_util.tree_map(jnp.copy, params)
        loops[name] = DonatedLoop(make_step(optimizer, apply_updates),
                                  (fresh, optimizer.init(fresh)), grads)
    number = k * max(1, -(-args.number // k))     # whole accumulation cycles per repeat
    times = interleaved_times(loops, args.rounds, args.repeats, number, args.statistic)
    adam_ms = times["adam"] * 1e3
    optax_names = {"adam": "optax adam", f"MultiSteps(adam, {k})": f"optax MultiSteps(adam, {k})",
                   "inject_hyperparams(adam)": "optax inject_hyperparams(adam)"}
    rows = []
    for name, (library, _, _) in wrapper_builders().items():
        ms = times[name] * 1e3
        peer = optax_names.get(name)
        rows.append([name, library, f"{ms:.3f}", f"{ms * (k if 'MultiSteps' in name else 1):.3f}",
                     f"{ms / adam_ms:.2f}",
                     f"{ms / (times[peer] * 1e3):.2f}" if peer in times else "",
                     f"{times['x + y'] * 1e3:.3f}",
                     "yes" if loops[name].donation_checked else "NO"])
    print_table(["wrapper", "library", f"ms per call ({args.statistic})",
                 f"ms per inner step (k = {k} calls for MultiSteps)", "per call / our adam",
                 "ours / optax's", "x + y ms", "donated"], rows)


if __name__ == "__main__":
    main()
