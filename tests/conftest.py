"""Strict test configuration shared by every test module.

Rank promotion raises (a broadcasting bug fails loudly); float64 is off by default and is
switched on inside individual tests with ``with jax.enable_x64(True):``.
"""
import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
