"""Training steps per second of an MLP 784-1024-1024-10 (batch 256, Adam, float32).

Compared in one run, in alternating rounds so a shared machine's load falls on all alike:

* ``functional_dl``: ``nn.mlp`` + ``losses`` + ``optim.adam`` + ``train.make_train_step``,
  with params and optimizer state donated (the default) and without donation;
* plain JAX + optax: the same network written by hand, ``optax.adam``, jitted and donated
  (when optax is installed);
* PyTorch eager on the CPU: ``nn.Sequential`` + ``torch.optim.Adam`` (when torch is
  installed), with 1 thread and with one per CPU (OpenMP threads slow down badly when the
  cores are shared with other processes, so both are shown);
* the machine's matmul peak: a jitted 2048×2048 float32 matmul (2·2048³ FLOPs).

FLOPs per training step are counted as ``3 × 2 × B × Σ fan_in·fan_out`` (forward matmul,
and the two backward matmuls for the input and weight gradients of every layer), with
B = 256 and Σ = 784·1024 + 1024·1024 + 1024·10 = 1 861 632: 2.859 GFLOP.  Elementwise work
(ReLU, softmax, Adam) is not counted.  The first layer's input gradient is not needed (the
input is data), so the matmul work really done is 2.448 GFLOP; the GFLOP/s column uses the
conventional count and the real-work fraction is printed beside it.

    python benchmarks/mlp.py [--quick] [--rounds 7] [--steps 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import block, machine_description, print_table  # noqa: E402

from functional_dl import losses, nn, optim, train  # noqa: E402

LAYER_SIZES = (784, 1024, 1024, 10)
BATCH = 256
LEARNING_RATE = 1e-3
MATMUL_SIZE = 2048
SUM_FAN_PRODUCTS = sum(a * b for a, b in zip(LAYER_SIZES[:-1], LAYER_SIZES[1:]))
FLOPS_PER_STEP = 3 * 2 * BATCH * SUM_FAN_PRODUCTS
FLOPS_DONE_PER_STEP = FLOPS_PER_STEP - 2 * BATCH * LAYER_SIZES[0] * LAYER_SIZES[1]
MATMUL_FLOPS = 2 * MATMUL_SIZE ** 3


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, LAYER_SIZES[0])).astype(np.float32)
    y = rng.integers(0, LAYER_SIZES[-1], size=BATCH).astype(np.int32)
    return x, y


# Each runner is a thunk that takes `steps` training steps and returns something to block on.

def functional_dl_runner(x, y, *, donate: bool) -> Callable[[int], object]:
    network = nn.mlp(list(LAYER_SIZES[1:]))
    _, params = network.init(jax.random.key(0), (-1, LAYER_SIZES[0]))
    optimizer = optim.adam(LEARNING_RATE)

    def loss_fn(params, batch, key):
        images, labels = batch
        logits = network.apply(params, images)
        return losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    step = train.make_train_step(loss_fn, optimizer, donate=donate)
    state = [params, optimizer.init(params)]
    batch = (jnp.asarray(x), jnp.asarray(y))

    def run(steps: int):
        for _ in range(steps):
            state[0], state[1], metrics = step(state[0], state[1], batch, None)
        return state
    return run


def optax_runner(x, y) -> Callable[[int], object]:
    import optax

    keys = jax.random.split(jax.random.key(0), len(LAYER_SIZES) - 1)
    params = [(jax.random.normal(k, (n_in, n_out)) * np.sqrt(2.0 / n_in), jnp.zeros(n_out))
              for k, n_in, n_out in zip(keys, LAYER_SIZES[:-1], LAYER_SIZES[1:])]
    optimizer = optax.adam(LEARNING_RATE)

    def loss_fn(params, images, labels):
        h = images
        for w, b in params[:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = params[-1]
        log_probs = jax.nn.log_softmax(h @ w + b)
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

    def step(params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    state = [params, optimizer.init(params)]
    images, labels = jnp.asarray(x), jnp.asarray(y)

    def run(steps: int):
        for _ in range(steps):
            state[0], state[1], loss = step(state[0], state[1], images, labels)
        return state
    return run


def torch_runner(x, y, threads: int) -> Callable[[int], object]:
    import torch

    torch.manual_seed(0)
    layers = []
    for n_in, n_out in zip(LAYER_SIZES[:-1], LAYER_SIZES[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = torch.from_numpy(x), torch.from_numpy(y).long()

    def run(steps: int):
        torch.set_num_threads(threads)                  # a process-wide setting
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
        return None
    return run


def matmul_runner() -> Callable[[int], object]:
    a = jax.random.normal(jax.random.key(1), (MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
    matmul = jax.jit(jnp.matmul)

    def run(steps: int):
        out = None
        for _ in range(steps):
            out = matmul(a, b)
        return out
    return run


def seconds_per_call(run: Callable[[int], object], calls: int) -> float:
    started = time.perf_counter()
    block(run(calls))
    return (time.perf_counter() - started) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5 steps")
    args = parser.parse_args()
    rounds, steps = (3, 5) if args.quick else (args.rounds, args.steps)
    x, y = make_data()

    runners = {"functional_dl (donated)": functional_dl_runner(x, y, donate=True),
               "functional_dl (not donated)": functional_dl_runner(x, y, donate=False)}
    skipped = []
    try:
        runners["JAX + optax (donated)"] = optax_runner(x, y)
    except ImportError:
        skipped.append("JAX + optax (optax not installed)")
    try:
        for threads in sorted({1, os.cpu_count() or 1}):
            runners[f"PyTorch eager (CPU, {threads} thread{'s' * (threads > 1)})"] = \
                torch_runner(x, y, threads)
    except ImportError:
        skipped.append("PyTorch eager (torch not installed)")
    matmul = matmul_runner()

    for run in [*runners.values(), matmul]:          # compile and warm up
        block(run(2))
    samples = {name: [] for name in runners}
    matmul_samples = []
    for _ in range(rounds):
        matmul_samples.append(seconds_per_call(matmul, max(2, steps // 2)))
        for name, run in runners.items():
            samples[name].append(seconds_per_call(run, steps))

    peak = MATMUL_FLOPS / statistics.median(matmul_samples)
    print(f"# MLP {'-'.join(map(str, LAYER_SIZES))}, batch {BATCH}, Adam, float32")
    print(f"machine: {machine_description()}, {os.cpu_count()} CPUs")
    print(f"median of {rounds} alternating rounds of {steps} steps; FLOPs/step = 3·2·B·Σ "
          f"fan_in·fan_out = {FLOPS_PER_STEP / 1e9:.3f} GFLOP (matmul work really done: "
          f"{FLOPS_DONE_PER_STEP / 1e9:.3f} GFLOP)\n")
    reference = statistics.median(samples["functional_dl (donated)"])
    rows = [[f"matmul {MATMUL_SIZE}² float32 (peak)", "", "", f"{peak / 1e9:.1f}", "100%", ""]]
    for name, times in samples.items():
        seconds = statistics.median(times)
        rate = FLOPS_PER_STEP / seconds
        rows.append([name, f"{1 / seconds:.1f}", f"{1e3 * seconds:.2f}", f"{rate / 1e9:.1f}",
                     f"{100 * rate / peak:.0f}%", f"{reference / seconds:.2f}"])
    print_table(["", "steps/s", "ms/step", "GFLOP/s", "of matmul peak",
                 "speed vs functional_dl (donated)"], rows)
    for note in skipped:
        print(f"skipped: {note}")


if __name__ == "__main__":
    main()
