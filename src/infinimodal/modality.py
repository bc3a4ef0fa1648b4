"""What a modality is: a name, the shape of one observation, a likelihood, and optionally its own networks."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from torch import nn

from .columns import TABLE_LIKELIHOOD, Column, feature_names
from .likelihoods import Likelihood, LikelihoodSpec, likelihood_class
from .tabular import TableLikelihood


@dataclass
class Modality:
    """One kind of measurement of the subjects.

    Args:
        name: the modality's name (a table's name, "image", "label", ...).
        shape: of one observation, e.g. (784,) for a flat image, (3, 28, 28) for an RGB image (the default networks are
            then a small CNN), (20,) for 20 tabular features, (C,) one-hot for a categorical.
        likelihood: one of `infinimodal.likelihoods.LIKELIHOODS`, or gaussian:S / laplace:S for a fixed scale S.
        classes: for a categorical modality, the value each one-hot position stands for (the codes or names a data file
            used; None: 0..C-1), so that predictions come back as the user's values.
        columns: for a table modality (likelihood "table"), its columns, each with its own likelihood
            (`infinimodal.columns`); the shape is then the sum of their widths.
        encoder: optional module mapping a batch [n, *shape] to features [n, F] (F is found by a dry run).
        decoder: optional module mapping the latent code [n, d] to likelihood parameters with n_params * prod(shape)
            values per row (any shape that reshapes to [n, n_params, *shape]).

    Raises:
        ValueError: a name, shape, likelihood, class list or column list that does not describe a modality, naming it.
    """

    name: str
    shape: tuple[int, ...]
    likelihood: str = "gaussian"
    classes: tuple | None = None
    columns: tuple[Column, ...] | None = None
    encoder: nn.Module | None = field(default=None, repr=False, compare=False)
    decoder: nn.Module | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"modality names must be non-empty letters, digits, '-' or '_', got {self.name!r}")
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"modality {self.name!r}: shape must be positive sizes, got {self.shape}")
        if self.columns is not None or self.likelihood == TABLE_LIKELIHOOD:
            self._check_columns()
            return
        try:
            cls = likelihood_class(self.likelihood)
        except ValueError as exc:
            raise ValueError(f"modality {self.name!r}: {exc}") from None
        if self.classes is not None:
            self.classes = tuple(self.classes)
            if not cls.categorical or self.shape != (len(self.classes),) or len(set(self.classes)) != len(self.classes):
                raise ValueError(
                    f"modality {self.name!r}: classes {list(self.classes)} must be distinct, one per position of a categorical modality of shape (C,)"
                )

    def _check_columns(self) -> None:
        if not self.columns or self.likelihood != TABLE_LIKELIHOOD:
            raise ValueError(
                f"modality {self.name!r}: a table modality has likelihood {TABLE_LIKELIHOOD!r} and at least one column"
            )
        self.columns = tuple(self.columns)
        width = sum(column.width for column in self.columns)
        if self.shape != (width,):
            raise ValueError(
                f"modality {self.name!r}: its columns take {width} positions, but its shape is {self.shape}"
            )
        names = [column.name for column in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"modality {self.name!r}: column names must be distinct, got {names}")
        if self.classes is not None:
            raise ValueError(f"modality {self.name!r}: a table modality's classes belong to its categorical columns")

    def observation_model(self) -> Likelihood:
        """A new likelihood module for this modality.

        Returns:
            Its columns' likelihood (`infinimodal.tabular.TableLikelihood`) for a table, else the one its likelihood
            names.
        """
        return TableLikelihood(self.columns) if self.columns is not None else self.law.build(self.shape)

    @property
    def law(self) -> LikelihoodSpec:
        """The likelihood, parsed (`LikelihoodSpec`); a table modality's is the family "table" (its columns have theirs)."""
        return LikelihoodSpec(TABLE_LIKELIHOOD) if self.is_table else LikelihoodSpec.parse(self.likelihood)

    @property
    def table_columns(self) -> tuple[Column, ...]:
        """A table modality's columns (`columns`: a table modality has them)."""
        if self.columns is None:
            raise ValueError(f"modality {self.name!r} is not a table: it has no columns")
        return self.columns

    @property
    def is_table(self) -> bool:
        """Columns each with their own likelihood, empty cells allowed (`infinimodal.columns`)."""
        return self.columns is not None

    @property
    def categorical(self) -> bool:
        """One categorical variable per row (one-hot rows): predictions are classes."""
        return not self.is_table and likelihood_class(self.likelihood).categorical

    @property
    def feature_names(self) -> list[str] | None:
        """A name per position of a row, where the data named them (table columns)."""
        return feature_names(self.columns) if self.is_table else None

    @property
    def class_values(self) -> tuple:
        """What each one-hot position of a categorical modality stands for (0..C-1 unless the data named them)."""
        return self.classes if self.classes is not None else tuple(range(self.shape[0]))

    @property
    def is_image(self) -> bool:
        """(C, H, W) observations get convolutional default networks."""
        return len(self.shape) == 3

    @property
    def custom(self) -> bool:
        return self.encoder is not None or self.decoder is not None

    def signature(self) -> tuple:
        """What data must agree on with a model (not the networks).

        Returns:
            (name, shape, likelihood, columns).
        """
        return self.name, self.shape, self.likelihood, self.columns

    def with_copied_networks(self) -> "Modality":
        """The same modality with deep copies of its custom encoder and decoder.

        Returns:
            A new `Modality` (None networks stay None).
        """
        return dataclasses.replace(self, encoder=copy.deepcopy(self.encoder), decoder=copy.deepcopy(self.decoder))

    def to_dict(self) -> dict:
        """The modality as config.json records it (its networks only as `custom_networks`).

        Returns:
            A JSON-ready dict.
        """
        record = {
            "name": self.name,
            "shape": list(self.shape),
            "likelihood": self.likelihood,
            "custom_networks": self.custom,
        }
        if self.classes is not None:
            record["classes"] = [
                c.item() if hasattr(c, "item") else c for c in self.classes
            ]  # JSON: plain numbers / strings
        if self.columns is not None:
            record["columns"] = [column.to_dict() for column in self.columns]
        return record

    @classmethod
    def from_dict(cls, values: dict) -> "Modality":
        """The modality a config.json record describes (`to_dict`'s inverse, without custom networks).

        Args:
            values: the record.

        Returns:
            The `Modality`.
        """
        classes, columns = values.get("classes"), values.get("columns")
        return cls(
            values["name"],
            tuple(values["shape"]),
            values["likelihood"],
            classes=tuple(classes) if classes is not None else None,
            columns=tuple(Column.from_dict(c) for c in columns) if columns is not None else None,
        )
