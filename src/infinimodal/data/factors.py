"""Modalities generated from factors with a known pattern over the modalities and known sparse loadings: the data on
which `infinimodal explain` and `infinimodal stability` can be checked against the truth.

`factors:modalities=3,features=30,n=3000,sparsity=0.3,noise=0.5,warp=0,seed=0` (every key optional; these are the
defaults). With M modalities there are 2 M factors, each N(0, 1) per subject:
- factor 0 lives in every modality;
- factors 1 .. M-1 each live in two neighbouring modalities (m - 1 and m);
- factors M .. 2M-1 are private, one per modality.
Factor k loads on a random share `sparsity` of the features of each modality it lives in (at least 2 features),
with weights of random sign and size 0.5 to 1.5 times its strength, which falls from 1.0 (factor 0) to 0.5 (the
last): the factors explain different amounts of variance, so an ordered latent has an order to find. Modality m is

    x_m = L_m f + noise * eps      (warp = 0, MOFA's linear model),
    x_m = L_m f + warp * tanh(L_m f) ** 2 + noise * eps      (warp > 0: a nonlinear map of the same loadings),

standardised per feature on the training rows. The label is whether factor 0 is positive (two classes), so its
association with the dimension that carries factor 0 is known. The truth travels with the data
(`MultimodalData.truth`): `pattern` [factors, modalities] (where each factor lives), `loadings` {modality:
[features, factors]} and `factors` {split: [rows, factors]}. Split 80 / 10 / 10.
"""

from __future__ import annotations

import numpy as np

from ..modality import Modality
from .multimodal import MultimodalData, Split, split_rows
from .synthetic import read_settings, refuse_invalid, standardized_on_training_rows

DEFAULTS = {"modalities": 3, "features": 30, "n": 3000, "sparsity": 0.3, "noise": 0.5, "warp": 0.0, "seed": 0}
_INTEGER_KEYS = ("modalities", "features", "n", "seed")


def parse_spec(text: str) -> dict:
    s = read_settings("factors", text, DEFAULTS, _INTEGER_KEYS)
    checks = {
        "modalities": s["modalities"] >= 2,
        "features": s["features"] >= 4,
        "n": s["n"] >= 50,
        "sparsity": 0 < s["sparsity"] <= 1,
        "noise": s["noise"] > 0,
        "warp": s["warp"] >= 0,
    }
    refuse_invalid("factors", s, checks)
    return s


def factor_pattern(n_modalities: int) -> np.ndarray:
    """[2 M, M] bool: which modalities each factor lives in (module docstring)."""
    pattern = np.zeros((2 * n_modalities, n_modalities), dtype=bool)
    pattern[0] = True
    for k in range(1, n_modalities):
        pattern[k, [k - 1, k]] = True
    for m in range(n_modalities):
        pattern[n_modalities + m, m] = True
    return pattern


def generate(s: dict) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Unstandardised arrays per modality, the factors [n, K] and the truth (pattern and loadings)."""
    rng = np.random.default_rng([s["seed"], 4321])
    n_mod, p = s["modalities"], s["features"]
    pattern = factor_pattern(n_mod)
    k_factors = len(pattern)
    strength = np.linspace(1.0, 0.5, k_factors)
    factors = rng.standard_normal((s["n"], k_factors))
    arrays, loadings = {}, {}
    for m in range(n_mod):
        w = np.zeros((p, k_factors))
        for k in np.flatnonzero(pattern[:, m]):
            chosen = rng.choice(p, max(2, int(round(s["sparsity"] * p))), replace=False)
            w[chosen, k] = rng.choice([-1.0, 1.0], len(chosen)) * rng.uniform(0.5, 1.5, len(chosen)) * strength[k]
        signal = factors @ w.T
        if s["warp"] > 0:
            signal = signal + s["warp"] * np.tanh(signal) ** 2
        arrays[f"m{m}"] = signal + s["noise"] * rng.standard_normal((s["n"], p))
        loadings[f"m{m}"] = w
    return arrays, factors, {"pattern": pattern, "loadings": loadings, "strength": strength}


def factors_dataset(spec: str = "") -> MultimodalData:
    s = parse_spec(spec)
    arrays, factors, truth = generate(s)
    n = s["n"]
    mask = np.ones((n, s["modalities"]), dtype=bool)
    labels = (factors[:, 0] > 0).astype(np.int64)
    bounds = split_rows(n, [s["seed"], 98])
    arrays = {
        name: standardized_on_training_rows(x, mask[:, m], bounds["train"])
        for m, (name, x) in enumerate(arrays.items())
    }
    splits = {
        k: Split({name: a[rows] for name, a in arrays.items()}, mask[rows], labels[rows]) for k, rows in bounds.items()
    }
    truth |= {
        "factors": {k: factors[rows].astype(np.float32) for k, rows in bounds.items()},
        "settings": s,
        "true_dims": len(truth["pattern"]),
    }
    modalities = [Modality(name, (s["features"],), "gaussian") for name in arrays]
    text = ",".join(f"{k}={v:g}" for k, v in s.items())
    return MultimodalData(modalities, splits["train"], splits["valid"], splits["test"], f"factors:{text}", truth=truth)
