"""The report's opening: what the model found, and what each latent dimension does (`infinimodal explain` on the
report's test rows, written beside the report as explain.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runfiles import json_ready, write_json
from . import plots
from .html import Figure, Section, note, table


#: Features named per modality and dimension in the report's explanation table.
REPORT_TOP_FEATURES = 3
#: Test rows the report's explanation is computed on, at most (`infinimodal explain` takes 2,000 by default): every
#: dimension is decoded four times per row, which for MNIST-sized decoders is most of a short run's report.
REPORT_EXPLAINED_ROWS = 1000
#: Dimensions in the report's explanation, at most (the used ones, in index order).
REPORT_EXPLAINED_DIMS = 20


def found_summary(result: dict) -> str:
    """The summary's lines on what the model found (from `explain`): used dimensions, shared and private ones."""
    used = [d for d in result["dimensions"] if d["used"]]
    shared = [f"dim {d['index']} ({', '.join(d['modalities'])})" for d in used if d["sharing"] == "shared"]
    private = [f"dim {d['index']} ({d['modalities'][0]})" for d in used if d["sharing"] == "private"]
    total = result["variance_explained_total"]
    rows = [
        [
            "dimensions used",
            f"{result['n_used']} of {len(result['dimensions'])} (KL > {result['thresholds']['used_kl']} nats and an effect on some modality's fit)",
        ],
        ["shared by several modalities", ", ".join(shared) or "none"],
        ["private to one", ", ".join(private) or "none"],
        [
            "variance explained by all dimensions",
            ", ".join(f"{name} {value:.2f}" for name, value in total.items() if value == value),
        ],
    ]
    return "<h3>What the model found (on the test rows; details below)</h3>" + table(rows)


def explain_section(section: Section, vae, rows, run_dir: Path, figures: Path) -> dict:
    """`explain` on the report's test rows (also written to run_dir/explain.json): MOFA's variance-explained table as a
    figure, and per used dimension its KL, the modalities it explains, its strongest features and associations."""
    result = vae.explain(rows, max_rows=REPORT_EXPLAINED_ROWS)
    write_json(run_dir / "explain.json", json_ready(result))
    used = [d["index"] for d in result["dimensions"] if d["used"]][:REPORT_EXPLAINED_DIMS]
    measures = sorted(set(result["variance_explained_measure"].values()))
    section.intro = (
        f"For each latent dimension, on {result['rows']} test rows (all of it in explain.json; `infinimodal explain` computes it for any rows): "
        "its share of the KL to the prior; the variance it explains in each modality on its own (MOFA's R², 1 − SS_res / SS_tot of the "
        "decoded means with this dimension at its posterior value and every other at its prior value, minus the same with all at the prior; "
        f"for non-Gaussian features the same with deviances: {', '.join(measures)}); the modalities it explains "
        f"(R² ≥ {result['thresholds']['explains_r2']} alone or left out: shared by several, or private to one); the features whose decoded mean moves "
        "most, in the data's units, as the dimension goes from its 5th to its 95th percentile over the rows with the others at each row's "
        "own values; and its strongest association with a covariate, a label or a categorical column "
        "(Spearman ρ, AUC or Kruskal-Wallis ε², with a Benjamini-Hochberg q-value). "
        f"A dimension is used when its KL exceeds {result['thresholds']['used_kl']} nats and it changes some modality's R² by "
        f"{result['thresholds']['used_r2']} or more: {result['n_used']} of {len(result['dimensions'])} are."
    )
    if not used:
        section.html.append(note("No dimension is used: the model has learned nothing from these rows."))
        return result
    path = plots.variance_explained_figure(
        result["variance_explained"],
        result["kl_share"],
        used,
        figures / "variance_explained.png",
        "R²" if measures == ["squared error"] else "R², deviance for non-Gaussian features",
    )
    section.figures.append(
        Figure(path, "variance explained per dimension and modality (alone), and each dimension's share of the KL")
    )
    rows = []
    for j in used:
        d = result["dimensions"][j]
        tops = "; ".join(
            f"{name}: " + ", ".join(f"{t['feature']} {t['effect']:+.3g}" for t in top[:REPORT_TOP_FEATURES])
            for name, top in d["top_features"].items()
            if name in d["modalities"]
        )
        rows.append(
            [
                str(j),
                f"{d['kl']:.2f} ({100 * d['kl_share']:.0f} %)",
                f"{d['sharing']}: {', '.join(d['modalities']) or '-'}",
                tops or "-",
                _strongest_association(d["associations"]),
            ]
        )
    section.html.append(
        table(
            rows,
            [
                "dim",
                "KL, nats (share)",
                "explains",
                "top features (change of the mean, data units)",
                "strongest association",
            ],
        )
    )
    return result


def _strongest_association(found: dict) -> str:
    """The association of smallest q among a dimension's tests, or '-' when none has q < 0.05."""
    tested = [(a["q"], name, a) for name, a in found.items() if a["q"] is not None and np.isfinite(a["q"])]
    if not tested or min(tested, key=lambda t: t[0])[0] >= 0.05:
        return "-"
    q, name, a = min(tested, key=lambda t: t[0])
    label = {"spearman": "ρ", "auc": "AUC", "kruskal": "ε²"}.get(a["test"], a["test"])
    return (
        f"{name}: {label} {a['statistic']:.2f} (q {q:.1e})"
        if q > 0
        else f"{name}: {label} {a['statistic']:.2f} (q < 1e-300)"
    )
