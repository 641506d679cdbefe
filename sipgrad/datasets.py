"""Small classification data sets shared by the engines and the gradient analyses.

One place reads them, so every experiment splits and scales data the same way:

* ``digits``: scikit-learn's 8 x 8 handwritten digits (1,797 images, ships with
  scikit-learn, always offline). The default everywhere.
* ``mnist:DIR``: the four standard MNIST IDX files (``train-images-idx3-ubyte`` ...,
  gzipped or not) in a local folder.
* ``cifar10:DIR``: CIFAR-10's *binary* version (``data_batch_1.bin`` ..
  ``data_batch_5.bin``, ``test_batch.bin``, optionally inside ``cifar-10-batches-bin/``).
  The python version is pickled and is never read: unpickling a downloaded file can run
  arbitrary code.

Downloading stays with the user (``download_mnist`` does it when online); nothing here
needs the network, and the tests use only ``digits`` and small files they write.

Images are float32 in [0, 1], shaped N x C x H x W; labels int64. ``flat()`` gives the
N x D view an MLP wants.
"""

from __future__ import annotations

import gzip
import http.client
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sipgrad.errors import SipgradError

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = "test_batch.bin"
CIFAR10_RECORD = 1 + 3 * 32 * 32
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass(frozen=True)
class Split:
    """Inputs (N x C x H x W, float32 in [0, 1]) and labels (N, int64)."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def flat(self) -> torch.Tensor:
        """N x D: the images flattened, for fully connected models."""
        return self.inputs.reshape(len(self), -1)

    def subset(self, index: torch.Tensor | slice) -> "Split":
        return Split(self.inputs[index], self.labels[index])


@dataclass(frozen=True)
class SmallDataset:
    """A named data set with fixed train / validation / test splits."""

    name: str
    train: Split
    validation: Split
    test: Split
    classes: int = 10

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.inputs.shape[1:])  # type: ignore[return-value]

    @property
    def features(self) -> int:
        """Input dimension of an MLP: C * H * W."""
        return int(np.prod(self.image_shape))


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
                 torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _three_way(images: np.ndarray, labels: np.ndarray, validation: float, test: float,
               seed: int) -> tuple[Split, Split, Split]:
    """Shuffle once with ``seed`` and cut into train / validation / test shares."""
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(test * len(labels)))
    n_val = int(round(validation * len(labels)))
    test_idx, val_idx, train_idx = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return (_to_split(images[train_idx], labels[train_idx]), _to_split(images[val_idx], labels[val_idx]),
            _to_split(images[test_idx], labels[test_idx]))


def load_digits(seed: int = 0, validation: float = 0.2, test: float = 0.2) -> SmallDataset:
    """scikit-learn's digits as 1 x 8 x 8 images in [0, 1], split reproducibly by ``seed``."""
    from sklearn.datasets import load_digits as sklearn_digits

    if not (0 <= validation < 1 and 0 < test < 1 and validation + test < 1):
        raise SipgradError(f"validation ({validation}) and test ({test}) shares must be in [0, 1) and sum below 1")
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    train, val, test_split = _three_way(images, digits.target, validation, test, seed)
    return SmallDataset("digits", train, val, test_split)


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not, checking its header against its size."""
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:  # zlib.error: a damaged deflate body inside a .gz
        raise SipgradError(f"{path}: cannot read IDX file ({error})") from None
    return _parse_idx(data, path)


def _parse_idx(data: bytes, path: Path | str) -> np.ndarray:
    """The array in an IDX file's bytes ``data`` (uncompressed); errors name ``path`` (a file or a URL)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or data[3] < 1:
        raise SipgradError(f"{path}: not an IDX file (bad magic number)")
    dtype, dims = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * dims
    if len(data) < header:
        raise SipgradError(f"{path}: IDX header is truncated")
    shape = struct.unpack(f">{dims}I", data[4:header])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: numpy's int64 product would wrap
    if len(data) - header != expected:
        raise SipgradError(f"{path}: IDX header says {shape} ({expected} bytes of data) "
                           f"but the file holds {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    raise SipgradError(f"{directory}: no {stem} (or {stem}.gz); MNIST needs "
                       f"{', '.join(MNIST_FILES.values())}")


def _check_folder(directory: Path, needs: str) -> None:
    """One line for a data folder that is missing or is a file."""
    if directory.is_file():
        raise SipgradError(f"{directory}: is a file, not a folder ({needs})")
    if not directory.is_dir():
        raise SipgradError(f"{directory}: no such folder ({needs})")


