import gzip
import shutil
import struct
import warnings

import numpy as np
import pytest

from infinimodal.data import FallbackWarning, load_mnist, read_idx
from infinimodal.data import mnist as mnist_module
from infinimodal.errors import DataError


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(directory, n_train=60, n_test=10):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(directory / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return directory


def test_read_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(b"\x00\x00\x09\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match="bad.gz.*magic"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc")
    with pytest.raises(DataError, match="short.gz holds 3 bytes.*promises 5"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "notgzip.gz").write_bytes(b"plain text")
    with pytest.raises(DataError, match="notgzip.gz"):
        read_idx(tmp_path / "notgzip.gz")


def test_real_mnist_splits(mnist_dir):
    data = load_mnist(mnist_dir)
    assert data.train.images.shape == (50_000, 784)
    assert data.valid.images.shape == (10_000, 784)
    assert data.test.images.shape == (10_000, 784)
    assert data.train.images.dtype == np.float32 and 0 <= data.train.images.min() and data.train.images.max() <= 1
    assert set(np.unique(data.test.labels)) == set(range(10))


def test_search_order_explicit_then_env_then_cache(tmp_path, monkeypatch):
    explicit = fake_mnist(tmp_path / "explicit", n_train=60)
    env_root = tmp_path / "env"
    fake_mnist(env_root / "mnist", n_train=72)
    cache_root = tmp_path / "cache"
    fake_mnist(cache_root / "mnist", n_train=84)
    monkeypatch.setenv("INFINIMODAL_DATA", str(env_root))
    monkeypatch.setenv("INFINIMODAL_CACHE", str(cache_root))
    assert load_mnist(explicit).source == str(explicit)
    assert load_mnist().source == str(env_root / "mnist")
    monkeypatch.delenv("INFINIMODAL_DATA")
    assert load_mnist().source == str(cache_root / "mnist")
    n = 84
    data = load_mnist()
    assert len(data.train.images) + len(data.valid.images) == n  # nothing dropped


def test_explicit_path_missing_files_is_an_error(tmp_path):
    with pytest.raises(DataError, match="lacks train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_download_from_a_mirror_verifies_checksums(tmp_path, mnist_dir, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(mnist_dir, mirror)
    monkeypatch.delenv("INFINIMODAL_DATA", raising=False)
    monkeypatch.setenv("INFINIMODAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("INFINIMODAL_OFFLINE", "0")
    monkeypatch.setattr(mnist_module, "MIRRORS", ())
    monkeypatch.setenv("INFINIMODAL_MNIST_URL", mirror.as_uri() + "/")
    data = load_mnist()
    assert data.source == str(tmp_path / "cache" / "mnist")
    assert data.train.images.shape == (50_000, 784)


def test_corrupt_download_is_rejected(tmp_path, monkeypatch):
    mirror = fake_mnist(tmp_path / "mirror")  # right names, wrong contents
    with pytest.raises(DataError, match="checksum mismatch"):
        mnist_module.download(tmp_path / "cache", mirrors=(mirror.as_uri() + "/",))
    assert not any((tmp_path / "cache").iterdir())  # no partial or wrong file is left behind


def test_fallback_to_packaged_subset_warns(tmp_path, monkeypatch):
    monkeypatch.delenv("INFINIMODAL_DATA", raising=False)
    monkeypatch.setenv("INFINIMODAL_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("INFINIMODAL_OFFLINE", "1")
    with pytest.warns(FallbackWarning, match="5,000-digit subset"):
        data = load_mnist()
    assert len(data.train.images) + len(data.valid.images) + len(data.test.images) == 5000
    assert data.train.images.shape[1] == 784 and data.train.images.max() <= 1.0
    # shuffled before splitting: every split holds every class
    for split in (data.train, data.valid, data.test):
        assert set(np.unique(split.labels)) == set(range(10))
