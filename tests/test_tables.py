"""Subject-keyed tables: the per-column likelihood at its edges (its log-probability, mean and draws against scipy are
in the contract table, tests/contracts.py), reading and joining tables, the errors a bad table gets, covariates, and
the commands that take tables in and give ID-keyed tables out."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from infinimodal.cli import main
from infinimodal.columns import Column, feature_names, parse_column_likelihood
from infinimodal.data import load_dataset
from infinimodal.columns import COVARIATES
from infinimodal.data.tables import user_tables
from infinimodal.errors import DataError
from infinimodal.tabular import TableLikelihood, beta_binomial_log_prob

from .contracts import TABLE_COLUMNS

COLUMNS = TABLE_COLUMNS  # one column of each family (tests/contracts.py)


# --- the likelihood, against scipy -----------------------------------------------------------------------


@pytest.mark.parametrize("n,mean,concentration", [(30, 0.9, 5.0), (1, 0.3, 2.0), (10, 0.5, 1e4), (100, 0.02, 0.5)])
def test_beta_binomial_log_prob_matches_scipy(n, mean, concentration):
    k = torch.arange(n + 1, dtype=torch.float64)
    logit = torch.tensor(np.log(mean / (1 - mean)), dtype=torch.float64)
    ours = beta_binomial_log_prob(
        k, torch.tensor(float(n)), logit, torch.tensor(concentration, dtype=torch.float64)
    ).numpy()
    a, b = mean * concentration, (1 - mean) * concentration
    np.testing.assert_allclose(ours, stats.betabinom.logpmf(np.arange(n + 1), n, a, b), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("logit", [17.0, 40.0, 200.0, -200.0])
def test_a_saturated_bounded_score_stays_finite_filled_or_empty(logit):
    law = TableLikelihood([Column("mmse", "beta_binomial", low=0, high=30)])
    for cell in (30.0, 0.0, float("nan")):  # at the ceiling, at the floor, empty
        params = torch.full((1, 1, 1), logit, requires_grad=True)
        log_p = law(params).log_prob(torch.tensor([[cell]]))
        log_p.sum().backward()
        assert (
            torch.isfinite(log_p).all()
            and torch.isfinite(params.grad).all()
            and torch.isfinite(law.families["beta_binomial"].raw_concentration.grad).all()
        )
        law.zero_grad()


def test_empty_cells_pass_no_gradient_and_reach_the_encoder_as_indicators():
    law = TableLikelihood(COLUMNS)
    params = torch.zeros(2, 1, law.shape[0], requires_grad=True)
    rows = torch.tensor(
        [[np.nan, 1, 3, 27, 0, 1, 0, 2], [0.5, 0, 1, 3, np.nan, np.nan, np.nan, 1]], dtype=torch.float32
    )
    law(params).log_prob(rows).sum().backward()
    assert torch.isfinite(params.grad).all()
    assert params.grad[0, 0, 0] == 0 and (params.grad[1, 0, 4:7] == 0).all()  # the empty cells' parameters get nothing
    seen = law.eval().encoder_input(rows)  # (in training, some filled cells are hidden too: the next test)
    assert seen.shape == (2, law.shape[0] + len(COLUMNS)) and torch.isfinite(seen).all()
    indicators = seen[:, law.shape[0] :]
    assert indicators.tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1]]
    assert seen[0, 0] == 0 and (seen[1, 4:7] == 0).all()


def test_in_training_the_encoder_misses_a_share_of_the_filled_cells_whole():
    law = TableLikelihood(COLUMNS).train()
    torch.manual_seed(0)
    rows = torch.tensor([[0.5, 1, 3, 27, 0, 1, 0, 2]], dtype=torch.float32).expand(20_000, 8)
    seen = law.encoder_input(rows)
    indicators = seen[:, law.shape[0] :]
    assert abs(float(1 - indicators.mean()) - law.cell_dropout) < 0.01  # the share of cells hidden
    site = seen[:, 4:7]
    assert torch.equal(site.sum(1) == 0, indicators[:, 4] == 0)  # a categorical column is hidden whole
    assert (
        seen[:, : law.shape[0]][indicators.index_select(1, law.position_columns) == 0] == 0
    ).all()  # a hidden cell reads 0
    assert torch.equal(
        law.eval().encoder_input(rows[:3])[:, law.shape[0] :], torch.ones(3, len(COLUMNS))
    )  # none hidden in evaluation


def test_column_spec_round_trips_and_parses_overrides():
    for column in COLUMNS:
        assert Column.from_dict(json.loads(json.dumps(column.to_dict()))) == column
    assert parse_column_likelihood("mmse", "beta_binomial:0-30") == ("beta_binomial", 0, 30)
    assert feature_names(COLUMNS[3:5]) == ["mmse", "site=a", "site=b", "site=c"]
    for bad in ("beta_binomial:30-0", "gaussian:1", "lognormal"):
        with pytest.raises(ValueError, match="mmse"):
            parse_column_likelihood("mmse", bad)


# --- reading tables ---------------------------------------------------------------------------------------


def write_cohort(folder: Path, n: int = 60, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Three tables keyed by `subject`: MRI (all subjects), PET (two thirds), clinical (mixed types, empty cells)."""
    rng = np.random.default_rng(seed)
    ids = [f"s{i:03d}" for i in range(n)]
    z = rng.normal(size=(n, 2))
    mri = pd.DataFrame(
        z @ rng.normal(size=(2, 4)) + 0.2 * rng.normal(size=(n, 4)), columns=[f"region{j}" for j in range(4)], index=ids
    )
    pet = pd.DataFrame(z[:, :1] @ rng.normal(size=(1, 2)), columns=["suvr_a", "suvr_b"], index=ids).iloc[: 2 * n // 3]
    clinical = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n).astype(object),
            "mmse": np.clip(np.round(27 + 2 * z[:, 0]), 0, 30).astype(int).astype(object),
            "lesions": rng.negative_binomial(2, 0.2, n),
            "smoker": rng.integers(0, 2, n),
        },
        index=ids,
    )
    clinical.loc[ids[3], "sex"] = ""
    clinical.loc[ids[5], "mmse"] = ""
    frames = {"mri": mri, "pet": pet, "clinical": clinical}
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.rename_axis("subject").to_csv(folder / f"{name}.csv")
    return frames


