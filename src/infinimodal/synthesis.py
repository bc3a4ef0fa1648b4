"""Synthetic subjects with every modality, drawn from the model, and the measures of whether they can be shared.

`synthesize` draws z, then every modality from its likelihood (binary features come out 0/1, counts as integers,
categorical modalities as one-hot rows), from one of two sources (`SOURCES`):
- `prior`: z ~ p(z);
- `aggregate`: z ~ q(z | x) for a training row x drawn at random (the aggregate posterior), closer to the data
  and, by construction, closer to the training rows.
`synthesis_report` scores a synthetic set against the run's training rows and its held-out (validation) rows with the
measures of `infinimodal.evaluation.privacy`, over every real row: the rows with every modality observed, and each
modality alone on every row that has it when some rows miss modalities; the report says how many rows each used and
warns where they are too few to conclude.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .columns import COVARIATES
from .data import MultimodalData, Split
from .evaluation import privacy
from .model import MultimodalModule

#: A column whose synthetic values leave the training rows' range (or type) more often than this is reported.
UNLIKE_SHARE = 0.01
#: Synthetic rows the report scores at most (each is searched against every training and held-out row).
MAX_REPORT_ROWS = 5000


def _prior_codes(module: MultimodalModule, n: int, rows: Split | None, chosen: np.ndarray | None) -> torch.Tensor:
    return module.latent.sample_prior(n)


def _aggregate_codes(module: MultimodalModule, n: int, rows: Split | None, chosen: np.ndarray | None) -> torch.Tensor:
    assert rows is not None and chosen is not None  # `synthesize` draws rows for this source (needs_rows)
    batch = rows.batch(chosen)
    with torch.no_grad():
        return module.latent.rsample(module.conditional_posterior(batch["data"], batch["mask"]))


#: Where synthetic subjects' latent codes come from.
SOURCES = {"prior": _prior_codes, "aggregate": _aggregate_codes}
#: The source `infinimodal synthesize` uses, chosen by measurement (docs/results.md section 10).
DEFAULT_SOURCE = "prior"


@torch.no_grad()
def synthesize(
    module: MultimodalModule,
    n: int,
    source: str = DEFAULT_SOURCE,
    rows: Split | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    set_covariates=None,
) -> dict[str, np.ndarray]:
    """n synthetic rows of every modality, in the model's units: z from `source`, then x_m ~ p(x_m | z). A conditional
    model's synthetic subjects take the covariates of random training rows (`rows`; for the aggregate source, the rows
    their codes come from), changed by `set_covariates` (encoded rows -> encoded rows; `--set`) before they are decoded,
    and returned as `COVARIATES`, so that they can be reported beside the rows."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: choose {' or '.join(SOURCES)}")
    needs_rows = source == "aggregate" or module.n_covariates > 0
    if needs_rows and (rows is None or len(rows) == 0):
        raise ValueError("aggregate-posterior sampling, and a model conditioned on covariates, need the training rows")
    module.eval()
    generator = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {
        name: [] for name in module.names + ([COVARIATES] if module.n_covariates else [])
    }
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            chosen = generator.integers(0, len(rows), count) if needs_rows and rows is not None else None
            z = SOURCES[source](module, count, rows, chosen)
            covariates = None
            if module.n_covariates:
                assert rows is not None  # a conditional model needs rows (checked above)
                drawn = rows.arrays[COVARIATES][chosen]
                covariates = torch.from_numpy(
                    np.ascontiguousarray(set_covariates(drawn) if set_covariates is not None else drawn)
                )
            if covariates is not None:
                parts[COVARIATES].append(covariates.numpy())
            for name in module.names:
                parts[name].append(module.observation(name, z, covariates).sample().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def observed_rows(split: Split, names: list[str], modalities: list[str]) -> dict[str, np.ndarray]:
    """Every row of the split with each of `modalities` observed, those modalities as float arrays (images in [0, 1])."""
    columns = [names.index(name) for name in modalities]
    rows = np.flatnonzero(split.mask[:, columns].all(axis=1))
    data = split.batch(rows)["data"] if len(rows) else {}
    return {name: data[name].numpy() for name in modalities} if len(rows) else {}


def fill_empty_cells(train: dict[str, np.ndarray], holdout: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Real rows with the empty cells of table modalities (NaN) set to the training rows' mean of that cell, so that
    distances between rows are defined (synthetic rows have every cell)."""
    if not any(np.isnan(v).any() for part in (train, holdout) for v in part.values() if v.dtype.kind == "f"):
        return train, holdout
    means = {name: np.nan_to_num(np.nanmean(values, axis=0)) for name, values in train.items()}
    train_filled, holdout_filled = (
        {name: np.where(np.isnan(values), means[name], values) for name, values in part.items()}
        for part in (train, holdout)
    )
    return train_filled, holdout_filled


def _row_count(rows: dict[str, np.ndarray]) -> int:
    return int(len(next(iter(rows.values())))) if rows else 0


def privacy_block(
    synthetic: dict[str, np.ndarray], train: dict[str, np.ndarray], holdout: dict[str, np.ndarray], what: str, seed: int
) -> tuple[dict | None, list[str]]:
    """The privacy measures of the modalities in `train` on the given rows, and warnings about what they can say."""
    names = list(train)
    rows = {"training": _row_count(train), "held-out": _row_count(holdout)}
    if min(rows.values()) < 2:
        return None, [
            f"{what}: {rows['training']} training and {rows['held-out']} held-out rows: the privacy measures are not defined"
        ]
    report = privacy.privacy(
        privacy.flat({n: synthetic[n] for n in names}), privacy.flat(train), privacy.flat(holdout), seed=seed
    )
    warnings = [
        f"{what}: only {count} {side} rows: too few to conclude"
        for side, count in rows.items()
        if count < privacy.MIN_ROWS
    ]
    if report["inconclusive"]:
        warnings.append(
            f"{what}: a planted copier passes {', '.join(report['inconclusive'])} on these rows: "
            "those measures cannot tell a copier here"
        )
    return report, warnings


def synthesis_report(
    module: MultimodalModule, synthetic: dict[str, np.ndarray], data: MultimodalData, seed: int = 0, user_units=None
) -> dict:
    """Privacy, fidelity and utility of `synthetic` (model units) against the training and held-out rows.

    The held-out rows are the validation split: subjects of the training population that the model never fitted (it
    only chose its epoch on them). Not the test split: a data set may put subjects there that differ on purpose (the
    cohort's planted atypical subjects), and real rows unlike the training rows make any generator look nearer the
    training rows (membership AUC 0.60 against 0.49 for one model of the cohort, a false alarm).

    Privacy compares every training and held-out row with every modality observed (`privacy`), and, where some rows
    miss a modality, each modality alone on every row that has it (`privacy_by_modality`): a cohort with PET missing
    for 40 % has few complete rows. `memorisation` lists the measures that found the synthetic rows nearer the
    training rows than fresh subjects are, by block; `warnings` says where the rows are too few to conclude or a
    planted copier would pass; `verdict` is one line. With `user_units` (model units -> the data's), also
    `values_unlike_the_data` and its warnings."""
    # training rows as the model saw them: binarised pixels where the data set binarises its training images afresh
    # each epoch (its held-out rows are binarised once; grey training rows against binary held-out rows would make
    # every binary synthetic row look nearer the held-out rows)
    train_split, holdout_split, names = data.train_for_evaluation(), data.valid, module.names
    limited = {name: synthetic[name][:MAX_REPORT_ROWS] for name in names}
    train, holdout = fill_empty_cells(
        observed_rows(train_split, names, names), observed_rows(holdout_split, names, names)
    )
    out: dict[str, Any] = {
        "synthetic_rows": _row_count(synthetic),
        "real_rows": "every row with every modality observed",
        "training_rows": _row_count(train),
        "held_out_rows": _row_count(holdout),
    }
    out["privacy"], warnings = privacy_block(limited, train, holdout, "every modality", seed)
    memorisation = {"every modality": out["privacy"]["memorisation"]} if out["privacy"] else {}
    if not (train_split.mask.all() and holdout_split.mask.all()) and len(names) > 1:
        out["privacy_by_modality"] = {}
        for name in names:
            block, block_warnings = privacy_block(
                limited,
                *fill_empty_cells(
                    observed_rows(train_split, names, [name]), observed_rows(holdout_split, names, [name])
                ),
                name,
                seed,
            )
            out["privacy_by_modality"][name] = block
            warnings += block_warnings
            if block:
                memorisation[name] = block["memorisation"]
    out["memorisation"] = {what: found for what, found in memorisation.items() if found}
    out["verdict"] = verdict(out["memorisation"], warnings)
    if user_units is not None:
        out["values_unlike_the_data"], unlike = values_unlike_the_data(user_units(synthetic), train_split, user_units)
        warnings += unlike
    out["warnings"] = warnings
    if train and holdout:
        s, h = privacy.flat(limited), privacy.flat(holdout)
        targets = [name for name in names if module.likelihood(name).categorical]
        out["fidelity"] = privacy.fidelity(s, h, seed=seed)
        out["utility"] = privacy.utility(limited, train, holdout, targets[0] if targets else None)
    return out


def values_unlike_the_data(synthetic: dict[str, np.ndarray], train: Split, user_units) -> tuple[dict, list[str]]:
    """Per modality, the feature columns where more than UNLIKE_SHARE of the synthetic values (user units) fall outside
    the observed training rows' range, or are not whole numbers where every training value is (a 0/1 column or a 0-30
    score inside a Gaussian block is drawn as continuous values; 22 % of a cohort's synthetic MMSE exceeded 30):
    {modality: {column: {"below", "above", "not_whole"}}} as shares of the synthetic rows, and one warning per modality.
    (A Gaussian draws a few values beyond any finite sample's range: below UNLIKE_SHARE that is not reported.)"""
    found, warnings = {}, []
    for m, name in enumerate(train.arrays):  # the mask's column order
        if name not in synthetic:
            continue
        values, rows = synthetic[name], np.flatnonzero(train.mask[:, m])
        if not len(rows):
            continue
        observed = user_units({name: train.batch(rows)["data"][name].numpy().astype(np.float64)})[name].reshape(
            len(rows), -1
        )
        drawn = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        whole = _is_whole(observed).all(0)  # (to float32's precision: standardised values come back with rounding)
        low, high = observed.min(0), observed.max(0)
        slack = 1e-5 * np.maximum(1.0, np.abs(observed).max(0))
        shares = {
            "below": (drawn < low - slack).mean(0),
            "above": (drawn > high + slack).mean(0),
            "not_whole": np.where(whole, (~_is_whole(drawn)).mean(0), 0.0),
        }
        columns = np.flatnonzero(np.any([v > UNLIKE_SHARE for v in shares.values()], axis=0))
        if not len(columns):
            continue
        found[name] = {int(j): {kind: float(share[j]) for kind, share in shares.items()} for j in columns}
        worst = max(columns, key=lambda j: shares["below"][j] + shares["above"][j] + shares["not_whole"][j])
        warnings.append(
            f"{name}: {len(columns)} column(s) have synthetic values outside the training rows' range or not whole where "
            f"the data are (column {worst}: {100 * shares['below'][worst]:.0f} % below, {100 * shares['above'][worst]:.0f} % above, "
            f"{100 * shares['not_whole'][worst]:.0f} % not whole); such columns need their own likelihood (e.g. bernoulli or a bounded one)"
        )
    return found, warnings


def _is_whole(values: np.ndarray) -> np.ndarray:
    return np.abs(values - np.round(values)) <= 1e-4 * np.maximum(1.0, np.abs(values))


def verdict(memorisation: dict[str, list[str]], warnings: list[str]) -> str:
    """One line: memorisation found (where, by which measures), or not, and whether that can be concluded."""
    if memorisation:
        return "MEMORISATION: nearer the training rows than fresh subjects are, by " + "; ".join(
            f"{', '.join(found)} ({what})" for what, found in memorisation.items()
        )
    if warnings:
        return f"no memorisation found, but {len(warnings)} warning(s): " + "; ".join(warnings)
    return (
        f"no memorisation found: every measure at its null (p >= {privacy.ALPHA}), and a planted copier fails every one"
    )
