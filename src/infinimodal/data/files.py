"""User data from files: `.npz` (one array per modality) and `.h5mu` (MuData, the single-cell format).

**npz.** Every array is a modality whose first axis is the rows (subjects), except two reserved names:
`labels` (optional, one per row: integers or strings) and `split` (optional, "train"/"valid"/"test" per
row; otherwise a seeded 80/10/10 split). A 1-D integer array (or a 1-D array given `--likelihood
NAME=categorical`) is a categorical modality: its classes are the distinct observed codes, -1 (or NaN) marks a
missing row, and the model sees one-hot rows. A float row that is entirely NaN means the modality is missing
for that row; a row with some NaN but not all, or any infinity, is an error naming the modality, the
file and the rows. A row with no modality at all is an error naming the rows. Nothing is dropped.

**h5mu** (needs `pip install infinimodal[h5mu]`). Each `mdata.mod[name].X` is a modality (sparse
matrices are densified); rows missing from a modality's AnnData are missing; labels are read from
`mdata.obs["labels"]` (or "label") when present.

Likelihoods are inferred from the observed values (binary -> bernoulli, non-negative integers ->
poisson, otherwise gaussian) unless given, and the values are checked against the likelihood's support.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import DataError, format_rows
from ..likelihoods import infer_likelihood, likelihood_class
from ..modality import Modality
from .multimodal import MultimodalData, Split, split_rows

RESERVED = ("labels", "split")
SPLIT_NAMES = ("train", "valid", "test")
SUFFIXES = (".npz", ".h5mu")


def read_table(
    path: str | Path, likelihoods: dict[str, str] | None = None
) -> tuple[list[Modality], Split, np.ndarray | None]:
    """Read a file into modalities, one Split holding every row, and the optional split column."""
    path = Path(path)
    likelihoods = dict(likelihoods or {})
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".npz":
        raw, labels, split = _read_npz(path)
    elif path.suffix == ".h5mu":
        raw, labels, split = _read_h5mu(path)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .npz or .h5mu")
    if not raw:
        raise DataError(f"{path}: holds no modality arrays (only {', '.join(RESERVED)})")
    unknown = set(likelihoods) - set(raw)
    if unknown:
        raise DataError(
            f"{path}: likelihoods given for {', '.join(sorted(unknown))}, which the file does not hold ({', '.join(raw)})"
        )
    n = len(next(iter(raw.values())))
    modalities, arrays, columns = [], {}, []
    for name, values in raw.items():
        if len(values) != n:
            raise DataError(f"modality {name!r} in {path}: {len(values)} rows, but {next(iter(raw))!r} has {n}")
        modality, array, observed = _modality(path, name, values, likelihoods.get(name))
        modalities.append(modality)
        arrays[name] = array
        columns.append(observed)
    mask = np.stack(columns, axis=1)
    empty = ~mask.any(axis=1)
    if empty.any():
        raise DataError(f"{path}: rows {format_rows(empty)} have no modality at all (every modality is missing)")
    if labels is not None and len(labels) != n:
        raise DataError(f"{path}: {len(labels)} labels for {n} rows")
    if split is not None and len(split) != n:
        raise DataError(f"{path}: {len(split)} split entries for {n} rows")
    return modalities, Split(arrays, mask, labels), split


#: Beyond this magnitude values are refused, not trained on: a squared deviation of 1e19 overflows float32
#: (3.4e38), and sums of squares over features and rows need headroom below that (1e15 squares to 1e30).
MAX_ABS_VALUE = 1e15


def check_rows(where: str, values: np.ndarray, likelihood: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The one validator of a modality's rows, used for data files and for every array given to a trained model
    (impute, embed, sample --given): numbers only, each row observed or missing (NaN) as a whole, finite, of a
    magnitude float32 can square, and within the likelihood's support (inferred when None).

    Returns (float32 array with missing rows zeroed, observed mask, likelihood). Errors name `where` and the rows."""
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{where}: values must be numbers, got dtype {values.dtype}")
    if values.ndim == 0 or len(values) == 0:
        raise DataError(f"{where}: holds no rows (an array of shape {values.shape})")
    values = values.astype(np.float32) if values.dtype != np.float64 else values
    flat = values.reshape(len(values), -1)
    if flat.shape[1] == 0:
        raise DataError(f"{where}: rows hold no values (an array of shape {values.shape})")
    nan = np.isnan(flat)
    missing = nan.all(axis=1)
    partial = nan.any(axis=1) & ~missing
    if partial.any():
        raise DataError(
            f"{where}: rows {format_rows(partial)} have some values missing (NaN) but not all; "
            "a modality is either observed or missing as a whole row"
        )
    infinite = np.isinf(flat).any(axis=1)
    if infinite.any():
        raise DataError(f"{where}: rows {format_rows(infinite)} hold infinite values")
    huge = (np.abs(np.where(nan, 0.0, flat)) > MAX_ABS_VALUE).any(axis=1)
    if huge.any():
        raise DataError(
            f"{where}: rows {format_rows(huge)} hold values beyond +-{MAX_ABS_VALUE:g}, too large for float32 arithmetic (squares overflow); rescale this modality"
        )
    observed = ~missing
    chosen = likelihood or infer_likelihood(values[observed])
    # missing rows stand in as a row inside the support, so the rows a check names are the input's own rows
    law = likelihood_class(chosen)
    stand_in = (
        np.where(missing.reshape(-1, *[1] * (values.ndim - 1)), law.placeholder(values.shape[1:]), values)
        if missing.any()
        else values
    )
    problem = law.check(stand_in)
    if problem:
        raise DataError(f"{where}: {problem} (among observed rows)")
    array = np.where(missing.reshape(-1, *[1] * (values.ndim - 1)), 0.0, values).astype(np.float32)
    return array, observed, chosen


