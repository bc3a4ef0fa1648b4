"""The Python facade: fit, embed, impute, sample, evaluate, save, load, custom networks."""

import numpy as np
import pytest
import torch
from torch import nn

from infinimodal import Modality, MultimodalVAE
from infinimodal.data import load_dataset
from infinimodal.errors import DataError, InfinimodalError


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic:modalities=3,shared=2,private=1,features=6,n=600,missing=0.25")


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    vae = MultimodalVAE(data.modalities, latent="beta", aggregator="mopoe", truncation=8, hidden=[32])
    return vae.fit(
        data, epochs=8, batch_size=50, lr=3e-3, kl_warmup=1, progress=False, out_dir=tmp_path_factory.mktemp("fit")
    )


def arrays_with_gaps(data, n=30):
    split = data.test.take(slice(0, n))
    arrays = {}
    for m, name in enumerate(data.names):
        values = split.arrays[name].astype(np.float64).copy()
        values[~split.mask[:, m]] = np.nan
        arrays[name] = values
    return arrays, split.mask


def test_fit_improves_the_validation_bound_and_keeps_the_best_weights(fitted, data):

    assert fitted.best_val_elbo is not None and np.isfinite(fitted.best_val_elbo)
    assert fitted.train_seconds > 0
    untrained = MultimodalVAE(data.modalities, latent="beta", aggregator="mopoe", truncation=8, hidden=[32])
    batch = data.valid.batch(np.arange(len(data.valid)))
    with torch.no_grad():
        torch.manual_seed(0)
        before = untrained.module(batch["data"], batch["mask"]).elbo.mean().item()
        torch.manual_seed(0)
        after = fitted.module(batch["data"], batch["mask"]).elbo.mean().item()
    assert after > before + 2
    assert after == pytest.approx(fitted.best_val_elbo, abs=1.0)  # the kept weights are the best epoch's


def test_embed_gives_a_row_per_input_row_and_respects_given(fitted, data):
    arrays, mask = arrays_with_gaps(data)
    codes = fitted.embed(arrays)
    assert codes.shape == (30, 8) and np.isfinite(codes).all()
    np.testing.assert_allclose(codes.sum(1), 1.0, atol=1e-5)  # E[pi] lies on the simplex
    decoder_space = fitted.embed(arrays, decoder_space=True)
    assert decoder_space.shape == (30, 7)
    # giving only x0 uses only x0: rows lacking x0 are named in the error
    with pytest.raises(DataError, match="none of the given modalities"):
        fitted.embed(arrays, given=["x0"])
    rows = mask[:, 0]
    only_x0 = fitted.embed({"x0": arrays["x0"][rows]})
    np.testing.assert_allclose(
        fitted.embed({k: v[rows] for k, v in arrays.items()}, given=["x0"]), only_x0, rtol=1e-5, atol=1e-6
    )


def test_impute_fills_exactly_the_missing_rows(fitted, data):
    arrays, mask = arrays_with_gaps(data)
    filled = fitted.impute(arrays)
    for m, name in enumerate(data.names):
        observed = mask[:, m]
        assert np.isfinite(filled[name]).all()
        np.testing.assert_array_equal(filled[name][observed], arrays[name][observed].astype(np.float32))
        assert (~observed).any()
        assert not np.allclose(filled[name][~observed], 0.0)
    # an imputation is a decoded posterior mean: it depends on what was observed
    changed = {k: v.copy() for k, v in arrays.items()}
    row = int(np.flatnonzero(~mask[:, 1] & mask[:, 0])[0])
    changed["x0"][row] += 3.0
    assert not np.allclose(fitted.impute(changed)["x1"][row], filled["x1"][row])


def test_sample_from_the_prior_and_from_given_modalities(fitted, data):
    prior = fitted.sample(7)
    assert {k: v.shape for k, v in prior.items()} == {name: (7, 6) for name in data.names}
    arrays, mask = arrays_with_gaps(data)
    complete = mask.all(1)
    given = {k: v[complete] for k, v in arrays.items()}
    conditional = fitted.sample(5, given, given=["x0", "x2"])
    assert all(v.shape == (5, 6) and np.isfinite(v).all() for v in conditional.values())


