"""Lightning glue: a training plan that calls the model and logs, a data module over `MultimodalData`, and
`run_training`, the one place a Trainer is built.

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

import copy
import csv
import logging
import math
import os
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from torch import Tensor
from torch.distributions import Distribution
from torch.utils.data import DataLoader, Sampler

from .data import MultimodalData, Split
from .errors import InfinimodalError
from .model import MultimodalModule, correct_young_entries, kept_random_streams
from .runfiles import DIVERGED, PROGRESS_FILE, STATE_PREFIX, atomic_write, read_checkpoint, write_json
from .options import TrainingOptions

log = logging.getLogger("infinimodal")
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "model.ckpt"
_LIGHTNING_NOISE = (
    ".*exists and is not empty.*", ".*does not have many workers.*", ".*LeafSpec.*", ".*smaller than the logging interval.*",
)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # GPU/TPU availability lines, tips


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of one epoch's random stream (0: training, 1: validation, 2: data order, 3 + r: training on rank r > 0)."""
    return (seed * 1_000_003 + epoch * 7_919 + stream) % (2**63 - 1)


def _group_rank() -> tuple[int, int]:
    """(rank, world size) in the process group; (0, 1) when there is none (a single process takes every row)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside multi-process training. Before the process group
    exists, from the variables a launcher sets: Lightning's own launcher starts ranks 1.. with LOCAL_RANK (and
    NODE_RANK), torchrun sets RANK. (Under srun, Lightning takes the rank from SLURM once training starts; before
    that every task counts as rank 0, and they write the same config.json atomically.)"""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _group_rank()
    world = int(os.environ.get("WORLD_SIZE", 1))
    if "RANK" in os.environ:
        return int(os.environ["RANK"]), world
    if "LOCAL_RANK" in os.environ:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        return int(os.environ.get("NODE_RANK", 0)) * local_world + int(os.environ["LOCAL_RANK"]), world
    return 0, 1


def is_rank_zero() -> bool:
    """Whether this process writes the run directory (only rank 0 does)."""
    return process_rank()[0] == 0


#: train_loss (the progress bar's figure) is logged every this many steps (a divisor of the 50 at which the CSV logger writes).
LOSS_LOG_STEPS = 10


#: The validation value the saved model (model.ckpt) is chosen on, the larger the better.
SELECTION_METRIC = "val_elbo"


def class_error_key(name: str) -> str:
    """The logged name of categorical modality `name`'s validation imputation error (a metrics.csv column)."""
    return f"val_{name}_error"


