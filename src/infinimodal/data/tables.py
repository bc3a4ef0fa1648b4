"""Subject-keyed tables: a folder with one table per modality (`.csv`, `.tsv` or `.parquet`, the modality named by
the file's stem), or `name=FILE,name=FILE`.

Each table has an ID column (`--id-column`, default: the first column); tables are joined on it. A subject absent
from a table has that modality missing; an empty cell (`''` or `NA`) is that cell missing, masked in its column's
likelihood. Every other column is a feature, its type inferred from its values (`infer_column`, override with
`--likelihood modality.column=FAMILY`): text -> categorical; 0/1 -> bernoulli; non-negative integers up to
SCORE_MAX whose variance is below their mean -> a bounded score (beta_binomial on 0..the column's largest value);
other non-negative integers -> counts (negative_binomial); anything else -> gaussian, standardised on the training
rows. Nothing is dropped: a duplicated ID, a subject with no modality, a numeric column with stray text, a file
that is not UTF-8, ... are errors that name the file, the column and the subjects (`TableError` messages).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..columns import COVARIATES, TABLE_LIKELIHOOD, Column, parse_column_likelihood
from ..errors import DataError
from ..modality import Modality
from .cells import MISSING_TOKENS, cell_texts, parse_numbers, shown
from .covariates import CovariateEncoding, fit_covariates
from .multimodal import MultimodalData, Split, split_rows

#: Non-negative integer columns up to this value may be bounded scores (MMSE 0-30, a Likert item); larger are counts.
SCORE_MAX = 100
#: A text column with more distinct values than this share of its rows (and more than FREE_TEXT_CLASSES) is free text.
FREE_TEXT_SHARE = 0.5
FREE_TEXT_CLASSES = 20
#: The name of the table that holds covariates (`--covariates`), when the user keeps them in a table of their own.
COVARIATE_TABLE = "covariates"


def is_table_spec(spec) -> bool:
    """Whether `--data` names tables: a folder, a table file, or name=FILE pairs of table files (or, from Python, a dict
    of pandas DataFrames)."""
    if isinstance(spec, dict):
        return holds_frames(spec)
    path = Path(spec)
    if path.suffix.lower() in TABLE_SUFFIXES or path.is_dir():
        return True
    parts = [p for p in spec.split(",") if p]
    return bool(parts) and all("=" in p and Path(p.partition("=")[2]).suffix.lower() in TABLE_SUFFIXES for p in parts)


def table_paths(spec: str) -> dict[str, Path]:
    """{modality: file} of a table spec, in the order given (a folder: its table files by name)."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{path}: holds no table ({', '.join(TABLE_SUFFIXES)} files, one per modality)")
        found: dict[str, Path] = {}
        for file in files:
            if file.stem in found:
                raise DataError(
                    f"{path}: two tables for modality {file.stem!r} ({found[file.stem].name}, {file.name}): keep one"
                )
            found[file.stem] = file
        return found
    if "=" not in spec:
        return {path.stem: path}
    pairs: dict[str, Path] = {}
    for part in (p for p in spec.split(",") if p):
        name, _, file_name = part.partition("=")
        if name in pairs:
            raise DataError(f"--data {spec}: modality {name!r} is given twice")
        pairs[name.strip()] = Path(file_name.strip())
    return pairs


# --- reading one file ----------------------------------------------------------------------------------


@dataclass
class Table:
    """One file: its path, its subjects' IDs (str, in file order) and its feature columns (name -> cells: text with ''
    for empty cells, or floats with NaN for a Parquet column of numbers)."""

    path: Path
    ids: np.ndarray
    cells: dict[str, np.ndarray]
    id_name: str = "id"


def _text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start}, line {line}); save it as UTF-8 (in a spreadsheet: CSV UTF-8)"
        ) from None


def _read_csv(path: Path, separator: str = ","):
    """Every cell as text (empty cells as ''), so that numbers, text and stray text are told apart here, not by pandas."""
    import pandas as pd

    return pd.read_csv(
        io.StringIO(_text(path)),
        sep=separator,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        skipinitialspace=True,
    )


