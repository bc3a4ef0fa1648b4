"""Synthetic subjects with every modality, drawn from the model, and the measures of whether they can be shared.

`synthesize` draws z, then every modality from its likelihood (binary features come out 0/1, counts as integers,
categorical modalities as one-hot rows), from one of two sources (`SOURCES`):
- `prior`: z ~ p(z);
- `aggregate`: z ~ q(z | x) for a training row x drawn at random (the aggregate posterior), closer to the data
  and, by construction, closer to the training rows.
`synthesis_report` scores a synthetic set against the run's training rows and its held-out (test) rows with the
measures of `infinimodal.evaluation.privacy`. Distances need every feature, so they use the rows with every modality
observed (complete cases); the report says how many.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import MultimodalData, Split
from .evaluation import privacy
from .model import MultimodalModule

#: Rows of each real set the report uses at most (nearest-neighbour searches grow with their product).
MAX_REPORT_ROWS = 5000


def _prior_codes(module: MultimodalModule, n: int, rows: Split | None, generator: np.random.Generator) -> torch.Tensor:
    return module.latent.sample_prior(n)


def _aggregate_codes(module: MultimodalModule, n: int, rows: Split | None, generator: np.random.Generator) -> torch.Tensor:
    if rows is None or len(rows) == 0:
        raise ValueError("aggregate-posterior sampling needs the training rows")
    chosen = generator.integers(0, len(rows), n)
    batch = rows.batch(chosen)
    with torch.no_grad():
        return module.latent.rsample(module.conditional_posterior(batch["data"], batch["mask"]))


#: Where synthetic subjects' latent codes come from.
SOURCES = {"prior": _prior_codes, "aggregate": _aggregate_codes}
#: The source `infinimodal synthesize` uses, chosen by measurement (docs/results.md section 10).
DEFAULT_SOURCE = "prior"


@torch.no_grad()
def synthesize(module: MultimodalModule, n: int, source: str = DEFAULT_SOURCE, rows: Split | None = None, seed: int = 0,
               batch_size: int = 1000) -> dict[str, np.ndarray]:
    """n synthetic rows of every modality, in the model's units: z from `source`, then x_m ~ p(x_m | z)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: choose {' or '.join(SOURCES)}")
    module.eval()
    generator = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in module.names}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            z = SOURCES[source](module, min(batch_size, n - start), rows, generator)
            for name in module.names:
                parts[name].append(module.observation(name, z).sample().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def complete_rows(split: Split, limit: int, seed: int) -> dict[str, np.ndarray]:
    """Up to `limit` rows of the split with every modality observed, as float arrays (images in [0, 1])."""
    rows = np.flatnonzero(split.mask.all(axis=1))
    rows = np.sort(np.random.default_rng(seed).permutation(rows)[:limit])
    return {name: value.numpy() for name, value in split.batch(rows)["data"].items()} if len(rows) else {}


def synthesis_report(module: MultimodalModule, synthetic: dict[str, np.ndarray], data: MultimodalData, seed: int = 0) -> dict:
    """Privacy, fidelity and utility of `synthetic` (model units) against the training and held-out rows."""
    # training rows as the model saw them: binarised pixels where the data set binarises its training images afresh
    # each epoch (its held-out rows are binarised once; grey training rows against binary held-out rows would make
    # every binary synthetic row look nearer the held-out rows)
    train, holdout = complete_rows(data.train_for_evaluation(), MAX_REPORT_ROWS, seed), complete_rows(data.test, MAX_REPORT_ROWS, seed)
    names = module.names
    out = {"synthetic_rows": int(len(next(iter(synthetic.values())))), "real_rows": "rows with every modality observed",
           "training_rows": int(len(next(iter(train.values())))) if train else 0, "held_out_rows": int(len(next(iter(holdout.values())))) if holdout else 0}
    if not train or not holdout:
        out["note"] = "no training or held-out row has every modality observed: distances are not defined"
        return out
    limited = {name: synthetic[name][:MAX_REPORT_ROWS] for name in names}
    s, t, h = privacy.flat(limited), privacy.flat({n: train[n] for n in names}), privacy.flat({n: holdout[n] for n in names})
    targets = [name for name in names if module.likelihood(name).categorical]
    out["privacy"] = privacy.privacy(s, t, h, seed=seed)
    out["fidelity"] = privacy.fidelity(s, h, seed=seed)
    out["utility"] = privacy.utility(limited, train, holdout, targets[0] if targets else None)
    return out