def test_a_folder_of_tables_is_joined_on_the_id_with_types_inferred(tmp_path):
    frames = write_cohort(tmp_path / "tables")
    data = load_dataset(str(tmp_path / "tables"))
    assert data.names == ["clinical", "mri", "pet"]
    assert load_dataset(tmp_path / "tables").names == data.names  # a pathlib.Path reads the same folder
    clinical = data.modalities[0]
    assert [(c.name, c.family) for c in clinical.columns] == [
        ("sex", "categorical"),
        ("mmse", "beta_binomial"),
        ("lesions", "negative_binomial"),
        ("smoker", "bernoulli"),
    ]
    assert clinical.columns[1].high == int(pd.to_numeric(frames["clinical"]["mmse"], errors="coerce").max())
    every = {s: split for s in ("train", "valid", "test") for split in [data.split(s)]}
    ids = np.concatenate([every[s].ids for s in every])
    assert sorted(ids) == sorted(frames["mri"].index)  # nobody dropped, nobody twice
    rows = {subject: (s, i) for s in every for i, subject in enumerate(every[s].ids)}
    for subject in frames["mri"].index:  # PET absent exactly for the subjects missing from its table
        split, i = rows[subject]
        assert every[split].mask[i, 2] == (subject in frames["pet"].index)
    split, i = rows["s003"]
    assert (
        np.isnan(every[split].arrays["clinical"][i, :2]).all()
        and not np.isnan(every[split].arrays["clinical"][i, 2:]).any()
    )
    split, i = rows["s005"]
    assert np.isnan(every[split].arrays["clinical"][i, 2])  # the empty mmse cell (after sex's two positions)
    split, i = rows["s010"]
    region = frames["mri"].loc["s010", "region2"]
    stat = data.standardization["mri"]
    assert every[split].arrays["mri"][i, 2] == pytest.approx((region - stat["mean"][2]) / stat["std"][2], rel=1e-5)
    assert any("missingness patterns" in line for line in data.notes) and any(
        "mmse beta_binomial on 0.." in line for line in data.notes
    )


def test_tables_from_pairs_tsv_parquet_and_dataframes_read_alike(tmp_path):
    frames = write_cohort(tmp_path / "csv")
    frames["mri"].rename_axis("subject").to_csv(tmp_path / "mri.tsv", sep="\t")
    frames["pet"].rename_axis("subject").to_parquet(tmp_path / "pet.parquet")
    paired = load_dataset(f"mri={tmp_path / 'mri.tsv'},pet={tmp_path / 'pet.parquet'}")
    from_frames = load_dataset({"mri": frames["mri"], "pet": frames["pet"]})
    for split in ("train", "test"):
        assert (paired.split(split).ids == from_frames.split(split).ids).all()
        np.testing.assert_allclose(paired.split(split).arrays["mri"], from_frames.split(split).arrays["mri"], rtol=1e-6)


