"""Training steps per second: an MLP 784-1024-1024-10 (batch 256, Adam), a transformer LM.

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

A second table times a causal transformer language model (``--model transformer`` or
``both``; the default ``mlp`` times the MLP alone): byte ids (V = 256) -> Embedding(d) ->
4 pre-norm ``TransformerBlock``s (d = 256, 4 heads, MLP 1024, exact GELU) -> LayerNorm ->
Dense(V), batch 32 of 128 tokens, next-token cross entropy, AdamW (weight decay 1e-2 on
every leaf), float32, written three times: ``nn`` + ``optim.adamw`` +
``train.make_train_step``; plain JAX (the same formulas, ``jax.nn.dot_product_attention``)
+ ``optax.adamw``; and PyTorch eager, ``nn.TransformerEncoder(norm_first=True)`` +
``torch.optim.AdamW`` (one thread per CPU only).  Its FLOPs per step count the matmuls
only: ``3 × 2 × B·T × (L (12 d² + 2 T d) + d V)`` (the four projections and the two MLP
matrices, ``Q Kᵀ`` and the weighted sum of ``V`` over all ``T`` keys, as the XLA kernel
computes them under the causal mask, and the output layer): 85.4 GFLOP.

    python benchmarks/mlp.py [--quick] [--rounds 7] [--steps 20] [--transformer-steps 3]
                             [--model mlp|transformer|both]
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

# The transformer row: layers, width, heads, MLP width, vocabulary, batch, sequence length.
NUM_LAYERS, WIDTH, NUM_HEADS, MLP_WIDTH, VOCABULARY = 4, 256, 4, 1024, 256
TRANSFORMER_BATCH, SEQUENCE = 32, 128
WEIGHT_DECAY = 1e-2
TRANSFORMER_FLOPS_PER_STEP = 3 * 2 * TRANSFORMER_BATCH * SEQUENCE * (
    NUM_LAYERS * (12 * WIDTH ** 2 + 2 * SEQUENCE * WIDTH) + WIDTH * VOCABULARY)


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


def make_tokens(seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCABULARY, size=(TRANSFORMER_BATCH, SEQUENCE + 1)).astype(np.int32)
    return ids[:, :-1], ids[:, 1:]


def donated_loop(step, state, batch) -> Callable[[int], object]:
    """``run(steps)`` calling ``step(*state, *batch)`` and keeping its first two outputs."""
    def run(steps: int):
        for _ in range(steps):
            state[0], state[1], _ = step(state[0], state[1], *batch)
        return state
    return run


def functional_dl_transformer_runner(tokens, targets) -> Callable[[int], object]:
    network = nn.serial(
        nn.Embedding(VOCABULARY, WIDTH),
        *[nn.TransformerBlock(NUM_HEADS, MLP_WIDTH, causal=True) for _ in range(NUM_LAYERS)],
        nn.LayerNorm(), nn.Dense(VOCABULARY))
    _, params = network.init(jax.random.key(0), (-1, SEQUENCE))
    optimizer = optim.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    def loss_fn(params, batch, key):
        inputs, labels = batch
        logits = network.apply(params, inputs)
        return losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    step = train.make_train_step(loss_fn, optimizer)
    return donated_loop(lambda p, s, *batch: step(p, s, batch, None),
                        [params, optimizer.init(params)],
                        (jnp.asarray(tokens), jnp.asarray(targets)))


def optax_transformer_runner(tokens, targets) -> Callable[[int], object]:
    import optax

    keys = iter(jax.random.split(jax.random.key(0), 8 * NUM_LAYERS + 2))

    def matrix(n_in, n_out):
        return jax.random.normal(next(keys), (n_in, n_out)) * np.sqrt(1.0 / n_in)

    def norm():
        return {"scale": jnp.ones(WIDTH), "bias": jnp.zeros(WIDTH)}

    def layer_params():
        names = {"q": (WIDTH, WIDTH), "k": (WIDTH, WIDTH), "v": (WIDTH, WIDTH),
                 "o": (WIDTH, WIDTH), "up": (WIDTH, MLP_WIDTH), "down": (MLP_WIDTH, WIDTH)}
        params = {name: (matrix(*shape), jnp.zeros(shape[1])) for name, shape in names.items()}
        return {**params, "norm_1": norm(), "norm_2": norm()}

    params = {"embedding": jax.random.normal(next(keys), (VOCABULARY, WIDTH)),
              "layers": [layer_params() for _ in range(NUM_LAYERS)], "norm": norm(),
              "out": (matrix(WIDTH, VOCABULARY), jnp.zeros(VOCABULARY))}

    def layer_norm(p, h):
        mean = h.mean(-1, keepdims=True)
        variance = jnp.square(h - mean).mean(-1, keepdims=True)
        return (h - mean) * jax.lax.rsqrt(variance + 1e-5) * p["scale"] + p["bias"]

    def dense(p, h):
        return h @ p[0] + p[1]

    def block(p, h):
        a = layer_norm(p["norm_1"], h)
        heads = [dense(p[n], a).reshape(a.shape[:2] + (NUM_HEADS, -1)) for n in "qkv"]
        attended = jax.nn.dot_product_attention(*heads, is_causal=True)
        h = h + dense(p["o"], attended.reshape(h.shape))
        a = layer_norm(p["norm_2"], h)
        return h + dense(p["down"], jax.nn.gelu(dense(p["up"], a), approximate=False))

    def loss_fn(params, inputs, labels):
        h = params["embedding"][inputs]
        for p in params["layers"]:
            h = block(p, h)
        log_probs = jax.nn.log_softmax(dense(params["out"], layer_norm(params["norm"], h)))
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))

    optimizer = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    def step(params, opt_state, inputs, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return donated_loop(jax.jit(step, donate_argnums=(0, 1)), [params, optimizer.init(params)],
                        (jnp.asarray(tokens), jnp.asarray(targets)))


def torch_transformer_runner(tokens, targets, threads: int) -> Callable[[int], object]:
    import torch

    torch.manual_seed(0)
    encoder_layer = torch.nn.TransformerEncoderLayer(
        WIDTH, NUM_HEADS, MLP_WIDTH, dropout=0.0, activation="gelu", batch_first=True,
        norm_first=True)
    model = torch.nn.ModuleDict({
        "embedding": torch.nn.Embedding(VOCABULARY, WIDTH),
        "encoder": torch.nn.TransformerEncoder(encoder_layer, NUM_LAYERS,
                                               enable_nested_tensor=False),
        "norm": torch.nn.LayerNorm(WIDTH), "out": torch.nn.Linear(WIDTH, VOCABULARY)})
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss()
    mask = torch.nn.Transformer.generate_square_subsequent_mask(SEQUENCE)
    inputs, labels = torch.from_numpy(tokens).long(), torch.from_numpy(targets).long()

    def run(steps: int):
        torch.set_num_threads(threads)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            h = model["encoder"](model["embedding"](inputs), mask=mask, is_causal=True)
            logits = model["out"](model["norm"](h))
            loss = loss_fn(logits.reshape(-1, VOCABULARY), labels.reshape(-1))
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


def timed_rows(runners: dict, matmul, rounds: int, steps: int, flops_per_step: float,
               reference_name: str) -> list[list[str]]:
    """The table rows: ``runners`` and the matmul peak timed in alternating rounds."""
    for run in [*runners.values(), matmul]:          # compile and warm up
        block(run(2))
    samples = {name: [] for name in runners}
    matmul_samples = []
    for _ in range(rounds):
        matmul_samples.append(seconds_per_call(matmul, max(2, steps // 2)))
        for name, run in runners.items():
            samples[name].append(seconds_per_call(run, steps))

    peak = MATMUL_FLOPS / statistics.median(matmul_samples)
    reference = statistics.median(samples[reference_name])
    rows = [[f"matmul {MATMUL_SIZE}² float32 (peak)", "", "", f"{peak / 1e9:.1f}", "100%", ""]]
    for name, times in samples.items():
        seconds = statistics.median(times)
        rate = flops_per_step / seconds
        rows.append([name, f"{1 / seconds:.1f}", f"{1e3 * seconds:.2f}", f"{rate / 1e9:.1f}",
                     f"{100 * rate / peak:.0f}%", f"{reference / seconds:.2f}"])
    return rows


def add_peers(runners: dict, skipped: list, optax_factory, torch_factory, *data,
              thread_counts=(1, os.cpu_count() or 1), with_torch: bool = True) -> None:
    """The JAX + optax and PyTorch eager runners, where those libraries are installed."""
    try:
        runners["JAX + optax (donated)"] = optax_factory(*data)
    except ImportError:
        skipped.append("JAX + optax (optax not installed)")
    if not with_torch:
        skipped.append("PyTorch eager (--no-torch)")
        return
    try:
        for threads in sorted(set(thread_counts)):
            runners[f"PyTorch eager (CPU, {threads} thread{'s' * (threads > 1)})"] = \
                torch_factory(*data, threads)
    except ImportError:
        skipped.append("PyTorch eager (torch not installed)")


HEADERS = ["", "steps/s", "ms/step", "GFLOP/s", "of matmul peak",
           "speed vs functional_dl (donated)"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds")
    parser.add_argument("--steps", type=int, default=20, help="MLP training steps per round")
    parser.add_argument("--transformer-steps", type=int, default=3,
                        help="transformer training steps per round")
    parser.add_argument("--model", choices=["mlp", "transformer", "both"], default="mlp",
                        help="which table (the transformer takes seconds a step on a CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds of 5 MLP steps and of 1 transformer step")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave out PyTorch eager on the CPU (e.g. beside a GPU)")
    args = parser.parse_args()
    rounds, steps, transformer_steps = ((3, 5, 1) if args.quick else
                                        (args.rounds, args.steps, args.transformer_steps))
    matmul = matmul_runner()
    print(f"machine: {machine_description()}, {os.cpu_count()} CPUs\n")

    if args.model in ("mlp", "both"):
        x, y = make_data()
        runners = {"functional_dl (donated)": functional_dl_runner(x, y, donate=True),
                   "functional_dl (not donated)": functional_dl_runner(x, y, donate=False)}
        skipped = []
        add_peers(runners, skipped, optax_runner, torch_runner, x, y, with_torch=not args.no_torch)
        rows = timed_rows(runners, matmul, rounds, steps, FLOPS_PER_STEP,
                          "functional_dl (donated)")
        print(f"# MLP {'-'.join(map(str, LAYER_SIZES))}, batch {BATCH}, Adam, float32")
        print(f"median of {rounds} alternating rounds of {steps} steps; FLOPs/step = 3·2·B·Σ "
              f"fan_in·fan_out = {FLOPS_PER_STEP / 1e9:.3f} GFLOP (matmul work really done: "
              f"{FLOPS_DONE_PER_STEP / 1e9:.3f} GFLOP)\n")
        print_table(HEADERS, rows)
        for note in skipped:
            print(f"skipped: {note}")

    if args.model in ("transformer", "both"):
        tokens, targets = make_tokens()
        runners = {"functional_dl (donated)": functional_dl_transformer_runner(tokens, targets)}
        skipped = []
        # torch on one thread only would take seconds a step: one per CPU only
        add_peers(runners, skipped, optax_transformer_runner, torch_transformer_runner,
                  tokens, targets, thread_counts=(os.cpu_count() or 1,), with_torch=not args.no_torch)
        rows = timed_rows(runners, matmul, rounds, transformer_steps,
                          TRANSFORMER_FLOPS_PER_STEP, "functional_dl (donated)")
        print(f"\n# Causal transformer LM: {NUM_LAYERS} pre-norm layers, d = {WIDTH}, "
              f"{NUM_HEADS} heads, MLP {MLP_WIDTH}, V = {VOCABULARY}, batch "
              f"{TRANSFORMER_BATCH} × {SEQUENCE} tokens, AdamW, float32")
        print(f"median of {rounds} alternating rounds of {transformer_steps} steps; "
              f"FLOPs/step = 3·2·B·T·(L(12d² + 2Td) + dV) = "
              f"{TRANSFORMER_FLOPS_PER_STEP / 1e9:.1f} GFLOP (matmuls only)\n")
        print_table(HEADERS, rows)
        for note in skipped:
            print(f"skipped: {note}")


if __name__ == "__main__":
    main()
