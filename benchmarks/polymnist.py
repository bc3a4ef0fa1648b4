"""PolyMNIST-5 with the MoPoE paper's protocol, on the device it is given; prints one JSON object.

For each latent (the Gaussian baseline and the default stick-breaking latent) under MoPoE: the MoPoE
paper's likelihood (Laplace with scale 0.75) and KL weight (2.5), batch 256; a one-epoch probe run of the
slowest model measures the epoch time first, and every model then trains for the same number of epochs,
as many as fit in `--minutes` (or `--epochs`). During training, conditional coherence on `--curve-rows`
test rows is recorded every `--curve-every` epochs (the trend against epochs); after training, the whole
evaluation (`infinimodal evaluate`: conditional and joint coherence with the cached classifiers, linear
probes given 1..M modalities, importance-sampled log p(X)). Writes OUT/results.json and OUT/results.md
(a Markdown table with the device named) and one run directory per model.

    python benchmarks/polymnist.py --accelerator gpu --minutes 8 --out runs/polymnist       # a GPU session
    python benchmarks/polymnist.py --toy --out runs/polymnist-toy                          # CPU, minutes

Published conditional coherence given 1 / 2 / 3 / 4 modalities (300 epochs, photographic backgrounds):
MoPoE .63 / .75 / .79 / .81, MVAE .29 / .42 / .48 / .52, MMVAE .71 flat.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from infinimodal import api
from infinimodal.evaluation import load_classifiers
from infinimodal.evaluation.metrics import coherence, subsets_by_size

PUBLISHED = {
    "MoPoE (paper, 300 epochs)": {"1": 0.63, "2": 0.75, "3": 0.79, "4": 0.81},
    "MVAE (paper)": {"1": 0.29, "2": 0.42, "3": 0.48, "4": 0.52},
    "MMVAE (paper)": {"1": 0.71, "2": 0.71, "3": 0.71, "4": 0.71},
}
PROTOCOL = {"aggregator": "mopoe", "likelihoods": {"*": "laplace:0.75"}, "kl_weight": 2.5, "batch_size": 256}
TOY = {
    "max_train": 400,
    "max_test": 200,
    "epochs": 2,
    "latent_dim": 8,
    "hidden": [32],
    "curve_rows": 100,
    "iw_samples": 4,
    "batch_size": 50,
}


class CoherenceCurve(Callback):
    """Conditional coherence on fixed test rows at the end of every `every`-th epoch (and the last)."""

    def __init__(self, test, classifiers, n_modalities: int, every: int) -> None:
        self.test, self.classifiers, self.every = test, classifiers, every
        self.subsets = subsets_by_size(n_modalities)
        self.points: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch != trainer.max_epochs:
            return
        model = copy.deepcopy(pl_module.model).cpu().eval()  # evaluated where the classifiers live
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            found = coherence(model, self.test, self.classifiers, self.subsets, n_joint=len(self.test), progress=False)
        self.points.append({"epoch": epoch, "conditional": found["conditional"], "joint": found["joint"]})


def device_description(accelerator: str) -> dict:
    cuda = torch.cuda.is_available()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda)
    return {
        "accelerator": accelerator,
        "torch": torch.__version__,
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0)
        if on_gpu and cuda
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
    }


def base_config(args, latent: str, epochs: int) -> api.TrainConfig:
    settings = dict(
        PROTOCOL,
        data=f"polymnist:{args.modalities}",
        data_dir=args.data_dir,
        latent=latent,
        epochs=epochs,
        seed=args.seed,
        max_train=args.max_train,
        latent_dim=args.latent_dim,
        truncation=args.latent_dim + 1,
        hidden=list(args.hidden),
        lr=args.lr,
        kl_warmup=min(args.kl_warmup, epochs),
        accelerator=args.accelerator,
    )
    settings["batch_size"] = args.batch_size
    return api.TrainConfig(**settings)


def epochs_that_fit(args, out: Path) -> tuple[int, float]:
    """Train the slowest model (the last latent) for one epoch and return (epochs within the budget, s/epoch)."""
    config = base_config(args, args.latents[-1], 1)
    run = api.train(config, out / "epoch-probe", progress=False)
    seconds = json.loads((run / "config.json").read_text())["train_seconds"]
    return max(1, int(args.minutes * 60 // seconds)), seconds


def summary(result: dict, config: dict, curve: list[dict]) -> dict:
    keys = (
        "elbo",
        "log_likelihood",
        "iw_samples",
        "kl_active",
        "kl_span_99",
        "linear_probe_accuracy",
        "coherence",
        "coherence_classifier_accuracy",
        "n_test",
    )
    return {k: result.get(k) for k in keys} | {
        "latent": config["latent"],
        "epochs": config["epochs"],
        "train_seconds": config["train_seconds"],
        "seconds_per_epoch": config["train_seconds"] / config["epochs"],
        "coherence_curve": curve,
    }


def markdown(report: dict) -> str:
    m = report["modalities"]
    sizes = [str(k) for k in range(1, m)]
    head = f"PolyMNIST-{m}, MoPoE, {report['epochs']} epochs, {report['n_train']} training rows, on {report['device']['device']} (torch {report['device']['torch']})"
    lines = [
        head,
        "",
        f"| model | conditional coherence given {' / '.join(sizes)} | joint | probe given {' / '.join(str(k) for k in range(1, m + 1))} | log p(X) | KL-active | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in report["models"].items():
        conditional = row["coherence"]["conditional"] if row["coherence"] else {}
        joint = f"{row['coherence']['joint']:.3f}" if row["coherence"] else "-"
        probe = row["linear_probe_accuracy"] or {}
        lines.append(
            f"| {name} | {' / '.join(f'{conditional[k]:.3f}' if k in conditional else '-' for k in sizes)} | "
            f"{joint} | {' / '.join(f'{probe[str(k)]:.3f}' if str(k) in probe else '-' for k in range(1, m + 1))} | "
            f"{row['log_likelihood']:.1f} | {row['kl_active']} | {row['seconds_per_epoch']:.1f} |"
        )
    for name, published in PUBLISHED.items():
        lines.append(
            f"| {name} | {' / '.join(f'{published[k]:.2f}' if k in published else '-' for k in sizes)} | - | - | - | - | - |"
        )
    lines += [
        "",
        "Conditional coherence (mean over the numbers of given modalities) against epochs:",
        "",
        "| model | "
        + " | ".join(f"epoch {p['epoch']}" for p in next(iter(report["models"].values()))["coherence_curve"])
        + " |",
        "|---|" + "---|" * len(next(iter(report["models"].values()))["coherence_curve"]),
    ]
    for name, row in report["models"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{np.mean(list(p['conditional'].values())):.3f}" for p in row["coherence_curve"])
            + " |"
        )
    return "\n".join(lines) + "\n"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--accelerator", default="auto", choices=api.ACCELERATORS)
    parser.add_argument("--modalities", type=int, default=5)
    parser.add_argument("--latents", nargs="+", default=["gaussian", api.DEFAULT_LATENT])
    parser.add_argument(
        "--minutes", type=float, default=8.0, help="training budget per model (the epoch count is derived from it)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="instead of --minutes")
    parser.add_argument("--latent-dim", type=int, default=512, help="MoPoE's PolyMNIST latent size")
    parser.add_argument("--hidden", type=int, nargs="+", default=[500])
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=PROTOCOL["batch_size"])
    parser.add_argument("--kl-warmup", type=float, default=10.0)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--iw-samples", type=int, default=100)
    parser.add_argument(
        "--curve-every", type=int, default=None, help="epochs between coherence points (default: about 5 points)"
    )
    parser.add_argument("--curve-rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--toy", action="store_true", help="a few minutes on the CPU: " + ", ".join(f"{k}={v}" for k, v in TOY.items())
    )
    args = parser.parse_args(argv)
    if args.toy:  # toy sizes replace the defaults, not what was given
        parser.set_defaults(**{k: v for k, v in TOY.items() if k != "epochs"})
        args = parser.parse_args(argv)
        if args.epochs is None and "--minutes" not in (argv if argv is not None else sys.argv):
            args.epochs = TOY["epochs"]
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    probe_seconds = None
    if args.epochs is None:
        args.epochs, probe_seconds = epochs_that_fit(args, out)
    data = api.load_data(base_config(args, args.latents[0], args.epochs), progress=False)
    classifiers = load_classifiers(data, progress=False)
    curve_rows = data.test.take(slice(0, args.curve_rows))
    every = args.curve_every or max(1, math.ceil(args.epochs / 5))
    report = {
        "device": device_description(args.accelerator),
        "modalities": args.modalities,
        "epochs": args.epochs,
        "probe_seconds_per_epoch": probe_seconds,
        "n_train": len(data.train) if args.max_train is None else min(args.max_train, len(data.train)),
        "protocol": PROTOCOL
        | {
            "latent_dim": args.latent_dim,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "networks": "infinimodal's default CNNs",
        },
        "models": {},
    }
    for latent in args.latents:
        config = base_config(args, latent, args.epochs)
        curve = CoherenceCurve(curve_rows, classifiers, args.modalities, every)
        run = api.train(config, out / f"{latent}-mopoe", progress=False, callbacks=[curve])
        result = api.evaluate(run, iw_samples=args.iw_samples, max_test=args.max_test, progress=False)
        report["models"][f"{latent} (mopoe)"] = summary(
            result, json.loads((run / "config.json").read_text()), curve.points
        )
    report["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
