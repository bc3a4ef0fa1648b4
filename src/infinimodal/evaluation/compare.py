"""Several runs side by side: `compare_runs(run_dirs, out)` writes one page of their metrics and settings, overlaid
curves and KL spectra, and each run's key report figures in columns."""

from __future__ import annotations

import html
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InfinimodalError
from ..runfiles import read_config, read_json_object
from . import plots
from .html import Section, Figure, embed_png, flatten, format_value, note, render_page, table
from .catalogue import direction, metric_of
from .metrics import KL_ACTIVE_THRESHOLD
from .curves import class_error_curves, class_error_modality, read_curves, saved_model_index, saved_model_values
from .report import FIGURES, LONG_METRICS, REPORT, write_report

log = logging.getLogger("infinimodal")

#: Each run's figures shown side by side on the compare page (file stem, title).
SIDE_BY_SIDE = (
    ("maps", "latent maps"),
    ("stick_usage", "stick usage"),
    ("per_dimension", "samples per latent dimension (first modality)"),
    ("reconstruction", "reconstructions"),
    ("prior_samples", "samples from the prior"),
)


def _direction(key: str) -> int:
    """Which way is better for a flattened key: the declared metric's (`catalogue`), a validation error of imputing a
    categorical modality lower."""
    return -1 if class_error_modality(key) is not None else direction(key)


def _ranked_rows(flat: list[dict], records: list[dict]) -> tuple[list[list[str]], set[tuple[int, int]]]:
    """Table rows [key, value of each run] for every key of the runs' flattened values, and the (row, column) cells
    of the best value of each key where larger or smaller is better (an ELBO only among runs of one aggregator)."""
    several_aggregators = len({rec.get("aggregator") for rec in records}) > 1
    rows, bold = [], set()
    for r, key in enumerate(dict.fromkeys(k for f in flat for k in f)):
        values = [f.get(key) for f in flat]
        rows.append([key, *(format_value(v) for v in values)])
        metric = metric_of(key)
        bound = metric is not None and metric.per_aggregator
        sign = 0 if bound and several_aggregators else _direction(key)
        numbers = [
            v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None for v in values
        ]
        if sign and sum(v is not None for v in numbers) > 1:
            best = max(sign * v for v in numbers if v is not None)
            bold |= {(r, c + 1) for c, v in enumerate(numbers) if v is not None and sign * v == best}
    return rows, bold


def _validation_section(
    labels: list[str], runs_curves: dict[str, tuple[np.ndarray, dict]], records: list[dict]
) -> Section:
    """Each run's validation values at the epoch of its saved model: what to choose among runs on."""
    section = Section(
        "validation",
        "Validation: what to choose on",
        intro=(
            "Each run's validation values (metrics.csv) at the epoch of its saved model, model.ckpt: the first epoch of its best "
            "validation ELBO. val_<modality>_error is the error of imputing a categorical modality (a label) from the others "
            "on the validation rows where it is observed. Settings are chosen on these; the best is in bold."
        ),
    )
    values = []
    for label in labels:
        epochs, curves = runs_curves.get(label, (None, {}))
        index = saved_model_index(curves)
        values.append(
            {}
            if index is None or epochs is None  # (epochs is None only without curves, where index is None too)
            else {"epoch of the saved model": int(epochs[index]), **saved_model_values(curves)}
        )
    for label, run_values in zip(labels, values):
        if not run_values:
            section.html.append(note(f"{label} has no validated epoch in a metrics.csv."))
    if not any(values):
        return section
    if len({rec.get("aggregator") for rec in records}) > 1:
        section.html.append(
            note("The runs use different aggregators, each with its own ELBO bound: no validation ELBO is set in bold.")
        )
    if len({rec.get("data") for rec in records}) > 1:
        section.html.append(
            note(
                "The runs were trained on different data: their validation rows differ, and so do these values' meaning."
            )
        )
    rows, bold = _ranked_rows(values, records)
    section.html.append(table(rows, ["value", *labels], bold))
    return section


def _labels(runs: Sequence[Path]) -> list[str]:
    labels = [r.name for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.parent.name}/{r.name}" for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{i + 1}: {label}" for i, label in enumerate(labels)]
    return labels


def _report_is_current(run: Path) -> bool:
    """A report exists and is newer than the model and the metrics it shows."""
    page = run / REPORT
    if not page.is_file() or not (run / FIGURES).is_dir():
        return False
    inputs = [run / name for name in ("model.ckpt", "eval.json", "metrics.csv") if (run / name).is_file()]
    return all(page.stat().st_mtime >= path.stat().st_mtime for path in inputs)


#: Test rows the compare page's stability table is computed on, at most.
STABILITY_ROWS = 1000


