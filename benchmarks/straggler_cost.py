"""What the straggler moves cost at each epoch start (`train.callbacks.OrderDimensions`), side by side with a run without them;
prints one JSON object.

The case a user met: a four-modality cohort of 1,500 subjects, the default model (gated, 50 dimensions, MoPoE), where
the moves used to exchange the last dimension with a free position and back about 50 times at every epoch start (8
epochs: 254 s against 36 s with --no-order-dimensions). For each setting: the wall time, the validation ELBO of the
saved model, and, from the run's log, the moves made and the seconds they took per epoch start, as a share of the
run's mean epoch.

    python benchmarks/straggler_cost.py [--epochs 8] [--repeats 3] [--out runs/straggler_cost]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path

from infinimodal.cli import main as cli

DATA = "cohort:n=1500"


def run(out: Path, epochs: int, order: bool) -> dict:
    flags = [] if order else ["--no-order-dimensions"]
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        assert cli(["train", "--data", DATA, "--epochs", str(epochs), "--quiet", "--out", str(out), *flags]) == 0
    seconds = time.perf_counter() - start
    log = (out / "infinimodal.log").read_text()
    moves = [(int(m), float(s)) for m, s in re.findall(r"epoch \d+: (\d+) straggler move\(s\) in ([\d.]+) s", log)]
    record = json.loads((out / "config.json").read_text())
    return {
        "seconds": round(seconds, 1),
        "best_val_elbo": record["best_val_elbo"],
        "epoch_starts_with_moves": len(moves),
        "moves": sum(m for m, _ in moves),
        "move_seconds": round(sum(s for _, s in moves), 2),
        "largest_move_share_of_an_epoch": round(max((s for _, s in moves), default=0.0) / (seconds / epochs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default="runs/straggler_cost")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    run(out / "warm_up", 1, True)  # imports and first-call costs, which would fall on whichever setting ran first
    runs = {"default": [], "no_order_dimensions": []}
    for repeat in range(args.repeats):  # interleaved, so that machine noise hits both alike
        runs["default"].append(run(out / f"default_{repeat}", args.epochs, True))
        runs["no_order_dimensions"].append(run(out / f"no_order_{repeat}", args.epochs, False))
    result = {
        "data": DATA,
        "epochs": args.epochs,
        "repeats": args.repeats,
        **{name: each[0] for name, each in runs.items()},
    }
    median = {name: sorted(r["seconds"] for r in each)[len(each) // 2] for name, each in runs.items()}
    result["median_seconds"] = median
    result["time_ratio"] = round(median["default"] / median["no_order_dimensions"], 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
