"""The command line's grammar: every command's flags, `train`'s generated from the option declarations (the latent
families' and aggregators' `Settings`, `DataOptions`, `TrainingOptions`), and the values they give. `cli` runs it;
`commands` reads what it parsed."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, Callable

from . import __version__, flagtypes

#: The Python types a flag of each annotated type reads, where the declaration names no parser of its own.
_FLAG_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "int | str": flagtypes.int_or_word,
    "str | None": str,
}

#: train's flags that --resume accepts besides --out (the rest are the run's own settings)
RESUME_FLAGS = ("out", "resume", "quiet", "command", "debug")


def add_option_flags(parser: argparse.ArgumentParser) -> list[str]:
    """One flag per option that a latent family or aggregator declares (its `Settings` fields), with each
    owner's help and default; returns the option names. Unset flags are None: the chosen component's default."""
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
        text = "; ".join(
            f"{', '.join(owners)}: {help} (default {default})" for (help, default), owners in described.items()
        )
        parser.add_argument(
            flag(name),
            dest=name,
            type=_FLAG_TYPES[str(first.type)],  # the annotation's text (the settings modules defer annotations)
            default=None,
            choices=first.metadata.get("choices"),
            help=text,
        )
        names.append(name)
    return names


def option_values(args: argparse.Namespace) -> dict:
    """The component options given on the command line (the unset ones are left to the defaults)."""
    from .config import component_settings
    from .settings import merged_fields

    return {
        name: getattr(args, name) for name in merged_fields(component_settings()) if getattr(args, name) is not None
    }


def add_settings_flags(parser: argparse.ArgumentParser, settings) -> None:
    """One flag per field of a `Settings` class, as its declaration says (`settings.setting`): a switch that is on by
    default gets its `negative` flag, a `pairs` field a repeatable MODALITY=VALUE flag, the rest a flag of their type."""
    from .settings import field_default, field_flag, field_help

    for f in fields(settings):
        meta, default = f.metadata, field_default(f)
        if meta.get("negative"):
            parser.add_argument(meta["negative"], dest=f.name, action="store_false", help=field_help(f))
        elif meta.get("pairs"):
            parser.add_argument(
                field_flag(f),
                dest=f.name,
                type=meta["parse"],
                action="append",
                default=[],
                metavar=meta.get("metavar"),
                help=field_help(f),
            )
        else:
            text = field_help(f)
            parser.add_argument(
                field_flag(f),
                dest=f.name,
                type=meta.get("parse") or _FLAG_TYPES[str(f.type)],
                default=default,
                choices=meta.get("choices"),
                metavar=meta.get("metavar"),
                help=text if "default" in text else f"{text} (default {default})",
            )


def settings_values(args: argparse.Namespace, settings) -> dict:
    """The values of a `Settings` class's fields that `add_settings_flags` parsed (pairs as a dict)."""
    return {
        f.name: dict(getattr(args, f.name)) if f.metadata.get("pairs") else getattr(args, f.name)
        for f in fields(settings)
    }


def changed_train_flags(args: argparse.Namespace) -> list[str]:
    """Flags of `train` given with a value other than their default."""
    defaults = vars(build_parser().parse_args(["train", "--out", str(args.out)]))
    return sorted(
        f"--{k.replace('_', '-')}" for k, v in vars(args).items() if k not in RESUME_FLAGS and v != defaults.get(k)
    )