def _stability_section(runs: list[Path], labels: list[str], load_run: Callable, progress: bool) -> Section:
    """`stability` of the runs (trained on the same data): the first run's used dimensions matched in the others."""
    from .explain import held_out_codes
    from .stability import stability

    section = Section(
        "stability",
        "Would the dimensions come back: the first run's used dimensions in the others",
        intro=(
            f"On up to {STABILITY_ROWS} test rows (the first run's data), each used dimension of {labels[0]} is matched to one dimension "
            "of every other run by the correlation of their posterior means (Hungarian matching of |r|; `infinimodal stability` writes the "
            "whole table). Found again: |r| >= 0.7 in every other run. Keeps its index: matched to the same index in every run. Pattern: the "
            "worst cosine of the variance each explains per modality. The subspace's worst canonical correlation says whether the space "
            "of the used dimensions comes back even where its axes are rotated."
        ),
    )
    codes, explanations = [], []
    rows = None
    for run in runs:
        vae, _, data = load_run(run, progress)
        if rows is None:
            rows = data.test.take(slice(0, STABILITY_ROWS))
        explanations.append(vae.explain(rows, max_rows=STABILITY_ROWS))
        codes.append(held_out_codes(vae.module, rows).code[:, : len(explanations[-1]["used"])])
    if not any(explanations[0]["used"]):
        section.html.append(note(f"{labels[0]} uses no dimension: nothing to match."))
        return section
    result = stability(codes, explanations)
    s = result["summary"]
    section.html.append(
        table(
            [
                [
                    str(d["index"]),
                    ", ".join(str(m) for m in d["matches"]),
                    ", ".join(f"{r:.2f}" for r in d["abs_r"]),
                    "yes" if d["reproduced"] else "no",
                    "yes" if d["keeps_index"] else "no",
                    format_value(d["pattern_agreement"]),
                ]
                for d in result["dimensions"]
            ],
            [
                f"dimension of {labels[0]}",
                f"its match in {', '.join(labels[1:])}",
                "|r|",
                "found again",
                "keeps its index",
                "pattern",
            ],
        )
    )
    section.html.append(
        note(
            f"Used dimensions per run: {', '.join(f'{label} {n}' for label, n in zip(labels, s['used_per_run']))}; "
            f"median worst |r| {format_value(s['median_worst_abs_r'])}; share keeping their index {format_value(s['share_keep_index'])}; "
            f"order Spearman {format_value(s['order_spearman'])}; worst canonical r {format_value(s['worst_canonical_r'])}."
        )
    )
    return section


