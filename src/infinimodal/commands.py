"""What each `infinimodal` command does, one function per command, given its parsed arguments (`cli` parses them
and reports errors). `COMMANDS` is the registry the command line dispatches through."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import api
from .config import DataOptions, check_options_apply
from .options import TrainingOptions
from .parser import build_parser, changed_train_flags, option_values, settings_values
from .columns import COVARIATES
from .errors import InfinimodalError
from .runfiles import json_ready, write_json
from .distributed import is_rank_zero

#: synthesize's exit status when it wrote its rows but the privacy report found them nearer the training rows than fresh subjects
EXIT_MEMORISATION = 4


def rows_of(spec: str, split: str, run_dir: str):
    """Rows to use with a trained model, and their subjects' IDs (None where the data have none): every subject of
    tables, all rows of a file, or one split of a data set built like the run's."""
    from .data.files import SUFFIXES, read_npz_arrays, read_table
    from .data.tables import is_table_spec, user_tables

    vae, config = api.load(run_dir)
    if is_table_spec(spec):
        rows = user_tables(spec, vae.modalities, config.id_column, spec, vae.covariates)
        return vae, rows.arrays, Subjects(rows.ids, rows.id_name)
    if Path(spec).suffix in SUFFIXES:
        if Path(spec).suffix == ".npz":
            return vae, read_npz_arrays(spec), None
        modalities, table, _ = read_table(spec, config.likelihoods)
        # as raw arrays (missing rows NaN), so that the model maps them into its units like any user input
        arrays = {}
        for m, name in enumerate(table.arrays):
            values = table.arrays[name].astype(np.float64)
            values[~table.mask[:, m]] = np.nan
            arrays[name] = values
        return vae, arrays, None
    config.data = spec
    data = api.load_data(config, progress=False)
    api.refuse_other_modalities(spec, data.modalities, vae.modalities)
    chosen = data.split(split)
    return vae, chosen, None if chosen.ids is None else Subjects(chosen.ids, data.id_column or "id")


def _save_npz(path: str | Path, /, **arrays: np.ndarray) -> None:
    """`np.savez`: one array per name."""
    # numpy's stubs match a ** dict against savez's own keyword allow_pickle (bool); the names here are the arrays'
    np.savez(path, **arrays)  # type: ignore[arg-type]


class Subjects(NamedTuple):
    """The subjects' IDs of rows read from tables, and the name of the column they came from (the output tables')."""

    ids: np.ndarray
    column: str = "id"


def write_csv(path: str, columns: dict) -> None:
    """Columns of equal length as a CSV with a header (numbers as they are, booleans as 0/1, NaN as empty, text as it is)."""
    names = list(columns)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*(columns[name] for name in names)):
            writer.writerow([_cell(v) for v in row])


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    return "" if value != value else f"{float(value):.6g}"


def with_ids(columns: dict, subjects: Subjects | None) -> dict:
    """Output columns with the subjects' IDs first (`id`: row numbers where the data have no IDs)."""
    if subjects is None:
        return {"id": list(range(len(next(iter(columns.values())))))} | columns
    return {subjects.column: [str(i) for i in subjects.ids]} | columns


def config_from_flags(args: argparse.Namespace) -> api.TrainConfig:
    """The training configuration `train`'s flags describe."""
    return api.TrainConfig(
        latent=args.latent,
        aggregator=args.aggregator,
        hidden=args.hidden,
        **option_values(args),
        **settings_values(args, DataOptions),
        **settings_values(args, TrainingOptions),
    )