class TrainingPlan(L.LightningModule):
    """Adam on the aggregator's objective, with the KL weight ramped linearly from 0 to `kl_weight` (beta of the
    beta-VAE; 1 is the ELBO) over `kl_warmup` epochs. Validation always reports the ELBO (weight 1), and for each
    categorical modality the error of imputing it from the others on the validation rows where it is observed
    (`val_<modality>_error`: a label's error on held-out labelled rows, to choose settings on without the test set)."""

    def __init__(self, model: MultimodalModule, options: TrainingOptions | None = None) -> None:
        super().__init__()
        options = options or TrainingOptions()
        self.model = model
        self.lr = options.lr
        self.kl_warmup = options.kl_warmup
        self.final_kl_weight = options.kl_weight
        self.clip = RelativeClip(options.grad_clip) if options.grad_clip is not None else None
        self.epoch_sums: Tensor | None = None
        self.epoch_rows, self.epoch_weight = 0, 0.0

    def warmup_progress(self) -> float:
        """How far the warm-up has gone, 0 to 1, from the step counter (so a resumed run continues it exactly)."""
        if self.kl_warmup <= 0:
            return 1.0
        steps_per_epoch = max(1, int(self.trainer.num_training_batches))
        return min(1.0, self.global_step / (self.kl_warmup * steps_per_epoch))

    def kl_weight(self) -> float:
        return self.final_kl_weight * self.warmup_progress()

    def training_step(self, batch, batch_idx):
        progress = self.warmup_progress()
        self.model.warm_up(progress)  # a prior with a warm-up schedule (the gated family's sticks) follows it
        weight = self.final_kl_weight * progress
        with arguments_unchecked():
            out = self.model(batch["data"], batch["mask"], kl_weight=weight)
        self.last_output, self.last_batch, self.last_kl_weight = out, batch, weight
        n = batch["mask"].shape[0]
        if (self.global_step + 1) % LOSS_LOG_STEPS == 0:  # the steps at which the CSV logger writes among them
            self.log("train_loss", out.loss, prog_bar=True, batch_size=n)
        # rows that --oversample appended are trained on, not counted: the epoch's means average each training row once
        self.add_to_epoch_means(out, weight, n - batch.get(APPENDED_ROWS, 0))
        if batch_idx == self.trainer.num_training_batches - 1:
            self.log_epoch_means()
        return out.loss

    def on_train_epoch_start(self) -> None:
        self.epoch_sums, self.epoch_rows, self.epoch_weight = None, 0, 0.0

    def add_to_epoch_means(self, out, weight: float, n: int) -> None:
        """Sums over the epoch's rows (the batch's first n) of the ELBO and its parts, kept on the device (no host
        sync; float32, which every accelerator has), and the rows and KL weight, which the host knows."""
        with torch.no_grad():
            sums = torch.stack([out.elbo[:n].sum(), out.reconstruction[:n].sum(), out.kl[:n].sum()]).float()
        self.epoch_sums = sums if self.epoch_sums is None else self.epoch_sums + sums
        self.epoch_rows += n
        self.epoch_weight += weight * n

    def log_epoch_means(self) -> None:
        """The epoch's training means, logged once at its last step: Lightning's `log` costs about 2 ms a call on a CPU
        (it moves its whole record to the device each time), which at four calls a step was a third of a small model's
        step. Under DDP each process logs its rows' means and `sync_dist` averages them (equal rows per process)."""
        if self.epoch_sums is None:
            return
        means = self.epoch_sums / self.epoch_rows
        for name, value in zip(("train_elbo", "train_reconstruction", "train_kl"), means):
            self.log(name, value, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        self.log("kl_weight", self.epoch_weight / self.epoch_rows, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.model.warm_up(1.0)  # validation scores the model itself, so the best checkpoint is chosen on it

    def on_train_end(self) -> None:
        self.model.warm_up(1.0)

    def validation_step(self, batch, batch_idx):
        out = self.model(batch["data"], batch["mask"], kl_weight=1.0)
        n = batch["mask"].shape[0]
        # every process validates all validation rows with the same random stream: the same value on each
        self.log(SELECTION_METRIC, out.elbo.mean(), prog_bar=True, batch_size=n, sync_dist=True)  # the validation ELBO
        self.log("val_reconstruction", out.reconstruction.mean(), batch_size=n, sync_dist=True)
        self.log("val_kl", out.kl.mean(), batch_size=n, sync_dist=True)
        for name, (error, rows) in self.model.class_errors(batch["data"], batch["mask"]).items():
            # weighted by the rows scored: the epoch's value is the error over all of them
            self.log(class_error_key(name), error, prog_bar=True, batch_size=rows, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, fused=fused_adam_supported(self.device))

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        correct_young_entries(getattr(optimizer, "optimizer", optimizer))  # dimensions a resize added (--truncation auto)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Stop on a non-finite loss or gradient, naming it; then clip. One host sync a step: the loss and the
        gradient norm come back together (a NaN loss is reported as the cause of its NaN gradients)."""
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters]) if parameters else torch.zeros(())
        loss, norm_value = torch.stack([self.last_output.loss.detach().float(), norm.float().to(self.last_output.loss.device)]).tolist()
        if not math.isfinite(loss):
            raise InfinimodalError(
                f"training diverged: loss is {loss} at epoch {self.current_epoch + 1}, step {self.global_step} "
                f"({non_finite_terms(self.last_output, self.model, self.last_batch)}); the best checkpoint so far is kept: "
                "try a smaller --lr or a longer --kl-warmup"
            )
        if not math.isfinite(norm_value):
            bad = [name for name, p in self.model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            raise InfinimodalError(
                f"training diverged: the gradient of {', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''} is NaN or infinite "
                f"at epoch {self.current_epoch + 1}, step {self.global_step} with a finite loss; try a smaller --lr or a longer --kl-warmup"
            )
        if self.clip is not None:
            self.clip(parameters, norm=norm_value)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.clip is not None:
            checkpoint["gradient_clip_state"] = {"average": self.clip.average, "steps": self.clip.steps}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # an adaptive latent (truncation auto) takes the checkpoint's number of dimensions before Lightning loads the
        # weights into it; the optimiser, built after this, then matches the saved state
        self.model.match_dimensions({k.removeprefix(STATE_PREFIX): v for k, v in checkpoint.get("state_dict", {}).items()})
        if self.clip is not None:
            state = checkpoint.get("gradient_clip_state") or {}
            self.clip.average, self.clip.steps = state.get("average"), int(state.get("steps", 0))


#: Devices whose fused Adam kernel torch has: one kernel for every parameter instead of a dozen operations each (on two
#: CPU cores about 3x faster on a 3-modality MLP: benchmarks/throughput.py, `adam_step_ms_3_tabular`).
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def fused_adam_supported(device: torch.device) -> bool:
    """Whether Adam's fused kernel runs on `device`."""
    return torch.device(device).type in FUSED_ADAM_DEVICES


class RelativeClip:
    """Clip the gradient's norm at `factor` times its running average (an exponential average over about 100
    steps of the norms after clipping), once 20 steps have set the average.

    Relative, because the norm's scale is the data's: training-time medians were 7 on a synthetic tabular set,
    34 on MNIST and 3e5 on a histogram view with counts to 1,353, so no fixed threshold both leaves ordinary
    steps alone and catches a spike. A spike (one stray batch) is cut to `factor` times what training has
    been doing; steady growth of the norm, as MNIST's 25 -> 165 over its first epochs, moves the average along.
    """

    WARMUP_STEPS = 20
    DECAY = 0.99

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.average: float | None = None
        self.steps = 0

    def __call__(self, parameters, norm: float | None = None) -> float:
        """Clip the gradients of `parameters` in place (their total norm `norm` when the caller has it); return
        the norm after clipping."""
        parameters = [p for p in parameters if p.grad is not None]
        if norm is None:
            norm = float(torch.nn.utils.get_total_norm([p.grad for p in parameters]))
        if not math.isfinite(norm):
            return norm  # left as it is: the training plan names the parameter and stops (clipping would hide it)
        self.steps += 1
        if self.average is not None and self.steps > self.WARMUP_STEPS and norm > self.factor * self.average:
            torch.nn.utils.clip_grads_with_norm_(parameters, self.factor * self.average, torch.tensor(norm))
            norm = self.factor * self.average
        self.average = norm if self.average is None else self.DECAY * self.average + (1 - self.DECAY) * norm
        return norm


class _Rows(torch.utils.data.Dataset):
    """Row indices; the collate function fetches a whole batch of rows at once (fancy indexing is fast)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class EpochShuffle(Sampler[int]):
    """A permutation of range(n) that depends only on (seed, epoch); Lightning calls `set_epoch`. Under
    multi-process training, rank r of R takes rows r, r + R, ... of it, padded (with its first rows) to the
    same count on every rank, as torch's DistributedSampler does, so that every rank runs as many steps."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / _group_rank()[1])

    def __iter__(self):
        rank, world = _group_rank()
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 2))
        order = torch.randperm(self.n, generator=generator).tolist()
        padded = order + order[: len(self) * world - self.n]
        return iter(padded[rank::world])


