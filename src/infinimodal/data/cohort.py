"""A neuroimaging-shaped synthetic cohort with known atypical subjects: `--data cohort[:settings]`.

`cohort:n=6000,shared=4,missing=0.4,atypical=0.1,groups=0,separation=1.5,seed=0` (every key optional; these are
the defaults). Each subject has `shared` latent factors (disease stage, age, ...) and each modality one private
factor; from them, through random smooth maps as in `synthetic`:

| modality | shape | likelihood | what it stands for |
|---|---|---|---|
| `mri` | 40 | gaussian | regional volumes |
| `pet` | 20 | gaussian | regional uptake; missing for a fraction `missing` of the subjects |
| `clinical` | 5 | gaussian | clinical scores |
| `genetics` | 10 | bernoulli | binary markers, logistic in the shared factors |

Training and validation subjects are a healthy reference population. A fraction `atypical` of the test subjects
deviates from it, half in each of two ways (the kinds of Lawry Aguila et al. 2023's normative modelling):
- `off_manifold`: three MRI regions and two PET regions moved by 4 standard deviations, everything else typical,
  so the subject is off the map from factors to measurements;
- `latent_extreme`: one shared factor at 4 standard deviations, pushed through the same maps, so every measure is
  coherent with the others but the subject sits far out in the population.
`truth["kinds"]` holds each test row's kind (0 typical, 1 off_manifold, 2 latent_extreme), and
`truth["shared_factors"]` each split's shared factors ({split: [rows, shared]}, as `synthetic` gives them).

With `groups=G` (G >= 2) every subject belongs to one of G diagnostic groups, drawn with equal probability, and its
shared factors are centred on its group's centre (drawn once, N(0, separation^2) per factor): the groups are the
data's labels, so `cohort:groups=4,labels=0.05` gives a group observed for 5 % of the subjects, the semi-supervised
setting of a clinical study. Without groups the data have no labels (and the same rows as before groups existed).
`test=N` draws N test subjects instead of a tenth of n; the training and validation rows, drawn first, stay the same,
so a model trained on a cohort can be scored on many more held-out subjects of it than its own test split holds.
Features are standardised with the reference (training) rows' statistics.
"""

from __future__ import annotations

import numpy as np

from ..modality import Modality
from .multimodal import MultimodalData, Split
from .synthetic import read_settings, refuse_invalid

DEFAULTS = {
    "n": 6000,
    "shared": 4,
    "missing": 0.4,
    "atypical": 0.1,
    "noise": 0.3,
    "groups": 0,
    "separation": 1.5,
    "test": 0,
    "seed": 0,
}
_INTEGER_KEYS = ("n", "shared", "groups", "test", "seed")
SHAPES = {"mri": 40, "pet": 20, "clinical": 5, "genetics": 10}
KINDS = ("typical", "off_manifold", "latent_extreme")
#: How far an atypical subject is moved, in standard deviations of the feature or factor.
SHIFT = 4.0
HIDDEN_UNITS = 32


def parse_spec(text: str) -> dict:
    settings = read_settings("cohort", text, DEFAULTS, _INTEGER_KEYS)
    checks = {
        "n": settings["n"] >= 100,
        "shared": settings["shared"] >= 1,
        "missing": 0 <= settings["missing"] < 1,
        "atypical": 0 <= settings["atypical"] < 1,
        "noise": settings["noise"] > 0,
        "groups": settings["groups"] == 0 or settings["groups"] >= 2,
        "separation": settings["separation"] >= 0,
        "test": settings["test"] >= 0,
    }
    refuse_invalid("cohort", settings, checks)
    return settings


class _Maps:
    """The random maps from factors to each modality's measurements (fixed by the seed)."""

    def __init__(self, shared: int, rng: np.random.Generator) -> None:
        self.weights = {}
        for name, features in SHAPES.items():
            inputs = shared + 1
            self.weights[name] = (
                rng.standard_normal((inputs, HIDDEN_UNITS)) / np.sqrt(inputs),
                rng.standard_normal(HIDDEN_UNITS) * 0.5,
                rng.standard_normal((HIDDEN_UNITS, features)) / np.sqrt(HIDDEN_UNITS),
            )

    def __call__(self, name: str, shared: np.ndarray, private: np.ndarray) -> np.ndarray:
        w1, c, w2 = self.weights[name]
        return np.tanh(np.concatenate([shared, private], axis=1) @ w1 + c) @ w2


