"""What the model found, against the truth and across seeds: the default (gated) model, our Gaussian and MOFA+.

    python benchmarks/stability.py --data factors --seeds 5 --epochs 40 > runs/bench/stability_factors.json
    python benchmarks/stability.py --data mnist --seeds 5 --epochs 10 --max-train 10000 --no-mofa > runs/bench/stability_mnist.json

For each method and seed, on the data's held-out test rows:
- with known factors (`factors:` data: a known pattern of factors over the modalities, sparse loadings):
  `factors_matched`, how many true factors a used dimension matches (|r| >= 0.7, each dimension matched to one
  factor by the Hungarian algorithm); `pattern_right`, how many of those explain exactly the modalities the factor
  lives in (`explain`'s `modalities`); `feature_auroc`, the AUROC of the matched dimension's |feature effects| against
  whether the true loading is non-zero, averaged over (factor, modality it lives in);
- `used`: the dimensions `explain` calls used;
- across seeds (`infinimodal.evaluation.stability`, seed 0 against the others): `median_worst_abs_r` of seed 0's used
  dimensions and `share_keep_index`, the share whose match has the same index in every other seed.
Both of our models train with the same epochs, latent size and data; MOFA+ (mofapy2, in its own virtual environment
`.venv-mofa` beside `.venv`, made on first use; numpy, scipy, h5py, pandas and scikit-learn, no torch) gets the same
training rows, Gaussian views, the same number of factors and its default inactive-factor pruning; its test rows' factors are
the posterior means given its loadings and noise precisions, its feature effects its loadings times the factor's
5-95 % range, and its variance explained MOFA's R^2 on the test rows (the same definition `explain` uses). Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MOFA_VENV = ROOT / ".venv-mofa"
MOFA_REQUIREMENT = "mofapy2==0.7.5"
MATCH_R = 0.7


def mofa_python() -> Path:
    """The MOFA+ environment's python, made on first use."""
    python = MOFA_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MOFA_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", MOFA_REQUIREMENT], check=True)
    return python


# --- the child: runs in .venv-mofa, where infinimodal is not installed -------------------------------------------------


def mofa_child(path_in: str, path_out: str, factors: int, seed: int) -> None:
    from mofapy2.run.entry_point import entry_point

    data = np.load(path_in)
    views = sorted(k for k in data.files if k.startswith("train_"))
    entry = entry_point()
    with contextlib.redirect_stdout(io.StringIO()):
        entry.set_data_options(scale_views=False)
        entry.set_data_matrix([[data[v]] for v in views], likelihoods=["gaussian"] * len(views))
        entry.set_model_options(factors=factors, spikeslab_weights=True, ard_weights=True)
        entry.set_train_options(convergence_mode="medium", seed=seed, verbose=False, quiet=True)
        entry.build()
        entry.run()
    weights = [np.asarray(w) for w in entry.model.nodes["W"].getExpectation()]
    taus = [np.asarray(t) for t in entry.model.nodes["Tau"].getExpectation()]
    np.savez(
        path_out,
        **{f"W{m}": w for m, w in enumerate(weights)},
        **{f"tau{m}": np.asarray(t).reshape(-1, t.shape[-1]).mean(0) for m, t in enumerate(taus)},
    )


# --- the parent ---------------------------------------------------------------------------------------------------


