"""Typed configurations: `ModelConfig` (the network besides its modalities; one field per option that a latent
family or aggregator declares in its `Settings`) and `TrainConfig` (a training run: model, data, optimisation),
saved as a run's config.json, and `build_module`, the model they describe."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Sequence

from .aggregators import AGGREGATORS, build_aggregator
from .data import BINARIZATIONS
from .errors import InfinimodalError
from .latents import LATENT_FAMILIES, build_latent
from .modality import Modality
from .model import MultimodalModule
from .semisupervised import DEFAULT_SMOOTHNESS_RADIUS
from .settings import Settings, field_default, merged_fields

PRECISIONS = ("32", "bf16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp")
DEFAULT_GRAD_CLIP: float | None = 10.0  # relative (training.RelativeClip): cut at 10x the running gradient norm


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InfinimodalError(message)


def check_oversample(oversample: dict[str, int], devices: int) -> None:
    """`--oversample`: one modality, a positive whole number of rows, one device (`training.OversampledShuffle`)."""
    _check(len(oversample) <= 1, f"--oversample takes one modality, got {', '.join(sorted(oversample))}")
    for name, rows in oversample.items():
        _check(isinstance(rows, int) and not isinstance(rows, bool) and rows >= 1, f"--oversample {name}={rows!r}: the rows to add must be positive whole numbers")
    _check(not oversample or devices == 1, "--oversample trains on one device (its batches are not split over processes)")


#: The latent family and aggregator of `infinimodal train` without --latent / --aggregator (docs/results.md).
DEFAULT_LATENT = "gated"
DEFAULT_AGGREGATOR = "mopoe"


def component_settings() -> list[type[Settings]]:
    """Every latent family's and aggregator's settings class, registry order (each class once)."""
    return list(dict.fromkeys(settings for _, settings in named_component_settings()))


def named_component_settings() -> list[tuple[str, type[Settings]]]:
    """(registry name, settings class) of every latent family, then every aggregator."""
    return [(name, cls.Settings) for name, cls in LATENT_FAMILIES.items()] + [(name, cls.Settings) for name, cls in AGGREGATORS.items()]


def check_options_apply(latent: str, aggregator: str, given: Sequence[str]) -> None:
    """One line naming each option in `given` that neither the chosen family nor the chosen aggregator declares, and
    whose components do: such a flag would be accepted and ignored (`--moe-samples 10` under MoPoE)."""
    from .settings import flag

    used = {f.name for cls in (LATENT_FAMILIES[latent].Settings, AGGREGATORS[aggregator].Settings) for f in fields(cls)}
    ignored = [name for name in given if name not in used]
    if ignored:
        owners = {name: [owner for owner, cls in named_component_settings() if name in {f.name for f in fields(cls)}] for name in ignored}
        raise InfinimodalError(
            "; ".join(f"{flag(name)} is an option of {', '.join(owners[name])}" for name in ignored)
            + f", not of --latent {latent} or --aggregator {aggregator}: it would be ignored; drop it or choose the component it belongs to"
        )


def _option_fields() -> list[tuple]:
    """One ModelConfig field per option of any family or aggregator (a name shared by several is one field).
    Where the components that share a name disagree on its default (alpha), the field defaults to None:
    the chosen component's own default, which `resolve` fills in."""
    out = []
    for name, entries in merged_fields(component_settings()).items():
        defaults = [field_default(f) for _, f in entries]
        first = entries[0][1]
        agreed = all(d == defaults[0] for d in defaults)
        out.append((name, first.type if agreed else f"{first.type} | None", field(default=defaults[0] if agreed else None)))
    return out


class _ModelConfigMethods:
    """The behaviour of `ModelConfig`, whose fields are generated from the registered settings classes."""

    def validate(self) -> None:
        _check(self.latent in LATENT_FAMILIES, f"unknown latent {self.latent!r}: choose one of {', '.join(LATENT_FAMILIES)}")
        _check(self.aggregator in AGGREGATORS, f"unknown aggregator {self.aggregator!r}: choose one of {', '.join(AGGREGATORS)}")
        try:
            _check(bool(self.hidden) and min(self.hidden) >= 1, f"--hidden needs positive layer sizes, got {self.hidden}")
        except TypeError:
            raise InfinimodalError(f"--hidden needs a list of positive layer sizes, got {self.hidden!r}") from None
        self.resolve()

    def resolve(self) -> None:
        """Fill the chosen family's and aggregator's unset options with their defaults, and check them."""
        for settings_class in (LATENT_FAMILIES[self.latent].Settings, AGGREGATORS[self.aggregator].Settings):
            resolved = settings_class.from_values({f.name: getattr(self, f.name) for f in fields(settings_class)})
            for f in fields(settings_class):
                setattr(self, f.name, getattr(resolved, f.name))

    def latent_settings(self) -> dict:
        """The chosen family's options (`build_latent` validates them)."""
        return {f.name: getattr(self, f.name) for f in fields(LATENT_FAMILIES[self.latent].Settings)}

    def aggregator_settings(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(AGGREGATORS[self.aggregator].Settings)}

    def model_fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(ModelConfig)}

    @classmethod
    def from_dict(cls, values: dict):
        """The configuration a saved record describes; an option the record predates takes the value the run
        trained with (the component's `absent_means`), not today's default."""
        values = dict(values)
        for component in (LATENT_FAMILIES.get(values.get("latent")), AGGREGATORS.get(values.get("aggregator"))):
            for name, source in (component.Settings.absent_means.items() if component is not None else ()):
                if name not in values and source in values:
                    values[name] = values[source]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


