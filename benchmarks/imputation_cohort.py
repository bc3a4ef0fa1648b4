"""Imputation on many held-out subjects of a run's own cohort: the model against its tuned baselines, as JSON.

    python benchmarks/imputation_cohort.py --test 5000 runs/clinical/gated_s0 runs/clinical/gated_s1 > runs/imputation_cohort.json

`evaluate` scores imputation on the test rows with every modality observed: 354 of the default cohort's 600 test
subjects, where the model's own interval is about +-0.04 for a difference from the best baseline of about 0.015.
`cohort:test=N` draws N test subjects after the same training and validation rows, so a trained run is scored here
on about 0.6 N complete subjects, with `metrics.imputation_errors` (the model's conditional mean; ridge, MLP and
logistic baselines fitted on the complete training rows and tuned on the complete validation rows).

Besides the test figures: `valid`, the model's own error on the complete validation rows (what a choice between
trained models reads: never the test rows), and `model_unweighted`, the encoders' plain average of posterior draws
instead of the importance-weighted conditional mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from infinimodal import api
from infinimodal.data import load_dataset
from infinimodal.evaluation.metrics import BASELINES, imputation_errors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semisupervised_cohort import with_test_rows  # noqa: E402  (the same cohort:test=N spec)


def score(run: Path, rows: int) -> dict:
    vae, config = api.load(run)
    data = load_dataset(with_test_rows(config.data, rows), seed=config.data_seed, progress=False)
    errors = imputation_errors(vae.module, data.train, data.test, valid=data.valid)
    valid = imputation_errors(vae.module, data.train, data.valid, tuned=False)
    out = {"run": str(run), "data": config.data, "test_rows": len(data.test)}
    for name, entry in errors.items():
        best = entry["best_baseline"]
        out[name] = {
            "rows": entry["rows"],
            "model": entry["model"],
            "model_interval": entry["model_interval"],
            "model_unweighted": entry["model_unweighted"],
            "best_baseline": best,
            "baseline": entry[best],
            "model_over_baseline": entry["model"] / entry[best],
            **{b: entry[b] for b in BASELINES if b in entry},
            "valid": {"rows": valid[name]["rows"], "model": valid[name]["model"]},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument(
        "--test", type=int, default=5000, help="held-out subjects to draw (about 60 %% have every modality)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        json.dumps([score(Path(run), args.test) for run in args.runs if (Path(run) / "model.ckpt").is_file()], indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