def test_column_likelihood_overrides(tmp_path):
    write_cohort(tmp_path / "t")
    data = load_dataset(
        str(tmp_path / "t"),
        likelihoods={
            "clinical.mmse": "beta_binomial:0-30",
            "clinical.smoker": "categorical",
            "clinical.lesions": "gaussian",
        },
    )
    columns = {c.name: c for c in data.modalities[0].columns}
    assert (columns["mmse"].low, columns["mmse"].high) == (0, 30)
    assert columns["smoker"].classes == ("0", "1") and columns["lesions"].family == "gaussian"
    with pytest.raises(DataError, match="clinical.COLUMN"):
        load_dataset(str(tmp_path / "t"), likelihoods={"clinical": "gaussian"})
    with pytest.raises(DataError, match="names columns weight of modality 'clinical'"):
        load_dataset(str(tmp_path / "t"), likelihoods={"clinical.weight": "gaussian"})


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


GOOD = "subject,age\n" + "".join(f"s{i},{60 + i}\n" for i in range(12))


@pytest.mark.parametrize(
    "name,tables,expected",
    [
        ("no id column", {"mri.csv": GOOD}, "no ID column 'participant'"),
        (
            "duplicated ids",
            {"mri.csv": GOOD + "s3,70\ns4,71\n"},
            "IDs appear more than once in column 'subject': s3, s4",
        ),
        (
            "stray strings",
            {"mri.csv": GOOD + "s20,n/a\ns21,>30\n"},
            "numeric column with text in 2 cells ('>30', 'n/a') of subjects s20, s21",
        ),
        ("ragged row", {"mri.csv": GOOD + "s22,1,5\n"}, "Expected 2 fields in line 14, saw 3"),
        ("decimal comma", {"mri.csv": GOOD + 's20,"1,5"\n'}, "decimal commas"),
        (
            "type change",
            {
                "mri.csv": "subject,dx\n"
                + "".join(f"s{i},{i}\n" for i in range(4))
                + "".join(f"s{i},AD\n" for i in range(4, 12))
            },
            "changes type: numbers for subjects s0, s1, s2, s3",
        ),
        ("not utf-8", {"mri.csv": "subject,site\ns1,Z\xfcrich\n".encode("latin-1")}, "not UTF-8 text"),
        ("nothing in common", {"mri.csv": GOOD, "pet.csv": GOOD.replace("s", "sub-")}, "no subject in common"),
        (
            "free text",
            {"mri.csv": "subject,notes\n" + "".join(f"s{i},note {i}\n" for i in range(40))},
            "look like free text",
        ),
        ("empty subject", {"mri.csv": GOOD + "s30,\n"}, "subjects s30 have no value in any modality table"),
    ],
)
def test_bad_tables_get_one_line_naming_file_column_and_subjects(tmp_path, name, tables, expected):
    for file, text in tables.items():
        _write(tmp_path / "t" / file, text)
    id_column = "participant" if name == "no id column" else None
    with pytest.raises(DataError) as caught:
        load_dataset(str(tmp_path / "t"), id_column=id_column)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert "mri.csv" in message or "pet.csv" in message or "--data" in message


# --- the commands: tables in, ID-keyed tables out ---------------------------------------------------------


