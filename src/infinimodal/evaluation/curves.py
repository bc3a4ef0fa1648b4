"""A run's training curves, from Lightning's metrics.csv: per-epoch values of every logged column, the validation
error of imputing each categorical modality, and the values at the epoch of the saved model (model.ckpt: the best
validation ELBO), on which runs are chosen."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InfinimodalError
from ..runfiles import SELECTION_METRIC


def read_curves(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-epoch values of every column of Lightning's metrics.csv (epochs counted from 1).

    Lightning writes step rows and epoch rows with different columns filled; an epoch's value of a column is
    the last non-empty entry logged in that epoch."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "epoch" not in rows[0]:
        raise InfinimodalError(f"{path}: no per-epoch curves (expected Lightning's metrics.csv with an 'epoch' column)")
    epochs = sorted({int(float(r["epoch"])) for r in rows if r.get("epoch")})
    columns = [c for c in rows[0] if c not in ("epoch", "step")]
    curves = {c: np.full(len(epochs), np.nan) for c in columns}
    position = {e: i for i, e in enumerate(epochs)}
    for row in rows:
        if not row.get("epoch"):
            continue
        i = position[int(float(row["epoch"]))]
        for c in columns:
            if row.get(c) not in (None, ""):
                curves[c][i] = float(row[c])
    curves = {c: v for c, v in curves.items() if np.isfinite(v).any()}
    return np.asarray(epochs) + 1, curves


def class_error_modality(column: str) -> str | None:
    """The categorical modality whose validation imputation error the column is (`val_<modality>_error`, written
    by training), or None for any other column."""
    if column.startswith("val_") and column.endswith("_error") and len(column) > len("val__error"):
        return column[len("val_") : -len("_error")]
    return None


def class_error_curves(curves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{categorical modality: its validation imputation error per epoch}, from metrics.csv's `val_<modality>_error`."""
    return {name: values for column, values in curves.items() if (name := class_error_modality(column)) is not None}


def saved_model_index(curves: dict[str, np.ndarray]) -> int | None:
    """The position of the saved model's epoch in the curves: the first epoch of the best validation ELBO (what
    the checkpoint keeps); None when no epoch was validated."""
    values = curves.get(SELECTION_METRIC)
    return None if values is None or not np.isfinite(values).any() else int(np.nanargmax(values))


def saved_model_values(curves: dict[str, np.ndarray]) -> dict[str, float]:
    """Each validation column (`val_…`) at the epoch of the saved model; a column not logged at that epoch (one added
    after a resumed run's epoch) is left out. Empty when no epoch was validated."""
    best = saved_model_index(curves)
    if best is None:
        return {}
    return {
        key: float(values[best])
        for key, values in curves.items()
        if key.startswith("val_") and np.isfinite(values[best])
    }
