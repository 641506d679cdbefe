"""The shared small data sets: digits splits, IDX and CIFAR-10 binary readers, clear errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from sipgrad import datasets
from sipgrad.datasets import MNIST_FILES, load_cifar10, load_dataset, load_digits, load_mnist, read_idx
from sipgrad.errors import SipgradError

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">f4"): 0x0D}


def _idx_bytes(array: np.ndarray, dtype=np.uint8) -> bytes:
    dtype = np.dtype(dtype)
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _write_idx(path, array: np.ndarray, compress: bool = False, dtype=np.uint8) -> None:
    (gzip.open if compress else open)(path, "wb").write(_idx_bytes(array, dtype))


def _write_mnist(folder, train=(30, 28, 28), test=(7, 28, 28), dtypes=None) -> None:
    """Four small IDX files in ``folder``; ``dtypes`` maps a file's key (train_images ...) to its data type."""
    rng = np.random.default_rng(0)
    dtypes = dtypes or {}
    arrays = {"train_images": rng.integers(0, 256, size=train), "train_labels": rng.integers(0, 10, size=train[0]),
              "test_images": rng.integers(0, 256, size=test), "test_labels": rng.integers(0, 10, size=test[0])}
    for key, stem in MNIST_FILES.items():
        _write_idx(folder / stem, arrays[key], dtype=dtypes.get(key, np.uint8))


def test_digits_splits_are_disjoint_reproducible_and_scaled():
    data = load_digits(seed=3)
    assert data.image_shape == (1, 8, 8) and data.features == 64
    assert len(data.train) + len(data.validation) + len(data.test) == 1797
    assert len(data.test) == round(0.2 * 1797)
    assert 0.0 <= float(data.train.inputs.min()) and float(data.train.inputs.max()) == 1.0
    again = load_digits(seed=3)
    assert torch.equal(again.test.inputs, data.test.inputs)
    other = load_digits(seed=4)
    assert not torch.equal(other.test.labels, data.test.labels)
    # no image is in two splits (digits has a few exact duplicates, so compare index sets through rows)
    rows = {tuple(x.flatten().tolist()) for x in data.test.inputs}
    overlap = sum(tuple(x.flatten().tolist()) in rows for x in data.train.inputs)
    assert overlap < 5


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_are_read_gzipped_or_not(tmp_path, compress):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(30, 28, 28))
    train_labels = rng.integers(0, 10, size=30)
    test = rng.integers(0, 256, size=(7, 28, 28))
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", train_labels, compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", test, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(7) % 10, compress)
    data = load_mnist(tmp_path, validation=10)
    assert data.image_shape == (1, 28, 28) and data.features == 784
    assert len(data.train) == 20 and len(data.validation) == 10 and len(data.test) == 7
    for index in range(7):  # every test image in its place (index 3 is the middle: check them all)
        assert torch.allclose(data.test.inputs[index, 0], torch.from_numpy(test[index] / 255.0).float())
    assert data.test.labels.tolist() == [0, 1, 2, 3, 4, 5, 6]
    # the train/validation split is a permutation of the training images
    pairs = sorted(data.train.labels.tolist() + data.validation.labels.tolist())
    assert pairs == sorted(train_labels.tolist())
    assert len(load_dataset(f"mnist:{tmp_path}", validation=5).validation) == 5


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_keeps_each_image_with_its_own_label_in_every_split(tmp_path, compress):
    """Each image carries its label in its first pixel, so any reordering of images against labels shows."""
    rng = np.random.default_rng(1)
    suffix = ".gz" if compress else ""
    for stem, count in (("train", 40), ("t10k", 9)):
        labels = rng.integers(0, 10, size=count)
        images = rng.integers(0, 256, size=(count, 28, 28))
        images[:, 0, 0] = labels * 20
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte{suffix}", labels, compress)
    data = load_mnist(tmp_path, validation=15, seed=2)
    for split in (data.train, data.validation, data.test):
        encoded = torch.round(split.inputs[:, 0, 0, 0] * 255 / 20).long()
        assert torch.equal(encoded, split.labels)
    assert (len(data.train), len(data.validation), len(data.test)) == (25, 15, 9)