def _read_parquet(path: Path):
    import pandas as pd

    frame = pd.read_parquet(path)
    # a DataFrame saved with its ID index (a named index) has the IDs there; an unnamed index is row numbers, not data
    return frame.reset_index() if frame.index.name is not None else frame.reset_index(drop=True)


#: Table formats by file suffix: a reader of one file into a pandas DataFrame whose columns include the ID column.
TABLE_READERS = {".csv": _read_csv, ".tsv": lambda path: _read_csv(path, "\t"), ".parquet": _read_parquet}
TABLE_SUFFIXES = tuple(TABLE_READERS)


def read_table_file(path: Path, id_column: str | None) -> Table:
    """A table file as text cells keyed by its ID column; errors name the file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    import pandas as pd

    try:
        frame = TABLE_READERS[suffix](path)
    except DataError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read as a {suffix[1:]} table ({first})") from None
    if frame.shape[1] == 0:
        raise DataError(f"{path}: holds no columns")
    return table_of_frame(path, frame, str(frame.columns[0]) if id_column is None else id_column)


def table_of_frame(path: Path, frame, key: str) -> Table:
    """A DataFrame with an ID column `key` as a Table: the IDs checked (none empty, none twice), every other column's
    cells (`column_cells`); errors name `path`."""
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: column names repeat: {shown(sorted({n for n in names if names.count(n) > 1}))}")
    if key not in names:
        raise DataError(f"{path}: no ID column {key!r} (its columns: {shown(names)}); give --id-column NAME")
    ids = np.asarray(
        [str(v).strip() if v is not None and v == v else "" for v in frame[key].to_numpy(dtype=object)], dtype=object
    )
    empty = np.flatnonzero(ids == "")
    if len(empty):
        raise DataError(f"{path}: rows {shown(empty + 2)} (counting the header as line 1) have no ID in column {key!r}")
    unique, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        raise DataError(
            f"{path}: IDs appear more than once in column {key!r}: {shown(unique[counts > 1])}; keep one row per subject"
        )
    cells = {name: column_cells(frame[column]) for name, column in zip(names, frame.columns) if name != key}
    if not cells:
        raise DataError(f"{path}: holds only its ID column {key!r}, no feature")
    return Table(path, ids.astype(str), cells, key)


def column_cells(column) -> np.ndarray:
    """A pandas column's cells: floats (NaN where empty) for a numeric column, else stripped text ('' where empty)."""
    if column.dtype.kind in "biuf":
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(
        [
            "" if v is None or (isinstance(v, float) and v != v) else str(v).strip()
            for v in column.to_numpy(dtype=object)
        ],
        dtype=object,
    )


# --- what a column is --------------------------------------------------------------------------------


def categorical_column(name: str, cells: np.ndarray, where: str) -> Column:
    """A categorical column over the classes its filled cells hold; one class is an error (it carries nothing)."""
    texts = cell_texts(cells)
    classes = tuple(sorted(set(texts[texts != ""])))
    if len(classes) < 2:
        raise DataError(
            f"{where}: one class ({shown(classes)}) on every filled cell carries nothing; remove the column"
        )
    return Column(name, "categorical", classes)


def infer_column(name: str, values: np.ndarray | None, cells: np.ndarray, where: str = "a column") -> Column:
    """The column's family from its observed cells (module docstring); `values` are the numbers (None: text)."""
    if values is None:
        return categorical_column(name, cells, where)
    observed = values[~np.isnan(values)]
    if np.isin(observed, (0, 1)).all():
        return Column(name, "bernoulli")
    if (observed >= 0).all() and (observed == np.round(observed)).all():
        if observed.max() <= SCORE_MAX and observed.var() < observed.mean():
            return Column(name, "beta_binomial", low=0, high=int(observed.max()))
        return Column(name, "negative_binomial")
    return Column(name, "gaussian")