def flags_unlike_the_run(args: argparse.Namespace) -> list[str]:
    """The flags given to `train --resume` that would change the run's configuration, each as `--flag VALUE (the run's:
    VALUE)`. A flag equal to the run's own setting is accepted: a requeued job repeats its whole command line."""
    path = Path(args.out) / "config.json"
    saved = api.TrainConfig.from_dict(api.read_config(path)) if path.is_file() else None
    defaults = build_parser().parse_args(["train", "--out", str(args.out)])
    default = vars(config_from_flags(defaults))
    differing = []
    for flag in changed_train_flags(args):
        dest = flag[2:].replace("-", "_")
        probe = argparse.Namespace(**vars(defaults))
        setattr(probe, dest, getattr(args, dest))
        wanted = vars(config_from_flags(probe))
        fields = [name for name in wanted if wanted[name] != default[name]]
        if saved is None or not fields:
            differing.append(flag)
        elif any(wanted[name] != getattr(saved, name) for name in fields):
            differing.append(
                f"{flag} ({', '.join(f'{name}={wanted[name]!r} where the run has {getattr(saved, name)!r}' for name in fields)})"
            )
    return differing


def run_train_resumed(args: argparse.Namespace) -> None:
    """`train --resume`: continue DIR's run with the settings of its config.json."""
    differing = flags_unlike_the_run(args)
    if differing:
        raise InfinimodalError(
            f"--resume continues {args.out}'s run with its own settings (its config.json); "
            f"these flags differ from them: drop {'; '.join(differing)}"
        )
    config = api.resume_config(args.out)
    out = api.train(
        config, args.out, progress=not args.quiet, announce=lambda line: print(line, file=sys.stderr), resume=True
    )
    if is_rank_zero():
        print(
            f"resumed and finished {config.latent} / {config.aggregator} model: {out}/model.ckpt, curves in {out}/metrics.csv"
        )
        print_validation_errors(Path(out))


def run_train(args: argparse.Namespace) -> None:
    """`train`: a new run from the flags."""
    check_options_apply(args.latent, args.aggregator, list(option_values(args)))
    config = config_from_flags(args)
    out = api.train(config, args.out, progress=not args.quiet, announce=lambda line: print(line, file=sys.stderr))
    if is_rank_zero():
        print(f"trained {config.latent} / {config.aggregator} model: {out}/model.ckpt, curves in {out}/metrics.csv")
        print_validation_errors(Path(out))


def print_validation_errors(out: Path) -> None:
    """One line per categorical modality: the saved model's validation error of imputing it (what to choose settings on)."""
    from .evaluation.curves import class_error_modality, read_curves, saved_model_index, saved_model_values

    epochs, curves = read_curves(out / "metrics.csv")
    index = saved_model_index(curves)
    for column, value in saved_model_values(curves).items():
        if (name := class_error_modality(column)) is not None:
            print(
                f"validation error of imputing {name} from the other modalities, saved model (epoch {int(epochs[index])}): {100 * value:.2f} %"
            )


def run_evaluate(args: argparse.Namespace) -> None:
    """`evaluate`: eval.json, and its headline figures printed."""
    result = api.evaluate(
        args.run_dir,
        iw_samples=args.iw_samples,
        max_test=args.max_test,
        coherence=not args.no_coherence,
        progress=not args.quiet,
        baselines=not args.no_baselines,
    )
    from .evaluation.catalogue import summary_keys

    print(json.dumps({k: result[k] for k in summary_keys() if k in result}))
    print(f"wrote {args.run_dir}/eval.json")


def run_report(args: argparse.Namespace) -> None:
    """`report`: report.html and its figures."""
    from .evaluation.report import write_report

    path = write_report(
        args.run_dir,
        api.load_run,
        max_rows=args.max_rows,
        examples=args.examples,
        max_dims=args.max_dims,
        progress=not args.quiet,
    )
    print(f"wrote {path} (figures in {path.parent / 'figures'})")


def run_compare(args: argparse.Namespace) -> None:
    """`compare`: runs side by side in one HTML page."""
    from .evaluation.compare import compare_runs

    path = compare_runs(args.run_dirs, args.out, api.load_run, progress=not args.quiet)
    print(f"wrote {path}")


