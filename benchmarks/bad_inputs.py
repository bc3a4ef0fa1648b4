"""Bad inputs tried on every entry point that reads data, and what each produced; prints one JSON object
(and, with --markdown, the table of docs/reliability.md).

A tiny model is trained on a clean file (modalities `bits` (bernoulli), `counts` (poisson), `values`
(gaussian)); then each bad file goes to `train` (with those likelihoods given), `impute`, `embed`, `sample --given`, `score` and
`explain` and to the Python
facade (`MultimodalVAE.embed` on the arrays), and a damaged checkpoint to `evaluate`. A row is a pass when the
command exits non-zero with one line that names the problem, no traceback, and nothing written to --out.
Bad folders of subject-keyed tables (`--data DIR`: a missing ID column, duplicated IDs, a column whose type changes,
stray text in a numeric column, an unknown covariate, tables with no subject in common, a file that is not UTF-8, a
subject in no modality table) go to `train`, and a covariate class the model never saw to `embed` and `impute`.

    python benchmarks/bad_inputs.py [--markdown] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from infinimodal import api
from infinimodal.cli import main
from infinimodal.errors import InfinimodalError

N = 60


def clean(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "bits": (rng.random((N, 8)) < 0.3).astype(np.float32),
        "counts": rng.poisson(3.0, (N, 5)).astype(np.float32),
        "values": rng.normal(size=(N, 4)).astype(np.float32),
    }


def bad_files(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    def changed(**edits):
        arrays = clean(np.random.default_rng(0))
        for key, edit in edits.items():
            arrays[key] = edit(arrays[key])
        return arrays

    def at(row, col, value):
        def edit(a):
            a = a.astype(np.float64 if isinstance(value, float) else a.dtype)
            a[row, col] = value
            return a

        return edit

    return {
        "rows differ between modalities": changed(values=lambda a: a[:-3]),
        "a partly-NaN row": changed(values=at(7, 1, np.nan)),
        "inf": changed(values=at(4, 0, np.inf)),
        "1e30": changed(values=at(9, 2, 1e30)),
        "strings": changed(values=lambda a: a.astype(str)),
        "an empty array": changed(values=lambda a: a[:0]),
        "3.0 for bernoulli": changed(bits=at(5, 3, 3.0)),
        "negative count": changed(counts=at(2, 1, -1.0)),
        "fractional count": changed(counts=at(3, 0, 2.5)),
        "a row without any modality": changed(
            bits=at(6, slice(None), np.nan), counts=at(6, slice(None), np.nan), values=at(6, slice(None), np.nan)
        ),
    }


def clean_tables(folder: Path, n: int = N) -> Path:
    """A folder of three subject-keyed tables: MRI (numbers), clinical (a score and a text column) and covariates."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"s{i:03d}" for i in range(n)]
    (folder / "mri.csv").write_text(
        "subject,r1,r2\n" + "".join(f"{s},{a:.3f},{b:.3f}\n" for s, (a, b) in zip(ids, rng.normal(size=(n, 2))))
    )
    (folder / "clinical.csv").write_text(
        "subject,mmse,diagnosis\n"
        + "".join(f"{s},{m},{d}\n" for s, m, d in zip(ids, rng.integers(20, 31, n), rng.choice(["CN", "AD"], n)))
    )
    (folder / "covariates.csv").write_text(
        "subject,age,site\n"
        + "".join(f"{s},{a:.0f},{t}\n" for s, a, t in zip(ids, rng.uniform(55, 90, n), rng.choice(["A", "B"], n)))
    )
    return folder


