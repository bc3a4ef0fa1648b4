"""A run's data found again: the data set a configuration names (`load_data`), and for a run on a data file or on
tables, their absolute location and SHA-256 recorded at training (`data_file_record`), so that the run works from any
directory and refuses changed data (`run_data_file`, `load_run_data`)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from .config import TrainConfig
from .data import MultimodalData, load_dataset
from .data.files import SUFFIXES
from .data.mnist import FALLBACK_SOURCE
from .data.tables import is_table_spec, table_paths
from .errors import InfinimodalError
from .runfiles import read_config


def load_data(config: TrainConfig, progress: bool = True, limit_train: bool = False) -> MultimodalData:
    """The run's data set; with `limit_train`, only the first `max_train` training rows (what training sees).

    Evaluation uses the whole training split (kNN, probes, coherence classifiers), whatever the run trained on.
    """
    data = load_dataset(
        config.data,
        config.data_dir,
        config.binarize,
        config.likelihoods,
        seed=config.data_seed,
        progress=progress,
        standardize=config.standardize,
        id_column=config.id_column,
        covariates=config.covariates,
    )
    if limit_train and config.max_train is not None:
        data.train = data.train.take(slice(0, config.max_train))
    elif config.max_train is not None and config.max_train < len(data.train):
        data.trained_rows = config.max_train
    return data


def data_file_record(spec: str) -> dict:
    """For a run on a data file: its absolute path and SHA-256, so that the run can be used from any directory and a
    changed file is noticed (config.json keeps `data` as it was typed)."""
    if is_table_spec(spec) and all(path.is_file() for path in table_paths(spec).values()):
        return {"data_file": resolved_tables(spec), "data_sha256": tables_sha256(spec)}
    if Path(spec).suffix not in SUFFIXES or not Path(spec).is_file():
        return {}
    return {"data_file": str(Path(spec).resolve()), "data_sha256": file_sha256(spec)}


def resolved_tables(spec: str) -> str:
    """A table spec with absolute paths: the folder, or name=FILE pairs."""
    return (
        str(Path(spec).resolve())
        if Path(spec).is_dir()
        else ",".join(f"{name}={path.resolve()}" for name, path in table_paths(spec).items())
    )


def tables_sha256(spec: str) -> str:
    """One SHA-256 of a spec's tables: each modality's name and its file's digest, in order."""
    digest = hashlib.sha256()
    for name, path in table_paths(spec).items():
        digest.update(f"{name}\0{file_sha256(path)}\0".encode())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_data_file(run_dir: str | Path, config: TrainConfig) -> TrainConfig:
    """`config` with its data file found from wherever the run is used: the path as typed when it exists from here,
    else the absolute path recorded at training; refused in one line when neither exists or the file changed."""
    record = read_config(Path(run_dir) / "config.json")
    if "data_file" in record and (is_table_spec(record["data_file"]) or "=" in record["data_file"]):
        return run_tables(run_dir, config, record)
    if Path(config.data).suffix not in SUFFIXES or "data_file" not in record:
        return config
    found = next((p for p in (Path(config.data), Path(record["data_file"])) if p.is_file()), None)
    if found is None:
        raise InfinimodalError(
            f"{run_dir} was trained on {record['data_file']}, which is missing: evaluate, report, synthesize and "
            "score read its rows (score: its validation rows, the reference population); put the file back there"
        )
    if file_sha256(found) != record.get("data_sha256"):
        raise InfinimodalError(
            f"{found} is not the file {run_dir} was trained on (its SHA-256 differs from the one in config.json): "
            "the run's splits and standardisation would not be its own"
        )
    return replace(config, data=str(found))


def run_tables(run_dir: str | Path, config: TrainConfig, record: dict) -> TrainConfig:
    """`run_data_file` for tables: the tables as typed when they are there from here, else as recorded at training;
    refused in one line when missing or changed."""
    for spec in (config.data, record["data_file"]):
        if is_table_spec(spec) and all(path.is_file() for path in table_paths(spec).values()):
            if tables_sha256(spec) != record.get("data_sha256"):
                raise InfinimodalError(
                    f"{spec}: not the tables {run_dir} was trained on (their SHA-256 differs from the one in config.json): "
                    "the run's subjects, splits and standardisation would not be its own"
                )
            return replace(config, data=spec)
    raise InfinimodalError(
        f"{run_dir} was trained on the tables {record['data_file']}, which are missing: evaluate, report, synthesize and "
        "score read them; put them back there"
    )


def load_run_data(run_dir: str | Path, config: TrainConfig, progress: bool = True) -> MultimodalData:
    """The data set a run was trained on, from any directory (`run_data_file`), refusing a different MNIST copy (the
    packaged subset instead of the full set, or the other way round), which would score the model on digits of
    another distribution."""
    data = load_data(run_data_file(run_dir, config), progress)
    trained_on = read_config(Path(run_dir) / "config.json").get("data_source")
    if trained_on is not None and (trained_on == FALLBACK_SOURCE) != (data.source == FALLBACK_SOURCE):
        raise InfinimodalError(
            f"{run_dir} was trained on MNIST from {trained_on}, but this machine has {data.source}; "
            "point INFINIMODAL_DATA (or the run's data_dir) at the same data"
        )
    return data