def run_sample(args: argparse.Namespace) -> None:
    """`sample`: from the prior, given modalities of some rows, or given a class."""
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
        vae, rows, _ = rows_of(args.data, args.split, args.run_dir)
        inputs = vae.as_split(rows, args.data).take(slice(0, args.n))
        samples = vae.sample(args.n, inputs, given=args.given)
    else:
        vae, config = api.load(args.run_dir)
        inputs, samples = None, vae.sample(args.n, covariates=prior_sample_covariates(vae, config, args))
    if args.set and (given_class or args.data is not None):
        raise InfinimodalError(
            "--set gives the covariates of samples from the prior; rows given with --data are decoded at their own"
        )
    if out.suffix == ".npz":
        _save_npz(out, **samples)
    else:
        from .evaluation.plots import sample_figure

        given = [args.given[0]] if given_class else args.given or (vae.names if inputs is not None else [])
        sample_figure(vae.modalities, samples, out, inputs=inputs, given=given)
    print(f"wrote {len(next(iter(samples.values())))} samples of {', '.join(samples)} to {out}")


def prior_sample_covariates(vae, config, args: argparse.Namespace) -> np.ndarray | None:
    """The covariates prior samples are decoded at, for a model with covariates: those of random training subjects
    (seeded by --seed), with --set's values; None for a model without."""
    if vae.covariates is None:
        if args.set:
            raise InfinimodalError(
                "--set gives covariate values, and this model has no covariates (train with --covariates)"
            )
        return None
    train = api.load_run_data(args.run_dir, config, progress=False).train
    drawn = train.arrays[COVARIATES][np.random.default_rng(args.seed).integers(0, len(train), args.n)]
    return vae.covariates.set_values(drawn, dict(args.set)) if args.set else drawn


def run_impute(args: argparse.Namespace) -> None:
    """`impute`: each missing modality and empty cell filled in: tables -> a folder of tables keyed by ID (one per
    modality, every subject); a .npz -> a .npz (and `--draws` multiple imputations)."""
    from .data.tables import is_table_spec

    if args.draws < 0 or (args.samples is not None and args.samples < 0):
        raise InfinimodalError("--draws and --samples must be >= 0")
    tables = is_table_spec(args.data)
    if not tables and (not args.data.endswith(".npz") or not args.out.endswith(".npz")):
        raise InfinimodalError(
            "impute reads and writes .npz files (--data FILE.npz --out FILE.npz), or tables (--data DIR --out OUTDIR)"
        )
    if tables and Path(args.out).suffix:
        raise InfinimodalError(
            f"--out {args.out}: tables are imputed into a folder (one table per modality), not a file"
        )
    if tables and args.draws:
        raise InfinimodalError("--draws writes arrays: impute a .npz for multiple imputations")
    if args.draws and args.set:
        raise InfinimodalError("--draws and --set: multiple imputation is at the subjects' own covariates; drop one")
    vae, rows, ids = rows_of(args.data, "test", args.run_dir)
    split = vae.as_split(rows, args.data)
    given = rows if isinstance(rows, dict) else split  # raw rows: observed values come back exactly
    settings = {"weighted": not args.unweighted} | ({} if args.samples is None else {"samples": args.samples})
    if args.set:
        if vae.covariates is None:
            raise InfinimodalError(
                "--set gives covariate values, and this model has no covariates (train with --covariates)"
            )
        at = vae.covariates.set_values(split.arrays[COVARIATES], dict(args.set))
        filled = vae.harmonize(given, at, source=args.data, **settings)
    else:
        filled = vae.impute(given, source=args.data, **settings)
    counts = {name: int((~split.mask[:, m]).sum()) for m, name in enumerate(vae.names)}
    if tables:
        written = write_imputed_tables(vae, filled, ids.ids, Path(args.out), ids.column)
        cells = {
            m.name: int((split.mask[:, i, None] & np.isnan(split.arrays[m.name])).any(axis=1).sum())
            for i, m in enumerate(vae.modalities)
            if m.is_table
        }
        what = (
            f"every subject decoded at {', '.join(f'{k}={v}' for k, v in args.set)} (harmonised); " if args.set else ""
        )
        print(
            f"{what}imputed absent subjects {json.dumps(counts)} and rows with empty cells {json.dumps(cells)} of {len(split)} subjects; "
            f"wrote {', '.join(written)}"
        )
        return
    if args.draws:
        filled |= {
            f"{name}_draws": value
            for name, value in vae.impute_draws(given, args.draws, source=args.data, seed=args.seed).items()
        }
    extra = {k: v for k, v in rows.items() if k not in vae.names}
    np.savez(args.out, **filled, **extra)
    print(f"imputed missing rows {json.dumps(counts)} of {len(split)}; wrote {args.out}")


