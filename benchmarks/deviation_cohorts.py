"""Which deviation score finds patients: every candidate of `infinimodal.deviation` against PCA baselines, on
neuroimaging-shaped cohorts generated here with several kinds and sizes of deviation (nobody tuned to them).

    python benchmarks/deviation_cohorts.py --epochs 40 --seeds 2 > runs/bench/deviation_cohorts.json

A cohort: 3,000 reference subjects (2,400 training, 600 validation: the reference the scores are standardised
against), MRI (90 regions), PET (90 regions) and 6 clinical scores, from 5 shared factors and 2 private factors per
modality through smooth random maps (x = A f + 0.5 tanh(B f), noise 0.5); PET is missing for 30 % of every subject
group. Test: 400 controls drawn the same way and 400 patients of each kind:
- `atrophy_12_<size>`: 12 of the 90 regions (the same in MRI and PET) lowered by <size> reference SDs;
- `factor_tail_<size>`: one shared factor at <size> SDs, pushed through the maps (coherent, far out);
- `private_<size>`: MRI's first private factor at <size> SDs (a shift the other modalities cannot predict);
- `regions_3`: 3 MRI regions raised by 4 SDs (off the map, small).
For each kind, the AUC of patients against controls of every candidate score (`deviation.COMBINATIONS`, the count of
extreme features |z| > 2.6, the robust latent distance) and of the baselines: the residual of a PCA fitted on the
reference MRI (as many components as explain 90 % of its variance), of a PCA of every modality concatenated (PET
imputed by its reference mean where missing), and the Mahalanobis distance of those PCA scores. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

SIZES = {"mri": 90, "pet": 90, "clinical": 6}
SHARED, PRIVATE, NOISE = 5, 2, 0.5
KINDS = ("atrophy_12_1.5", "atrophy_12_3", "factor_tail_3", "factor_tail_4", "private_4", "regions_3")


def draw(rng, maps, n: int, kind: str | None, regions: np.ndarray):
    shared = rng.standard_normal((n, SHARED))
    private = {name: rng.standard_normal((n, PRIVATE)) for name in SIZES}
    if kind and kind.startswith("factor_tail"):
        shared[:, 0] = float(kind.rsplit("_", 1)[1]) * rng.choice([-1, 1], n)
    if kind and kind.startswith("private"):
        private["mri"][:, 0] = float(kind.rsplit("_", 1)[1]) * rng.choice([-1, 1], n)
    out = {}
    for name, (a, b) in maps.items():
        f = np.concatenate([shared, private[name]], axis=1)
        out[name] = f @ a + 0.5 * np.tanh(f @ b) + NOISE * rng.standard_normal((n, SIZES[name]))
    return out


def cohort(seed: int):
    rng = np.random.default_rng([seed, 77])
    maps = {
        name: (
            rng.standard_normal((SHARED + PRIVATE, p)) / np.sqrt(SHARED + PRIVATE),
            rng.standard_normal((SHARED + PRIVATE, p)),
        )
        for name, p in SIZES.items()
    }
    regions = rng.choice(90, 12, replace=False)
    reference = draw(rng, maps, 3000, None, regions)
    sd = {name: x.std(0) for name, x in reference.items()}
    groups = {"control": draw(rng, maps, 400, None, regions)}
    for kind in KINDS:
        rows = draw(rng, maps, 400, kind, regions)
        if kind.startswith("atrophy"):
            size = float(kind.rsplit("_", 1)[1])
            for name in ("mri", "pet"):
                rows[name][:, regions] -= size * sd[name][regions]
        if kind == "regions_3":
            rows["mri"][:, regions[:3]] += 4 * sd["mri"][regions[:3]]
        groups[kind] = rows
    return reference, groups


def write_npz(path: Path, reference, groups, rng) -> list[str]:
    names = list(groups)
    arrays = {
        name: np.concatenate([reference[name]] + [groups[g][name] for g in names]).astype(np.float32) for name in SIZES
    }
    n = len(arrays["mri"])
    arrays["pet"][rng.random(n) < 0.3] = np.nan
    split = np.array(["train"] * 2400 + ["valid"] * 600 + ["test"] * (n - 3000))
    np.savez(path, split=split, **arrays)
    return [g for g in names for _ in range(400)]


def auc(scores: np.ndarray, patients: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    finite = np.isfinite(scores)
    return float(roc_auc_score(patients[finite], scores[finite]))


def pca_scores(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(residual sum of squares, Mahalanobis distance of the component scores) of test rows under a PCA of train."""
    from sklearn.decomposition import PCA

    pca = PCA(0.9).fit(train)
    scores = pca.transform(test)
    residual = ((test - pca.inverse_transform(scores)) ** 2).sum(1)
    return residual, np.sqrt(((scores / np.sqrt(pca.explained_variance_)) ** 2).sum(1))


