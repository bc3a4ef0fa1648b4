"""Data files on wildly different scales: per-feature standardisation, announced likelihoods, outputs in user units."""

import json

import numpy as np
import pytest
import torch

from infinimodal.model import WEIGHTED_IMPUTATION_SAMPLES

from infinimodal import MultimodalVAE
from infinimodal.train import run as training
from infinimodal.cli import main
from infinimodal.data import load_dataset
from infinimodal.errors import InfinimodalError


def multiview_file(path, n=400, seed=0):
    """Like a public 6-view digit-features set: one view in [0, 1], one up to ~1.7e4, one integer view with large
    counts, all driven by one shared factor; 20 % of the big view's rows missing."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(n, 2))
    unit = 1 / (1 + np.exp(-(factor @ rng.normal(size=(2, 5)) + 0.1 * rng.normal(size=(n, 5)))))
    big = 9000 + 3000 * (factor @ rng.normal(size=(2, 4))) + 200 * rng.normal(size=(n, 4))
    big[rng.random(n) < 0.2] = np.nan
    counts = rng.poisson(np.exp(4 + 0.5 * (factor @ rng.normal(size=(2, 3))))).astype(np.int64)  # up to ~1e3
    labels = (factor[:, 0] > 0).astype(np.int64)
    np.savez(path, unit=unit, big=big, counts=counts, labels=labels)
    return path


def test_gaussian_modalities_of_a_file_are_standardised_on_observed_training_rows(tmp_path):
    path = multiview_file(tmp_path / "views.npz")
    data = load_dataset(str(path))
    assert set(data.standardization) == {"unit", "big"}  # counts are Poisson: not standardised
    raw = np.load(path)
    for m, name in enumerate(data.names):
        if name not in data.standardization:
            continue
        train = data.train.arrays[name][data.train.mask[:, m]]
        np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(train.std(0), 1.0, atol=1e-4)
        # the statistics are those of the observed training rows in the user's units
        rows = ~np.isnan(raw[name]).all(axis=1)
        assert np.asarray(data.standardization[name]["std"]).min() > 0
        assert float(np.asarray(data.standardization[name]["mean"]).max()) <= float(np.nanmax(raw[name][rows]))
    assert any("counts up to" in line for line in data.notes)
    assert any("'big' (4,): gaussian (inferred), standardised" in line for line in data.notes)
    plain = load_dataset(str(path), standardize=False)
    assert plain.standardization == {} and np.nanmax(plain.train.arrays["big"]) > 1000


def test_training_on_the_file_announces_likelihoods_and_outputs_come_back_in_user_units(tmp_path, capsys):
    path = multiview_file(tmp_path / "views.npz")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--latent-dim",
                "4",
                "--hidden",
                "32",
                "--epochs",
                "3",
                "--kl-warmup",
                "1",
                "--batch-size",
                "50",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "modality 'unit' (5,): gaussian (inferred)" in err and "modality 'counts' (3,): poisson (inferred)" in err
    assert "warning: modality 'counts' holds counts up to" in err
    record = json.loads((out / "config.json").read_text())
    assert set(record["standardization"]) == {"unit", "big"} and np.isfinite(record["best_val_elbo"])
    vae = MultimodalVAE.load(out)
    raw = dict(np.load(path))
    arrays = {k: raw[k].astype(np.float64) for k in ("unit", "big", "counts")}
    missing = np.isnan(arrays["big"]).all(axis=1)
    filled = vae.impute(arrays)
    np.testing.assert_array_equal(
        filled["big"][~missing], arrays["big"][~missing].astype(np.float32)
    )  # observed: unchanged
    imputed = filled["big"][missing]
    # imputations are the decoder's standardised means mapped with the saved statistics (numpy here): the plug-in at
    # the observed set's posterior mean, and the average over posterior draws
    split = vae.as_split(arrays)
    rows = np.flatnonzero(missing)
    batch = split.batch(rows)
    stat = record["standardization"]["big"]
    with torch.no_grad():
        plug_in = vae.module.decode_mean(vae.module.conditional_posterior(batch["data"], batch["mask"]).mean)[
            "big"
        ].numpy()
        # each row's draws are seeded by its own values: these rows alone get what impute gives them among others
        averaged = vae.module.conditional_means(
            batch["data"], batch["mask"], samples=WEIGHTED_IMPUTATION_SAMPLES, by_row=True, weighted=True
        )["big"].numpy()
    np.testing.assert_allclose(
        vae.impute(arrays, samples=0)["big"][missing],
        plug_in * np.array(stat["std"]) + np.array(stat["mean"]),
        rtol=1e-5,
    )
    np.testing.assert_allclose(imputed, averaged * np.array(stat["std"]) + np.array(stat["mean"]), rtol=1e-5)
    assert imputed.mean() > 1000  # the user's units, not the standardised ones
    samples = vae.sample(20)
    assert samples["big"].mean() > 1000 and 0 < samples["unit"].mean() < 1.5
    # the same command line through impute on the file
    assert main(["impute", str(out), "--data", str(path), "--out", str(tmp_path / "filled.npz")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "filled.npz")["big"], filled["big"], rtol=1e-6)


def test_no_standardize_keeps_the_users_units(tmp_path):
    path = multiview_file(tmp_path / "views.npz")
    out = tmp_path / "raw"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--no-standardize",
                "--latent-dim",
                "3",
                "--hidden",
                "8",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["standardization"] == {}


def test_a_malformed_standardisation_in_config_is_one_line(tmp_path):
    path = multiview_file(tmp_path / "views.npz")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--latent-dim",
                "3",
                "--hidden",
                "8",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "config.json").read_text())
    record["standardization"]["big"]["mean"] = [0.0, float("nan"), 1.0, 1.0]
    (out / "config.json").write_text(json.dumps(record))
    with pytest.raises(InfinimodalError, match="standardisation of modality 'big' is malformed"):
        MultimodalVAE.load(out)


def test_a_diverged_distribution_is_reported_as_one_line():
    try:
        torch.distributions.Beta(torch.tensor([float("nan")] * 3), torch.ones(3))
    except ValueError as exc:
        error = exc
    trainer = type("Trainer", (), {"current_epoch": 0, "global_step": 17})()
    message = str(training.divergence(error, trainer))
    assert message.startswith("training diverged at epoch 1, step 17: the Dirichlet parameter concentration")
    assert "\n" not in message and "nan" not in message.lower().replace("nan or infinite", "")
    other = ValueError("something else")
    assert training.divergence(other, trainer) is other


def test_a_truncated_npz_is_one_line_for_training_and_for_a_trained_model(tmp_path, capsys):
    path = multiview_file(tmp_path / "views.npz")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--latent-dim",
                "3",
                "--hidden",
                "8",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:300])
    capsys.readouterr()
    for command in (
        ["train", "--data", str(broken), "--quiet", "--out", str(tmp_path / "x")],
        ["impute", str(out), "--data", str(broken), "--out", str(tmp_path / "f.npz")],
        ["embed", str(out), "--data", str(broken), "--out", str(tmp_path / "z.npy")],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "broken.npz: cannot read as .npz" in err and "Traceback" not in err


def test_fixed_scales_are_kept_in_user_units_and_evaluation_refuses_other_statistics(tmp_path):
    path = multiview_file(tmp_path / "views.npz")
    fixed = load_dataset(str(path), likelihoods={"big": "gaussian:100"})
    assert "big" not in fixed.standardization and "unit" in fixed.standardization  # a scale given in the data's units
    data = load_dataset(str(path))
    vae = MultimodalVAE(data.modalities, latent="gaussian", latent_dim=2, hidden=[8]).fit(
        data, epochs=1, progress=False
    )
    with pytest.raises(InfinimodalError, match="standardised differently"):
        vae.evaluate(load_dataset(str(path), standardize=False), iw_samples=2, progress=False)
    assert vae.evaluate(data, iw_samples=2, progress=False)["standardized_modalities"] == ["big", "unit"]


def test_settings_of_the_wrong_type_are_one_line():
    with pytest.raises(InfinimodalError, match="--latent-dim must be an integer, got 2.5"):
        MultimodalVAE([], latent="gaussian", latent_dim=2.5)
    with pytest.raises(InfinimodalError, match="--truncation must be an integer of at least 2, or auto, got True"):
        MultimodalVAE([], latent="beta", truncation=True)