def write_imputed_tables(vae, filled: dict, ids, out: Path, id_name: str) -> list[str]:
    """OUTDIR/<modality>.csv for each modality (every subject, its table's column names; categorical columns as their
    most probable class) and OUTDIR/<modality>.probabilities.csv with the class probabilities of categorical columns."""
    from .data.tables import decoded_frame

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for modality in vae.modalities:
        if not modality.is_table:
            continue
        frame, probabilities = decoded_frame(modality, filled[modality.name], ids, id_name)
        frame.to_csv(out / f"{modality.name}.csv", float_format="%.6g")
        written.append(str(out / f"{modality.name}.csv"))
        if probabilities is not None:
            probabilities.to_csv(out / f"{modality.name}.probabilities.csv", float_format="%.6g")
    return written


def run_score(args: argparse.Namespace) -> None:
    """`score`: deviation scores of rows against the run's validation rows, as a CSV."""
    if not args.out.endswith(".csv"):
        raise InfinimodalError(f"--out must be a .csv file, got {args.out}")
    if args.features is not None and not args.features.endswith(".csv"):
        raise InfinimodalError(f"--features must be a .csv file, got {args.features}")
    vae, rows, ids = rows_of(args.data, args.split, args.run_dir)
    config = api.load(args.run_dir)[1]
    reference = api.load_run_data(args.run_dir, config, progress=False).valid
    split = vae.as_split(rows, args.data)
    groups = (
        group_values(vae, split, args.group) if args.group is not None else None
    )  # an unknown column refused before any work
    scores, z_maps = vae.score_with_maps(split, reference, samples=args.samples, source=args.data)
    write_csv(args.out, with_ids(scores, ids) if ids is not None else scores)
    print(f"scored {len(scores['score'])} rows against {len(reference)} reference (validation) rows; wrote {args.out}")
    if args.features is not None:
        from .evaluation.explain import feature_names

        names = feature_names(vae.modalities)
        columns = {f"{m}.{f}": z_maps[m][:, i] for m in vae.names for i, f in enumerate(names[m])}
        write_csv(args.features, with_ids(columns, ids) if ids is not None else columns)
        print(f"wrote the per-feature deviation z-scores ({len(columns)} features) to {args.features}")
    if groups is not None:
        write_group_summary(vae, reference, scores, groups, args)


#: The latent p-value below which a subject counts as atypical in `score --group`.
GROUP_P = 0.001


def group_values(vae, split, column: str) -> np.ndarray:
    """Each row's value of a covariate, label or categorical column (`explanation_variables`), or an error naming those there are."""
    from .evaluation.explain import explanation_variables

    found = explanation_variables(vae.modalities, split, vae.covariates)
    if column not in found:
        raise InfinimodalError(
            f"--group {column}: not a covariate, label or categorical column of these rows; they have {', '.join(found) or 'none'}"
        )
    return np.asarray(found[column], dtype=object)


def write_group_summary(vae, reference, scores: dict, groups: np.ndarray, args: argparse.Namespace) -> None:
    """Per group: subjects, the share with latent p < GROUP_P and the mean count of extreme features, with the reference
    rows (scored the same way) first."""
    own = vae.score(reference, reference, samples=args.samples)
    rows = [
        [
            "reference (validation rows)",
            len(own["latent_p"]),
            float(np.mean(own["latent_p"] < GROUP_P)),
            float(np.mean(own["extreme_features"])),
        ]
    ]
    for value in sorted({str(v) for v in groups if v is not None}):
        chosen = np.array([str(v) == value for v in groups])
        rows.append(
            [
                value,
                int(chosen.sum()),
                float(np.mean(scores["latent_p"][chosen] < GROUP_P)),
                float(np.mean(scores["extreme_features"][chosen])),
            ]
        )
    path = str(Path(args.out).with_suffix("")) + ".groups.csv"
    write_csv(
        path,
        {
            args.group: [r[0] for r in rows],
            "subjects": [r[1] for r in rows],
            f"share_latent_p_below_{GROUP_P:g}": [r[2] for r in rows],
            "mean_extreme_features": [r[3] for r in rows],
        },
    )
    print(f"by {args.group} (share with latent p < {GROUP_P:g}; mean count of features with |z| > 2.6):")
    for group, n, share, extreme in rows:
        print(f"  {group:<28} {n:>6}  {share:.3f}  {extreme:.2f}")
    print(f"wrote {path}")


