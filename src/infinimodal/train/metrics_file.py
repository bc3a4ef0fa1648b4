"""metrics.csv across a resume: Lightning's CSV logger starts the file afresh, so the earlier epochs' rows are set
aside and merged back, on disk at every step, so that a kill loses nothing."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..runfiles import atomic_write


EARLIER_METRICS = "metrics.earlier.csv"


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _combined(earlier: list[dict], later: list[dict]) -> list[dict]:
    """The earlier rows of the epochs before the later rows' first epoch, then the later rows: the rows of an
    interrupted epoch (and anything after it) were logged again by the resumed run."""
    first_new = min((int(r["epoch"]) for r in later if r.get("epoch")), default=None)
    kept = [r for r in earlier if first_new is None or (r.get("epoch") and int(r["epoch"]) < first_new)]
    return kept + later


def _write_rows(path: Path, rows: list[dict]) -> None:
    fields = sorted({k for r in rows for k in r})  # Lightning's CSV logger orders its columns by name: the same file
    # whether or not a kill came before a column's first value (train_loss is logged every few steps)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def _set_aside_metrics(out: Path) -> None:
    """Lightning's CSV logger starts metrics.csv afresh: move the earlier rows to metrics.earlier.csv (on disk, so
    that a kill during the resumed run loses nothing; a second resume first folds in what the killed one logged)."""
    path, earlier = out / "metrics.csv", out / EARLIER_METRICS
    if earlier.is_file():
        _write_rows(earlier, _combined(_read_rows(earlier), _read_rows(path)))
        path.unlink(missing_ok=True)
    elif path.is_file():
        os.replace(path, earlier)


def _merge_metrics(out: Path) -> None:
    """metrics.csv = the set-aside rows followed by the resumed run's; then the set-aside file goes."""
    path, earlier = out / "metrics.csv", out / EARLIER_METRICS
    if not earlier.is_file():
        return
    _write_rows(path, _combined(_read_rows(earlier), _read_rows(path)))
    earlier.unlink()
