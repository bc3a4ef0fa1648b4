"""Built data sets cached on disk: one folder per build, arrays as .npy (memory-mapped when read back).

The cache lives in `$INFINIMODAL_CACHE` (default `~/.cache/infinimodal`). A folder is written under a
temporary name and renamed when complete, so an interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

SPLITS = ("train", "valid", "test")


def cache_root() -> Path:
    return Path(os.environ.get("INFINIMODAL_CACHE", Path.home() / ".cache" / "infinimodal"))


def fingerprint(*arrays: np.ndarray, extra: str = "") -> str:
    """A short hash of arrays (their bytes) and a string: the identity of what a build started from."""
    digest = hashlib.sha256(extra.encode())
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def cached_build(
    kind: str, key: str, build: Callable[[], tuple[dict[str, dict[str, np.ndarray]], dict]], progress: bool = True
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Return {split: {array name: array}} and the build's metadata, building and caching on first use."""
    folder = cache_root() / kind / key
    if not (folder / "meta.json").is_file():
        if progress:
            print(f"infinimodal: building {kind} ({key}) into {folder} (once)", flush=True)
        splits, meta = build()
        partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        names = {}
        for split, arrays in splits.items():
            names[split] = sorted(arrays)
            for name, array in arrays.items():
                np.save(partial / f"{split}__{name}.npy", array)
        (partial / "meta.json").write_text(json.dumps(meta | {"arrays": names}, indent=2) + "\n")
        if folder.exists():  # another process finished first: keep its copy
            shutil.rmtree(partial)
        else:
            partial.rename(folder)
    meta = json.loads((folder / "meta.json").read_text())
    splits = {
        split: {name: np.load(folder / f"{split}__{name}.npy", mmap_mode="r") for name in names}
        for split, names in meta.pop("arrays").items()
    }
    return splits, meta
