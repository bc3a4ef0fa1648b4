"""Training samples per second of the default model (`infinimodal train` with no latent option) against the Gaussian,
as training runs them: whole `fit` calls, epoch-start moves (adaptive truncation, straggler moves) included, validation
excluded. Prints one JSON object.

For each data set, each model trains from scratch for `--epochs` epochs, the models taking turns in `--rounds`
rounds (machine noise hits all alike), one torch thread; a model's figure is the median over rounds of training rows x
epochs / seconds, where the seconds run from the start of `fit` to its end minus the validation passes (and the
sanity check Lightning runs first). Models: `default` (the gated family, truncation auto), `fixed` (the previous
default: the gated family with exactly --latent-dim 50), `gaussian` (D = 50), and with `--sampled` the same with
`mopoe_kl=sampled`. Data sets (`--data`, any of):
- `tabular3`: synthetic, three tabular modalities of 20 features, 6,000 rows;
- `cohort`: the built-in four-modality cohort (PET missing for 40 %);
- `mfeat`: the six UCI views (`--mfeat runs/mfeat.npz`, written by benchmarks/mfeat.py), likelihoods inferred;
- `mnist`: MNIST-shaped (784 Bernoulli pixels, one modality), the first 6,000 training digits;
- `counts`: the built-in RNA + protein negative-binomial counts.

    python benchmarks/default_speed.py [--data tabular3 cohort] [--epochs 4] [--rounds 3] [--sampled]
        [--also a5code=alpha=5,expert=code] [--float64-kl] [--out FILE]
    python benchmarks/default_speed.py --table FILE   # the markdown table of a JSON it wrote
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from lightning.pytorch.callbacks import Callback

from infinimodal import MultimodalVAE
from infinimodal.latents import beta
from infinimodal.config import ModelConfig
from infinimodal.data import load_dataset

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from compare import parse_settings  # noqa: E402  (benchmarks/compare.py: settings typed by TrainConfig's fields)

DATA = {"tabular3": "synthetic:n=6000", "cohort": "cohort", "mnist": "mnist", "counts": "counts"}
MODELS = {"default": {}, "fixed": {"truncation": "fixed"}, "gaussian": {"latent": "gaussian"}}
ROWS = 6000


class ValidationClock(Callback):
    """Seconds spent in validation passes (the sanity check included)."""

    def __init__(self) -> None:
        self.seconds, self._started = 0.0, None

    def on_validation_start(self, trainer, plan) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer, plan) -> None:
        self.seconds += time.perf_counter() - self._started


def load(name: str, mfeat: str | None):
    spec = mfeat if name == "mfeat" else DATA[name]
    if spec is None:
        raise SystemExit("--data mfeat needs --mfeat PATH.npz (benchmarks/mfeat.py writes it)")
    data = load_dataset(spec)
    if len(data.train) > ROWS:
        data.train = data.train.take(slice(0, ROWS))
    return data


#: A model setting of this benchmark's own (not a TrainConfig field): the Beta KL in float64 in training steps too.
FLOAT64_KL = "float64_kl"


def training_rate(data, settings: dict, epochs: int, seed: int) -> dict:
    """One fit of the default model with `settings` (TrainConfig values: the model's fields build it, the rest train it;
    `FLOAT64_KL`: training steps keep the Beta KL in float64, as before `latents.beta.float32_beta_kl`)."""
    settings = dict(settings)
    if settings.pop(FLOAT64_KL, False):
        with mock.patch.object(beta, "FLOAT32_KL_LIMIT", 0.0):
            return training_rate(data, settings, epochs, seed)
    clock = ValidationClock()
    model = {f.name for f in dataclasses.fields(ModelConfig)}
    vae = MultimodalVAE(data.modalities, seed=seed, **{k: v for k, v in settings.items() if k in model})
    training = {k: v for k, v in settings.items() if k not in model}
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        vae.fit(data, epochs=epochs, progress=False, out_dir=out, callbacks=[clock], seed=seed, **training)
        seconds = time.perf_counter() - started - clock.seconds
    return {
        "samples_per_second": len(data.train) * epochs / seconds,
        "seconds": seconds,
        "dimensions": int(vae.module.latent.n_dimensions),
    }


def markdown(result: dict) -> str:
    """The JSON as a table for docs/results.md: samples per second of each model, each one's ratio to the Gaussian (taken
    from the medians), and the dimensions the default ended with."""
    models = list(next(iter(result["data"].values()))["samples_per_second"])
    others = [m for m in models if m != "gaussian"]
    header = ["data", "rows", "modalities", *models, *(f"{m} / Gaussian" for m in others), "dimensions at the end"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in result["data"].items():
        rates, ratios = entry["samples_per_second"], entry["ratio_to_gaussian"]
        cells = [name, f"{entry['rows']:,}", str(entry["modalities"]), *(f"{rates[m]:,.0f}" for m in models)]
        cells += [f"{ratios[m]:.2f}x" for m in others]
        cells.append(" / ".join(str(d) for d in entry["dimensions_at_the_end"]["default"]) + " (default)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", nargs="+", default=["tabular3", "cohort", "mnist", "counts"], choices=[*DATA, "mfeat"]
    )
    parser.add_argument("--mfeat", help="the six views' .npz (benchmarks/mfeat.py)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sampled", action="store_true", help="also each model with mopoe_kl=sampled")
    parser.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="NAME=KEY=VALUE,KEY=VALUE",
        help="more models: the default with these settings, as compare.py takes them (a5code=alpha=5,expert=code)",
    )
    parser.add_argument(
        "--float64-kl", action="store_true", help="also each model with the Beta KL in float64 in training steps too"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--table", type=Path, metavar="JSON", help="print the markdown table of a written JSON and stop"
    )
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return {}
    torch.set_num_threads(1)
    also = (spec.partition("=") for spec in args.also)  # name=key=value,key=value: compare.py's settings
    models = dict(MODELS) | {name: parse_settings([p for p in text.split(",") if p]) for name, _, text in also}
    if args.sampled:
        models |= {f"{name}, mopoe_kl sampled": settings | {"mopoe_kl": "sampled"} for name, settings in models.items()}
    if args.float64_kl:
        models |= {f"{name}, float64 KL": settings | {FLOAT64_KL: True} for name, settings in models.items()}
    result = {"epochs": args.epochs, "rounds": args.rounds, "threads": 1, "torch": torch.__version__, "data": {}}
    for name in args.data:
        data = load(name, args.mfeat)
        runs: dict[str, list[dict]] = {model: [] for model in models}
        for round_ in range(args.rounds):
            for model, settings in models.items():
                runs[model].append(training_rate(data, settings, args.epochs, seed=round_))
        rates = {model: statistics.median(r["samples_per_second"] for r in rs) for model, rs in runs.items()}
        result["data"][name] = {
            "rows": len(data.train),
            "modalities": len(data.modalities),
            "samples_per_second": {model: round(rate, 1) for model, rate in rates.items()},
            "dimensions_at_the_end": {model: [r["dimensions"] for r in rs] for model, rs in runs.items()},
            "ratio_to_gaussian": {model: round(rate / rates["gaussian"], 3) for model, rate in rates.items()},
        }
        if args.sampled:
            result["data"][name]["ratio_to_gaussian_sampled"] = {
                model: round(rate / rates["gaussian, mopoe_kl sampled"], 3) for model, rate in rates.items()
            }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
