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
setting) and gives each setting's mean over its runs, and the paired difference of the model's per-subject errors
from those of logistic regression on MRI alone and of the best baseline of each run (chosen on the test rows: the
strongest adversary), pooled over the runs' subjects, with a 95 % interval.
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
from infinimodal.evaluation.metrics import baseline_class_predictions, predicted_classes, prediction_errors


def with_test_rows(spec: str, rows: int) -> str:
    name, _, options = spec.partition(":")
    if name != "cohort":
        raise SystemExit(f"{spec}: this benchmark scores cohort runs")
    return f"cohort:test={rows}" + (f",{options}" if options else "")


def score(run: Path, rows: int) -> tuple[dict, dict[str, np.ndarray]]:
    """The run's result, and per-subject differences of errors (model minus baseline) against "mri_logistic" and "best"."""
    vae, config = api.load(run)
    data = load_dataset(with_test_rows(config.data, rows), seed=config.data_seed, progress=False)
    label, names, test = data.label_modality, data.names, data.test
    others = [m for m, name in enumerate(names) if name != label]
    scored, predicted = predicted_classes(vae.module, test, label, np.arange(len(test)), others)
    model_wrong = np.full(len(test), np.nan)
    model_wrong[scored] = predicted != test.labels[scored]
    baselines, wrong = {}, {}
    for key, given in ({"all": others} | {names[m]: [m] for m in others}).items():
        entry = baseline_class_predictions(data, test, given)
        for classifier, p in entry.get("probabilities", {}).items():
            wrong[(key, classifier)] = np.full(len(test), np.nan)
            wrong[(key, classifier)][entry["test_rows"]] = p.argmax(axis=1) != test.labels[entry["test_rows"]]
            baselines.setdefault(key, {})[classifier] = float(np.nanmean(wrong[(key, classifier)]))
    best = min(wrong, key=lambda k: np.nanmean(wrong[k]))
    result = {
        "run": str(run),
        "setting": run.parent.name,
        "data": config.data,
        "data_seed": config.data_seed,
        "test_rows": len(test),
        "validation": prediction_errors(vae.module, data.valid)[label]["all"],
        "model": prediction_errors(vae.module, test, label)[label],
        "baselines": baselines,
        "best_baseline": {"error": float(np.nanmean(wrong[best])), "from": best[0], "classifier": best[1]},
    }
    differences = {
        name: (model_wrong - wrong[key])[~np.isnan(model_wrong - wrong[key])]
        for name, key in (("mri_logistic", ("mri", "logistic")), ("best", best))
    }
    return result, differences


def interval(differences: np.ndarray) -> dict:
    half = 1.96 * differences.std(ddof=1) / np.sqrt(len(differences))
    return {
        "mean": float(differences.mean()),
        "interval": [float(differences.mean() - half), float(differences.mean() + half)],
        "rows": len(differences),
    }


def summary(scored: list[tuple[dict, dict[str, np.ndarray]]]) -> dict:
    by_setting = defaultdict(list)
    for result, differences in scored:
        by_setting[result["setting"]].append((result, differences))
    out = {}
    for setting, runs in by_setting.items():
        model = np.array([r["model"]["all"] for r, _ in runs])
        out[setting] = {
            "runs": len(runs),
            "validation": float(np.mean([r["validation"] for r, _ in runs])),
            "model": float(model.mean()),
            "model_sd": float(model.std(ddof=1)) if len(runs) > 1 else None,
            "best_baseline": float(np.mean([r["best_baseline"]["error"] for r, _ in runs])),
            "mri_logistic": float(np.mean([r["baselines"]["mri"]["logistic"] for r, _ in runs])),
        }
        for name in ("mri_logistic", "best"):
            out[setting][f"model_minus_{name}"] = interval(np.concatenate([d[name] for _, d in runs]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--test", type=int, default=5000, help="held-out subjects to score each run on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scored = [score(Path(run), args.test) for run in args.runs if (Path(run) / "model.ckpt").is_file()]
    print(json.dumps({"runs": [result for result, _ in scored], "summary": summary(scored)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
