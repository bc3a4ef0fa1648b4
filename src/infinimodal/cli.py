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

This module parses; `infinimodal.commands` holds what each command does. Problems are reported as one line on stderr with a non-zero exit; `--debug` (or
INFINIMODAL_DEBUG=1) shows the traceback instead. Commands that work on a run directory also log what
they did to DIR/infinimodal.log.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 3  # training stopped early (SIGTERM): the run directory can be resumed
EXIT_MEMORISATION = 4  # synthesize wrote its rows, but the privacy report found them nearer the training rows than fresh subjects


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


def _likelihood(text: str) -> tuple[str, str]:
    name, sep, likelihood = text.partition("=")
    if not sep or not name or not likelihood:
        raise argparse.ArgumentTypeError(f"expected MODALITY=LIKELIHOOD, e.g. counts=poisson, got {text!r}")
    return name, likelihood


def _weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = float("nan")
    if not sep or not name or not (weight > 0 and weight != float("inf")):
        raise argparse.ArgumentTypeError(f"expected MODALITY=WEIGHT with a positive weight, e.g. label=50, got {text!r}")
    return name, weight


def _rows(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected MODALITY=ROWS with a positive whole number of rows, e.g. label=20, got {text!r}")
    return name, int(value)


def _given(text: str) -> list[str] | tuple[str, int]:
    """`m0,m1` (modalities of --data) or `label=3` (one class of a categorical modality)."""
    if "=" not in text:
        return _names(text)
    name, _, value = text.partition("=")
    try:
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODALITY=CLASS with an integer class, e.g. label=3, got {text!r}") from None


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated modality names, e.g. m0,m1")
    return names


def _int_or_word(text: str) -> int | str:
    """An integer, or a word such as auto (the option's own check says which words it takes)."""
    try:
        return int(text)
    except ValueError:
        return text


_FLAG_TYPES = {"int": int, "float": float, "str": str, "int | str": _int_or_word}


def add_option_flags(parser: argparse.ArgumentParser) -> list[str]:
    """One flag per option that a latent family or aggregator declares (its `Settings` fields), with each
    owner's help and default; returns the option names. Unset flags are None: the chosen component's default."""
    from dataclasses import fields

    from .config import component_settings, named_component_settings
    from .settings import field_default, flag, merged_fields

    names = []
    for name, entries in merged_fields(component_settings()).items():
        first = entries[0][1]
        described: dict[tuple, list[str]] = {}
        for owner, settings in named_component_settings():
            for f in fields(settings):
                if f.name == name:
                    described.setdefault((f.metadata["help"], field_default(f)), []).append(owner)
        text = "; ".join(f"{', '.join(owners)}: {help} (default {default})" for (help, default), owners in described.items())
        parser.add_argument(flag(name), dest=name, type=_FLAG_TYPES[first.type], default=None, choices=first.metadata.get("choices"), help=text)
        names.append(name)
    return names


def option_values(args: argparse.Namespace) -> dict:
    """The component options given on the command line (the unset ones are left to the defaults)."""
    from .config import component_settings
    from .settings import merged_fields

    return {name: getattr(args, name) for name in merged_fields(component_settings()) if getattr(args, name) is not None}


def _grad_clip(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}")
    return value


#: train's flags that --resume accepts besides --out (the rest are the run's own settings)
RESUME_FLAGS = ("out", "resume", "quiet", "command", "debug")


def changed_train_flags(args: argparse.Namespace) -> list[str]:
    """Flags of `train` given with a value other than their default."""
    defaults = vars(build_parser().parse_args(["train", "--out", str(args.out)]))
    return sorted(f"--{k.replace('_', '-')}" for k, v in vars(args).items() if k not in RESUME_FLAGS and v != defaults.get(k))


def build_parser() -> argparse.ArgumentParser:
    from .aggregators import AGGREGATORS
    from .config import ACCELERATORS, PRECISIONS, STRATEGIES, TrainConfig
    from .data import BINARIZATIONS, BUILTIN
    from .latents import LATENT_FAMILIES
    from .likelihoods import LIKELIHOODS

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="infinimodal", description="Stick-breaking multimodal VAEs.")
    parser.add_argument("--version", action="version", version=f"infinimodal {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model into a run directory")
    train.add_argument("--data", default=defaults.data, help=f"a built-in data set ({', '.join(BUILTIN)}: labels=F observes a label modality "
                       "for a fraction F of the training rows), or a .npz/.h5mu file")
    train.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files (default: search)")
    train.add_argument("--data-seed", type=int, default=defaults.data_seed, help="seed of the data set's construction or split")
    train.add_argument("--likelihood", type=_likelihood, action="append", default=[], metavar="MODALITY=NAME",
                       help=f"override a modality's likelihood ({', '.join(LIKELIHOODS)}, or gaussian:S / laplace:S with a fixed scale S; * = every modality)")
    train.add_argument("--weight", type=_weight, action="append", default=[], metavar="MODALITY=W",
                       help="weight of a modality's log-likelihood in the training objective (default 1; e.g. label=50 for a label "
                            "observed on few rows); evaluation always scores the unweighted ELBO")
    train.add_argument("--predict", type=_weight, action="append", default=[], metavar="MODALITY=ALPHA",
                       help="semi-supervised term: alpha times the log-likelihood of this modality given the others, on the rows "
                            "where it is observed (M2's classification term; e.g. label=10)")
    train.add_argument("--infomax", type=_weight, action="append", default=[], metavar="MODALITY=BETA",
                       help="semi-supervised term for a categorical modality: beta times the mutual information between a row and "
                            "its imputed class, on the rows where the modality is missing (e.g. label=10 with --predict label=100)")
    train.add_argument("--vat", type=_weight, action="append", default=[], metavar="MODALITY=GAMMA",
                       help="semi-supervised term for a categorical modality: gamma times the change of its imputed class under "
                            "the most sensitive small perturbation of the other modalities (virtual adversarial training; e.g. label=1)")
    train.add_argument("--vat-radius", type=float, default=defaults.vat_radius,
                       help="the --vat perturbation's radius, a fraction of each perturbed modality's root-mean-square row norm")
    train.add_argument("--oversample", type=_rows, action="append", default=[], metavar="MODALITY=ROWS",
                       help="add to each training batch ROWS rows where this modality is observed (e.g. label=20 for labels on 1 %% "
                            "of the rows: the labelled rows are then seen every few steps, not once an epoch)")
    train.add_argument("--latent", default=defaults.latent, choices=list(LATENT_FAMILIES))
    train.add_argument("--aggregator", default=defaults.aggregator, choices=list(AGGREGATORS))
    add_option_flags(train)
    train.add_argument("--hidden", type=_hidden_sizes, default=defaults.hidden, help="MLP layer sizes, e.g. 500 (CNNs: the dense width)")
    train.add_argument("--epochs", type=_positive_int, default=defaults.epochs)
    train.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--kl-warmup", type=float, default=defaults.kl_warmup, help="epochs of linear KL warm-up")
    train.add_argument("--kl-weight", type=float, default=defaults.kl_weight, help="KL weight after warm-up (beta-VAE's beta; 1 = ELBO)")
    train.add_argument("--binarize", default=defaults.binarize, choices=BINARIZATIONS, help="mnist: training binarisation")
    train.add_argument("--precision", default=defaults.precision, choices=PRECISIONS)
    train.add_argument("--accelerator", default=defaults.accelerator, choices=ACCELERATORS,
                       help="Lightning's accelerator: auto takes a GPU when one is visible (default auto)")
    train.add_argument("--devices", type=_positive_int, default=defaults.devices,
                       help="processes (CPU) or accelerators to train on; more than one uses DDP (--strategy ddp)")
    train.add_argument("--strategy", default=defaults.strategy, choices=STRATEGIES, help="Lightning's strategy for --devices > 1")
    train.add_argument("--grad-clip", type=_grad_clip, default=defaults.grad_clip,
                       help=f"clip the gradient norm at this value, or 'none' (default {defaults.grad_clip})")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint, with the run's own settings")
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--max-train", type=_positive_int, default=None, help="use only the first N training rows")
    train.add_argument("--no-standardize", dest="standardize", action="store_false",
                       help="data files: keep Gaussian / Laplace modalities in their own units (default: standardise each feature on the training rows)")
    train.add_argument("--no-order-dimensions", dest="order_dimensions", action="store_false",
                       help="gated latent: leave a used dimension after an unused one where training put it (default: move it forward "
                            "at the next epoch's start when that does not lower the ELBO)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--out", required=True, help="run directory to write")

    evaluate = commands.add_parser("evaluate", help="evaluate a run directory; writes DIR/eval.json")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--iw-samples", type=_positive_int, default=1000)
    evaluate.add_argument("--max-test", type=_positive_int, default=None,
                          help="score the first N test rows only (a quick look: a file's or MNIST's test rows are in their stored order, not a random sample)")
    evaluate.add_argument("--no-coherence", action="store_true", help="skip coherence (and its classifiers)")
    evaluate.add_argument("--quiet", action="store_true")

    report = commands.add_parser("report", help="write DIR/report.html: figures of what the model learned")
    report.add_argument("run_dir")
    report.add_argument("--max-rows", type=_positive_int, default=2000, help="test rows for the maps and stick statistics")
    report.add_argument("--examples", type=_positive_int, default=8, help="rows per generation / imputation / per-dimension figure")
    report.add_argument("--max-dims", type=_positive_int, default=16, help="most latent dimensions in the per-dimension figure")
    report.add_argument("--quiet", action="store_true", help="no progress bars")

    compare = commands.add_parser("compare", help="several runs side by side in one HTML page")
    compare.add_argument("run_dirs", nargs="+")
    compare.add_argument("--out", required=True, help="the .html file to write (its figures go to <name>_figures/)")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")

    sample = commands.add_parser("sample", help="generate every modality, from the prior or given modalities")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=_positive_int, default=16, help="samples (with --data: the first N rows)")
    sample.add_argument("--given", type=_given, default=None,
                        help="condition on these modalities of --data (m0,m1), or on one class of a categorical modality (label=3)")
    sample.add_argument("--data", default=None, help="where the given modalities come from (a data spec or file)")
    sample.add_argument("--split", default="test", choices=["train", "valid", "test"], help="built-in data: which split")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", required=True, help="FILE.png (a picture) or FILE.npz (arrays)")

    impute = commands.add_parser("impute", help="fill the missing (all-NaN) rows of a data file")
    impute.add_argument("run_dir")
    impute.add_argument("--data", required=True, help="a .npz file with one array per modality")
    impute.add_argument("--out", required=True, help="the .npz to write")
    impute.add_argument("--samples", type=int, default=None, help="posterior samples averaged in the conditional mean (0: decode at the posterior mean)")
    impute.add_argument("--draws", type=int, default=0,
                        help="also write NAME_draws arrays [D, rows, ...]: D multiple imputations drawn from the predictive distribution")
    impute.add_argument("--seed", type=int, default=0)

    score = commands.add_parser("score", help="how atypical each row is for the population the model was trained on (a CSV)")
    score.add_argument("run_dir")
    score.add_argument("--data", required=True, help="rows to score: a .npz file (or a data set; its --split)")
    score.add_argument("--split", default="test", choices=["train", "valid", "test"], help="built-in data: which split")
    score.add_argument("--samples", type=_positive_int, default=50, help="posterior samples per likelihood estimate")
    score.add_argument("--out", required=True, help="FILE.csv: one row per input row, in input order")

    synthesize = commands.add_parser("synthesize", help="synthetic subjects with every modality, and FILE.privacy.json beside them")
    synthesize.add_argument("run_dir")
    synthesize.add_argument("--n", type=_positive_int, required=True)
    synthesize.add_argument("--source", default=None, choices=["prior", "aggregate"],
                            help="latent codes from the prior, or from the posteriors of random training rows (default: prior)")
    synthesize.add_argument("--seed", type=int, default=0)
    synthesize.add_argument("--out", required=True, help="FILE.npz (FILE.privacy.json is written beside it; the exit status is 4 when it finds memorisation)")

    embed = commands.add_parser("embed", help="posterior means of every row of a data set or file")
    embed.add_argument("run_dir")
    embed.add_argument("--data", required=True, help="a data spec (its --split) or a .npz/.h5mu file (all rows)")
    embed.add_argument("--split", default="test", choices=["train", "valid", "test"])
    embed.add_argument("--given", type=_names, default=None, help="use only these modalities")
    embed.add_argument("--decoder-space", action="store_true", help="stick families: logit E[v] (what the decoder reads) instead of E[pi]")
    embed.add_argument("--out", required=True, help="the .npy to write")
    return parser


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
    from .errors import InfinimodalError
    from .training import TrainingInterrupted

    try:
        from .runlog import log_to

        # the commands that write into a run directory log there; sample / impute / embed only read it
        directory = {"train": getattr(args, "out", None), "evaluate": getattr(args, "run_dir", None), "report": getattr(args, "run_dir", None)}.get(args.command)
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
        print(f"infinimodal: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE
    return status


if __name__ == "__main__":
    sys.exit(main())
