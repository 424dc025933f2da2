"""Strict test configuration shared by every test module.

Rank promotion raises (a broadcasting bug fails loudly); float64 is off by default and is
switched on inside individual tests with ``with jax.enable_x64(True):``.

XLA's CPU backend compiles at LLVM optimisation level 1 unless ``XLA_FLAGS`` already names a
level: the suite compiles thousands of small programs and runs most of them a few times, so
LLVM's full optimisation (level 2, the default) is much of its CPU time and buys nothing back
(measured: tests/test_nn_conv.py takes 42 s of CPU at level 2, 22 s at level 1).  The flag
changes code generation only, not the HLO the library builds, and the examples print the same
numbers at levels 1 and 2 (level 0 is not used: it changes the rounding, enough for the LSTM
example's training to take another path, and it slows the longer training runs down).  The
oracles and tolerances are the same at every level, and
``XLA_FLAGS=--xla_backend_optimization_level=2 python -m pytest`` runs the suite at the default.
Subprocesses (the examples, the fake-device checks) inherit the flag through the environment.
"""
import os

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=1").strip()

import jax  # noqa: E402 - the flag is set before JAX (and XLA) starts

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
