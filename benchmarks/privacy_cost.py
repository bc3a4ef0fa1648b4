"""Can the privacy report tell a copier from a model, and what does the exact search over every training row cost?
Prints one JSON object.

On MNIST as the report sees it (50,000 training digits binarised once, as the model saw them, beside their one-hot
labels; 5,000 validation digits held out), 1,000 rows each of:
- `fresh`: the other 5,000 validation digits, real subjects of the same population that no model saw: the
  no-memorisation case;
- `copier`: training digits verbatim (the generator a review found the old report passed: it searched 5,000 of the
  50,000 training rows and scored such a copier DCR share 0.566, membership AUC 0.495, NNDR 0.938);
- `noisy_copier`: the same digits with 2 % of their pixels flipped;
- `partial_copier`: 900 validation digits and 100 training digits.
MNIST's test digits come from other writers than its training and validation digits, and are farther from the
training digits: `test_digits_as_fresh` scores test digits as the synthetic rows (no memorisation, and less near than
the null), `test_digits_as_holdout` validation digits against test digits held out (a false alarm: this is why the
report holds out validation rows, `infinimodal.synthesis.synthesis_report`).
For each: the privacy measures with their nulls and tests (`infinimodal.evaluation.privacy`), and the seconds the
report takes (the planted-copier controls included). `--rows` changes the 1,000; `--continuous` adds the same on
the digits' grey levels (784 continuous columns: no binary shortcut in the distance, the cost of a continuous data
set of this size; the noisy copier adds Gaussian noise of SD 0.02 instead of flips).

    python benchmarks/privacy_cost.py [--rows 1000] [--continuous]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from infinimodal.data.mnist import TEST_BINARIZATION_SEED, VALID_BINARIZATION_SEED, load_mnist
from infinimodal.data.multimodal import TRAIN_BINARIZATION_SEED, binarize_fixed
from infinimodal.evaluation import privacy


def digits(images: np.ndarray, labels: np.ndarray, binarize_seed: int | None) -> np.ndarray:
    """Rows of 784 pixels (grey levels, or binarised once with the seed) and the one-hot label."""
    pixels = images if binarize_seed is None else binarize_fixed(images, binarize_seed)
    return np.concatenate([np.asarray(pixels, dtype=np.float64), np.eye(10)[labels]], axis=1)


def generators(
    train: np.ndarray, fresh: np.ndarray, n: int, binary: bool, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    copies = train[rng.choice(len(train), n, replace=False)]
    noisy = copies.copy()
    if binary:
        flips = rng.random(noisy.shape) < 0.02
        noisy[flips] = 1.0 - noisy[flips]
    else:
        noisy = np.clip(noisy + rng.normal(0.0, 0.02, noisy.shape), 0.0, 1.0)
    partial = np.concatenate([fresh[: n - n // 10], copies[: n // 10]])
    return {"fresh": fresh[:n], "copier": copies, "noisy_copier": noisy, "partial_copier": partial}


def measure(train: np.ndarray, holdout: np.ndarray, fresh: np.ndarray, n: int, binary: bool) -> dict:
    out = {}
    for name, rows in generators(train, fresh, n, binary, np.random.default_rng(0)).items():
        start = time.perf_counter()
        report = privacy.privacy(rows, train, holdout)
        out[name] = {"seconds": round(time.perf_counter() - start, 2)} | report
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--continuous", action="store_true")
    args = parser.parse_args()
    mnist = load_mnist()
    splits = {"train": mnist.train, "valid": mnist.valid, "test": mnist.test}
    seeds = {"train": TRAIN_BINARIZATION_SEED, "valid": VALID_BINARIZATION_SEED, "test": TEST_BINARIZATION_SEED}
    binary = {name: digits(part.images, part.labels, seeds[name]) for name, part in splits.items()}
    half = len(binary["valid"]) // 2  # held-out rows and fresh rows from the training digits' population (see below)
    result = {
        "train_rows": len(binary["train"]),
        "holdout_rows": half,
        "features": binary["train"].shape[1],
        "binary": measure(binary["train"], binary["valid"][:half], binary["valid"][half:], args.rows, binary=True),
        "test_digits_as_fresh": measure(
            binary["train"], binary["valid"][:half], binary["test"], args.rows, binary=True
        )["fresh"],
        "test_digits_as_holdout": measure(
            binary["train"], binary["test"], binary["valid"][half:], args.rows, binary=True
        )["fresh"],
    }
    if args.continuous:
        grey = {name: digits(part.images, part.labels, None) for name, part in splits.items()}
        result["continuous"] = measure(
            grey["train"], grey["valid"][:half], grey["valid"][half:], args.rows, binary=False
        )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
