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
- `codes_beyond_factors`: the Ledoit-Wolf Mahalanobis distance of what the codes hold beyond those read-out factors
  (whether the rest of the code carries the signal);
- `score_sample_covariance`: `score` with the latent part computed with the sample covariance;
- `factors_read_out_r2`: that regression's R^2 on the typical test rows; `shrinkage`: the Ledoit-Wolf shrinkage of the
  reference codes' covariance; `off_map_complete`: the AUCs of subjects off the map, for the cost of shrinking.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LinearRegression
from sklearn.metrics import roc_auc_score

from infinimodal import api
from infinimodal.data import load_dataset
from infinimodal.deviation import (
    COMBINATION,
    Reference,
    _mahalanobis,
    combine,
    deviation_parts,
    representations,
    shrunk_centre,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semisupervised_cohort import with_test_rows  # noqa: E402  (the same cohort:test=N spec)

OFF_MAP, EXTREME = 1, 2  # the cohort's kinds of atypical subject: off the map, at an extreme of one factor


def auc(kinds: np.ndarray, scores: np.ndarray, rows: np.ndarray, kind: int = EXTREME) -> float:
    chosen = rows & ((kinds == 0) | (kinds == kind))
    return round(float(roc_auc_score(kinds[chosen] == kind, scores[chosen])), 4)


def sample_centre(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The estimator before `shrunk_centre`: the mean and the pseudo-inverse of the sample covariance."""
    return codes.mean(0), np.linalg.pinv(np.cov(codes, rowvar=False) + 1e-6 * np.eye(codes.shape[1]))


def standardised(codes: np.ndarray, fitting: np.ndarray, scaling: np.ndarray, centre) -> np.ndarray:
    """The latent deviation as `deviation.Standardisation` computes it, with the centre estimator `centre`."""
    mean, precision = centre(fitting)
    reference = _mahalanobis(scaling, mean, precision)
    return (_mahalanobis(codes, mean, precision) - reference.mean()) / (reference.std() + 1e-8)


def residual_beyond_factors(
    codes: np.ndarray, fitting: np.ndarray, factors: np.ndarray, fitting_factors: np.ndarray
) -> np.ndarray:
    """Ledoit-Wolf Mahalanobis distance of what the codes hold beyond the factors read out of them (`factors`, and
    `fitting_factors` for the reference rows): each code minus its linear prediction from them, the prediction and the
    covariance fitted on the reference rows."""
    back = LinearRegression().fit(fitting_factors, fitting)
    centre = LedoitWolf().fit(fitting - back.predict(fitting_factors))
    return centre.mahalanobis(codes - back.predict(factors))


def measure(run: str, test_rows: int, samples: int) -> dict:
    vae, config = api.load(run)
    module = vae.module
    data = load_dataset(with_test_rows(config.data, test_rows), seed=config.data_seed, progress=False)
    kinds, complete = data.truth["kinds"], data.test.mask.all(1)
    torch.manual_seed(0)
    parts = deviation_parts(module, data.test, Reference.fit(module, data.valid, samples), samples, by_row=False)
    reference = np.flatnonzero(data.valid.mask.all(1))
    codes = representations(module, data.test).astype(np.float64)
    fitting = representations(module, data.valid)[reference].astype(np.float64)
    half, other_half = fitting[::2], fitting[1::2]  # as `deviation.Standardisation` splits the reference rows
    before = standardised(codes, half, other_half, sample_centre)
    now = standardised(codes, half, other_half, shrunk_centre)
    score = combine(parts, COMBINATION)
    score_before = np.maximum(np.maximum(before, parts.worst), parts.reconstruction_worst)
    typical = complete & (kinds == 0)
    true_factors = data.truth["shared_factors"]
    read_out = LinearRegression().fit(fitting, true_factors["valid"][reference])
    factors, fitting_factors = read_out.predict(codes), read_out.predict(fitting)
    return {
        "run": run,
        "dimensions": int(codes.shape[1]),
        "reference_rows_fitted": len(half),
        "shrinkage": round(float(LedoitWolf().fit(half).shrinkage_), 4),
        "extreme_subjects": {
            "complete": int((complete & (kinds == EXTREME)).sum()),
            "all": int((kinds == EXTREME).sum()),
        },
        "complete": {
            "score": auc(kinds, score, complete),
            "score_sample_covariance": auc(kinds, score_before, complete),
            "latent": auc(kinds, parts.latent, complete),
            "reconstruction": auc(kinds, parts.reconstruction_worst, complete),
            "latent_sample_covariance": auc(kinds, before, complete),
            "latent_shrunk_covariance": auc(kinds, now, complete),
            "factors_read_out": auc(kinds, LedoitWolf().fit(fitting_factors).mahalanobis(factors), complete),
            "codes_beyond_factors": auc(
                kinds, residual_beyond_factors(codes, fitting, factors, fitting_factors), complete
            ),
        },
        "all_rows": {"score": auc(kinds, score, np.ones_like(complete))},
        "off_map_complete": {
            "score": auc(kinds, score, complete, OFF_MAP),
            "latent_sample_covariance": auc(kinds, before, complete, OFF_MAP),
            "latent_shrunk_covariance": auc(kinds, now, complete, OFF_MAP),
        },
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