#: A training batch's key: how many of its last rows `OversampledShuffle` appended (absent: none).
APPENDED_ROWS = "appended_rows"


class OversampledShuffle(Sampler[int]):
    """EpochShuffle's permutation of range(n) in blocks of `batch` rows, each block followed by `extra` rows drawn
    from `rows` (the rows where a rarely observed modality, a label, is observed): a loader with batch size
    batch + extra gives every batch that many of those rows, and every row still comes once per epoch in the
    blocks. The extra rows run through successive permutations of `rows` (seeded by seed and epoch), so within an
    epoch each is drawn as often as the others, to within one; a row may come in a block and among the extra rows
    of the same batch. One process only (it is refused under DDP).

    The loader marks its batches with how many rows were appended (`APPENDED_ROWS`): the training means that
    metrics.csv logs leave them out, so they average each training row once, as without the option."""

    def __init__(self, n: int, rows: np.ndarray, batch: int, extra: int, seed: int) -> None:
        if len(rows) == 0:
            raise InfinimodalError("no training row has the modality to oversample observed")
        self.n, self.rows, self.batch, self.extra, self.seed, self.epoch = n, np.asarray(rows), batch, extra, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n + self.extra * math.ceil(self.n / self.batch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 2))
        order = torch.randperm(self.n, generator=generator).tolist()
        blocks = math.ceil(self.n / self.batch)
        laps = math.ceil(blocks * self.extra / len(self.rows))
        stream = np.concatenate([self.rows[torch.randperm(len(self.rows), generator=generator).numpy()] for _ in range(laps)]).tolist()
        for b in range(blocks):
            yield from order[b * self.batch : (b + 1) * self.batch]
            yield from stream[b * self.extra : (b + 1) * self.extra]


