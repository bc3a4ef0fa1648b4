"""Tables in, measured: a cohort of subject-keyed CSV tables with known structure, age and site effects and planted
atypical subjects (`cohort-tables:seed=7`, a seed no test uses), trained with and without `--covariates age,sex,site`.

    python benchmarks/tables.py --out runs/tables --latents gated gaussian --seeds 0 1 --epochs 60

For each (latent family, covariates, seed), on the subjects the model did not train on (validation and test):
- fit: test ELBO and importance-sampled log p(x) (`evaluate`, 200 samples);
- deviation: AUC of `score` for the planted atypical subjects, and the correlation of the typical subjects' scores
  with age (a normative model that knows age should not call the old atypical);
- site from the embedding: accuracy of a logistic regression fitted on the training subjects' embeddings (chance:
  the majority share), the covariates' promise being that site is not in the latent;
- imputation of absent rows: `evaluate`'s imputation_mse per modality, the model against the tuned baselines;
- imputation of empty cells: 10 % of the held-out subjects' MRI cells emptied, the model's fill against a ridge
  regression and an MLP per column (each tuned on the validation subjects, fitted on the training subjects, reading
  every other value and, beside a model with covariates, the covariates; empty cells as the training mean), in units
  of each column's training standard deviation.
Then the cost of the tables path against the .npz path on the same numeric modalities (load and train seconds).
Prints one JSON object; `--out` keeps the runs and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from infinimodal import api  # noqa: E402
from infinimodal.columns import COVARIATES  # noqa: E402
from infinimodal.data.cohort_tables import cohort_tables  # noqa: E402
from infinimodal.data.tables import user_tables  # noqa: E402
from infinimodal.evaluation.baselines import tuned_predictions  # noqa: E402
from infinimodal.evaluation.metrics import encode, importance_log_likelihood  # noqa: E402

COVARIATE_NAMES = ["age", "sex", "site"]
#: Share of the held-out subjects' MRI cells emptied for the empty-cell imputation.
EMPTIED = 0.10


def held_out(ids: np.ndarray, data) -> np.ndarray:
    """Which of the joined subjects the model did not train on."""
    return ~np.isin(ids, data.train.ids)


def empty_some_cells(values: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
    """[subjects, columns] bool: EMPTIED of the filled cells of `rows` (a mask of subjects)."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(values.shape, dtype=bool)
    chosen[rows] = rng.random((int(rows.sum()), values.shape[1])) < EMPTIED
    return chosen & ~np.isnan(values)


def cell_baselines(arrays: dict, hidden: np.ndarray, train: np.ndarray, valid: np.ndarray, seed: int) -> dict:
    """Ridge and tuned MLP per MRI column: the column from every other value of the subject (empty -> training mean),
    fitted on training subjects, tuned on validation subjects; squared errors on the hidden cells, per column in units
    of its training standard deviation."""
    names = sorted(k for k in arrays if k != COVARIATES) + (
        [COVARIATES] if COVARIATES in arrays else []
    )  # the model's covariates too
    flat = np.concatenate([np.asarray(arrays[name], dtype=np.float64) for name in names], axis=1)
    start = sum(arrays[name].shape[1] for name in names[: names.index("mri")])
    mri = flat[:, start : start + arrays["mri"].shape[1]].copy()
    visible = flat.copy()
    visible[:, start : start + mri.shape[1]][hidden] = np.nan
    means = np.nanmean(np.where(train[:, None], visible, np.nan), axis=0)
    filled = np.where(np.isnan(visible), np.nan_to_num(means), visible)
    std = np.nanstd(np.where(train[:, None], mri, np.nan), axis=0)
    errors = {"ridge": [], "mlp": []}
    for j in range(mri.shape[1]):
        inputs = np.delete(filled, start + j, axis=1)
        fit_rows = train & ~np.isnan(mri[:, j])
        tune_rows = valid & ~np.isnan(mri[:, j]) & ~hidden[:, j]
        test_rows = hidden[:, j]
        predictions, _ = tuned_predictions(
            inputs[fit_rows],
            mri[fit_rows, j : j + 1],
            inputs[tune_rows],
            mri[tune_rows, j : j + 1],
            inputs[test_rows],
            "continuous",
            seed,
        )
        for name in errors:
            errors[name] += (((predictions[name][:, 0] - mri[test_rows, j]) / std[j]) ** 2).tolist()
    return {name: float(np.mean(e)) for name, e in errors.items()} | {"cells": int(hidden.sum())}