def test_save_and_load_give_the_same_model(fitted, data, tmp_path):
    fitted.save(tmp_path / "run")
    again = MultimodalVAE.load(tmp_path / "run")
    arrays, _ = arrays_with_gaps(data)
    np.testing.assert_array_equal(again.embed(arrays), fitted.embed(arrays))
    assert again.config == fitted.config
    with pytest.raises(InfinimodalError, match="not a finished run directory"):
        MultimodalVAE.load(tmp_path / "elsewhere")


def test_input_problems_name_the_modality_and_rows(fitted):
    with pytest.raises(DataError, match="are not modalities of this model"):
        fitted.embed({"x0": np.zeros((2, 6)), "x9": np.zeros((2, 6))})
    with pytest.raises(DataError, match=r"modality 'x1' in the input: rows of shape \(5,\)"):
        fitted.embed({"x1": np.zeros((2, 5))})
    partial = np.zeros((3, 6))
    partial[2, :3] = np.nan
    with pytest.raises(
        DataError, match=r"modality 'x0' in the input: rows 2 have some values missing \(NaN\) but not all"
    ):
        fitted.impute({"x0": partial})
    empty = np.full((2, 6), np.nan)
    with pytest.raises(DataError, match="rows 0, 1 have no modality observed"):
        fitted.impute({"x0": empty})


@pytest.mark.parametrize(
    "values, message",
    [
        (np.array([[np.inf] * 6, [0.0] * 6]), "rows 0 hold infinite values"),
        (np.array([["a"] * 6, ["b"] * 6]), "values must be numbers, got dtype <U1"),
        (np.zeros((0, 6)), "holds no rows"),
        (np.array([[1e30] * 6, [0.0] * 6]), "rows 0 hold values beyond"),
    ],
)
def test_arrays_given_to_a_trained_model_pass_the_file_checks(fitted, values, message):
    for use in (fitted.impute, fitted.embed, lambda a: fitted.sample(1, a)):
        with pytest.raises(DataError, match=f"modality 'x0' in the input: {message}"):
            use({"x0": values})


def test_a_likelihoods_support_is_checked_at_prediction_time(tmp_path):
    counts = MultimodalVAE(
        [Modality("c", (3,), "poisson"), Modality("g", (2,), "gaussian")], latent="gaussian", latent_dim=2, hidden=[4]
    )
    with pytest.raises(
        DataError, match=r"modality 'c' in the input: poisson data must be non-negative integers; rows 1"
    ):
        counts.impute({"c": np.array([[1.0, 2.0, 0.0], [0.5, 1.0, 1.0]]), "g": np.zeros((2, 2))})


class TinyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(6, 9), nn.Tanh())

    def forward(self, x):
        return self.net(x)


