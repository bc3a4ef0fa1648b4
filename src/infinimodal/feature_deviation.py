"""Per-feature deviation z-maps: which regions or scores of a subject lie off what the model expects of them.

For a subject and an observed modality m with features f, the z-score of feature f is

    z_f = (x_f - E[x_f | the subject's other observed modalities and its covariates]) / s_f,

the observed value minus the model's prediction of it from everything else it knows about the subject
(`MultimodalModule.conditional_means`, m hidden), divided by s_f, the SD of the same residual over the reference
rows (rows of the data the model was trained on that observe m and another modality). A subject with m alone is
predicted from nothing but its covariates: by the reference rows' mean of x_f, and s_f is their SD. Everything is in
the model's units, so z needs no unit; a table's empty cell has no z (NaN). This is the normative-modelling
"deviation map" (Marquand et al. 2016; Wolfers et al. 2020 count a subject's extreme regions, |z| > 2.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import Split
from .model import MultimodalModule

#: |z| above which a feature counts as extreme (p < 0.01 two-sided under a normal reference).
EXTREME_Z = 2.6
#: Posterior draws per conditional mean.
PREDICTION_SAMPLES = 20


@torch.no_grad()
def predictions(
    module: MultimodalModule,
    split: Split,
    samples: int = PREDICTION_SAMPLES,
    batch_size: int = 500,
    by_row: bool = True,
) -> dict[str, np.ndarray]:
    """{modality: [rows, features]}: each observed modality predicted from the row's other observed modalities (NaN where
    the modality is missing or is the row's only one). `by_row`: each row's posterior draws its own, so that a subject
    gets the same map alone or among others (`MultimodalModule.conditional_draws`); the reference, the same rows at
    every call, is drawn as one batch."""
    module.eval()
    out = {name: np.full((len(split), int(np.prod(split.arrays[name].shape[1:]))), np.nan) for name in module.names}
    for rows, batch in split.batches(batch_size):
        data, mask = batch["data"], batch["mask"]
        for m, name in enumerate(module.names):
            hidden = mask.clone()
            hidden[:, m] = False
            predicted = mask[:, m] & hidden.any(dim=1)
            if not bool(predicted.any()):
                continue
            index = predicted.nonzero().squeeze(-1)
            part = {k: v.index_select(0, index) for k, v in data.items()}
            means = module.conditional_means(part, hidden.index_select(0, index), samples, seed=m, by_row=by_row)[name]
            out[name][rows[index.numpy()]] = means.reshape(len(index), -1).double().numpy()
    return out


def _values(split: Split) -> dict[str, np.ndarray]:
    """Every modality's rows as the model reads them, flattened to [rows, features] (float64)."""
    return {name: x.reshape(len(split), -1).double().numpy() for name, x in split.full_batch()["data"].items()}


@dataclass
class FeatureReference:
    """Each modality's residual spread s_f on the reference rows, and its mean and SD for subjects predicted from nothing."""

    spread: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    sd: dict[str, np.ndarray]

    @classmethod
    def fit(cls, module: MultimodalModule, reference: Split, samples: int = PREDICTION_SAMPLES) -> "FeatureReference":
        predicted = predictions(module, reference, samples, by_row=False)
        rows = _values(reference)
        spread, mean, sd = {}, {}, {}
        for m, name in enumerate(module.names):
            values = rows[name]
            observed = reference.mask[:, m]
            residual = (values - predicted[name])[observed]
            with np.errstate(invalid="ignore"):
                spread[name] = np.nanstd(residual, axis=0) + 1e-8
                mean[name] = np.nanmean(values[observed], axis=0)
                sd[name] = np.nanstd(values[observed], axis=0) + 1e-8
        return cls(spread, mean, sd)

    def z_maps(
        self, module: MultimodalModule, split: Split, samples: int = PREDICTION_SAMPLES, by_row: bool = True
    ) -> dict[str, np.ndarray]:
        """{modality: [rows, features]} z-scores (module docstring); NaN where the modality is missing or a cell empty."""
        predicted = predictions(module, split, samples, by_row=by_row)
        rows = _values(split)
        out = {}
        for m, name in enumerate(module.names):
            values = rows[name]
            alone = split.mask[:, m] & np.isnan(predicted[name]).all(axis=1)
            z = (values - predicted[name]) / self.spread[name]
            z[alone] = (values[alone] - self.mean[name]) / self.sd[name]
            z[~split.mask[:, m]] = np.nan
            out[name] = z
        return out


def extreme_counts(z_maps: dict[str, np.ndarray], threshold: float = EXTREME_Z) -> np.ndarray:
    """Each row's number of features with |z| > threshold, over every observed modality."""
    counts = 0
    for z in z_maps.values():
        with np.errstate(invalid="ignore"):
            counts = counts + (np.abs(np.nan_to_num(z)) > threshold).sum(axis=1)
    return np.asarray(counts)