def measure_run(
    folder: Path, out: Path, latent: str, covariates: bool, seed: int, epochs: int, truth, baselines_cache: dict
) -> dict:
    from scipy.stats import pearsonr
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    run = out / f"{latent}_{'cov' if covariates else 'nocov'}_s{seed}"
    tables = folder if covariates else without_covariates(folder)
    config = api.TrainConfig(
        data=str(tables),
        latent=latent,
        covariates=COVARIATE_NAMES if covariates else [],
        epochs=epochs,
        seed=seed,
        latent_dim=16,
        hidden=[128],
    )
    started = time.perf_counter()
    api.train(config, run, progress=False)
    seconds = time.perf_counter() - started
    vae, config, data = api.load_run(run, progress=False)
    evaluation = vae.evaluate(data, iw_samples=200, coherence=False, progress=False)
    rows = user_tables(str(tables), vae.modalities, None, str(tables), vae.covariates)
    ids = rows.ids
    heldout = held_out(ids, data)
    atypical = truth.loc[ids, "atypical"].to_numpy().astype(bool)
    ages = _frame(folder, "covariates").loc[ids, "age"].to_numpy()
    sites = _frame(folder, "covariates").loc[ids, "site"].to_numpy()
    scores = vae.score(rows.arrays, data.valid, samples=20)["score"]
    embedding = vae.embed(rows.arrays)
    train_rows = ~heldout
    classifier = LogisticRegression(max_iter=2000).fit(embedding[train_rows], sites[train_rows])
    site_accuracy = float((classifier.predict(embedding[heldout]) == sites[heldout]).mean())
    majority = float(max(np.mean(sites[heldout] == s) for s in np.unique(sites)))
    typical = heldout & ~atypical
    result = {
        "latent": latent,
        "covariates": covariates,
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "test_elbo": evaluation["elbo"],
        "test_log_likelihood": evaluation["log_likelihood"],
        "kl_active": evaluation["kl_active"],
        "kl_order_spearman": evaluation.get("kl_order_spearman"),
        "kl_span_99": evaluation.get("kl_span_99"),
        "deviation_auc": float(roc_auc_score(atypical[heldout], scores[heldout])),
        "atypical_heldout": int(atypical[heldout].sum()),
        "score_age_r_typical": float(pearsonr(scores[typical], ages[typical])[0]),
        "site_accuracy": site_accuracy,
        "site_majority_share": majority,
        "absent_rows": {
            name: {k: entry.get(k) for k in ("model", "mean", "ridge", "mlp", "logistic", "best_baseline", "rows")}
            for name, entry in evaluation.get("imputation_mse", {}).items()
        },
    }
    # empty cells: the same cells emptied for every run
    mri = np.asarray(rows.arrays["mri"], dtype=np.float64)
    hidden = empty_some_cells(mri, heldout, 11)
    emptied = dict(rows.arrays)
    emptied["mri"] = np.where(hidden, np.nan, mri)
    filled = vae.impute(emptied, samples=20)["mri"]
    std = np.nanstd(np.where(train_rows[:, None], mri, np.nan), axis=0)
    model_error = float(np.mean(((filled[hidden] - mri[hidden]) / np.broadcast_to(std, mri.shape)[hidden]) ** 2))
    key = f"baselines_{'cov' if covariates else 'nocov'}"  # the baselines read what the model reads
    if key not in baselines_cache:
        valid_rows = np.isin(ids, data.valid.ids)
        baselines_cache[key] = cell_baselines(
            {k: v for k, v in rows.arrays.items()}, hidden, train_rows, valid_rows, seed=0
        )
    result["empty_cells"] = {"model": model_error} | baselines_cache[key]
    return result


def without_covariates(folder: Path) -> Path:
    """The cohort's modality tables without its covariates table (what a model without covariates is given)."""
    bare = folder.parent / f"{folder.name}_without_covariates"
    bare.mkdir(exist_ok=True)
    for name in ("mri", "pet", "eeg", "clinical"):
        target = bare / f"{name}.csv"
        if not target.exists():
            target.write_bytes((folder / f"{name}.csv").read_bytes())
    return bare


def _frame(folder: Path, name: str):
    import pandas as pd

    return pd.read_csv(folder / f"{name}.csv", index_col=0, keep_default_na=False, dtype={"subject": str}).rename(
        index=str
    )