def hungarian(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(-r)


def truth_scores(truth: dict, names: list[str], codes: np.ndarray, explanation: dict) -> dict:
    """factors_matched, pattern_right and feature_auroc of one run (module docstring)."""
    from sklearn.metrics import roc_auc_score

    from infinimodal.evaluation.stability import abs_correlations

    used = np.flatnonzero(explanation["used"])
    factors = truth["factors"]["test"]
    if not len(used):
        return {"factors_matched": 0, "pattern_right": 0, "feature_auroc": None}
    r = abs_correlations(factors, codes[:, used])
    rows, cols = hungarian(r)
    matched = right = 0
    aurocs = []
    for k, c in zip(rows, cols):
        if r[k, c] < MATCH_R:
            continue
        matched += 1
        j = int(used[c])
        lives_in = sorted(np.asarray(names)[truth["pattern"][k]].tolist())
        right += sorted(explanation["dimensions"][j]["modalities"]) == lives_in
        for name in lives_in:
            loaded = truth["loadings"][name][:, k] != 0
            aurocs.append(roc_auc_score(loaded, np.abs(explanation["feature_effects"][name]["effects"][j])))
    return {
        "factors_matched": matched,
        "pattern_right": right,
        "feature_auroc": float(np.mean(aurocs)) if aurocs else None,
    }


def our_runs(args, kind: str, workdir: Path) -> list[tuple[np.ndarray, dict, float]]:
    """(test codes, explanation, training seconds) per seed of one of our models."""
    from infinimodal.cli import main

    latent = ["--latent", "gaussian"] if kind == "gaussian" else args.gated_flags.split()
    out = []
    for seed in range(args.seeds):
        run = workdir / f"{kind}_{seed}"
        started = time.perf_counter()
        if (run / "model.ckpt").is_file() and args.reuse:
            seconds = (
                float(json.loads((run / "progress.json").read_text()).get("seconds", float("nan")))
                if (run / "progress.json").is_file()
                else float("nan")
            )
            out.append(explained(run, args) + (seconds,))
            continue
        flags = [
            "train",
            "--data",
            args.data,
            "--epochs",
            str(args.epochs),
            "--latent-dim",
            str(args.latent_dim),
            "--seed",
            str(seed),
            "--quiet",
            "--out",
            str(run),
            *latent,
            *(["--max-train", str(args.max_train)] if args.max_train else []),
        ]
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            status = main(flags)
        if status != 0:
            raise SystemExit(f"training {kind} seed {seed} failed ({status})")
        seconds = time.perf_counter() - started
        out.append(explained(run, args) + (seconds,))
    return out


def explained(run: Path, args) -> tuple[np.ndarray, dict]:
    """(test codes, explanation) of a trained run."""
    from infinimodal import api

    vae, config, data = api.load_run(run, progress=False)
    rows = data.test.take(slice(0, args.max_rows))
    explanation = vae.explain(rows, max_rows=args.max_rows)
    return vae.embed(rows, decoder_space=True)[:, : len(explanation["used"])], explanation


def mofa_runs(args, data, workdir: Path) -> list[tuple[np.ndarray, dict, float]]:
    """MOFA+ per seed, scored like our runs: test factors, an explanation-shaped dict, seconds."""
    python = mofa_python()
    names = data.names
    rows = (
        data.train if args.max_train is None else data.train.take(slice(0, args.max_train))
    )  # the rows our models train on
    train = {f"train_{name}": rows.arrays[name].reshape(len(rows), -1).astype(np.float64) for name in names}
    np.savez(workdir / "mofa_in.npz", **train)
    test = data.test.take(slice(0, args.max_rows))
    x_test = [test.arrays[name].reshape(len(test), -1).astype(np.float64) for name in names]
    out = []
    for seed in range(args.mofa_seeds if args.mofa_seeds is not None else args.seeds):
        started = time.perf_counter()
        if not (args.reuse and (workdir / f"mofa_{seed}.npz").is_file()):
            subprocess.run(
                [
                    str(python),
                    __file__,
                    "--child",
                    str(workdir / "mofa_in.npz"),
                    str(workdir / f"mofa_{seed}.npz"),
                    str(args.latent_dim),
                    str(seed),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        seconds = time.perf_counter() - started
        found = np.load(workdir / f"mofa_{seed}.npz")
        weights = [found[f"W{m}"] for m in range(len(names))]
        taus = [found[f"tau{m}"] for m in range(len(names))]
        precision = np.eye(weights[0].shape[1]) + sum((w * t[:, None]).T @ w for w, t in zip(weights, taus))
        z = np.linalg.solve(precision, sum((w * t[:, None]).T @ x.T for w, t, x in zip(weights, taus, x_test))).T
        out.append((z, mofa_explanation(z, weights, x_test, names), seconds))
    return out


def mofa_explanation(z: np.ndarray, weights: list[np.ndarray], x_test: list[np.ndarray], names: list[str]) -> dict:
    """`explain`'s keys for a MOFA+ model: R^2 alone per factor and view on the test rows, effects = loadings times the
    factor's 5-95 % range, used = explains at least 0.005 of some view (MOFA has no KL), modalities with R^2 >= 0.02."""
    from infinimodal.evaluation.explain import EXPLAINS_R2, USED_R2

    low, high = np.percentile(z, [5, 95], axis=0)
    r2 = {}
    for name, w, x in zip(names, weights, x_test):
        centred = x - x.mean(0)
        total = (centred**2).sum()
        r2[name] = [float(1 - ((centred - np.outer(z[:, k], w[:, k])) ** 2).sum() / total) for k in range(z.shape[1])]
    used = [max(r2[name][k] for name in names) >= USED_R2 for k in range(z.shape[1])]
    dimensions = [
        {"index": k, "used": used[k], "modalities": [name for name in names if r2[name][k] >= EXPLAINS_R2]}
        for k in range(z.shape[1])
    ]
    return {
        "used": used,
        "dimensions": dimensions,
        "variance_explained": r2,
        "feature_effects": {
            name: {"features": list(range(w.shape[0])), "effects": (w * (high - low)).T.tolist()}
            for name, w in zip(names, weights)
        },
    }


def summarise(method_runs, data) -> dict:
    from infinimodal.evaluation.stability import stability

    per_seed = []
    for codes, explanation, seconds in method_runs:
        entry = {"used": int(np.sum(explanation["used"])), "seconds": round(seconds, 1)}
        if data.truth is not None and "pattern" in data.truth:
            entry |= truth_scores(data.truth, data.names, codes, explanation)
        per_seed.append(entry)
    table = stability([c for c, _, _ in method_runs], [e for _, e, _ in method_runs]) if len(method_runs) > 1 else None
    out = {"per_seed": per_seed, "stability": table["summary"] if table else None}
    for key in ("factors_matched", "pattern_right", "feature_auroc", "used"):
        values = [s[key] for s in per_seed if s.get(key) is not None]
        if values:
            out[f"mean_{key}"] = float(np.mean(values))
    return out


def main(argv: list[str] | None = None) -> dict:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        mofa_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return {}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="factors")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--latent-dim", type=int, default=12)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-rows", type=int, default=2000)
    parser.add_argument("--no-mofa", action="store_true")
    parser.add_argument("--gated-flags", default="", help='more `train` flags for the gated runs, e.g. "--alpha 5"')
    parser.add_argument(
        "--methods", default="gated,gaussian", help="which of our models to train: gated, gaussian or both"
    )
    parser.add_argument("--mofa-seeds", type=int, default=None, help="MOFA+ seeds (default: --seeds)")
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--reuse", action="store_true", help="score runs already trained in --workdir instead of training them again"
    )
    args = parser.parse_args(argv)
    from infinimodal.data import load_dataset

    data = load_dataset(args.data, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = {
            "data": args.data,
            "seeds": args.seeds,
            "epochs": args.epochs,
            "latent_dim": args.latent_dim,
            "max_train": args.max_train,
            "rows": min(args.max_rows, len(data.test)),
            "methods": {},
        }
        for kind in args.methods.split(","):
            result["methods"][kind] = summarise(our_runs(args, kind, workdir), data)
        if not args.no_mofa:
            result["methods"]["mofa+"] = summarise(mofa_runs(args, data, workdir), data)
    print(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
