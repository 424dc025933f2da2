"""Loaders for the small real data sets shipped inside the package.

The files sit next to this module and are read with :mod:`importlib.resources`, so the
loaders work from a source checkout and from an installed wheel alike, with no network.
``SOURCES.md`` (same folder) records where each file comes from and its license.

Every loader returns NumPy arrays (host memory; ``jnp.asarray`` or the first jitted call
moves them to the device). Features default to ``float32`` and class labels are ``int32``,
the dtypes JAX uses when 64-bit mode is off; pass ``dtype=np.float64`` (with x64 enabled)
for double precision. Each call reads the file afresh, so callers may modify what they get.
"""
from __future__ import annotations

import importlib.resources
import io
from typing import NamedTuple, Optional

import numpy as np

from functional_dl import checks

_PACKAGE = __name__.rpartition(".")[0]


class Dataset(NamedTuple):
    """A labelled classification data set.

    Attributes:
      data: ``(num_examples, num_features)`` features, of the loader's ``dtype``.
      target: ``(num_examples,)`` int32 class indices in ``[0, len(target_names))``.
      feature_names: one name per column of ``data``.
      target_names: ``target_names[c]`` names class ``c``.
      description: a few lines on what the data are and where they come from.
      images: for image data, ``data`` reshaped to ``(num_examples, height, width)`` (a view
        of the same memory); ``None`` otherwise.
    """

    data: np.ndarray
    target: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    description: str
    images: Optional[np.ndarray] = None


class TimeSeries(NamedTuple):
    """A univariate series observed at integer times.

    Attributes:
      time: ``(num_steps,)`` int32 times of the observations (e.g. years).
      values: ``(num_steps,)`` observed values, of the loader's ``dtype``.
      name: what ``values`` measures.
      units: the units of ``values``.
      description: a few lines on what the data are and where they come from.
    """

    time: np.ndarray
    values: np.ndarray
    name: str
    units: str
    description: str


_DIGITS_DESCRIPTION = """\
UCI "Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak, 1998), the 1797-image
test part as bundled by scikit-learn. Each image is 8x8; a pixel counts the "on" pixels of
a 4x4 block of the original 32x32 bitmap, an integer 0..16 (returned unscaled). Ten classes,
the digits 0..9, about 180 images each. License CC BY 4.0; see SOURCES.md."""

_BREAST_CANCER_DESCRIPTION = """\
UCI "Breast Cancer Wisconsin (Diagnostic)" (Wolberg, Street & Mangasarian, 1995), as bundled
by scikit-learn: 569 fine-needle aspirates of breast masses, 30 measurements of the cell
nuclei each (mean, standard error and worst value of ten quantities). Classes: 0 = malignant
(212), 1 = benign (357). Unscaled; see `standardize`. License CC BY 4.0; see SOURCES.md."""

_NILE_DESCRIPTION = """\
Annual flow of the Nile at Aswan, 1871-1970, in 10^8 m^3 (Cobb, 1978, Biometrika 65), as
bundled by statsmodels. The mean level drops near 1898 (often linked to the first Aswan dam,
begun that year). Public domain; see SOURCES.md."""

_SUNSPOTS_DESCRIPTION = """\
Yearly mean sunspot numbers, 1700-2008 (309 values), from the National Geophysical Data
Center as bundled by statsmodels. The roughly 11-year solar cycle makes the series switch
between quiet and active years. Public domain; see SOURCES.md."""


def _read_bytes(filename: str) -> bytes:
    """The bytes of a data file of this package (installed or a source checkout)."""
    return importlib.resources.files(_PACKAGE).joinpath(filename).read_bytes()


def _load_npz(filename: str) -> dict[str, np.ndarray]:
    """The arrays of a bundled ``.npz`` file, read without pickle."""
    with np.load(io.BytesIO(_read_bytes(filename)), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def load_digits(*, dtype=np.float32) -> Dataset:
    """The UCI handwritten digits: 1797 images of 8x8 pixels, 10 classes.

    Returns a :class:`Dataset` with ``data`` of shape ``(1797, 64)`` (row-major pixels,
    values 0..16 converted to ``dtype``), ``images`` the same values as ``(1797, 8, 8)``,
    ``target`` int32 digits 0..9, ``feature_names`` ``"pixel_<row>_<column>"`` and
    ``target_names`` ``"0"``..``"9"``. Scale to [0, 1] with ``data / 16``.
    """
    dtype = checks.float_dtype(dtype, name="dtype")
    stored = _load_npz("digits.npz")
    data = stored["pixels"].astype(dtype)
    feature_names = tuple(f"pixel_{row}_{col}" for row in range(8) for col in range(8))
    return Dataset(
        data=data,
        target=stored["target"].astype(np.int32),
        feature_names=feature_names,
        target_names=tuple(str(name) for name in stored["target_names"]),
        description=_DIGITS_DESCRIPTION,
        images=data.reshape(-1, 8, 8),
    )


def load_breast_cancer(*, dtype=np.float32) -> Dataset:
    """The Wisconsin diagnostic breast cancer data: 569 examples, 30 features, 2 classes.

    Returns a :class:`Dataset` with ``data`` ``(569, 30)`` of ``dtype`` (stored in float64,
    exactly scikit-learn's values), ``target`` int32 with 0 = malignant and 1 = benign
    (scikit-learn's coding), the 30 ``feature_names`` (``"mean radius"``, ...) and
    ``target_names`` ``("malignant", "benign")``. The features span five orders of magnitude;
    standardize them (:func:`standardize`) before a gradient method or the perceptron.
    """
    dtype = checks.float_dtype(dtype, name="dtype")
    stored = _load_npz("breast_cancer.npz")
    return Dataset(
        data=stored["features"].astype(dtype),
        target=stored["target"].astype(np.int32),
        feature_names=tuple(str(name) for name in stored["feature_names"]),
        target_names=tuple(str(name) for name in stored["target_names"]),
        description=_BREAST_CANCER_DESCRIPTION,
    )


def load_nile(*, dtype=np.float32) -> TimeSeries:
    """The annual flow of the Nile at Aswan, 1871-1970 (100 values, 10^8 m^3).

    Returns a :class:`TimeSeries` with ``time`` the int32 years and ``values`` the flows as
    ``dtype`` (integers 456..1370, exact in float32). A two-state Gaussian HMM on ``values``
    finds the drop in level near 1898.
    """
    dtype = checks.float_dtype(dtype, name="dtype")
    text = _read_bytes("nile.csv").decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    return TimeSeries(
        time=table[:, 0].astype(np.int32),
        values=table[:, 1].astype(dtype),
        name="annual flow of the Nile at Aswan",
        units="10^8 m^3",
        description=_NILE_DESCRIPTION,
    )


def load_sunspots(*, dtype=np.float32) -> TimeSeries:
    """Yearly mean sunspot numbers, 1700-2008 (309 values, 0.0..190.2, one decimal).

    Returns a :class:`TimeSeries` with ``time`` the int32 years and ``values`` the yearly
    means as ``dtype``. Rounded to whole numbers they are counts for a Poisson HMM (the
    model-selection example); the solar cycle shows as alternating quiet and active states.
    """
    dtype = checks.float_dtype(dtype, name="dtype")
    text = _read_bytes("sunspots.csv").decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    return TimeSeries(
        time=table[:, 0].astype(np.int32),
        values=table[:, 1].astype(dtype),
        name="yearly mean sunspot number",
        units="sunspot number",
        description=_SUNSPOTS_DESCRIPTION,
    )
