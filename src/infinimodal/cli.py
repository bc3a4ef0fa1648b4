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

Problems are reported as one line on stderr with a non-zero exit; `--debug` (or
INFINIMODAL_DEBUG=1) shows the traceback instead. Commands that work on a run directory also log what
they did to DIR/infinimodal.log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 3  # training stopped early (SIGTERM): the run directory can be resumed


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


def _changed_train_flags(args: argparse.Namespace) -> list[str]:
    """Flags of `train` given with a value other than their default."""
    defaults = vars(build_parser().parse_args(["train", "--out", str(args.out)]))
    return sorted(f"--{k.replace('_', '-')}" for k, v in vars(args).items() if k not in RESUME_FLAGS and v != defaults.get(k))


def build_parser() -> argparse.ArgumentParser:
    from .aggregators import AGGREGATORS
    from .config import ACCELERATORS, PRECISIONS, STRATEGIES, TrainConfig
    from .data import BINARIZATIONS
    from .latents import LATENT_FAMILIES
    from .likelihoods import LIKELIHOODS

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="infinimodal", description="Stick-breaking multimodal VAEs.")
    parser.add_argument("--version", action="version", version=f"infinimodal {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model into a run directory")
    train.add_argument("--data", default=defaults.data, help="mnist, mnist-rotated, polymnist:M, noisy-mnist, synthetic[:k=v,...] (each also "
                       "with labels=F: a label modality observed for a fraction F of the training rows), or a .npz/.h5mu file")
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
    evaluate.add_argument("--max-test", type=_positive_int, default=None)
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
    synthesize.add_argument("--out", required=True, help="FILE.npz (FILE.privacy.json is written beside it)")

    embed = commands.add_parser("embed", help="posterior means of every row of a data set or file")
    embed.add_argument("run_dir")
    embed.add_argument("--data", required=True, help="a data spec (its --split) or a .npz/.h5mu file (all rows)")
    embed.add_argument("--split", default="test", choices=["train", "valid", "test"])
    embed.add_argument("--given", type=_names, default=None, help="use only these modalities")
    embed.add_argument("--decoder-space", action="store_true", help="stick families: logit E[v] (what the decoder reads) instead of E[pi]")
    embed.add_argument("--out", required=True, help="the .npy to write")
    return parser


def _rows_of(spec: str, split: str, run_dir: str):
    """Rows to use with a trained model: all rows of a file, or one split of a data set built like the run's."""
    from .api import load, load_data
    from .data.files import SUFFIXES, read_npz_arrays, read_table

    import numpy as np

    vae, config = load(run_dir)
    if Path(spec).suffix in SUFFIXES:
        if Path(spec).suffix == ".npz":
            return vae, read_npz_arrays(spec)
        modalities, table, _ = read_table(spec, config.likelihoods)
        # as raw arrays (missing rows NaN), so that the model maps them into its units like any user input
        arrays = {}
        for m, name in enumerate(table.arrays):
            values = table.arrays[name].astype(np.float64)
            values[~table.mask[:, m]] = np.nan
            arrays[name] = values
        return vae, arrays
    config.data = spec
    return vae, load_data(config, progress=False).split(split)


def _write_csv(path: str, columns: dict) -> None:
    """Columns of equal length as a CSV with a header (numbers as they are, booleans as 0/1, NaN as empty)."""
    import csv

    import numpy as np

    names = list(columns)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*(columns[name] for name in names)):
            writer.writerow(["" if isinstance(v, float) and v != v else int(v) if isinstance(v, (bool, np.bool_)) else f"{float(v):.6g}" for v in row])


