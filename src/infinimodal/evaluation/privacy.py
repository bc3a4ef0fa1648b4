"""Is a synthetic cohort like the data without copying it? Privacy, fidelity and utility of synthetic rows.

Every measure compares three sets of rows of the same features (all modalities side by side, one-hot classes,
flattened images): the synthetic rows, the rows the model was trained on, and held-out rows it never saw.
Distances are Gower's for numbers: the mean over features of |a - b| / (the feature's range on the real rows), as
SDMetrics' DCR metrics define them except for their cap of 1 per feature, which only binds for values beyond the
real rows' range (our test checks the two agree within it). Nearest neighbours are searched exactly over **every**
training and held-out row (`infinimodal.evaluation.neighbours`): a search over a subsample misses a copied row
whenever its source was left out, and then a generator that returns its training rows looks like one that does not.

Privacy (Platzer & Reutterer 2021; Yale et al. 2020; Carlini et al. 2022 for the attack at a low false-positive rate).
Each measure is given beside its **null**, the value held-out rows get when they play the synthetic rows: a
generator that draws fresh subjects from the population is indistinguishable from them. The first part of the
held-out rows (at most half) plays the synthetic rows; the rest is the held-out reference (`RealRows`).
- `dcr_share`: of the synthetic rows, the share whose closest training row is nearer than their closest held-out
  reference row (a tie counts half; SDMetrics' DCROverfittingProtection counts it as not closer), beside
  `dcr_share_null`; with every training row in the search the null is about n_train / (n_train + n_reference), not
  0.5; both with a 95 % interval;
- `dcr_close_share`: the share of synthetic rows at least as close to a training row as the closest 5 % of held-out
  rows are (`dcr_close_threshold`), beside its null (about 0.05): a generator that copies a part of its rows;
- `exact_copies`: synthetic rows equal to a training row (distance below 1e-9), beside `exact_copies_holdout`
  (held-out rows equal to a training row: duplicates in the population, common in binary data);
- `nndr`: median over synthetic rows of the nearest-neighbour distance ratio (closest / second-closest training
  row), beside the same median for held-out rows (`nndr_holdout`): a copy, or a copy with small noise, has a ratio
  near 0;
- `membership_auc`: a distance attack scoring each real row by how close its nearest synthetic row is; the area
  under the ROC curve for telling training rows from held-out rows (0.5: membership cannot be told), and
  `membership_tpr`, the share of training rows the attack flags when it flags 1 % of held-out rows
  (`membership_fpr`): a generator that copies a few of many training rows moves the AUC little but this a lot.
Each has a one-sided test of "nearer the training rows than fresh subjects are" (`tests`: p-values; Fisher's exact
test for counts, Mann-Whitney for NNDR and the AUC, a z-test for the DCR share); `memorisation` lists the measures
whose p-value is below `ALPHA`. `controls` runs the same measures on two planted generators, a copier (training rows
verbatim) and a noisy copier (training rows plus noise a quarter of the real rows' neighbour spacing), as many rows
as the synthetic set: every measure must fail on them (the noisy copier makes no exact copy), or the report says
which measures cannot tell a copier on these rows (`inconclusive`).
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

from dataclasses import dataclass

import numpy as np
from scipy.stats import fisher_exact, ks_2samp, mannwhitneyu, norm
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .neighbours import Neighbours, binary_columns, gower_neighbours, scaled

EXACT = 1e-9
#: A measure fails when its one-sided p-value is below this (five tests per report: family-wise error under 0.5 %).
ALPHA = 0.001
#: `dcr_close_share` counts synthetic rows as close to a training row as this quantile of the held-out rows.
CLOSE_QUANTILE = 0.05
#: The membership attack's false-positive rate on held-out rows for `membership_tpr`.
ATTACK_FPR = 0.01
#: Held-out rows that play the synthetic rows for the null at most (each is a search over every training row).
MAX_NULL_ROWS = 2000
#: Below this many training or held-out rows the report warns that its measures have little power.
MIN_ROWS = 100
#: The noisy copier's noise, as a share of the median distance of a held-out row to its nearest training row.
NOISE_FRACTION = 0.25
#: The measures; the noisy copier is expected to fail all but the first.
MEASURES = ("exact_copies", "dcr_share", "dcr_close_share", "nndr", "membership")


@dataclass
class RealRows:
    """Training and held-out rows, range-scaled. The held-out rows are cut in two where they are stored: the first part
    (at most half, at most MAX_NULL_ROWS) plays the synthetic rows for the null of every measure, and the rest
    (`reference`) is what synthetic and null rows alike are compared with in `dcr_share`. Cut where they are stored,
    not at random: rows stored together (one writer's digits, one site's or family's subjects) stay on one side, so a
    null row has no sibling on the reference side, as a fresh subject has none. On MNIST, whose validation digits come
    in blocks by writer, a random leave-one-out null put 0.860 of held-out digits nearer a training digit where fresh
    digits of the same pool scored 0.912, a false alarm (`benchmarks/privacy_cost.py`)."""

    train: np.ndarray
    holdout: np.ndarray
    reference: np.ndarray
    binary: np.ndarray
    null_to_train: Neighbours  # the null rows against every training row
    null_to_reference: Neighbours  # the same rows against the reference rows

    @classmethod
    def build(cls, train: np.ndarray, holdout: np.ndarray, binary: np.ndarray) -> "RealRows":
        cut = min(MAX_NULL_ROWS, len(holdout) // 2)
        queries, reference = holdout[:cut], holdout[cut:]
        return cls(
            train,
            holdout,
            reference,
            binary,
            gower_neighbours(queries, train, k=min(2, len(train)), binary=binary),
            gower_neighbours(queries, reference, k=1, binary=binary),
        )

    @property
    def neighbour_spacing(self) -> float:
        """Median distance of a held-out row to its nearest training row."""
        return float(np.median(self.null_to_train.distances[:, 0]))


def _closer_to_train(to_train: Neighbours, to_holdout: Neighbours) -> np.ndarray:
    """1 where the nearest training row is nearer than the nearest held-out row, 0.5 on a tie, else 0."""
    a, b = to_train.distances[:, 0], to_holdout.distances[:, 0]
    return np.where(a < b, 1.0, np.where(a == b, 0.5, 0.0))


def _interval(values: np.ndarray) -> list[float]:
    half = 1.96 * values.std() / np.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


def _greater_share_p(values: np.ndarray, null: np.ndarray) -> float:
    """One-sided p-value of mean(values) > mean(null) (z-test on two independent means)."""
    se = np.sqrt(values.var() / len(values) + null.var() / len(null))
    difference = values.mean() - null.mean()
    if se == 0:
        return 0.0 if difference > 0 else 1.0
    return float(norm.sf(difference / se))


def _more_often_p(hits: np.ndarray, null_hits: np.ndarray) -> float:
    """One-sided Fisher exact p-value that `hits` are true more often than `null_hits`."""
    table = [[int(hits.sum()), int((~hits).sum())], [int(null_hits.sum()), int((~null_hits).sum())]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def _ratios(neighbours: Neighbours) -> np.ndarray | None:
    if neighbours.distances.shape[1] < 2:
        return None
    first, second = neighbours.distances[:, 0], neighbours.distances[:, 1]
    return np.where(second > 0, first / np.where(second > 0, second, 1.0), 0.0)


def memorisation_measures(synthetic: np.ndarray, real: RealRows) -> dict:
    """The privacy measures of the module docstring for range-scaled `synthetic` rows, each beside its null and test."""
    to_train = gower_neighbours(synthetic, real.train, k=min(2, len(real.train)), binary=real.binary)
    to_holdout = gower_neighbours(synthetic, real.holdout, k=1, binary=real.binary)
    to_reference = gower_neighbours(synthetic, real.reference, k=1, binary=real.binary)
    closer, closer_null = (
        _closer_to_train(to_train, to_reference),
        _closer_to_train(real.null_to_train, real.null_to_reference),
    )
    copies, copies_null = to_train.distances[:, 0] < EXACT, real.null_to_train.distances[:, 0] < EXACT
    threshold = float(np.quantile(real.null_to_train.distances[:, 0], CLOSE_QUANTILE))
    close, close_null = to_train.distances[:, 0] <= threshold, real.null_to_train.distances[:, 0] <= threshold
    ratio, ratio_null = _ratios(to_train), _ratios(real.null_to_train)
    # the attack: each real row scored by the distance to its nearest synthetic row
    member, outsider = to_train.nearest_query, to_holdout.nearest_query
    truth = np.concatenate([np.ones(len(member)), np.zeros(len(outsider))])
    auc = float(roc_auc_score(truth, -np.concatenate([member, outsider])))
    flagged_at = float(np.quantile(outsider, ATTACK_FPR))
    auc_p = float(mannwhitneyu(-member, -outsider, alternative="greater").pvalue)
    tpr_p = _more_often_p(member <= flagged_at, outsider <= flagged_at)
    tests = {
        "exact_copies": _more_often_p(copies, copies_null),
        "dcr_share": _greater_share_p(closer, closer_null),
        "dcr_close_share": _more_often_p(close, close_null),
        "nndr": float(mannwhitneyu(ratio, ratio_null, alternative="less").pvalue) if ratio is not None else 1.0,
        "membership": min(1.0, 2 * min(auc_p, tpr_p)),  # the AUC or the low-FPR attack (Bonferroni)
    }
    return {
        "dcr_share": float(closer.mean()),
        "dcr_share_interval": _interval(closer),
        "dcr_share_null": float(closer_null.mean()),
        "dcr_share_null_interval": _interval(closer_null),
        "dcr_median_train": float(np.median(to_train.distances[:, 0])),
        "dcr_median_holdout": float(np.median(to_holdout.distances[:, 0])),
        "dcr_close_share": float(close.mean()),
        "dcr_close_share_null": float(close_null.mean()),
        "dcr_close_threshold": threshold,
        "nndr": float(np.median(ratio)) if ratio is not None else None,
        "nndr_holdout": float(np.median(ratio_null)) if ratio_null is not None else None,
        "exact_copies": int(copies.sum()),
        "exact_copies_holdout": int(copies_null.sum()),
        "membership_auc": auc,
        "membership_tpr": float((member <= flagged_at).mean()),
        "membership_fpr": float((outsider <= flagged_at).mean()),
        "tests": tests,
        "memorisation": [name for name in MEASURES if tests[name] < ALPHA],
        "rows": {
            "synthetic": int(len(synthetic)),
            "train": int(len(real.train)),
            "holdout": int(len(real.holdout)),
            "holdout_null": int(len(real.null_to_train.distances)),
            "holdout_reference": int(len(real.reference)),
        },
    }


def planted_copiers(real: RealRows, n: int, seed: int) -> dict[str, np.ndarray]:
    """Two generators that memorise, n range-scaled rows each: training rows verbatim, and the same rows with noise
    (Gaussian on continuous columns, flips on binary ones) whose expected Gower distance to its source is
    NOISE_FRACTION of the real rows' neighbour spacing."""
    rng = np.random.default_rng(seed)
    copies = real.train[rng.choice(len(real.train), n, replace=n > len(real.train))]
    scale = NOISE_FRACTION * real.neighbour_spacing
    noisy = copies + rng.normal(0.0, scale * np.sqrt(np.pi / 2), copies.shape) * ~real.binary
    flips = (rng.random(copies.shape) < min(scale, 0.5)) & real.binary
    noisy[flips] = 1.0 - noisy[flips]
    return {"copier": copies, "noisy_copier": noisy}


def privacy(
    synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, seed: int = 0, controls: bool = True
) -> dict:
    """The privacy measures of the module docstring, with the planted copiers' results under `controls`."""
    if len(train) < 2 or len(holdout) < 2:
        raise ValueError(
            f"the privacy measures need at least 2 training and 2 held-out rows, got {len(train)} and {len(holdout)}"
        )
    real_rows = np.concatenate([train, holdout])
    low, span = real_rows.min(0), np.ptp(real_rows, axis=0)
    span = np.where(span > 0, span, 1.0)
    s, t, h = scaled(synthetic, low, span), scaled(train, low, span), scaled(holdout, low, span)
    real = RealRows.build(t, h, binary_columns(s, t, h))
    out = memorisation_measures(s, real)
    if controls:
        out["controls"] = {
            name: memorisation_measures(rows, real)["memorisation"]
            for name, rows in planted_copiers(real, len(s), seed).items()
        }
        missed = {m for m in MEASURES if m not in out["controls"]["copier"]}
        missed |= {m for m in MEASURES[1:] if m not in out["controls"]["noisy_copier"]}
        out["inconclusive"] = [m for m in MEASURES if m in missed]
    return out


def fidelity(synthetic: np.ndarray, holdout: np.ndarray, seed: int = 0, max_rows: int = 5000) -> dict:
    """The fidelity measures of the module docstring."""
    ks = np.array([ks_2samp(synthetic[:, j], holdout[:, j]).statistic for j in range(holdout.shape[1])])
    varying = (synthetic.std(0) > 1e-12) & (holdout.std(0) > 1e-12)
    if varying.sum() >= 2:
        difference = np.abs(
            np.corrcoef(synthetic[:, varying], rowvar=False) - np.corrcoef(holdout[:, varying], rowvar=False)
        )
        correlation_error = float(difference[np.triu_indices(int(varying.sum()), k=1)].mean())
    else:
        correlation_error = None
    rng = np.random.default_rng(seed)
    n = min(len(synthetic), len(holdout), max_rows)
    rows = np.concatenate([holdout[rng.permutation(len(holdout))[:n]], synthetic[rng.permutation(len(synthetic))[:n]]])
    is_synthetic = np.repeat([0, 1], n)
    out = {"ks_mean": float(ks.mean()), "ks_max": float(ks.max()), "correlation_error": correlation_error}
    if n < DETECTION_FOLDS:
        return out | {
            "detection_auc": None,
            "detection_note": f"{n} held-out rows: too few for {DETECTION_FOLDS}-fold detection",
        }
    detector = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    predicted = cross_val_predict(detector, rows, is_synthetic, cv=DETECTION_FOLDS, method="predict_proba")[:, 1]
    return out | {"detection_auc": float(roc_auc_score(is_synthetic, predicted))}


#: Folds of the real-or-synthetic detector's cross-validation (each class needs this many rows).
DETECTION_FOLDS = 5


def utility(
    synthetic: dict[str, np.ndarray], train: dict[str, np.ndarray], holdout: dict[str, np.ndarray], target: str | None
) -> dict:
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

        return {
            "utility_task": f"accuracy predicting {target} from {', '.join(features)}",
            "utility": score(synthetic),
            "utility_real": score(train),
        }
    if len(names) < 2:
        return {"utility_task": None, "utility": None, "utility_real": None}

    def r2(rows):
        values = []
        for name in names:
            x = np.concatenate([rows[n] for n in names if n != name], axis=1)
            model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, rows[name])
            values.append(model.score(np.concatenate([holdout[n] for n in names if n != name], axis=1), holdout[name]))
        return float(np.mean(values))

    return {
        "utility_task": "mean R^2 of each modality from the others (ridge)",
        "utility": r2(synthetic),
        "utility_real": r2(train),
    }


def flat(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """All modalities of the rows side by side, each flattened."""
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in arrays.values()], axis=1)
