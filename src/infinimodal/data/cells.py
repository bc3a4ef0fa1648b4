"""Cells of subject-keyed tables as text: what counts as empty, numbers told from text, subjects named in errors."""

from __future__ import annotations

import numpy as np

from ..errors import DataError

#: Cell text read as an empty cell.
MISSING_TOKENS = frozenset({"", "NA", "NaN", "nan"})
#: A numeric column with text in at most this share of its filled cells has stray text; with more, it changes type.
STRAY_SHARE = 0.25
#: Subjects named in one error line, at most.
SHOWN = 8


def shown(items) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def parse_numbers(where: str, ids: np.ndarray, cells: np.ndarray) -> np.ndarray | None:
    """A column's cells as floats (NaN = empty), or None when the column is text; an error naming the cells when it
    mixes numbers and text."""
    if cells.dtype != object:
        return cells.astype(np.float64)
    missing = np.isin(cells, list(MISSING_TOKENS))
    values = np.full(len(cells), np.nan)
    text = np.zeros(len(cells), dtype=bool)
    for i in np.flatnonzero(~missing):
        try:
            values[i] = float(cells[i])
        except ValueError:
            text[i] = True
    numbers = ~missing & ~text
    if not text.any():
        return values
    if not numbers.any():
        return None
    strays = sorted(set(cells[text]))
    example = ", ".join(repr(s) for s in strays[:5])
    if text.sum() <= STRAY_SHARE * (text.sum() + numbers.sum()):
        hint = " (decimal commas? write 1.5, not 1,5)" if any("," in s for s in strays) else ""
        raise DataError(
            f"{where}: a numeric column with text in {int(text.sum())} cells ({example}) of subjects {shown(ids[text])}{hint}: "
            "write numbers, or leave the cells empty for missing values"
        )
    raise DataError(
        f"{where}: the column changes type: numbers for subjects {shown(ids[numbers])}, text ({example}) for "
        f"{shown(ids[text])}; keep one type per column (numbers, or text for categories)"
    )


def cell_texts(cells: np.ndarray) -> np.ndarray:
    """A column's cells as the texts of its classes, '' where empty: text as written (stripped), numbers of a Parquet
    column as whole numbers where they are whole, else every digit (1000001 and 1000002 stay apart)."""
    if cells.dtype == object:
        texts = np.asarray([str(c).strip() for c in cells], dtype=object)
        return np.where(np.isin(texts, list(MISSING_TOKENS)), "", texts).astype(object)
    return np.asarray(
        [
            "" if np.isnan(v) else str(int(v)) if float(v).is_integer() else repr(float(v))
            for v in cells.astype(np.float64)
        ],
        dtype=object,
    )
