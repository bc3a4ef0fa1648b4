"""Labels as a modality: `--data mnist:labels=0.1` (any built-in data set) adds a categorical modality `label`.

The label of a row is then something the model reads and generates like any other modality: it is observed for
a fraction F of the training rows (stratified by class and seeded, so every class keeps F of its rows) and for
the same fraction of the validation rows, and for no test row. Predicting a test row's class is imputing its
missing label (`prediction_error` in eval.json scores it against the split's `labels`), and generating from a
class is cross-modal generation from the label (Wu & Goodman 2018 trained MVAE semi-supervised this way).
"""

from __future__ import annotations

from typing import cast

import numpy as np

from ..errors import DataError
from ..modality import Modality
from .multimodal import MultimodalData, Split

LABEL_MODALITY = "label"
OPTION = "labels"


def split_label_option(options: str, spec: str) -> tuple[str, float | None]:
    """'3,labels=0.1' -> ('3', 0.1): the label fraction, and the options left for the data set's own parser."""
    kept, fraction = [], None
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, sep, value = part.partition("=")
        if key != OPTION:
            kept.append(part)
            continue
        try:
            fraction = float(value) if sep else float("nan")
        except ValueError:
            fraction = float("nan")
        if not 0.0 < fraction <= 1.0:
            raise DataError(
                f"{spec}: {OPTION}= must be the fraction of training rows whose label is observed, in (0, 1], got {value!r}"
            )
    return ",".join(kept), fraction


def observed_fraction(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A mask that keeps round(fraction * n_c) rows of every class c (at least one), chosen at random."""
    observed = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep = max(1, int(round(fraction * len(rows))))
        observed[rng.permutation(rows)[:keep]] = True
    return observed


def add_label_modality(data: MultimodalData, fraction: float, seed: int = 0) -> MultimodalData:
    """`data` with a categorical modality `label` (one-hot over the classes of its labels) observed for a stratified
    `fraction` of the training and validation rows and for no test row."""
    if data.train.labels is None:
        raise DataError(f"{data.source}: has no labels to turn into a modality ({OPTION}=)")
    if LABEL_MODALITY in data.names:
        raise DataError(f"{data.source}: already has a modality called {LABEL_MODALITY!r}")
    unlabelled = [name for name in ("valid", "test") if data.split(name).labels is None]
    if unlabelled:
        raise DataError(
            f"{data.source}: its {' and '.join(unlabelled)} rows have no labels to turn into a modality ({OPTION}=)"
        )
    labels = {name: cast(np.ndarray, data.split(name).labels) for name in ("train", "valid", "test")}  # (checked)
    n_classes = int(max(split_labels.max() for split_labels in labels.values())) + 1
    rng = np.random.default_rng(seed)
    for name in ("train", "valid", "test"):
        split = data.split(name)
        observed = (
            observed_fraction(labels[name], fraction, rng) if name != "test" else np.zeros(len(split), dtype=bool)
        )
        one_hot = np.eye(n_classes, dtype=np.float32)[labels[name]] * observed[:, None]  # missing rows hold zeros
        arrays = split.arrays | {LABEL_MODALITY: one_hot}
        setattr(
            data, name, Split(arrays, np.concatenate([split.mask, observed[:, None]], axis=1), split.labels, split.ids)
        )
    data.modalities = [*data.modalities, Modality(LABEL_MODALITY, (n_classes,), "categorical")]
    data.label_modality = LABEL_MODALITY
    data.source = (
        f"{data.source}; labels observed for {int(data.train.mask[:, -1].sum())} of {len(data.train)} training rows"
    )
    return data
