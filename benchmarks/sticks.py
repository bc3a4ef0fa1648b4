"""Do the gated family's sticks carry information about each subject? Prints one JSON object per run directory.

For the test rows of each run (a gated model), from the joint posterior of each row's observed modalities:
- `value_kl` and `stick_kl`: the mean KL per row of the values and of the sticks (`kl_parts`), and the sticks' share;
- the per-subject effective size n_eff(x) = sum_k E[r_k | x], the expected number of open gates (r_k the stick left
  after k breaks), against the prior's sum_k (alpha / (1 + alpha))^k: its mean, SD and 5th / 95th percentiles;
  sticks at their prior give every subject the prior's value (SD about 0);
- whether subjects that need more use more: Spearman's rho of n_eff with the number of observed modalities (rows
  missing a modality have less evidence) and with the row's value KL (how much the row's code says), each with its p;
- `gate_spread`: the largest SD over subjects of one dimension's gate E[r_k | x].

    python benchmarks/sticks.py RUN [RUN ...] [--max-rows 2000]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from scipy.stats import spearmanr

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
    gates = latent._gates(q).double().numpy()  # [rows, D] E[r_k | x]: the sticks are independent under q
    n_eff = gates.sum(1)
    ratio = latent.alpha / (1.0 + latent.alpha)
    prior = float(sum(ratio ** k for k in range(1, latent.latent_dim + 1)))
    observed = batch["mask"].sum(1).numpy()
    result = {
        "run": run, "rows": int(len(n_eff)), "dimensions": int(latent.latent_dim), "alpha": latent.alpha, "expert": latent.expert,
        "value_kl": float(parts["values"].mean()), "stick_kl": float(parts["sticks"].mean()),
        "stick_share": float(parts["sticks"].mean() / (parts["values"].mean() + parts["sticks"].mean())),
        "n_eff_prior": prior, "n_eff_mean": float(n_eff.mean()), "n_eff_sd": float(n_eff.std()),
        "n_eff_p5": float(np.percentile(n_eff, 5)), "n_eff_p95": float(np.percentile(n_eff, 95)),
        "gate_spread": float(gates.std(0).max()),
    }
    for name, other in (("observed_modalities", observed), ("value_kl", parts["values"])):
        if np.ptp(other) > 0 and np.ptp(n_eff) > 0:
            rho, p = spearmanr(n_eff, other)
            result[f"rho_n_eff_{name}"], result[f"p_n_eff_{name}"] = float(rho), float(p)
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--max-rows", type=int, default=2000)
    args = parser.parse_args(argv)
    results = [stick_information(run, args.max_rows) for run in args.runs]
    for result in results:
        print(json.dumps(result))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
