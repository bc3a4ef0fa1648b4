"""`run_training`, the one place a Lightning Trainer is built: the plan (`train.plan`), the data module
(`train.data`) and the callbacks (`train.callbacks`) put together, checkpoints, resume and interruption.

The plan knows nothing of the model's insides: it asks for a `LossOutput` and logs its fields.

Reproducible and resumable: every epoch's randomness is a function of (seed, epoch) only, never of what ran
before it. The training rows are shuffled by `EpochShuffle` from (seed, epoch), and `EpochSeeds` reseeds
torch's generator at the start of every training and validation epoch (dynamic binarisation and the
reparameterised samples draw from it). So a run resumed from the checkpoint of epoch e repeats exactly what
the uninterrupted run did from epoch e + 1 on; Lightning restores the weights, Adam's state, the epoch and
step counters (the KL warm-up follows the step) and the best-checkpoint bookkeeping. Checkpoints (`model.ckpt`,
the best validation ELBO, and `last.ckpt`, every epoch's end) are written atomically.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, cast

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from ..data import MultimodalData
from ..distributed import is_rank_zero
from ..errors import InfinimodalError, TrainingInterrupted
from ..model import MultimodalModule
from ..options import TrainingOptions
from ..runfiles import BEST_CHECKPOINT, DIVERGED, LAST_CHECKPOINT, SELECTION_METRIC, atomic_write, read_checkpoint
from .callbacks import AdaptTruncation, EpochSeeds, OrderDimensions, RecordProgress, write_progress
from .data import MultimodalDataModule
from .metrics_file import _merge_metrics, _set_aside_metrics
from .plan import TrainingPlan

log = logging.getLogger("infinimodal")


_LIGHTNING_NOISE = (
    ".*exists and is not empty.*",
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    ".*smaller than the logging interval.*",
)

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # GPU/TPU availability lines, tips


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save into a temporary file, then a rename: a kill mid-write leaves the previous file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def determinism(accelerator: str) -> bool | Literal["warn"]:
    """Lightning's `deterministic`: strict on the CPU; "warn" on an accelerator, where some kernels
    (index_add on CUDA, behind index_select's gradient) have no deterministic version and would stop the run."""
    on_cpu = accelerator == "cpu" or (
        accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()
    )
    return True if on_cpu else "warn"


def divergence(exc: ValueError, trainer) -> Exception:
    """A distribution built from NaN or infinite parameters during training, as one line naming the step and the
    parameter (torch's own message prints the whole tensor); any other ValueError is returned unchanged."""
    found = re.search(r"Expected parameter (\w+) \(([^)]*)\)", str(exc))
    if not found:
        return exc
    kind = re.search(r"of distribution (\w+)", str(exc))
    return InfinimodalError(
        f"training diverged at epoch {trainer.current_epoch + 1}, step {trainer.global_step}: the {kind.group(1) if kind else 'latent'} "
        f"parameter {found.group(1)} ({found.group(2)}) became NaN or infinite; try a smaller --lr, a longer --kl-warmup, "
        "or standardised inputs (data files are standardised unless --no-standardize)"
    )


@dataclass
class TrainingResult:
    best_checkpoint: Path
    best_val_elbo: float | None
    epochs_done: int
    seconds: float


def run_training(
    module: MultimodalModule,
    data: MultimodalData,
    settings: TrainingOptions,
    out: Path,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
) -> TrainingResult:
    """Train `module` on `data` with Lightning into `out` (checkpoints, metrics.csv, progress.json); with
    `resume`, continue from out/last.ckpt. Raises `TrainingInterrupted` when a SIGTERM stops it early."""
    out.mkdir(parents=True, exist_ok=True)
    last = out / LAST_CHECKPOINT
    ckpt_path = None
    if resume:
        if not last.is_file():
            raise InfinimodalError(
                f"{out}: nothing to resume ({LAST_CHECKPOINT} is missing: the run was stopped before its first epoch ended)"
            )
        read_checkpoint(last)  # refuses anything but tensors and plain containers before Lightning opens it
        ckpt_path = last
    L.seed_everything(settings.seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(
        dirpath=out,
        filename=BEST_CHECKPOINT.removesuffix(".ckpt"),
        monitor=SELECTION_METRIC,
        mode="max",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    plan = TrainingPlan(module, settings)  # refuses weights and terms the model cannot take before anything is moved
    try:
        trainer = _trainer(settings, out, checkpoint, progress, callbacks, adaptive=_check_adaptive(module))
    except MisconfigurationException as exc:
        raise InfinimodalError(f"cannot train with these settings here: {str(exc).splitlines()[0]}") from None
    if resume and is_rank_zero():
        _set_aside_metrics(out)
    module.train()
    started = time.perf_counter()
    stopped = None
    try:
        with warnings.catch_warnings():
            for noise in _LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=noise)
            trainer.fit(
                plan,
                datamodule=MultimodalDataModule(
                    data,
                    batch_size=settings.process_batch_size,
                    seed=settings.seed,
                    oversample=next(iter(settings.oversample.items()), None),
                ),
                ckpt_path=ckpt_path,
                weights_only=True,
            )
    except SIGTERMException:
        stopped = "stopped by SIGTERM"
    except ValueError as exc:
        error = divergence(exc, trainer)
        _record_divergence(out, trainer, settings, error)
        raise error from None
    except InfinimodalError as exc:
        _record_divergence(out, trainer, settings, exc)
        raise
    finally:
        if resume and is_rank_zero():
            _merge_metrics(out)
    done = trainer.current_epoch if stopped is None else int(trainer.fit_loop.epoch_progress.current.completed)
    if stopped is not None or done < settings.epochs:
        stopped = stopped or "stopped early"
        write_progress(out, done, settings.epochs, finished=False, stopped=stopped)
        raise TrainingInterrupted(
            f"training {stopped} after {done} of {settings.epochs} epochs; {out} holds the checkpoint of epoch {done}: "
            f"continue with `infinimodal train --out {out} --resume`"
        )
    write_progress(out, done, settings.epochs, finished=True)
    score = checkpoint.best_model_score
    return TrainingResult(
        Path(checkpoint.best_model_path),
        float(score) if score is not None else None,
        done,
        time.perf_counter() - started,
    )


def _check_adaptive(module: MultimodalModule) -> bool:
    """Whether the latent adapts its truncation (`AdaptTruncation`); refuses what it cannot do yet, in words."""
    if not module.latent.adaptive:
        return False
    if not module.can_resize_dimensions():
        raise InfinimodalError(
            "--truncation auto (the gated family's default) resizes each decoder's input layer: it needs the "
            "default decoders, or custom ones with an `input_layer()` method returning their first nn.Linear "
            "(else give truncation='fixed'), and, for stick families, --decoder-input logitv"
        )
    return True


def _record_divergence(out: Path, trainer, settings: TrainingOptions, error: Exception) -> None:
    """progress.json of a run that diverged: resuming would diverge again (it repeats the same numbers)."""
    done = int(trainer.fit_loop.epoch_progress.current.completed)
    write_progress(out, done, settings.epochs, finished=False, stopped=f"{DIVERGED}: {str(error)[:300]}")


def _trainer(
    settings: TrainingOptions,
    out: Path,
    checkpoint: ModelCheckpoint,
    progress: bool,
    callbacks: Sequence[Callback],
    adaptive: bool = False,
) -> L.Trainer:
    return L.Trainer(
        max_epochs=settings.epochs,
        accelerator=settings.accelerator,
        devices=settings.devices,
        strategy=settings.process_strategy,
        use_distributed_sampler=False,  # EpochShuffle shards the rows itself, from (seed, epoch)
        precision=cast(Literal["32", "bf16-mixed"], settings.precision),  # one of PRECISIONS (validated)
        logger=CSVLogger(save_dir=out, name="", version=""),
        callbacks=[
            checkpoint,
            EpochSeeds(settings.seed),
            RecordProgress(out, settings.epochs),
            *([OrderDimensions(seed=settings.seed)] if settings.order_dimensions else []),
            *([AdaptTruncation(seed=settings.seed)] if adaptive else []),
            *callbacks,
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=determinism(settings.accelerator),
        log_every_n_steps=50,
    )
