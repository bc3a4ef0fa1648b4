"""What each latent dimension does, in terms of the modalities and their features (`infinimodal explain`).

For held-out rows, each dimension j of the code the decoders read (`LatentFamily.decoder_input`: the Gaussian's z,
the gated family's gated values, the stick families' logit v) is examined in index order:

- **KL and use.** Its mean KL to the prior under the joint posterior and its share of the total; under each
  modality's own posterior (`kl_by_modality`): which modalities' encoders put information there. A dimension is
  *used* when its KL exceeds USED_KL nats and it changes some modality's fit by at least USED_R2.
- **Variance explained** per modality, MOFA's table generalised to nonlinear decoders and non-Gaussian features.
  R^2(mu) = 1 - sum_rows,features d(x, mu) / sum d(x, mean of x) over observed cells, with d the modality's unit
  deviance (`Likelihood.deviance`: the squared error for Gaussian features, where this is MOFA's 1 - SS_res / SS_tot;
  Bernoulli, categorical and Poisson deviances for binary, categorical and count features, as MOFA-FLEX does for
  non-Gaussian views). With c the rows' posterior-mean codes and c0 every coordinate at its prior value (what the
  decoders read at the prior's mean: 0 for the Gaussian and gated families):
  `variance_explained` (the dimension alone) = R^2(decode(c0 with coordinate j from c)) - R^2(decode(c0)),
  `variance_explained_leave_one_out` = R^2(decode(c)) - R^2(decode(c with coordinate j at its prior value)).
  For a linear decoder both are MOFA's per-factor R^2; a dimension at its prior gives 0 in both.
- **Feature effects**: the change of each feature's decoded mean, in the data's units, when coordinate j moves from
  its 5th to its 95th percentile over the rows, every other coordinate at the row's own posterior mean, averaged
  over the rows (a partial dependence: signed, so a region that shrinks with the dimension has a negative effect).
- **Shared or private**: the modalities it explains (R^2 alone or leave-one-out at least EXPLAINS_R2): "shared"
  with two or more, "private" with one.
- **Associations** with covariates and labels (`associations.associations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..columns import COVARIATES, positions
from ..data import Split
from ..model import MultimodalModule
from .associations import associations
from .metrics import KL_ACTIVE_THRESHOLD, encode

#: Mean KL (nats) above which a dimension carries information (as `kl_active`).
USED_KL = KL_ACTIVE_THRESHOLD
#: Change of some modality's R^2 (alone or leave-one-out) from which a dimension with KL counts as used.
USED_R2 = 0.005
#: R^2 from which a dimension "explains" a modality (shared / private).
EXPLAINS_R2 = 0.02
#: Held-out rows explained at most (the first ones).
MAX_ROWS = 2000
#: Features named per modality and dimension in `dimensions` (all of them are in `feature_effects`).
TOP_FEATURES = 5
#: The percentiles a coordinate moves between for the feature effects.
EFFECT_PERCENTILES = (5.0, 95.0)


@dataclass
class HeldOutCodes:
    """The rows' posterior-mean codes and their KLs, and the modalities' own KLs per dimension."""

    code: np.ndarray  # [n, D] what the decoders read, at the joint posterior's mean
    kl: np.ndarray  # [D] mean KL per dimension under the joint posterior
    kl_by_modality: dict[str, np.ndarray]  # name -> [D] under q(z | x_m), rows where m is observed
    covariates: torch.Tensor | None


def held_out_codes(module: MultimodalModule, split: Split) -> HeldOutCodes:
    subsets = [None] + [(m,) for m in range(module.n_modalities)]
    encoded = encode(module, split, subsets)
    joint = encoded[0]
    kl_by = {
        name: (out["kl_per_dim"][out["rows"]].mean(0) if out["rows"].any() else np.zeros(joint["kl_per_dim"].shape[1]))
        for name, out in zip(module.names, encoded[1:])
    }
    covariates = module.covariates_of(split.full_batch()["data"]) if module.n_covariates else None
    return HeldOutCodes(joint["decoder_space"].astype(np.float32), joint["kl_per_dim"].mean(0), kl_by, covariates)


@torch.no_grad()
def prior_code(module: MultimodalModule) -> np.ndarray:
    """[D]: what the decoders read at the prior's mean, each coordinate's "off" value (0 for the Gaussian and gated
    families, logit 1 / (1 + alpha) for sticks read as logit v)."""
    mean = module.latent.prior().mean
    return module.latent.decoder_input(mean.reshape(1, -1)).reshape(-1).numpy()


@torch.no_grad()
def decoded(
    module: MultimodalModule, code: np.ndarray, covariates: torch.Tensor | None, batch_size: int = 1000
) -> dict[str, np.ndarray]:
    """E[x_m | code] for every row of `code` [n, D] (float64)."""
    module.eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in module.names}
    for start in range(0, len(code), batch_size):
        rows = slice(start, start + batch_size)
        given = None if covariates is None else covariates[rows]
        for name, mean in module.decode_code_mean(
            torch.from_numpy(np.ascontiguousarray(code[rows], dtype=np.float32)), given
        ).items():
            parts[name].append(mean.double().numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


class FitMeasure:
    """R^2 of decoded means against the observed cells of each modality (module docstring): the null deviance,
    d(x, mean of x), is computed once."""

    def __init__(self, module: MultimodalModule, split: Split) -> None:
        batch = split.full_batch()
        self.module = module
        self.rows = {name: np.flatnonzero(split.mask[:, m]) for m, name in enumerate(module.names)}
        self.values = {name: batch["data"][name][torch.from_numpy(self.rows[name])].double() for name in module.names}
        self.null = {}
        for name, x in self.values.items():
            centre = torch.nanmean(x, dim=0, keepdim=True).expand_as(x)
            self.null[name] = float(torch.nansum(module.likelihood(name).deviance(x, centre)))

    def r2(self, means: dict[str, np.ndarray]) -> dict[str, float]:
        out = {}
        for name, x in self.values.items():
            if not len(x) or self.null[name] <= 0:
                out[name] = float("nan")
                continue
            mean = torch.from_numpy(means[name][self.rows[name]]).reshape(x.shape)
            out[name] = 1.0 - float(torch.nansum(self.module.likelihood(name).deviance(x, mean))) / self.null[name]
        return out

    def measure_names(self) -> dict[str, str]:
        return {name: self.module.likelihood(name).deviance_name for name in self.module.names}


def _with_column(code: np.ndarray, j: int, values) -> np.ndarray:
    out = code.copy()
    out[:, j] = values
    return out


def variance_explained(
    module: MultimodalModule, fit: FitMeasure, codes: HeldOutCodes, prior: np.ndarray
) -> dict[str, dict]:
    """{"alone": {modality: [D]}, "leave_one_out": {...}, "total": {modality: R^2 of every dimension}}: each dimension's
    R^2 alone is measured from the R^2 with every coordinate at its prior value, so a dimension at its prior gives 0."""
    code, covariates = codes.code, codes.covariates
    dims = code.shape[1]
    null_code = np.broadcast_to(prior, code.shape).astype(np.float32)
    total = fit.r2(decoded(module, code, covariates))
    at_prior = fit.r2(decoded(module, null_code, covariates))
    alone: dict[str, list[float]] = {name: [] for name in module.names}
    loo: dict[str, list[float]] = {name: [] for name in module.names}
    for j in range(dims):
        only_j = fit.r2(decoded(module, _with_column(null_code, j, code[:, j]), covariates))
        without_j = fit.r2(decoded(module, _with_column(code, j, prior[j]), covariates))
        for name in module.names:
            alone[name].append(only_j[name] - at_prior[name])
            loo[name].append(total[name] - without_j[name])
    return {"alone": alone, "leave_one_out": loo, "total": total}


def feature_effects(
    module: MultimodalModule,
    codes: HeldOutCodes,
    to_user_units: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """{modality: [D, features]}: the mean change of each feature's decoded mean (data units) as coordinate j moves
    from its 5th to its 95th percentile over the rows (module docstring)."""
    code, covariates = codes.code, codes.covariates
    low, high = np.percentile(code, EFFECT_PERCENTILES, axis=0)
    effects: dict[str, list[np.ndarray]] = {name: [] for name in module.names}
    for j in range(code.shape[1]):
        at_low = to_user_units(decoded(module, _with_column(code, j, low[j]), covariates))
        at_high = to_user_units(decoded(module, _with_column(code, j, high[j]), covariates))
        for name in module.names:
            effects[name].append(
                (np.asarray(at_high[name], np.float64) - np.asarray(at_low[name], np.float64))
                .reshape(len(code), -1)
                .mean(0)
            )
    return {name: np.stack(rows) for name, rows in effects.items()}


def explain(
    module: MultimodalModule,
    split: Split,
    feature_names: dict[str, list[str]],
    to_user_units: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = lambda values: values,
    variables: dict[str, np.ndarray] | None = None,
    max_rows: int = MAX_ROWS,
) -> dict:
    """The explanation of every dimension on the rows of `split`, as a JSON-ready dict (the module docstring).

    Args:
        module: the trained model.
        split: held-out rows (the first `max_rows` are used).
        feature_names: a name per feature of each modality.
        to_user_units: maps model-space values to the data's units (`MultimodalVAE.to_user_units`), so that feature
            effects read in the data's units.
        variables: {name: a value per row} whose associations with each dimension are measured (covariates, labels,
            categorical columns).
        max_rows: rows used at most.

    Returns:
        `dimensions` (one record per dimension, in index order), `used`, `kl`, `kl_share`, `kl_by_modality`,
        `variance_explained` and `variance_explained_leave_one_out` ({modality: [R^2 per dimension]}),
        `variance_explained_total`, `variance_explained_measure`, `feature_effects` ({modality: {"features": names,
        "effects": [[per feature] per dimension]}}) and `associations` with `variables`.
    """
    split = split.take(slice(0, max_rows)) if len(split) > max_rows else split
    variables = {name: np.asarray(values)[: len(split)] for name, values in (variables or {}).items()}
    module.eval()
    codes = held_out_codes(module, split)
    dims = min(
        codes.code.shape[1], len(codes.kl)
    )  # a stick family reading pi or log pi has one coordinate more than sticks
    codes.code = codes.code[:, :dims]
    kl = np.asarray(codes.kl[:dims], dtype=np.float64)
    prior = prior_code(module)[:dims]
    fit = FitMeasure(module, split)
    r2 = variance_explained(module, fit, codes, prior)
    effects = feature_effects(module, codes, to_user_units)
    effect_size = np.array(
        [max(max(r2["alone"][name][j], r2["leave_one_out"][name][j]) for name in module.names) for j in range(dims)]
    )
    used = (kl > USED_KL) & (np.nan_to_num(effect_size) >= USED_R2)
    explained = [
        [name for name in module.names if max(r2["alone"][name][j], r2["leave_one_out"][name][j]) >= EXPLAINS_R2]
        for j in range(dims)
    ]
    found = associations(codes.code, variables)
    total_kl = float(kl.sum())
    records = []
    for j in range(dims):
        top = {}
        for name in module.names:
            order = np.argsort(-np.abs(effects[name][j]))[:TOP_FEATURES]
            top[name] = [{"feature": feature_names[name][i], "effect": float(effects[name][j, i])} for i in order]
        records.append(
            {
                "index": j,
                "used": bool(used[j]),
                "kl": float(kl[j]),
                "kl_share": float(kl[j] / total_kl) if total_kl > 0 else 0.0,
                "effect_size": float(effect_size[j]),
                "modalities": explained[j],
                "sharing": "shared" if len(explained[j]) > 1 else "private" if explained[j] else "none",
                "top_features": top,
                "associations": {
                    name: {key: a[key][j] for key in ("statistic", "p", "q")} | {"test": a["test"]}
                    for name, a in found.items()
                },
            }
        )
    return {
        "rows": len(split),
        "dimensions": records,
        "used": [bool(u) for u in used],
        "n_used": int(used.sum()),
        "kl": kl.tolist(),
        "kl_share": (kl / total_kl if total_kl > 0 else np.zeros_like(kl)).tolist(),
        "kl_by_modality": {
            name: np.asarray(v[:dims], dtype=np.float64).tolist() for name, v in codes.kl_by_modality.items()
        },
        "variance_explained": r2["alone"],
        "variance_explained_leave_one_out": r2["leave_one_out"],
        "variance_explained_total": r2["total"],
        "variance_explained_measure": fit.measure_names(),
        "feature_effects": {
            name: {
                "features": list(feature_names[name]),
                "effects": effects[name].tolist(),
                "moves": f"from the {EFFECT_PERCENTILES[0]:g}th to the {EFFECT_PERCENTILES[1]:g}th percentile of the dimension, in the data's units",
            }
            for name in module.names
        },
        "associations": found,
        "thresholds": {"used_kl": USED_KL, "used_r2": USED_R2, "explains_r2": EXPLAINS_R2},
    }


def feature_names(modalities) -> dict[str, list[str]]:
    """A name per (flattened) feature of each modality: a table's column names (`column=class` for a class), a
    categorical modality's `name=class`, `name[i]` otherwise."""
    out = {}
    for modality in modalities:
        if modality.feature_names is not None:
            out[modality.name] = list(modality.feature_names)
        elif modality.categorical:
            out[modality.name] = [f"{modality.name}={c}" for c in modality.class_values]
        else:
            out[modality.name] = [f"{modality.name}[{i}]" for i in range(int(np.prod(modality.shape)))]
    return out


