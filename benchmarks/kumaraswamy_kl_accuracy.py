"""Accuracy of KL(Kumaraswamy(a, b) || Beta(1, alpha)): ours (tanh-sinh quadrature) and the SB-VAE code's
10-term series, against adaptive scipy quadrature, on a log grid of a, b in [0.05, 50], and ours on the
encoder's range (evidence up to 1e4). Prints JSON.

    python benchmarks/kumaraswamy_kl_accuracy.py [--alpha 5] [--points 25]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import scipy.special as sp
import torch
from torch.distributions import Beta, kl_divergence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_latents import reference_kl_kuma_beta  # noqa: E402  (the independent reference)

from infinimodal.latents import Kumaraswamy  # noqa: E402


def series_kl(a: float, b: float, alpha: float, terms: int = 10) -> float:
    """The original SB-VAE KL: E[log(1 - v)] by the series truncated after `terms` terms (prior Beta(1, alpha))."""
    e_log_1mv = -sum(b / m * math.exp(sp.betaln(1 + m / a, b)) for m in range(1, terms + 1))
    entropy = (1 - 1 / b) + (1 - 1 / a) * (sp.digamma(b + 1) + np.euler_gamma) - math.log(a) - math.log(b)
    return -entropy - (alpha - 1) * e_log_1mv + sp.betaln(1, alpha)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, default=5.0)
    parser.add_argument("--points", type=int, default=25)
    args = parser.parse_args()
    grid = np.exp(np.linspace(math.log(0.05), math.log(50), args.points))
    a, b = (v.ravel() for v in np.meshgrid(grid, grid, indexing="ij"))
    reference = np.array([reference_kl_kuma_beta(x, y, 1.0, args.alpha) for x, y in zip(a, b)])
    prior = Beta(torch.tensor(1.0), torch.tensor(args.alpha))
    ours32 = kl_divergence(
        Kumaraswamy(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)), prior
    ).numpy()
    series = np.array([series_kl(x, y, args.alpha) for x, y in zip(a, b)])
    scale = np.maximum(np.abs(reference), 1e-3)

    def summary(values):
        rel = np.abs(values - reference) / scale
        worst = int(np.argmax(rel))
        return {
            "max_relative_error": float(rel.max()),
            "median_relative_error": float(np.median(rel)),
            "worst_at": {
                "a": float(a[worst]),
                "b": float(b[worst]),
                "kl": float(values[worst]),
                "reference": float(reference[worst]),
            },
        }

    # the encoder's range: Kumaraswamy(1 + e_a, alpha + e_b), evidence up to 1e4
    evidence = np.exp(np.linspace(math.log(1e-2), math.log(1e4), args.points))
    ea, eb = (v.ravel() for v in np.meshgrid(evidence, evidence, indexing="ij"))
    enc_a, enc_b = 1 + ea, args.alpha + eb
    enc_reference = np.array([reference_kl_kuma_beta(x, y, 1.0, args.alpha) for x, y in zip(enc_a, enc_b)])
    enc_ours = kl_divergence(
        Kumaraswamy(torch.tensor(enc_a, dtype=torch.float32), torch.tensor(enc_b, dtype=torch.float32)), prior
    ).numpy()
    enc_rel = np.abs(enc_ours - enc_reference) / np.maximum(np.abs(enc_reference), 1e-3)
    small_b = b <= 1
    out = {
        "alpha": args.alpha,
        "grid": f"{args.points}x{args.points} log grid on [0.05, 50]",
        "ours_float32": summary(ours32),
        "series_10_terms": summary(series),
        "series_10_terms_b_le_1_mean_relative_error": float((np.abs(series - reference) / scale)[small_b].mean()),
        "ours_float32_encoder_range": {
            "grid": f"a = 1 + e_a, b = alpha + e_b, e on a {args.points}x{args.points} log grid in [0.01, 1e4]",
            "max_relative_error": float(enc_rel.max()),
            "median_relative_error": float(np.median(enc_rel)),
        },
        "examples": {
            f"a={x},b={y}": {
                "reference": reference_kl_kuma_beta(x, y, 1.0, args.alpha),
                "series": series_kl(x, y, args.alpha),
            }
            for x, y in [(5.0, 1.0), (10.0, 0.5)]
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