def _modality(
    path: Path, name: str, values: np.ndarray, likelihood: str | None
) -> tuple[Modality, np.ndarray, np.ndarray]:
    where = f"modality {name!r} in {path}"
    if likelihood is not None:
        try:
            likelihood_class(likelihood)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
    if values.dtype.kind not in "biuf":
        raise DataError(f"{where}: values must be numbers, got dtype {values.dtype}")
    classes = None
    if values.ndim == 1 and (likelihood == "categorical" or (likelihood is None and values.dtype.kind in "iu")):
        # a column of integer codes is one categorical variable (`labels`, the evaluation key, never reaches here)
        codes, classes = class_codes(where, values)
        values, likelihood = one_hot(codes, len(classes)), "categorical"
    if values.ndim == 1:
        values = values[:, None]
    array, observed, chosen = check_rows(where, values, likelihood)
    return Modality(name, values.shape[1:], chosen, classes=classes), array, observed


#: The code of a missing row in an integer column of a categorical modality (NaN in a float column).
MISSING_CODE = -1


def _observed_codes(where: str, values: np.ndarray) -> np.ndarray:
    """Which rows of a column of class codes are observed: not -1 and, for floats, not NaN; whole numbers only."""
    if values.dtype.kind == "f":
        observed = ~np.isnan(values) & (values != MISSING_CODE)
        if not np.all(values[observed] == np.round(values[observed])):
            raise DataError(
                f"{where}: categorical codes must be whole numbers, rows {format_rows(observed & (values != np.round(values)))} are not"
            )
    else:
        observed = values != MISSING_CODE
    return observed


