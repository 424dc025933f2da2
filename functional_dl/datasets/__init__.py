"""Small real data sets shipped with the package (no network at run time), and splitting.

- :func:`load_digits` — UCI handwritten digits, 1797 images of 8x8 pixels, 10 classes;
- :func:`load_breast_cancer` — Wisconsin diagnostic breast cancer, 569 x 30, 2 classes;
- :func:`load_nile` — annual flow of the Nile at Aswan, 1871-1970 (100 values);
- :func:`load_sunspots` — yearly mean sunspot numbers, 1700-2008 (309 values);
- :func:`load_sonnets` — Shakespeare's sonnets I-XX, 12.6 thousand characters of text;
- :func:`train_test_split` — a shuffled split driven by a JAX key;
- :func:`standardize` — zero mean, unit variance from the training part's statistics.

Loaders return NumPy arrays (features float32 by default, labels int32). Sources and
licenses: ``SOURCES.md`` in this folder.
"""
from functional_dl.datasets._bundled import (
    Dataset,
    TimeSeries,
    load_breast_cancer,
    load_digits,
    load_nile,
    load_sunspots,
)
from functional_dl.datasets._split import standardize, train_test_split
from functional_dl.datasets._text import load_sonnets

__all__ = [
    "Dataset",
    "TimeSeries",
    "load_breast_cancer",
    "load_digits",
    "load_nile",
    "standardize",
    "train_test_split",
    "load_sonnets",
    "load_sunspots",
]