def set_cell(path: Path, subject: str, column: int, text: str) -> None:
    """Write `text` into one cell of a CSV table (the row of `subject`, the column at that position)."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        cells = line.split(",")
        if cells[0] == subject:
            cells[column] = text
            lines[i] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def bad_tables(work: Path) -> dict[str, tuple[Path, list[str]]]:
    """Each bad folder of tables, and the extra `train` flags it is tried with."""
    cases = {}

    def variant(name: str, edit, flags=()) -> None:
        folder = clean_tables(work / "tables" / name.replace(" ", "_"))
        edit(folder)
        cases[name] = (folder, list(flags))

    def replace(file: str, old: str, new: str):
        return lambda folder: (folder / file).write_text((folder / file).read_text().replace(old, new, 1))

    variant("tables: no such ID column", lambda f: None, ["--id-column", "participant"])
    variant("tables: duplicated IDs", replace("mri.csv", "s002,", "s001,"))
    variant(
        "tables: a column whose type changes",
        lambda f: [set_cell(f / "mri.csv", f"s{i:03d}", 1, "high") for i in range(30, N)],
    )
    variant(
        "tables: stray strings in numbers",
        lambda f: [
            set_cell(f / "clinical.csv", subject, 1, text) for subject, text in (("s003", ">30"), ("s005", "n/a"))
        ],
    )
    variant("tables: an unknown covariate", lambda f: None, ["--covariates", "age,scanner"])
    variant(
        "tables: no subject in common",
        lambda f: (f / "mri.csv").write_text((f / "mri.csv").read_text().replace("\ns", "\nsub-")),
    )
    variant(
        "tables: not UTF-8",
        lambda f: (f / "clinical.csv").write_bytes(
            (f / "clinical.csv").read_bytes().replace(b"AD", "\u00c4D".encode("latin-1"), 1)
        ),
    )
    variant(
        "tables: a subject with no modality",
        lambda f: (f / "covariates.csv").write_text((f / "covariates.csv").read_text() + "s999,70,A\n"),
        ["--covariates", "age,site"],
    )
    return cases


def run(argv: list[str], out: Path | None = None) -> dict:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("infinimodal: error")]
    return {
        "exit": code,
        "error_lines": len(errors),
        "message": errors[-1] if errors else (lines[-1] if lines else ""),
        "traceback": "Traceback" in err.getvalue(),
        "wrote_output": bool(out is not None and out.exists()),
    }


def facade(run_dir: Path, path: Path) -> dict:
    vae, _ = api.load(run_dir)
    try:
        with np.load(path, allow_pickle=False) as f:
            vae.embed({k: f[k] for k in f.files})
    except InfinimodalError as exc:
        return {
            "exit": "InfinimodalError",
            "error_lines": 1 + str(exc).count("\n"),
            "message": str(exc),
            "traceback": False,
            "wrote_output": False,
        }
    except Exception as exc:  # reported in the table: any other exception is a defect to fix
        return {
            "exit": type(exc).__name__,
            "error_lines": 0,
            "message": str(exc)[:200],
            "traceback": True,
            "wrote_output": False,
        }
    return {"exit": 0, "error_lines": 0, "message": "accepted", "traceback": False, "wrote_output": False}


def main_(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--work", default=None)
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="infinimodal-bad-inputs-"))
    work.mkdir(parents=True, exist_ok=True)
    good = work / "good.npz"
    np.savez(good, **clean(np.random.default_rng(0)))
    model = work / "model"
    assert (
        run(["train", "--data", str(good), "--epochs", "1", "--hidden", "8", "--quiet", "--out", str(model)])["exit"]
        == 0
    )
    table = {}
    for name, arrays in bad_files(np.random.default_rng(1)).items():
        path = work / f"{name.replace(' ', '_')}.npz"
        np.savez(path, **arrays)
        row = {}
        for command, argv, out in [
            # likelihoods given, as a user who knows the data would: otherwise 3.0 in `bits` is inferred as counts
            (
                "train",
                [
                    "train",
                    "--data",
                    str(path),
                    "--likelihood",
                    "bits=bernoulli",
                    "--likelihood",
                    "counts=poisson",
                    "--epochs",
                    "1",
                    "--quiet",
                    "--out",
                    str(work / "t"),
                ],
                work / "t" / "model.ckpt",
            ),
            ("impute", ["impute", str(model), "--data", str(path), "--out", str(work / "i.npz")], work / "i.npz"),
            ("embed", ["embed", str(model), "--data", str(path), "--out", str(work / "e.npy")], work / "e.npy"),
            (
                "sample --given",
                [
                    "sample",
                    str(model),
                    "--n",
                    "3",
                    "--given",
                    "values",
                    "--data",
                    str(path),
                    "--out",
                    str(work / "s.npz"),
                ],
                work / "s.npz",
            ),
            (
                "score",
                ["score", str(model), "--data", str(path), "--samples", "2", "--out", str(work / "sc.csv")],
                work / "sc.csv",
            ),
            ("explain", ["explain", str(model), "--data", str(path), "--out", str(work / "x.json")], work / "x.json"),
        ]:
            row[command] = run(argv, out)
            for leftover in (
                work / "t",
                work / "i.npz",
                work / "e.npy",
                work / "s.npz",
                work / "sc.csv",
                work / "x.json",
            ):
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        row["MultimodalVAE.embed"] = facade(model, path)
        table[name] = row
    table["unknown modality in --given"] = {
        "sample --given": run(
            ["sample", str(model), "--n", "3", "--given", "nope", "--data", str(good), "--out", str(work / "s.npz")],
            work / "s.npz",
        )
    }
    truncated = work / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    table["a truncated .npz"] = {
        "train": run(
            ["train", "--data", str(truncated), "--quiet", "--out", str(work / "t")], work / "t" / "model.ckpt"
        ),
        "impute": run(["impute", str(model), "--data", str(truncated), "--out", str(work / "i.npz")], work / "i.npz"),
    }
    for name, (folder, flags) in bad_tables(work).items():
        table[name] = {
            "train": run(
                [
                    "train",
                    "--data",
                    str(folder),
                    *flags,
                    "--epochs",
                    "1",
                    "--hidden",
                    "8",
                    "--quiet",
                    "--out",
                    str(work / "t"),
                ],
                work / "t" / "model.ckpt",
            )
        }
        shutil.rmtree(work / "t", ignore_errors=True)
    tables = clean_tables(work / "tables" / "clean")
    table_model = work / "table_model"
    assert (
        run(
            [
                "train",
                "--data",
                str(tables),
                "--covariates",
                "age,site",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--quiet",
                "--out",
                str(table_model),
            ]
        )["exit"]
        == 0
    )
    unseen = clean_tables(work / "tables" / "unseen_site")
    (unseen / "covariates.csv").write_text((unseen / "covariates.csv").read_text().replace(",A\n", ",C\n", 1))
    table["tables: a covariate class unseen in training"] = {
        command: run([command, str(table_model), "--data", str(unseen), "--out", str(work / target)], work / target)
        for command, target in (("embed", "e.csv"), ("impute", "filled"))
    }
    damaged = work / "damaged"
    shutil.copytree(model, damaged, dirs_exist_ok=True)
    (damaged / "model.ckpt").write_bytes((model / "model.ckpt").read_bytes()[:1000])
    table["a corrupted checkpoint"] = {"evaluate": run(["evaluate", str(damaged), "--quiet"])}
    result = {
        "work": str(work),
        "table": table,
        # refused as bad input: exit 2 (the facade: InfinimodalError), one error line, no traceback, nothing written
        "all_refused_in_one_line": all(
            c["exit"] in (2, "InfinimodalError")
            and c["error_lines"] == 1
            and not c["traceback"]
            and not c["wrote_output"]
            for r in table.values()
            for c in r.values()
        ),
    }
    if args.markdown:
        commands = ["train", "impute", "embed", "sample --given", "score", "explain", "MultimodalVAE.embed", "evaluate"]
        print("| bad input | " + " | ".join(commands) + " |")
        print("|---|" + "---|" * len(commands))
        for name, row in table.items():
            cells = []
            for c in commands:
                if c not in row:
                    cells.append("")
                    continue
                r = row[c]
                said = r["message"].removeprefix("infinimodal: error: ").replace(str(work) + "/", "").replace("|", "/")
                cells.append(
                    ("exit " + str(r["exit"]) if r["exit"] else "**accepted**")
                    + (" TRACEBACK" if r["traceback"] else "")
                    + f": {said[:110]}"
                )
            print(f"| {name} | " + " | ".join(cells) + " |")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main_()
