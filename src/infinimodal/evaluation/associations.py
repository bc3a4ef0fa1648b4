"""Does a latent dimension track a covariate or a label: one test per (variable, dimension), FDR-corrected.

A variable is a value per row (missing: NaN, None or ""; those rows are left out of its tests):
- numeric with more than two values: Spearman's rank correlation (`test` "spearman", statistic rho);
- two classes: the AUC of the dimension for the second class (sorted) against the first (`test` "auc", 0.5: no
  association; p from the Mann-Whitney U test it equals);
- more classes: Kruskal-Wallis (`test` "kruskal", statistic epsilon^2 = H / (n - 1), 0 to 1).
p-values are two-sided; `q` are Benjamini-Hochberg adjusted over every test of the call (all variables and
dimensions together).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import false_discovery_control, kruskal, mannwhitneyu, spearmanr


def present(values: np.ndarray) -> np.ndarray:
    """Rows whose value is given (not NaN, None or blank text)."""
    if values.dtype.kind == "f":
        return np.isfinite(values)
    return np.array(
        [
            not (v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and v.strip() == ""))
            for v in values
        ]
    )


def as_numbers(values: np.ndarray) -> np.ndarray | None:
    """The values as float64, or None when some are not numbers."""
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError):
        return None


def _one(values: np.ndarray, codes: np.ndarray) -> dict:
    """The tests of one variable against every column of codes (rows already restricted to given values)."""
    numeric = as_numbers(values)
    levels = np.unique(values.astype(str) if numeric is None else numeric)
    dims = codes.shape[1]
    statistic, p = np.full(dims, np.nan), np.full(dims, np.nan)
    if len(levels) < 2:
        return {"test": "none: one value", "levels": [str(v) for v in levels], "statistic": statistic, "p": p}
    if numeric is not None and len(levels) > 2:
        for j in range(dims):
            if np.ptp(codes[:, j]) > 0:
                rho, pj = spearmanr(numeric, codes[:, j])
                statistic[j], p[j] = rho, pj
        return {"test": "spearman", "statistic": statistic, "p": p}
    keys = values.astype(str) if numeric is None else numeric
    groups = [keys == level for level in levels]
    for j in range(dims):
        column = codes[:, j]
        if np.ptp(column) == 0:
            continue
        if len(levels) == 2:
            u, pj = mannwhitneyu(column[groups[1]], column[groups[0]], alternative="two-sided")
            statistic[j], p[j] = u / (groups[1].sum() * groups[0].sum()), pj
        else:
            h, pj = kruskal(*(column[g] for g in groups))
            statistic[j], p[j] = h / (len(column) - 1), pj
    return {
        "test": "auc" if len(levels) == 2 else "kruskal",
        "levels": [str(v) for v in levels],
        "statistic": statistic,
        "p": p,
    }


def associations(codes: np.ndarray, variables: dict[str, np.ndarray]) -> dict[str, dict]:
    """{variable: {"test", "statistic": [per dimension], "p", "q", "rows", ("levels")}} (module docstring)."""
    found = {}
    for name, values in variables.items():
        values = np.asarray(values)
        given = present(values)
        found[name] = _one(values[given], codes[given]) | {"rows": int(given.sum())}
    tested = [(name, j) for name, a in found.items() for j in np.flatnonzero(np.isfinite(a["p"]))]
    q_values = false_discovery_control([found[name]["p"][j] for name, j in tested]) if tested else []
    for a in found.values():
        a["q"] = np.full(len(a["p"]), np.nan)
    for (name, j), q in zip(tested, q_values):
        found[name]["q"][j] = q
    return {
        name: {key: (value.tolist() if isinstance(value, np.ndarray) else value) for key, value in a.items()}
        for name, a in found.items()
    }
