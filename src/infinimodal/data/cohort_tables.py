"""A neuroimaging cohort as the folder of subject-keyed CSV tables a study holds: `--data cohort-tables[:settings]`.

`cohort-tables:n=1500,atypical=0.05,seed=0,dir=cohort-tables` (every key optional; these are the defaults) writes,
unless the folder already holds them, and then reads:

| file | columns | what it stands for |
|---|---|---|
| `mri.csv` | 12 regional volumes | atrophy with age and disease; a scanner offset per site |
| `pet.csv` | 6 regional SUVR | amyloid with disease; a site offset; absent for 40 % of the subjects |
| `eeg.csv` | 8 band powers (positive) | slowing with disease; absent for 20 % |
| `clinical.csv` | mmse (0-30), diagnosis (CN / MCI / AD), education (years), apoe4 (0/1) | 8 % of the cells empty |
| `covariates.csv` | age, sex, site (A / B / C) | what `--covariates age,sex,site` conditions on |
| `truth/atypical.csv` | subject, atypical (0/1), disease | the generator's truth: not a modality (a subfolder) |
| `truth/settings.json` | n, atypical, seed | what the folder was written with: other settings for the same folder are refused |

Every subject has a disease stage d ~ N(0, 1) and two further factors (one shared by MRI and PET, one MRI's own);
age lowers the volumes and MMSE, each site shifts its MRI and PET by a fixed offset (so site is readable from data
that no covariate explains), and a fraction `atypical` of the subjects is planted off the population's map: three
MRI regions and two PET regions moved by 4 standard deviations of their noise, everything else typical. The IDs are
`sub-0001`...; the rows of each file are shuffled (joining is by ID, not position).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

DEFAULTS: dict[str, Any] = {"n": 1500, "atypical": 0.05, "seed": 0, "dir": "cohort-tables"}
SITES = ("A", "B", "C")
SITE_SHARES = (0.5, 0.3, 0.2)
FILES = ("mri.csv", "pet.csv", "eeg.csv", "clinical.csv", "covariates.csv", "truth/atypical.csv")


def read_options(text: str) -> dict:
    options = dict(DEFAULTS)
    for part in (p for p in text.split(",") if p):
        key, sep, value = part.partition("=")
        if not sep or key not in DEFAULTS:
            raise DataError(
                f"cohort-tables:{text}: unknown setting {part!r}; settings: {', '.join(f'{k}={v}' for k, v in DEFAULTS.items())}"
            )
        try:
            options[key] = type(DEFAULTS[key])(value)
        except ValueError:
            raise DataError(
                f"cohort-tables:{text}: {key} must be a {type(DEFAULTS[key]).__name__}, got {value!r}"
            ) from None
    if options["n"] < 50 or not 0 <= options["atypical"] < 0.5:
        raise DataError(f"cohort-tables:{text}: needs n >= 50 subjects and 0 <= atypical < 0.5")
    return options


def cohort_tables(text: str = "") -> Path:
    """The folder of the cohort's tables (written when it does not hold them yet)."""
    options = read_options(text)
    folder = Path(options["dir"])
    wanted = {key: options[key] for key in ("n", "atypical", "seed")}
    if all((folder / f).is_file() for f in FILES):
        written = read_settings(folder)
        if written is not None and written != wanted:  # (a folder without the record is read as it is)
            raise DataError(
                f"cohort-tables{':' + text if text else ''}: {folder} already holds a cohort written with {written}, not "
                f"{wanted}: give another dir=, or remove that folder"
            )
        return folder
    write_cohort_tables(folder, options["n"], options["atypical"], options["seed"])
    (folder / SETTINGS).write_text(json.dumps(wanted) + "\n")
    return folder


#: Where the folder records the settings it was written with (beside the truth, outside the modality tables).
SETTINGS = "truth/settings.json"


def read_settings(folder: Path) -> dict | None:
    """The settings a cohort folder was written with (None when it does not say)."""
    try:
        return json.loads((folder / SETTINGS).read_text())
    except (OSError, ValueError):
        return None


