"""The training plan: Adam on the model's objective with the KL warm-up, validation's ELBO and class errors, the
relative gradient clip, and the one-line reports of a diverging step."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import cast

import lightning as L
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..errors import InfinimodalError
from ..latents.beta import float32_beta_kl
from ..adam_state import correct_young_entries
from ..model import MultimodalModule
from ..options import TrainingOptions
from ..runfiles import SELECTION_METRIC, STATE_PREFIX, class_error_key
from ..semisupervised import TrainingObjective
from .data import APPENDED_ROWS


#: train_loss (the progress bar's figure) is logged every this many steps (a divisor of the 50 at which the CSV logger writes).
LOSS_LOG_STEPS = 10


class TrainingPlan(L.LightningModule):
    """Adam on the aggregator's objective, with the KL weight ramped linearly from 0 to `kl_weight` (beta of the
    beta-VAE; 1 is the ELBO) over `kl_warmup` epochs. Validation always reports the ELBO (weight 1), and for each
    categorical modality the error of imputing it from the others on the validation rows where it is observed
    (`val_<modality>_error`: a label's error on held-out labelled rows, to choose settings on without the test set)."""

    def __init__(self, model: MultimodalModule, options: TrainingOptions | None = None) -> None:
        super().__init__()
        options = options or TrainingOptions()
        self.model = model
        for (
            likelihood
        ) in model.likelihoods.values():  # tables: the cells hidden from the encoder in training (eval hides none)
            if hasattr(likelihood, "cell_dropout"):
                setattr(likelihood, "cell_dropout", options.cell_dropout)  # a table's float (the checker sees a Module)
        self.objective = TrainingObjective.from_options(model, options)  # the ELBO with the options' weights and terms
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
        with training_step_context():
            out = self.objective(self.model, batch["data"], batch["mask"], kl_weight=weight, warm_up=progress)
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
        self.log(
            "kl_weight", self.epoch_weight / self.epoch_rows, on_step=False, on_epoch=True, batch_size=1, sync_dist=True
        )

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
        correct_young_entries(
            getattr(optimizer, "optimizer", optimizer)
        )  # dimensions a resize added (--truncation auto)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Stop on a non-finite loss or gradient, naming it; then clip. One host sync a step: the loss and the
        gradient norm come back together (a NaN loss is reported as the cause of its NaN gradients)."""
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        norm = (
            torch.nn.utils.get_total_norm([cast(Tensor, p.grad) for p in parameters]) if parameters else torch.zeros(())
        )
        loss, norm_value = torch.stack(
            [self.last_output.loss.detach().float(), norm.float().to(self.last_output.loss.device)]
        ).tolist()
        if not math.isfinite(loss):
            raise InfinimodalError(
                f"training diverged: loss is {loss} at epoch {self.current_epoch + 1}, step {self.global_step} "
                f"({non_finite_terms(self.last_output, self.model, self.last_batch)}); the best checkpoint so far is kept: "
                "try a smaller --lr or a longer --kl-warmup"
            )
        if not math.isfinite(norm_value):
            bad = [
                name
                for name, p in self.model.named_parameters()
                if p.grad is not None and not bool(torch.isfinite(p.grad).all())
            ]
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
        self.model.match_dimensions(
            {k.removeprefix(STATE_PREFIX): v for k, v in checkpoint.get("state_dict", {}).items()}
        )
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


@contextmanager
def training_step_context():
    """What a training step's objective runs in: argument checks off (`arguments_unchecked`) and the sticks' Beta KL in
    float32 where that is exact enough (`latents.beta.float32_beta_kl`). The training plan and the benchmarks that time
    a step (benchmarks/throughput.py, scaling.py, semisupervised_cost.py, step_context.py) enter this one context, so
    that they time the step training runs."""
    with arguments_unchecked(), float32_beta_kl():
        yield


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
    return (
        f"modality {', '.join(repr(n) for n in names)}"
        if names
        else "the modalities (not reproduced on a second sample)"
    )