def run_synthesize(args: argparse.Namespace) -> int:
    """`synthesize`: synthetic rows and their privacy report; EXIT_MEMORISATION when the report finds memorisation."""
    from .synthesis import DEFAULT_SOURCE

    vae, config = api.load(args.run_dir)
    tables = all(m.is_table for m in vae.modalities) and not Path(args.out).suffix
    if not args.out.endswith(".npz") and not tables:
        raise InfinimodalError(f"--out must be a .npz file (or, for a model of tables, a folder), got {args.out}")
    data = api.load_run_data(args.run_dir, config, progress=False)
    source = args.source or DEFAULT_SOURCE
    samples = vae.synthesize(args.n, source=source, data=data, seed=args.seed, at=dict(args.set or []))
    report = {"source": source, "seed": args.seed} | vae.synthesis_report(samples, data, seed=args.seed)
    encoded = samples.pop(COVARIATES, None)
    covariates: dict[str, np.ndarray] = {}
    if encoded is not None:
        assert vae.covariates is not None  # synthetic covariates come from a conditional model
        covariates = vae.covariates.decode(encoded)
    if tables:
        ids = [f"synthetic-{i + 1:0{len(str(args.n))}d}" for i in range(args.n)]
        written = write_imputed_tables(vae, samples, ids, Path(args.out), data.id_column or "id")
        if covariates:
            import pandas as pd

            pd.DataFrame(covariates, index=pd.Index(ids, name=data.id_column or "id")).to_csv(
                Path(args.out) / "covariates.csv", float_format="%.6g"
            )
            written.append(str(Path(args.out) / "covariates.csv"))
        report_path = Path(args.out) / "privacy.json"
        where = ", ".join(written)
    else:
        labels = (
            {
                "labels": np.asarray(vae.modalities[vae.names.index(data.label_modality)].class_values)[
                    samples[data.label_modality].argmax(1)
                ]
            }
            if data.label_modality is not None
            else {}
        )
        text = {
            f"covariate_{name}": np.asarray(values).astype(str if np.asarray(values).dtype == object else np.float64)
            for name, values in covariates.items()
        }
        _save_npz(args.out, **samples, **labels, **text)
        report_path, where = Path(args.out).with_suffix(".privacy.json"), args.out
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.n} synthetic rows ({source}) to {where}; privacy, fidelity and utility in {report_path.name}")
    privacy = report.get("privacy") or {}
    if privacy:
        print(
            f"  share nearer a training row than a held-out row {privacy['dcr_share']:.3f} (fresh subjects: {privacy['dcr_share_null']:.3f}); "
            f"exact copies {privacy['exact_copies']} (held-out rows: {privacy['exact_copies_holdout']}); "
            f"membership AUC {privacy['membership_auc']:.3f} (0.5: cannot tell); {privacy['rows']['train']} training and "
            f"{privacy['rows']['holdout']} held-out rows with every modality"
        )
    print(
        ("PRIVACY CHECK FAILED: " if report["memorisation"] else "privacy: ") + report["verdict"],
        file=sys.stderr if report["memorisation"] or report["warnings"] else sys.stdout,
    )
    return EXIT_MEMORISATION if report["memorisation"] else 0


