"""The user-facing facade: train a model into a run directory, load it back, evaluate it.

A run directory holds `config.json` (the `TrainConfig`), `model.ckpt` (the best checkpoint by
validation ELBO), `metrics.csv` (per-epoch curves) and, after evaluation, `eval.json`.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from .data import binarize_fixed, load_mnist
from .data.mnist import FALLBACK_SOURCE
from .errors import InfinimodalError
from .evaluation import evaluate_model
from .latents import LATENT_FAMILIES, STICK_FAMILIES, build_latent
from .latents.sticks import DEFAULT_DECODER_INPUT
from .model import VAE
from .training import ArrayDataModule, VAETrainingPlan

DATASETS = ("mnist",)
BINARIZATIONS = ("dynamic", "static")
#: Seeds of the fixed binarisations, shared by every run so models are scored on the same digits.
VALID_BINARIZATION_SEED, TEST_BINARIZATION_SEED, TRAIN_BINARIZATION_SEED = 1, 2, 3


@dataclass
class TrainConfig:
    data: str = "mnist"
    data_dir: str | None = None
    latent: str = "beta"
    latent_dim: int = 50  # gaussian only
    truncation: int = 50  # stick families: K weights from K - 1 sticks
    alpha: float = 5.0
    decoder_input: str = DEFAULT_DECODER_INPUT  # stick families: pi, logpi or logitv
    evidence: str = "exp"  # beta: how encoder outputs become pseudo-counts (exp or softplus)
    hidden: list[int] = field(default_factory=lambda: [500])
    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    kl_warmup: float = 10.0  # epochs over which the KL weight ramps from 0 to 1
    binarize: str = "dynamic"
    seed: int = 0
    max_train: int | None = None
    precision: str = "32"

    def validate(self) -> None:
        if self.data not in DATASETS:
            raise InfinimodalError(f"unknown data {self.data!r}: this version trains on {', '.join(DATASETS)}")
        if self.latent not in LATENT_FAMILIES:
            raise InfinimodalError(f"unknown latent {self.latent!r}: choose one of {', '.join(LATENT_FAMILIES)}")
        if self.binarize not in BINARIZATIONS:
            raise InfinimodalError(f"unknown binarisation {self.binarize!r}: choose {' or '.join(BINARIZATIONS)}")
        positive = {"latent_dim": self.latent_dim, "epochs": self.epochs, "batch_size": self.batch_size}
        for name, value in positive.items():
            if value < 1:
                raise InfinimodalError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.truncation < 2:
            raise InfinimodalError(f"--truncation must be at least 2, got {self.truncation}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise InfinimodalError(f"--alpha must be a positive number, got {self.alpha}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InfinimodalError(f"--lr must be a positive number, got {self.lr}")
        if self.kl_warmup < 0:
            raise InfinimodalError(f"--kl-warmup must be >= 0 epochs, got {self.kl_warmup}")
        if self.max_train is not None and self.max_train < 1:
            raise InfinimodalError(f"--max-train must be at least 1, got {self.max_train}")
        if any(h < 1 for h in self.hidden) or not self.hidden:
            raise InfinimodalError(f"--hidden needs positive layer sizes, got {self.hidden}")

    def latent_settings(self) -> dict:
        if self.latent == "beta":
            return {"truncation": self.truncation, "alpha": self.alpha, "decoder_input": self.decoder_input, "evidence": self.evidence}
        if self.latent in STICK_FAMILIES:
            return {"truncation": self.truncation, "alpha": self.alpha, "decoder_input": self.decoder_input}
        return {"latent_dim": self.latent_dim}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def build_model(config: TrainConfig, input_size: int = 784) -> VAE:
    latent = build_latent(config.latent, config.hidden[-1], **config.latent_settings())
    return VAE(input_size, latent, hidden=config.hidden)


#: Lightning messages that say nothing to a user of this tool: the run directory holds config.json before
#: training starts, and one data loader process is the right choice on small machines.
_LIGHTNING_NOISE = (".*exists and is not empty.*", ".*does not have many workers.*", ".*LeafSpec.*")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # GPU/TPU availability lines, tips


class _StopOnNonFinite(Callback):
    """A run whose loss turns NaN or infinite fails loudly instead of 'finishing'."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not torch.isfinite(loss):
            raise InfinimodalError(
                f"training diverged: loss is {loss.item()} at epoch {trainer.current_epoch}, batch {batch_idx}; "
                "try a smaller --lr or a longer --kl-warmup"
            )