class MultimodalDataModule(L.LightningDataModule):
    """Train / validation loaders over a `MultimodalData`; dynamically binarised modalities are drawn per batch.
    `oversample` = (modality, k): each training batch also gets k rows where that modality is observed
    (`OversampledShuffle`)."""

    def __init__(self, data: MultimodalData, batch_size: int = 100, seed: int = 0, valid_batch_size: int = 500,
                 oversample: tuple[str, int] | None = None) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.valid_batch_size = valid_batch_size
        self.seed = seed
        self.oversample = oversample

    def _loader(self, split: Split, batch_size: int, sampler: Sampler | None, binarize=(), appended: int = 0) -> DataLoader:
        """Batches of `split`; `appended`: the rows the sampler adds at the end of every batch (`APPENDED_ROWS`)."""
        marked = {APPENDED_ROWS: appended} if appended else {}
        return DataLoader(
            _Rows(len(split)), batch_size, sampler=sampler,
            # a generator of its own: the loader's base seed must not draw from torch's global stream
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=lambda rows: split.batch(np.asarray(rows), binarize) | marked,
        )

    def train_dataloader(self) -> DataLoader:
        train = self.data.train
        if self.oversample is None:
            return self._loader(train, self.batch_size, EpochShuffle(len(train), self.seed), binarize=self.data.dynamic_binarize)
        name, extra = self.oversample
        observed = np.flatnonzero(train.mask[:, [m.name for m in self.data.modalities].index(name)])
        sampler = OversampledShuffle(len(train), observed, self.batch_size, extra, self.seed)
        return self._loader(train, self.batch_size + extra, sampler, binarize=self.data.dynamic_binarize, appended=extra)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data.valid, self.valid_batch_size, None)


# --- the training run ------------------------------------------------------------------------------------


