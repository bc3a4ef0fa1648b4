"""Ablation of `--truncation auto`'s starting size (docs/results.md section 11): train and evaluate the default gated
PoE model with truncation auto starting from another number of dimensions, with compare.py's protocol; print JSON.

    python benchmarks/truncation_start.py --start 8 --data synthetic:shared=12,private=1 --epochs 15 --out runs/auto/abl/s12_start8
    python benchmarks/truncation_start.py --start 8 --data mnist --epochs 10 --out runs/auto/abl/mnist_start8
    python benchmarks/truncation_start.py --start 32 --aggregator mopoe --data cohort --epochs 30 --iw-samples 50 --out runs/default34/start32/cohort_s0

The starting size is a constant of the library (`latents.sticks.AUTO_START_DIMENSIONS`), not an option: this script
sets it for its own process only.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import infinimodal.latents.sticks as sticks
from infinimodal import api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--aggregator", default="poe", help="section 11 used poe; section 16 the default, mopoe")
    parser.add_argument("--iw-samples", type=int, help="default: 50 for synthetic data, 100 otherwise")
    args = parser.parse_args()
    sticks.AUTO_START_DIMENSIONS = args.start
    out = Path(args.out)
    synthetic = args.data.startswith("synthetic")
    # compare.py's settings for each data set (docs/results.md sections 7 and 11)
    extra = dict(hidden=[256, 256], batch_size=128, kl_warmup=2) if synthetic else {}
    if not (out / "eval.json").is_file():
        config = api.TrainConfig(
            data=args.data,
            latent="gated",
            aggregator=args.aggregator,
            epochs=args.epochs,
            seed=args.seed,
            truncation="auto",
            **extra,
        )
        api.train(config, out, progress=False)
        iw_samples = args.iw_samples or (50 if synthetic else 100)
        api.evaluate(out, iw_samples=iw_samples, coherence=False, progress=False)
    result = json.loads((out / "eval.json").read_text())
    config = json.loads((out / "config.json").read_text())
    with open(out / "metrics.csv", newline="") as handle:
        history = [int(float(row["truncation"])) for row in csv.DictReader(handle) if row.get("truncation")]
    print(
        json.dumps(
            {
                "run": str(out),
                "start": history[0],
                "train_seconds": config["train_seconds"],
                "elbo": result["elbo"],
                "log_likelihood": result["log_likelihood"],
                "kl_active": result["kl_active"],
                "kl_span_99": result["kl_span_99"],
                "latent_dimensions": result["latent_dimensions"],
                "knn_error_5": (result.get("knn_error") or {}).get("5"),
                "dimensions_per_epoch": history,
            }
        )
    )


if __name__ == "__main__":
    main()