def add_train_parser(commands) -> None:
    from .aggregators import AGGREGATORS
    from .config import RUN_OPTIONS, ModelConfig
    from .latents import LATENT_FAMILIES

    defaults = ModelConfig()
    train = commands.add_parser("train", help="train a model into a run directory")
    train.add_argument("--latent", default=defaults.latent, choices=list(LATENT_FAMILIES))
    train.add_argument("--aggregator", default=defaults.aggregator, choices=list(AGGREGATORS))
    add_option_flags(train)
    train.add_argument(
        "--hidden",
        type=flagtypes.hidden_sizes,
        default=defaults.hidden,
        help="MLP layer sizes, e.g. 500 (CNNs: the dense width)",
    )
    for options in RUN_OPTIONS:
        add_settings_flags(train, options)
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with the run's own settings",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--out", required=True, help="run directory to write")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infinimodal", description="Stick-breaking multimodal VAEs.")
    parser.add_argument("--version", action="version", version=f"infinimodal {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_parser(commands)

    evaluate = commands.add_parser("evaluate", help="evaluate a run directory; writes DIR/eval.json")
    evaluate.add_argument("run_dir")
    evaluate.add_argument(
        "--iw-samples",
        type=flagtypes.positive_int,
        default=1000,
        help="importance samples per row: of log p(x), and of the weighted conditional mean imputation is scored with",
    )
    evaluate.add_argument(
        "--max-test",
        type=flagtypes.positive_int,
        default=None,
        help="score the first N test rows only (a quick look: a file's or MNIST's test rows are in their stored order, not a random sample)",
    )
    evaluate.add_argument("--no-coherence", action="store_true", help="skip coherence (and its classifiers)")
    evaluate.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the tuned baselines of imputation and prediction (ridge, MLP, logistic regression; the training mean "
        "stays): a quick look, not a comparison (eval.json's baselines_tuned says which)",
    )
    evaluate.add_argument("--quiet", action="store_true")

    report = commands.add_parser("report", help="write DIR/report.html: figures of what the model learned")
    report.add_argument("run_dir")
    report.add_argument(
        "--max-rows", type=flagtypes.positive_int, default=2000, help="test rows for the maps and stick statistics"
    )
    report.add_argument(
        "--examples",
        type=flagtypes.positive_int,
        default=8,
        help="rows per generation / imputation / per-dimension figure",
    )
    report.add_argument(
        "--max-dims", type=flagtypes.positive_int, default=16, help="most latent dimensions in the per-dimension figure"
    )
    report.add_argument("--quiet", action="store_true", help="no progress bars")

    compare = commands.add_parser("compare", help="several runs side by side in one HTML page")
    compare.add_argument("run_dirs", nargs="+")
    compare.add_argument("--out", required=True, help="the .html file to write (its figures go to <name>_figures/)")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")

    sample = commands.add_parser("sample", help="generate every modality, from the prior or given modalities")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=flagtypes.positive_int, default=16, help="samples (with --data: the first N rows)")
    sample.add_argument(
        "--given",
        type=flagtypes.given,
        default=None,
        help="condition on these modalities of --data (m0,m1), or on one class of a categorical modality (label=3)",
    )
    sample.add_argument("--data", default=None, help="where the given modalities come from (a data spec or file)")
    sample.add_argument(
        "--split", default="test", choices=["train", "valid", "test"], help="built-in data: which split"
    )
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--set",
        type=flagtypes.setting_pair,
        action="append",
        default=None,
        metavar="COVARIATE=VALUE",
        help="models with --covariates: decode prior samples at this covariate value (default: those of random training "
        "subjects); repeat for several",
    )
    sample.add_argument("--out", required=True, help="FILE.png (a picture) or FILE.npz (arrays)")

    impute = commands.add_parser(
        "impute", help="fill the missing modalities and empty cells of tables or of a data file"
    )
    impute.add_argument("run_dir")
    impute.add_argument(
        "--data",
        required=True,
        help="tables keyed by ID (a folder, or name=FILE,...) or a .npz file with one array per modality",
    )
    impute.add_argument(
        "--out",
        required=True,
        help="tables: the folder to write (OUTDIR/<modality>.csv, every subject); a .npz: the .npz to write",
    )
    impute.add_argument(
        "--samples",
        type=int,
        default=None,
        help="posterior samples of the conditional mean (default 1000 importance-weighted, 20 with --unweighted; 0: "
        "decode at the posterior mean)",
    )
    impute.add_argument(
        "--unweighted",
        action="store_true",
        help="average the posterior samples with equal weights (the encoders' approximation, faster) instead of "
        "weighing them by the observed values' likelihood (the model's own conditional mean)",
    )
    impute.add_argument(
        "--draws",
        type=int,
        default=0,
        help="also write NAME_draws arrays [D, rows, ...]: D multiple imputations drawn from the predictive distribution",
    )
    impute.add_argument("--seed", type=int, default=0)
    impute.add_argument(
        "--set",
        type=flagtypes.setting_pair,
        action="append",
        default=None,
        metavar="COVARIATE=VALUE",
        help="models with --covariates: write every subject as if measured at this covariate value (site=A: "
        "harmonised tables; Gaussian values keep their residuals); repeat for several",
    )

    score = commands.add_parser(
        "score", help="how atypical each row is for the population the model was trained on (a CSV)"
    )
    score.add_argument("run_dir")
    score.add_argument(
        "--data", required=True, help="rows to score: tables keyed by ID, a .npz file (or a data set; its --split)"
    )
    score.add_argument("--split", default="test", choices=["train", "valid", "test"], help="built-in data: which split")
    score.add_argument(
        "--samples", type=flagtypes.positive_int, default=50, help="posterior samples per likelihood estimate"
    )
    score.add_argument(
        "--out", required=True, help="FILE.csv: one row per input row, in input order (tables: the subject's ID first)"
    )
    score.add_argument(
        "--features",
        default=None,
        metavar="FILE.csv",
        help="also write each row's per-feature deviation z-scores (observed minus the prediction from the row's other "
        "modalities, in reference SDs), one column per modality.feature",
    )
    score.add_argument(
        "--group",
        default=None,
        metavar="COLUMN",
        help="a covariate, label or categorical column: print, per group, the share of subjects whose latent distance "
        "has p < 0.001 and their mean count of extreme features, beside the reference's (and write them to FILE.groups.csv)",
    )

    synthesize = commands.add_parser(
        "synthesize", help="synthetic subjects with every modality, and FILE.privacy.json beside them"
    )
    synthesize.add_argument("run_dir")
    synthesize.add_argument("--n", type=flagtypes.positive_int, required=True)
    synthesize.add_argument(
        "--source",
        default=None,
        choices=["prior", "aggregate"],
        help="latent codes from the prior, or from the posteriors of random training rows (default: prior)",
    )
    synthesize.add_argument("--seed", type=int, default=0)
    synthesize.add_argument(
        "--set",
        type=flagtypes.setting_pair,
        action="append",
        default=None,
        metavar="COVARIATE=VALUE",
        help="models with --covariates: give every synthetic subject this covariate value (default: those of random "
        "training subjects); repeat for several",
    )
    synthesize.add_argument(
        "--out",
        required=True,
        help="FILE.npz, or for a model of tables a folder of tables with new IDs and the covariates used "
        "(FILE.privacy.json / DIR/privacy.json is written beside them; the exit status is 4 when it finds memorisation)",
    )

    embed = commands.add_parser("embed", help="posterior means of every row of a data set or file")
    embed.add_argument("run_dir")
    embed.add_argument(
        "--data", required=True, help="a data spec (its --split), tables keyed by ID or a .npz/.h5mu file (all rows)"
    )
    embed.add_argument("--split", default="test", choices=["train", "valid", "test"])
    embed.add_argument("--given", type=flagtypes.names, default=None, help="use only these modalities")
    embed.add_argument(
        "--decoder-space",
        action="store_true",
        help="stick families: logit E[v] (what the decoder reads) instead of E[pi]",
    )
    embed.add_argument(
        "--out", required=True, help="FILE.npy (an array), or FILE.csv (the ID, then one column per dimension)"
    )

    explain = commands.add_parser(
        "explain",
        help="what each latent dimension does: KL, variance explained per modality, feature effects, "
        "shared or private, associations (a JSON file)",
    )
    explain.add_argument("run_dir")
    explain.add_argument(
        "--data",
        default=None,
        help="rows to explain: tables keyed by ID, a .npz file, or a data set (its --split); "
        "default: the run's own data, its held-out test rows",
    )
    explain.add_argument("--split", default="test", choices=["train", "valid", "test"], help="data sets: which split")
    explain.add_argument(
        "--max-rows", type=flagtypes.positive_int, default=2000, help="explain on the first N rows at most"
    )
    explain.add_argument("--out", required=True, help="FILE.json")

    stability = commands.add_parser(
        "stability",
        help="would the dimensions come back with another seed: the used dimensions of the first "
        "run matched to every other run's (a JSON file)",
    )
    stability.add_argument("run_dirs", nargs="+", help="two or more run directories trained on the same data")
    stability.add_argument(
        "--data", default=None, help="rows to compare on (as for explain); default: the first run's data, its test rows"
    )
    stability.add_argument("--split", default="test", choices=["train", "valid", "test"], help="data sets: which split")
    stability.add_argument(
        "--max-rows", type=flagtypes.positive_int, default=2000, help="compare on the first N rows at most"
    )
    stability.add_argument("--out", required=True, help="FILE.json")
    return parser