def column_from_override(name: str, text: str, values: np.ndarray | None, cells: np.ndarray, where: str) -> Column:
    """The column `--likelihood modality.column=...` asks for, checked against its cells."""
    try:
        family, low, high = parse_column_likelihood(name, text)
    except ValueError as exc:
        raise DataError(f"{where}: {str(exc).removeprefix(f'column {name!r}: ')}") from None
    if family == "categorical":
        return categorical_column(name, cells, where)
    if values is None:
        raise DataError(f"{where}: holds text, so it can only be categorical, not {family}")
    if family == "beta_binomial" and low is None:
        observed = values[~np.isnan(values)]
        low, high = int(min(0, observed.min())), int(observed.max())
    return Column(name, family, low=low, high=high)


def check_column(where: str, ids: np.ndarray, column: Column, values: np.ndarray | None, cells: np.ndarray) -> None:
    """The column's cells within its family's support; errors name the subjects."""
    if column.family == "categorical":
        texts = cell_texts(cells)
        unseen = (texts != "") & ~np.isin(texts, list(column.categories))
        if unseen.any():
            raise DataError(
                f"{where}: classes {shown(sorted(set(texts[unseen])))} (subjects {shown(ids[unseen])}) are not among the "
                f"model's ({shown(column.classes)}); refused rather than mapped: correct them, or leave the cells empty"
            )
        return
    if values is None:  # text where a trained model's column holds numbers (`encode_table`)
        raise DataError(f"{where}: holds text, but the model's column is {column.family} (numbers)")
    observed = ~np.isnan(values)
    if np.isinf(values).any():
        raise DataError(f"{where}: infinite values for subjects {shown(ids[np.isinf(values)])}")
    x = np.where(observed, values, 0.0)
    bad = {
        "gaussian": np.zeros(len(x), dtype=bool),
        "bernoulli": ~np.isin(x, (0, 1)),
        "poisson": (x < 0) | (x != np.round(x)),
        "negative_binomial": (x < 0) | (x != np.round(x)),
        "beta_binomial": (x != np.round(x)) | (x < (column.low or 0)) | (x > (column.high or 0)),
    }[column.family] & observed
    if bad.any():
        wanted = {
            "bernoulli": "0 or 1",
            "poisson": "non-negative whole numbers",
            "negative_binomial": "non-negative whole numbers",
            "beta_binomial": f"whole numbers in {column.low}..{column.high}",
        }[column.family]
        raise DataError(
            f"{where}: {column.family} cells must be {wanted}; subjects {shown(ids[bad])} hold {shown(sorted(set(x[bad].tolist())))}"
        )


def encode_column(column: Column, values: np.ndarray | None, cells: np.ndarray) -> np.ndarray:
    """[rows, width] floats: the value (one-hot for a categorical column), NaN where the cell is empty."""
    if column.family != "categorical":
        assert values is not None  # numbers: `check_column` refuses text in a numeric column
        return values[:, None].astype(np.float64)
    texts = cell_texts(cells)
    out = np.full((len(texts), column.width), np.nan)
    lookup = {c: i for i, c in enumerate(column.categories)}
    for row, text in enumerate(texts):
        if text in lookup:
            out[row] = 0.0
            out[row, lookup[text]] = 1.0
    return out


def table_columns(name: str, table: Table, overrides: dict[str, str]) -> list[Column]:
    """The columns of modality `name` read from its table: inferred, or as `--likelihood name.column=` says."""
    unknown = sorted(set(overrides) - set(table.cells))
    if unknown:
        raise DataError(
            f"{table.path}: --likelihood names columns {shown(unknown)} of modality {name!r}, which its table does not hold "
            f"(its columns: {shown(list(table.cells))})"
        )
    columns = []
    for column_name, cells in table.cells.items():
        where = f"column {column_name!r} of {table.path}"
        values = parse_numbers(where, table.ids, cells)
        if column_name in overrides:
            column = column_from_override(column_name, overrides[column_name], values, cells, where)
        else:
            if (
                values is not None
                and np.isnan(values).all()
                or values is None
                and np.isin(cells, list(MISSING_TOKENS)).all()
            ):
                raise DataError(f"{where}: every cell is empty; remove the column")
            column = infer_column(column_name, values, cells, where)
            if column.family == "categorical" and len(column.categories) > max(
                FREE_TEXT_CLASSES, FREE_TEXT_SHARE * len(cells)
            ):
                raise DataError(
                    f"{where}: {len(column.categories)} distinct texts in {len(cells)} rows look like free text or IDs, not "
                    "categories; remove the column (or give --id-column if it is the subjects' ID)"
                )
        check_column(where, table.ids, column, values, cells)
        columns.append(column)
    return columns