class EpochSeeds(Callback):
    """Reseed torch at the start of each training and validation epoch from (seed, epoch) (module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        rank = trainer.global_rank
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, 0 if rank == 0 else 3 + rank))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, 1))


#: A used dimension carries more than this mean KL (nats): evaluation's KL-active threshold.
USED_DIMENSION_KL = 0.05
#: An exchange stays unless it lowers the mean ELBO of the rows by more than this (nats). Where a dimension sits is
#: worth hundredths of a nat to the ELBO at alpha = 30 (that is why stragglers stay), and an exchange moves it by about
#: +-0.1 (synthetic 2 + 1, measured both ways), which the training that follows takes back; a drop beyond this is not
#: that, and is undone.
EXCHANGE_TOLERANCE = 0.25


@torch.no_grad()
def move_stragglers(module: MultimodalModule, data: dict, mask: Tensor, optimizer=None, seed: int = 0) -> list[tuple[int, int, float, float]]:
    """While a used dimension (mean KL over these rows above USED_DIMENSION_KL) sits after an unused one, exchange the
    last used with the first unused (`MultimodalModule.swap_dimensions`), unless that makes the mean ELBO of these rows
    non-finite or lower than it was before the first exchange by more than EXCHANGE_TOLERANCE (the same random draws
    each time; then it is undone and the search stops): the tolerance bounds all of one call's exchanges together, not
    each. Each pair of positions is exchanged at most once per call (an exchanged dimension can fall below the KL
    threshold and its partner rise above it, and the two were then exchanged back and forth ~50 times at one epoch
    start). Returns the moves made as (from, to, ELBO before, ELBO after), dimensions counted from 1. Needs a family
    with ordered dimensions."""
    moves, exchanged = [], set()
    with kept_random_streams(mask.device):
        start = None
        for _ in range(module.latent.n_dimensions):
            q = module.posterior(data, mask)
            used = (module.latent.kl_per_dim(q).mean(0) > USED_DIMENSION_KL).cpu().numpy()
            free, late = np.flatnonzero(~used), np.flatnonzero(used)
            if not len(free) or not len(late) or late[-1] < free[0]:
                break
            j, k = int(free[0]), int(late[-1])
            if (j, k) in exchanged:
                break
            exchanged.add((j, k))
            into_j, into_k = module.latent.exchange_scales(q, j, k)  # the sticks stay at their positions, the experts move
            before = _fixed_draw_elbo(module, data, mask, seed)
            start = before if start is None else start
            module.swap_dimensions(j, k, (into_j, into_k), optimizer)
            after = _fixed_draw_elbo(module, data, mask, seed)
            if not harmless(start, after):
                module.swap_dimensions(j, k, (1.0 / into_k, 1.0 / into_j), optimizer)  # back
                break
            moves.append((k + 1, j + 1, before, after))
    return moves


def harmless(before: float, after: float) -> bool:
    """A change to the model (exchanges, a trim) stays only if the ELBO after it is finite and at most EXCHANGE_TOLERANCE
    below the ELBO before (a NaN compares False with everything, so `after < before - tol` let a NaN through)."""
    return math.isfinite(after) and after >= before - EXCHANGE_TOLERANCE


def _fixed_draw_elbo(module: MultimodalModule, data: dict, mask: Tensor, seed: int) -> float:
    """The mean ELBO of the rows at draws seeded by `seed`: the aggregator's loss alone, not the training terms that
    `MultimodalModule.forward` adds (their values would be thrown away; the smoothness term's cost a backward pass)."""
    torch.manual_seed(seed)
    return float(module.aggregator.loss(module, data, mask, 1.0).elbo.mean())


class OrderDimensions(Callback):
    """Move stragglers forward (`move_stragglers`) at the start of every training epoch after the first, where the latent
    family orders its dimensions (the gated family) and the decoders' input layers are known.

    Why: the gated prior prefers early dimensions only weakly (at alpha = 30 a gate's noise grows like sqrt(k) / 30),
    so a factor learned late lands on whichever free dimension trains first and stays there: measured on synthetic
    8 + 2, 13 dimensions in order and the 14th at position 18 to 22. Gradient steps do not carry it to the first free
    position; an exchange does, in one step that keeps the decoders' input in mean (docs/results.md section 7). It
    changes where information sits, not the model or its objective, and stays only if the mean ELBO of `rows`
    validation rows does not drop by more than EXCHANGE_TOLERANCE. Deterministic (fixed rows, a forked and seeded random stream), so every DDP process and a
    resumed run make the same moves.
    """

    def __init__(self, rows: int = 1000, seed: int = 0) -> None:
        self.rows = rows
        self.seed = seed

    def on_train_epoch_start(self, trainer, plan) -> None:
        module = plan.model
        if trainer.current_epoch == 0 or not module.can_swap_dimensions():
            return
        data, mask = validation_rows(trainer, plan, self.rows)
        module.warm_up(1.0)  # decisions about the model itself (the next training step sets the schedule again)
        started = time.perf_counter()
        moves = move_stragglers(module, data, mask, trainer.optimizers[0] if trainer.optimizers else None, self.seed)
        for moved, to, before, after in moves:
            log.info("epoch %d: moved dimension %d to the unused position %d (ELBO of %d validation rows %.3f -> %.3f)",
                     trainer.current_epoch + 1, moved, to, len(mask), before, after)
        if moves:
            log.info("epoch %d: %d straggler move(s) in %.1f s", trainer.current_epoch + 1, len(moves), time.perf_counter() - started)


#: `--truncation auto` keeps this many unused dimensions after the last used one: it grows when fewer have been free at
#: GROW_PATIENCE epoch starts in a row, and trims to this many when more than twice as many have been free for
#: TRIM_PATIENCE epochs in a row after the warm-up. Growth does not wait: after one epoch a young model's unused
#: dimensions have not yet fallen back to the prior (measured: the 8th of 8 still held 0.19 nats after one epoch on data
#: with 2 factors, 0.002 after two), so it may grow where it need not, but waiting a second epoch cost fit where it had
#: to grow (MNIST, 10 epochs: 1 nat of log p(x); synthetic 12 + 1, 15 epochs: 2 nats), and trimming undoes the rest.
SPARE_DIMENSIONS = 4
GROW_PATIENCE = 1
TRIM_PATIENCE = 3


def truncation_statistics(module: MultimodalModule, data: dict, mask: Tensor) -> tuple[np.ndarray, float]:
    """Mean KL per dimension over these rows, and the mean mass left after the last stick (or the last gate)."""
    q = module.posterior(data, mask)
    kl = module.latent.kl_per_dim(q).mean(0).double().cpu().numpy()
    weights = module.latent.expected_weights(q)
    mass = float(weights[..., -1].mean()) if weights is not None else float("nan")
    return kl, mass


def used_span(kl: np.ndarray) -> int:
    """The last dimension (counted from 1) whose mean KL is above USED_DIMENSION_KL; 0 when none is."""
    used = np.flatnonzero(kl > USED_DIMENSION_KL)
    return int(used[-1]) + 1 if len(used) else 0


def full(span: int, current: int) -> bool:
    """Fewer than SPARE_DIMENSIONS unused dimensions after the last used one: growth is due if it lasts."""
    return current - span < SPARE_DIMENSIONS


def next_truncation(span: int, current: int, largest: int, can_grow: bool, can_trim: bool) -> int:
    """The number of dimensions to continue with, given the last used one (`span`): when `can_grow` and the latent is
    `full`, grow to span + 2 SPARE_DIMENSIONS, or double it when every dimension is used (how many more it needs is then
    unknown), at most `largest`; when `can_trim` and more than SPARE_DIMENSIONS are free, trim to span + SPARE_DIMENSIONS;
    otherwise stay. After a growth 2 SPARE_DIMENSIONS are free: neither full nor `too_wide`, so it does not swing back."""
    if can_grow and full(span, current) and current < largest:
        return min(largest, max(2 * current if span >= current else 0, span + 2 * SPARE_DIMENSIONS))
    if can_trim and current > span + SPARE_DIMENSIONS:
        return span + SPARE_DIMENSIONS
    return current


def too_wide(span: int, current: int) -> bool:
    """More than twice SPARE_DIMENSIONS unused dimensions after the last used one: a trim is due if it lasts."""
    return current - span > 2 * SPARE_DIMENSIONS


class AdaptTruncation(Callback):
    """`--truncation auto`: at the start of every epoch after the first (that is, after each epoch's training and
    validation), measure each dimension's mean KL on `rows` validation rows and grow or trim the latent
    (`next_truncation`, `MultimodalModule.resize_dimensions`; the constants above say when).

    Growth keeps the model's function and its optimiser state (new dimensions start at the prior and are ignored by
    the decoders). Trimming waits for the warm-ups to end (the gate warm-up keeps late dimensions shut on purpose) and
    for TRIM_PATIENCE epochs in a row with too many free dimensions; it removes only dimensions whose KL is below
    USED_DIMENSION_KL, and is refused (and logged) when it would lower the mean ELBO of the rows by more than
    EXCHANGE_TOLERANCE. Every epoch's measurement is logged to metrics.csv (truncation, truncation_span,
    truncation_last_kl, truncation_mass_left); the checkpoints carry the counters of epochs in a row, so a resumed run
    makes the same decisions. Deterministic: fixed rows and seeded draws."""

    def __init__(self, rows: int = 1000, seed: int = 0) -> None:
        self.rows = rows
        self.seed = seed
        self.full_epochs = 0  # epoch starts in a row at which the latent was `full`
        self.wide_epochs = 0  # ... and `too_wide`

    def on_train_epoch_start(self, trainer, plan) -> None:
        module = plan.model
        largest = module.latent.max_dimensions
        data, mask = validation_rows(trainer, plan, self.rows)
        # each dimension's KL against the prior training uses now: during the gate warm-up the sticks follow a prior with a
        # smaller alpha, and against the final one every stick looks more used than it is (measured at initialisation: the
        # last of 8 dimensions held 2.2 nats against the final prior, 0.8 against the warm-up's)
        module.warm_up(plan.warmup_progress())
        current = module.latent.n_dimensions
        with torch.no_grad(), kept_random_streams(mask.device):
            torch.manual_seed(self.seed)
            kl, mass = truncation_statistics(module, data, mask)
            span = used_span(kl)
            trained = trainer.current_epoch > 0  # before the first epoch the encoders are their random initial selves
            self.full_epochs = self.full_epochs + 1 if trained and full(span, current) else 0
            self.wide_epochs = self.wide_epochs + 1 if trained and too_wide(span, current) else 0
            warmed_up = trained and plan.warmup_progress() >= 1.0
            target = next_truncation(span, current, largest, can_grow=self.full_epochs >= GROW_PATIENCE,
                                     can_trim=warmed_up and self.wide_epochs >= TRIM_PATIENCE)
            if target < current:
                target = self._trim_if_harmless(module, data, mask, target, trainer)
        if target != current:
            module.resize_dimensions(target, trainer.optimizers[0] if trainer.optimizers else None)
            self.full_epochs = self.wide_epochs = 0
            log.info("epoch %d: %s the latent from %d to %d dimensions (last used %d; KL of the last %.3f nats)",
                     trainer.current_epoch + 1, "grew" if target > current else "trimmed", current, target, span, float(kl[-1]))
        # the dimensions this epoch trains with; the last used one, the last dimension's KL and the mass (stick families:
        # mean E[pi] left after the last stick; gated: of its sticks) measured before the decision
        for name, value in (("truncation", target), ("truncation_span", span), ("truncation_last_kl", kl[-1]), ("truncation_mass_left", mass)):
            plan.log(name, float(value), on_step=False, on_epoch=True, sync_dist=False)

    def _trim_if_harmless(self, module: MultimodalModule, data: dict, mask: Tensor, target: int, trainer) -> int:
        """`target` if the trimmed model's mean ELBO on the rows is within EXCHANGE_TOLERANCE of the current one's."""
        trimmed = copy.deepcopy(module)
        trimmed.resize_dimensions(target)
        before, after = _fixed_draw_elbo(module, data, mask, self.seed), _fixed_draw_elbo(trimmed, data, mask, self.seed)
        if not harmless(before, after):
            log.info("epoch %d: kept %d dimensions: trimming to %d would lower the ELBO of %d validation rows from %.3f to %.3f",
                     trainer.current_epoch + 1, module.latent.n_dimensions, target, len(mask), before, after)
            return module.latent.n_dimensions
        return target

    def state_dict(self) -> dict:
        return {"full_epochs": self.full_epochs, "wide_epochs": self.wide_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.full_epochs = int(state.get("full_epochs", 0))
        self.wide_epochs = int(state.get("wide_epochs", 0))


def validation_rows(trainer, plan, rows: int) -> tuple[dict, Tensor]:
    """The first `rows` validation rows as (data, mask) on the plan's device."""
    split = trainer.datamodule.data.valid
    batch = split.batch(np.arange(min(rows, len(split))))
    return {k: v.to(plan.device) for k, v in batch["data"].items()}, batch["mask"].to(plan.device)


@contextmanager
def arguments_unchecked():
    """torch.distributions' argument checks off for a training step.

    Each distribution a step builds otherwise checks its parameters against their constraints, a reduction and a host
    sync per parameter (about a tenth of a small Gaussian model's step on the CPU, a sync each on a GPU). A training step
    does not need them: a parameter that became NaN or infinite makes the loss non-finite, which
    `configure_gradient_clipping` reports by name (and there the posterior is rebuilt with the checks on)."""
    checked = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(checked)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save into a temporary file, then a rename: a kill mid-write leaves the previous file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def non_finite_terms(out, model: MultimodalModule, batch: dict) -> str:
    """Which parts of the objective are NaN or infinite, in words: the reconstruction of which modality (found
    by scoring each observed modality under one posterior sample of the batch again), the KL of which family."""
    parts = []
    if not bool(torch.isfinite(out.reconstruction).all()):
        parts.append(f"the reconstruction of {_non_finite_modalities(model, batch)}")
    bad_dims = (~torch.isfinite(out.kl_per_dim)).any(0).nonzero().squeeze(-1).tolist()
    if bad_dims or not bool(torch.isfinite(out.kl).all()):
        parts.append(f"the KL of the {type(model.latent).__name__} latent (dimensions {bad_dims[:5]})")
    return "; ".join(parts) or "the loss itself"


def _non_finite_modalities(model: MultimodalModule, batch: dict) -> str:
    with torch.no_grad():
        try:
            q = model.posterior(batch["data"], batch["mask"])
        except ValueError:  # said in words: the parameters themselves are the non-finite term
            return "every modality: the encoders' posterior parameters are not finite"
        scores = model.log_likelihoods(model.latent.rsample(q), batch["data"], batch["mask"])
    bad = (~torch.isfinite(scores)).any(0).tolist()
    names = [name for name, is_bad in zip(model.names, bad) if is_bad]
    return f"modality {', '.join(repr(n) for n in names)}" if names else "the modalities (not reproduced on a second sample)"


class RecordProgress(Callback):
    """progress.json after every epoch (once its checkpoints are written), and one log line per epoch."""

    def __init__(self, out: Path, epochs: int) -> None:
        self.out, self.epochs = out, epochs

    def on_train_epoch_end(self, trainer, pl_module):
        # after this epoch's validation and with this epoch's training means (at validation's end they are the last epoch's)
        shown = {"train_elbo", "train_kl", "val_elbo", "val_kl", "kl_weight"} | {class_error_key(name) for name in pl_module.model.names}
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k in shown}
        if trainer.is_global_zero:
            log.info("epoch %d: %s", trainer.current_epoch + 1, ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items())))
            write_progress(self.out, trainer.current_epoch + 1, self.epochs, finished=False)