def class_codes(where: str, values: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """A data file's column of class codes: (the position of each row's class, -1 where missing; the classes, which
    are the distinct observed codes in increasing order)."""
    observed = _observed_codes(where, values)
    codes = values[observed].astype(np.int64)
    negative = observed & (np.where(observed, values, 0) < 0)
    if negative.any():
        raise DataError(
            f"{where}: categorical codes must be >= 0 ({MISSING_CODE} marks a missing row); rows {format_rows(negative)} are not"
        )
    classes, position = np.unique(codes, return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"{where}: a categorical modality needs at least 2 classes among its observed rows, found {classes.tolist()}"
        )
    out = np.full(len(values), -1, dtype=np.int64)
    out[observed] = position
    return out, tuple(int(c) for c in classes)


def codes_to_positions(where: str, values: np.ndarray, classes: tuple) -> np.ndarray:
    """Class codes given to a trained model, as positions among the model's `classes` (-1 where missing); a code
    the model never saw is an error naming the rows."""
    observed = _observed_codes(where, values)
    lookup = {c: i for i, c in enumerate(classes)}
    out = np.full(len(values), -1, dtype=np.int64)
    unknown = np.zeros(len(values), dtype=bool)
    for row in np.flatnonzero(observed):
        position = lookup.get(int(values[row]))
        if position is None:
            unknown[row] = True
        else:
            out[row] = position
    if unknown.any():
        raise DataError(
            f"{where}: rows {format_rows(unknown)} hold classes the model was not trained on (its classes: {', '.join(map(str, classes))})"
        )
    return out


def one_hot(positions: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot float rows of class positions, rows of NaN where the position is -1 (missing)."""
    out = np.full((len(positions), n_classes), np.nan, dtype=np.float32)
    observed = positions >= 0
    out[observed] = np.eye(n_classes, dtype=np.float32)[positions[observed]]
    return out


def _labels(values) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    return np.unique(values.astype(str), return_inverse=True)[1].astype(np.int64)


def read_npz_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickled objects), or one line saying why the file cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: _npz_array(path, archive, key) for key in archive.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: cannot read as .npz ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'damaged'})"
        ) from None


def _npz_array(path, archive, key: str) -> np.ndarray:
    """One array of an open .npz; an array of Python objects (strings or mixed values saved from a list or a pandas
    column of dtype object) is refused naming it and the fix, since loading it would unpickle."""
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise DataError(
            f"{path}: array {key!r} holds Python objects (dtype object), which cannot be read without running "
            "pickled code: save it as numbers, or strings as a fixed-width type, e.g. np.asarray(values, dtype=str) "
            "or, from pandas, column.to_numpy(dtype=float)"
        ) from None


def _read_npz(path: Path):
    contents = read_npz_arrays(path)
    labels = _labels(contents.pop("labels")) if "labels" in contents else None
    split = contents.pop("split").astype(str) if "split" in contents else None
    return contents, labels, split


def _read_h5mu(path: Path):
    try:
        import mudata
    except ImportError as exc:
        raise DataError(
            f"{path}: reading .h5mu needs the optional dependency: pip install 'infinimodal[h5mu]'"
        ) from exc
    try:
        mdata = mudata.read_h5mu(path)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read as .h5mu: {exc}") from exc
    raw = mudata_arrays(mdata)
    labels = None
    for column in ("labels", "label"):
        if column in mdata.obs:
            labels = _labels(mdata.obs[column].to_numpy())
            break
    return raw, labels, None


def dense(adata) -> np.ndarray:
    """An AnnData's X as a dense array (sparse matrices densified)."""
    return adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)


def mudata_arrays(mdata) -> dict[str, np.ndarray]:
    """One array per modality of a MuData object, a row per observation of the MuData, NaN rows where a modality's
    AnnData lacks the observation."""
    n = mdata.n_obs
    raw = {}
    for name, adata in mdata.mod.items():
        x = dense(adata)
        position = np.asarray(mdata.obsmap[name])  # 1-based row in the modality, 0 where absent
        full = np.full((n, *x.shape[1:]), np.nan, dtype=np.float64)
        present = position > 0
        full[present] = x[position[present] - 1]
        raw[name] = full
    return raw


def _is_mudata(value) -> bool:
    return hasattr(value, "mod") and hasattr(value, "obsmap")


def _is_anndata(value) -> bool:
    return hasattr(value, "X") and hasattr(value, "obs_names") and not _is_mudata(value)


def user_arrays(value, names: list[str], source: str) -> dict:
    """What a Python user passes for rows (a dict of arrays, DataFrames or AnnData objects keyed by modality, a MuData,
    an AnnData for a one-modality model, or an .npz / .h5mu path) as a dict of arrays, rows in the given order; any
    other object is refused at once, in one line (a MuData used to be iterated as a mapping for minutes)."""
    if isinstance(value, (str, Path)):
        path = Path(value)
        if path.suffix == ".npz":
            return read_npz_arrays(path)
        if path.suffix == ".h5mu":
            return _read_h5mu(path)[0]
        raise DataError(f"{source}: {path} is not an .npz or .h5mu file")
    if _is_mudata(value):
        return mudata_arrays(value)
    if _is_anndata(value):
        if len(names) != 1:
            raise DataError(
                f"{source}: an AnnData holds one modality and this model has {len(names)} ({', '.join(names)}): "
                "pass a MuData, or a dict {modality: AnnData or array}"
            )
        return {names[0]: dense(value)}
    if not isinstance(value, Mapping):
        raise DataError(
            f"{source}: cannot read rows from a {type(value).__module__}.{type(value).__name__}: pass a dict of arrays or "
            "DataFrames keyed by modality, a MuData, an AnnData (one-modality models) or an .npz / .h5mu path"
        )
    arrays = {}
    for name, column in value.items():
        if _is_anndata(column):
            column = dense(column)
        elif hasattr(column, "to_numpy"):  # pandas DataFrame or Series: its values, in its row order
            column = column.to_numpy()
        array = np.asarray(column)
        if array.ndim == 0:
            raise DataError(
                f"{source}: {name!r} is a {type(column).__name__}, not an array of rows (one row per subject)"
            )
        arrays[name] = array
    return arrays


def file_dataset(path: str | Path, likelihoods: dict[str, str] | None = None, seed: int = 0) -> MultimodalData:
    """A file as a training data set: its `split` column, or a seeded 80/10/10 split."""
    modalities, table, split = read_table(path, likelihoods)
    n = len(table)
    if split is not None:
        unknown = ~np.isin(split, SPLIT_NAMES)
        if unknown.any():
            raise DataError(f"{path}: split entries must be train, valid or test; rows {format_rows(unknown)} are not")
        parts = {name: np.flatnonzero(split == name) for name in SPLIT_NAMES}
    else:
        if n < 10:
            raise DataError(
                f"{path}: {n} rows are too few to split into train/valid/test (need 10, or a 'split' array)"
            )
        parts = split_rows(n, seed)
    empty = [name for name, rows in parts.items() if len(rows) == 0]
    if empty:
        raise DataError(f"{path}: the {', '.join(empty)} split is empty")
    splits = {name: table.take(rows) for name, rows in parts.items()}
    return MultimodalData(modalities, splits["train"], splits["valid"], splits["test"], str(Path(path).resolve()))