def compare_runs(
    run_dirs: Sequence[str | Path], out: str | Path, load_run: Callable, progress: bool = True, **report_settings
) -> Path:
    """Write the compare page `out` (HTML) and its figures into `<out stem>_figures/` next to it.

    Runs without a report get one first (`write_report` with `load_run` and `report_settings`)."""
    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise InfinimodalError(f"compare needs at least two run directories, got {len(runs)}")
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InfinimodalError(f"--out must be an .html file, got {out.name}")
    for run in runs:
        for name in ("config.json", "model.ckpt"):
            if not (run / name).is_file():
                raise InfinimodalError(f"{run} is not a finished run directory: {name} is missing")
    started = time.perf_counter()
    labels = _labels(runs)
    for run in runs:
        if not _report_is_current(run):
            log.info("compare: %s has no report of its current model and metrics; writing it", run)
            write_report(run, load_run, progress=progress, **report_settings)
    records = [read_config(r / "config.json") for r in runs]
    evaluations = [read_json_object(r / "eval.json") if (r / "eval.json").is_file() else None for r in runs]
    figures_dir = out.parent / f"{out.stem}_figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    sections = []

    overview = Section("runs", "Runs")
    overview.html.append(
        table(
            [
                [
                    label,
                    str(run),
                    f"{rec.get('latent')} / {rec.get('aggregator')}",
                    str(rec.get("data")),
                    str(rec.get("epochs")),
                    format_value(rec.get("train_seconds")),
                ]
                for label, run, rec in zip(labels, runs, records)
            ],
            ["run", "directory", "latent / fusion", "data", "epochs", "training seconds"],
        )
    )
    keys = sorted({k for rec in records for k in rec if k != "modalities"})
    differing = [k for k in keys if len({json.dumps(rec.get(k), sort_keys=True) for rec in records}) > 1]
    overview.html.append("<h3>Settings that differ</h3>")
    overview.html.append(
        table(
            [
                [
                    k,
                    *(
                        format_value(rec.get(k)) if not isinstance(rec.get(k), dict) else json.dumps(rec.get(k))
                        for rec in records
                    ),
                ]
                for k in differing
            ],
            ["setting", *labels],
        )
        if differing
        else note("The runs have the same settings.")
    )
    if len({rec.get("data") for rec in records}) > 1:
        overview.html.append(note("The runs were trained on different data: their metrics are not comparable."))
    sections.append(overview)

    runs_curves = {
        label: read_curves(run / "metrics.csv") for label, run in zip(labels, runs) if (run / "metrics.csv").is_file()
    }
    sections.append(_validation_section(labels, runs_curves, records))

    metrics = Section(
        "metrics",
        "Test metrics",
        intro="Each run's eval.json; the best value of each metric where larger or smaller is better is in bold. "
        "These report how the runs do; choose among runs on the validation values above, never on these.",
    )
    flat = [
        flatten({k: v for k, v in e.items() if k not in LONG_METRICS}) if e is not None else {} for e in evaluations
    ]
    rows, bold = _ranked_rows(flat, records)
    if len({rec.get("aggregator") for rec in records}) > 1:
        metrics.html.append(
            note(
                "The runs use different aggregators, and each aggregator's ELBO is its own bound (PoE: the joint posterior's; "
                "MoE: the mixture's; MoPoE: with a mixture of subset KLs), so no ELBO is set in bold: compare log_likelihood."
            )
        )
    scored = [e for e in evaluations if e is not None]
    for key, what in (("n_test", "numbers of test rows"), ("iw_samples", "numbers of importance samples")):
        if len({e.get(key) for e in scored}) > 1:
            metrics.html.append(
                note(
                    f"The runs were evaluated with different {what} ({key}): their metrics are not directly comparable; "
                    "evaluate them alike (infinimodal evaluate DIR --iw-samples S --max-test N)."
                )
            )
    for label, e in zip(labels, evaluations):
        if e is None:
            metrics.html.append(note(f"{label} has no eval.json: run `infinimodal evaluate` on it."))
    metrics.html.append(table(rows, ["metric", *labels], bold))
    sections.append(metrics)

    curves = Section("curves", "Training curves and latent usage")
    if runs_curves:
        curves.figures.append(
            Figure(
                plots.overlay_curves_figure(runs_curves, figures_dir / "curves.png"), "validation ELBO and KL per epoch"
            )
        )
    class_errors = {
        (label, name): (epochs, values)
        for label, (epochs, run_curves) in runs_curves.items()
        for name, values in class_error_curves(run_curves).items()
    }
    if class_errors:
        names = {name for _, name in class_errors}
        series = {
            label if len(names) == 1 else f"{label}: {name}": values for (label, name), values in class_errors.items()
        }
        curves.figures.append(
            Figure(
                plots.class_error_figure(series, figures_dir / "class_errors.png"),
                f"validation error of imputing {', '.join(sorted(names))} from the other modalities, per epoch",
            )
        )
    spectra = {
        label: np.asarray(e["kl_per_dim"])
        for label, e in zip(labels, evaluations)
        if e is not None and "kl_per_dim" in e
    }
    if spectra:
        curves.figures.append(
            Figure(
                plots.sorted_kl_figure(spectra, figures_dir / "kl_spectrum.png", KL_ACTIVE_THRESHOLD),
                "mean KL per dimension or stick, sorted: how many dimensions each model uses",
            )
        )
    histograms = {
        label: np.repeat(np.arange(1, len(e["sticks_99_histogram"]) + 1), e["sticks_99_histogram"])
        for label, e in zip(labels, evaluations)
        if e is not None and e.get("sticks_99_histogram")
    }
    if histograms:
        truncation = max(
            len(e["sticks_99_histogram"]) for e in evaluations if e is not None and e.get("sticks_99_histogram")
        )
        curves.figures.append(
            Figure(
                plots.sticks_99_figure(histograms, truncation, figures_dir / "sticks_99.png"),
                "sticks_99 over the test rows (stick families)",
            )
        )
    sections.append(curves)

    if (
        len({rec.get("data") for rec in records}) == 1
        and len({json.dumps(rec.get("modalities"), sort_keys=True) for rec in records}) == 1
    ):
        sections.append(_stability_section(runs, labels, load_run, progress))

    side = Section(
        "side-by-side",
        "Figures side by side",
        intro="Each run's own report figures, in columns (the full reports are in each run directory).",
    )
    columns = f"repeat({len(runs)}, minmax(0, 1fr))"
    for stem, title in SIDE_BY_SIDE:
        side.html.append(f"<h3>{html.escape(title)}</h3>")
        cells = []
        for label, run, record in zip(labels, runs, records):
            first = record["modalities"][0]["name"] if record.get("modalities") else "image"
            path = run / FIGURES / (f"{stem}_{first}.png" if stem == "per_dimension" else f"{stem}.png")
            cell = embed_png(path, f"{label}: {title}") if path.is_file() else note("not in this run's report")
            cells.append(f"<div><b>{html.escape(label)}</b><br>{cell}</div>")
        side.html.append(f'<div class="side" style="grid-template-columns: {columns}">' + "".join(cells) + "</div>")
    sections.append(side)

    page = render_page(
        f"infinimodal: {' vs '.join(labels)}",
        sections,
        base=out.parent,
        footer=f"written by infinimodal in {time.perf_counter() - started:.0f} s",
    )
    out.write_text(page)
    log.info("compare page written: %s", out)
    return out