def test_custom_networks_are_used_and_checked(data, tmp_path):
    encoder = TinyEncoder()
    decoder = nn.Sequential(nn.Linear(7, 12))  # logit v (7 values) -> 2 x 6 (gaussian: location; scale is learned)
    mods = [Modality("x0", (6,), "gaussian", encoder=encoder, decoder=nn.Linear(7, 6)), *data.modalities[1:]]
    vae = MultimodalVAE(mods, latent="beta", truncation=8, hidden=[16])
    assert vae.module.encoders["mod_x0"] is encoder and vae.module.heads["mod_x0"].in_features == 9
    vae.fit(data, epochs=1, batch_size=100, progress=False)
    vae.save(tmp_path / "custom")
    with pytest.raises(InfinimodalError, match="custom networks; pass the same modalities"):
        MultimodalVAE.load(tmp_path / "custom")
    again = MultimodalVAE.load(tmp_path / "custom", modalities=mods)
    assert again.module.encoders["mod_x0"] is not encoder  # the loaded model owns a copy
    arrays, _ = arrays_with_gaps(data)
    np.testing.assert_allclose(again.embed(arrays), vae.embed(arrays), rtol=1e-6)
    # a second run with the same Modality objects: loading it leaves the first loaded model as it was
    before = again.embed(arrays)
    other = MultimodalVAE(mods, latent="beta", truncation=8, hidden=[16], seed=5)
    with torch.no_grad():
        for p in other.module.encoders["mod_x0"].parameters():
            p.add_(1.0)  # the shared encoder object now holds other weights
    other.save(tmp_path / "custom2")
    second = MultimodalVAE.load(tmp_path / "custom2", modalities=mods)
    np.testing.assert_allclose(again.embed(arrays), before, rtol=1e-6)
    assert not np.allclose(second.embed(arrays), before, rtol=1e-3)
    wrong = [Modality("x0", (6,), "gaussian", decoder=decoder), *data.modalities[1:]]
    with pytest.raises(ValueError, match=r"modality 'x0': the decoder must return 1 x \(6,\) parameters per row"):
        MultimodalVAE(wrong, latent="beta", truncation=8)


def test_fit_refuses_data_of_other_modalities(data):
    vae = MultimodalVAE([Modality("x0", (6,)), Modality("x1", (6,))], hidden=[8], truncation=4)
    with pytest.raises(InfinimodalError, match="differ from the model's"):
        vae.fit(data, epochs=1, progress=False)


def test_evaluate_reports_multimodal_metrics(fitted, data):
    result = fitted.evaluate(data, iw_samples=5, max_test=40, progress=False)
    assert set(result["linear_probe_accuracy"]) == {"1", "2", "3"}
    assert set(result["linear_probe_accuracy_decoder_input"]) == {"1", "2", "3"}
    assert set(result["coherence"]["conditional"]) == {"1", "2"} and 0 <= result["coherence"]["joint"] <= 1
    assert set(result["coherence_classifier_accuracy"]) == set(data.names)
    assert set(result["per_modality_sticks_99"]) == set(data.names)
    assert result["true_dims"] == 2 + 3 * 1 and -1 <= result["shared_factor_r2"] <= 1
    assert len(result["sticks_99_histogram"]) == 8 and sum(result["sticks_99_histogram"]) == 40


def test_impute_returns_uint8_images_as_floats_in_the_model_scale():
    """Images stored as uint8 intensities (the image data sets' storage) come back scaled to [0, 1], imputed rows
    as the decoder's probabilities: not cast into uint8, which would turn every imputed value into 0."""
    from infinimodal.data import Split

    vae = MultimodalVAE(
        [Modality("img", (16,), "bernoulli"), Modality("tab", (3,), "gaussian")],
        latent="beta",
        truncation=4,
        hidden=[8],
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 16)).astype(np.uint8)
    mask = np.ones((6, 2), dtype=bool)
    mask[[1, 4], 0] = False
    split = Split({"img": image, "tab": rng.normal(size=(6, 3)).astype(np.float32)}, mask)
    filled = vae.impute(split)
    assert filled["img"].dtype == np.float32
    np.testing.assert_allclose(filled["img"][mask[:, 0]], image[mask[:, 0]] / 255.0, rtol=1e-6)
    imputed = filled["img"][~mask[:, 0]]
    assert ((imputed > 0) & (imputed < 1)).all()  # Bernoulli probabilities of an untrained decoder


