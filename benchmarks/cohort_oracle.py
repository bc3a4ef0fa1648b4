"""What the best possible model would score on the cohort: Bayes-optimal imputation and the true log p(x), as JSON.

    python benchmarks/cohort_oracle.py --rows 800 > runs/cohort_oracle.json
    python benchmarks/cohort_oracle.py --rows 200 --runs runs/imp3/default_e50 runs/imp3/poe_s3

The cohort (`infinimodal.data.cohort`) is generated from known factors through known maps, so the best possible
imputation of modality m from the others, E[x_m | x_others], and each subject's density p(x) can be computed under the
generating process itself: by self-normalised importance sampling over the factors (4 shared and one private per
modality) with a Gaussian proposal adapted to each subject (six rounds of moment matching, then `--draws` draws). This
is the ceiling the model and its baselines are measured against (docs/results.md section 10). The log p(x) is an
importance-sampled estimate, a lower bound in expectation like the model's own: a trained model can come out a few
tenths of a nat above it. Scored on the first
`--rows` test subjects with every modality and no planted deviation (`truth["kinds"]` 0), of `cohort:test=N`.

With `--runs`, each trained run's importance-sampled log p(x) (1,000 draws) on the same subjects is given beside the
truth's, and its imputation error (the weighted conditional mean, `MultimodalModule.conditional_means`) beside the
oracle's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from infinimodal import api
from infinimodal.data import load_dataset
from infinimodal.data.cohort import SHAPES, _Maps, generate, parse_spec

NAMES = list(SHAPES)
CONTINUOUS = ("mri", "pet", "clinical")
ROUNDS = 6
ROUND_DRAWS = 4000


def training_statistics(settings: dict, maps: _Maps) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The raw training rows' mean and SD per continuous modality: `generate`'s draws replayed (the maps are its first
    draws, the training rows its next), checked against the standardised rows the data set holds."""
    rng = np.random.default_rng([settings["seed"], 4321])
    _Maps(settings["shared"], rng)
    rows = int(0.8 * settings["n"])
    shared = rng.standard_normal((rows, settings["shared"]))
    raw = {}
    for name, features in SHAPES.items():
        signal = maps(name, shared, rng.standard_normal((rows, 1)))
        if name == "genetics":
            raw[name] = rng.random((rows, features)) < 1 / (1 + np.exp(-2.0 * signal))
        else:
            raw[name] = signal + settings["noise"] * rng.standard_normal((rows, features))
    stats = {name: (raw[name].mean(0), raw[name].std(0) + 1e-8) for name in CONTINUOUS}
    held, masks, *_ = generate(settings)
    for name in CONTINUOUS:
        replayed = (raw[name] - stats[name][0]) / stats[name][1]
        observed = masks["train"][:, NAMES.index(name)]  # a missing row holds zeros
        if not np.allclose(replayed[observed], held["train"][name][observed], atol=1e-4):
            raise SystemExit(f"{name}: the replayed training rows differ from the data set's: the generator changed")
    return stats


