"""Typed configurations: `ModelConfig` (the network besides its modalities; one field per option that a latent
family or aggregator declares in its `Settings`), `DataOptions`, and `TrainConfig` (a training run: the model, its
`DataOptions` and its `infinimodal.options.TrainingOptions`, one field per option), saved as a run's config.json, and
`build_module`, the model they describe."""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, make_dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence, TypeVar, cast

from . import flagtypes
from .aggregators import AGGREGATORS, build_aggregator
from .data import BINARIZATIONS, BUILTIN
from .errors import InfinimodalError
from .latents import LATENT_FAMILIES, build_latent
from .likelihoods import LIKELIHOODS
from .modality import Modality
from .model import MultimodalModule
from .options import TrainingOptions
from .settings import Settings, field_default, merged_fields, setting

if TYPE_CHECKING:
    from typing_extensions import Self


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InfinimodalError(message)


#: The latent family and aggregator of `infinimodal train` without --latent / --aggregator (docs/results.md).
DEFAULT_LATENT = "gated"
DEFAULT_AGGREGATOR = "mopoe"


def component_settings() -> list[type[Settings]]:
    """Every latent family's and aggregator's settings class, registry order (each class once)."""
    return list(dict.fromkeys(settings for _, settings in named_component_settings()))


def named_component_settings() -> list[tuple[str, type[Settings]]]:
    """(registry name, settings class) of every latent family, then every aggregator."""
    return [(name, cls.Settings) for name, cls in LATENT_FAMILIES.items()] + [
        (name, cls.Settings) for name, cls in AGGREGATORS.items()
    ]


def check_options_apply(latent: str, aggregator: str, given: Sequence[str]) -> None:
    """One line naming each option in `given` that neither the chosen family nor the chosen aggregator declares, and
    whose components do: such a flag would be accepted and ignored (`--moe-samples 10` under MoPoE)."""
    from .settings import flag

    used = {f.name for cls in (LATENT_FAMILIES[latent].Settings, AGGREGATORS[aggregator].Settings) for f in fields(cls)}
    ignored = [name for name in given if name not in used]
    if ignored:
        owners = {
            name: [owner for owner, cls in named_component_settings() if name in {f.name for f in fields(cls)}]
            for name in ignored
        }
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
        out.append(
            (name, first.type if agreed else f"{first.type} | None", field(default=defaults[0] if agreed else None))
        )
    return out