def write_progress(out: Path, done: int, epochs: int, finished: bool, stopped: str | None = None) -> None:
    if not is_rank_zero():
        return
    write_json(out / PROGRESS_FILE, {"epochs_done": done, "epochs": epochs, "finished": finished, "stopped": stopped})


def determinism(accelerator: str) -> bool | str:
    """Lightning's `deterministic`: strict on the CPU; "warn" on an accelerator, where some kernels
    (index_add on CUDA, behind index_select's gradient) have no deterministic version and would stop the run."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available())
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


class TrainingInterrupted(InfinimodalError):
    """Training stopped before its last epoch (SIGTERM); the run directory can be resumed."""


@dataclass
class TrainingResult:
    best_checkpoint: Path
    best_val_elbo: float | None
    epochs_done: int
    seconds: float


def run_training(module: MultimodalModule, data: MultimodalData, settings: TrainingOptions, out: Path, progress: bool = True,
                 callbacks: Sequence[Callback] = (), resume: bool = False) -> TrainingResult:
    """Train `module` on `data` with Lightning into `out` (checkpoints, metrics.csv, progress.json); with
    `resume`, continue from out/last.ckpt. Raises `TrainingInterrupted` when a SIGTERM stops it early."""
    out.mkdir(parents=True, exist_ok=True)
    last = out / LAST_CHECKPOINT
    ckpt_path = None
    if resume:
        if not last.is_file():
            raise InfinimodalError(f"{out}: nothing to resume ({LAST_CHECKPOINT} is missing: the run was stopped before its first epoch ended)")
        read_checkpoint(last)  # refuses anything but tensors and plain containers before Lightning opens it
        ckpt_path = last
    L.seed_everything(settings.seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(
        dirpath=out, filename=BEST_CHECKPOINT.removesuffix(".ckpt"), monitor=SELECTION_METRIC, mode="max", save_top_k=1,
        save_last=True, enable_version_counter=False,
    )
    try:
        trainer = _trainer(settings, out, checkpoint, progress, callbacks, adaptive=_check_adaptive(module, settings))
    except MisconfigurationException as exc:
        raise InfinimodalError(f"cannot train with these settings here: {str(exc).splitlines()[0]}") from None
    if resume and is_rank_zero():
        _set_aside_metrics(out)
    module.train()
    module.set_weights(settings.weights)
    module.set_prediction_weights(settings.predict)
    module.set_information_weights(settings.infomax)
    module.set_smoothness_weights(settings.vat, settings.vat_radius)
    plan = TrainingPlan(module, settings)
    started = time.perf_counter()
    stopped = None
    try:
        with warnings.catch_warnings():
            for noise in _LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=noise)
            trainer.fit(plan, datamodule=MultimodalDataModule(data, batch_size=settings.process_batch_size, seed=settings.seed,
                                                                   oversample=next(iter(settings.oversample.items()), None)),
                        ckpt_path=ckpt_path, weights_only=True)
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
        module.set_weights({})  # the weights belong to training: the fitted model is scored unweighted
        module.set_prediction_weights({})
        module.set_information_weights({})
        module.set_smoothness_weights({})
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
    return TrainingResult(Path(checkpoint.best_model_path), float(score) if score is not None else None, done, time.perf_counter() - started)


def _check_adaptive(module: MultimodalModule, settings: TrainingOptions) -> bool:
    """Whether the latent adapts its truncation (`AdaptTruncation`); refuses what it cannot do yet, in words."""
    if not module.latent.adaptive:
        return False
    if not module.can_resize_dimensions():
        raise InfinimodalError("--truncation auto needs the default decoders (a custom decoder's input layer cannot be resized) "
                               "and, for stick families, --decoder-input logitv")
    if settings.devices > 1:
        raise InfinimodalError("--truncation auto trains on one process for now: resizing the latent would change parameter "
                               "shapes under DDP; give an integer --truncation (or --latent-dim) with --devices > 1")
    return True


def _record_divergence(out: Path, trainer, settings: TrainingOptions, error: Exception) -> None:
    """progress.json of a run that diverged: resuming would diverge again (it repeats the same numbers)."""
    done = int(trainer.fit_loop.epoch_progress.current.completed)
    write_progress(out, done, settings.epochs, finished=False, stopped=f"{DIVERGED}: {str(error)[:300]}")


def _trainer(settings: TrainingOptions, out: Path, checkpoint: ModelCheckpoint, progress: bool, callbacks: Sequence[Callback],
             adaptive: bool = False) -> L.Trainer:
    return L.Trainer(
        max_epochs=settings.epochs,
        accelerator=settings.accelerator,
        devices=settings.devices,
        strategy=settings.process_strategy,
        use_distributed_sampler=False,  # EpochShuffle shards the rows itself, from (seed, epoch)
        precision=settings.precision,
        logger=CSVLogger(save_dir=out, name="", version=""),
        callbacks=[checkpoint, EpochSeeds(settings.seed), RecordProgress(out, settings.epochs),
                   *([OrderDimensions(seed=settings.seed)] if settings.order_dimensions else []),
                   *([AdaptTruncation(seed=settings.seed)] if adaptive else []), *callbacks],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=determinism(settings.accelerator),
        log_every_n_steps=50,
    )


EARLIER_METRICS = "metrics.earlier.csv"


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _combined(earlier: list[dict], later: list[dict]) -> list[dict]:
    """The earlier rows of the epochs before the later rows' first epoch, then the later rows: the rows of an
    interrupted epoch (and anything after it) were logged again by the resumed run."""
    first_new = min((int(r["epoch"]) for r in later if r.get("epoch")), default=None)
    kept = [r for r in earlier if first_new is None or (r.get("epoch") and int(r["epoch"]) < first_new)]
    return kept + later


def _write_rows(path: Path, rows: list[dict]) -> None:
    fields = sorted({k for r in rows for k in r})  # Lightning's CSV logger orders its columns by name: the same file
    # whether or not a kill came before a column's first value (train_loss is logged every few steps)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def _set_aside_metrics(out: Path) -> None:
    """Lightning's CSV logger starts metrics.csv afresh: move the earlier rows to metrics.earlier.csv (on disk, so
    that a kill during the resumed run loses nothing; a second resume first folds in what the killed one logged)."""
    path, earlier = out / "metrics.csv", out / EARLIER_METRICS
    if earlier.is_file():
        _write_rows(earlier, _combined(_read_rows(earlier), _read_rows(path)))
        path.unlink(missing_ok=True)
    elif path.is_file():
        os.replace(path, earlier)


def _merge_metrics(out: Path) -> None:
    """metrics.csv = the set-aside rows followed by the resumed run's; then the set-aside file goes."""
    path, earlier = out / "metrics.csv", out / EARLIER_METRICS
    if not earlier.is_file():
        return
    _write_rows(path, _combined(_read_rows(earlier), _read_rows(path)))
    earlier.unlink()
