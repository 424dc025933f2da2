"""Tests for functional_dl.datasets: the bundled files against the packages they came from
(scikit-learn, statsmodels) when those are installed, and against published facts otherwise;
train_test_split and standardize against NumPy oracles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_dl import datasets

# Published class counts of the UCI optdigits test part (optdigits.names) and of WDBC.
UCI_DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
WDBC_CLASS_COUNTS = [212, 357]  # malignant, benign


# --- digits -----------------------------------------------------------------------------

def test_digits_shapes_dtypes_and_published_facts():
    digits = datasets.load_digits()
    assert digits.data.shape == (1797, 64) and digits.data.dtype == np.float32
    assert digits.images.shape == (1797, 8, 8)
    np.testing.assert_array_equal(digits.images.reshape(1797, 64), digits.data)
    assert digits.target.shape == (1797,) and digits.target.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(digits.target), UCI_DIGITS_CLASS_COUNTS)
    assert digits.data.min() == 0 and digits.data.max() == 16
    np.testing.assert_array_equal(digits.data, np.round(digits.data))  # integer counts
    assert digits.target_names == tuple(str(d) for d in range(10))
    assert len(digits.feature_names) == 64 and digits.feature_names[9] == "pixel_1_1"


def test_digits_equal_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    ours = datasets.load_digits(dtype=np.float64)
    np.testing.assert_array_equal(ours.data, reference.data)
    np.testing.assert_array_equal(ours.images, reference.images)
    np.testing.assert_array_equal(ours.target, reference.target)
    assert list(ours.feature_names) == list(reference.feature_names)
    assert list(ours.target_names) == [str(name) for name in reference.target_names]


# --- breast cancer ----------------------------------------------------------------------

def test_breast_cancer_shapes_dtypes_and_published_facts():
    cancer = datasets.load_breast_cancer()
    assert cancer.data.shape == (569, 30) and cancer.data.dtype == np.float32
    assert cancer.target.shape == (569,) and cancer.target.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(cancer.target), WDBC_CLASS_COUNTS)
    assert cancer.target_names == ("malignant", "benign")
    assert len(cancer.feature_names) == 30
    assert cancer.feature_names[0] == "mean radius" and cancer.feature_names[20] == "worst radius"
    assert cancer.images is None
    assert np.all(np.isfinite(cancer.data)) and cancer.data.min() >= 0
    # Summary table of the UCI description: worst area ranges over 185.2 .. 4254.
    area_worst = cancer.data[:, cancer.feature_names.index("worst area")]
    np.testing.assert_allclose([area_worst.min(), area_worst.max()], [185.2, 4254.0], rtol=1e-6)


def test_breast_cancer_equal_scikit_learn_bit_for_bit():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_breast_cancer()
    ours = datasets.load_breast_cancer(dtype=np.float64)
    np.testing.assert_array_equal(ours.data, reference.data)
    np.testing.assert_array_equal(ours.target, reference.target)
    assert list(ours.feature_names) == [str(name) for name in reference.feature_names]
    assert list(ours.target_names) == [str(name) for name in reference.target_names]
    # The float32 default is the rounding of those float64 values.
    np.testing.assert_array_equal(datasets.load_breast_cancer().data,
                                  reference.data.astype(np.float32))


# --- Nile -------------------------------------------------------------------------------

def test_nile_published_facts():
    nile = datasets.load_nile()
    assert nile.values.shape == (100,) and nile.values.dtype == np.float32
    np.testing.assert_array_equal(nile.time, np.arange(1871, 1971))
    assert nile.time.dtype == np.int32
    assert nile.values.min() == 456 and nile.values.max() == 1370
    # Cobb (1978): the mean level drops after 1898, by roughly a quarter.
    before = nile.values[nile.time <= 1898].mean()
    after = nile.values[nile.time > 1898].mean()
    assert after < 0.85 * before
    assert nile.units == "10^8 m^3"


def test_nile_equal_statsmodels():
    nile_module = pytest.importorskip("statsmodels.datasets.nile")
    frame = nile_module.load_pandas().data
    ours = datasets.load_nile(dtype=np.float64)
    np.testing.assert_array_equal(ours.time, frame["year"].to_numpy())
    np.testing.assert_array_equal(ours.values, frame["volume"].to_numpy())


# --- loaders: shared behaviour ----------------------------------------------------------

@pytest.mark.parametrize("loader", [datasets.load_digits, datasets.load_breast_cancer,
                                    datasets.load_nile])
def test_loaders_return_fresh_arrays_and_check_dtype(loader):
    first = loader()
    first[0][...] = -1  # the caller owns what it gets; the next call is unaffected
    assert np.all(loader()[0] != -1)
    half = loader(dtype=np.float16)
    features = half.values if isinstance(half, datasets.TimeSeries) else half.data
    assert features.dtype == np.float16
    with pytest.raises(TypeError, match="dtype"):
        loader(dtype=np.int32)


def test_loaders_read_through_importlib_resources():
    import importlib.resources
    package_files = importlib.resources.files("functional_dl.datasets")
    for name in ("digits.npz", "breast_cancer.npz", "nile.csv", "SOURCES.md"):
        assert package_files.joinpath(name).is_file(), name
    # SOURCES.md names the origin and license of every shipped file.
    sources = package_files.joinpath("SOURCES.md").read_text(encoding="utf-8")
    for needle in ("digits.npz", "breast_cancer.npz", "nile.csv", "CC BY 4.0", "public domain"):
        assert needle in sources, needle


# --- train_test_split -------------------------------------------------------------------

def test_split_is_a_permutation_aligned_across_arrays():
    n = 23
    features = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    labels = np.arange(n, dtype=np.int32)
    x_train, x_test, y_train, y_test = datasets.train_test_split(
        jax.random.key(3), features, labels, test_size=0.3)
    assert len(y_test) == int(np.ceil(0.3 * n)) and len(y_train) == n - len(y_test)
    # Disjoint, covering, and rows stay aligned: each feature row still belongs to its label.
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(n))
    np.testing.assert_array_equal(x_train, features[y_train])
    np.testing.assert_array_equal(x_test, features[y_test])
    # Oracle: the test part is the first ceil(0.3 n) entries of the key's permutation.
    permutation = np.asarray(jax.random.permutation(jax.random.key(3), n))
    np.testing.assert_array_equal(y_test, permutation[:len(y_test)])
    np.testing.assert_array_equal(y_train, permutation[len(y_test):])
    assert isinstance(x_train, np.ndarray)


def test_split_determinism_and_key_dependence():
    labels = np.arange(50)
    first = datasets.train_test_split(jax.random.key(0), labels)
    again = datasets.train_test_split(jax.random.key(0), labels)
    other = datasets.train_test_split(jax.random.key(1), labels)
    raw_key = datasets.train_test_split(jax.random.PRNGKey(0), labels)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other[1])
    assert len(raw_key[1]) == 13  # ceil(0.25 * 50)


def test_split_keeps_jax_arrays_jax():
    values = jnp.arange(10.0)
    train, test = datasets.train_test_split(jax.random.key(0), values, test_size=0.5)
    assert isinstance(train, jax.Array) and train.shape == (5,) and test.shape == (5,)


@pytest.mark.parametrize("kwargs, arrays, error, match", [
    ({"test_size": 0.0}, (np.zeros(10),), ValueError, "test_size"),
    ({"test_size": 1.0}, (np.zeros(10),), ValueError, "test_size"),
    ({"test_size": -0.2}, (np.zeros(10),), ValueError, "test_size"),
    ({"test_size": True}, (np.zeros(10),), TypeError, "test_size"),
    ({}, (np.zeros(10), np.zeros(9)), ValueError, "same length"),
    ({}, (), ValueError, "at least one array"),
    ({}, (np.float32(1.0),), ValueError, "leading example axis"),
    ({"test_size": 0.5}, (np.zeros(1),), ValueError, "non-empty"),
])
def test_split_bad_input(kwargs, arrays, error, match):
    with pytest.raises(error, match=match):
        datasets.train_test_split(jax.random.key(0), *arrays, **kwargs)


def test_split_needs_a_key():
    with pytest.raises(ValueError, match="key"):
        datasets.train_test_split(None, np.zeros(4))


# --- standardize ------------------------------------------------------------------------

def test_standardize_matches_numpy_oracle_jitted_and_not():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, size=(40, 4)).astype(np.float32)
    train[:, 2] = 7.3  # a constant feature: mean rounding leaves it a few-ulp spread
    test = rng.normal(5.0, 3.0, size=(9, 4)).astype(np.float32)
    mean = train.astype(np.float64).mean(axis=0)
    std = train.astype(np.float64).std(axis=0)
    std[2] = 1.0
    expected_train, expected_test = (train - mean) / std, (test - mean) / std
    for function in (datasets.standardize, jax.jit(datasets.standardize)):
        scaled_train, scaled_test = function(train, test)
        np.testing.assert_allclose(scaled_train, expected_train, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(scaled_test, expected_test, rtol=1e-5, atol=1e-5)
        assert np.all(np.abs(np.asarray(scaled_train[:, 2])) < 1e-5)


def test_standardize_bad_shapes():
    with pytest.raises(ValueError, match="test must have shape"):
        datasets.standardize(np.zeros((4, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="train must have shape"):
        datasets.standardize(np.zeros((0, 3)), np.zeros((2, 3)))


def test_standardize_low_precision_and_large_constant_features():
    rng = np.random.default_rng(0)
    varying = rng.normal(300.0, 2.0, size=(200, 1))
    for dtype in (jnp.float16, jnp.bfloat16):
        data = jnp.asarray(varying, dtype)
        train, _ = datasets.standardize(data, data)
        rounded = np.asarray(data, np.float64)
        expected = (rounded - rounded.mean()) / rounded.std()
        np.testing.assert_allclose(np.asarray(train, np.float64), expected, atol=0.05)
    for value in (3e9, -7e20, 1e6):
        constant = jnp.full((1000, 1), value, jnp.float32)
        train, test = datasets.standardize(constant, constant * 2)
        np.testing.assert_array_equal(train, 0.0)
        np.testing.assert_array_equal(test, np.float32(np.float32(value) * 2 - np.float32(value)))


@pytest.mark.parametrize("fraction, expected", [(0.07, 7), (0.14, 14), (0.28, 28), (0.55, 55),
                                                (0.56, 56), (0.071, 8)])
def test_split_sizes_are_not_rounded_up_by_binary_fractions(fraction, expected):
    x = np.arange(100)
    _, test = datasets.train_test_split(jax.random.key(0), x, test_size=fraction)
    assert len(test) == expected


def test_split_key_that_is_not_a_key_is_named():
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        datasets.train_test_split(0, np.arange(10))
    legacy, typed = jax.random.PRNGKey(3), jax.random.key(3)
    a, b = datasets.train_test_split(legacy, np.arange(10)), datasets.train_test_split(typed, np.arange(10))
    np.testing.assert_array_equal(a[1], b[1])


def test_sunspots_published_facts():
    spots = datasets.load_sunspots()
    assert spots.values.shape == (309,) and spots.values.dtype == np.float32
    np.testing.assert_array_equal(spots.time, np.arange(1700, 2009))
    assert spots.values.min() == 0.0 and np.isclose(spots.values.max(), 190.2)
    # the solar maximum of 1957 is the largest yearly mean of the record
    assert spots.time[np.argmax(spots.values)] == 1957


def test_sunspots_equal_statsmodels():
    sunspots = pytest.importorskip("statsmodels.datasets.sunspots")
    frame = sunspots.load_pandas().data
    spots = datasets.load_sunspots(dtype=np.float64)
    np.testing.assert_array_equal(spots.time, frame["YEAR"].to_numpy().astype(int))
    np.testing.assert_array_equal(spots.values, frame["SUNACTIVITY"].to_numpy())
