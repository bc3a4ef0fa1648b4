"""The options of training, each declared once: `TrainingOptions`, a `Settings` dataclass whose fields carry their
default, help, check and flag. From it, and nothing else:

- `infinimodal train` gets one flag per field (`infinimodal.parser`);
- `TrainConfig` gets one field per option, so config.json records them (`infinimodal.config`);
- `MultimodalVAE.fit(data, **options)` accepts them as keywords and checks them here;
- the training plan, data module and callbacks read them from the one `TrainingOptions` value (`infinimodal.train`).

A new option of training is one field here (and the code that reads it); nothing forwards it by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from . import flagtypes
from .errors import InfinimodalError
from .settings import Settings, setting

PRECISIONS = ("32", "bf16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp")
#: The gradient-norm cut, relative (`train.plan.RelativeClip`): 10x the running gradient norm.
DEFAULT_GRAD_CLIP: float | None = 10.0
#: The radius of the smoothness term's perturbation (`--vat`), as a fraction of each perturbed modality's root-mean-square
#: row norm in the batch (MNIST's binarised digits have an RMS norm of about 10: an L2 radius of about 2.5, near the
#: radius 2 of Miyato et al.'s MNIST runs). Chosen by measurement against 0.1 and 0.5 (docs/results.md section 9).
DEFAULT_SMOOTHNESS_RADIUS = 0.25
#: Tables: the share of filled cells hidden from the encoder in training (`--cell-dropout`, `infinimodal.tabular`).
CELL_DROPOUT = 0.15
#: The objective's per-modality weights: (option, flag) of each {modality: positive number} option.
WEIGHT_OPTIONS = (("weights", "--weight"), ("predict", "--predict"), ("infomax", "--infomax"), ("vat", "--vat"))


def _positive(value) -> bool:
    return value > 0 and math.isfinite(value)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InfinimodalError(message)


def check_oversample(oversample: dict[str, int], devices: int) -> None:
    """`--oversample`: one modality, a positive whole number of rows, one device (`train.data.OversampledShuffle`)."""
    _check(len(oversample) <= 1, f"--oversample takes one modality, got {', '.join(sorted(oversample))}")
    for name, rows in oversample.items():
        _check(
            isinstance(rows, int) and not isinstance(rows, bool) and rows >= 1,
            f"--oversample {name}={rows!r}: the rows to add must be positive whole numbers",
        )
    _check(
        not oversample or devices == 1, "--oversample trains on one device (its batches are not split over processes)"
    )


@dataclass
class TrainingOptions(Settings):
    """How a model is trained: the optimisation, the objective's terms and weights, and where it runs."""

    owner = "training"

    epochs: int = setting(
        50, "training epochs", check=lambda v: v >= 1, requirement="at least 1", parse=flagtypes.positive_int
    )
    batch_size: int = setting(
        100,
        "rows per step, all processes together",
        check=lambda v: v >= 1,
        requirement="at least 1",
        parse=flagtypes.positive_int,
    )
    lr: float = setting(1e-3, "Adam's learning rate", check=_positive, requirement="a positive number")
    kl_warmup: float = setting(
        10.0,
        "epochs of linear KL warm-up (the KL weight ramps from 0 to --kl-weight)",
        check=lambda v: v >= 0,
        requirement=">= 0 epochs",
    )
    kl_weight: float = setting(
        1.0, "KL weight after warm-up (beta-VAE's beta; 1 = ELBO)", check=_positive, requirement="a positive number"
    )
    seed: int = setting(0, "seed of the initial weights, the row order and every draw of training")
    precision: str = setting("32", "Lightning's precision", choices=PRECISIONS)
    accelerator: str = setting(
        "auto", "Lightning's accelerator: auto takes a GPU when one is visible", choices=ACCELERATORS
    )
    devices: int = setting(
        1,
        "processes (CPU) or accelerators to train on; more than one uses DDP (--strategy ddp)",
        check=lambda v: v >= 1,
        requirement="at least 1",
        parse=flagtypes.positive_int,
    )
    strategy: str = setting("auto", "Lightning's strategy for --devices > 1", choices=STRATEGIES)
    grad_clip: float | None = setting(
        DEFAULT_GRAD_CLIP,
        f"clip the gradient norm at this multiple of its running average, or 'none' (default {DEFAULT_GRAD_CLIP})",
        check=lambda v: v is None or _positive(v),
        requirement="a positive number",
        parse=flagtypes.number_or_none,
    )
    weights: dict[str, float] = setting(
        {},
        "weight of a modality's log-likelihood in the training objective (default 1; e.g. label=50 "
        "for a label observed on few rows); evaluation always scores the unweighted ELBO",
        flag="--weight",
        metavar="MODALITY=W",
        pairs=True,
        parse=flagtypes.weight_pair,
    )
    predict: dict[str, float] = setting(
        {},
        "semi-supervised term: alpha times the log-likelihood of this modality given the others, on "
        "the rows where it is observed (M2's classification term; e.g. label=10)",
        metavar="MODALITY=ALPHA",
        pairs=True,
        parse=flagtypes.weight_pair,
    )
    infomax: dict[str, float] = setting(
        {},
        "semi-supervised term for a categorical modality: beta times the mutual information between "
        "a row and its imputed class, on the rows where the modality is missing (e.g. label=10 with "
        "--predict label=100)",
        metavar="MODALITY=BETA",
        pairs=True,
        parse=flagtypes.weight_pair,
    )
    vat: dict[str, float] = setting(
        {},
        "semi-supervised term for a categorical modality: gamma times the change of its imputed class "
        "under the most sensitive small perturbation of the other modalities (virtual adversarial "
        "training; e.g. label=1)",
        metavar="MODALITY=GAMMA",
        pairs=True,
        parse=flagtypes.weight_pair,
    )
    vat_radius: float = setting(
        DEFAULT_SMOOTHNESS_RADIUS,
        "the --vat perturbation's radius, a fraction of each perturbed modality's root-mean-square row norm",
        check=_positive,
        requirement="a positive number",
    )
    oversample: dict[str, int] = setting(
        {},
        "add to each training batch ROWS rows where this modality is observed (e.g. label=20 for "
        "labels on 1 %% of the rows: the labelled rows are then seen every few steps, not once an "
        "epoch)",
        metavar="MODALITY=ROWS",
        pairs=True,
        parse=flagtypes.rows_pair,
    )
    order_dimensions: bool = setting(
        True,
        "gated latent: leave a used dimension after an unused one where training put it (default: "
        "move it forward at the next epoch's start when that does not lower the ELBO)",
        negative="--no-order-dimensions",
    )
    cell_dropout: float = setting(
        CELL_DROPOUT,
        "tables: the share of filled cells hidden from the encoder in training (the likelihood "
        "still scores them), so that empty cells are in its experience (0: none; docs/results.md section 13)",
        check=lambda v: 0 <= v < 1,
        requirement="in [0, 1)",
    )

    def validate(self) -> None:
        """Each field's own check (`Settings.validate`), then what concerns several: the objective's weights, --vat-radius
        without --vat, --oversample, and the batch over the devices."""
        super().validate()
        for name, flag in WEIGHT_OPTIONS:
            for modality, weight in getattr(self, name).items():
                _check(
                    isinstance(weight, (int, float)) and not isinstance(weight, bool) and _positive(weight),
                    f"{flag} {modality}={weight!r}: a weight must be a positive number",
                )
        _check(
            bool(self.vat) or self.vat_radius == DEFAULT_SMOOTHNESS_RADIUS,
            f"--vat-radius {self.vat_radius:g} sets the radius of --vat's term: give --vat too",
        )
        check_oversample(self.oversample, self.devices)
        _check(
            self.batch_size % self.devices == 0,
            f"--batch-size {self.batch_size} must split evenly over --devices {self.devices} "
            "(it is the batch of all processes together)",
        )

    @classmethod
    def from_keywords(cls, values: dict) -> "TrainingOptions":
        """The options `fit(**values)` names: an unknown name is a TypeError, as for any function's keywords; None for
        one of the {modality: value} options means none, as its default."""
        declared = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise TypeError(
                f"unexpected keyword argument(s) {', '.join(unknown)}: not options of training "
                f"(infinimodal.options.TrainingOptions: {', '.join(declared)})"
            )
        return cls(**{k: v for k, v in values.items() if not (v is None and declared[k].metadata.get("pairs"))})

    @property
    def process_batch_size(self) -> int:
        """The rows each process takes a step (`batch_size` is that of all processes together)."""
        return self.batch_size // self.devices

    @property
    def process_strategy(self) -> str:
        """Lightning's strategy: the one chosen under several devices; auto on one."""
        return self.strategy if self.devices > 1 else "auto"