def test_epoch_training_means_weigh_every_row_once_with_an_uneven_last_batch(tmp_path):
    # the training plan sums the epoch on the device and logs its means once; check them against the rows' own ELBOs
    import pandas as pd
    from lightning.pytorch.callbacks import Callback

    class Rows(Callback):
        def __init__(self):
            self.elbo, self.kl, self.weight, self.rows = {}, {}, {}, {}

        def on_train_batch_end(self, trainer, plan, outputs, batch, batch_idx):
            epoch, out, n = trainer.current_epoch, plan.last_output, batch["mask"].shape[0]
            self.elbo[epoch] = self.elbo.get(epoch, 0.0) + float(out.elbo.double().sum())
            self.kl[epoch] = self.kl.get(epoch, 0.0) + float(out.kl.double().sum())
            self.weight[epoch] = self.weight.get(epoch, 0.0) + plan.last_kl_weight * n
            self.rows[epoch] = self.rows.get(epoch, 0) + n

    data = load_dataset("synthetic:n=700,features=6")  # 560 training rows: batches of 64 end with one of 48
    vae = MultimodalVAE(data.modalities, latent="gated", aggregator="mopoe", hidden=[16], latent_dim=4)
    rows = Rows()
    vae.fit(data, epochs=2, batch_size=64, kl_warmup=1.5, progress=False, out_dir=tmp_path, callbacks=[rows])
    logged = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["train_elbo"]).set_index("epoch")
    assert rows.rows == {0: 560, 1: 560}
    for epoch in (0, 1):
        assert logged.loc[epoch, "train_elbo"] == pytest.approx(rows.elbo[epoch] / 560, rel=1e-5)
        assert logged.loc[epoch, "train_kl"] == pytest.approx(rows.kl[epoch] / 560, rel=1e-5)
        assert logged.loc[epoch, "kl_weight"] == pytest.approx(rows.weight[epoch] / 560, rel=1e-6)


def test_embed_takes_what_a_python_user_holds_and_refuses_the_rest_at_once(fitted, data, tmp_path):
    import anndata
    import mudata
    import pandas as pd

    arrays = arrays_with_gaps(data, 20)[0]
    expected = fitted.embed(arrays)
    frames = {name: pd.DataFrame(values, index=[f"s{i}" for i in range(20)]) for name, values in arrays.items()}
    np.testing.assert_allclose(fitted.embed(frames), expected, atol=1e-6)
    imputed = fitted.impute(frames)
    np.testing.assert_allclose(imputed[data.names[0]], fitted.impute(arrays)[data.names[0]], atol=1e-6)
    # a MuData, each modality's AnnData holding only its observed rows (it used to be iterated for minutes)
    parts = {}
    for name, values in arrays.items():
        kept = ~np.isnan(values).all(1)
        part = anndata.AnnData(values[kept].astype(np.float32))
        part.obs_names = [f"s{i}" for i in np.flatnonzero(kept)]
        parts[name] = part
    mdata = mudata.MuData(parts)
    order = [int(name[1:]) for name in mdata.obs_names]
    np.testing.assert_allclose(fitted.embed(mdata), expected[order], atol=1e-5)
    np.testing.assert_allclose(
        fitted.embed(
            {name: parts[name] for name in parts if np.isfinite(arrays[name]).all()}
            | {name: arrays[name] for name in arrays if not np.isfinite(arrays[name]).all()}
        ),
        expected,
        atol=1e-5,
    )
    path = tmp_path / "rows.npz"
    np.savez(path, **arrays)
    np.testing.assert_allclose(fitted.embed(str(path)), expected, atol=1e-6)
    with pytest.raises(DataError, match="an AnnData holds one modality and this model has 3"):
        fitted.embed(parts[data.names[0]])
    with pytest.raises(DataError, match="cannot read rows from a builtins.list"):
        fitted.embed([arrays[name] for name in arrays])
    with pytest.raises(DataError, match="not an array of rows"):
        fitted.embed({data.names[0]: 3.0})


def test_fit_logs_to_its_run_directory_as_the_command_line_does(data, tmp_path):
    vae = MultimodalVAE(data.modalities, latent="gated", latent_dim=4, hidden=[8])
    vae.fit(data, epochs=2, batch_size=100, progress=False, out_dir=tmp_path)
    log = (tmp_path / "infinimodal.log").read_text().splitlines()
    assert "MultimodalVAE.fit(epochs=2" in log[0] and log[-1].endswith("done")
    assert [line for line in log if ": epoch 2" in line and "val_elbo" in line]