def run_embed(args: argparse.Namespace) -> None:
    """`embed`: latent codes of rows as a .npy, or as a CSV keyed by ID (one column per dimension)."""
    if not args.out.endswith((".npy", ".csv")):
        raise InfinimodalError(f"--out must end in .npy or .csv, got {args.out}")
    vae, rows, ids = rows_of(args.data, args.split, args.run_dir)
    codes = vae.embed(vae.as_split(rows, args.data), given=args.given, decoder_space=args.decoder_space)
    if args.out.endswith(".csv"):
        write_csv(args.out, with_ids({f"dim{j}": codes[:, j] for j in range(codes.shape[1])}, ids))
    else:
        np.save(args.out, codes)
    print(f"wrote embeddings of shape {codes.shape} to {args.out}")


def explained_rows(args: argparse.Namespace, run_dir: str):
    """(model, rows as a Split) for explain and stability: --data's rows, or the run's own data split."""
    if args.data is not None:
        vae, rows, _ = rows_of(args.data, args.split, run_dir)
        return vae, vae.as_split(rows, args.data)
    vae, config = api.load(run_dir)
    return vae, api.load_run_data(run_dir, config, progress=False).split(args.split)


def write_json_file(path: str, record: dict) -> None:
    """A command's result as strict JSON (NaN as null), written atomically."""
    write_json(path, json_ready(record))


def run_explain(args: argparse.Namespace) -> None:
    """`explain`: what each latent dimension does, as JSON; a short table on the terminal."""
    if not args.out.endswith(".json"):
        raise InfinimodalError(f"--out must be a .json file, got {args.out}")
    vae, rows = explained_rows(args, args.run_dir)
    result = vae.explain(rows, max_rows=args.max_rows)
    write_json_file(args.out, result)
    print(
        f"explained {len(result['dimensions'])} dimensions on {result['rows']} rows ({result['n_used']} used); wrote {args.out}"
    )
    for record in result["dimensions"]:
        if record["used"]:
            r2 = ", ".join(f"{name} {result['variance_explained'][name][record['index']]:.2f}" for name in vae.names)
            print(
                f"  dim {record['index']:>2}  KL {record['kl']:.2f} ({100 * record['kl_share']:.0f} %)  {record['sharing']:<7}  R^2 alone: {r2}"
            )


def run_stability(args: argparse.Namespace) -> None:
    """`stability`: the first run's used dimensions matched in the others, as JSON."""
    from .evaluation.explain import held_out_codes
    from .evaluation.stability import stability

    if not args.out.endswith(".json"):
        raise InfinimodalError(f"--out must be a .json file, got {args.out}")
    if len(args.run_dirs) < 2:
        raise InfinimodalError("stability compares two run directories or more")
    codes, explanations, sizes = [], [], {}
    for run_dir in args.run_dirs:
        vae, rows = explained_rows(args, run_dir)
        rows = rows.take(slice(0, args.max_rows)) if len(rows) > args.max_rows else rows
        sizes[run_dir] = len(rows)
        if len(set(sizes.values())) > 1:
            raise InfinimodalError(f"the runs' rows differ ({sizes}): give every run the same data with --data")
        explanations.append(vae.explain(rows, max_rows=args.max_rows))
        codes.append(held_out_codes(vae.module, rows).code[:, : len(explanations[-1]["used"])])
    result = {"run_dirs": list(args.run_dirs)} | stability(codes, explanations)
    write_json_file(args.out, result)
    s = result["summary"]
    print(
        f"{len(result['dimensions'])} used dimensions of {args.run_dirs[0]} matched in {len(args.run_dirs) - 1} other runs on {result['rows']} rows: "
        f"median worst |r| {s['median_worst_abs_r']}, {s['reproduced']} found again (|r| >= 0.7), share keeping their index "
        f"{s['share_keep_index']}; used per run {s['used_per_run']}; wrote {args.out}"
    )


def run_train_command(args: argparse.Namespace) -> None:
    """`train`, new or resumed."""
    (run_train_resumed if args.resume else run_train)(args)


#: Command name -> what it does.
COMMANDS = {
    "train": run_train_command,
    "evaluate": run_evaluate,
    "report": run_report,
    "compare": run_compare,
    "sample": run_sample,
    "impute": run_impute,
    "score": run_score,
    "synthesize": run_synthesize,
    "embed": run_embed,
    "explain": run_explain,
    "stability": run_stability,
}
