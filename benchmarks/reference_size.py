"""How few reference rows a deviation score can stand on (deviation.MIN_REFERENCE_ROWS): a trained run's test subjects
scored against references of n validation rows, each ranking compared with the ranking against the largest reference
(Spearman), for `score` and its latent part, beside the largest |score| each gives. Prints one JSON object.

Below MIN_REFERENCE_ROWS `Reference.fit` refuses; this script builds the small references directly to measure them.

    python benchmarks/reference_size.py RUN [--sizes 4 6 8 10 16] [--full 500] [--rows 200] [--samples 5]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy.stats import spearmanr

from infinimodal import api
from infinimodal.deviation import Reference, deviation_scores

COLUMNS = ("score", "latent_deviation")


def scores_against(vae, rows, reference_rows, samples: int) -> dict[str, np.ndarray]:
    """`score`'s columns for `rows` against `reference_rows` as `MultimodalVAE.score` computes them, without its floor."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        reference = Reference(vae.module, reference_rows, samples, {})
        return deviation_scores(vae.module, rows, reference, samples)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 6, 8, 10, 16])
    parser.add_argument("--full", type=int, default=500, help="reference rows of the ranking compared with")
    parser.add_argument("--rows", type=int, default=200, help="test rows scored")
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args(argv)
    vae, config = api.load(args.run)
    data = api.load_run_data(args.run, config, progress=False)
    rows = data.test.take(np.arange(min(args.rows, len(data.test))))
    full_rows = min(args.full, len(data.valid))
    full = scores_against(vae, rows, data.valid.take(np.arange(full_rows)), args.samples)
    result: dict = {"run": args.run, "rows": len(rows), "full_reference": full_rows, "sizes": {}}
    for n in args.sizes:
        small = scores_against(vae, rows, data.valid.take(np.arange(n)), args.samples)
        result["sizes"][str(n)] = {
            column: {
                "spearman_with_full": round(float(spearmanr(small[column], full[column])[0]), 3),
                "largest_abs": round(float(np.nanmax(np.abs(small[column]))), 1),
            }
            for column in COLUMNS
        }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