ModelConfig = make_dataclass(
    "ModelConfig",
    [("latent", "str", field(default=DEFAULT_LATENT)), ("aggregator", "str", field(default=DEFAULT_AGGREGATOR)), *_option_fields(),
     ("hidden", "list[int]", field(default_factory=lambda: [500]))],
    bases=(_ModelConfigMethods,),
    namespace={"__module__": __name__},
)
ModelConfig.__doc__ = """Everything that defines the network besides the modalities: the latent family, the aggregator, the
hidden layers, and one field per option that a family or aggregator declares in its `Settings` (generated,
so a new family's options appear here, in config.json and on the command line without editing this file)."""


@dataclass
class TrainConfig(ModelConfig):
    """A training run: the model, the data and the optimisation."""

    data: str = "mnist"
    data_dir: str | None = None
    likelihoods: dict[str, str] = field(default_factory=dict)  # data files: likelihood per modality
    weights: dict[str, float] = field(default_factory=dict)  # training objective: weight of a modality's log-likelihood (default 1)
    predict: dict[str, float] = field(default_factory=dict)  # training objective: alpha of a modality's prediction term (none by default)
    infomax: dict[str, float] = field(default_factory=dict)  # training objective: beta of a categorical modality's information term (none)
    vat: dict[str, float] = field(default_factory=dict)  # training objective: gamma of a categorical modality's smoothness term (none)
    vat_radius: float = DEFAULT_SMOOTHNESS_RADIUS  # the smoothness term's radius, a fraction of each perturbed modality's RMS row norm
    oversample: dict[str, int] = field(default_factory=dict)  # training batches: rows where a modality is observed added to each (none)
    data_seed: int = 0  # construction of polymnist / noisy-mnist, split of a data file
    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    kl_warmup: float = 10.0  # epochs over which the KL weight ramps from 0 to kl_weight
    kl_weight: float = 1.0  # the KL weight after warm-up (beta of the beta-VAE; 1 trains the ELBO itself)
    binarize: str = "dynamic"  # mnist
    seed: int = 0
    max_train: int | None = None
    precision: str = "32"
    accelerator: str = "auto"  # Lightning's: auto (a GPU when one is visible), cpu, gpu, mps
    grad_clip: float | None = DEFAULT_GRAD_CLIP  # clip the gradient norm at this multiple of its running average (None: never)
    devices: int = 1  # processes (CPU) or accelerators; more than one trains with DDP
    strategy: str = "auto"  # Lightning's: auto, or ddp
    standardize: bool = True  # data files: Gaussian / Laplace modalities per feature on the training rows (data.standardize)
    order_dimensions: bool = True  # families with ordered dimensions: move used dimensions ahead of unused ones (training.OrderDimensions)

    def validate(self) -> None:
        super().validate()
        _check(self.binarize in BINARIZATIONS, f"unknown binarisation {self.binarize!r}: choose {' or '.join(BINARIZATIONS)}")
        _check(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        _check(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}")
        _check(self.kl_warmup >= 0, f"--kl-warmup must be >= 0 epochs, got {self.kl_warmup}")
        _check(self.kl_weight > 0 and math.isfinite(self.kl_weight), f"--kl-weight must be a positive number, got {self.kl_weight}")
        for flag, values in (("--weight", self.weights), ("--predict", self.predict), ("--infomax", self.infomax), ("--vat", self.vat)):
            for name, weight in values.items():
                _check(isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0 and math.isfinite(weight),
                       f"{flag} {name}={weight!r}: a weight must be a positive number")
        _check(isinstance(self.vat_radius, (int, float)) and self.vat_radius > 0 and math.isfinite(self.vat_radius),
               f"--vat-radius must be a positive number, got {self.vat_radius!r}")
        _check(bool(self.vat) or self.vat_radius == DEFAULT_SMOOTHNESS_RADIUS, f"--vat-radius {self.vat_radius:g} sets the radius of --vat's term: give --vat too")
        check_oversample(self.oversample, self.devices)
        _check(self.max_train is None or self.max_train >= 1, f"--max-train must be at least 1, got {self.max_train}")
        _check(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision}")
        _check(self.grad_clip is None or (self.grad_clip > 0 and math.isfinite(self.grad_clip)), f"--grad-clip must be a positive number, got {self.grad_clip}")
        _check(self.devices >= 1, f"--devices must be at least 1, got {self.devices}")
        _check(self.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy}")
        _check(self.batch_size % self.devices == 0, f"--batch-size {self.batch_size} must split evenly over --devices {self.devices} (it is the batch of all processes together)")
        _check(self.accelerator in ACCELERATORS, f"--accelerator must be one of {', '.join(ACCELERATORS)}, got {self.accelerator}")


def build_module(modalities: Sequence[Modality], config: ModelConfig) -> MultimodalModule:
    latent = build_latent(config.latent, **config.latent_settings())
    aggregator = build_aggregator(config.aggregator, **config.aggregator_settings())
    return MultimodalModule(modalities, latent, aggregator, hidden=config.hidden)
