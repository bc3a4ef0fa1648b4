import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from infinimodal import MultimodalVAE, api
from infinimodal.cli import main
from infinimodal.errors import InfinimodalError

TINY = ["--max-train", "300", "--epochs", "2", "--hidden", "64", "--batch-size", "50", "--quiet"]


@pytest.fixture(scope="module")
def beta_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "beta"
    assert (
        main(
            [
                "train",
                "--data",
                "mnist",
                "--latent",
                "beta",
                "--truncation",
                "10",
                "--alpha",
                "3",
                *TINY,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_train_writes_config_checkpoint_and_curves(beta_run):
    config = json.loads((beta_run / "config.json").read_text())
    assert config["latent"] == "beta" and config["truncation"] == 10 and config["alpha"] == 3.0
    assert config["n_train"] == 300 and config["best_val_elbo"] < 0
    assert (beta_run / "model.ckpt").is_file()
    curves = pd.read_csv(beta_run / "metrics.csv")
    assert {"val_elbo", "train_elbo", "train_kl", "val_kl", "kl_weight"} <= set(curves.columns)
    assert curves["val_elbo"].notna().sum() == 2  # one validation per epoch
    # KL warm-up (default 10 epochs = 60 steps of 6 batches): weight = step / 60, averaged per epoch
    weights = curves["kl_weight"].dropna().to_numpy()
    assert weights == pytest.approx([2.5 / 60, 8.5 / 60], abs=1e-5)


def test_evaluate_writes_every_key(beta_run, capsys):
    assert main(["evaluate", str(beta_run), "--iw-samples", "5", "--max-test", "100", "--quiet"]) == 0
    result = json.loads((beta_run / "eval.json").read_text())
    for key in ("elbo", "log_likelihood", "iw_samples", "knn_error", "active_dims", "kl_active", "sticks_99"):
        assert key in result
    assert set(result["knn_error"]) == {"3", "5", "10"}
    assert result["iw_samples"] == 5 and result["n_test"] == 100
    assert all(0 <= v <= 1 for v in result["knn_error"].values())
    # sticks_99 against a count made here without the evaluation code: the Beta posterior written out from the
    # encoder's head (evidence exp(raw), clamped at exp(15); one modality, so no fusion), E[pi] by plain products
    vae, config = api.load(beta_run)
    test = api.load_data(config, progress=False).test.take(slice(0, 100))
    with torch.no_grad():
        raw = (
            vae.module.heads["mod_image"](
                vae.module.encoders["mod_image"](torch.from_numpy(np.asarray(test.arrays["image"])))
            )
            .double()
            .numpy()
        )
    e_a, e_b = np.exp(np.minimum(np.split(raw, 2, axis=1), 15.0))
    mean_v = (1 + e_a) / (1 + e_a + config.alpha + e_b)
    weights = np.concatenate([mean_v, np.ones((len(mean_v), 1))], axis=1) * np.concatenate(
        [np.ones((len(mean_v), 1)), np.cumprod(1 - mean_v, axis=1)], axis=1
    )
    needed = (np.cumsum(weights, axis=1) < 0.99 - 1e-7).sum(axis=1) + 1
    assert result["sticks_99"] == pytest.approx(needed.mean(), abs=1e-6)
    assert (
        result["sticks_99_histogram"] == np.bincount(needed, minlength=11)[1:].tolist()
    )  # rows needing 1..K sticks, K = 10
    assert result["log_likelihood"] >= result["elbo"] - 5  # the bound tightens, up to sampling noise
    assert "log_likelihood" in capsys.readouterr().out


def test_best_checkpoint_is_the_best_validation_epoch(beta_run):
    model, config = api.load(beta_run)
    curves = pd.read_csv(beta_run / "metrics.csv")
    best = curves["val_elbo"].max()
    assert json.loads((beta_run / "config.json").read_text())["best_val_elbo"] == pytest.approx(best, rel=1e-6)


@pytest.mark.parametrize("latent", ["gaussian", "kumaraswamy", "logitnormal"])
def test_every_family_trains_and_evaluates_end_to_end(latent, tmp_path):
    out = tmp_path / latent
    extra = ["--latent-dim", "8"] if latent == "gaussian" else ["--truncation", "8"]
    assert main(["train", "--latent", latent, *extra, *TINY, "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--iw-samples", "3", "--max-test", "50", "--quiet"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert ("sticks_99" in result) == (latent != "gaussian")
    assert len(result["kl_per_dim"]) == (8 if latent == "gaussian" else 7)


def test_same_seed_same_model(tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        main(
            [
                "train",
                "--latent",
                "logitnormal",
                "--truncation",
                "6",
                "--max-train",
                "200",
                "--epochs",
                "1",
                "--hidden",
                "32",
                "--quiet",
                "--seed",
                "7",
                "--out",
                str(out),
            ]
        )
        outs.append(api.load(out)[0].module.state_dict())
    for key in outs[0]:
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=0, atol=0)


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a finished run directory" in err and "Traceback" not in err
    assert main(["train", "--latent", "beta", "--truncation", "1", "--out", str(tmp_path / "x")]) != 0
    assert "--truncation must be an integer of at least 2, or auto" in capsys.readouterr().err
    assert main(["train", "--alpha", "-1", "--out", str(tmp_path / "y")]) != 0
    assert "--alpha must be a positive number" in capsys.readouterr().err
    assert main(["train", "--kl-weight", "0", "--out", str(tmp_path / "z")]) != 0
    assert "--kl-weight must be a positive number" in capsys.readouterr().err


def test_kl_weight_is_the_weight_after_warm_up(tmp_path):
    out = tmp_path / "kl"
    assert (
        main(
            [
                "train",
                "--latent",
                "gaussian",
                "--latent-dim",
                "4",
                "--kl-warmup",
                "1",
                "--kl-weight",
                "2.5",
                *TINY,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["kl_weight"] == 2.5
    # 6 batches per epoch: epoch 0 ramps 0..5/6 of 2.5 (mean 2.5 * 2.5 / 6), epoch 1 stays at 2.5
    weights = pd.read_csv(out / "metrics.csv")["kl_weight"].dropna().to_numpy()
    assert weights == pytest.approx([2.5 * 2.5 / 6, 2.5], abs=1e-5)


def test_console_script_reports_errors_with_exit_code(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "infinimodal.cli", "evaluate", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "config.json is missing" in bad.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "infinimodal.cli", "train", "--latent", "nope", "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert usage.returncode == 2 and "invalid choice: 'nope'" in usage.stderr


def test_diverging_training_fails_loudly(tmp_path, monkeypatch):
    from infinimodal.model import MultimodalModule

    original = MultimodalModule.forward

    def poisoned(self, data, mask, kl_weight=1.0, weights=None):
        out = original(self, data, mask, kl_weight, weights)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MultimodalModule, "forward", poisoned)
    config = api.TrainConfig(latent="beta", truncation=5, hidden=[16], epochs=1, max_train=100)
    with pytest.raises(InfinimodalError, match="training diverged: loss is nan"):
        api.train(config, tmp_path / "nan", progress=False)


def test_a_nan_gradient_under_a_finite_loss_stops_the_run_naming_the_parameter(tmp_path, monkeypatch):
    from infinimodal.model import MultimodalModule

    original = MultimodalModule.forward

    def poisoned(self, data, mask, kl_weight=1.0, weights=None):
        out = original(self, data, mask, kl_weight, weights)
        weight = self.heads["mod_image"].weight
        # forward adds exactly 0; backward sends NaN into the head's weight (the gradient of sqrt at a negative number)
        out.loss = out.loss + torch.where(torch.tensor(True), torch.tensor(0.0), torch.sqrt(-(weight**2).sum() - 1))
        return out

    monkeypatch.setattr(MultimodalModule, "forward", poisoned)
    config = api.TrainConfig(latent="beta", truncation=5, hidden=[16], epochs=1, max_train=100)
    with pytest.raises(
        InfinimodalError, match=r"the gradient of heads\.mod_image\.weight is NaN or infinite .* with a finite loss"
    ):
        api.train(config, tmp_path / "nan", progress=False)


@pytest.mark.parametrize("latent", ["gaussian", "gated"])
def test_posterior_parameters_that_become_nan_stop_the_run_naming_the_encoders(tmp_path, monkeypatch, latent):
    """Training steps build their distributions unchecked (`arguments_unchecked`): a NaN parameter still stops the
    run, through the non-finite loss, and the message says where it came from."""
    from infinimodal.model import MultimodalModule

    original = MultimodalModule.forward

    def poisoned(self, data, mask, kl_weight=1.0, weights=None):
        if self.training:  # after the sanity check's validation step, which checks its distributions
            with torch.no_grad():
                self.heads["mod_image"].bias.fill_(float("nan"))
        return original(self, data, mask, kl_weight, weights)

    monkeypatch.setattr(MultimodalModule, "forward", poisoned)
    config = api.TrainConfig(latent=latent, latent_dim=4, hidden=[16], epochs=1, max_train=100)
    with pytest.raises(
        InfinimodalError, match=r"training diverged: loss is nan .*the encoders' posterior parameters are not finite"
    ):
        api.train(config, tmp_path / "nan", progress=False)


def test_a_training_step_builds_its_distributions_unchecked_and_restores_the_checks(tmp_path, monkeypatch):
    from torch.distributions import Distribution, Normal

    from infinimodal.model import MultimodalModule

    original = MultimodalModule.forward
    seen = []

    def recording(self, data, mask, kl_weight=1.0, weights=None):
        seen.append((self.training, Distribution._validate_args))
        return original(self, data, mask, kl_weight, weights)

    monkeypatch.setattr(MultimodalModule, "forward", recording)
    api.train(
        api.TrainConfig(latent="gaussian", latent_dim=4, hidden=[16], epochs=1, max_train=100),
        tmp_path / "run",
        progress=False,
    )
    assert {checked for training, checked in seen if training} == {False}
    assert {checked for training, checked in seen if not training} == {True}  # validation and evaluation keep them
    with pytest.raises(ValueError):
        Normal(torch.zeros(1), torch.full((1,), float("nan")))


# --- multimodal commands ---------------------------------------------------------------------------


SYNTHETIC = "synthetic:modalities=3,shared=2,private=1,features=5,n=400,missing=0.3"
SMALL = ["--epochs", "2", "--hidden", "16", "--batch-size", "50", "--quiet"]


@pytest.fixture(scope="module")
def multimodal_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mopoe"
    assert (
        main(
            [
                "train",
                "--data",
                SYNTHETIC,
                "--latent",
                "beta",
                "--aggregator",
                "mopoe",
                "--truncation",
                "6",
                *SMALL,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_multimodal_train_and_evaluate(multimodal_run):
    config = json.loads((multimodal_run / "config.json").read_text())
    assert config["aggregator"] == "mopoe" and [m["name"] for m in config["modalities"]] == ["x0", "x1", "x2"]
    assert main(["evaluate", str(multimodal_run), "--iw-samples", "4", "--quiet"]) == 0
    result = json.loads((multimodal_run / "eval.json").read_text())
    assert set(result["linear_probe_accuracy"]) == {"1", "2", "3"}
    assert set(result["coherence"]["conditional"]) == {"1", "2"}
    assert set(result["per_modality_sticks_99"]) == {"x0", "x1", "x2"}
    assert result["iw_samples"] == 4 and result["aggregator"] == "mopoe"


@pytest.mark.parametrize("aggregator", ["poe", "moe"])
def test_other_aggregators_train_from_the_command_line(aggregator, tmp_path):
    extra = ["--moe-samples", "3"] if aggregator == "moe" else ["--poe-subsets", "2"]
    out = tmp_path / aggregator
    assert (
        main(
            [
                "train",
                "--data",
                SYNTHETIC,
                "--latent",
                "gaussian",
                "--latent-dim",
                "4",
                "--aggregator",
                aggregator,
                *extra,
                *SMALL,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(out), "--iw-samples", "3", "--no-coherence", "--quiet"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert "coherence" not in result and result["baselines_tuned"] is True
    assert {"ridge", "mlp"} <= set(next(iter(result["imputation_mse"].values())))
    # --no-baselines: the tuned regressions are skipped (the training mean stays) and eval.json says so
    assert main(["evaluate", str(out), "--iw-samples", "3", "--no-coherence", "--no-baselines", "--quiet"]) == 0
    quick = json.loads((out / "eval.json").read_text())
    assert quick["baselines_tuned"] is False and quick["elbo"] == result["elbo"]
    assert all(
        entry["best_baseline"] == "mean" and "mlp" not in entry and "ridge" not in entry
        for entry in quick["imputation_mse"].values()
    )


@pytest.mark.parametrize(
    "latent, aggregator, flags, named",
    [
        ("gated", "mopoe", ["--moe-samples", "4"], "--moe-samples is an option of moe"),
        (
            "gated",
            "moe",
            ["--poe-subsets", "2", "--mopoe-kl", "sampled"],
            "--poe-subsets is an option of poe; --mopoe-kl is an option of mopoe",
        ),
        ("gaussian", "poe", ["--alpha", "5"], "--alpha is an option of beta, kumaraswamy, logitnormal, gated"),
        ("gaussian", "mopoe", ["--truncation", "auto"], "--truncation is an option of"),
    ],
)
def test_an_option_of_a_component_not_chosen_is_refused_not_ignored(latent, aggregator, flags, named, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                SYNTHETIC,
                "--latent",
                latent,
                "--aggregator",
                aggregator,
                *flags,
                *SMALL,
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and f"not of --latent {latent} or --aggregator {aggregator}" in err
    assert not (out / "config.json").exists()  # refused before anything is written but the log


def test_sample_writes_pictures_and_arrays(multimodal_run, tmp_path):
    import matplotlib.pyplot as plt

    assert main(["sample", str(multimodal_run), "--n", "5", "--out", str(tmp_path / "prior.png")]) == 0
    image = plt.imread(tmp_path / "prior.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0.01
    assert (
        main(
            [
                "sample",
                str(multimodal_run),
                "--n",
                "4",
                "--given",
                "x0,x1,x2",
                "--data",
                SYNTHETIC,
                "--out",
                str(tmp_path / "given.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "given.npz") as arrays:
        assert {k: arrays[k].shape for k in arrays.files} == {"x0": (4, 5), "x1": (4, 5), "x2": (4, 5)}
    assert main(["sample", str(multimodal_run), "--out", str(tmp_path / "x.jpg")]) == 2


def test_impute_fills_the_missing_rows_of_a_file(multimodal_run, tmp_path):
    rng = np.random.default_rng(0)
    x0, x1, x2 = (rng.standard_normal((8, 5)) for _ in range(3))
    x1[[2, 5]] = np.nan
    x2[[0]] = np.nan
    np.savez(tmp_path / "gaps.npz", x0=x0, x1=x1, x2=x2, labels=np.arange(8))
    assert (
        main(
            ["impute", str(multimodal_run), "--data", str(tmp_path / "gaps.npz"), "--out", str(tmp_path / "filled.npz")]
        )
        == 0
    )
    with np.load(tmp_path / "filled.npz") as filled:
        assert np.isfinite(filled["x1"]).all() and np.isfinite(filled["x2"]).all()
        np.testing.assert_array_equal(filled["x1"][[0, 1, 3, 4, 6, 7]], x1[[0, 1, 3, 4, 6, 7]].astype(np.float32))
        np.testing.assert_array_equal(filled["x0"], x0.astype(np.float32))
        np.testing.assert_array_equal(filled["labels"], np.arange(8))
        weighted = filled["x1"][[2, 5]]
    # --unweighted: the encoders' equal-weight average, what the Python API gives with weighted=False
    unweighted = tmp_path / "unweighted.npz"
    args = [
        "impute",
        str(multimodal_run),
        "--data",
        str(tmp_path / "gaps.npz"),
        "--unweighted",
        "--out",
        str(unweighted),
    ]
    assert main(args) == 0
    vae = MultimodalVAE.load(multimodal_run)
    expected = vae.impute({"x0": x0, "x1": x1, "x2": x2}, weighted=False)["x1"][[2, 5]]
    with np.load(unweighted) as filled:
        np.testing.assert_allclose(filled["x1"][[2, 5]], expected, rtol=1e-5, atol=1e-6)
        assert not np.allclose(filled["x1"][[2, 5]], weighted)
    x0[3, 1] = np.nan
    np.savez(tmp_path / "bad.npz", x0=x0, x1=x1, x2=x2)
    assert (
        main(["impute", str(multimodal_run), "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "no.npz")])
        == 2
    )


def test_embed_writes_one_row_per_data_row(multimodal_run, tmp_path, capsys):
    assert main(["embed", str(multimodal_run), "--data", SYNTHETIC, "--out", str(tmp_path / "z.npy")]) == 0
    codes = np.load(tmp_path / "z.npy")
    assert codes.shape == (40, 6) and np.isfinite(codes).all()
    assert (
        main(["embed", str(multimodal_run), "--data", SYNTHETIC, "--decoder-space", "--out", str(tmp_path / "v.npy")])
        == 0
    )
    assert np.load(tmp_path / "v.npy").shape == (40, 5)
    assert (
        main(["embed", str(multimodal_run), "--data", SYNTHETIC, "--given", "x7", "--out", str(tmp_path / "n.npy")])
        == 2
    )
    assert "unknown modalities x7" in capsys.readouterr().err


def test_polymnist_trains_from_the_command_line(tmp_path):
    from tests.test_data import fake_mnist

    mnist = fake_mnist(tmp_path / "mnist", n_train=120, n_test=30)
    out = tmp_path / "poly"
    args = [
        "--data",
        "polymnist:2",
        "--data-dir",
        str(mnist),
        "--latent",
        "beta",
        "--aggregator",
        "poe",
        "--truncation",
        "5",
    ]
    assert (
        main(["train", *args, "--epochs", "1", "--hidden", "16", "--batch-size", "25", "--quiet", "--out", str(out)])
        == 0
    )
    assert main(["evaluate", str(out), "--iw-samples", "2", "--quiet"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result["coherence_classifier_accuracy"]) == {"m0", "m1"}
    # the data set is rebuilt like the run's (its data_dir, its seed), and m0 conditions every modality
    assert (
        main(
            [
                "sample",
                str(out),
                "--n",
                "3",
                "--given",
                "m0",
                "--data",
                "polymnist:2",
                "--out",
                str(tmp_path / "cross.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "cross.png").stat().st_size > 1000


def test_every_command_of_the_parser_has_its_function():
    from infinimodal.cli import build_parser
    from infinimodal.commands import COMMANDS

    parser = build_parser()
    (subparsers,) = [action for action in parser._actions if action.choices and isinstance(action.choices, dict)]
    assert set(subparsers.choices) == set(COMMANDS)


def test_every_training_and_data_option_is_one_declaration_read_by_the_parser_the_config_and_fit():
    """Each field of TrainingOptions and DataOptions is a flag of `train`, a field of TrainConfig (so config.json) and,
    for training's, a keyword of fit: a value other than its default goes from the flag to the config to the options
    that training reads, with no hand-written forwarding in between."""
    from dataclasses import fields

    from infinimodal.commands import config_from_flags
    from infinimodal.config import DataOptions
    from infinimodal.options import TrainingOptions
    from infinimodal.parser import build_parser

    # a flag and a value other than the default for each option, as a user would type them
    typed = {
        "epochs": (["--epochs", "7"], 7),
        "batch_size": (["--batch-size", "60", "--devices", "2"], 60),
        "lr": (["--lr", "0.01"], 0.01),
        "kl_warmup": (["--kl-warmup", "3"], 3.0),
        "kl_weight": (["--kl-weight", "0.5"], 0.5),
        "seed": (["--seed", "4"], 4),
        "precision": (["--precision", "bf16-mixed"], "bf16-mixed"),
        "accelerator": (["--accelerator", "cpu"], "cpu"),
        "devices": (["--devices", "2"], 2),
        "strategy": (["--strategy", "ddp"], "ddp"),
        "grad_clip": (["--grad-clip", "none"], None),
        "weights": (["--weight", "a=2"], {"a": 2.0}),
        "predict": (["--predict", "a=3"], {"a": 3.0}),
        "infomax": (["--infomax", "a=4"], {"a": 4.0}),
        "vat": (["--vat", "a=5", "--vat-radius", "0.5"], {"a": 5.0}),
        "vat_radius": (["--vat", "a=5", "--vat-radius", "0.5"], 0.5),
        "oversample": (["--oversample", "a=6"], {"a": 6}),
        "order_dimensions": (["--no-order-dimensions"], False),
        "cell_dropout": (["--cell-dropout", "0"], 0.0),
        "data": (["--data", "cohort"], "cohort"),
        "data_dir": (["--data-dir", "/d"], "/d"),
        "data_seed": (["--data-seed", "3"], 3),
        "likelihoods": (["--likelihood", "a=poisson"], {"a": "poisson"}),
        "binarize": (["--binarize", "static"], "static"),
        "max_train": (["--max-train", "9"], 9),
        "standardize": (["--no-standardize"], False),
        "id_column": (["--id-column", "subject"], "subject"),
        "covariates": (["--covariates", "age,site"], ["age", "site"]),
    }
    declared = [f.name for options in (TrainingOptions, DataOptions) for f in fields(options)]
    assert sorted(declared) == sorted(typed), (
        "a new option needs a line here: its flag and a value other than its default"
    )
    parser = build_parser()
    for name in declared:
        flags, value = typed[name]
        config = config_from_flags(parser.parse_args(["train", *flags, "--out", "x"]))
        assert getattr(config, name) == value != getattr(api.TrainConfig(), name), name
        if name in {f.name for f in fields(TrainingOptions)}:
            assert getattr(config.training_options(), name) == value, name
    with pytest.raises(TypeError, match="not options of training"):
        TrainingOptions.from_keywords({"epoch": 3})


def test_training_steps_take_the_float32_beta_kl_and_validation_does_not(tmp_path, monkeypatch):
    import infinimodal.latents.beta as beta
    from infinimodal.model import MultimodalModule

    original = MultimodalModule.forward
    seen = set()

    def recording(self, data, mask, kl_weight=1.0, weights=None):
        seen.add((self.training, beta._float32_kl))
        return original(self, data, mask, kl_weight, weights)

    monkeypatch.setattr(MultimodalModule, "forward", recording)
    api.train(api.TrainConfig(latent_dim=4, hidden=[16], epochs=1, max_train=100), tmp_path / "run", progress=False)
    assert seen == {(True, True), (False, False)} and beta._float32_kl is False
