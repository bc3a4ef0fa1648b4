"""The container every data set is loaded into, and how it becomes batches.

A `Split` holds one array per modality (first axis = rows), a [rows, M] availability mask and optional
integer labels. Rows where a modality is missing hold zeros in its array; only the mask says which rows
are observed, and nothing downstream reads the others. Arrays of dtype uint8 are image intensities
0..255 (stored compactly by the image data sets) and are scaled to [0, 1] when a batch is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..errors import DataError, format_rows
from ..modality import Modality

if TYPE_CHECKING:
    from .covariates import CovariateEncoding


#: Seed of the one fixed binarisation of dynamically binarised training data, used by evaluation (kNN, probes).
TRAIN_BINARIZATION_SEED = 3


def binarize_fixed(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """One stochastic binarisation, fixed by `seed`, so every model is scored on the same binary digits."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape, dtype=np.float32) < images).astype(np.float32)


def split_rows(n: int, seed) -> dict[str, np.ndarray]:
    """A seeded 80 / 10 / 10 split of n rows: {"train", "valid", "test"} -> row indices (`seed`: what numpy's
    default_rng takes, an integer or a list of them)."""
    order = np.random.default_rng(seed).permutation(n)
    return {"train": order[: int(0.8 * n)], "valid": order[int(0.8 * n) : int(0.9 * n)], "test": order[int(0.9 * n) :]}


@dataclass
class Split:
    arrays: dict[str, np.ndarray]
    mask: np.ndarray  # [n, M] bool, columns in modality order
    labels: np.ndarray | None = None  # [n] int64
    #: the subjects' IDs (str), for data read from tables keyed by ID (`infinimodal.data.tables`); None otherwise
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.mask)

    def take(self, rows: np.ndarray | slice) -> "Split":
        labels = None if self.labels is None else self.labels[rows]
        ids = None if self.ids is None else self.ids[rows]
        return Split({k: v[rows] for k, v in self.arrays.items()}, self.mask[rows], labels, ids)

    def with_mask(self, mask: np.ndarray) -> "Split":
        """The same rows and values with another availability mask."""
        return Split(self.arrays, mask, self.labels, self.ids)

    def batch(self, rows: Sequence[int] | np.ndarray, binarize: Sequence[str] = ()) -> dict:
        """A training/evaluation batch: {"data": {name: float tensor}, "mask": bool tensor, "labels": tensor}.

        Modalities named in `binarize` hold intensities and are drawn as fresh binary pixels
        (dynamic binarisation, Salakhutdinov & Murray 2008).
        """
        rows = np.asarray(rows)
        data = {}
        for name, array in self.arrays.items():
            x = torch.from_numpy(np.ascontiguousarray(array[rows]))
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            data[name] = torch.bernoulli(x) if name in binarize else x
        out = {"data": data, "mask": torch.from_numpy(self.mask[rows])}
        if self.labels is not None:
            out["labels"] = torch.from_numpy(self.labels[rows])
        return out

    def batches(self, batch_size: int):
        """(row indices, `batch` of them) for consecutive blocks of at most batch_size rows."""
        for start in range(0, len(self), batch_size):
            rows = np.arange(start, min(start + batch_size, len(self)))
            yield rows, self.batch(rows)

    def full_batch(self) -> dict:
        return self.batch(np.arange(len(self)))


@dataclass
class MultimodalData:
    """A data set: its modalities, train / validation / test splits, and where it came from."""

    modalities: list[Modality]
    train: Split
    valid: Split
    test: Split
    source: str
    #: bernoulli modalities whose training arrays hold intensities, binarised afresh for every batch
    dynamic_binarize: list[str] = field(default_factory=list)
    #: what generated the data, for data sets that know it (synthetic: factor counts and factors)
    truth: dict | None = None
    #: per-feature mean and std of standardised modalities ({} when none is; see data.standardize)
    standardization: dict = field(default_factory=dict)
    #: lines worth telling the user when training starts (inferred likelihoods, scale warnings)
    notes: list[str] = field(default_factory=list)
    #: the categorical modality that holds the rows' `labels` (`--data NAME:labels=F`): its test rows are missing, and
    #: predicting it is scored against the test split's labels (data.labels)
    label_modality: str | None = None
    #: the first rows of `train` a run trained on (`--max-train`), when fewer than all: what a baseline that stands
    #: beside the model may fit (evaluation keeps the whole split for kNN and probes)
    trained_rows: int | None = None
    #: how covariate columns are encoded (`--covariates`, `infinimodal.data.covariates.CovariateEncoding`); their values
    #: are each split's `arrays[COVARIATES]`; None without covariates
    covariates: CovariateEncoding | None = None
    #: the name of the ID column of tables (the splits' `ids`), for the tables written back; None for other data
    id_column: str | None = None

    def model_train(self) -> Split:
        """The training rows the model saw: the first `trained_rows` of the split, or all of it."""
        return self.train if self.trained_rows is None else self.train.take(slice(0, self.trained_rows))

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}: choose train, valid or test")
        return getattr(self, name)

    def train_for_evaluation(self) -> Split:
        """The training split with dynamically binarised modalities binarised once (kNN and probes fit on it)."""
        arrays = {
            name: binarize_fixed(array, TRAIN_BINARIZATION_SEED) if name in self.dynamic_binarize else array
            for name, array in self.train.arrays.items()
        }
        return Split(arrays, self.train.mask, self.train.labels, self.train.ids)

    def validate(self) -> None:
        """Shapes, masks and likelihood support of every split; raises DataError naming the problem."""
        for split_name in ("train", "valid", "test"):
            split = self.split(split_name)
            n = len(split)
            if split.mask.shape != (n, len(self.modalities)):
                raise DataError(
                    f"{self.source}: the {split_name} mask has shape {split.mask.shape}, expected {(n, len(self.modalities))}"
                )
            empty = ~split.mask.any(axis=1)
            if empty.any():
                raise DataError(f"{self.source}: {split_name} rows {format_rows(empty)} have no modality at all")
            for m, modality in enumerate(self.modalities):
                array = split.arrays.get(modality.name)
                if array is None:
                    raise DataError(f"{self.source}: modality {modality.name!r} has no {split_name} array")
                if array.shape != (n, *modality.shape):
                    raise DataError(
                        f"{self.source}: modality {modality.name!r} ({split_name}) has shape {array.shape}, expected {(n, *modality.shape)}"
                    )
            if split.labels is not None and len(split.labels) != n:
                raise DataError(f"{self.source}: {len(split.labels)} {split_name} labels for {n} rows")


def to_tensors(batch: dict, device: torch.device | str) -> dict:
    """Move a batch made by `Split.batch` to a device."""
    out = {"data": {k: v.to(device) for k, v in batch["data"].items()}, "mask": batch["mask"].to(device)}
    if "labels" in batch:
        out["labels"] = batch["labels"].to(device)
    return out


def iterate(split: Split, batch_size: int = 1000):
    """Consecutive batches of a split, in order (evaluation)."""
    for start in range(0, len(split), batch_size):
        yield start, split.batch(np.arange(start, min(start + batch_size, len(split))))


def observed_rows(split: Split, names: Sequence[str], modalities: Sequence[str]) -> np.ndarray:
    """Rows where every modality in `modalities` is observed."""
    columns = [names.index(m) for m in modalities]
    return np.flatnonzero(split.mask[:, columns].all(axis=1))