class Oracle:
    """log p(x_m | factors) under the generating process, for standardised observations."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.maps = _Maps(settings["shared"], np.random.default_rng([settings["seed"], 4321]))
        self.stats = training_statistics(settings, self.maps)
        self.shared = settings["shared"]

    def log_likelihood(self, name: str, x: np.ndarray, shared: np.ndarray, private: np.ndarray) -> np.ndarray:
        signal = self.maps(name, shared, private)
        if name == "genetics":
            logits = 2.0 * signal
            return (x * logits - np.logaddexp(0.0, logits)).sum(1)
        mean, sd = self.stats[name]
        noise = self.settings["noise"]
        raw = x * sd + mean  # the density of the standardised value: the raw one's times prod sd
        return (-0.5 * ((raw - signal) / noise) ** 2 - np.log(np.sqrt(2 * np.pi) * noise / sd)).sum(1)

    def posterior_draws(self, row: dict[str, np.ndarray], observed: list[str], draws: int, rng) -> tuple:
        """Factors (shared, then one private per observed modality) and their normalised log weights."""
        width = self.shared + len(observed)
        mean, cov = np.zeros(width), np.eye(width)
        for round_ in range(ROUNDS + 1):
            count = ROUND_DRAWS if round_ < ROUNDS else draws
            chol = np.linalg.cholesky(cov)
            u = mean + rng.standard_normal((count, width)) @ chol.T
            log_q = -0.5 * np.sum(np.linalg.solve(chol, (u - mean).T) ** 2, 0) - np.log(np.diag(chol)).sum()
            log_w = -0.5 * (u**2).sum(1) - log_q  # N(0, I) prior over the proposal (their 2 pi terms cancel)
            for j, name in enumerate(observed):
                log_w += self.log_likelihood(name, row[name][None], u[:, : self.shared], u[:, self.shared + j, None])
            w = np.exp(log_w - log_w.max())
            w /= w.sum()
            if round_ < ROUNDS:
                mean = w @ u
                centred = u - mean
                cov = 2.0 * (centred.T @ (centred * w[:, None])) + 1e-4 * np.eye(width)
        return u, log_w

    def conditional_mean(self, row: dict[str, np.ndarray], target: str, draws: int, rng) -> np.ndarray:
        observed = [name for name in NAMES if name != target]
        u, log_w = self.posterior_draws(row, observed, draws, rng)
        w = np.exp(log_w - logsumexp(log_w))
        signal = self.maps(target, u[:, : self.shared], rng.standard_normal((len(u), 1)))
        mean, sd = self.stats[target]
        return ((w @ signal) - mean) / sd

    def log_density(self, row: dict[str, np.ndarray], draws: int, rng) -> float:
        u, log_w = self.posterior_draws(row, NAMES, draws, rng)
        # log_w holds log N(u; 0, I) - log q(u) up to the same constant: log p(x) is their mean's log
        return float(logsumexp(log_w) - np.log(len(u)))


def model_scores(run: Path, data, rows: np.ndarray, settings: dict) -> dict:
    vae, config = api.load(run)
    trained_on = parse_spec(config.data.partition(":")[2])
    if {k: v for k, v in trained_on.items() if k != "test"} != {k: v for k, v in settings.items() if k != "test"}:
        raise SystemExit(f"{run}: trained on {config.data}, not on this cohort")
    module = vae.module.eval()
    batch = data.test.batch(rows)
    out = {"run": str(run)}
    with torch.no_grad():
        torch.manual_seed(0)
        out["log_p_x"] = float(module.log_likelihood(batch["data"], batch["mask"], 1000).mean())
        for m, name in enumerate(NAMES):
            hidden = batch["mask"].clone()
            hidden[:, m] = False
            predicted = module.conditional_means(batch["data"], hidden, 1000, weighted=True)[name]
            out[name] = float(((predicted - batch["data"][name]) ** 2).mean())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=800, help="typical complete test subjects to score")
    parser.add_argument("--test", type=int, default=5000, help="cohort:test=N, as benchmarks/imputation_cohort.py")
    parser.add_argument("--cohort", default="cohort", help="the cohort's spec (its seed, noise, ...)")
    parser.add_argument("--draws", type=int, default=40_000, help="importance draws per subject after adaptation")
    parser.add_argument("--runs", nargs="*", default=[], help="trained runs of the same cohort to score beside it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = args.cohort.partition(":")[2]
    settings = parse_spec(",".join(part for part in (spec, f"test={args.test}") if part))
    if settings["groups"]:
        raise SystemExit("the oracle covers cohorts without groups")
    data = load_dataset("cohort:" + ",".join(f"{k}={v}" for k, v in settings.items()), progress=False)
    oracle = Oracle(settings)
    kinds = data.truth["kinds"]
    rows = np.flatnonzero(data.test.mask.all(1) & (kinds == 0))[: args.rows]
    rng = np.random.default_rng(1)
    errors = {name: [] for name in NAMES}
    log_density = []
    for r in rows:
        row = {name: data.test.arrays[name][r].astype(np.float64) for name in NAMES}
        for name in NAMES:
            if name in CONTINUOUS:
                predicted = oracle.conditional_mean(row, name, args.draws, rng)
                errors[name].append(float(((predicted - row[name]) ** 2).mean()))
        log_density.append(oracle.log_density(row, args.draws, rng))
    result = {
        "cohort": data.source,
        "rows": len(rows),
        "oracle": {"log_p_x": float(np.mean(log_density))}
        | {name: float(np.mean(errors[name])) for name in CONTINUOUS},
        "runs": [model_scores(Path(run), data, rows, settings) for run in args.runs],
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
