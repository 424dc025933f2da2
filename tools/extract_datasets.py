"""Dev-only tool: regenerate the data files shipped in ``functional_dl/datasets/``.

Not part of the package and never run by it. Needs scikit-learn and statsmodels, which the
library itself does not depend on. Run from the repository root:

    python tools/extract_datasets.py

It rewrites ``digits.npz``, ``breast_cancer.npz`` and ``nile.csv`` from the copies bundled
with those two packages and checks that the written files load back equal to the source.
``functional_dl/datasets/SOURCES.md`` records where the data come from and their licenses.
"""
from __future__ import annotations

import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "functional_dl" / "datasets"


def extract_digits() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = bunch.data
    # The pixels are counts of "on" bits in 4x4 blocks: integers 0..16, exact in uint8.
    assert np.array_equal(pixels, np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 16
    np.savez_compressed(
        OUT / "digits.npz",
        pixels=pixels.astype(np.uint8),
        target=bunch.target.astype(np.uint8),
        target_names=np.asarray([str(name) for name in bunch.target_names]),
    )
    back = np.load(OUT / "digits.npz", allow_pickle=False)
    assert np.array_equal(back["pixels"].astype(np.float64), pixels)
    assert np.array_equal(back["target"], bunch.target)


def extract_breast_cancer() -> None:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    # Measurements with up to four significant digits: kept as float64 so the values are the
    # ones scikit-learn parses from its CSV, bit for bit.
    np.savez_compressed(
        OUT / "breast_cancer.npz",
        features=bunch.data.astype(np.float64),
        target=bunch.target.astype(np.uint8),
        feature_names=np.asarray([str(name) for name in bunch.feature_names]),
        target_names=np.asarray([str(name) for name in bunch.target_names]),
    )
    back = np.load(OUT / "breast_cancer.npz", allow_pickle=False)
    assert np.array_equal(back["features"], bunch.data)
    assert np.array_equal(back["target"], bunch.target)


def extract_nile() -> None:
    from statsmodels.datasets import nile

    frame = nile.load_pandas().data
    years = frame["year"].to_numpy()
    volume = frame["volume"].to_numpy()
    assert np.array_equal(years, np.round(years)) and np.array_equal(volume, np.round(volume))
    lines = ["year,volume"] + [f"{int(y)},{int(v)}" for y, v in zip(years, volume)]
    (OUT / "nile.csv").write_text("\n".join(lines) + "\n", encoding="ascii")
    back = np.loadtxt(OUT / "nile.csv", delimiter=",", skiprows=1, dtype=np.int64)
    assert np.array_equal(back[:, 0], years) and np.array_equal(back[:, 1], volume)


if __name__ == "__main__":
    extract_digits()
    extract_breast_cancer()
    extract_nile()
    for path in sorted(OUT.glob("*.npz")) + sorted(OUT.glob("*.csv")):
        print(f"{path.name}: {path.stat().st_size} bytes")