def encode_table(table: Table, columns: tuple[Column, ...], where: str) -> np.ndarray:
    """[rows, width] of a table for modality columns `columns` (a trained model's: its classes and ranges), NaN for
    empty cells; a model column the table lacks is empty for every subject, a table column the model lacks is an error."""
    extra = [c for c in table.cells if c not in {column.name for column in columns}]
    if extra:
        raise DataError(
            f"{where}: columns {shown(extra)} are not among the model's ({shown([c.name for c in columns])})"
        )
    parts = []
    for column in columns:
        cells = table.cells.get(column.name)
        if cells is None:
            parts.append(np.full((len(table.ids), column.width), np.nan))
            continue
        here = f"column {column.name!r} of {table.path}"
        values = parse_numbers(here, table.ids, cells)
        check_column(here, table.ids, column, values, cells)
        parts.append(encode_column(column, values, cells))
    return np.concatenate(parts, axis=1)


# --- joining tables on the ID ----------------------------------------------------------------------------


@dataclass
class JoinedTables:
    """Tables joined on the subjects' IDs: the IDs (first-seen order) and each table's row for each subject (-1: absent)."""

    ids: np.ndarray
    tables: dict[str, Table]
    rows: dict[str, np.ndarray]

    def gather(self, name: str, values: np.ndarray) -> np.ndarray:
        """A table's [its rows, ...] values laid out per joined subject (NaN where the subject is absent)."""
        out = np.full((len(self.ids), *values.shape[1:]), np.nan)
        present = self.rows[name] >= 0
        out[present] = values[self.rows[name][present]]
        return out


def join_tables(tables: dict[str, Table]) -> JoinedTables:
    ids: dict[str, None] = {}
    for table in tables.values():
        ids.update(dict.fromkeys(table.ids.tolist()))
    order = np.asarray(list(ids), dtype=object)
    position = {subject: i for i, subject in enumerate(order)}
    rows = {}
    for name, table in tables.items():
        index = np.full(len(order), -1)
        index[[position[s] for s in table.ids]] = np.arange(len(table.ids))
        rows[name] = index
        if len(tables) > 1:
            others = set().union(*(set(t.ids) for n, t in tables.items() if n != name))
            if not others & set(table.ids):
                raise DataError(
                    f"{table.path}: no subject in common with the other tables ({', '.join(n for n in tables if n != name)}): "
                    f"are the IDs written the same way? (its first: {shown(table.ids[:3])}; theirs: {shown(sorted(others)[:3])})"
                )
    return JoinedTables(order.astype(str), tables, rows)


def read_tables(spec: str, id_column: str | None) -> dict[str, Table]:
    paths = table_paths(spec)
    for name in paths:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise DataError(
                f"{paths[name]}: the modality name {name!r} (the file's stem) must be letters, digits, '-' or '_'"
            )
    return {name: read_table_file(path, id_column) for name, path in paths.items()}


def split_column_overrides(likelihoods: dict[str, str], names: list[str], spec: str) -> dict[str, dict[str, str]]:
    """`--likelihood modality.column=FAMILY` as {modality: {column: family}}; a whole-modality override is refused
    for tables (each column has its own likelihood)."""
    out: dict[str, dict[str, str]] = {name: {} for name in names}
    for key, value in likelihoods.items():
        modality, dot, column = key.partition(".")
        if not dot:
            raise DataError(
                f"--data {spec}: tables take a likelihood per column, --likelihood {modality}.COLUMN={value}, not per modality"
            )
        if modality not in out:
            raise DataError(
                f"--data {spec}: --likelihood {key}: no table named {modality!r} (tables: {', '.join(names)})"
            )
        out[modality][column] = value
    return out