def load_mnist(directory: str | os.PathLike, seed: int = 0, validation: int = 10000) -> SmallDataset:
    """MNIST from the four IDX files in ``directory``; ``validation`` training images are held out.

    The files must be MNIST's own kind: unsigned bytes (IDX type 0x08), images of one size in
    both splits. Anything else would load without complaint and go wrong later (float labels
    truncated, pixels scaled out of [0, 1], a network sized for the wrong images).
    """
    directory = Path(directory)
    _check_folder(directory, "MNIST needs the four IDX files there")
    paths = {key: _find(directory, stem) for key, stem in MNIST_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for key, array in arrays.items():
        if array.dtype != np.uint8:
            raise SipgradError(f"{paths[key]}: IDX data type {array.dtype}, where MNIST's files hold "
                               f"unsigned bytes (type 0x08)")
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise SipgradError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match")
        if labels.size and labels.max() > 9:
            raise SipgradError(f"{paths[f'{split}_labels']}: label {labels.max()} outside 0..9")
    train_size, test_size = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train_size != test_size:
        raise SipgradError(f"{paths['test_images']}: images of {test_size[0]} x {test_size[1]} where the "
                           f"training images are {train_size[0]} x {train_size[1]}")
    train_images = arrays["train_images"][:, None].astype(np.float32) / 255.0
    train_labels = arrays["train_labels"]
    if not 0 <= validation < len(train_labels):
        raise SipgradError(f"validation size {validation} must be below the {len(train_labels)} training images")
    order = np.random.default_rng(seed).permutation(len(train_labels))
    val_idx, train_idx = order[:validation], order[validation:]
    test = _to_split(arrays["test_images"][:, None].astype(np.float32) / 255.0, arrays["test_labels"])
    return SmallDataset("mnist", _to_split(train_images[train_idx], train_labels[train_idx]),
                        _to_split(train_images[val_idx], train_labels[val_idx]), test)


def _read_cifar_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR10_RECORD:
        raise SipgradError(f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records "
                           f"({CIFAR10_RECORD} bytes each); is this the binary version?")
    records = raw.reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise SipgradError(f"{path}: label {labels.max()} outside 0..9; is this the CIFAR-10 binary version?")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(directory: str | os.PathLike, seed: int = 0, validation: int = 5000) -> SmallDataset:
    """CIFAR-10 from its binary files in ``directory`` (or its ``cifar-10-batches-bin`` subfolder)."""
    directory = Path(directory)
    _check_folder(directory, "CIFAR-10 needs the binary version's files there")
    if (directory / "cifar-10-batches-bin").is_dir():
        directory = directory / "cifar-10-batches-bin"
    missing = [name for name in (*CIFAR10_TRAIN, CIFAR10_TEST) if not (directory / name).is_file()]
    if missing:
        hint = " (the python version's pickles are never read)" if (directory / "data_batch_1").exists() else ""
        raise SipgradError(f"{directory}: no {missing[0]}; CIFAR-10 needs the binary version's "
                           f"data_batch_1.bin .. data_batch_5.bin and test_batch.bin{hint}")
    parts = [_read_cifar_file(directory / name) for name in CIFAR10_TRAIN]
    test_images, test_labels = _read_cifar_file(directory / CIFAR10_TEST)
    # CIFAR-10's six files hold 10,000 records each; one cut short at a record boundary is a
    # whole number of records, so only the count against the others shows it.
    counts = {name: len(labels) for name, (_, labels) in zip((*CIFAR10_TRAIN, CIFAR10_TEST),
                                                             (*parts, (test_images, test_labels)))}
    for name, count in counts.items():
        if count != counts[CIFAR10_TRAIN[0]]:
            raise SipgradError(f"{directory / name}: {count} records where {CIFAR10_TRAIN[0]} holds "
                               f"{counts[CIFAR10_TRAIN[0]]}; is one of them a partial copy?")
    images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    labels = np.concatenate([p[1] for p in parts])
    if not 0 <= validation < len(labels):
        raise SipgradError(f"validation size {validation} must be below the {len(labels)} training images")
    order = np.random.default_rng(seed).permutation(len(labels))
    val_idx, train_idx = order[:validation], order[validation:]
    return SmallDataset("cifar10", _to_split(images[train_idx], labels[train_idx]),
                        _to_split(images[val_idx], labels[val_idx]),
                        _to_split(test_images.astype(np.float32) / 255.0, test_labels))


def download_mnist(directory: str | os.PathLike) -> Path:
    """Download the four gzipped MNIST IDX files into ``directory`` (online use only)."""
    import urllib.error
    import urllib.request

    from sipgrad.io.atomic import atomic_write

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stem in MNIST_FILES.values():
        target = directory / f"{stem}.gz"
        if target.is_file():
            continue
        try:
            with urllib.request.urlopen(MNIST_URL + target.name, timeout=30) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:  # IncompleteRead: an HTTPException
            raise SipgradError(f"cannot download MNIST ({error}); offline, copy the four IDX files into "
                               f"{directory} yourself, or use the digits data set") from None
        # Check the bytes before they are kept: a wrong or truncated download saved here would be
        # skipped as done by the next call.
        try:
            data = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error) as error:
            raise SipgradError(f"{MNIST_URL}{target.name}: the download is not a whole gzip file ({error}); "
                               f"nothing was saved") from None
        _parse_idx(data, MNIST_URL + target.name)
        with atomic_write(target) as tmp:
            tmp.write_bytes(payload)
    return directory


DATA_SETS = ("digits", "mnist:DIR", "cifar10:DIR")


def load_dataset(spec: str, seed: int = 0, **options: Any) -> SmallDataset:
    """Load a data set from its spec: ``digits``, ``mnist:DIR`` or ``cifar10:DIR``.

    ``options`` go to the loader (e.g. ``validation=``: a share for digits, a count for the others)."""
    name, _, argument = spec.partition(":")
    name = name.strip().lower()
    if name == "digits":
        if argument:
            raise SipgradError(f"data set spec {spec!r}: digits takes no folder")
        return load_digits(seed=seed, **options)
    if name in ("mnist", "cifar10"):
        if not argument:
            raise SipgradError(f"data set spec {spec!r} needs a folder, e.g. {name}:path/to/{name}")
        loader = load_mnist if name == "mnist" else load_cifar10
        return loader(argument, seed=seed, **options)
    raise SipgradError(f"unknown data set {spec!r}; choose from {', '.join(DATA_SETS)}")
