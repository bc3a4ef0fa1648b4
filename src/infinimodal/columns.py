"""The columns of a table modality: what each column is, declared once and saved with the model.

A table modality (`--data DIR` of CSV / TSV / Parquet tables, `infinimodal.data.tables`) keeps every column of its
file, each with its own observation model, in one array row: one position per numeric column, C one-hot positions per
categorical column. An empty cell is NaN in each of its column's positions (the model masks it; it never reaches an
encoder as a value).

| family | column | position holds | likelihood |
|---|---|---|---|
| gaussian | real numbers | the value (standardised on the training rows) | Normal, scale learned per column |
| bernoulli | 0 / 1 | the value | Bernoulli |
| poisson | counts with variance near their mean | the count | Poisson |
| negative_binomial | over-dispersed counts | the count | negative binomial, dispersion learned per column |
| beta_binomial | a bounded integer score low..high (MMSE 0-30) | value - low | beta-binomial on high - low trials |
| categorical | text (sex, site, diagnosis) | one-hot over the column's classes | categorical |

To add a family: a name here and its terms in `infinimodal.tabular`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Column families, in the order `infinimodal.tabular` lays their terms out.
COLUMN_FAMILIES = ("gaussian", "bernoulli", "poisson", "negative_binomial", "beta_binomial", "categorical")
#: The likelihood name of a modality made of columns.
TABLE_LIKELIHOOD = "table"
#: The key of the covariates among a split's arrays and a batch's data ({modality: values, COVARIATES: [rows, K]}): a
#: conditional model's encoders and decoders read them (`MultimodalModule(covariates=K)`); they are never scored.
COVARIATES = "__covariates__"


@dataclass(frozen=True)
class Column:
    """One column of a table modality: its name in the user's file, its family, and what the family needs (a
    categorical column's classes, in one-hot order; a bounded score's range low..high)."""

    name: str
    family: str
    classes: tuple[str, ...] | None = None
    low: int | None = None
    high: int | None = None

    def __post_init__(self) -> None:
        if self.family not in COLUMN_FAMILIES:
            raise ValueError(
                f"column {self.name!r}: unknown column likelihood {self.family!r}; choose one of {', '.join(COLUMN_FAMILIES)}"
            )
        if self.family == "categorical":
            if self.classes is None or len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
                raise ValueError(
                    f"column {self.name!r}: a categorical column needs at least 2 distinct classes, got {self.classes}"
                )
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.family == "beta_binomial" and not (
            self.low is not None and self.high is not None and self.high > self.low
        ):
            raise ValueError(
                f"column {self.name!r}: a bounded score needs a range low-high with high > low, got {self.low}-{self.high}"
            )

    @property
    def categories(self) -> tuple[str, ...]:
        """A categorical column's classes, in one-hot order (`classes`, which __post_init__ makes sure it has)."""
        if self.classes is None:
            raise ValueError(f"column {self.name!r} is not categorical: it has no classes")
        return self.classes

    @property
    def width(self) -> int:
        """Positions of the column in its modality's rows."""
        return len(self.categories) if self.family == "categorical" else 1

    @property
    def trials(self) -> int:
        """A bounded score's number of trials, high - low."""
        if self.low is None or self.high is None:
            raise ValueError(f"column {self.name!r} is not a bounded score: it has no range")
        return int(self.high - self.low)

    def describe(self) -> str:
        if self.family == "categorical":
            shown = ", ".join(self.categories[:6]) + (", ..." if len(self.categories) > 6 else "")
            return f"categorical ({len(self.categories)} classes: {shown})"
        if self.family == "beta_binomial":
            return f"beta_binomial on {self.low}..{self.high}"
        return self.family

    def to_dict(self) -> dict:
        record: dict = {"name": self.name, "family": self.family}
        if self.classes is not None:
            record["classes"] = list(self.classes)
        if self.family == "beta_binomial" and self.low is not None and self.high is not None:  # (__post_init__: both)
            record["low"], record["high"] = int(self.low), int(self.high)
        return record

    @classmethod
    def from_dict(cls, values: dict) -> "Column":
        classes = values.get("classes")
        return cls(
            values["name"],
            values["family"],
            tuple(classes) if classes is not None else None,
            values.get("low"),
            values.get("high"),
        )


def parse_column_likelihood(name: str, text: str) -> tuple[str, int | None, int | None]:
    """A `--likelihood MODALITY.COLUMN=...` value: (family, low, high); `beta_binomial:0-30` gives the score's range.
    ValueError saying what is allowed otherwise."""
    family, colon, argument = text.partition(":")
    if family not in COLUMN_FAMILIES:
        raise ValueError(
            f"column {name!r}: unknown column likelihood {text!r}; choose one of {', '.join(COLUMN_FAMILIES)} "
            "(beta_binomial:LOW-HIGH for a bounded score)"
        )
    if not colon:
        return family, None, None
    if family != "beta_binomial":
        raise ValueError(f"column {name!r}: likelihood {family!r} takes no argument, got {text!r}")
    low, dash, high = argument.partition("-")
    try:
        bounds = int(low), int(high)
    except ValueError:
        bounds = None
    if not dash or bounds is None or bounds[1] <= bounds[0]:
        raise ValueError(
            f"column {name!r}: write a bounded score's range as beta_binomial:LOW-HIGH with whole numbers, e.g. beta_binomial:0-30, got {text!r}"
        )
    return family, bounds[0], bounds[1]


def positions(columns: tuple[Column, ...] | list[Column]) -> list[tuple[int, int]]:
    """(first position, width) of each column in a row."""
    out, start = [], 0
    for column in columns:
        out.append((start, column.width))
        start += column.width
    return out


def feature_names(columns) -> list[str]:
    """A name per position: the column's name, `column=class` for each class of a categorical column."""
    names = []
    for column in columns:
        names += [f"{column.name}={c}" for c in column.classes] if column.family == "categorical" else [column.name]
    return names