def explanation_variables(modalities, split: Split, covariates=None) -> dict[str, np.ndarray]:
    """What dimensions are tested against, one value per row (None where unknown): the covariates a model is
    conditioned on (their values), the split's labels, every categorical modality's class and every categorical
    column of a table."""
    out: dict[str, np.ndarray] = {}
    if covariates is not None and COVARIATES in split.arrays:
        out |= covariates.decode(split.arrays[COVARIATES])
    if split.labels is not None:
        out["label"] = split.labels
    for m, modality in enumerate(modalities):
        values = split.arrays[modality.name]
        if modality.categorical:
            classes = np.asarray(modality.class_values, dtype=object)[values.argmax(1)]
            # numpy's stubs take a None y for the one-argument where (a tuple of indices); here it is the value None
            out[modality.name] = np.where(split.mask[:, m], classes, None)  # type: ignore[assignment]
        elif modality.is_table:
            for column, (start, width) in zip(modality.columns, positions(modality.columns)):
                if column.family != "categorical":
                    continue
                block = values[:, start : start + width]
                given = split.mask[:, m] & np.isfinite(block).all(1)
                classes = np.asarray(column.classes, dtype=object)[np.nan_to_num(block).argmax(1)]
                # numpy's stubs take a None y for the one-argument where (as above)
                out[f"{modality.name}.{column.name}"] = np.where(given, classes, None)  # type: ignore[assignment]
    return out
