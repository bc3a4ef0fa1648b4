"""How many true factors a trained model puts in a dimension of their own, on the factors data set (the check of
tests/test_explain.py, over several seeds and settings). Prints one JSON object.

For each setting and seed: `infinimodal train --data factors:n=2000,features=20 --epochs 25 --latent-dim 10` with the
setting's flags, then on the test rows each true factor's best-correlated dimension (decoder-space code, |r|): the
factor is *found* when |r| >= 0.7, and *one-to-one* when in addition no other factor reaches |r| 0.5 on that dimension
and no other dimension reaches 0.5 on that factor.

    python benchmarks/factor_alignment.py --seeds 0 1 2 3 4 5 --settings all="--mopoe-kl all" \\
        sticks="--mopoe-kl sticks-sampled" [--epochs 25] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

FACTORS = "factors:n=2000,features=20"
FOUND, ALONE = 0.7, 0.5


def alignment(codes: np.ndarray, factors: np.ndarray) -> dict:
    """(found, one-to-one) factors for codes [rows, D] against the true factors [rows, F]."""
    n = factors.shape[1]
    r = np.abs(np.corrcoef(factors.T, codes.T)[:n, n:])
    found = one_to_one = 0
    for k in range(n):
        j = int(np.nanargmax(r[k]))
        if r[k, j] < FOUND:
            continue
        found += 1
        one_to_one += int(np.sort(r[:, j])[-2] < ALONE and np.sort(r[k])[-2] < ALONE)
    return {"found": found, "one_to_one": one_to_one, "factors": n}


def run(flags: list[str], seed: int, epochs: int) -> dict:
    from infinimodal import api
    from infinimodal.cli import main as infinimodal
    from infinimodal.data import load_dataset

    with tempfile.TemporaryDirectory() as root:
        command = ["train", "--data", FACTORS, "--epochs", str(epochs), "--latent-dim", "10", "--quiet"]
        if infinimodal([*command, "--seed", str(seed), *flags, "--out", f"{root}/run"]) != 0:
            raise SystemExit(f"training with {' '.join(flags) or 'the defaults'} (seed {seed}) failed")
        data = load_dataset(FACTORS)
        codes = api.load(Path(root) / "run")[0].embed(data.test, decoder_space=True)
        return alignment(codes, data.truth["factors"]["test"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["default="],
        metavar="NAME=FLAGS",
        help='e.g. sticks="--mopoe-kl sticks-sampled"',
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result: dict = {"data": FACTORS, "epochs": args.epochs, "settings": {}}
    for spec in args.settings:
        name, _, flags = spec.partition("=")
        runs = {str(seed): run(shlex.split(flags), seed, args.epochs) for seed in args.seeds}
        result["settings"][name] = {
            "flags": flags,
            "runs": runs,
            "mean_found": float(np.mean([r["found"] for r in runs.values()])),
            "mean_one_to_one": float(np.mean([r["one_to_one"] for r in runs.values()])),
        }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
