"""Peak memory of fusing M unimodal posteriors over S subsets (MoPoE's inner step), per latent family.

Each configuration runs in a fresh Python process that builds the posteriors, then fuses them with the
gradient graph kept (as in training) and backpropagates; the process reports its peak resident set size
(ru_maxrss) before and after, so the figure is what the fusion adds on top of the imports. Sizes follow
training: batch 100, truncation / dimensions 50. Prints one JSON object with MiB per configuration and
the ratio to the Gaussian fusion of the same size (memory of one process run, not a timing).

    python benchmarks/fusion_memory.py [--batch 100] [--size 50] [--modalities 3 6] [--subsets 7 63]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

FAMILIES = ("gaussian", "gated", "beta", "logitnormal", "kumaraswamy")

CHILD = """
import resource, sys, torch
from infinimodal.latents import build_latent
family, batch, size, modalities, subsets = sys.argv[1], *map(int, sys.argv[2:])
latent = build_latent(family, truncation=size + 1, latent_dim=size, alpha=5.0)
raw = (torch.randn(batch, modalities, latent.head_size) * 2).requires_grad_()
masks = torch.rand(batch, subsets, modalities, generator=torch.Generator().manual_seed(0)) < 0.5
masks[:, :, 0] = True
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fused = latent.fuse(latent.posterior(raw), masks)
latent.kl_per_dim(fused).sum().backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024.0)
"""


def peak_mib(family: str, batch: int, size: int, modalities: int, subsets: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, family, str(batch), str(size), str(modalities), str(subsets)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--modalities", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--subsets", type=int, nargs="+", default=[7, 63], help="one per --modalities entry")
    args = parser.parse_args()
    if len(args.subsets) != len(args.modalities):
        parser.error("give one --subsets value per --modalities value")
    result = {"batch": args.batch, "size": args.size, "configurations": []}
    for modalities, subsets in zip(args.modalities, args.subsets):
        mib = {family: peak_mib(family, args.batch, args.size, modalities, subsets) for family in FAMILIES}
        result["configurations"].append(
            {
                "modalities": modalities,
                "subsets": subsets,
                "peak_mib": {k: round(v, 1) for k, v in mib.items()},
                "ratio_to_gaussian": {k: round(v / max(mib["gaussian"], 1e-3), 2) for k, v in mib.items()},
            }
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
