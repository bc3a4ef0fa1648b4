"""Per-feature standardisation of a data file's Gaussian and Laplace modalities.

Real multi-view data come on wildly different scales (one view in [0, 1], another up to 1e4): a Gaussian
decoder that starts at unit scale then spends its whole budget on the large view, and the KL on nothing.
For data files (`--data FILE.npz|.h5mu`), each feature of a Gaussian or Laplace modality (with a learned
scale: one given as "gaussian:S" is in the data's units, and such a modality is left as it is) is mapped to
(x - mean) / std with the mean and standard deviation of its *observed training* rows (missing rows are
neither counted nor changed). The statistics are saved in the run's config.json (plain JSON) and every
output that leaves the facade (impute, sample, the decoder's means) is mapped back to the user's units.
Likelihoods, ELBOs and log p(x) are in standardised units: log p(x) in the user's units is lower by
sum(log std) per row.
"""

from __future__ import annotations

import numpy as np

from .multimodal import MultimodalData, Split

#: Likelihood families (the name before any ":scale") whose modalities are standardised.
STANDARDIZED_FAMILIES = ("gaussian", "laplace")


def fit_standardization(data: MultimodalData, scale: bool = True) -> dict[str, dict[str, list]]:
    """{modality: {"mean": ..., "std": ...}} (nested lists, the modality's shape) for its Gaussian / Laplace
    modalities, from the observed training rows; a feature with no spread keeps std 1. Table modalities always have
    statistics (`table_standardization`); the others only when `scale`."""
    stats = {}
    for m, modality in enumerate(data.modalities):
        if modality.is_table:
            stats[modality.name] = table_standardization(
                modality, data.train.arrays[modality.name][data.train.mask[:, m]], scale
            )
            continue
        if not scale or modality.law.family not in STANDARDIZED_FAMILIES or modality.law.scale is not None:
            continue  # a fixed scale ("gaussian:0.5") was given in the data's own units: those stay as they are
        rows = data.train.mask[:, m]
        values = np.asarray(data.train.arrays[modality.name][rows], dtype=np.float64)
        if len(values) == 0:
            continue
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        stats[modality.name] = {"mean": mean.tolist(), "std": std.tolist()}
    return stats


def table_standardization(modality, observed: np.ndarray, scale: bool) -> dict[str, list]:
    """A table modality's per-position map to the model's units: a Gaussian column's mean and standard deviation over
    its filled training cells (when `scale`; else 0 and 1), a bounded score's lowest value (the model sees value - low),
    0 and 1 for every other position."""
    mean, std = np.zeros(modality.shape[0]), np.ones(modality.shape[0])
    start = 0
    for column in modality.columns:
        if column.family == "gaussian" and scale:
            cells = np.asarray(observed[:, start], dtype=np.float64)
            cells = cells[~np.isnan(cells)]
            if len(cells):
                mean[start] = cells.mean()
                spread = cells.std()
                std[start] = spread if spread > 1e-12 * max(1.0, abs(mean[start])) else 1.0
        elif column.family == "beta_binomial":
            mean[start] = column.low
        start += column.width
    return {"mean": mean.tolist(), "std": std.tolist()}


def standardize_split(split: Split, names: list[str], stats: dict) -> Split:
    """A copy of `split` whose observed rows of the standardised modalities are (x - mean) / std."""
    arrays = dict(split.arrays)
    for m, name in enumerate(names):
        if name in stats:
            arrays[name] = forward(stats[name], split.arrays[name], split.mask[:, m])
    return Split(arrays, split.mask, split.labels, split.ids)


def forward(stat: dict, values: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
    mean, std = np.asarray(stat["mean"], dtype=np.float64), np.asarray(stat["std"], dtype=np.float64)
    out = ((np.asarray(values, dtype=np.float64) - mean) / std).astype(np.float32)
    if observed is not None:
        out[~observed] = 0.0  # missing rows hold a placeholder that nothing reads
    return out


def inverse(stat: dict, values: np.ndarray) -> np.ndarray:
    mean, std = np.asarray(stat["mean"], dtype=np.float64), np.asarray(stat["std"], dtype=np.float64)
    return (np.asarray(values, dtype=np.float64) * std + mean).astype(np.float32)


def standardize_data(data: MultimodalData, scale: bool = True) -> MultimodalData:
    """Fit on the training rows and standardise every split; the statistics go to `data.standardization`. Without
    `scale`, only table modalities are mapped (their bounded scores' offsets)."""
    stats = fit_standardization(data, scale)
    names = data.names
    data.train, data.valid, data.test = (
        standardize_split(s, names, stats) for s in (data.train, data.valid, data.test)
    )
    data.standardization = stats
    return data