def test_a_corrupted_gzip_idx_file_is_a_clear_error_naming_it(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _write_idx(path, np.random.default_rng(0).integers(0, 256, size=(50, 28, 28)), compress=True)
    payload = bytearray(path.read_bytes())
    payload[30:200] = bytes(170)  # a damaged deflate body: zlib.error, not an OSError
    path.write_bytes(bytes(payload))
    with pytest.raises(SipgradError, match=r"train-images-idx3-ubyte\.gz: cannot read IDX file"):
        read_idx(path)


def test_idx_header_that_disagrees_with_the_size_is_refused(tmp_path):
    path = tmp_path / "bad-idx"
    _write_idx(path, np.zeros((4, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(SipgradError, match="bad-idx.*holds 11"):
        read_idx(path)
    (tmp_path / "junk").write_bytes(b"\x89PNG....")
    with pytest.raises(SipgradError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


@pytest.mark.parametrize("key, dtype", [("train_labels", ">f4"), ("test_labels", ">i2"), ("train_images", ">f4"),
                                        ("test_images", ">i2")])
def test_mnist_files_of_another_data_type_are_refused_naming_the_file(tmp_path, key, dtype):
    """Float labels would be truncated and float or int16 pixels scaled out of [0, 1]: only unsigned bytes load."""
    _write_mnist(tmp_path, dtypes={key: dtype})
    with pytest.raises(SipgradError, match=rf"{MNIST_FILES[key]}: IDX data type .*0x08"):
        load_mnist(tmp_path, validation=5)


def test_mnist_test_images_of_another_size_are_refused(tmp_path):
    _write_mnist(tmp_path, test=(7, 20, 20))
    with pytest.raises(SipgradError, match=r"t10k-images-idx3-ubyte: images of 20 x 20 where the training images are 28 x 28"):
        load_mnist(tmp_path, validation=5)
    _write_mnist(tmp_path, test=(7, 28, 28))
    assert load_mnist(tmp_path, validation=5).image_shape == (1, 28, 28)


def test_mnist_label_outside_0_to_9_names_the_file(tmp_path):
    _write_mnist(tmp_path)
    _write_idx(tmp_path / MNIST_FILES["test_labels"], np.full(7, 10))
    with pytest.raises(SipgradError, match=r"t10k-labels-idx1-ubyte: label 10 outside 0\.\.9"):
        load_mnist(tmp_path, validation=5)


def test_an_idx_header_whose_size_overflows_int64_is_refused_by_size(tmp_path):
    """65536^4 elements wrap numpy's int64 product to 0, which matched an empty body: Python ints do not wrap."""
    path = tmp_path / "huge-idx"
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, 4) + struct.pack(">4I", *(65536,) * 4))
    with pytest.raises(SipgradError, match=r"huge-idx: IDX header says .* \(18446744073709551616 bytes of data\) "
                                           r"but the file holds 0"):
        read_idx(path)


class _Response:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def read(self) -> bytes:
        if isinstance(self.payload, Exception):
            raise self.payload
        return self.payload


def test_a_bad_download_is_refused_and_not_kept(tmp_path, monkeypatch):
    """A wrong payload (an HTML page) is refused before it is written, so the next call does not skip it as done."""
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _Response(b"<html>rate limited</html>"))
    for _ in range(2):
        with pytest.raises(SipgradError, match=r"train-images-idx3-ubyte\.gz: the download is not a whole gzip file"):
            datasets.download_mnist(tmp_path)
        assert list(tmp_path.iterdir()) == []
    wrong = gzip.compress(b"\x89PNG not idx")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _Response(wrong))
    with pytest.raises(SipgradError, match=r"^https://\S+/train-images-idx3-ubyte\.gz: not an IDX file"):
        datasets.download_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_download_is_a_clear_error(tmp_path, monkeypatch):
    import http.client
    import urllib.request

    cut = http.client.IncompleteRead(b"abc", 100)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _Response(cut))
    with pytest.raises(SipgradError, match="cannot download MNIST .*IncompleteRead"):
        datasets.download_mnist(tmp_path)


def test_a_good_download_is_kept_and_loads(tmp_path, monkeypatch):
    import urllib.request

    rng = np.random.default_rng(0)
    shapes = {"train-images-idx3-ubyte": (12, 28, 28), "train-labels-idx1-ubyte": (12,),
              "t10k-images-idx3-ubyte": (3, 28, 28), "t10k-labels-idx1-ubyte": (3,)}
    served = {stem: gzip.compress(_idx_bytes(rng.integers(0, 10, size=shape))) for stem, shape in shapes.items()}
    urls = []

    def urlopen(url, timeout):
        urls.append(url)
        return _Response(served[url.rsplit("/", 1)[1].removesuffix(".gz")])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    datasets.download_mnist(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{stem}.gz" for stem in shapes)
    assert len(load_mnist(tmp_path, validation=2).train) == 10
    datasets.download_mnist(tmp_path)  # everything is there: nothing is fetched again
    assert len(urls) == 4


def test_cifar10_binary_records(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    first = None
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, size=(4, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        np.concatenate([labels, pixels], axis=1).tofile(folder / name)
        if name == "test_batch.bin":
            first = (int(labels[0, 0]), pixels[0].reshape(3, 32, 32))
    data = load_cifar10(tmp_path, validation=5)
    assert data.image_shape == (3, 32, 32)
    assert len(data.train) == 15 and len(data.validation) == 5 and len(data.test) == 4
    assert int(data.test.labels[0]) == first[0]
    assert torch.allclose(data.test.inputs[0], torch.from_numpy(first[1] / 255.0).float())


def test_cifar10_file_cut_at_a_record_boundary_is_refused(tmp_path):
    """A partial copy that ends between records is a whole number of records: its count against the others shows it."""
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        count = 3 if name == "data_batch_4.bin" else 4
        labels = rng.integers(0, 10, size=(count, 1), dtype=np.uint8)
        np.concatenate([labels, rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)], axis=1).tofile(tmp_path / name)
    with pytest.raises(SipgradError, match=r"data_batch_4\.bin: 3 records where data_batch_1\.bin holds 4"):
        load_cifar10(tmp_path, validation=2)


def test_cifar10_refuses_the_pickled_python_version(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x04not read")
    with pytest.raises(SipgradError, match="binary version.*never read"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize("spec, message", [("imagenet", "unknown data set"), ("mnist", "needs a folder"),
                                           ("mnist:/nonexistent/x", "no such folder"), ("digits:x", "no folder")])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(SipgradError, match=message):
        load_dataset(spec)


def test_a_missing_folder_or_a_file_is_named_as_such_for_both_formats(tmp_path):
    """cifar10:nonexistent said "no data_batch_1.bin"; mnist:FILE said "no such folder"."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    for spec in ("mnist", "cifar10"):
        with pytest.raises(SipgradError, match=r"nonexistent: no such folder"):
            load_dataset(f"{spec}:{tmp_path / 'nonexistent'}")
        with pytest.raises(SipgradError, match=r"afile: is a file, not a folder"):
            load_dataset(f"{spec}:{afile}")
