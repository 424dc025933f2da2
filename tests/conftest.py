"""Strict test configuration shared by every test module.

Rank promotion raises (a broadcasting bug fails loudly); float64 is off by default and is
switched on inside individual tests with ``with jax.enable_x64(True):``.

XLA's CPU backend compiles with two settings that cut the suite's CPU time, each unless
``XLA_FLAGS`` already names it: the suite compiles thousands of small programs and runs most
of them a few times, so compiling is most of its time.

- LLVM optimisation level 1 (``--xla_backend_optimization_level=1``; level 2 is the default):
  tests/test_nn_conv.py takes 42 s of CPU at level 2, 22 s at level 1.  Level 0 is not used:
  it changes the rounding, enough for the LSTM example's training to take another path, and it
  slows the longer training runs down.
- XLA's classic elemental emitters for fusions (``--xla_cpu_use_fusion_emitters=false``):
  test_nn_layers.py, test_losses.py and test_hmm_online.py take 73 s of CPU with the newer
  MLIR fusion emitters, 48 s without.

Neither changes the HLO the library builds, and the examples print the same numbers with and
without them (the quickstart's accuracy, the LSTM's accuracies and the character
transformer's sample are identical to the digit).  The oracles and tolerances are the same
either way, and ``XLA_FLAGS="--xla_backend_optimization_level=2
--xla_cpu_use_fusion_emitters=true" python -m pytest`` runs the suite with XLA's defaults.
Subprocesses (the examples, the fake-device checks) inherit the flags through the environment.
"""
import importlib.metadata
import os

_FLAGS = [("--xla_backend_optimization_level", "1")]
# an internal XLA option: set only for the jaxlib releases known to have it (an unknown flag
# in XLA_FLAGS stops XLA at start-up)
if importlib.metadata.version("jaxlib").startswith("0.10."):
    _FLAGS.append(("--xla_cpu_use_fusion_emitters", "false"))
for _flag, _value in _FLAGS:
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}={_value}".strip()

import jax  # noqa: E402 - the flags are set before JAX (and XLA) starts

jax.config.update("jax_numpy_rank_promotion", "raise")

# The slowest files (the most seconds in all, measured with ``--durations=0``), heaviest first.
# pytest-xdist's ``--dist loadfile`` hands whole files to the workers in collection order
# (pyproject turns off its own reordering by number of tests, which put the few-test, slow
# files - the examples, the README - last), so starting with the longest files leaves only
# short ones for the end and the workers finish together.  A scheduling hint only: a file
# missing here or out of order costs time, never a test.
SLOWEST_FILES_FIRST = (
    "test_examples.py", "test_hmm_learning.py", "test_hmm_inference.py",
    "test_hmm_examples.py", "test_nn_layers.py", "test_hmm_parallel.py", "test_train.py",
    "test_readme.py", "test_nn_recurrent.py", "test_optim.py", "test_nn_attention.py",
    "test_hmm_fitting.py", "test_nn_conv.py", "test_schedules.py", "test_optim_properties.py",
    "test_hmm_sampling.py", "test_hmm_online.py", "test_optim_new_optimizers.py",
    "test_hmm_families_gaussian_mixture.py", "test_nn_norms.py",
)


def pytest_collection_modifyitems(items):
    """Put the files of ``SLOWEST_FILES_FIRST`` first, in its order; the rest keep theirs."""
    rank = {name: position for position, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
