"""Semi-supervised prediction on a cohort with diagnostic groups, scored on many held-out subjects, as JSON.

    python benchmarks/compare.py --data cohort:n=3000,groups=4,labels=0.05 --models gated/mopoe --epochs 50 \\
        --seeds 0 1 2 --vary-data --iw-samples 10 --no-coherence [--set predict=label:10 ...] --out runs/semi_cohort/NAME
    python benchmarks/semisupervised_cohort.py --test 5000 runs/semi_cohort/*/* > runs/semi_cohort/scored.json

A cohort's own test split is a tenth of its subjects (300 of 3,000: one error moves the error rate by 0.33 points,
its standard error is about 2 points). `cohort:test=N` draws N test subjects after the same training and validation
rows, so each run is scored here on N fresh subjects of its own cohort: the model's prediction of the group (the
label modality imputed from everything else, `prediction_error`) beside classifiers fitted on the same labelled
training rows and tuned on the labelled validation rows (`prediction_baselines`). `validation` is the model's error
on the labelled validation rows, what settings are chosen on; the summary groups runs by their parent folder (one
setting) and gives each setting's mean over its runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from infinimodal import api
from infinimodal.data import load_dataset
from infinimodal.evaluation.metrics import prediction_baselines, prediction_errors


def with_test_rows(spec: str, rows: int) -> str:
    name, _, options = spec.partition(":")
    if name != "cohort":
        raise SystemExit(f"{spec}: this benchmark scores cohort runs")
    return f"cohort:test={rows}" + (f",{options}" if options else "")


def score(run: Path, rows: int) -> dict:
    vae, config = api.load(run)
    data = load_dataset(with_test_rows(config.data, rows), seed=config.data_seed, progress=False)
    label = data.label_modality
    model = prediction_errors(vae.module, data.test, label)[label]
    validation = prediction_errors(vae.module, data.valid)[label]["all"]
    baselines = prediction_baselines(data, data.test)[label]
    best = min((entry[entry["best_baseline"]], key, entry["best_baseline"]) for key, entry in baselines.items() if "best_baseline" in entry)
    return {"run": str(run), "setting": run.parent.name, "data": config.data, "data_seed": config.data_seed, "test_rows": len(data.test),
            "validation": validation, "model": model, "baselines": {k: {b: v[b] for b in ("logistic", "mlp") if b in v} for k, v in baselines.items()},
            "best_baseline": {"error": best[0], "from": best[1], "classifier": best[2]}}


def summary(results: list[dict]) -> dict:
    by_setting = defaultdict(list)
    for result in results:
        by_setting[result["setting"]].append(result)
    out = {}
    for setting, runs in by_setting.items():
        model = np.array([r["model"]["all"] for r in runs])
        best = np.array([r["best_baseline"]["error"] for r in runs])
        out[setting] = {"runs": len(runs), "validation": float(np.mean([r["validation"] for r in runs])), "model": float(model.mean()),
                        "model_sd": float(model.std(ddof=1)) if len(runs) > 1 else None, "best_baseline": float(best.mean()),
                        "mri_logistic": float(np.mean([r["baselines"]["mri"]["logistic"] for r in runs])),
                        "model_minus_best_baseline": [float(v) for v in model - best]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--test", type=int, default=5000, help="held-out subjects to score each run on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [score(Path(run), args.test) for run in args.runs if (Path(run) / "model.ckpt").is_file()]
    print(json.dumps({"runs": results, "summary": summary(results)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
