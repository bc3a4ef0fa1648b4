"""Train and evaluate several models on the same data, budget and seeds; print one JSON line per run.

    python benchmarks/compare.py --data synthetic:shared=3,private=1 --models gaussian/mopoe beta/mopoe \\
        --epochs 20 --seeds 0 1 --out runs/synthetic [--set truncation=20 latent_dim=20 hidden=256,256]

Each model is LATENT/AGGREGATOR, optionally with its own settings after a colon
(beta/mopoe:alpha=2,decoder_input=logpi). Settings that are dictionaries take NAME:VALUE entries joined by +
(predict=label:100, weights=label:50+x0:2). Runs already evaluated in OUT are read back, not retrained,
so an interrupted comparison resumes. `benchmarks/format_table.py` turns the run directories into a table.

`--vary-data` sets each run's `data_seed` to its seed: with `labels=F` another labelled subset per seed (and other
PolyMNIST textures, another split of a file), so that the spread over seeds includes the variance of the data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from infinimodal import api

SUMMARY = (
    "elbo",
    "log_likelihood",
    "iw_samples",
    "knn_error",
    "knn_error_decoder_input",
    "active_dims",
    "kl_active",
    "kl_span_99",
    "kl_order_spearman",
    "truncation_elbo_change",
    "truncation",
    "latent_dimensions",
    "sticks_99",
    "per_modality_sticks_99",
    "linear_probe_accuracy",
    "coherence",
    "coherence_classifier_accuracy",
    "shared_factor_r2",
    "shared_factor_r2_decoder_input",
    "true_dims",
    "eval_seconds",
)


def parse_settings(pairs: list[str]) -> dict:
    """'truncation=20' 'hidden=256,256' -> TrainConfig values, typed by the config's field types."""
    types = {f.name: str(f.type) for f in dataclasses.fields(api.TrainConfig)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"unknown setting {key!r}")
        kind = types[key]
        if kind.startswith("dict"):  # predict=label:100+x0:5, likelihoods=x0:laplace
            entries = [entry.partition(":") for entry in value.split("+") if entry]
            if not all(sep for _, sep, _ in entries):
                raise SystemExit(f"setting {key} is NAME:VALUE entries joined by +, got {value!r}")
            cast = float if "float" in kind else int if "int" in kind else str
            try:
                out[key] = {name: cast(v) for name, _, v in entries}
            except ValueError:
                raise SystemExit(f"setting {key} takes {cast.__name__} values, got {value!r}") from None
        elif kind == "bool":
            if value not in ("true", "false"):
                raise SystemExit(f"setting {key} is true or false, got {value!r}")
            out[key] = value == "true"
        elif kind.startswith("list"):
            out[key] = [int(v) for v in value.split(",")]
        elif kind.startswith("int | str"):  # truncation=30 or truncation=auto
            out[key] = int(value) if value.lstrip("-").isdigit() else value
        elif kind.startswith("int"):
            out[key] = int(value)
        elif kind.startswith("float"):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def _trained(run: Path) -> bool:
    """A run whose training finished (its config records the training time) is evaluated, not retrained."""
    config = run / "config.json"
    return (run / "model.ckpt").is_file() and config.is_file() and "train_seconds" in json.loads(config.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", nargs="*", default=[], help="TrainConfig settings shared by every model")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--no-coherence", action="store_true")
    parser.add_argument(
        "--vary-data",
        action="store_true",
        help="data_seed = seed: another labelled subset (split, construction) per seed",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    shared = parse_settings(args.set)
    for seed in args.seeds:
        for spec in args.models:
            name, _, own = spec.partition(":")
            latent, _, aggregator = name.partition("/")
            settings = (
                shared
                | parse_settings([p for p in own.split(",") if p])
                | ({"data_seed": seed} if args.vary_data else {})
            )
            run = (
                Path(args.out)
                / f"{name.replace('/', '_')}{'_' + own.replace('=', '').replace(',', '_') if own else ''}_s{seed}"
            )
            if not (run / "eval.json").is_file():
                if not _trained(run):
                    config = api.TrainConfig(
                        data=args.data,
                        latent=latent,
                        aggregator=aggregator or "mopoe",
                        epochs=args.epochs,
                        seed=seed,
                        **settings,
                    )
                    api.train(config, run, progress=False)
                api.evaluate(
                    run,
                    iw_samples=args.iw_samples,
                    max_test=args.max_test,
                    coherence=not args.no_coherence,
                    progress=False,
                )
            result = json.loads((run / "eval.json").read_text())
            config = json.loads((run / "config.json").read_text())
            line = {
                "run": str(run),
                "model": spec,
                "seed": seed,
                "epochs": config["epochs"],
                "seconds_per_epoch": round(config["train_seconds"] / config["epochs"], 2),
            }
            print(json.dumps(line | {k: result[k] for k in SUMMARY if k in result}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
