"""Data sets. Every loader returns a `MultimodalData` of plain arrays; `infinimodal.training` batches them.

`load_dataset(spec)` understands:

| spec | modalities |
|---|---|
| `mnist` | image: 784 binarised pixels (Bernoulli), the SB-VAE protocol |
| `polymnist:M` | m0..m{M-1}: RGB 3x28x28 (Laplace), M = 2..16 |
| `noisy-mnist` | view1 (rotated digit), view2 (same class, noisy): 1x28x28 (Laplace) |
| `synthetic[:k=v,...]` | x0..: tabular (Gaussian), known shared / private factors |
| `PATH.npz`, `PATH.h5mu` | the file's arrays (see `infinimodal.data.files`) |
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .files import SUFFIXES, file_dataset, read_table
from .images import noisy_mnist_dataset, polymnist_dataset
from .mnist import MNIST, BINARIZATIONS, DigitSplit, FallbackWarning, load_mnist, mnist_dataset, read_idx
from .multimodal import MultimodalData, Split, binarize_fixed
from .synthetic import synthetic_dataset

BUILTIN = ("mnist", "polymnist:M", "noisy-mnist", "synthetic[:settings]")


def load_dataset(
    spec: str,
    data_dir: str | None = None,
    binarize: str = "dynamic",
    likelihoods: dict[str, str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> MultimodalData:
    """The data set named by `spec` (see the module docstring), validated.

    data_dir: where the MNIST files are (default: search); seed: of the data set's construction
    (PolyMNIST textures and pairings, Noisy-MNIST angles and noise, a file's split).
    """
    name, _, rest = spec.partition(":")
    if likelihoods and name in ("mnist", "polymnist", "noisy-mnist", "synthetic"):
        raise DataError(f"{spec}: likelihoods can only be chosen for data files; built-in data sets fix theirs")
    if spec == "mnist":
        data = mnist_dataset(data_dir, binarize)
    elif name == "polymnist":
        try:
            n_modalities = int(rest)
        except ValueError:
            raise DataError(f"{spec}: write polymnist:M with the number of modalities M, e.g. polymnist:5") from None
        data = polymnist_dataset(n_modalities, data_dir, seed=seed, progress=progress)
    elif spec == "noisy-mnist":
        data = noisy_mnist_dataset(data_dir, seed=seed, progress=progress)
    elif name == "synthetic":
        data = synthetic_dataset(rest)
    elif Path(spec).suffix in SUFFIXES:
        data = file_dataset(spec, likelihoods, seed=seed)
    else:
        raise DataError(f"unknown data {spec!r}: use {', '.join(BUILTIN)}, or a .npz / .h5mu file")
    data.validate()
    return data


__all__ = [
    "BINARIZATIONS",
    "BUILTIN",
    "DigitSplit",
    "FallbackWarning",
    "MNIST",
    "MultimodalData",
    "Split",
    "binarize_fixed",
    "file_dataset",
    "load_dataset",
    "load_mnist",
    "mnist_dataset",
    "noisy_mnist_dataset",
    "polymnist_dataset",
    "read_idx",
    "read_table",
    "synthetic_dataset",
]
