"""Tabular modalities generated from a known number of shared and private latent factors.

`synthetic:modalities=3,shared=3,private=1,features=20,n=20000,classes=4,noise=0.1,missing=0,seed=0`
(every key optional; these are the defaults). For each row, `shared` factors common to all modalities
and `private` factors per modality are drawn from N(0, 1); modality m is

    x_m = W2_m tanh(W1_m [z_shared, z_private_m] + c_m) + noise * eps,

with random Gaussian weights (32 hidden units), then standardised per feature. The label is the argmax of
a random linear map of the shared factors into `classes` classes. With `missing` = p > 0 each modality
is missing from each row with probability p (every row keeps at least one). The truth travels with the
data (`MultimodalData.truth`): the factor counts, the true joint dimension shared + modalities * private,
and the factors themselves. Split 80 / 10 / 10.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..modality import Modality
from .multimodal import MultimodalData, Split, split_rows

DEFAULTS = {
    "modalities": 3,
    "shared": 3,
    "private": 1,
    "features": 20,
    "n": 20_000,
    "classes": 4,
    "noise": 0.1,
    "missing": 0.0,
    "seed": 0,
}
_INTEGER_KEYS = ("modalities", "shared", "private", "features", "n", "classes", "seed")
HIDDEN_UNITS = 32


def read_settings(name: str, text: str, defaults: dict, integer_keys: tuple[str, ...]) -> dict:
    """'key=value,...' of a generated data set `name` -> its full settings dict; unknown keys and bad values are errors."""
    settings = dict(defaults)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in defaults:
            raise DataError(f"{name}: cannot read {part!r}; settings are {', '.join(f'{k}=...' for k in defaults)}")
        try:
            settings[key] = int(value) if key in integer_keys else float(value)
        except ValueError:
            raise DataError(f"{name}: {key} must be a number, got {value!r}") from None
    return settings


def refuse_invalid(name: str, settings: dict, checks: dict[str, bool]) -> None:
    """One DataError naming every setting of generated data set `name` whose check failed, with its value."""
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise DataError(f"{name}: invalid {', '.join(f'{k}={settings[k]}' for k in bad)}")


def parse_spec(text: str) -> dict:
    """'modalities=3,shared=8' -> the full settings dict; unknown keys and bad values are errors."""
    settings = read_settings("synthetic", text, DEFAULTS, _INTEGER_KEYS)
    checks = {
        "modalities": settings["modalities"] >= 1,
        "shared": settings["shared"] >= 0,
        "private": settings["private"] >= 0,
        "features": settings["features"] >= 1,
        "n": settings["n"] >= 10,
        "classes": settings["classes"] >= 2,
        "noise": settings["noise"] >= 0,
        "missing": 0 <= settings["missing"] < 1,
    }
    refuse_invalid("synthetic", settings, checks)
    if settings["shared"] + settings["private"] == 0:
        raise DataError("synthetic: needs at least one shared or private factor")
    return settings


def generate(settings: dict) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict]:
    """Arrays per modality (unstandardised, float64), availability mask, labels, and the truth (factors included)."""
    s = settings
    rng = np.random.default_rng([s["seed"], 1234])
    n, n_mod = s["n"], s["modalities"]
    shared = rng.standard_normal((n, s["shared"]))
    private = rng.standard_normal((n_mod, n, s["private"]))
    arrays = {}
    for m in range(n_mod):
        factors = np.concatenate([shared, private[m]], axis=1)
        w1 = rng.standard_normal((factors.shape[1], HIDDEN_UNITS)) / np.sqrt(max(factors.shape[1], 1))
        c = rng.standard_normal(HIDDEN_UNITS) * 0.5
        w2 = rng.standard_normal((HIDDEN_UNITS, s["features"])) / np.sqrt(HIDDEN_UNITS)
        x = np.tanh(factors @ w1 + c) @ w2 + s["noise"] * rng.standard_normal((n, s["features"]))
        arrays[f"x{m}"] = x  # standardised by `synthetic_dataset` with the training rows' statistics
    if s["shared"]:
        labels = np.argmax(shared @ rng.standard_normal((s["shared"], s["classes"])), axis=1)
    else:
        labels = rng.integers(0, s["classes"], n)
    mask = np.ones((n, n_mod), dtype=bool)
    if s["missing"] > 0 and n_mod > 1:
        mask = rng.random((n, n_mod)) >= s["missing"]
        empty = np.flatnonzero(~mask.any(1))
        mask[empty, rng.integers(0, n_mod, len(empty))] = True
    truth = {
        "shared": s["shared"],
        "private": s["private"],
        "modalities": n_mod,
        "true_dims": s["shared"] + n_mod * s["private"],
        "shared_factors": shared.astype(np.float32),
    }
    return arrays, mask, labels.astype(np.int64), truth


def standardized_on_training_rows(x: np.ndarray, observed: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """x standardised per feature with the mean and SD of the observed training rows only (test rows' statistics must
    not enter the data a model is scored on), float32, unobserved rows zero."""
    reference = x[train_rows[observed[train_rows]]]
    scaled = (x - reference.mean(0)) / (reference.std(0) + 1e-8)
    scaled[~observed] = 0.0
    return scaled.astype(np.float32)


def synthetic_dataset(spec: str = "") -> MultimodalData:
    settings = parse_spec(spec)
    arrays, mask, labels, truth = generate(settings)
    n = settings["n"]
    bounds = split_rows(n, [settings["seed"], 99])
    arrays = {
        name: standardized_on_training_rows(x, mask[:, m], bounds["train"])
        for m, (name, x) in enumerate(arrays.items())
    }
    splits = {
        k: Split({name: a[rows] for name, a in arrays.items()}, mask[rows], labels[rows]) for k, rows in bounds.items()
    }
    truth["shared_factors"] = {k: truth["shared_factors"][rows] for k, rows in bounds.items()}
    truth["settings"] = settings
    modalities = [Modality(name, (settings["features"],), "gaussian") for name in arrays]
    text = ",".join(f"{k}={v}" for k, v in settings.items())
    return MultimodalData(
        modalities, splits["train"], splits["valid"], splits["test"], f"synthetic:{text}", truth=truth
    )