def _run(args: argparse.Namespace) -> None:
    import numpy as np

    from . import api
    from .config import check_options_apply
    from .errors import InfinimodalError
    from .training import is_rank_zero

    if args.command == "train" and args.resume:
        changed = _changed_train_flags(args)
        if changed:
            raise InfinimodalError(f"--resume continues {args.out}'s run with its own settings (its config.json): drop {', '.join(changed)}")
        config = api.resume_config(args.out)
        out = api.train(config, args.out, progress=not args.quiet, announce=lambda line: print(line, file=sys.stderr), resume=True)
        if is_rank_zero():
            print(f"resumed and finished {config.latent} / {config.aggregator} model: {out}/model.ckpt, curves in {out}/metrics.csv")
    elif args.command == "train":
        check_options_apply(args.latent, args.aggregator, list(option_values(args)))
        config = api.TrainConfig(
            data=args.data, data_dir=args.data_dir, data_seed=args.data_seed, likelihoods=dict(args.likelihood), weights=dict(args.weight), predict=dict(args.predict), infomax=dict(args.infomax), vat=dict(args.vat), vat_radius=args.vat_radius, oversample=dict(args.oversample),
            latent=args.latent, aggregator=args.aggregator, hidden=args.hidden, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, kl_warmup=args.kl_warmup, kl_weight=args.kl_weight, binarize=args.binarize, seed=args.seed,
            max_train=args.max_train, precision=args.precision, accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, grad_clip=args.grad_clip, standardize=args.standardize,
            order_dimensions=args.order_dimensions, **option_values(args),
        )
        out = api.train(config, args.out, progress=not args.quiet, announce=lambda line: print(line, file=sys.stderr))
        if is_rank_zero():
            print(f"trained {config.latent} / {config.aggregator} model: {out}/model.ckpt, curves in {out}/metrics.csv")
    elif args.command == "evaluate":
        result = api.evaluate(args.run_dir, iw_samples=args.iw_samples, max_test=args.max_test, coherence=not args.no_coherence, progress=not args.quiet)
        keys = ("elbo", "log_likelihood", "knn_error", "active_dims", "kl_active", "sticks_99", "linear_probe_accuracy", "coherence")
        print(json.dumps({k: result[k] for k in keys if k in result}))
        print(f"wrote {args.run_dir}/eval.json")
    elif args.command == "report":
        from .evaluation.report import write_report

        path = write_report(args.run_dir, max_rows=args.max_rows, examples=args.examples, max_dims=args.max_dims, progress=not args.quiet)
        print(f"wrote {path} (figures in {path.parent / 'figures'})")
    elif args.command == "compare":
        from .evaluation.compare import compare_runs

        path = compare_runs(args.run_dirs, args.out, progress=not args.quiet)
        print(f"wrote {path}")
    elif args.command == "sample":
        import torch

        out = Path(args.out)
        if out.suffix not in (".png", ".npz"):
            raise InfinimodalError(f"--out must end in .png or .npz, got {out.name}")
        given_class = isinstance(args.given, tuple)
        if given_class and args.data is not None:
            raise InfinimodalError(f"--given {args.given[0]}={args.given[1]} is the whole condition: drop --data")
        if args.given is not None and not given_class and args.data is None:
            raise InfinimodalError("--given needs --data: the data the given modalities come from")
        torch.manual_seed(args.seed)
        if given_class:
            vae, _ = api.load(args.run_dir)
            inputs, samples = None, vae.sample_class(args.n, *args.given)
        elif args.data is not None:
            vae, rows = _rows_of(args.data, args.split, args.run_dir)
            inputs = vae.as_split(rows, args.data).take(slice(0, args.n))
            samples = vae.sample(args.n, inputs, given=args.given)
        else:
            vae, _ = api.load(args.run_dir)
            inputs, samples = None, vae.sample(args.n)
        if out.suffix == ".npz":
            np.savez(out, **samples)
        else:
            from .evaluation.plots import sample_figure

            given = [args.given[0]] if given_class else args.given or (vae.names if inputs is not None else [])
            sample_figure(vae.modalities, samples, out, inputs=inputs, given=given)
        print(f"wrote {len(next(iter(samples.values())))} samples of {', '.join(samples)} to {out}")
    elif args.command == "impute":
        if not args.data.endswith(".npz") or not args.out.endswith(".npz"):
            raise InfinimodalError("impute reads and writes .npz files (--data FILE.npz --out FILE.npz)")
        if args.draws < 0 or (args.samples is not None and args.samples < 0):
            raise InfinimodalError("--draws and --samples must be >= 0")
        vae, rows = _rows_of(args.data, "test", args.run_dir)
        split = vae.as_split(rows, args.data)
        given = rows if isinstance(rows, dict) else split  # raw rows: observed values come back exactly
        settings = {} if args.samples is None else {"samples": args.samples}
        filled = vae.impute(given, source=args.data, **settings)
        if args.draws:
            filled |= {f"{name}_draws": value for name, value in vae.impute_draws(given, args.draws, source=args.data, seed=args.seed).items()}
        extra = {k: v for k, v in rows.items() if k not in vae.names}
        np.savez(args.out, **filled, **extra)
        counts = {name: int((~split.mask[:, m]).sum()) for m, name in enumerate(vae.names)}
        print(f"imputed missing rows {json.dumps(counts)} of {len(split)}; wrote {args.out}")
    elif args.command == "score":
        if not args.out.endswith(".csv"):
            raise InfinimodalError(f"--out must be a .csv file, got {args.out}")
        vae, rows = _rows_of(args.data, args.split, args.run_dir)
        config = api.load(args.run_dir)[1]
        reference = api.load_run_data(args.run_dir, config, progress=False).valid
        scores = vae.score(rows, reference, samples=args.samples, source=args.data)
        _write_csv(args.out, scores)
        print(f"scored {len(scores['score'])} rows against {len(reference)} reference (validation) rows; wrote {args.out}")
    elif args.command == "synthesize":
        from .synthesis import DEFAULT_SOURCE

        if not args.out.endswith(".npz"):
            raise InfinimodalError(f"--out must be a .npz file, got {args.out}")
        vae, config = api.load(args.run_dir)
        data = api.load_run_data(args.run_dir, config, progress=False)
        source = args.source or DEFAULT_SOURCE
        samples = vae.synthesize(args.n, source=source, data=data, seed=args.seed)
        report = {"source": source, "seed": args.seed} | vae.synthesis_report(samples, data, seed=args.seed)
        labels = {"labels": np.asarray(vae.modalities[vae.names.index(data.label_modality)].class_values)[samples[data.label_modality].argmax(1)]} \
            if data.label_modality is not None else {}
        np.savez(args.out, **samples, **labels)
        report_path = Path(args.out).with_suffix(".privacy.json")
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        privacy = report.get("privacy", {})
        print(f"wrote {args.n} synthetic rows ({source}) to {args.out}; {report_path.name}: "
              f"share nearer a training row than a held-out row {privacy.get('dcr_share', float('nan')):.3f} (0.5: no memorisation), "
              f"exact copies {privacy.get('exact_copies', '-')}, membership AUC {privacy.get('membership_auc', float('nan')):.3f}")
    elif args.command == "embed":
        vae, rows = _rows_of(args.data, args.split, args.run_dir)
        codes = vae.embed(vae.as_split(rows, args.data), given=args.given, decoder_space=args.decoder_space)
        np.save(args.out, codes)
        print(f"wrote embeddings of shape {codes.shape} to {args.out}")


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
            _run(args)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