def run(seed: int, epochs: int, workdir: Path, reuse: bool = False) -> dict:
    from infinimodal import api
    from infinimodal.cli import main
    from infinimodal.deviation import COMBINATIONS, Reference, combine, deviation_parts
    from infinimodal.feature_deviation import extreme_counts

    reference, groups = cohort(seed)
    path = workdir / f"cohort_{seed}.npz"
    group_of = np.array(write_npz(path, reference, groups, np.random.default_rng(seed)))
    if not (reuse and (workdir / f"run_{seed}" / "model.ckpt").is_file()):
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            status = main(
                [
                    "train",
                    "--data",
                    str(path),
                    "--epochs",
                    str(epochs),
                    "--seed",
                    str(seed),
                    "--quiet",
                    "--out",
                    str(workdir / f"run_{seed}"),
                ]
            )
        if status:
            raise SystemExit(f"training failed ({status})")
    vae, _, data = api.load_run(workdir / f"run_{seed}", progress=False)
    fitted = Reference.fit(vae.module, data.valid, 50)
    parts = deviation_parts(vae.module, data.test, fitted, 50)
    candidates = {name: combine(parts, name) for name in COMBINATIONS}
    candidates["extreme_features"] = extreme_counts(fitted.features().z_maps(vae.module, data.test)).astype(float)
    train, test = data.train, data.test
    mri_res, mri_maha = pca_scores(train.arrays["mri"], test.arrays["mri"])
    pet_mean = train.arrays["pet"][train.mask[:, 1]].mean(0) if "pet" in data.names else None

    def concatenated(split):
        parts = []
        for m, name in enumerate(data.names):
            x = split.arrays[name].copy()
            if name == "pet":
                x[~split.mask[:, m]] = pet_mean
            parts.append(x)
        return np.concatenate(parts, axis=1)

    all_res, all_maha = pca_scores(concatenated(train), concatenated(test))
    baselines = {
        "pca_residual_mri": mri_res,
        "pca_mahalanobis_mri": mri_maha,
        "pca_residual_all": all_res,
        "pca_mahalanobis_all": all_maha,
    }
    out = {}
    controls = group_of == "control"
    for kind in KINDS:
        rows = controls | (group_of == kind)
        patients = (group_of == kind)[rows]
        out[kind] = {name: round(auc(scores[rows], patients), 4) for name, scores in (candidates | baselines).items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--reuse", action="store_true", help="score the runs already trained in --workdir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        runs = [run(seed, args.epochs, workdir, args.reuse) for seed in range(args.seeds)]
    mean = {
        kind: {name: round(float(np.mean([r[kind][name] for r in runs])), 4) for name in runs[0][kind]}
        for kind in KINDS
    }
    candidates = list(runs[0][KINDS[0]])
    worst = {name: min(mean[kind][name] for kind in KINDS) for name in candidates}
    average = {name: round(float(np.mean([mean[kind][name] for kind in KINDS])), 4) for name in candidates}
    print(
        json.dumps(
            {
                "epochs": args.epochs,
                "seeds": args.seeds,
                "mean_auc": mean,
                "average_over_kinds": average,
                "worst_over_kinds": worst,
                "per_seed": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