def overview(
    ids_by_split: dict[str, int],
    names: list[str],
    mask: np.ndarray,
    modalities: list[Modality],
    sources: dict[str, Path],
) -> list[str]:
    """A screen about the data: subjects per modality, the missingness patterns, and every column's likelihood."""
    n = len(mask)
    lines = [f"{n} subjects in {len(names)} tables ({', '.join(f'{k} {v}' for k, v in ids_by_split.items())})"]
    for m, name in enumerate(names):
        lines.append(
            f"  {name} ({sources[name].name}): {int(mask[:, m].sum())} subjects, {n - int(mask[:, m].sum())} absent"
        )
    patterns, counts = np.unique(mask, axis=0, return_counts=True)
    lines.append("missingness patterns (x = present):  " + "  ".join(f"{name:>8}" for name in names) + "  subjects")
    for pattern, count in sorted(zip(patterns.tolist(), counts.tolist()), key=lambda pc: -pc[1])[:8]:
        lines.append(
            "                                     "
            + "  ".join(f"{'x' if p else '.':>8}" for p in pattern)
            + f"  {count:>8}"
        )
    if len(patterns) > 8:
        lines.append(f"  ... and {len(patterns) - 8} rarer patterns")
    for modality in modalities:
        lines.append(
            f"modality {modality.name!r}: " + "; ".join(f"{c.name} {c.describe()}" for c in modality.table_columns)
        )
    return lines


def tables_dataset(
    spec,
    id_column: str | None = None,
    likelihoods: dict[str, str] | None = None,
    seed: int = 0,
    covariates: list[str] | None = None,
) -> MultimodalData:
    """Tables as a training data set: joined on the ID, one table modality per file, a seeded 80/10/10 split of the
    subjects. `spec`: a folder or `name=FILE,...` (module docstring), or a dict {modality: pandas DataFrame indexed by
    subject ID} (the Python API)."""
    tables = (
        {name: frame_table(name, frame) for name, frame in spec.items()}
        if isinstance(spec, dict)
        else read_tables(spec, id_column)
    )
    spec = f"tables {', '.join(spec)}" if isinstance(spec, dict) else spec
    joined = join_tables(tables)
    covariate_cells, sources = take_covariates(tables, joined, list(covariates or []))
    tables = {
        name: table for name, table in tables.items() if table.cells
    }  # a table of covariates alone is no modality
    names = list(tables)
    overrides = split_column_overrides(dict(likelihoods or {}), names, spec)
    modalities, arrays, columns_mask = [], {}, []
    for name, table in tables.items():
        columns = tuple(table_columns(name, table, overrides[name]))
        width = sum(c.width for c in columns)
        modalities.append(Modality(name, (width,), TABLE_LIKELIHOOD, columns=columns))
        values = joined.gather(name, encode_table(table, columns, str(table.path)))
        present = joined.rows[name] >= 0
        empty_rows = present & np.isnan(values).all(axis=1)
        present &= ~empty_rows  # a subject whose every cell is empty in a table has that modality missing
        arrays[name] = np.where(present[:, None], values, np.nan).astype(np.float32)
        columns_mask.append(present)
    mask = np.stack(columns_mask, axis=1)
    nothing = ~mask.any(axis=1)
    if nothing.any():
        raise DataError(f"--data {spec}: subjects {shown(joined.ids[nothing])} have no value in any modality table")
    n = len(joined.ids)
    if n < 10:
        raise DataError(f"--data {spec}: {n} subjects are too few to split into train/valid/test (need 10)")
    parts = split_rows(n, seed)
    for name in arrays:  # absent subjects hold zeros like any missing row; empty cells stay NaN
        arrays[name] = np.where(np.isnan(arrays[name]).all(axis=1, keepdims=True), 0.0, arrays[name]).astype(np.float32)
    encoding = None
    if covariate_cells:
        training = np.zeros(n, dtype=bool)
        training[parts["train"]] = True
        encoding = fit_covariates(covariate_cells, joined.ids, training, sources)
        arrays[COVARIATES] = encoding.encode(covariate_cells, joined.ids, f"--data {spec}")
    whole = Split(arrays, mask, None, joined.ids)
    splits = {k: whole.take(np.sort(rows)) for k, rows in parts.items()}
    source = str(Path(spec).resolve()) if Path(spec).exists() else spec
    data = MultimodalData(modalities, splits["train"], splits["valid"], splits["test"], source)
    data.covariates = encoding
    data.id_column = next(iter(tables.values())).id_name
    data.notes = overview(
        {k: len(v) for k, v in splits.items()}, names, mask, modalities, {k: t.path for k, t in tables.items()}
    )
    if encoding is not None:
        data.notes.append(
            "covariates (every encoder and decoder reads them): "
            + "; ".join(
                f"{c.name} from {sources[c.name]} ({c.describe() if c.family == 'categorical' else f'numeric, mean {m:.4g}, sd {s:.4g}'})"
                for c, m, s in zip(encoding.columns, encoding.mean, encoding.std)
            )
        )
    return data


