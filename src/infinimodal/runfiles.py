"""Reading a run directory's files without running anything they contain.

People share run directories, so nothing read from one may execute code. `model.ckpt` is a Lightning
checkpoint, a zip of tensors and plain containers: it is opened with `torch.load(weights_only=True)`,
whose unpickler only rebuilds tensors, numbers, strings and containers and refuses any other object (a
pickle whose `__reduce__` would call `os.system` is rejected before anything runs). `config.json` is
JSON. Whatever is wrong with either file becomes one `InfinimodalError` line naming the file and the
problem, never a traceback.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import InfinimodalError

#: Prefix of the model's parameters in a checkpoint written by the training plan (`TrainingPlan.model`).
STATE_PREFIX = "model."


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The model's weights from a checkpoint, keys without the training plan's prefix; refuses anything but
    tensors and plain containers (see the module docstring)."""
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
        raise InfinimodalError(f"{path}: not a readable checkpoint ({detail.group(1).strip() if detail else 'damaged pickle data'})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise InfinimodalError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no details'})") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise InfinimodalError(f"{path}: not a checkpoint of this tool (no 'state_dict' of named tensors)")
    return {k.removeprefix(STATE_PREFIX): v for k, v in state.items()}


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a checkpoint's weights into `module`, saying which parameters do not fit instead of a traceback."""
    state = read_state_dict(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise InfinimodalError(f"{path}: its weights do not fit the model that config.json describes: parameters {'; '.join(parts)}")
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
    return record
