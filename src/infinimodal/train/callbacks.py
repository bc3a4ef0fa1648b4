"""What happens at epoch boundaries: reseeding every epoch's random streams, moving used dimensions ahead of unused
ones, growing and trimming an adaptive latent, and recording progress (the policy's numbers: `infinimodal.truncation`)."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from ..distributed import epoch_seed, is_rank_zero
from ..model import MultimodalModule, kept_random_streams
from ..runfiles import PROGRESS_FILE, class_error_key, write_json
from ..truncation import (
    GROW_PATIENCE,
    TRIM_DRAWS,
    TRIM_PATIENCE,
    USED_DIMENSION_KL,
    full,
    harmless,
    next_truncation,
    too_wide,
    used_span,
)
from .data import validation_rows

log = logging.getLogger("infinimodal")


class EpochSeeds(Callback):
    """Reseed torch at the start of each training and validation epoch from (seed, epoch) (module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        rank = trainer.global_rank
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, 0 if rank == 0 else 3 + rank))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, 1))


@torch.no_grad()
def move_stragglers(
    module: MultimodalModule, data: dict, mask: Tensor, optimizer=None, seed: int = 0
) -> list[tuple[int, int, float, float]]:
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
            into_j, into_k = module.latent.exchange_scales(
                q, j, k
            )  # the sticks stay at their positions, the experts move
            before = _fixed_draw_elbo(module, data, mask, seed)
            start = before if start is None else start
            module.swap_dimensions(j, k, (into_j, into_k), optimizer)
            after = _fixed_draw_elbo(module, data, mask, seed)
            if not harmless(start, after):
                module.swap_dimensions(j, k, (1.0 / into_k, 1.0 / into_j), optimizer)  # back
                break
            moves.append((k + 1, j + 1, before, after))
    return moves


def _fixed_draw_elbo(module: MultimodalModule, data: dict, mask: Tensor, seed: int, draws: int = 1) -> float:
    """The mean ELBO of the rows over `draws` sets of draws seeded from `seed`: the model's own, not the training
    objective's terms (their values would be thrown away; the smoothness term's cost a backward pass)."""
    total = 0.0
    for draw in range(draws):
        torch.manual_seed(seed + draw)
        total += float(module.aggregator.loss(module, data, mask, 1.0).elbo.mean())
    return total / draws


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
            log.info(
                "epoch %d: moved dimension %d to the unused position %d (ELBO of %d validation rows %.3f -> %.3f)",
                trainer.current_epoch + 1,
                moved,
                to,
                len(mask),
                before,
                after,
            )
        if moves:
            log.info(
                "epoch %d: %d straggler move(s) in %.1f s",
                trainer.current_epoch + 1,
                len(moves),
                time.perf_counter() - started,
            )


def truncation_statistics(module: MultimodalModule, data: dict, mask: Tensor) -> tuple[np.ndarray, float]:
    """Mean KL per dimension over these rows, and the mean mass left after the last stick (or the last gate)."""
    q = module.posterior(data, mask)
    kl = module.latent.kl_per_dim(q).mean(0).double().cpu().numpy()
    weights = module.latent.expected_weights(q)
    mass = float(weights[..., -1].mean()) if weights is not None else float("nan")
    return kl, mass


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
            target = next_truncation(
                span,
                current,
                largest,
                can_grow=self.full_epochs >= GROW_PATIENCE,
                can_trim=warmed_up and self.wide_epochs >= TRIM_PATIENCE,
            )
            if target < current:
                target = self._trim_if_harmless(module, data, mask, target, trainer)
        # every process measured the same rows with the same draws; rank 0's decision is the one all of them take
        target, self.full_epochs, self.wide_epochs = trainer.strategy.broadcast(
            (target, self.full_epochs, self.wide_epochs), src=0
        )
        if target != current:
            module.resize_dimensions(target, trainer.optimizers[0] if trainer.optimizers else None)
            rebuild_data_parallel(trainer)
            self.full_epochs = self.wide_epochs = 0
            log.info(
                "epoch %d: %s the latent from %d to %d dimensions (last used %d; KL of the last %.3f nats)",
                trainer.current_epoch + 1,
                "grew" if target > current else "trimmed",
                current,
                target,
                span,
                float(kl[-1]),
            )
        # the dimensions this epoch trains with; the last used one, the last dimension's KL and the mass (stick families:
        # mean E[pi] left after the last stick; gated: of its sticks) measured before the decision
        for name, value in (
            ("truncation", target),
            ("truncation_span", span),
            ("truncation_last_kl", kl[-1]),
            ("truncation_mass_left", mass),
        ):
            # the same on every process (rank 0's decision); the mean over processes says so without Lightning's warning
            plan.log(name, float(value), on_step=False, on_epoch=True, sync_dist=True)

    def _trim_if_harmless(self, module: MultimodalModule, data: dict, mask: Tensor, target: int, trainer) -> int:
        """`target` if the trimmed model's mean ELBO on the rows is within EXCHANGE_TOLERANCE of the current one's."""
        trimmed = copy.deepcopy(module)
        trimmed.resize_dimensions(target)
        # a model with fewer dimensions lays the same seed's draws out differently, so unlike an exchange the two ELBOs
        # are not at common draws: averaged over TRIM_DRAWS sets (with one, a trim of dimensions that carried nothing was
        # refused at -0.7 nats on 600 cohort rows, for 19 epochs in a row: the two estimates' own noise)
        before, after = (_fixed_draw_elbo(m, data, mask, self.seed, TRIM_DRAWS) for m in (module, trimmed))
        if not harmless(before, after):
            log.info(
                "epoch %d: kept %d dimensions: trimming to %d would lower the ELBO of %d validation rows from %.3f to %.3f",
                trainer.current_epoch + 1,
                module.latent.n_dimensions,
                target,
                len(mask),
                before,
                after,
            )
            return module.latent.n_dimensions
        return target

    def state_dict(self) -> dict:
        return {"full_epochs": self.full_epochs, "wide_epochs": self.wide_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.full_epochs = int(state.get("full_epochs", 0))
        self.wide_epochs = int(state.get("wide_epochs", 0))


def rebuild_data_parallel(trainer) -> None:
    """After a resize under DDP: wrap the module again, so that the gradient reducer holds today's parameters (its old
    buckets name the replaced heads and decoder layers, whose gradients would never arrive). What Lightning's
    `DDPStrategy.configure_ddp` does at setup; the new wrapper starts from rank 0's weights, which every rank shares."""
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    if isinstance(strategy.model, DistributedDataParallel):
        strategy.model = strategy.lightning_module
        strategy.configure_ddp()


class RecordProgress(Callback):
    """progress.json after every epoch (once its checkpoints are written), and one log line per epoch."""

    def __init__(self, out: Path, epochs: int) -> None:
        self.out, self.epochs = out, epochs

    def on_train_epoch_end(self, trainer, pl_module):
        # after this epoch's validation and with this epoch's training means (at validation's end they are the last epoch's)
        shown = {"train_elbo", "train_kl", "val_elbo", "val_kl", "kl_weight"} | {
            class_error_key(name) for name in pl_module.model.names
        }
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k in shown}
        if trainer.is_global_zero:
            log.info(
                "epoch %d: %s", trainer.current_epoch + 1, ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items()))
            )
            write_progress(self.out, trainer.current_epoch + 1, self.epochs, finished=False)


def write_progress(out: Path, done: int, epochs: int, finished: bool, stopped: str | None = None) -> None:
    if not is_rank_zero():
        return
    write_json(out / PROGRESS_FILE, {"epochs_done": done, "epochs": epochs, "finished": finished, "stopped": stopped})
