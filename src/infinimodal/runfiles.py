"""Reading a run directory's files without running anything they contain.

People share run directories, so nothing read from one may execute code. `model.ckpt` is a Lightning
checkpoint, a zip of tensors and plain containers: it is opened with `torch.load(weights_only=True)`,
whose unpickler only rebuilds tensors, numbers, strings and containers and refuses any other object (a
pickle whose `__reduce__` would call `os.system` is rejected before anything runs). `config.json` is
JSON. Whatever is wrong with either file becomes one `InfinimodalError` line naming the file and the
problem, never a traceback.

The directory's schema: config.json carries `format` (RUN_FORMAT); a run written in another format is
refused with one line naming both. Files are written atomically (a temporary file in the same directory,
then a rename), so a run killed at any moment leaves either the old file or the new one. `progress.json`
says how far training got (`epochs_done` of `epochs`, `finished`, and why it stopped when it did not finish);
a run without it predates the file and finished.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import torch
from torch import Tensor, nn

from .errors import InfinimodalError
from .modality import Modality

#: Prefix of the model's parameters in a checkpoint written by the training plan (`TrainingPlan.model`).
STATE_PREFIX = "model."
#: Version of the run directory's layout. 2: count modalities' encoders read log(1 + x); progress.json;
#: last.ckpt for --resume. 3: categorical modalities have an embedding encoder and a small decoder, and record
#: their classes. Runs without `format` are format 1.
RUN_FORMAT = 3
#: What each format changed, and for which likelihoods: a run of an older format with such a modality is refused.
FORMAT_CHANGES = {
    2: (("poisson", "negative_binomial"), "count modalities' encoders now read log(1 + x)"),
    3: (("categorical",), "categorical modalities now have an embedding encoder and a small decoder"),
}
PROGRESS_FILE = "progress.json"
#: How progress.json's `stopped` begins for a run whose loss or parameters turned NaN (resuming repeats it).
DIVERGED = "diverged"
#: The checkpoint of the last finished epoch (for --resume) and of the best validation ELBO (the saved model).
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "model.ckpt"
#: The validation value the saved model (model.ckpt) is chosen on, the larger the better.
SELECTION_METRIC = "val_elbo"


def class_error_key(name: str) -> str:
    """The logged name of categorical modality `name`'s validation imputation error (a metrics.csv column)."""
    return f"val_{name}_error"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


