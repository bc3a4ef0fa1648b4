"""`infinimodal` on the command line: train, evaluate, report, compare, sample, impute, score, synthesize, embed.

    infinimodal train --data polymnist:5 --latent beta --aggregator mopoe --out runs/poly
    infinimodal evaluate runs/poly --iw-samples 1000
    infinimodal report runs/poly                       # runs/poly/report.html and runs/poly/figures/*.png
    infinimodal compare runs/poly runs/poly-gaussian --out poly.html
    infinimodal sample runs/poly --n 16 --out samples.png
    infinimodal sample runs/poly --n 16 --given m0,m1 --data polymnist:5 --out cross.png
    infinimodal impute runs/mine --data subjects.npz --out filled.npz [--draws 20]
    infinimodal score runs/mine --data subjects.npz --out scores.csv
    infinimodal synthesize runs/mine --n 1000 --out synthetic.npz       # and synthetic.privacy.json
    infinimodal embed runs/poly --data polymnist:5 --given m0 --out z.npy

`infinimodal.parser` holds the grammar and `infinimodal.commands` what each command does; this module runs them. Problems are reported as one line on stderr with a non-zero exit; `--debug` (or
INFINIMODAL_DEBUG=1) shows the traceback instead. Commands that work on a run directory also log what
they did to DIR/infinimodal.log.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .parser import build_parser

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 3  # training stopped early (SIGTERM): the run directory can be resumed
# 4, commands.EXIT_MEMORISATION: synthesize wrote its rows, but the privacy report found them nearer the training rows than fresh subjects


def _run(args: argparse.Namespace) -> int:
    """The command's exit status: 0, or what it returns (synthesize: EXIT_MEMORISATION)."""
    from .commands import COMMANDS

    return COMMANDS[args.command](args) or 0


def _warn_if_unfinished(args: argparse.Namespace) -> None:
    """Commands that read a run directory say so when its training did not finish."""
    from .runfiles import unfinished_warning

    for run_dir in [getattr(args, "run_dir", None), *(getattr(args, "run_dirs", None) or [])]:
        if run_dir is not None and Path(run_dir).is_dir():
            warning = unfinished_warning(run_dir)
            if warning:
                print(f"infinimodal: warning: {warning}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("INFINIMODAL_DEBUG") == "1"
    from .errors import InfinimodalError, TrainingInterrupted

    try:
        from .runlog import log_to

        # the commands that write into a run directory log there; sample / impute / embed only read it
        directory = {
            "train": getattr(args, "out", None),
            "evaluate": getattr(args, "run_dir", None),
            "report": getattr(args, "run_dir", None),
        }.get(args.command)
        words = sys.argv[1:] if argv is None else argv
        _warn_if_unfinished(args)
        with log_to(directory, f"infinimodal {' '.join(words)}", create=args.command == "train"):
            status = _run(args)
    except TrainingInterrupted as exc:
        print(f"infinimodal: error: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InfinimodalError as exc:
        if debug:
            raise
        print(f"infinimodal: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (OSError, ValueError, RuntimeError) as exc:
        if debug:
            raise
        print(
            f"infinimodal: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr
        )
        return EXIT_FAILURE
    return status


if __name__ == "__main__":
    sys.exit(main())
