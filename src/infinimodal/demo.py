"""`make demo`: train the default stick-gated VAE on MNIST for a few minutes, evaluate it, print the figures,
and write the run's report (DIR/report.html).

    python -m infinimodal.demo [--epochs N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import api
from .evaluation.report import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--iw-samples", type=int, default=200)
    parser.add_argument("--max-test", type=int, default=2000)
    parser.add_argument("--max-train", type=int, default=None, help="train on the first N digits only (a quick look)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    with api.log_to(args.out, "python -m infinimodal.demo " + " ".join(argv if argv is not None else sys.argv[1:]), create=True):
        run(args)


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    config = api.TrainConfig(epochs=args.epochs, max_train=args.max_train)  # the default model: what `infinimodal train` gives
    config.validate()
    print(f"infinimodal demo: {config.latent} latent (D = {config.latent_dim} dimensions gated by stick-breaking, alpha = {config.alpha:g}), "
          f"{config.epochs} epochs on MNIST")
    out = api.train(config, args.out, progress=not args.quiet)
    result = api.evaluate(out, iw_samples=args.iw_samples, max_test=args.max_test, progress=not args.quiet)
    source = json.loads((Path(out) / "config.json").read_text())["data_source"]
    knn = ", ".join(f"k={k}: {100 * v:.2f}%" for k, v in result["knn_error"].items())
    print()
    print(f"data: {source}; test digits scored: {result['n_test']}")
    print(f"test ELBO:                 {result['elbo']:.2f} nats")
    print(f"test log p(x), {result['iw_samples']} samples: {result['log_likelihood']:.2f} nats")
    print(f"kNN error on E[g r]:       {knn} (the gated code the decoder reads)")
    print(f"dimensions with KL > 0.05: {result['kl_active']} of {config.latent_dim}; active units: {result['active_dims']}")
    print(f"leading dimensions holding 99% of the KL: {result['kl_span_99']} (Spearman of index and KL: {_format_or_none(result['kl_order_spearman'])})")
    print(f"run directory:             {Path(out).resolve()} (config.json, model.ckpt, metrics.csv, eval.json)")
    print()
    report = write_report(out, progress=not args.quiet)
    print(f"total time:                {time.perf_counter() - started:.0f} s")
    print(f"report (open in a browser): {report.resolve()}")


def _format_or_none(value: float | None) -> str:
    return "undefined (every dimension carries the same KL)" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
