"""Markdown tables for docs/results.md from run directories (config.json + eval.json), so no figure is copied by hand.

    python benchmarks/format_table.py paper runs/paper/*
    python benchmarks/format_table.py multimodal runs/polymnist5/*
    python benchmarks/format_table.py synthetic runs/synthetic/*
    python benchmarks/format_table.py ordered runs/ordered/mnist/*
    python benchmarks/format_table.py semi runs/semi/*/*
    python benchmarks/format_table.py truncation runs/auto/mnist/*

Runs are grouped by (latent, aggregator, settings); with several seeds a cell shows mean ± standard deviation.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from infinimodal.evaluation.curves import read_curves, saved_model_values
from infinimodal.runfiles import class_error_key


def load(runs: list[str]) -> dict[str, list[tuple[dict, dict]]]:
    groups: dict[str, list] = defaultdict(list)
    for path in runs:
        run = Path(path)
        if not (run / "eval.json").is_file():
            continue
        config = json.loads((run / "config.json").read_text())
        result = json.loads((run / "eval.json").read_text())
        groups[describe(config)].append((config | {"run_directory": str(run)}, result))
    return groups


def describe(config: dict) -> str:
    if config["latent"] == "gaussian":
        size = f"D={config['latent_dim']}"
    elif config["latent"] == "gated":
        size = "D auto" if config.get("truncation") == "auto" else f"D={config['latent_dim']}"
        size += f", alpha={config['alpha']:g}" + (", experts on the code" if config.get("expert") == "code" else "")
        # runs from before the gate warm-up existed have no alpha_start: they trained at alpha throughout
        start = config.get("alpha_start", config["alpha"])
        size += f", gate warm-up from {start:g}" if start != config["alpha"] else ", no gate warm-up"
        # runs from before straggler moves existed trained without them
        size += "" if config.get("order_dimensions", False) else ", no straggler moves"
    else:
        size = f"K={config['truncation']}, alpha={config['alpha']:g}, {config['decoder_input']}"
    n_modalities = len(config.get("modalities", [0]))
    aggregator = f"{config['aggregator']}, " if n_modalities > 1 else ""
    # settings away from their defaults, so runs that differ in them are not pooled as seeds
    extra = [
        f"{key}={config[key]:g}"
        for key, default in (("lr", 1e-3), ("kl_weight", 1.0))
        if config.get(key, default) != default
    ]
    extra += [f"likelihood {name}={law}" for name, law in sorted(config.get("likelihoods", {}).items())]
    extra += [f"weight {name}={w:g}" for name, w in sorted(config.get("weights", {}).items())]
    extra += [f"predict {name}={w:g}" for name, w in sorted(config.get("predict", {}).items())]
    extra += [f"infomax {name}={w:g}" for name, w in sorted(config.get("infomax", {}).items())]
    extra += [f"vat {name}={w:g}" for name, w in sorted(config.get("vat", {}).items())]
    extra += [f"oversample {name}={k}" for name, k in sorted(config.get("oversample", {}).items())]
    if config.get("vat"):
        extra.append(f"vat radius={config['vat_radius']:g}")  # written beside vat since vat exists
    if config.get("mopoe_kl", "all") != "all" and config["aggregator"] == "mopoe":
        extra.append(
            f"mopoe_kl {config['mopoe_kl']}"
        )  # each row's sampled subset's KL: another estimator of the objective
    if config.get("max_train"):
        extra.append(f"max_train={config['max_train']}")
    return f"{config['latent']} ({aggregator}{size}{''.join(', ' + e for e in extra)})"


def cell(values, scale: float = 1.0, digits: int = 2) -> str:
    values = [scale * v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def seeds(items) -> str:
    return ",".join(str(c["seed"]) for c, _ in items)


def kl_active(results) -> str:
    """KL-active dimensions, with the truth where the data know it."""
    truth = results[0].get("true_dims")
    return f"{cell([r['kl_active'] for r in results], digits=1)}{f' ({truth})' if truth else ''}"


def seconds_per_epoch(items) -> str:
    return cell([c["train_seconds"] / c["epochs"] for c, _ in items], digits=1)


def paper(groups) -> None:
    samples = "/".join(str(s) for s in sorted({r["iw_samples"] for items in groups.values() for _, r in items}))
    print(
        f"| model | seeds | epochs | -log p(x) (S={samples}) | -ELBO | kNN error % k=3 / 5 / 10 (E[pi], paper protocol) | kNN error % in decoder space | active units | KL-active | sticks_99 | s/epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, items in groups.items():
        results = [r for _, r in items]
        knn = " / ".join(cell([r["knn_error"][k] for r in results], 100) for k in ("3", "5", "10"))
        dec = [r.get("knn_error_decoder_input") for r in results]
        knn_dec = " / ".join(cell([d[k] for d in dec], 100) for k in ("3", "5", "10")) if all(dec) else "same"
        print(
            f"| {name} | {seeds(items)} | {items[0][0]['epochs']} | {cell([-r['log_likelihood'] for r in results])} | {cell([-r['elbo'] for r in results])} "
            f"| {knn} | {knn_dec} | {cell([r['active_dims'] for r in results], digits=1)} | {cell([r['kl_active'] for r in results], digits=1)} "
            f"| {cell([r.get('sticks_99') for r in results], digits=1)} | {cell([c['train_seconds'] / c['epochs'] for c, _ in items], digits=0)} |"
        )


def by_count(results, key: str, count: str) -> str:
    return cell([r[key][count] for r in results if key in r and count in r[key]], digits=3)


def multimodal(groups) -> None:
    n = max(len(items[0][0]["modalities"]) for items in groups.values())
    given = [str(k) for k in range(1, n + 1)]
    print(
        f"| model | seeds | epochs | probe, given {' / '.join(given)} | conditional coherence, given {' / '.join(given[:-1])} | joint coherence | log p(X) | -ELBO | KL-active | sticks_99 | s/epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, items in groups.items():
        results = [r for _, r in items]
        probe = " / ".join(by_count(results, "linear_probe_accuracy", k) for k in given)
        coherence = " / ".join(
            cell([r["coherence"]["conditional"].get(k) for r in results if "coherence" in r], digits=3)
            for k in given[:-1]
        )
        print(
            f"| {name} | {seeds(items)} | {items[0][0]['epochs']} | {probe} | {coherence} | {cell([r['coherence']['joint'] for r in results if 'coherence' in r], digits=3)} "
            f"| {cell([r['log_likelihood'] for r in results], digits=1)} | {cell([-r['elbo'] for r in results], digits=1)} | {cell([r['kl_active'] for r in results], digits=1)} "
            f"| {cell([r.get('sticks_99') for r in results], digits=1)} | {cell([c['train_seconds'] / c['epochs'] for c, _ in items], digits=0)} |"
        )
    accuracy = next(
        (
            r["coherence_classifier_accuracy"]
            for items in groups.values()
            for _, r in items
            if "coherence_classifier_accuracy" in r
        ),
        None,
    )
    if accuracy:
        print()
        print("Coherence classifiers' own test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))


def synthetic(groups) -> None:
    n = max(len(items[0][0]["modalities"]) for items in groups.values())
    given = [str(k) for k in range(1, n + 1)]
    print(
        f"| model | seeds | epochs | test ELBO | log p(X) | probe, given {' / '.join(given)} | probe in decoder space | R^2 shared factors (E[pi] / decoder space) | KL-active (truth) | sticks_99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, items in groups.items():
        results = [r for _, r in items]
        probe = " / ".join(by_count(results, "linear_probe_accuracy", k) for k in given)
        if all("linear_probe_accuracy_decoder_input" in r for r in results):
            probe_dec = " / ".join(by_count(results, "linear_probe_accuracy_decoder_input", k) for k in given)
        else:
            probe_dec = "same"
        r2 = cell([r.get("shared_factor_r2") for r in results], digits=3)
        r2_dec = [r.get("shared_factor_r2_decoder_input") for r in results]
        if all(v is not None for v in r2_dec):
            r2 += " / " + cell(r2_dec, digits=3)
        print(
            f"| {name} | {seeds(items)} | {items[0][0]['epochs']} | {cell([r['elbo'] for r in results])} | {cell([r['log_likelihood'] for r in results])} | {probe} "
            f"| {probe_dec} | {r2} | {cell([r['kl_active'] for r in results], digits=1)} ({results[0].get('true_dims', '?')}) | {cell([r.get('sticks_99') for r in results], digits=1)} |"
        )


def ordered(groups) -> None:
    """Fit, order and adaptivity side by side (docs/results.md section 7)."""
    print(
        "| model | seeds | epochs | -log p(x) | -ELBO | kNN error % k=3 / 5 / 10 | KL-active (truth) | kl_span_99 | Spearman(index, KL) "
        "| ELBO change, dims after kl_span_99 at the prior | kl_span_99 per modality | s/epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, items in groups.items():
        results = [r for _, r in items]
        knn = " / ".join(
            cell([r["knn_error"][k] for r in results if r.get("knn_error")], 100) for k in ("3", "5", "10")
        )
        per_modality = [r.get("per_modality_kl_span_99") for r in results]
        spans = (
            " / ".join(cell([p[m] for p in per_modality], digits=1) for m in per_modality[0])
            if all(per_modality)
            else "-"
        )
        print(
            f"| {name} | {seeds(items)} | {items[0][0]['epochs']} | {cell([-r['log_likelihood'] for r in results])} | {cell([-r['elbo'] for r in results])} "
            f"| {knn} | {kl_active(results)} | {cell([r.get('kl_span_99') for r in results], digits=1)} "
            f"| {cell([r.get('kl_order_spearman') for r in results])} | {cell([r['truncation_elbo_change']['change'] for r in results if 'truncation_elbo_change' in r])} "
            f"| {spans} | {seconds_per_epoch(items)} |"
        )


def truncation_history(config: dict) -> list[int]:
    """The dimensions each epoch trained with (metrics.csv's `truncation` column; empty for a fixed size)."""
    path = Path(config["run_directory"]) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [int(float(row["truncation"])) for row in csv.DictReader(handle) if row.get("truncation")]


def truncation(groups) -> None:
    """--truncation auto against fixed sizes (docs/results.md section 11)."""
    print(
        "| model | seeds | epochs | dimensions at the end (per seed) | KL-active (truth) | kl_span_99 | Spearman(index, KL) | -ELBO "
        "| -log p(x) | kNN error % k=5 | probe, all given | R^2 shared factors | s/epoch | dimensions per epoch (first seed) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, items in groups.items():
        results = [r for _, r in items]
        final = " / ".join(str(r.get("latent_dimensions", len(r["kl_per_dim"]))) for r in results)
        probe = [
            r["linear_probe_accuracy"][max(r["linear_probe_accuracy"], key=int)]
            for r in results
            if r.get("linear_probe_accuracy")
        ]
        print(
            f"| {name} | {seeds(items)} | {items[0][0]['epochs']} | {final} | {kl_active(results)} | {cell([r.get('kl_span_99') for r in results], digits=1)} "
            f"| {cell([r.get('kl_order_spearman') for r in results])} | {cell([-r['elbo'] for r in results])} | {cell([-r['log_likelihood'] for r in results])} "
            f"| {cell([r['knn_error']['5'] for r in results if r.get('knn_error')], 100)} | {cell(probe, digits=3)} "
            f"| {cell([r.get('shared_factor_r2') for r in results], digits=3)} | {seconds_per_epoch(items)} "
            f"| {' '.join(map(str, truncation_history(items[0][0]))) or 'fixed'} |"
        )


def validation_error(config: dict, name: str = "label") -> float | None:
    """The validation error of imputing `name` at the epoch of the saved model (the best validation ELBO), from
    metrics.csv's `val_<name>_error`; None for runs made before training logged it."""
    path = Path(config["run_directory"]) / "metrics.csv"
    if not path.is_file():
        return None
    return saved_model_values(read_curves(path)[1]).get(
        class_error_key(name)
    )  # an epoch logged before the column existed has none


def semi(groups) -> None:
    """Semi-supervised: the error of the label imputed from the other modalities (docs/results.md section 9)."""
    by_data: dict[tuple, list] = defaultdict(list)
    for name, items in groups.items():
        for config, result in items:
            by_data[(name, config["data"], config["epochs"])].append((config, result))
    print(
        "| model | data | seeds | epochs | label error % from all other modalities | from each alone | validation label error % "
        "| kNN error % (k = 5, all labels) | test ELBO | KL-active | kl_span_99 | kl_order_spearman |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, data, _), items in sorted(by_data.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        results = [r for _, r in items]
        errors = [r["prediction_error"]["label"] for r in results]
        alone = sorted({k for e in errors for k in e if k != "all"})
        each = " / ".join(f"{k} {cell([e[k] for e in errors], 100)}" for k in alone) if len(alone) > 1 else "same"
        print(
            f"| {name} | {data} | {seeds(items)} | {items[0][0]['epochs']} | {cell([e['all'] for e in errors], 100)} | {each} "
            f"| {cell([validation_error(c) for c, _ in items], 100)} | {cell([r['knn_error']['5'] for r in results], 100)} | {cell([r['elbo'] for r in results])} | {cell([r['kl_active'] for r in results], digits=1)} "
            f"| {cell([r.get('kl_span_99') for r in results], digits=1)} | {cell([r.get('kl_order_spearman') for r in results])} |"
        )


def main() -> None:
    kind, runs = sys.argv[1], sys.argv[2:]
    tables = {
        "paper": paper,
        "multimodal": multimodal,
        "synthetic": synthetic,
        "ordered": ordered,
        "semi": semi,
        "truncation": truncation,
    }
    if kind not in tables:
        raise SystemExit(f"usage: format_table.py {{{','.join(tables)}}} RUN_DIR...")
    tables[kind](load(runs))


if __name__ == "__main__":
    main()