#: Files keep the permissions an ordinary write gives them (mkstemp's are private to the owner).
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` into a temporary file beside `path`, flushed to disk, then renamed over `path`."""
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_ready(value):
    """The value with NaN and infinities as null (JSON has no NaN) and numpy numbers as Python's."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    return value


def write_json(path: str | Path, record: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))


def check_format(record: dict, path: str | Path, modalities: list[dict]) -> None:
    """Refuse a config.json written in a format this version does not read (one line naming both)."""
    found = record.get("format", 1)
    if not isinstance(found, int) or found < 1:
        raise InfinimodalError(f"{path}: run format {found!r} is not a format of this tool (formats 1 to {RUN_FORMAT})")
    if found > RUN_FORMAT:
        raise InfinimodalError(
            f"{path}: run format {found!r} is newer than this infinimodal reads (format {RUN_FORMAT}); upgrade infinimodal"
        )
    for version in range(found + 1, RUN_FORMAT + 1):
        likelihoods, change = FORMAT_CHANGES[version]
        affected = [m.get("name") for m in modalities if str(m.get("likelihood")).partition(":")[0] in likelihoods]
        if affected:
            raise InfinimodalError(
                f"{path}: run format {found}, this infinimodal reads format {RUN_FORMAT}, and they differ for modalities "
                f"{', '.join(map(str, affected))} ({change}): retrain the run"
            )


#: What a training run writes besides config.json and its log: a new run in the same directory removes them first.
RUN_FILES = ("model.ckpt", "last.ckpt", PROGRESS_FILE, "metrics.csv", "metrics.earlier.csv", "eval.json")


def clear_run_files(run_dir: str | Path) -> None:
    for name in RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)


def read_progress(run_dir: str | Path) -> dict | None:
    """progress.json of a run directory, or None for a run that predates it."""
    path = Path(run_dir) / PROGRESS_FILE
    return read_json_object(path) if path.is_file() else None


def unfinished_warning(run_dir: str | Path) -> str | None:
    """One line saying that the run's training did not finish, or None when it did."""
    progress = read_progress(run_dir)
    if progress is None or progress.get("finished"):
        return None
    why = progress.get("stopped") or "training stopped before the end (killed, or still running)"
    if str(why).startswith(DIVERGED):
        return (
            f"{run_dir}: training did not finish ({why}; {progress.get('epochs_done', 0)} of {progress.get('epochs', '?')} epochs done): "
            "these are the best weights before it diverged; resuming would diverge again: retrain with a smaller --lr or a longer --kl-warmup"
        )
    return (
        f"{run_dir}: training did not finish ({why}; {progress.get('epochs_done', 0)} of {progress.get('epochs', '?')} epochs done): "
        f"these are the best weights so far; continue it with `infinimodal train --out {run_dir} --resume`"
    )


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint as plain containers and tensors; refuses anything else (see the module docstring)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise InfinimodalError(f"{path}: not a readable checkpoint (not the zip archive that torch.save writes)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message explains weights_only at length; what matters is the object it refused
        refused = re.search(r"GLOBAL (\S+)", str(exc))
        if refused:
            raise InfinimodalError(
                f"{path}: refused to load: it holds a Python object ({refused.group(1)}) besides weights, and loading it could run code"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise InfinimodalError(
            f"{path}: not a readable checkpoint ({detail.group(1).strip() if detail else 'damaged pickle data'})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise InfinimodalError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no details'})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise InfinimodalError(
            f"{path}: not a checkpoint of this tool (a {type(checkpoint).__name__}, no 'state_dict' of named tensors)"
        )
    return checkpoint


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The model's weights from a checkpoint, keys without the training plan's prefix; refuses anything but
    tensors and plain containers (see the module docstring)."""
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise InfinimodalError(f"{path}: not a checkpoint of this tool (no 'state_dict' of named tensors)")
    return {k.removeprefix(STATE_PREFIX): v for k, v in state.items()}


def load_weights(module: nn.Module, path: str | Path, fit: Callable[[dict], None] | None = None) -> None:
    """Load a checkpoint's weights into `module`, saying which parameters do not fit instead of a traceback. `fit`, when
    given, first adapts the module to the weights (an adaptive latent takes the checkpoint's number of dimensions)."""
    state = read_state_dict(path)
    if fit is not None:
        fit(state)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise InfinimodalError(
            f"{path}: its weights do not fit the model that config.json describes: parameters {'; '.join(parts)}"
        )
    module.load_state_dict(state)


def read_json_object(path: str | Path) -> dict:
    """A JSON file holding one object (config.json, eval.json), or one clear line saying why it cannot be used."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise InfinimodalError(f"{path}: not a text file") from None
    except json.JSONDecodeError as exc:
        raise InfinimodalError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(record, dict):
        raise InfinimodalError(f"{path}: expected a JSON object, found a {type(record).__name__}")
    return record


def read_config(path: str | Path) -> dict:
    """A run's config.json as a dict, or one clear line saying why it cannot be used."""
    record = read_json_object(path)
    modalities = record.get("modalities", [])
    if not isinstance(modalities, list) or not all(isinstance(m, dict) for m in modalities):
        raise InfinimodalError(f"{path}: 'modalities' must be a list of objects")
    check_format(record, path, modalities)
    return record


def read_standardization(record: dict, path: Path, modalities: Sequence[Modality]) -> dict:
    """A run's saved standardisation statistics, checked against its modalities' shapes."""
    stats = record.get("standardization") or {}
    if not isinstance(stats, dict):
        raise InfinimodalError(f"{path}: 'standardization' must be an object of per-modality statistics")
    shapes = {m.name: m.shape for m in modalities}
    for name, stat in stats.items():
        try:
            mean, std = np.asarray(stat["mean"], dtype=np.float64), np.asarray(stat["std"], dtype=np.float64)
            ok = name in shapes and mean.shape == std.shape == shapes[name]
            ok = ok and bool(np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all())
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise InfinimodalError(
                f"{path}: the standardisation of modality {name!r} is malformed (needs a finite mean and a finite positive std of its shape)"
            )
    return stats