def take_covariates(
    tables: dict[str, Table], joined: JoinedTables, names: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The covariate columns `names`, each taken out of the table that holds it (the `covariates` table first) and laid
    out per joined subject ('' where the subject is absent from that table): (cells by name, file by name)."""
    cells, sources = {}, {}
    missing = [name for name in names if not any(name in table.cells for table in tables.values())]
    if missing:
        raise DataError(
            f"--covariates: no table holds a column {', '.join(map(repr, missing))} (tables: "
            + "; ".join(f"{t}: {shown(list(table.cells))}" for t, table in tables.items())
            + ")"
        )
    for name in names:
        holders = [t for t, table in tables.items() if name in table.cells]
        if COVARIATE_TABLE in holders:
            holders = [COVARIATE_TABLE]
        if len(holders) > 1:
            raise DataError(
                f"--covariates: column {name!r} is in several tables ({', '.join(holders)}); keep it in one, or in a table named {COVARIATE_TABLE}"
            )
        table = tables[holders[0]]
        values = table.cells.pop(name)
        rows = joined.rows[holders[0]]
        out = np.full(len(joined.ids), np.nan) if values.dtype != object else np.full(len(joined.ids), "", dtype=object)
        out[rows >= 0] = values[rows[rows >= 0]]
        cells[name], sources[name] = out, str(table.path)
    return cells, sources


class TableRows(NamedTuple):
    """Tables read for a trained model: the arrays of its modalities in the data's units (NaN rows for absent subjects,
    NaN cells for empty ones; `COVARIATES`: the encoded covariates of a conditional model), the subjects' IDs, the
    name of the ID column, and the covariate cells as given (for `--set`)."""

    arrays: dict[str, np.ndarray]
    ids: np.ndarray
    id_name: str
    covariate_cells: dict[str, np.ndarray]


def user_tables(
    spec, modalities: list[Modality], id_column: str | None, source: str, covariates: CovariateEncoding | None = None
) -> TableRows:
    """Tables given to a trained model: a spec as for training, or a dict of pandas DataFrames indexed by ID."""
    if isinstance(spec, dict):
        tables = {name: frame_table(name, frame) for name, frame in spec.items()}
    else:
        tables = read_tables(str(spec), id_column)
    joined = join_tables(tables)
    cells: dict[str, np.ndarray] = {}
    if covariates is not None:
        cells, _ = take_covariates(tables, joined, covariates.names)
        tables = {name: table for name, table in tables.items() if table.cells}
    known = {m.name: m for m in modalities}
    unknown = [name for name in tables if name not in known]
    if unknown:
        raise DataError(f"{source}: tables {shown(unknown)} are not modalities of this model ({', '.join(known)})")
    arrays = {}
    for name, table in tables.items():
        modality = known[name]
        if not modality.is_table:
            raise DataError(
                f"{table.path}: modality {name!r} of this model is not a table (it was trained from {modality.likelihood} arrays)"
            )
        arrays[name] = joined.gather(name, encode_table(table, modality.table_columns, str(table.path)))
    if covariates is not None:
        arrays[COVARIATES] = covariates.encode(cells, joined.ids, str(source))
    return TableRows(arrays, joined.ids, next(iter(tables.values())).id_name if tables else "id", cells)


def frame_table(name: str, frame) -> Table:
    """A pandas DataFrame indexed by subject ID as a Table (the Python API's way in), checked as a file is."""
    key = str(frame.index.name or "id")
    where = Path(f"<DataFrame {name}>")
    if key in [str(c) for c in frame.columns]:
        raise DataError(f"{where}: its index (the IDs) and a column are both named {key!r}; name the index otherwise")
    return table_of_frame(where, frame.rename_axis(key).reset_index(), key)


def holds_frames(value) -> bool:
    """Whether a user's rows are a dict of pandas DataFrames (subject-keyed tables)."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(hasattr(v, "columns") and hasattr(v, "index") for v in value.values())
    )


def table_rows(where: str, values: np.ndarray, modality: Modality) -> tuple[np.ndarray, np.ndarray]:
    """A table modality's rows given to a trained model, in the data's units ([rows, width], NaN rows = absent, NaN
    cells = empty): (float32 rows with absent rows zeroed and empty cells NaN, observed mask); each filled cell checked
    against its column (`encode_table` gives such rows from files)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != modality.shape[0]:
        raise DataError(
            f"{where}: rows of shape {values.shape[1:]}, the model's table takes {modality.shape} (its columns: "
            f"{shown([c.name for c in modality.table_columns])})"
        )
    if np.isinf(values).any():
        raise DataError(f"{where}: rows {shown(np.flatnonzero(np.isinf(values).any(axis=1)))} hold infinite values")
    missing = np.isnan(values).all(axis=1)
    ids = np.arange(len(values)).astype(str)
    start = 0
    for column in modality.table_columns:
        block = values[:, start : start + column.width]
        if column.family == "categorical":
            filled = ~np.isnan(block).any(axis=1)
            bad = filled & ~((np.isin(block, (0, 1))).all(axis=1) & (block.sum(axis=1) == 1))
            if bad.any():
                raise DataError(
                    f"{where}: column {column.name!r} must be one-hot over its classes; rows {shown(ids[bad])} are not"
                )
        else:
            check_column(f"{where}, column {column.name!r}", ids, column, block[:, 0], np.asarray([], dtype=object))
        start += column.width
    return np.where(missing[:, None], 0.0, values).astype(np.float32), ~missing


def decoded_frame(modality: Modality, values: np.ndarray, ids, id_name: str):
    """A table modality's rows (the data's units, [rows, width]) as a DataFrame keyed by ID with the table's own column
    names: numbers as they are (an imputed 0/1 or count cell holds its expected value), a categorical column's most
    probable class; and a second DataFrame with each categorical column's class probabilities (`column=class`), or
    None when the table has no categorical column."""
    import pandas as pd

    index = pd.Index(np.asarray(ids).astype(str), name=id_name)
    columns, probabilities, start = {}, {}, 0
    for column in modality.table_columns:
        block = np.asarray(values[:, start : start + column.width], dtype=np.float64)
        if column.family == "categorical":
            known = ~np.isnan(block).any(axis=1)
            columns[column.name] = np.where(
                known, np.asarray(column.classes, dtype=object)[np.nan_to_num(block).argmax(axis=1)], ""
            )
            for j, label in enumerate(column.categories):
                probabilities[f"{column.name}={label}"] = block[:, j]
        else:
            columns[column.name] = block[:, 0]
        start += column.width
    return pd.DataFrame(columns, index=index), (pd.DataFrame(probabilities, index=index) if probabilities else None)