def write_cohort_tables(folder: Path, n: int, atypical: float, seed: int) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    ids = np.array([f"sub-{i + 1:04d}" for i in range(n)])
    age = rng.uniform(55, 90, n).round(1)
    sex = rng.choice(["F", "M"], n)
    site = rng.choice(SITES, n, p=SITE_SHARES)
    disease = rng.normal(size=n)
    shared, own = rng.normal(size=n), rng.normal(size=n)
    factors = np.stack([disease, shared, own], axis=1)
    site_index = np.searchsorted(SITES, site)

    mri_maps, pet_maps = rng.normal(size=(3, 12)), rng.normal(size=(2, 6))
    mri_site, pet_site = rng.normal(scale=0.8, size=(3, 12)), rng.normal(scale=0.8, size=(3, 6))
    mri = (
        10
        + factors @ mri_maps * np.array([[0.8]])
        - 0.04 * (age[:, None] - 70) * rng.uniform(0.5, 1.5, 12)
        + mri_site[site_index]
    )
    mri += np.tanh(disease)[:, None] * 0.5 + 0.3 * rng.normal(size=(n, 12))
    pet = (
        1.2
        + 0.25 * (factors[:, :2] @ pet_maps)
        + 0.1 * np.maximum(disease, 0)[:, None] ** 2
        + 0.25 * pet_site[site_index]
        + 0.08 * rng.normal(size=(n, 6))
    )
    eeg = np.exp(
        0.3 * np.outer(disease, rng.uniform(-1, 1, 8))
        + 0.2 * np.outer(shared, rng.uniform(-1, 1, 8))
        + 0.25 * rng.normal(size=(n, 8))
    )

    planted = rng.random(n) < atypical
    mri_regions, pet_regions = rng.choice(12, 3, replace=False), rng.choice(6, 2, replace=False)
    mri[np.ix_(planted, mri_regions)] += 4 * 0.3
    pet[np.ix_(planted, pet_regions)] += 4 * 0.08

    mean_score = 1 / (1 + np.exp(-(2.6 - 0.9 * disease - 0.03 * (age - 70))))
    mmse = rng.binomial(30, rng.beta(mean_score * 40, (1 - mean_score) * 40))
    diagnosis = np.where(disease > 1.0, "AD", np.where(disease > 0.0, "MCI", "CN"))
    education = np.clip(np.round(rng.normal(14, 3, n)), 6, 22).astype(int)
    apoe4 = (rng.random(n) < 1 / (1 + np.exp(-(disease - 0.5)))).astype(int)

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truth").mkdir(exist_ok=True)
    index = pd.Index(ids, name="subject")

    def save(frame: pd.DataFrame, name: str, present: np.ndarray | None = None) -> None:
        rows = rng.permutation(np.flatnonzero(present) if present is not None else np.arange(n))
        frame.iloc[rows].to_csv(folder / name, float_format="%.4f")

    save(pd.DataFrame(mri, index=index, columns=[f"region_{j + 1:02d}" for j in range(12)]), "mri.csv")
    save(pd.DataFrame(pet, index=index, columns=[f"suvr_{j + 1}" for j in range(6)]), "pet.csv", rng.random(n) >= 0.4)
    save(
        pd.DataFrame(
            eeg,
            index=index,
            columns=[f"{band}_{side}" for band in ("delta", "theta", "alpha", "beta") for side in ("left", "right")],
        ),
        "eeg.csv",
        rng.random(n) >= 0.2,
    )
    clinical = pd.DataFrame(
        {"mmse": mmse, "diagnosis": diagnosis, "education": education, "apoe4": apoe4}, index=index
    ).astype(object)
    clinical = clinical.mask(rng.random(clinical.shape) < 0.08, "")
    save(clinical, "clinical.csv")
    save(pd.DataFrame({"age": age, "sex": sex, "site": site}, index=index), "covariates.csv")
    pd.DataFrame({"atypical": planted.astype(int), "disease": disease.round(4)}, index=index).to_csv(
        folder / "truth" / "atypical.csv"
    )
