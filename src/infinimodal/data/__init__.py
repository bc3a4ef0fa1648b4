"""Data sets. Every loader returns a `MultimodalData` of plain arrays; `infinimodal.train` batches them.

`load_dataset(spec)` understands:

| spec | modalities |
|---|---|
| `mnist` | image: 784 binarised pixels (Bernoulli), the SB-VAE protocol |
| `mnist-rotated` | image: the same digits, each rotated by U(0, 360) degrees (MNIST+rot) |
| `polymnist:M` | m0..m{M-1}: RGB 3x28x28 (Laplace), M = 2..16 |
| `noisy-mnist` | view1 (rotated digit), view2 (same class, noisy): 1x28x28 (Laplace) |
| `synthetic[:k=v,...]` | x0..: tabular (Gaussian), known shared / private factors |
| `counts[:k=v,...]` | rna, protein (30 % missing): negative-binomial counts of the same cells around a known state (CITE-seq-shaped) |
| `cohort[:k=v,...]` | mri, pet (40 % missing), clinical, genetics (binary): a healthy reference and known atypical test subjects |
| `cohort-tables[:k=v,...]` | the same kind of cohort as the folder of CSV tables a study holds (written to ./cohort-tables), read as tables |
| `PATH.npz`, `PATH.h5mu` | the file's arrays (see `infinimodal.data.files`) |
| `DIR`, `name=FILE,...` | subject-keyed tables (.csv, .tsv, .parquet), one per modality (see `infinimodal.data.tables`) |

Every built-in data set takes `labels=F` (`mnist:labels=0.1`, `polymnist:3,labels=0.05`,
`synthetic:shared=3,labels=0.1`): a categorical modality `label` observed for a stratified fraction F of the
training rows and for no test row (`infinimodal.data.labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from ..likelihoods import likelihood_class
from ..modality import Modality
from .files import SUFFIXES, file_dataset, read_table
from .labels import LABEL_MODALITY, add_label_modality, split_label_option
from .cohort import cohort_dataset
from .cohort_tables import cohort_tables
from .images import noisy_mnist_dataset, polymnist_dataset, rotated_mnist_dataset
from .mnist import MNIST, BINARIZATIONS, DigitSplit, FallbackWarning, load_mnist, mnist_dataset, read_idx
from .multimodal import MultimodalData, Split, binarize_fixed
from .standardize import standardize_data
from .counts import counts_dataset
from .factors import factors_dataset
from .synthetic import synthetic_dataset
from .tables import is_table_spec, tables_dataset


@dataclass(frozen=True)
class Context:
    """What a built-in data set may need besides its own options."""

    data_dir: str | None
    binarize: str
    seed: int
    progress: bool


@dataclass(frozen=True)
class Builtin:
    """A built-in data set: how `--data` writes it, and how it is made from its options (the text after the colon,
    labels=F removed)."""

    synopsis: str
    make: Callable[[str, str, Context], MultimodalData]
    takes_options: bool = False


def _polymnist(options: str, spec: str, context: Context) -> MultimodalData:
    try:
        n_modalities = int(options)
    except ValueError:
        raise DataError(
            f"{spec}: write polymnist:M with the number of modalities M, e.g. polymnist:5 (or polymnist:5,labels=0.1)"
        ) from None
    return polymnist_dataset(n_modalities, context.data_dir, seed=context.seed, progress=context.progress)


#: The built-in data sets by name: one line each.
BUILTINS: dict[str, Builtin] = {
    "mnist": Builtin("mnist", lambda options, spec, c: mnist_dataset(c.data_dir, c.binarize)),
    "mnist-rotated": Builtin("mnist-rotated", lambda options, spec, c: rotated_mnist_dataset(c.data_dir, c.binarize)),
    "polymnist": Builtin("polymnist:M", _polymnist, takes_options=True),
    "noisy-mnist": Builtin(
        "noisy-mnist", lambda options, spec, c: noisy_mnist_dataset(c.data_dir, seed=c.seed, progress=c.progress)
    ),
    "synthetic": Builtin(
        "synthetic[:settings]", lambda options, spec, c: synthetic_dataset(options), takes_options=True
    ),
    "cohort": Builtin("cohort[:settings]", lambda options, spec, c: cohort_dataset(options), takes_options=True),
    "factors": Builtin("factors[:settings]", lambda options, spec, c: factors_dataset(options), takes_options=True),
    "counts": Builtin("counts[:settings]", lambda options, spec, c: counts_dataset(options), takes_options=True),
}
#: Built-in data sets written as a folder of tables, then read like the user's (`infinimodal.data.tables`): name ->
#: the function that writes the folder (from the text after the colon) and returns it.
TABLE_BUILTINS: dict[str, Callable[[str], Path]] = {"cohort-tables": cohort_tables}

BUILTIN = (
    *(b.synopsis for b in BUILTINS.values()),
    "any of them with labels=F",
    *(f"{name}[:settings]" for name in TABLE_BUILTINS),
)


def builtin_dataset(spec: str, data_dir: str | None, binarize: str, seed: int, progress: bool) -> MultimodalData:
    """A built-in data set, `NAME[:OPTIONS]`; every one takes `labels=F` (a label modality, `data.labels`)."""
    name, _, options = spec.partition(":")
    builtin = BUILTINS.get(name)
    if builtin is None:
        raise DataError(f"unknown data {spec!r}: use {', '.join(BUILTIN)}, a .npz / .h5mu file, or a folder of tables")
    options, label_fraction = split_label_option(options, spec)
    if options and not builtin.takes_options:
        raise DataError(
            f"{spec}: {name} takes no option but labels=F (the fraction of training rows whose label is observed)"
        )
    data = builtin.make(options, spec, Context(data_dir, binarize, seed, progress))
    if label_fraction is not None:
        add_label_modality(data, label_fraction, seed=seed)
    return data


def load_dataset(
    spec: str | os.PathLike[str] | dict[str, Any],
    data_dir: str | None = None,
    binarize: str = "dynamic",
    likelihoods: dict[str, str] | None = None,
    seed: int = 0,
    progress: bool = True,
    standardize: bool = True,
    id_column: str | None = None,
    covariates: list[str] | None = None,
) -> MultimodalData:
    """The data set named by `spec`, validated.

    Args:
        spec: a built-in data set (`mnist`, `cohort:n=3000`, ...: the module docstring lists them), a .npz or .h5mu
            file, a folder of subject-keyed tables or `name=FILE,name=FILE` (a string or a path), or from Python a
            dict {modality: pandas DataFrame indexed by subject ID}.
        data_dir: where the MNIST IDX files are (default: search `$INFINIMODAL_DATA`, then `~/.cache/infinimodal`).
        binarize: MNIST's training binarisation, `dynamic` (a fresh draw each epoch) or `static`.
        likelihoods: overrides of what was inferred: for files and built-in sets {modality: likelihood}
            (`gaussian:0.1` fixes a scale; `*` means every modality); for tables {table.column: family}, one column
            at a time.
        seed: the seed of the data set's construction or split (PolyMNIST textures and pairings, Noisy-MNIST angles
            and noise, a file's split).
        progress: whether building a cached image data set (PolyMNIST, Noisy-MNIST) says so once.
        standardize: whether Gaussian and Laplace features of files and tables are standardised on the training rows
            (the scaling is kept, and outputs return to the data's units).
        id_column: the tables' column of subject IDs (default: each table's first column).
        covariates: the tables' columns every encoder and decoder is conditioned on (age, sex, site), not modelled.

    Returns:
        The modalities and their train / validation / test splits (`MultimodalData`); tables also keep their subject
        IDs and feature names, generated data its true factors (`truth`).

    Raises:
        DataError: a file, table, column or value that cannot be read, naming the modality, the file and the problem.
    """
    if isinstance(spec, os.PathLike):  # a pathlib.Path of a file or a folder of tables
        spec = os.fspath(spec)
    if isinstance(spec, str) and spec.partition(":")[0] in TABLE_BUILTINS:
        name, _, options = spec.partition(":")
        spec = str(TABLE_BUILTINS[name](options))
    if not isinstance(spec, str) and not (isinstance(spec, dict) and is_table_spec(spec)):
        kinds = sorted({type(v).__name__ for v in spec.values()}) if isinstance(spec, dict) else [type(spec).__name__]
        raise DataError(
            f"a data set is a spec (a name, a file, a folder of tables) or {{modality: pandas DataFrame indexed by "
            f"subject ID}}; got {'a dict of ' if isinstance(spec, dict) else ''}{', '.join(kinds)} (arrays of a "
            "trained model's modalities go to its methods: embed, impute, ...)"
        )
    if covariates and not is_table_spec(spec):
        raise DataError(
            f"--covariates {','.join(covariates)}: covariates are columns of tables (--data DIR); {spec} is not"
        )
    if is_table_spec(spec):
        data = tables_dataset(spec, id_column, likelihoods, seed=seed, covariates=covariates)
        data.validate()
        return standardize_data(data, scale=standardize)
    assert isinstance(spec, str)  # a dict of DataFrames is a table spec; anything else was refused above
    if Path(spec).suffix in SUFFIXES:
        data = file_dataset(spec, {k: v for k, v in (likelihoods or {}).items() if k != "*"}, seed=seed)
    else:
        data = builtin_dataset(spec, data_dir, binarize, seed, progress)
    if likelihoods:
        override_likelihoods(data, likelihoods)
    data.validate()
    if Path(spec).suffix in SUFFIXES:
        given = {k for k in (likelihoods or {}) if k != "*"} | (
            set(data.names) if "*" in (likelihoods or {}) else set()
        )
        if standardize:
            standardize_data(data)
        data.notes = describe_file_modalities(data, given)
    return data


#: A count modality whose observed values reach this is probably better served by a standardised Gaussian.
LARGE_COUNT = 1000


def describe_file_modalities(data: MultimodalData, given: set[str]) -> list[str]:
    """One line per modality of a data file: its likelihood (inferred or given), whether it is standardised,
    and a warning for count modalities with very large values."""
    lines = []
    for m, modality in enumerate(data.modalities):
        how = "given" if modality.name in given else "inferred"
        scaled = ", standardised per feature on the training rows" if modality.name in data.standardization else ""
        lines.append(f"modality {modality.name!r} {modality.shape}: {modality.likelihood} ({how}){scaled}")
        observed = data.train.arrays[modality.name][data.train.mask[:, m]]
        constant = _constant_features(observed)
        if constant:
            lines.append(
                f"warning: modality {modality.name!r} has {len(constant)} feature(s) with one value on every observed training row "
                f"(feature {', '.join(map(str, constant[:8]))}{', ...' if len(constant) > 8 else ''}): they carry no information"
            )
        if how == "inferred":
            lines += likelihood_doubts(modality.name, modality.likelihood, observed)
        if modality.likelihood in ("poisson", "negative_binomial"):
            largest = float(observed.max()) if observed.size else 0.0
            if largest >= LARGE_COUNT:
                lines.append(
                    f"warning: modality {modality.name!r} holds counts up to {largest:g}; if they are measurements rather than "
                    f"counts, --likelihood {modality.name}=gaussian (standardised) usually fits them better"
                )
    return lines


#: An inferred count modality with at most this many distinct values is probably class codes or a short scale.
FEW_CODES = 10


def likelihood_doubts(name: str, likelihood: str, observed: np.ndarray) -> list[str]:
    """Warnings where an inferred likelihood is probably wrong: one column of a few integer codes read as counts (a
    pandas class column, float 0/1/2 with NaN, became Poisson), binary columns that are one-hot classes (every row one
    1) read as independent Bernoulli features."""
    flat = np.asarray(observed, dtype=np.float64).reshape(len(observed), -1)
    if not len(flat):
        return []
    if likelihood in ("poisson", "negative_binomial") and flat.shape[1] == 1 and len(np.unique(flat)) <= FEW_CODES:
        codes = ", ".join(f"{v:g}" for v in np.unique(flat))
        return [
            f"warning: modality {name!r} is one column of {len(np.unique(flat))} integer values ({codes}), read as counts ({likelihood}); "
            f"if they are classes, give --likelihood {name}=categorical; if a bounded score, --likelihood {name}=gaussian"
        ]
    if likelihood == "bernoulli" and flat.shape[1] >= 2 and (flat.sum(1) == 1).all():
        return [
            f"warning: modality {name!r} has exactly one 1 per row in its {flat.shape[1]} binary columns: one-hot classes read as "
            f"independent Bernoulli features; give --likelihood {name}=categorical"
        ]
    return []


def _constant_features(observed: np.ndarray) -> list[int]:
    """Flat indices of the features that take one value on every one of these rows (none for fewer than 2 rows)."""
    if len(observed) < 2:
        return []
    flat = np.asarray(observed).reshape(len(observed), -1)
    return np.flatnonzero((flat == flat[:1]).all(axis=0)).tolist()


def override_likelihoods(data: MultimodalData, likelihoods: dict[str, str]) -> None:
    """Replace modalities' likelihoods ("*" = every modality), checking the names and the data's support."""
    unknown = set(likelihoods) - set(data.names) - {"*"}
    if unknown:
        raise DataError(
            f"{data.source}: likelihoods given for {', '.join(sorted(unknown))}, which are not among its modalities ({', '.join(data.names)})"
        )
    for m, modality in enumerate(data.modalities):
        chosen = likelihoods.get(modality.name, likelihoods.get("*"))
        if chosen is None or chosen == modality.likelihood:
            continue
        try:
            cls = likelihood_class(chosen)
        except ValueError as exc:
            raise DataError(f"modality {modality.name!r} of {data.source}: {exc}") from None
        observed = data.train.arrays[modality.name][np.flatnonzero(data.train.mask[:, m])[:1000]]
        observed = observed / 255.0 if observed.dtype == np.uint8 else observed
        problem = cls.check(np.asarray(observed))
        if problem:
            raise DataError(f"modality {modality.name!r} of {data.source}: {problem}")
        data.modalities[m] = Modality(modality.name, modality.shape, chosen)


__all__ = [
    "BINARIZATIONS",
    "BUILTIN",
    "DigitSplit",
    "LABEL_MODALITY",
    "FallbackWarning",
    "MNIST",
    "MultimodalData",
    "Split",
    "binarize_fixed",
    "file_dataset",
    "load_dataset",
    "load_mnist",
    "mnist_dataset",
    "noisy_mnist_dataset",
    "polymnist_dataset",
    "read_idx",
    "read_table",
    "synthetic_dataset",
    "tables_dataset",
]
