"""The clinical uses measured side by side (docs/results.md section 10): imputation against regression, deviation
scores against feature-space baselines, and the privacy and fidelity of synthetic cohorts; prints JSON.

    python benchmarks/clinical.py --out runs/clinical --epochs 30 --seeds 0 1
    python benchmarks/clinical.py --out runs/clinical --privacy-only runs/ordered/upright10/gated_poe_s0 ...

For each latent family (default: the stick-gated default and the Gaussian, both MoPoE) and seed it trains on the
`cohort` data set (a healthy reference population; a tenth of the test subjects atypical, half off the map from
factors to measurements, half at an extreme of a factor) and reports:
- `imputation_mse`: eval.json's per-modality imputation error, the model's conditional mean beside baselines tuned
  on the validation rows (ridge, MLP, logistic regression for the binary markers, the training mean);
- `score_auc`: per kind of atypical subject, the ROC AUC of telling it from typical test subjects with the model's
  `score` under each combination of its parts (`infinimodal.deviation.COMBINATIONS`), and with two feature-space
  baselines fitted on the complete training rows: the PCA reconstruction residual (components for 90 % of the
  variance) and the Mahalanobis distance (Ledoit-Wolf covariance). Baselines need every feature, so every figure is
  on the test rows with every modality observed; `score_all_rows` is the model's on every row;
- `synthesis`: the privacy, fidelity and utility report of `synthesize` for each source (prior, aggregate).
Runs given to --privacy-only (e.g. MNIST models) get only the synthesis report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from infinimodal import api
from infinimodal.cli import main as cli
from infinimodal.deviation import COMBINATIONS, Reference, combine, deviation_parts
from infinimodal.synthesis import SOURCES

PCA_VARIANCE = 0.9


def features(split, rows) -> np.ndarray:
    batch = split.batch(rows)["data"]
    return np.concatenate([v.numpy().reshape(len(rows), -1) for v in batch.values()], axis=1)


def baseline_scores(data) -> dict[str, np.ndarray]:
    """Feature-space deviation of the complete test rows, fitted on the complete training rows."""
    train = features(data.train, np.flatnonzero(data.train.mask.all(1)))
    test = features(data.test, np.flatnonzero(data.test.mask.all(1)))
    pca = PCA(n_components=PCA_VARIANCE, svd_solver="full").fit(train)
    residual = ((test - pca.inverse_transform(pca.transform(test))) ** 2).sum(1)
    return {"pca_residual": residual, "mahalanobis": LedoitWolf().fit(train).mahalanobis(test)}


def aucs(kinds: np.ndarray, scores: dict[str, np.ndarray]) -> dict:
    out = {}
    for kind, name in ((1, "off_manifold"), (2, "latent_extreme")):
        rows = (kinds == 0) | (kinds == kind)
        out[name] = {
            method: round(float(roc_auc_score(kinds[rows] == kind, values[rows])), 4)
            for method, values in scores.items()
        }
    return out


def synthesis(run: Path, n: int) -> dict:
    vae, config = api.load(run)
    data = api.load_run_data(run, config, progress=False)
    out = {}
    for source in SOURCES:
        synthetic = vae.synthesize(n, source=source, data=data, seed=0)
        out[source] = vae.synthesis_report(synthetic, data)
    return out


def cohort_model(out: Path, latent: str, seed: int, epochs: int, samples: int, n_synthetic: int) -> dict:
    run = out / f"{latent}_s{seed}"
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON
        if not (run / "model.ckpt").exists():
            assert (
                cli(
                    [
                        "train",
                        "--data",
                        "cohort",
                        "--latent",
                        latent,
                        "--epochs",
                        str(epochs),
                        "--seed",
                        str(seed),
                        "--quiet",
                        "--out",
                        str(run),
                    ]
                )
                == 0
            )
        if not (run / "eval.json").exists():  # delete it to evaluate a trained run again
            assert cli(["evaluate", str(run), "--iw-samples", "100", "--quiet"]) == 0
    result = json.loads((run / "eval.json").read_text())
    vae, config = api.load(run)
    data = api.load_run_data(run, config, progress=False)
    scores = vae.score(data.test, data.valid, samples=samples)
    torch.manual_seed(0)
    parts = deviation_parts(vae.module, data.test, Reference.fit(vae.module, data.valid, samples), samples)
    complete = data.test.mask.all(1)
    kinds = data.truth["kinds"]
    model = {f"score_{how}": combine(parts, how)[complete] for how in COMBINATIONS}
    return {
        "run": str(run),
        "latent": latent,
        "seed": seed,
        "epochs": epochs,
        "elbo": result["elbo"],
        "kl_active": result.get("kl_active"),
        "imputation_mse": result.get("imputation_mse"),
        "score_auc": aucs(kinds[complete], {**model, **baseline_scores(data)}),
        "score_all_rows": aucs(
            kinds, {"score": scores["score"], **{f"score_{how}": combine(parts, how) for how in COMBINATIONS}}
        ),
        "synthesis": synthesis(run, n_synthetic),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--latents", nargs="+", default=["gated", "gaussian"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=20, help="posterior draws per row for the scores")
    parser.add_argument("--synthetic", type=int, default=1000, help="synthetic rows per report")
    parser.add_argument(
        "--privacy-only", nargs="*", default=[], help="existing runs that get only the synthesis report"
    )
    args = parser.parse_args()
    out = Path(args.out)
    results = {"cohort": [], "privacy_only": {}}
    if not args.privacy_only:
        for seed in args.seeds:
            for latent in args.latents:
                results["cohort"].append(cohort_model(out, latent, seed, args.epochs, args.samples, args.synthetic))
    for run in args.privacy_only:
        results["privacy_only"][run] = synthesis(Path(run), args.synthetic)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
