"""Is a synthetic cohort like the data without copying it? Privacy, fidelity and utility of synthetic rows.

Every measure compares three sets of rows of the same features (all modalities side by side, one-hot classes,
flattened images): the synthetic rows, the rows the model was trained on, and held-out rows it never saw.
Distances are Gower's for numbers: the mean over features of |a - b| / (the feature's range on the real rows), as
SDMetrics' DCR metrics define them except for their cap of 1 per feature, which only binds for values beyond the
real rows' range (our test checks the two agree within it). They are computed with scikit-learn's nearest-neighbour
search on range-scaled features, which scales to image-sized rows where SDMetrics' pairwise frames do not
(1,000 x 1,000 rows of 784 features would be a 12 GB frame there).

Privacy (Platzer & Reutterer 2021; Yale et al. 2020):
- `dcr_share`: of the synthetic rows, the share whose closest training row is nearer than their closest held-out
  row, with as many training rows as held-out rows (a random subset): 0.5 when the model generalises, 1 when it
  copies its training rows (SDMetrics' DCROverfittingProtection reports the same share as "closer_to_training",
  but counts a tie as not closer, which pulls binary data, where ties are common, below 0.5; a tie counts half here);
- `nndr`: median over synthetic rows of the nearest-neighbour distance ratio (closest / second-closest row of the
  whole training set), beside the same median for held-out rows (`nndr_holdout`): a copy has a ratio near 0;
- `exact_copies`: synthetic rows equal to a training row (distance below 1e-9);
- `membership_auc`: a distance attack, each real row scored by how close its nearest synthetic row is; the area
  under the ROC curve for telling training rows from held-out rows: 0.5 means membership cannot be told.
Fidelity:
- `ks_mean`, `ks_max`: Kolmogorov-Smirnov statistic between synthetic and held-out rows, per feature (scipy);
- `correlation_error`: mean absolute difference of the two correlation matrices (features that vary in both);
- `detection_auc`: cross-validated ROC AUC of a logistic regression telling held-out rows from synthetic rows:
  0.5 when they cannot be told apart.
Utility (train on synthetic, test on real):
- `utility`: with a categorical target (a label modality), the held-out accuracy of a logistic regression from the
  other features trained on synthetic rows, beside the same trained on real training rows (`utility_real`);
  otherwise the mean R^2 over modalities of ridge regressions of each modality from the others.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

EXACT = 1e-9


def scaled(rows: np.ndarray, low: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Features divided by their range, so that Manhattan distance / features is Gower's distance."""
    return (np.asarray(rows, dtype=np.float64) - low) / span


def gower_neighbours(reference: np.ndarray, queries: np.ndarray, k: int = 1) -> np.ndarray:
    """Distances from each query row to its k nearest reference rows (increasing): the mean over range-scaled features
    of |difference| (Gower's distance for numbers, without its cap of 1 per feature, which only binds for values
    beyond the real rows' range)."""
    search = NearestNeighbors(n_neighbors=k, metric="manhattan").fit(reference)
    distances, _ = search.kneighbors(queries)
    return distances / reference.shape[1]


