"""How well trained cohort models find subjects at an extreme of one factor, on many more held-out subjects than the
cohort's own test split holds, and why a model does better or worse (docs/results.md section 10); prints JSON.

    python benchmarks/factor_extreme.py runs/clinical_auto/gated/gated_s0 runs/clinical_auto/fixed/gated_s0 [--test 6000]

Each run was trained on the `cohort` data set; `cohort:test=N` draws N new test subjects from the same population
(the training and validation rows stay the same), a twentieth of them at 4 SD of one shared factor. Against the
typical test subjects, ROC AUC of:
- `score`, `latent`, `reconstruction`: the deviation score (`infinimodal.deviation.COMBINATION`) and two of its
  parts, on the rows with every modality (`complete`) and on every row (`all_rows`: `score` only);
- `latent_sample_covariance`: the latent deviation with the unshrunk sample covariance of the reference codes (the
  estimator before `deviation.shrunk_centre`), `latent_shrunk_covariance` with the shrunk one, both fitted on the same
  half of the complete reference rows;
- `factors_read_out`: a ceiling that uses the truth, the Ledoit-Wolf Mahalanobis distance of the shared factors
  read out linearly from the codes (the regression fitted on the reference rows' true factors): what the codes know
  about the factors;
- `factors_read_out_r2`: that regression's R^2 on the typical test rows.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LinearRegression
from sklearn.metrics import roc_auc_score

from infinimodal import api
from infinimodal.data import load_dataset
from infinimodal.deviation import COMBINATION, Reference, combine, deviation_parts, representations, shrunk_centre

EXTREME = 2  # the cohort's kind for a subject at an extreme of one factor


def auc(kinds: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> float:
    chosen = rows & ((kinds == 0) | (kinds == EXTREME))
    return round(float(roc_auc_score(kinds[chosen] == EXTREME, scores[chosen])), 4)


def distances(codes: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = codes - mean
    return np.einsum("nd,de,ne->n", centred, precision, centred)


def with_test_rows(spec: str, rows: int) -> str:
    return f"{spec}{',' if ':' in spec else ':'}test={rows}"


def measure(run: str, test_rows: int, samples: int) -> dict:
    vae, config = api.load(run)
    module = vae.module
    data = load_dataset(with_test_rows(config.data, test_rows), seed=config.data_seed, progress=False)
    kinds, complete = data.truth["kinds"], data.test.mask.all(1)
    torch.manual_seed(0)
    parts = deviation_parts(module, data.test, Reference.fit(module, data.valid, samples), samples, by_row=False)
    reference = np.flatnonzero(data.valid.mask.all(1))
    codes, fitting = representations(module, data.test), representations(module, data.valid)[reference]
    half = fitting[::2]
    sample_precision = np.linalg.pinv(np.cov(half, rowvar=False) + 1e-6 * np.eye(half.shape[1]))
    typical = complete & (kinds == 0)
    true_factors = data.truth["shared_factors"]
    read_out = LinearRegression().fit(fitting, true_factors["valid"][reference])
    centre = LedoitWolf().fit(read_out.predict(fitting))
    return {
        "run": run,
        "dimensions": int(codes.shape[1]),
        "extreme_subjects": {
            "complete": int((complete & (kinds == EXTREME)).sum()),
            "all": int((kinds == EXTREME).sum()),
        },
        "complete": {
            "score": auc(kinds, combine(parts, COMBINATION), complete),
            "latent": auc(kinds, parts.latent, complete),
            "reconstruction": auc(kinds, parts.reconstruction_worst, complete),
            "latent_sample_covariance": auc(kinds, distances(codes, half.mean(0), sample_precision), complete),
            "latent_shrunk_covariance": auc(kinds, distances(codes, *shrunk_centre(half)), complete),
            "factors_read_out": auc(kinds, centre.mahalanobis(read_out.predict(codes)), complete),
        },
        "all_rows": {"score": auc(kinds, combine(parts, COMBINATION), np.ones_like(complete))},
        "factors_read_out_r2": round(float(read_out.score(codes[typical], true_factors["test"][typical])), 3),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories trained on the cohort data set")
    parser.add_argument("--test", type=int, default=6000, help="held-out subjects to draw")
    parser.add_argument("--samples", type=int, default=20, help="posterior draws per row for the scores")
    args = parser.parse_args(argv)
    result = {"test_rows": args.test, "runs": [measure(run, args.test, args.samples) for run in args.runs]}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