def _load_data(config: TrainConfig):
    mnist = load_mnist(config.data_dir)
    if config.max_train is not None:
        mnist.train.images = mnist.train.images[: config.max_train]
        mnist.train.labels = mnist.train.labels[: config.max_train]
    return mnist


def train(config: TrainConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Train a model and write config.json, model.ckpt and metrics.csv into `out_dir`."""
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    mnist = _load_data(config)
    model = build_model(config, mnist.train.images.shape[1])

    train_x = mnist.train.images if config.binarize == "dynamic" else binarize_fixed(mnist.train.images, TRAIN_BINARIZATION_SEED)
    valid_x = binarize_fixed(mnist.valid.images, VALID_BINARIZATION_SEED)
    data = ArrayDataModule(
        train_x, mnist.train.labels, valid_x, mnist.valid.labels,
        batch_size=config.batch_size, dynamic_binarization=config.binarize == "dynamic", seed=config.seed,
    )
    record = asdict(config) | {"data_source": mnist.source, "n_train": len(train_x), "n_valid": len(valid_x)}
    (out / "config.json").write_text(json.dumps(record, indent=2) + "\n")

    checkpoint = ModelCheckpoint(
        dirpath=out, filename="model", monitor="val_elbo", mode="max", save_top_k=1, enable_version_counter=False
    )
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator="auto",
        devices=1,
        precision=config.precision,
        logger=CSVLogger(save_dir=out, name="", version=""),
        callbacks=[checkpoint, _StopOnNonFinite()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=True,
        log_every_n_steps=50,
    )
    plan = VAETrainingPlan(model, lr=config.lr, kl_warmup=config.kl_warmup)
    started = time.perf_counter()
    with warnings.catch_warnings():
        for noise in _LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=noise)
        trainer.fit(plan, datamodule=data)
    record["train_seconds"] = time.perf_counter() - started
    record["best_val_elbo"] = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    (out / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def load(run_dir: str | Path) -> tuple[VAE, TrainConfig]:
    """Rebuild the model of a run directory from its config.json and best checkpoint."""
    run = Path(run_dir)
    for name in ("config.json", "model.ckpt"):
        if not (run / name).is_file():
            raise InfinimodalError(f"{run} is not a finished run directory: {name} is missing")
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    model = build_model(config)
    state = torch.load(run / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    model.eval()
    return model, config


def evaluate(run_dir: str | Path, iw_samples: int = 1000, max_test: int | None = None, progress: bool = True) -> dict:
    """Evaluate a run on its test set and write `eval.json` (see `infinimodal.evaluation.metrics`)."""
    if iw_samples < 1:
        raise InfinimodalError(f"--iw-samples must be at least 1, got {iw_samples}")
    if max_test is not None and max_test < 1:
        raise InfinimodalError(f"--max-test must be at least 1, got {max_test}")
    model, config = load(run_dir)
    mnist = _load_data(config)
    trained_on = json.loads((Path(run_dir) / "config.json").read_text()).get("data_source")
    if trained_on is not None and (trained_on == FALLBACK_SOURCE) != (mnist.source == FALLBACK_SOURCE):
        raise InfinimodalError(
            f"{run_dir} was trained on MNIST from {trained_on}, but evaluation found {mnist.source}; "
            "point INFINIMODAL_DATA (or the run's data_dir) at the same data"
        )
    test_x = binarize_fixed(mnist.test.images, TEST_BINARIZATION_SEED)
    test_y = mnist.test.labels
    if max_test is not None:
        test_x, test_y = test_x[:max_test], test_y[:max_test]
    train_x = binarize_fixed(mnist.train.images, TRAIN_BINARIZATION_SEED)
    started = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        result = evaluate_model(model, train_x, mnist.train.labels, test_x, test_y, iw_samples, progress=progress)
    result["latent"] = config.latent
    result["eval_seconds"] = time.perf_counter() - started
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
