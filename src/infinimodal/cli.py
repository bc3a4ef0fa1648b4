"""`infinimodal` on the command line: train and evaluate.

    infinimodal train --data mnist --latent beta --out runs/beta
    infinimodal evaluate runs/beta --iw-samples 1000

Problems are reported as one line on stderr with a non-zero exit; `--debug` (or
INFINIMODAL_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 500 or 512,256, got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer sizes, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    from .api import BINARIZATIONS, DATASETS, TrainConfig
    from .latents import DECODER_INPUTS, LATENT_FAMILIES

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="infinimodal", description="Stick-breaking multimodal VAEs.")
    parser.add_argument("--version", action="version", version=f"infinimodal {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model into a run directory")
    train.add_argument("--data", default=defaults.data, choices=DATASETS)
    train.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files (default: search)")
    train.add_argument("--latent", default=defaults.latent, choices=list(LATENT_FAMILIES))
    train.add_argument("--latent-dim", type=_positive_int, default=defaults.latent_dim, help="gaussian: dimension D")
    train.add_argument("--truncation", type=int, default=defaults.truncation, help="stick families: K")
    train.add_argument("--alpha", type=float, default=defaults.alpha, help="prior concentration, Beta(1, alpha)")
    train.add_argument("--decoder-input", default=defaults.decoder_input, choices=DECODER_INPUTS)
    train.add_argument("--evidence", default=defaults.evidence, choices=["exp", "softplus"], help="beta: evidence link")
    train.add_argument("--hidden", type=_hidden_sizes, default=defaults.hidden, help="MLP layer sizes, e.g. 500")
    train.add_argument("--epochs", type=_positive_int, default=defaults.epochs)
    train.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--kl-warmup", type=float, default=defaults.kl_warmup, help="epochs of linear KL warm-up")
    train.add_argument("--binarize", default=defaults.binarize, choices=BINARIZATIONS)
    train.add_argument("--precision", default=defaults.precision, choices=["32", "bf16-mixed"])
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--max-train", type=_positive_int, default=None, help="use only the first N training digits")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--out", required=True, help="run directory to write")

    evaluate = commands.add_parser("evaluate", help="evaluate a run directory; writes DIR/eval.json")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--iw-samples", type=_positive_int, default=1000)
    evaluate.add_argument("--max-test", type=_positive_int, default=None)
    evaluate.add_argument("--quiet", action="store_true")
    return parser


def _run(args: argparse.Namespace) -> None:
    from . import api

    if args.command == "train":
        config = api.TrainConfig(
            data=args.data, data_dir=args.data_dir, latent=args.latent, latent_dim=args.latent_dim,
            truncation=args.truncation, alpha=args.alpha, decoder_input=args.decoder_input, evidence=args.evidence,
            hidden=args.hidden,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, kl_warmup=args.kl_warmup,
            binarize=args.binarize, seed=args.seed, max_train=args.max_train, precision=args.precision,
        )
        out = api.train(config, args.out, progress=not args.quiet)
        print(f"trained {config.latent} model: {out}/model.ckpt, curves in {out}/metrics.csv")
    elif args.command == "evaluate":
        result = api.evaluate(args.run_dir, iw_samples=args.iw_samples, max_test=args.max_test, progress=not args.quiet)
        summary = {k: result[k] for k in ("elbo", "log_likelihood", "knn_error", "active_dims", "kl_active", "sticks_99") if k in result}
        print(json.dumps(summary))
        print(f"wrote {args.run_dir}/eval.json")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("INFINIMODAL_DEBUG") == "1"
    from .errors import InfinimodalError

    try:
        _run(args)
    except InfinimodalError as exc:
        if debug:
            raise
        print(f"infinimodal: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (OSError, ValueError, RuntimeError) as exc:
        if debug:
            raise
        print(f"infinimodal: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