class _Groups:
    """Diagnostic groups: a centre in the shared factors per group, drawn from a stream of their own so that a cohort
    without groups keeps its rows."""

    def __init__(self, s: dict) -> None:
        self.rng = np.random.default_rng([s["seed"], 4321, 1])
        self.centres = s["separation"] * self.rng.standard_normal((s["groups"], s["shared"]))

    def draw(self, rows: int) -> np.ndarray:
        return self.rng.integers(0, len(self.centres), rows)


def generate(
    s: dict,
) -> tuple[
    dict[str, dict[str, np.ndarray]],
    dict[str, np.ndarray],
    dict[str, np.ndarray],
    dict[str, np.ndarray] | None,
    dict[str, np.ndarray],
]:
    """Per split: the raw arrays, the availability mask, each row's kind (0 typical, 1 off-manifold, 2 extreme),
    with groups each row's group (else None), and the shared factors (the extreme subjects' shifted one included)."""
    rng = np.random.default_rng([s["seed"], 4321])
    maps = _Maps(s["shared"], rng)
    groups = _Groups(s) if s["groups"] else None
    n = s["n"]
    sizes = {"train": int(0.8 * n), "valid": int(0.1 * n)}
    sizes["test"] = s["test"] or n - sizes["train"] - sizes["valid"]
    arrays, masks, kinds, labels, factors = {}, {}, {}, {}, {}
    for split, rows in sizes.items():
        shared = rng.standard_normal((rows, s["shared"]))
        if groups is not None:
            labels[split] = groups.draw(rows)
            shared += groups.centres[labels[split]]
        kind = np.zeros(rows, dtype=np.int64)
        if split == "test" and s["atypical"] > 0:
            chosen = rng.permutation(rows)[: int(round(s["atypical"] * rows))]
            kind[chosen[: len(chosen) // 2]] = 1
            kind[chosen[len(chosen) // 2 :]] = 2
            extreme = np.flatnonzero(kind == 2)
            shared[extreme, rng.integers(0, s["shared"], len(extreme))] = SHIFT * rng.choice([-1.0, 1.0], len(extreme))
        out = {}
        for name, features in SHAPES.items():
            signal = maps(name, shared, rng.standard_normal((rows, 1)))
            if name == "genetics":
                out[name] = (rng.random((rows, features)) < 1 / (1 + np.exp(-2.0 * signal))).astype(np.float32)
            else:
                out[name] = signal + s["noise"] * rng.standard_normal((rows, features))
        arrays[split], kinds[split], factors[split] = out, kind, shared
        mask = np.ones((rows, len(SHAPES)), dtype=bool)
        mask[:, list(SHAPES).index("pet")] = rng.random(rows) >= s["missing"]
        masks[split] = mask
    # standardise the continuous modalities with the reference rows, then move the off-manifold subjects' regions
    for name in ("mri", "pet", "clinical"):
        mean, std = arrays["train"][name].mean(0), arrays["train"][name].std(0) + 1e-8
        for split in sizes:
            arrays[split][name] = ((arrays[split][name] - mean) / std).astype(np.float32)
    off = np.flatnonzero(kinds["test"] == 1)
    for name, count in (("mri", 3), ("pet", 2)):
        regions = rng.permuted(np.tile(np.arange(SHAPES[name]), (len(off), 1)), axis=1)[:, :count]
        signs = rng.choice([-1.0, 1.0], (len(off), count))
        arrays["test"][name][off[:, None], regions] += (SHIFT * signs).astype(np.float32)
    for split in sizes:
        missing = ~masks[split][:, list(SHAPES).index("pet")]
        arrays[split]["pet"][missing] = 0.0
    return arrays, masks, kinds, (labels or None), factors


def cohort_dataset(spec: str = "") -> MultimodalData:
    settings = parse_spec(spec)
    arrays, masks, kinds, labels, factors = generate(settings)
    splits = {
        name: Split(arrays[name], masks[name], None if labels is None else labels[name])
        for name in ("train", "valid", "test")
    }
    modalities = [
        Modality(name, (size,), "bernoulli" if name == "genetics" else "gaussian") for name, size in SHAPES.items()
    ]
    text = ",".join(f"{k}={v}" for k, v in settings.items())
    truth = {"kind_names": KINDS, "kinds": kinds["test"], "shared_factors": factors, "settings": settings}
    return MultimodalData(modalities, splits["train"], splits["valid"], splits["test"], f"cohort:{text}", truth=truth)