def privacy(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, seed: int = 0) -> dict:
    """The privacy measures of the module docstring."""
    rng = np.random.default_rng(seed)
    real = np.concatenate([train, holdout])
    low, span = real.min(0), np.ptp(real, axis=0)
    span = np.where(span > 0, span, 1.0)
    equal = train[rng.permutation(len(train))[: len(holdout)]] if len(train) > len(holdout) else train
    s, t, h = scaled(synthetic, low, span), scaled(equal, low, span), scaled(holdout, low, span)
    to_train = gower_neighbours(t, s, k=1)[:, 0]
    to_holdout = gower_neighbours(h, s, k=1)[:, 0]
    whole = scaled(train, low, span)
    to_whole_train = gower_neighbours(whole, s, k=min(2, len(whole)))
    holdout_to_train = gower_neighbours(whole, h, k=min(2, len(whole)))
    # membership: each real row's distance to its closest synthetic row
    member = gower_neighbours(s, t, k=1)[:, 0]
    outsider = gower_neighbours(s, h, k=1)[:, 0]
    scores = -np.concatenate([member, outsider])
    truth = np.concatenate([np.ones(len(member)), np.zeros(len(outsider))])
    return {
        "dcr_share": float((to_train < to_holdout).mean() + 0.5 * (to_train == to_holdout).mean()),
        "dcr_median_train": float(np.median(to_train)),
        "dcr_median_holdout": float(np.median(to_holdout)),
        "nndr": _median_ratio(to_whole_train),
        "nndr_holdout": _median_ratio(holdout_to_train),
        "exact_copies": int((to_whole_train[:, 0] < EXACT).sum()),
        "membership_auc": float(roc_auc_score(truth, scores)),
        "rows": {"synthetic": int(len(synthetic)), "train": int(len(equal)), "holdout": int(len(holdout))},
    }


def _median_ratio(distances: np.ndarray) -> float | None:
    if distances.shape[1] < 2:
        return None
    second = distances[:, 1]
    ratio = np.where(second > 0, distances[:, 0] / np.where(second > 0, second, 1.0), 0.0)
    return float(np.median(ratio))


def fidelity(synthetic: np.ndarray, holdout: np.ndarray, seed: int = 0, max_rows: int = 5000) -> dict:
    """The fidelity measures of the module docstring."""
    ks = np.array([ks_2samp(synthetic[:, j], holdout[:, j]).statistic for j in range(holdout.shape[1])])
    varying = (synthetic.std(0) > 1e-12) & (holdout.std(0) > 1e-12)
    if varying.sum() >= 2:
        difference = np.abs(np.corrcoef(synthetic[:, varying], rowvar=False) - np.corrcoef(holdout[:, varying], rowvar=False))
        correlation_error = float(difference[np.triu_indices(int(varying.sum()), k=1)].mean())
    else:
        correlation_error = None
    rng = np.random.default_rng(seed)
    n = min(len(synthetic), len(holdout), max_rows)
    rows = np.concatenate([holdout[rng.permutation(len(holdout))[:n]], synthetic[rng.permutation(len(synthetic))[:n]]])
    is_synthetic = np.repeat([0, 1], n)
    detector = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    predicted = cross_val_predict(detector, rows, is_synthetic, cv=5, method="predict_proba")[:, 1]
    return {"ks_mean": float(ks.mean()), "ks_max": float(ks.max()), "correlation_error": correlation_error,
            "detection_auc": float(roc_auc_score(is_synthetic, predicted))}


def utility(synthetic: dict[str, np.ndarray], train: dict[str, np.ndarray], holdout: dict[str, np.ndarray], target: str | None) -> dict:
    """Train on synthetic, test on real (and the same model trained on the real training rows, for scale)."""
    names = list(holdout)
    if target is not None:
        features = [n for n in names if n != target]

        def score(rows):
            x, y = np.concatenate([rows[n] for n in features], axis=1), rows[target].argmax(1)
            if len(np.unique(y)) < 2:
                return None
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
            return float(model.score(np.concatenate([holdout[n] for n in features], axis=1), holdout[target].argmax(1)))

        return {"utility_task": f"accuracy predicting {target} from {', '.join(features)}", "utility": score(synthetic), "utility_real": score(train)}
    if len(names) < 2:
        return {"utility_task": None, "utility": None, "utility_real": None}

    def r2(rows):
        values = []
        for name in names:
            x = np.concatenate([rows[n] for n in names if n != name], axis=1)
            model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, rows[name])
            values.append(model.score(np.concatenate([holdout[n] for n in names if n != name], axis=1), holdout[name]))
        return float(np.mean(values))

    return {"utility_task": "mean R^2 of each modality from the others (ridge)", "utility": r2(synthetic), "utility_real": r2(train)}


def flat(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """All modalities of the rows side by side, each flattened."""
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in arrays.values()], axis=1)
