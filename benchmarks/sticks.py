"""Do the gated family's sticks carry information about each subject? Prints one JSON object per run directory.

For the test rows of each run (a gated model), from the joint posterior of each row's observed modalities:
- `value_kl` and `stick_kl`: the mean KL per row of the values and of the sticks (`kl_parts`), and the sticks' share;
- the per-subject effective size n_eff(x) = sum_k E[r_k | x], the expected number of open gates (r_k the stick left
  after k breaks), against the prior's sum_k (alpha / (1 + alpha))^k: its mean, SD and 5th / 95th percentiles;
  sticks at their prior give every subject the prior's value (SD about 0);
- whether subjects that need more use more: Spearman's rho of n_eff with the number of observed modalities (rows
  missing a modality have less evidence) and with the row's value KL (how much the row's code says), each with its p;
- `gate_spread`: the largest SD over subjects of one dimension's gate E[r_k | x].

- with labels (the data's): each class's mean n_eff, and the AUC with which n_eff tells the last class from the others.

`--write-heterogeneous FILE.npz` writes data whose subjects differ in how many dimensions they need: three tabular
modalities (20 features, x_m = W2_m tanh(W1_m f + c_m) + 0.1 noise) from 8 factors, of which a "simple" half of the
subjects (label 0) uses the first 2 (the other 6 are 0) and a "complex" half (label 1) all 8. Learned sticks should
give the complex subjects more open gates; sticks at their prior give both the same.

    python benchmarks/sticks.py RUN [RUN ...] [--max-rows 2000]
    python benchmarks/sticks.py --write-heterogeneous runs/heterogeneous.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from infinimodal import api
from infinimodal.rundata import load_run_data


@torch.no_grad()
def stick_information(run: str, max_rows: int = 2000) -> dict:
    vae, config = api.load(run)
    module = vae.module
    latent = module.latent
    if latent.name != "gated":
        return {"run": run, "skipped": f"latent {latent.name}: only the gated family gates its dimensions with sticks"}
    module.eval()
    latent.warm_up(1.0)
    data = load_run_data(run, config, progress=False)
    split = data.test.take(np.arange(min(max_rows, len(data.test))))
    batch = split.full_batch()
    q = module.posterior(batch["data"], batch["mask"])
    parts = {name: value.double().numpy() for name, value in latent.kl_parts(q).items()}
    gates = latent.row_gates(q).double().numpy()  # [rows, D] E[r_k | x]: the sticks are independent under q
    n_eff = gates.sum(1)
    ratio = latent.alpha / (1.0 + latent.alpha)
    prior = float(sum(ratio**k for k in range(1, latent.latent_dim + 1)))
    observed = batch["mask"].sum(1).numpy()
    result = {
        "run": run,
        "rows": int(len(n_eff)),
        "dimensions": int(latent.latent_dim),
        "alpha": latent.alpha,
        "expert": latent.expert,
        "value_kl": float(parts["values"].mean()),
        "stick_kl": float(parts["sticks"].mean()),
        "stick_share": float(parts["sticks"].mean() / (parts["values"].mean() + parts["sticks"].mean())),
        "n_eff_prior": prior,
        "n_eff_mean": float(n_eff.mean()),
        "n_eff_sd": float(n_eff.std()),
        "n_eff_p5": float(np.percentile(n_eff, 5)),
        "n_eff_p95": float(np.percentile(n_eff, 95)),
        "gate_spread": float(gates.std(0).max()),
    }
    if split.labels is not None:
        labels = split.labels
        result["n_eff_by_label"] = {str(c): float(n_eff[labels == c].mean()) for c in np.unique(labels)}
        last = labels == labels.max()
        if 0 < last.sum() < len(labels):
            result["auc_n_eff_last_label"] = float(roc_auc_score(last, n_eff))
    for name, other in (("observed_modalities", observed), ("value_kl", parts["values"])):
        if np.ptp(other) > 0 and np.ptp(n_eff) > 0:
            rho, p = spearmanr(n_eff, other)
            result[f"rho_n_eff_{name}"], result[f"p_n_eff_{name}"] = float(rho), float(p)
    return result


def write_heterogeneous(path: Path, n: int = 6000, seed: int = 0) -> None:
    """The module docstring's data: half the subjects use 2 of 8 factors, half all 8; labels say which."""
    rng = np.random.default_rng([seed, 5150])
    factors = rng.standard_normal((n, 8))
    labels = (rng.random(n) < 0.5).astype(np.int64)
    factors[labels == 0, 2:] = 0.0
    arrays = {}
    for m in range(3):
        w1 = rng.standard_normal((8, 32)) / np.sqrt(8)
        w2 = rng.standard_normal((32, 20)) / np.sqrt(32)
        x = np.tanh(factors @ w1 + 0.5 * rng.standard_normal(32)) @ w2 + 0.1 * rng.standard_normal((n, 20))
        arrays[f"x{m}"] = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    np.savez(path, labels=labels, **arrays)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--max-rows", type=int, default=2000)
    parser.add_argument("--write-heterogeneous", type=Path, metavar="FILE.npz")
    args = parser.parse_args(argv)
    if args.write_heterogeneous:
        write_heterogeneous(args.write_heterogeneous)
        return []
    results = [stick_information(run, args.max_rows) for run in args.runs]
    for result in results:
        print(json.dumps(result))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
