"""Would the dimensions come back with another seed (`infinimodal stability`)?

Each used dimension of the first run (`explain`'s `used`) is matched to one dimension of every other run: the
codes of the same rows (posterior means of what the decoders read) are correlated, and the Hungarian algorithm
(scipy's `linear_sum_assignment`) pairs the first run's used dimensions with distinct dimensions of the other run
so that the sum of |r| is largest. Per dimension of the first run:
- `worst_abs_r`, `median_abs_r`: its |r| with its match, the worst and the median over the other runs;
- `keeps_index`: whether its match has its index in every other run (an order that survives the seed);
- `pattern_agreement`: the worst cosine similarity of its variance-explained pattern over the modalities (R^2 of the
  dimension alone per modality, negatives as 0) with its match's (1: it explains the same modalities in the
  same proportions);
- `feature_agreement`: the worst correlation of its feature effects (every modality's, each feature scaled by
  its spread over the run's dimensions) with its match's, signed by the codes' correlation (1: the same features
  move the same way);
- `top_feature_overlap`: the worst share of its TOP_FEATURES features of largest |effect| that are among its match's.
The dimensions of a model whose prior is rotation-invariant (a Gaussian) are found again only up to a rotation
of the space they span; `subspace` says whether that space itself comes back: the canonical correlations between the
first run's used dimensions and each other run's (`canonical_correlations`), and `worst_canonical_r`, the smallest of
the first k (k: the first run's used dimensions), worst over the runs (1: the same space, however rotated).
`index_shift` is how far its match lies from its index (the median over the other runs), and `order_spearman` in
the summary the rank correlation of the first run's used indices with their matches' (the median over the runs: 1
when the order survives though the positions shift). `summary` holds the medians over the first run's used dimensions, the share that keep their index, and the number of
used dimensions of each run. A dimension matched with |r| >= MATCHED_R counts as found again (`reproduced`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

#: |r| from which a dimension counts as found again in another run.
MATCHED_R = 0.7
#: How many features of largest |effect| are compared.
TOP_FEATURES = 10


def correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[a columns, b columns] Pearson r, 0 for a column that does not vary (its SD below 1e-9 of its matrix's largest: a
    pruned factor's values near 1e-170 would otherwise overflow the ratio)."""

    def standardised(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(0)
        sd = np.sqrt((x**2).sum(0))
        varies = sd > 1e-9 * max(float(sd.max(initial=0.0)), 1e-300)
        return np.where(varies, x / np.where(varies, sd, 1.0), 0.0)

    return np.clip(standardised(a).T @ standardised(b), -1.0, 1.0)


def abs_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|`correlations`|."""
    return np.abs(correlations(a, b))


def effect_vectors(explanation: dict) -> np.ndarray:
    """[D, all features]: every modality's feature effects side by side, each feature divided by its spread over the
    dimensions (features in large units do not dominate)."""
    blocks = [np.asarray(part["effects"], dtype=np.float64) for part in explanation["feature_effects"].values()]
    effects = np.concatenate(blocks, axis=1)
    spread = effects.std(0)
    return effects / np.where(spread > 0, spread, 1.0)


def patterns(explanation: dict) -> np.ndarray:
    """[D, modalities]: the variance each dimension explains alone in each modality, negatives as 0."""
    return np.clip(
        np.nan_to_num(np.array(list(explanation["variance_explained"].values()), dtype=np.float64).T), 0, None
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float("nan")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _basis(x: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the centred columns' span (directions with no spread dropped)."""
    u, singular, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return u[:, singular > 1e-6 * max(float(singular.max(initial=0.0)), 1e-300)]


def canonical_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The canonical correlations between the columns of a and of b (cosines of the principal angles between the
    spans of the centred columns), largest first."""
    return np.linalg.svd(_basis(a).T @ _basis(b), compute_uv=False)


def match(reference: np.ndarray, other: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each used dimension of the reference codes: its match among the other run's dimensions, |r| and the sign of r."""
    r = correlations(reference[:, used], other)
    rows, cols = linear_sum_assignment(-np.abs(r))
    matched = np.full(len(used), -1)
    matched[rows] = cols
    chosen = np.array([r[i, m] if m >= 0 else 0.0 for i, m in enumerate(matched)])
    return matched, np.abs(chosen), np.sign(chosen)


def stability(codes: list[np.ndarray], explanations: list[dict]) -> dict:
    """Whether each used dimension of the first run comes back in the others (the module docstring defines each entry).

    Args:
        codes: per run, its codes of the same rows, [rows, D_r] (posterior means of what the decoders read), the
            first run first.
        explanations: per run, `explain` of those rows, in the same order.

    Returns:
        `runs`, `rows`, `dimensions` (per used dimension of the first run: its matches' |r|, whether it keeps its
        index, the agreement of its modality pattern and features), `subspace` (canonical correlations), `summary`
        (medians, the number reproduced, the order's rank correlation, each run's used dimensions) and `thresholds`.

    Raises:
        ValueError: fewer than two runs.
    """
    if len(codes) < 2:
        raise ValueError("stability needs two runs or more")
    used = np.flatnonzero(explanations[0]["used"])
    effects = [effect_vectors(e) for e in explanations]
    pattern = [patterns(e) for e in explanations]
    same_features = len({tuple(len(p["features"]) for p in e["feature_effects"].values()) for e in explanations}) == 1
    per_run = []
    for k in range(1, len(codes)):
        matched, r, signs = match(codes[0], codes[k], used)
        per_run.append(
            {
                "matched": matched.tolist(),
                "abs_r": r.tolist(),
                "pattern": [
                    _cosine(pattern[0][j], pattern[k][m]) if m >= 0 else float("nan") for j, m in zip(used, matched)
                ],
                "features": [
                    s * _corr(effects[0][j], effects[k][m]) if m >= 0 and same_features else float("nan")
                    for j, m, s in zip(used, matched, signs)
                ],
                "top": [
                    _overlap(effects[0][j], effects[k][m]) if m >= 0 and same_features else float("nan")
                    for j, m in zip(used, matched)
                ],
            }
        )
    canonical = [
        canonical_correlations(codes[0][:, used], codes[k][:, np.flatnonzero(explanations[k]["used"])]).tolist()
        for k in range(1, len(codes))
    ]
    worst_canonical = min((c[len(used) - 1] if len(c) >= len(used) else 0.0) for c in canonical) if len(used) else None
    dimensions = []
    for i, j in enumerate(used):
        rs = np.array([run["abs_r"][i] for run in per_run])
        dimensions.append(
            {
                "index": int(j),
                "matches": [int(run["matched"][i]) for run in per_run],
                "abs_r": rs.tolist(),
                "worst_abs_r": float(rs.min()),
                "median_abs_r": float(np.median(rs)),
                "reproduced": bool(rs.min() >= MATCHED_R),
                "keeps_index": all(run["matched"][i] == j for run in per_run),
                "index_shift": float(np.median([abs(run["matched"][i] - j) for run in per_run])),
                "pattern_agreement": _worst([run["pattern"][i] for run in per_run]),
                "feature_agreement": _worst([run["features"][i] for run in per_run]),
                "top_feature_overlap": _worst([run["top"][i] for run in per_run]),
            }
        )
    return {
        "runs": len(codes),
        "rows": int(len(codes[0])),
        "dimensions": dimensions,
        "subspace": {"canonical_correlations": canonical, "worst_canonical_r": worst_canonical},
        "summary": summary(dimensions, explanations)
        | {"worst_canonical_r": worst_canonical, "order_spearman": _order(used, per_run)},
        "thresholds": {"matched_r": MATCHED_R, "top_features": TOP_FEATURES},
    }


def _order(used: np.ndarray, per_run: list[dict]) -> float | None:
    """The median over the other runs of Spearman's rho between the used indices and their matches' indices."""
    from scipy.stats import spearmanr

    if len(used) < 3:
        return None
    return float(np.median([spearmanr(used, run["matched"])[0] for run in per_run]))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    top = min(TOP_FEATURES, len(a))
    return len(set(np.argsort(-np.abs(a))[:top]) & set(np.argsort(-np.abs(b))[:top])) / top


def _worst(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(min(finite)) if finite else None


def summary(dimensions: list[dict], explanations: list[dict]) -> dict:
    """Medians over the first run's used dimensions."""

    def median(key):
        values = [d[key] for d in dimensions if d[key] is not None]
        return float(np.median(values)) if values else None

    return {
        "used_per_run": [int(np.sum(e["used"])) for e in explanations],
        "median_worst_abs_r": median("worst_abs_r"),
        "median_abs_r": median("median_abs_r"),
        "reproduced": int(sum(d["reproduced"] for d in dimensions)),
        "share_keep_index": float(np.mean([d["keeps_index"] for d in dimensions])) if dimensions else None,
        "median_pattern_agreement": median("pattern_agreement"),
        "median_feature_agreement": median("feature_agreement"),
        "median_top_feature_overlap": median("top_feature_overlap"),
        "median_index_shift": median("index_shift"),
    }
