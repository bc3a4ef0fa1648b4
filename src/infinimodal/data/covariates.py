"""Covariates (`--covariates age,sex,site`): columns that every encoder and decoder is conditioned on, not modelled.

They are read from a table named `covariates` or from whichever table holds them (those columns then leave that
table's modality). A numeric covariate is standardised with its training mean and standard deviation; a text
covariate is one-hot over its classes. A subject with a modality but an empty covariate is an error naming the
subjects (there is no covariate to condition on); a class the model never saw is refused at prediction time.
The encoding is saved with the model (config.json's `covariate_encoding`), so that new tables are read alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..columns import Column
from ..errors import DataError
from .cells import cell_texts, parse_numbers, shown


@dataclass(frozen=True)
class CovariateEncoding:
    """How covariate cells become the numbers the networks read: a numeric column standardised (`mean`, `std`), a text
    column one-hot over its classes."""

    columns: tuple[Column, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def encode(self, cells: dict[str, np.ndarray], ids: np.ndarray, where: str) -> np.ndarray:
        """[rows, width] float32 of each subject's covariates; an empty cell or an unseen class is an error naming the
        subjects."""
        parts = []
        for column, mean, std in zip(self.columns, self.mean, self.std):
            if column.name not in cells:
                raise DataError(
                    f"{where}: no covariate column {column.name!r} (the model is conditioned on {', '.join(self.names)})"
                )
            values = cells[column.name]
            here = f"covariate {column.name!r} of {where}"
            if column.family == "categorical":
                texts = cell_texts(values)
                empty = texts == ""
                _refuse_empty(here, ids, empty)
                unseen = ~np.isin(texts, list(column.categories))
                if unseen.any():
                    raise DataError(
                        f"{here}: classes {shown(sorted(set(texts[unseen])))} (subjects {shown(ids[unseen])}) are not among the "
                        f"model's ({shown(column.classes)}); refused rather than mapped: a model cannot condition on a site it never saw"
                    )
                parts.append((texts[:, None] == np.asarray(column.classes)[None, :]).astype(np.float32))
            else:
                numbers = parse_numbers(here, ids, values)
                if numbers is None:
                    raise DataError(f"{here}: holds text, but the model read it as a number")
                _refuse_empty(here, ids, np.isnan(numbers))
                parts.append(((numbers - mean) / std).astype(np.float32)[:, None])
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(ids), 0), dtype=np.float32)

    def decode(self, encoded: np.ndarray) -> dict[str, np.ndarray]:
        """Covariate values in the user's terms (numbers, class names) from encoded rows."""
        out, start = {}, 0
        for column, mean, std in zip(self.columns, self.mean, self.std):
            block = encoded[:, start : start + column.width]
            out[column.name] = (
                np.asarray(column.classes, dtype=object)[block.argmax(1)]
                if column.family == "categorical"
                else block[:, 0] * std + mean
            )
            start += column.width
        return out

    def set_values(self, encoded: np.ndarray, values: dict[str, str]) -> np.ndarray:
        """A copy of encoded rows with the covariates named in `values` set, for every row, to the value given (as
        text: a class of a text covariate, a number for a numeric one): `--set site=A`. Unknown names and classes are
        errors that say what is allowed."""
        out, start = np.array(encoded, dtype=np.float32, copy=True), 0
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise DataError(
                f"--set {', '.join(unknown)}: not a covariate of this model (its covariates: {', '.join(self.names) or 'none'})"
            )
        for column, mean, std in zip(self.columns, self.mean, self.std):
            if column.name in values:
                text = str(values[column.name])
                if column.family == "categorical":
                    if text not in column.categories:
                        raise DataError(
                            f"--set {column.name}={text}: not a class the model was trained with ({', '.join(column.categories)})"
                        )
                    out[:, start : start + column.width] = 0.0
                    out[:, start + column.categories.index(text)] = 1.0
                else:
                    try:
                        out[:, start] = (float(text) - mean) / std
                    except ValueError:
                        raise DataError(f"--set {column.name}={text}: covariate {column.name!r} is a number") from None
            start += column.width
        return out

    def typical(self, encoded: np.ndarray) -> np.ndarray:
        """One encoded row typical of these rows: each number's mean, each text column's most frequent class."""
        out, start = np.zeros(self.width, dtype=np.float32), 0
        for column in self.columns:
            block = encoded[:, start : start + column.width]
            if column.family == "categorical":
                out[start + int(block.sum(0).argmax())] = 1.0
            else:
                out[start] = float(block[:, 0].mean()) if len(block) else 0.0
            start += column.width
        return out

    def to_dict(self) -> dict:
        return {"columns": [c.to_dict() for c in self.columns], "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, record: dict) -> "CovariateEncoding":
        return cls(tuple(Column.from_dict(c) for c in record["columns"]), tuple(record["mean"]), tuple(record["std"]))


def _refuse_empty(where: str, ids: np.ndarray, empty: np.ndarray) -> None:
    if empty.any():
        raise DataError(
            f"{where}: empty for subjects {shown(ids[empty])}: the model conditions on every covariate; fill them in, "
            "or leave these subjects out"
        )


def fit_covariates(
    cells: dict[str, np.ndarray], ids: np.ndarray, training: np.ndarray, where: dict[str, str]
) -> CovariateEncoding:
    """The encoding of covariate columns: text -> one-hot over the classes, numbers -> standardised with the mean and
    standard deviation of the training subjects (`training`, a boolean row mask)."""
    columns, means, stds = [], [], []
    for name, values in cells.items():
        numbers = parse_numbers(f"covariate {name!r} of {where[name]}", ids, values)
        if numbers is None:
            texts = cell_texts(values)
            classes = tuple(sorted(set(texts[texts != ""])))
            if len(classes) < 2:
                raise DataError(
                    f"covariate {name!r} of {where[name]}: one class ({', '.join(classes)}) on every subject: nothing to condition on"
                )
            columns.append(Column(name, "categorical", classes))
            means.append(0.0)
            stds.append(1.0)
            continue
        known = numbers[training & ~np.isnan(numbers)]
        spread = float(known.std()) if len(known) else 0.0
        columns.append(Column(name, "gaussian"))
        means.append(float(known.mean()) if len(known) else 0.0)
        stds.append(spread if spread > 0 else 1.0)
    return CovariateEncoding(tuple(columns), tuple(means), tuple(stds))