def npz_against_tables(folder: Path, out: Path, epochs: int) -> dict:
    """The same numeric modalities (MRI, PET, EEG: no empty cell) through the .npz path and the tables path: load and
    train seconds, and the test ELBO, one gated run each, side by side."""
    import pandas as pd

    numeric = out / "numeric_tables"
    numeric.mkdir(parents=True, exist_ok=True)
    frames = {name: _frame(folder, name).apply(pd.to_numeric) for name in ("mri", "pet", "eeg")}
    ids = frames["mri"].index
    for name, frame in frames.items():
        frame.to_csv(numeric / f"{name}.csv")
    np.savez(
        out / "numeric.npz", **{name: frame.reindex(ids).to_numpy(dtype=np.float64) for name, frame in frames.items()}
    )
    timings = {}
    for path, spec in (("npz", str(out / "numeric.npz")), ("tables", str(numeric))):
        config = api.TrainConfig(data=spec, latent="gated", epochs=epochs, seed=0, latent_dim=16, hidden=[128])
        started = time.perf_counter()
        data = api.load_data(config, progress=False)
        loaded = time.perf_counter() - started
        api.train(config, out / f"speed_{path}", progress=False)
        vae, _, data = api.load_run(out / f"speed_{path}", progress=False)
        timings[path] = {
            "load_seconds": round(loaded, 3),
            "train_seconds": round(api.read_config(out / f"speed_{path}" / "config.json")["train_seconds"], 1),
            "test_elbo": vae.evaluate(data, iw_samples=1, coherence=False, progress=False)["elbo"],
            "train_rows": len(data.train),
        }
    timings["train_time_ratio_tables_to_npz"] = timings["tables"]["train_seconds"] / timings["npz"]["train_seconds"]
    return timings


def mfeat_as_tables(npz: Path, out: Path, epochs: int, latents: list[str], seed: int) -> dict:
    """The UCI multi-feature digits (benchmarks/mfeat.py's .npz) written as six subject-keyed tables and trained both
    ways, each family: test ELBO, log p(x) (200 samples) and train seconds. The tables path infers a likelihood per column (the
    integer views' columns become beta-binomial or negative binomial), the .npz path one per view (Poisson), so the fits
    are of different models of the same numbers; the times are comparable."""
    import pandas as pd
    import torch

    folder = out / "mfeat_tables"
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as archive:
        views = {name: archive[name] for name in archive.files if name != "labels"}
    ids = pd.Index([f"digit-{i + 1:04d}" for i in range(len(next(iter(views.values()))))], name="digit")
    for name, values in views.items():
        pd.DataFrame(values, index=ids, columns=[f"{name}_{j + 1}" for j in range(values.shape[1])]).to_csv(
            folder / f"{name}.csv"
        )
    result = {}
    for latent in latents:
        for path, spec in (("npz", str(npz)), ("tables", str(folder))):
            run = out / f"mfeat_{latent}_{path}"
            config = api.TrainConfig(data=spec, latent=latent, epochs=epochs, seed=seed, latent_dim=16, hidden=[128])
            api.train(config, run, progress=False)
            vae, _, data = api.load_run(run, progress=False)
            with torch.random.fork_rng():  # the fit alone (evaluate would also tune six views' imputation baselines)
                torch.manual_seed(0)
                elbo = float(encode(vae.module, data.test, elbo=True)[0]["elbo"].mean())
                log_p = float(importance_log_likelihood(vae.module, data.test, 200, progress=False).mean())
            result[f"{latent}_{path}"] = {
                "test_elbo": elbo,
                "test_log_likelihood": log_p,
                "train_seconds": round(api.read_config(run / "config.json")["train_seconds"], 1),
            }
    return result


def main(argv: list[str] | None = None) -> dict:
    import pandas as pd
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/tables")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--latents", nargs="+", default=["gated", "gaussian"])
    parser.add_argument("--no-speed", action="store_true", help="skip the .npz-against-tables timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--mfeat", default=None, help="the .npz of benchmarks/mfeat.py: also train on it as tables and as .npz"
    )
    parser.add_argument("--mfeat-only", action="store_true", help="only the multi-feature comparison")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mfeat_only:
        result = {
            "mfeat": mfeat_as_tables(Path(args.mfeat), out, args.epochs, args.latents, args.seeds[0]),
            "epochs": args.epochs,
        }
        (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
        return result
    folder = cohort_tables(f"n={args.n},seed=7,dir={out / 'cohort'}")
    truth = pd.read_csv(folder / "truth" / "atypical.csv", index_col=0)
    cache: dict = {}
    runs = [
        measure_run(folder, out, latent, covariates, seed, args.epochs, truth, cache)
        for latent in args.latents
        for covariates in (False, True)
        for seed in args.seeds
    ]
    result = {"data": f"cohort-tables:n={args.n},seed=7", "epochs": args.epochs, "runs": runs}
    if not args.no_speed:
        result["npz_against_tables"] = npz_against_tables(folder, out, args.epochs)
    if args.mfeat:
        result["mfeat"] = mfeat_as_tables(Path(args.mfeat), out, args.epochs, args.latents, args.seeds[0])
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