def _cli(*args) -> subprocess.CompletedProcess:
    """The command line, run in this process (a subprocess costs seconds of imports per call)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    frames = write_cohort(root / "tables", n=80)
    done = _cli(
        "train",
        "--data",
        root / "tables",
        "--epochs",
        "2",
        "--latent-dim",
        "6",
        "--hidden",
        "16",
        "--quiet",
        "--out",
        root / "run",
    )
    assert done.returncode == 0, done.stderr
    return root, frames, done


def test_train_announces_the_overview_and_saves_the_columns(table_run):
    root, _, done = table_run
    assert "missingness patterns" in done.stderr and "sex categorical (2 classes: F, M)" in done.stderr
    config = json.loads((root / "run" / "config.json").read_text())
    clinical = next(m for m in config["modalities"] if m["name"] == "clinical")
    assert [c["name"] for c in clinical["columns"]] == ["sex", "mmse", "lesions", "smoker"]


def _read(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_embed_score_and_impute_write_tables_keyed_by_id(table_run, tmp_path):
    root, frames, _ = table_run
    run, tables = root / "run", root / "tables"
    assert _cli("embed", run, "--data", tables, "--out", tmp_path / "z.csv").returncode == 0
    embedded = _read(tmp_path / "z.csv")
    assert list(embedded[0])[:2] == ["subject", "dim0"] and [r["subject"] for r in embedded] == list(
        frames["mri"].index
    )
    done = _cli("score", run, "--data", tables, "--out", tmp_path / "s.csv", "--samples", "3")
    assert done.returncode == 0, done.stderr
    scored = _read(tmp_path / "s.csv")
    assert list(scored[0])[:2] == ["subject", "score"] and len(scored) == 80
    assert all(r["observed_pet"] == str(int(s in frames["pet"].index)) for r, s in zip(scored, frames["mri"].index))
    done = _cli("impute", run, "--data", tables, "--out", tmp_path / "filled", "--samples", "2")
    assert done.returncode == 0, done.stderr
    pet = pd.read_csv(tmp_path / "filled" / "pet.csv", index_col=0)
    assert list(pet.index) == list(frames["mri"].index) and not pet.isna().any().any()  # every subject, filled
    np.testing.assert_allclose(
        pet.loc[frames["pet"].index].to_numpy(), frames["pet"].to_numpy(), rtol=1e-5, atol=1e-6
    )  # observed kept
    clinical = pd.read_csv(tmp_path / "filled" / "clinical.csv", index_col=0, keep_default_na=False)
    assert list(clinical.columns) == ["sex", "mmse", "lesions", "smoker"]
    assert (
        clinical.loc["s003", "sex"] in ("F", "M")
        and clinical.loc["s004", "sex"] == frames["clinical"].loc["s004", "sex"]
    )
    assert clinical.loc["s005", "mmse"] != "" and 0 <= float(clinical.loc["s005", "mmse"]) <= 30
    probabilities = pd.read_csv(tmp_path / "filled" / "clinical.probabilities.csv", index_col=0)
    assert list(probabilities.columns) == ["sex=F", "sex=M"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_a_category_the_model_never_saw_is_refused_naming_the_subjects(table_run, tmp_path):
    root, frames, _ = table_run
    clinical = frames["clinical"].copy()
    clinical.loc["s007", "sex"] = "X"
    write_cohort(tmp_path / "new", n=80)
    clinical.rename_axis("subject").to_csv(tmp_path / "new" / "clinical.csv")
    done = _cli("embed", root / "run", "--data", tmp_path / "new", "--out", tmp_path / "z.csv")
    assert done.returncode != 0 and "classes X (subjects s007)" in done.stderr and "Traceback" not in done.stderr


def test_text_where_the_model_has_a_numeric_column_is_refused_in_one_line():
    from infinimodal.data.tables import Table, encode_table

    table = Table(
        Path("new/clinical.csv"), np.array(["s1", "s2"]), {"age": np.array(["old", "young"], dtype=object)}, "id"
    )
    with pytest.raises(
        DataError, match="column 'age' of new/clinical.csv: holds text, but the model's column is gaussian"
    ):
        encode_table(table, (Column("age", "gaussian"),), "new/clinical.csv")


# --- covariates -------------------------------------------------------------------------------------------


def write_covariate_cohort(folder: Path, n: int = 90, seed: int = 1) -> dict[str, pd.DataFrame]:
    """MRI shifted by scanner site and age, PET for some subjects, and a covariates table (age, sex, site)."""
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"p{i:03d}" for i in range(n)], name="subject")
    site = rng.choice(["A", "B", "C"], n)
    age = rng.uniform(55, 90, n).round(1)
    z = rng.normal(size=(n, 2))
    offset = pd.Series({"A": 0.0, "B": 2.0, "C": -2.0})[site].to_numpy()
    mri = pd.DataFrame(
        z @ rng.normal(size=(2, 4)) + offset[:, None] + 0.03 * (age[:, None] - 70),
        columns=[f"r{j}" for j in range(4)],
        index=ids,
    )
    pet = pd.DataFrame(z[:, :1] @ rng.normal(size=(1, 2)), columns=["a", "b"], index=ids).iloc[: 2 * n // 3]
    covariates = pd.DataFrame({"age": age, "sex": rng.choice(["F", "M"], n), "site": site}, index=ids)
    folder.mkdir(parents=True, exist_ok=True)
    frames = {"mri": mri, "pet": pet, "covariates": covariates}
    for name, frame in frames.items():
        frame.to_csv(folder / f"{name}.csv")
    return frames


def test_covariates_leave_the_modalities_and_are_encoded_from_training_subjects(tmp_path):
    frames = write_covariate_cohort(tmp_path / "t")
    data = load_dataset(str(tmp_path / "t"), covariates=["age", "site"])
    assert data.names == [
        "covariates",
        "mri",
        "pet",
    ]  # sex, not named a covariate, stays a feature of its table's modality
    assert [c.name for c in data.modalities[0].columns] == ["sex"]
    encoding = data.covariates
    assert encoding.names == ["age", "site"] and encoding.width == 4
    train_ages = frames["covariates"].loc[list(data.train.ids), "age"]
    assert encoding.mean[0] == pytest.approx(train_ages.mean()) and encoding.std[0] == pytest.approx(
        train_ages.std(ddof=0)
    )
    row = data.test.arrays[COVARIATES][0]
    subject = frames["covariates"].loc[data.test.ids[0]]
    assert row[0] == pytest.approx((subject["age"] - encoding.mean[0]) / encoding.std[0], rel=1e-5)
    assert row[1:].tolist() == [float(subject["site"] == c) for c in ("A", "B", "C")]


def test_bad_covariates_are_refused_naming_them(tmp_path):
    frames = write_covariate_cohort(tmp_path / "t")
    with pytest.raises(DataError, match="no table holds a column 'scanner'"):
        load_dataset(str(tmp_path / "t"), covariates=["scanner"])
    covariates = frames["covariates"].copy()
    covariates.loc["p004", "site"] = ""
    covariates.to_csv(tmp_path / "t" / "covariates.csv")
    with pytest.raises(DataError, match="covariate 'site' .* empty for subjects p004"):
        load_dataset(str(tmp_path / "t"), covariates=["site"])
    with pytest.raises(DataError, match="covariates are columns of tables"):
        load_dataset("synthetic", covariates=["age"])


def test_a_conditional_model_decodes_at_the_covariates_it_is_given():
    from infinimodal.config import ModelConfig, build_module
    from infinimodal.modality import Modality

    torch.manual_seed(0)
    module = build_module(
        [Modality("x", (3,), "gaussian"), Modality("y", (2,), "bernoulli")],
        ModelConfig(latent="gated", latent_dim=4, hidden=[8]),
        covariates=2,
    )
    z = torch.rand(5, module.latent.latent_size)
    at_a, at_b = torch.tensor([[1.0, 0.0]]).expand(5, 2), torch.tensor([[0.0, 1.0]]).expand(5, 2)
    assert not torch.allclose(module.decode_mean(z, at_a)["x"], module.decode_mean(z, at_b)["x"])
    with pytest.raises(ValueError, match="conditioned on 2 covariate values"):
        module.decode_mean(z)
    before = module.decode_mean(z, at_b)["x"]
    module.resize_dimensions(
        6
    )  # the latent grows; the covariates keep their own weights and the decodes stay as they were
    values, sticks = z[:, :4], z[:, 4:]  # the gated family's z: 4 values, then 4 sticks
    grown = torch.cat([values, torch.zeros(5, 2), sticks, torch.full((5, 2), 0.5)], dim=-1)
    torch.testing.assert_close(module.decode_mean(grown, at_b)["x"], before)


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("covariates")
    frames = write_covariate_cohort(root / "tables")
    done = _cli(
        "train",
        "--data",
        root / "tables",
        "--covariates",
        "age,sex,site",
        "--epochs",
        "2",
        "--latent-dim",
        "4",
        "--hidden",
        "16",
        "--quiet",
        "--out",
        root / "run",
    )
    assert done.returncode == 0, done.stderr
    return root, frames, done


def test_harmonising_at_the_subjects_own_site_keeps_their_values(covariate_run):
    from infinimodal import api

    root, frames, done = covariate_run
    assert "covariates (every encoder and decoder reads them): age from" in done.stderr
    vae = api.load(root / "run")[0]
    rows = user_tables(str(root / "tables"), vae.modalities, None, "t", vae.covariates)
    own = vae.harmonize(rows.arrays, rows.arrays[COVARIATES], samples=2)
    np.testing.assert_allclose(own["mri"], frames["mri"].to_numpy(), rtol=1e-5, atol=1e-5)
    at_a = vae.covariates.set_values(rows.arrays[COVARIATES], {"site": "A"})
    moved = vae.harmonize(rows.arrays, at_a, samples=2)
    at_a_already = (frames["covariates"]["site"] == "A").to_numpy()
    np.testing.assert_allclose(moved["mri"][at_a_already], frames["mri"].to_numpy()[at_a_already], rtol=1e-5, atol=1e-5)
    assert np.abs(moved["mri"][~at_a_already] - frames["mri"].to_numpy()[~at_a_already]).max() > 1e-3
    with pytest.raises(DataError, match="not a class the model was trained with"):
        vae.covariates.set_values(rows.arrays[COVARIATES], {"site": "Z"})
    # the composition: an observed value moves by what the decoders give at site B minus at its own site, from the same draws
    at_b = vae.covariates.set_values(rows.arrays[COVARIATES], {"site": "B"})
    split = vae.as_split(rows.arrays)
    batch = split.batch(np.arange(len(split)))
    own = vae.to_user_units(
        {
            k: v.numpy()
            for k, v in vae.module.conditional_means(
                batch["data"], batch["mask"], 2, by_row=True, weighted=True
            ).items()
        }
    )
    there = vae.to_user_units(
        {
            k: v.numpy()
            for k, v in vae.module.conditional_means(
                batch["data"], batch["mask"], 2, by_row=True, decode_at=torch.from_numpy(at_b), weighted=True
            ).items()
        }
    )
    moved = vae.harmonize(rows.arrays, at_b, samples=2)
    np.testing.assert_allclose(moved["mri"], frames["mri"].to_numpy() + there["mri"] - own["mri"], rtol=1e-4, atol=1e-4)
    absent = ~split.mask[:, vae.names.index("pet")]
    assert absent.any()
    np.testing.assert_allclose(
        moved["pet"][absent], there["pet"][absent], rtol=1e-5, atol=1e-5
    )  # absent rows: decoded at site B
    assert np.abs(there["mri"] - own["mri"])[~(frames["covariates"]["site"] == "B").to_numpy()].max() > 1e-3


def test_covariate_commands_write_harmonised_and_synthetic_tables(covariate_run, tmp_path):
    root, frames, _ = covariate_run
    done = _cli(
        "impute",
        root / "run",
        "--data",
        root / "tables",
        "--out",
        tmp_path / "harmonised",
        "--set",
        "site=B",
        "--samples",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert list(pd.read_csv(tmp_path / "harmonised" / "mri.csv", index_col=0).index) == list(frames["mri"].index)
    done = _cli("synthesize", root / "run", "--n", "30", "--out", tmp_path / "synthetic", "--set", "site=C")
    assert done.returncode in (0, 4), done.stderr
    covariates = pd.read_csv(tmp_path / "synthetic" / "covariates.csv", index_col=0)
    assert len(covariates) == 30 and set(covariates["site"]) == {"C"} and covariates.index[0] == "synthetic-01"
    assert covariates.index.name == "subject"  # the tables' own ID column
    assert set(covariates["sex"]) <= {"F", "M"} and covariates["age"].between(55, 90).all()
    assert (tmp_path / "synthetic" / "mri.csv").is_file() and (tmp_path / "synthetic" / "privacy.json").is_file()
    done = _cli("sample", root / "run", "--n", "5", "--set", "site=A", "--out", tmp_path / "prior.npz")
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "prior.npz")["mri"].shape == (5, 4)
    done = _cli("sample", root / "run", "--n", "5", "--set", "scanner=A", "--out", tmp_path / "bad.npz")
    assert done.returncode == 2 and "not a covariate of this model (its covariates: age, sex, site)" in done.stderr
    clinic = frames["covariates"].copy()
    clinic.loc["p002", "site"] = "D"
    (tmp_path / "new").mkdir()
    for name in ("mri", "pet"):
        frames[name].to_csv(tmp_path / "new" / f"{name}.csv")
    clinic.to_csv(tmp_path / "new" / "covariates.csv")
    done = _cli("score", root / "run", "--data", tmp_path / "new", "--out", tmp_path / "s.csv")
    assert (
        done.returncode != 0
        and "classes D (subjects p002)" in done.stderr
        and "refused rather than mapped" in done.stderr
    )


def test_fidelity_on_too_few_held_out_rows_says_so_instead_of_failing():
    from infinimodal.evaluation.privacy import fidelity

    rng = np.random.default_rng(0)
    few = fidelity(rng.normal(size=(30, 3)), rng.normal(size=(3, 3)))
    assert few["detection_auc"] is None and "too few" in few["detection_note"]
    assert 0 <= fidelity(rng.normal(size=(30, 3)), rng.normal(size=(30, 3)))["detection_auc"] <= 1


def test_the_report_shows_the_tables_as_read_and_what_the_embedding_keeps_of_each_covariate(covariate_run):
    from infinimodal import api
    from infinimodal.evaluation.report import write_report

    root, _, _ = covariate_run
    page = write_report(root / "run", api.load_run, max_rows=100, examples=2, max_dims=2, progress=False).read_text()
    section = page[page.index("The data as read, and the covariates") :]
    assert "missingness patterns" in section and "predicted from the embedding" in section
    assert "site" in section and "majority share" in section and "R²" in section


def test_the_python_facade_takes_dataframes_indexed_by_id(table_run):
    from infinimodal import api

    root, frames, _ = table_run
    vae = api.load(root / "run")[0]
    given = {
        name: frame.rename_axis("subject") for name, frame in reversed(list(frames.items()))
    }  # PET first: fewer subjects
    filled = vae.impute(given, samples=2)
    pet = filled["pet"]
    assert (
        sorted(pet.index) == sorted(frames["mri"].index)
        and list(pet.columns) == ["suvr_a", "suvr_b"]
        and not pet.isna().any().any()
    )
    np.testing.assert_allclose(pet.loc[frames["pet"].index].to_numpy(), frames["pet"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert list(filled["clinical"].columns) == ["sex=F", "sex=M", "mmse", "lesions", "smoker"]
    embedded = vae.embed(given)
    assert embedded.index.name == "subject" and sorted(embedded.index) == sorted(frames["mri"].index)


def test_a_run_finds_its_tables_from_anywhere_and_refuses_changed_ones(table_run, tmp_path, monkeypatch):
    import shutil

    from infinimodal import api

    root, _, _ = table_run
    record = api.read_config(root / "run" / "config.json")
    assert record["data_file"] == str((root / "tables").resolve()) and len(record["data_sha256"]) == 64
    monkeypatch.chdir(tmp_path)  # the spec as typed does not resolve from here: the recorded folder is used
    config = api.TrainConfig.from_dict(record | {"data": "tables"})
    assert api.run_data_file(root / "run", config).data == record["data_file"]
    copy = tmp_path / "tables"
    shutil.copytree(root / "tables", copy)
    assert api.run_data_file(root / "run", config).data == "tables"  # now it does, and the files are the same
    (copy / "pet.csv").write_text((copy / "pet.csv").read_text().replace("s001,", "s001,9", 1))
    with pytest.raises(api.InfinimodalError, match="not the tables .* was trained on"):
        api.run_data_file(root / "run", config)


def test_imputation_baselines_read_the_covariates_a_conditional_model_reads():
    from infinimodal.config import ModelConfig, build_module
    from infinimodal.data.multimodal import Split
    from infinimodal.evaluation.metrics import imputation_errors
    from infinimodal.modality import Modality

    rng = np.random.default_rng(0)

    def split(n):
        covariate = rng.normal(size=(n, 1)).astype(np.float32)
        arrays = {
            "a": rng.normal(size=(n, 2)).astype(np.float32),
            "b": (3 * covariate + 0.01 * rng.normal(size=(n, 1))).astype(np.float32),
            COVARIATES: covariate,
        }
        return Split(arrays, np.ones((n, 2), dtype=bool))

    module = build_module(
        [Modality("a", (2,), "gaussian"), Modality("b", (1,), "gaussian")],
        ModelConfig(latent="gaussian", latent_dim=2, hidden=[8]),
        covariates=1,
    )
    errors = imputation_errors(module, split(300), split(120), samples=2, valid=split(60))
    assert (
        errors["b"]["ridge"] < 0.01 < errors["b"]["mean"]
    )  # b is the covariate times 3: a baseline that reads it predicts b


def test_cohort_tables_writes_a_folder_a_newcomer_can_open_and_reads_it_as_tables(tmp_path):
    folder = tmp_path / "cohort"
    data = load_dataset(f"cohort-tables:n=200,seed=3,dir={folder}", covariates=["age", "sex", "site"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "clinical.csv",
        "covariates.csv",
        "eeg.csv",
        "mri.csv",
        "pet.csv",
        "truth",
    ]
    assert json.loads((folder / "truth" / "settings.json").read_text()) == {"n": 200, "atypical": 0.05, "seed": 3}
    assert data.names == ["clinical", "eeg", "mri", "pet"] and data.covariates.names == ["age", "sex", "site"]
    families = {c.name: c.family for c in data.modalities[0].columns}
    assert families == {
        "mmse": "beta_binomial",
        "diagnosis": "categorical",
        "education": "beta_binomial",
        "apoe4": "bernoulli",
    }
    clinical = pd.read_csv(folder / "clinical.csv", index_col=0, keep_default_na=False)
    assert 0.04 < (clinical == "").to_numpy().mean() < 0.12  # about 8 % of the cells empty
    truth = pd.read_csv(folder / "truth" / "atypical.csv", index_col=0)
    assert len(truth) == 200 and 0 < truth["atypical"].sum() < 30
    stamp = (folder / "mri.csv").stat().st_mtime_ns
    load_dataset(f"cohort-tables:n=200,seed=3,dir={folder}")  # read again, not rewritten
    assert (folder / "mri.csv").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="unknown setting 'size=3'"):
        load_dataset("cohort-tables:size=3")
    with pytest.raises(DataError, match="already holds a cohort written with"):
        load_dataset(f"cohort-tables:n=300,seed=3,dir={folder}")


def test_class_texts_keep_every_digit_and_one_class_is_refused_naming_the_file(tmp_path):
    ids = [f"s{i}" for i in range(12)]
    frame = pd.DataFrame(
        {"code": [1000001.0, 1000002.0, 1000003.0] * 4, "study": ["ADNI"] * 12}, index=pd.Index(ids, name="subject")
    )
    frame.to_parquet(_write(tmp_path / "t" / "a.parquet", b""))
    with pytest.raises(DataError, match=r"column 'study' of .*a.parquet: one class \(ADNI\)"):
        load_dataset(str(tmp_path / "t"))
    frame.drop(columns="study").to_parquet(tmp_path / "t" / "a.parquet")
    data = load_dataset(str(tmp_path / "t"), likelihoods={"a.code": "categorical"})
    assert data.modalities[0].columns[0].classes == ("1000001", "1000002", "1000003")


def test_a_parquet_file_saved_from_a_filtered_frame_keeps_no_row_numbers(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"subject": [f"s{i}" for i in range(30)], "suvr": rng.normal(size=30)})
    frame[frame.suvr > -1].to_parquet(
        _write(tmp_path / "t" / "pet.parquet", b"")
    )  # its leftover row numbers are the index
    data = load_dataset(str(tmp_path / "t"))
    assert [c.name for c in data.modalities[0].columns] == ["suvr"]


def test_empty_cells_do_not_make_a_subject_look_more_typical(table_run):
    from infinimodal import api
    from infinimodal.deviation import Reference, deviation_parts

    root, frames, _ = table_run
    vae, _, data = api.load_run(root / "run", progress=False)
    reference = Reference.fit(vae.module, data.train, samples=5)  # the training rows: enough of them for every pattern
    rows = vae.as_split(user_tables(str(root / "tables"), vae.modalities, None, "t").arrays)
    m = vae.names.index("clinical")
    complete = np.flatnonzero(rows.mask[:, m] & ~np.isnan(rows.arrays["clinical"]).any(axis=1))
    whole = rows.take(complete)
    emptied = rows.take(complete)
    emptied.arrays["clinical"] = emptied.arrays["clinical"].copy()
    emptied.arrays["clinical"][:, 2:4] = np.nan  # mmse and lesions emptied on every row
    before = deviation_parts(vae.module, whole, reference, samples=5).modalities[:, m]
    after = deviation_parts(vae.module, emptied, reference, samples=5).modalities[:, m]
    assert abs(np.mean(after) - np.mean(before)) < 0.5 * np.std(
        before
    )  # against the reference rows with the same cells empty
    naive = reference.standardisation(tuple(bool(b) for b in emptied.mask[0]))  # the reference rows with every cell
    from infinimodal.deviation import conditional_log_likelihoods

    nll = -conditional_log_likelihoods(vae.module, emptied, 5)[:, m]
    assert np.mean((nll - naive.modality_mean[m]) / naive.modality_std[m]) < np.mean(after) - 0.5 * np.std(
        before
    )  # what it corrects


def test_the_cell_dropout_option_reaches_every_table_likelihood():
    from infinimodal.config import ModelConfig, build_module
    from infinimodal.modality import Modality
    from infinimodal.options import CELL_DROPOUT, TrainingOptions
    from infinimodal.train.plan import TrainingPlan

    module = build_module(
        [Modality("t", (8,), "table", columns=COLUMNS), Modality("x", (2,), "gaussian")],
        ModelConfig(latent="gaussian", latent_dim=2, hidden=[8]),
    )
    assert module.likelihood("t").cell_dropout == CELL_DROPOUT
    TrainingPlan(module, TrainingOptions(cell_dropout=0.0))
    assert module.likelihood("t").cell_dropout == 0.0


def test_explain_names_the_tables_features_and_tests_the_covariates(covariate_run, tmp_path):
    root, frames, _ = covariate_run
    done = _cli("explain", root / "run", "--data", root / "tables", "--out", tmp_path / "e.json")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["feature_effects"]["mri"]["features"] == ["r0", "r1", "r2", "r3"]
    assert set(result["associations"]) == {"age", "sex", "site"} and result["associations"]["site"]["test"] == "kruskal"
    assert result["associations"]["age"]["test"] == "spearman" and result["associations"]["age"]["rows"] == 90
    assert len(result["dimensions"]) == len(result["used"]) == 4


def test_score_by_group_compares_each_site_with_the_reference(covariate_run, tmp_path):
    root, _, _ = covariate_run
    done = _cli(
        "score",
        root / "run",
        "--data",
        root / "tables",
        "--samples",
        "3",
        "--group",
        "site",
        "--features",
        tmp_path / "z.csv",
        "--out",
        tmp_path / "s.csv",
    )
    assert done.returncode == 0, done.stderr
    groups = _read(tmp_path / "s.groups.csv")
    assert [g["site"] for g in groups] == ["reference (validation rows)", "A", "B", "C"]
    assert sum(int(g["subjects"]) for g in groups[1:]) == 90
    assert list(_read(tmp_path / "z.csv")[0])[:3] == ["subject", "mri.r0", "mri.r1"]
    refused = _cli("score", root / "run", "--data", root / "tables", "--group", "height", "--out", tmp_path / "t.csv")
    assert refused.returncode == 2 and "--group height" in refused.stderr and "site" in refused.stderr