class _ModelConfigMethods:
    """The behaviour of `ModelConfig`, whose fields are generated from the registered settings classes."""

    if TYPE_CHECKING:
        # The type checker's view of the fields `make_dataclass` adds below: the fixed ones typed, the options
        # generated from the registered settings classes (and `TrainConfig`'s) through __getattr__ / __setattr__
        # (declared for the checker only).
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
        latent: str
        aggregator: str
        hidden: list[int]

        def __init__(self, **values: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    def validate(self) -> None:
        _check(
            self.latent in LATENT_FAMILIES,
            f"unknown latent {self.latent!r}: choose one of {', '.join(LATENT_FAMILIES)}",
        )
        _check(
            self.aggregator in AGGREGATORS,
            f"unknown aggregator {self.aggregator!r}: choose one of {', '.join(AGGREGATORS)}",
        )
        try:
            _check(
                bool(self.hidden) and min(self.hidden) >= 1, f"--hidden needs positive layer sizes, got {self.hidden}"
            )
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
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """The configuration a saved record describes; an option the record predates takes the value the run
        trained with (the component's `absent_means`), not today's default."""
        values = dict(values)
        # a record without the name finds no component ("" names none)
        for component in (LATENT_FAMILIES.get(values.get("latent", "")), AGGREGATORS.get(values.get("aggregator", ""))):
            for name, source in component.Settings.absent_means.items() if component is not None else ():
                if name not in values and source in values:
                    values[name] = values[source]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


if TYPE_CHECKING:

    class ModelConfig(_ModelConfigMethods):
        pass

else:
    ModelConfig = make_dataclass(
        "ModelConfig",
        [
            ("latent", "str", field(default=DEFAULT_LATENT)),
            ("aggregator", "str", field(default=DEFAULT_AGGREGATOR)),
            *_option_fields(),
            ("hidden", "list[int]", field(default_factory=lambda: [500])),
        ],
        bases=(_ModelConfigMethods,),
        namespace={"__module__": __name__},
    )
ModelConfig.__doc__ = """Everything that defines the network besides the modalities: the latent family, the aggregator, the
hidden layers, and one field per option that a family or aggregator declares in its `Settings` (generated,
so a new family's options appear here, in config.json and on the command line without editing this file)."""


@dataclass
class DataOptions(Settings):
    """Which data a run trains on and how it is read."""

    owner = "data"

    data: str = setting(
        "mnist",
        lambda: (
            f"a built-in data set ({', '.join(BUILTIN)}: labels=F observes a label modality for a "
            "fraction F of the training rows), a .npz/.h5mu file, or subject-keyed tables: a folder of .csv/.tsv/.parquet files, one per "
            "modality, or name=FILE,name=FILE"
        ),
    )
    data_dir: str | None = setting(None, "directory with the MNIST IDX files (default: search)")
    id_column: str | None = setting(
        None, "tables (--data DIR): the column of subject IDs that joins them (default: each table's first column)"
    )
    covariates: list[str] = setting(
        [],
        "tables: columns every encoder and decoder is conditioned on, not modelled (age,sex,site: from a table "
        "named covariates or whichever table holds them; numbers standardised, text one-hot)",
        metavar="A,B,C",
        parse=flagtypes.names,
    )
    data_seed: int = setting(
        0, "seed of the data set's construction or split (polymnist, noisy-mnist, a data file's split)"
    )
    likelihoods: dict[str, str] = setting(
        {},
        lambda: (
            f"override a modality's likelihood ({', '.join(LIKELIHOODS)}, or gaussian:S / "
            "laplace:S with a fixed scale S; * = every modality)"
        ),
        flag="--likelihood",
        metavar="MODALITY=NAME",
        pairs=True,
        parse=flagtypes.likelihood_pair,
    )
    binarize: str = setting("dynamic", "mnist: training binarisation", choices=BINARIZATIONS)
    max_train: int | None = setting(
        None,
        "use only the first N training rows",
        check=lambda v: v is None or v >= 1,
        requirement="at least 1",
        parse=flagtypes.positive_int,
    )
    standardize: bool = setting(
        True,
        "data files: keep Gaussian / Laplace modalities in their own units (default: standardise each "
        "feature on the training rows)",
        negative="--no-standardize",
    )


#: The option classes of a training run besides the model's: their fields are `TrainConfig`'s and `train`'s flags.
RUN_OPTIONS: tuple[type[Settings], ...] = (DataOptions, TrainingOptions)


_Options = TypeVar("_Options", bound=Settings)


class _TrainConfigMethods:
    """The behaviour of `TrainConfig`, whose fields are the model's and those of `RUN_OPTIONS`."""

    def validate(self) -> None:
        # self is a TrainConfig, whose bases include ModelConfig (the checker sees only this mixin)
        ModelConfig.validate(cast(ModelConfig, self))
        for options in RUN_OPTIONS:
            self.options(options).validate()

    def options(self, options: type[_Options]) -> _Options:
        """This run's values of one option class (`TrainingOptions`, `DataOptions`)."""
        return options(**{f.name: getattr(self, f.name) for f in fields(options)})

    def training_options(self) -> TrainingOptions:
        return self.options(TrainingOptions)


if TYPE_CHECKING:
    # the run options' fields typed as declared (the generated component options stay ModelConfig's Any)
    class TrainConfig(_TrainConfigMethods, ModelConfig, DataOptions, TrainingOptions):
        def __init__(self, **values: Any) -> None: ...

else:
    TrainConfig = make_dataclass(
        "TrainConfig",
        [
            (f.name, f.type, field(default=f.default, default_factory=f.default_factory, metadata=f.metadata))
            for options in RUN_OPTIONS
            for f in fields(options)
        ],
        bases=(_TrainConfigMethods, ModelConfig),
        namespace={"__module__": __name__},
    )
TrainConfig.__doc__ = """A training run: the model (`ModelConfig`), its data (`DataOptions`) and its training (`TrainingOptions`),
one field per option; saved as a run's config.json."""


def build_module(modalities: Sequence[Modality], config: ModelConfig, covariates: int = 0) -> MultimodalModule:
    """The network `config` describes for these modalities, conditioned on `covariates` values per row (0: none)."""
    latent = build_latent(config.latent, **config.latent_settings())
    aggregator = build_aggregator(config.aggregator, **config.aggregator_settings())
    return MultimodalModule(modalities, latent, aggregator, hidden=config.hidden, covariates=covariates)
