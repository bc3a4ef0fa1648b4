"""`make demo`: train a Beta stick-breaking VAE on MNIST for a few minutes, evaluate it, print the figures.

    python -m infinimodal.demo [--epochs N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import api


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--iw-samples", type=int, default=200)
    parser.add_argument("--max-test", type=int, default=2000)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    config = api.TrainConfig(latent="beta", truncation=50, alpha=5.0, epochs=args.epochs)
    print(f"infinimodal demo: Beta stick-breaking VAE, K={config.truncation}, alpha={config.alpha}, "
          f"{config.epochs} epochs on MNIST (decoder reads {config.decoder_input})")
    out = api.train(config, args.out)
    result = api.evaluate(out, iw_samples=args.iw_samples, max_test=args.max_test)
    source = json.loads((Path(out) / "config.json").read_text())["data_source"]
    knn = ", ".join(f"k={k}: {100 * v:.2f}%" for k, v in result["knn_error"].items())
    print()
    print(f"data: {source}; test digits scored: {result['n_test']}")
    print(f"test ELBO:                 {result['elbo']:.2f} nats")
    print(f"test log p(x), {result['iw_samples']} samples: {result['log_likelihood']:.2f} nats")
    print(f"kNN error on E[pi]:        {knn}")
    print(f"sticks covering 99% mass:  {result['sticks_99']:.1f} of {config.truncation}")
    print(f"sticks with KL > 0.05:     {result['kl_active']} of {config.truncation - 1}; active units: {result['active_dims']}")
    print(f"run directory:             {Path(out).resolve()} (config.json, model.ckpt, metrics.csv, eval.json)")
    print(f"total time:                {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
