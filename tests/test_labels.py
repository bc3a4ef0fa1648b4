"""Labels as a modality: the labels=F option, categorical columns of data files, prediction error, generation from a
class, and the training weight of a modality's log-likelihood."""

import contextlib
import io
import json
import re
import shutil

import numpy as np
import pytest
import torch

from infinimodal import MultimodalVAE, api
from infinimodal.cli import main
from infinimodal.semisupervised import TrainingObjective, prediction_term
from infinimodal.data import load_dataset
from infinimodal.errors import DataError


def test_labels_option_adds_a_stratified_label_modality():
    plain = load_dataset("synthetic:n=2000,features=4")
    data = load_dataset("synthetic:n=2000,features=4,labels=0.25")
    assert data.names == [*plain.names, "label"] and data.label_modality == "label"
    label = data.modalities[-1]
    assert label.likelihood == "categorical" and label.shape == (4,)
    for name in ("train", "valid", "test"):
        split, reference = data.split(name), plain.split(name)
        np.testing.assert_array_equal(split.labels, reference.labels)
        np.testing.assert_array_equal(split.mask[:, :-1], reference.mask)  # the other modalities are untouched
        observed = split.mask[:, -1]
        one_hot = split.arrays["label"]
        np.testing.assert_array_equal(one_hot[observed].argmax(1), split.labels[observed])
        assert (one_hot[observed].sum(1) == 1).all() and (one_hot[~observed] == 0).all()
        for c in np.unique(split.labels):  # stratified: every class keeps a quarter of its rows
            rows = split.labels == c
            expected = 0 if name == "test" else max(1, round(0.25 * rows.sum()))
            assert observed[rows].sum() == expected
    assert "labels observed for" in data.source
    # the same seed gives the same rows
    np.testing.assert_array_equal(load_dataset("synthetic:n=2000,features=4,labels=0.25").train.mask, data.train.mask)


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("synthetic:n=500,labels=0", "in (0, 1]"),
        ("synthetic:n=500,labels=1.5", "in (0, 1]"),
        ("synthetic:n=500,labels=abc", "in (0, 1]"),
        ("mnist:rotate=1", "takes no option but labels=F"),
        ("polymnist:labels=0.1", "polymnist:M"),
    ],
)
def test_bad_label_options_are_one_clear_error(spec, problem, capsys):
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace("]", r"\]")):
        load_dataset(spec)
    assert main(["train", "--data", spec, "--epochs", "1", "--quiet", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def _class_file(path, n=600, seed=0):
    """x: 4 features around one of 3 prototypes; y: the class as an integer code (3, 5 or 9), -1 for a fifth of the rows."""
    rng = np.random.default_rng(seed)
    codes = np.array([3, 5, 9])
    position = rng.integers(0, 3, n)
    prototypes = 3.0 * np.eye(3, 4)
    x = prototypes[position] + 0.3 * rng.normal(size=(n, 4))
    y = codes[position].copy()
    y[rng.random(n) < 0.2] = -1
    np.savez(path, x=x, y=y, labels=position)
    return x, y, position


def test_an_integer_column_of_a_file_is_a_categorical_modality_with_its_own_classes(tmp_path):
    path = tmp_path / "classes.npz"
    _, y, _ = _class_file(path)
    data = load_dataset(str(path))
    spec = data.modalities[data.names.index("y")]
    assert spec.likelihood == "categorical" and spec.shape == (3,) and spec.classes == (3, 5, 9)
    whole = {
        name: np.concatenate([data.split(s).arrays[name] for s in ("train", "valid", "test")]) for name in data.names
    }
    mask = np.concatenate([data.split(s).mask for s in ("train", "valid", "test")])
    assert mask[:, 1].sum() == (y != -1).sum()
    codes = np.array(spec.classes)[whole["y"][mask[:, 1]].argmax(1)]
    assert sorted(codes.tolist()) == sorted(y[y != -1].tolist())
    # a column with one class is refused, naming the modality and the file
    np.savez(tmp_path / "one.npz", x=np.ones((20, 2)) + np.arange(20)[:, None], y=np.full(20, 4))
    with pytest.raises(DataError, match=r"modality 'y' in .*one.npz: a categorical modality needs at least 2 classes"):
        load_dataset(str(tmp_path / "one.npz"))


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classes")
    path = folder / "classes.npz"
    _class_file(path, n=1500)
    out = folder / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(path),
                    "--epochs",
                    "12",
                    "--hidden",
                    "32",
                    "--latent-dim",
                    "6",
                    "--batch-size",
                    "50",
                    "--kl-warmup",
                    "2",
                    "--weight",
                    "y=5",
                    "--quiet",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    (folder / "train_stdout.txt").write_text(printed.getvalue())
    return path, out


def test_impute_gives_class_probabilities_and_keeps_observed_classes(class_run):
    path, out = class_run
    vae, _ = api.load(out)
    x, y, position = np.load(path)["x"][:40], np.load(path)["y"][:40], np.load(path)["labels"][:40]
    filled = vae.impute({"x": x, "y": y})
    probabilities = filled["y"]
    assert probabilities.shape == (40, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    observed = y != -1
    np.testing.assert_array_equal(probabilities[observed], np.eye(3)[position[observed]])
    # the planted classes are easy: the missing ones are predicted from x
    assert (probabilities[~observed].argmax(1) == position[~observed]).mean() >= 0.9
    with pytest.raises(DataError, match="hold classes the model was not trained on"):
        vae.impute({"x": x[:3], "y": np.array([3, 4, -1])})


def test_prediction_error_is_the_error_of_imputation_against_the_truth(class_run):
    path, out = class_run
    assert main(["evaluate", str(out), "--iw-samples", "2", "--no-coherence", "--quiet"]) == 0
    result = json.loads((out / "eval.json").read_text())
    errors = result["prediction_error"]["y"]
    assert set(errors) == {"all", "x"} and errors["all"] == errors["x"]
    vae, config = api.load(out)
    test = api.load_run_data(out, config, progress=False).test
    rows = np.flatnonzero(test.mask[:, 1])
    # the truth of a file's categorical modality: its own observed test rows, predicted with it hidden
    given = test.take(rows)
    given.mask[:, 1] = (
        False  # the split is in the model's units already (a dict of the user's arrays would be standardised)
    )
    predicted = vae.impute(given)["y"].argmax(1)
    assert errors["all"] == pytest.approx(float((predicted != test.arrays["y"][rows].argmax(1)).mean()))
    assert errors["all"] <= 0.1  # x separates the classes


def test_sampling_given_a_class_generates_that_class(class_run, tmp_path):
    path, out = class_run
    vae, _ = api.load(out)
    prototypes = 3.0 * np.eye(3, 4)
    for position, code in enumerate((3, 5, 9)):
        torch.manual_seed(0)
        x = vae.sample_class(200, "y", code)["x"]
        nearest = np.linalg.norm(x[:, None, :] - prototypes[None], axis=-1).argmin(1)
        assert (nearest == position).mean() >= 0.6  # chance: 1/3 (the draws also vary what the class leaves open)
        assert np.linalg.norm(x.mean(0)[None] - prototypes, axis=-1).argmin() == position
    assert main(["sample", str(out), "--n", "6", "--given", "y=9", "--out", str(tmp_path / "nine.npz")]) == 0
    assert np.load(tmp_path / "nine.npz")["x"].shape == (6, 4)
    assert main(["sample", str(out), "--n", "6", "--given", "y=9", "--out", str(tmp_path / "nine.png")]) == 0
    assert (tmp_path / "nine.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--given", "y=4"], "hold classes the model was not trained on"),
        (["--given", "x=1"], "not categorical"),
        (["--given", "y=9", "--data", "whatever.npz"], "drop --data"),
    ],
)
def test_sampling_given_a_bad_class_is_one_clear_error(class_run, tmp_path, capsys, args, problem):
    _, out = class_run
    assert main(["sample", str(out), "--n", "2", *args, "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err


def test_the_label_modality_is_predicted_never_read_by_the_representation_metrics(tmp_path):
    data = load_dataset("synthetic:n=1200,features=4,labels=0.2")
    vae = MultimodalVAE(data.modalities, latent="gated", aggregator="mopoe", latent_dim=4, hidden=[16])
    vae.fit(data, epochs=2, batch_size=100, kl_warmup=1, progress=False)
    result = vae.evaluate(data, iw_samples=2, coherence=False, progress=False)
    assert set(result["prediction_error"]) == {"label"}
    assert set(result["prediction_error"]["label"]) == {"all", "x0", "x1", "x2"}
    # the label's own usage: its posterior for each test row's true class (the label is observed on no test row)
    assert (
        set(result["per_modality_kl_span_99"]) == {"x0", "x1", "x2", "label"}
        and result["per_modality_kl_span_99"]["label"] >= 1
    )
    # the truth of the label modality is the test labels: predicting from the representation-free impute path agrees
    # (class predictions average their draws with equal weights, as `impute --unweighted` does)
    test = data.test
    hidden = {name: test.arrays[name] for name in ("x0", "x1", "x2")}
    predicted = vae.impute(hidden, weighted=False)["label"].argmax(1)
    assert result["prediction_error"]["label"]["all"] == pytest.approx(float((predicted != test.labels).mean()))


def test_likelihood_weights_scale_the_training_objective_and_never_the_elbo():
    data = load_dataset("synthetic:n=300,features=4,labels=0.5")
    batch = data.train.batch(np.arange(64))
    for aggregator in ("poe", "moe", "mopoe"):
        vae = MultimodalVAE(data.modalities, latent="gated", aggregator=aggregator, latent_dim=3, hidden=[8])
        module = vae.module
        outputs = {}
        for weight in (1.0, 3.0):
            torch.manual_seed(5)
            outputs[weight] = TrainingObjective(module, weights={"label": weight})(module, batch["data"], batch["mask"])
        # the same draws (same seed): the reported bound ignores the weights, the objective does not
        torch.testing.assert_close(outputs[1.0].elbo, outputs[3.0].elbo)
        assert outputs[3.0].loss.item() != pytest.approx(outputs[1.0].loss.item())
    with pytest.raises(ValueError, match="not modalities of this model"):
        TrainingObjective(module, weights={"lable": 2.0})


def test_mopoe_loss_with_a_weight_against_the_weighted_sum_written_out():
    data = load_dataset("synthetic:n=300,features=4,labels=0.5")
    batch = data.train.batch(np.arange(64))
    vae = MultimodalVAE(data.modalities, latent="gaussian", aggregator="mopoe", latent_dim=3, hidden=[8])
    module = vae.module
    recorded = {}
    original = module.log_likelihoods

    def recording(*args, **kwargs):
        recorded["log_lik"] = original(*args, **kwargs)
        return recorded["log_lik"]

    module.log_likelihoods = recording
    torch.manual_seed(1)
    out = TrainingObjective(module, weights={"label": 4.0, "x0": 0.5})(module, batch["data"], batch["mask"])
    weights = torch.tensor([0.5, 1.0, 1.0, 4.0])
    expected = -((recorded["log_lik"] * weights).sum(-1) - out.kl).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.elbo, recorded["log_lik"].sum(-1) - out.kl)


def test_weights_are_recorded_and_a_run_scores_unweighted(tmp_path, capsys):
    out = tmp_path / "weighted"
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=400,features=4,labels=0.3",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--latent-dim",
                "3",
                "--weight",
                "label=20",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["weights"] == {"label": 20.0}
    vae, _ = api.load(out)
    batch = load_dataset("synthetic:n=400,features=4,labels=0.3").train.batch(np.arange(50))
    scored = vae.module(
        batch["data"], batch["mask"]
    )  # a loaded model's objective is its unweighted ELBO (MoPoE: loss = -mean)
    assert scored.loss.item() == pytest.approx(-scored.elbo.mean().item(), rel=1e-6)
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=400,features=4",
                "--epochs",
                "1",
                "--weight",
                "label=2",
                "--quiet",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--weight given for label" in err


def test_the_report_generates_from_each_class_and_names_the_prediction_error(class_run):
    _, out = class_run
    assert main(["evaluate", str(out), "--iw-samples", "2", "--no-coherence", "--quiet"]) == 0
    assert main(["report", str(out), "--max-rows", "200", "--examples", "4", "--quiet"]) == 0
    page = (out / "report.html").read_text()
    section = page[page.index('<section id="classes">') : page.index('<section id="imputation">')]
    assert section.count("<img ") == 1 and "x generated from each class of y (3, 5, 9" in section
    assert (out / "figures" / "class_y_x.png").is_file()
    error = json.loads((out / "eval.json").read_text())["prediction_error"]["y"]["all"]
    assert f"<td>error predicting y</td><td>{100 * error:.2f} % from all other modalities" in page


def test_validation_reports_the_error_of_imputing_each_categorical_modality(class_run):
    from infinimodal.evaluation.metrics import prediction_errors
    from infinimodal.evaluation.curves import class_error_curves, read_curves

    _, out = class_run
    _, curves = read_curves(out / "metrics.csv")
    errors = class_error_curves(curves)
    assert set(errors) == {"y"} and len(errors["y"]) == 12 and np.isfinite(errors["y"]).all()
    assert errors["y"][-1] < errors["y"][0]  # imputation learns
    # at the best epoch (model.ckpt), the error of that model's imputation of y from x on the validation rows where y
    # is observed, computed here by evaluation's code (one batch, the same draws)
    vae, config = api.load(out)
    valid = api.load_run_data(out, config, progress=False).valid
    assert 20 <= valid.mask[:, 1].sum() <= 500
    best = int(np.nanargmax(curves["val_elbo"]))
    assert errors["y"][best] == pytest.approx(prediction_errors(vae.module, valid)["y"]["all"], abs=1e-6)
    # train ends by printing it for the saved model
    printed = (out.parent / "train_stdout.txt").read_text()
    assert (
        f"validation error of imputing y from the other modalities, saved model (epoch {best + 1}): {100 * errors['y'][best]:.2f} %"
        in printed
    )
    # the run's log shows it with each epoch's line, as metrics.csv has it
    lines = [
        line for line in (out / "infinimodal.log").read_text().splitlines() if ": epoch " in line and "val_elbo" in line
    ]
    shown = [float(re.search(r"val_y_error (\S+?)(,|$)", line).group(1)) for line in lines]
    np.testing.assert_allclose(shown, errors["y"], atol=5e-4)
    assert main(["report", str(out), "--max-rows", "200", "--examples", "4", "--quiet"]) == 0
    page = (out / "report.html").read_text()
    section = page[page.index('<section id="curves">') : page.index("</section>", page.index('<section id="curves">'))]
    assert (
        "validation error of imputing each categorical modality" in section
        and (out / "figures" / "class_errors.png").is_file()
    )


def test_compare_ranks_runs_on_the_validation_label_error_at_their_saved_models(class_run, tmp_path):
    import pandas as pd

    out, twin = tmp_path / "run", tmp_path / "twin"
    shutil.copytree(class_run[1], out)
    result = api.evaluate(out, iw_samples=2, coherence=False, progress=False)
    shutil.copytree(out, twin)
    metrics = pd.read_csv(twin / "metrics.csv")
    metrics["val_y_error"] += 0.25  # the twin imputes y worse on validation, and on test
    metrics.to_csv(twin / "metrics.csv", index=False)
    result["prediction_error"]["y"]["all"] += 0.25
    (twin / "eval.json").write_text(json.dumps(result))
    page_path = tmp_path / "both.html"
    assert main(["compare", str(out), str(twin), "--out", str(page_path), "--quiet"]) == 0
    page = page_path.read_text()
    section = page[
        page.index('<section id="validation">') : page.index("</section>", page.index('<section id="validation">'))
    ]
    # the value at the saved model's epoch: the first epoch of the best validation ELBO, read here with pandas
    epochs = pd.read_csv(out / "metrics.csv").dropna(subset=["val_elbo"])
    saved = epochs.loc[epochs["val_elbo"].idxmax()]
    row = re.search(r"<tr><td>val_y_error</td><td>(<b>)?([^<]*)(?:</b>)?</td><td>(<b>)?([^<]*)", section)
    assert row.group(1) == "<b>" and row.group(3) is None  # the original is the better one
    assert float(row.group(2)) == pytest.approx(saved["val_y_error"], abs=1e-3)
    assert float(row.group(4)) == pytest.approx(saved["val_y_error"] + 0.25, abs=1e-3)
    assert f"<tr><td>epoch of the saved model</td><td>{int(saved['epoch']) + 1}</td>" in section
    test_row = re.search(r"<tr><td>prediction_error / y / all</td><td>(<b>)?", page)
    assert test_row.group(1) == "<b>"  # a test error is ranked lower-is-better too
    assert (tmp_path / "both_figures" / "class_errors.png").is_file()


@pytest.mark.parametrize("aggregator", ["mopoe", "moe"])
@pytest.mark.parametrize("samples", [20, 0])
def test_class_probabilities_are_the_conditional_mean_of_the_class_modality(aggregator, samples):
    data = load_dataset("synthetic:n=300,features=4,labels=0.5")
    batch = data.valid.batch(np.arange(len(data.valid)))
    module = MultimodalVAE(data.modalities, latent="gated", aggregator=aggregator, latent_dim=3, hidden=[8]).module
    module.eval()
    hidden = batch["mask"].clone()
    hidden[:, -1] = False
    probabilities = module.class_probabilities("label", batch["data"], hidden, samples=samples, seed=3)
    means = module.conditional_means(batch["data"], hidden, samples=samples, seed=3)[
        "label"
    ]  # every decoder, then the mean
    torch.testing.assert_close(probabilities, means)
    assert probabilities.shape == (len(data.valid), 4) and float(probabilities.std(0).max()) > 0  # rows differ


def test_the_epochs_validation_error_weighs_each_batch_by_its_labelled_rows():
    import lightning as L

    from infinimodal.train.data import MultimodalDataModule
    from infinimodal.train.plan import TrainingPlan

    data = load_dataset("synthetic:n=3000,features=4,labels=0.3")
    module = MultimodalVAE(data.modalities, latent="gated", aggregator="mopoe", latent_dim=3, hidden=[8]).module
    loader_source = MultimodalDataModule(data, valid_batch_size=37)  # batches with unequal numbers of labelled rows
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    (logged,) = trainer.validate(TrainingPlan(module), dataloaders=loader_source.val_dataloader(), verbose=False)
    wrong = rows = 0
    counts = []
    for batch in loader_source.val_dataloader():
        for error, n in module.class_errors(batch["data"], batch["mask"]).values():
            wrong, rows = wrong + float(error) * n, rows + n
            counts.append(n)
    assert len(set(counts)) > 1 and rows == int(data.valid.mask[:, -1].sum())
    assert logged["val_label_error"] == pytest.approx(wrong / rows, abs=1e-6)


def test_kept_random_streams_restores_the_cpu_stream_and_forks_a_gpus(monkeypatch):
    from infinimodal import model as model_module

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with model_module.kept_random_streams(torch.device("cpu")):
        torch.manual_seed(0)
        torch.rand(10)
    torch.testing.assert_close(torch.rand(3), expected)
    forked = []

    class Recorder:
        def __init__(self, devices):
            forked.append(devices)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.random, "fork_rng", Recorder)
    with model_module.kept_random_streams(torch.device("cuda", 1)):
        pass
    assert forked == [[torch.device("cuda", 1)]]  # the GPU's stream is saved and restored too, not only the CPU's


def test_a_model_without_categorical_modalities_reports_no_class_errors():
    data = load_dataset("synthetic:n=300,features=4")
    batch = data.valid.batch(np.arange(len(data.valid)))
    module = MultimodalVAE(data.modalities, latent="gated", aggregator="mopoe", latent_dim=3, hidden=[8]).module
    assert module.class_errors(batch["data"], batch["mask"]) == {}
    labelled = load_dataset("synthetic:n=300,features=4,labels=0.5")
    batch = labelled.valid.batch(np.arange(len(labelled.valid)))
    module = MultimodalVAE(labelled.modalities, latent="gated", aggregator="mopoe", latent_dim=3, hidden=[8]).module
    ((error, rows),) = module.class_errors(batch["data"], batch["mask"]).values()
    assert rows == int(batch["mask"][:, -1].sum()) and 0 <= float(error) <= 1


def test_the_prediction_term_trains_imputation_from_the_other_modalities_only():
    data = load_dataset("synthetic:n=300,features=4,labels=0.5")
    batch = data.train.batch(np.arange(64))
    vae = MultimodalVAE(data.modalities, latent="gated", aggregator="mopoe", latent_dim=3, hidden=[8])
    module = vae.module
    module.train()
    labelled = int((batch["mask"][:, 3] & batch["mask"][:, :3].any(1)).sum())
    assert 0 < labelled < 64
    term = prediction_term(module, batch["data"], batch["mask"], {"label": 7.0})
    module.zero_grad()
    term.backward()
    head = module.heads["mod_label"]
    assert head.weight.grad is None or head.weight.grad.abs().max() == 0  # the label's own expert is hidden from it
    assert (
        module.heads["mod_x0"].weight.grad.abs().max() > 0
        and module.decoders["mod_label"].input_layer().weight.grad.abs().max() > 0
    )
    # it is alpha times a sum of log-probabilities of classes (each <= 0) over the labelled rows, per batch row
    assert -7.0 * labelled / 64 * 50 < term.item() < 0
    # rows without the label contribute nothing; evaluation mode and other models have no such term
    unlabelled = batch["mask"].clone()
    unlabelled[:, 3] = False
    assert float(prediction_term(module, batch["data"], unlabelled, {"label": 7.0})) == 0.0
    torch.manual_seed(2)
    training = TrainingObjective(module, predict={"label": 7.0})(module, batch["data"], batch["mask"])
    torch.manual_seed(2)
    scoring = module(batch["data"], batch["mask"])  # the model itself: what validation and evaluation score
    torch.testing.assert_close(training.elbo, scoring.elbo)
    assert training.loss.item() > scoring.loss.item()  # the term (negative log-probabilities) is added in training only
    torch.manual_seed(2)
    assert TrainingObjective(module)(module, batch["data"], batch["mask"]).loss.item() == pytest.approx(
        scoring.loss.item(), rel=1e-6
    )


def test_predict_is_recorded_and_checked(tmp_path, capsys):
    out = tmp_path / "predict"
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=400,features=4,labels=0.3",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--latent-dim",
                "3",
                "--predict",
                "label=10",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["predict"] == {"label": 10.0}
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=400,features=4",
                "--epochs",
                "1",
                "--predict",
                "label=2",
                "--quiet",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--predict given for label" in err


def test_the_semisupervised_terms_draw_from_the_posterior_imputation_uses(monkeypatch):
    # under MoPoE with two or more other modalities, imputation (and val_label_error, prediction_error) condition on the
    # product of the observed experts; the terms that train it must draw from that posterior, not MoPoE's mixture
    from infinimodal.semisupervised import information_term, prediction_term

    data = load_dataset("synthetic:n=300,features=4,labels=0.5")
    batch = data.train.batch(np.arange(64))
    module = MultimodalVAE(data.modalities, latent="gated", aggregator="mopoe", latent_dim=3, hidden=[8]).module
    module.train()
    drawn_from = []
    conditional = module.conditional_posterior

    def recorded(data, mask, shifts=None):
        q = conditional(data, mask, shifts)
        drawn_from.append(q.weights.shape[-1])  # components: 1 for the product of experts
        return q

    monkeypatch.setattr(
        module, "posterior", lambda *args: pytest.fail("a semi-supervised term drew from the training posterior")
    )
    monkeypatch.setattr(module, "conditional_posterior", recorded)
    assert float(prediction_term(module, batch["data"], batch["mask"], {"label": 3.0}).detach()) < 0
    assert float(information_term(module, batch["data"], batch["mask"], {"label": 2.0}).detach()) > 0
    assert drawn_from == [1, 1]


def test_cohort_groups_are_labels_that_shift_the_shared_factors_and_leave_a_cohort_without_groups_unchanged():
    plain, grouped = load_dataset("cohort:n=1200"), load_dataset("cohort:n=1200,groups=3,separation=2")
    assert plain.train.labels is None
    np.testing.assert_array_equal(load_dataset("cohort:n=1200,groups=0").train.arrays["mri"], plain.train.arrays["mri"])
    for name in ("train", "valid", "test"):
        assert set(np.unique(grouped.split(name).labels)) == {0, 1, 2}
    # the groups are visible in the measurements: their MRI centroids lie apart by more than the noise around them
    mri, groups = grouped.train.arrays["mri"], grouped.train.labels
    centroids = np.stack([mri[groups == g].mean(0) for g in range(3)])
    spread = np.sqrt(np.mean([mri[groups == g].var(0).sum() for g in range(3)]))
    assert min(np.linalg.norm(centroids[a] - centroids[b]) for a, b in ((0, 1), (0, 2), (1, 2))) > 0.3 * spread
    labelled = load_dataset("cohort:n=1200,groups=3,labels=0.1")
    assert labelled.label_modality == "label" and labelled.modalities[-1].shape == (3,)
    with pytest.raises(DataError, match="groups=1"):
        load_dataset("cohort:groups=1")
    # test=N: more held-out subjects after the same training and validation rows
    more = load_dataset("cohort:n=1200,groups=3,labels=0.1,test=2000")
    assert len(more.test) == 2000 and len(labelled.test) == 120
    for name in ("train", "valid"):
        np.testing.assert_array_equal(more.split(name).mask, labelled.split(name).mask)
        np.testing.assert_array_equal(more.split(name).labels, labelled.split(name).labels)
        np.testing.assert_array_equal(more.split(name).arrays["mri"], labelled.split(name).arrays["mri"])


def test_tuned_classifiers_reach_the_bayes_error_of_two_gaussian_classes():
    from scipy.stats import norm

    from infinimodal.evaluation.baselines import tuned_classifiers

    rng = np.random.default_rng(0)
    shift = np.array([1.0, 0.0, 0.0, 0.0, 0.0])  # classes N(-shift, I) and N(+shift, I): the Bayes error is Phi(-1)

    def draw(n):
        y = rng.integers(0, 2, n)
        return rng.standard_normal((n, 5)) + (2 * y[:, None] - 1) * shift, y

    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = draw(400), draw(200), draw(20000)
    probabilities, settings = tuned_classifiers(x_train, y_train, x_valid, y_valid, x_test, 2)
    assert set(probabilities) == {"logistic", "mlp"} and set(settings) == {"logistic", "mlp"}
    for p in probabilities.values():
        assert p.shape == (20000, 2) and np.allclose(p.sum(1), 1.0)
        assert abs((p.argmax(1) != y_test).mean() - norm.cdf(-1.0)) < 0.02
    # one class among the training labels: its frequency, nothing fitted
    probabilities, settings = tuned_classifiers(x_train, np.zeros(400, dtype=int), x_valid, y_valid, x_test, 3)
    np.testing.assert_allclose(probabilities["logistic"], np.tile([1.0, 0.0, 0.0], (20000, 1)))


def test_prediction_baselines_fit_the_labelled_rows_and_score_the_rows_the_model_is_scored_on():
    from infinimodal.evaluation.metrics import prediction_baselines

    data = load_dataset("cohort:n=1500,groups=3,separation=2,labels=0.2")
    out = prediction_baselines(data, data.test)["label"]
    assert set(out) == {"all", "mri", "pet", "clinical", "genetics"}
    pet = data.names.index("pet")
    labelled = data.train.mask[:, -1]
    assert out["all"]["train_rows"] == out["mri"]["train_rows"] == labelled.sum()
    assert out["pet"]["train_rows"] == (labelled & data.train.mask[:, pet]).sum()
    assert out["pet"]["rows"] == data.test.mask[:, pet].sum() < out["all"]["rows"] == len(data.test)
    for entry in out.values():
        assert entry["best_baseline"] in ("logistic", "mlp")
        assert entry[entry["best_baseline"]] == min(entry["logistic"], entry["mlp"]) < 0.5  # chance is 2/3
    # a run trained on its first rows (--max-train) is compared with baselines fitted on the labels among those rows
    data.trained_rows = 500
    limited = prediction_baselines(data, data.test)["label"]
    assert limited["mri"]["train_rows"] == labelled[:500].sum() < out["mri"]["train_rows"]
    # too few labelled validation rows to tune on: said, not fitted
    few = load_dataset("cohort:n=300,groups=3,labels=0.02")
    assert all("note" in entry for entry in prediction_baselines(few, few.test)["label"].values())


def test_the_report_summary_names_the_best_classifier_fitted_on_the_labels_alone():
    from types import SimpleNamespace

    from infinimodal.evaluation.html import Section
    from infinimodal.evaluation.report import _summary

    family = SimpleNamespace(has_sticks=False, describe=lambda: "D = 4", truncation=None, n_dimensions=4)
    evaluation = {
        "elbo": -1.0,
        "prediction_error": {"label": {"all": 0.1, "mri": 0.12}},
        "prediction_baselines": {
            "label": {
                "all": {"train_rows": 120, "logistic": 0.16, "mlp": 0.15, "best_baseline": "mlp"},
                "mri": {"train_rows": 120, "logistic": 0.14, "mlp": 0.17, "best_baseline": "logistic"},
                "pet": {"train_rows": 70, "note": "too few labelled rows to fit and tune a classifier"},
            }
        },
    }
    section = Section("summary", "Summary")
    _summary(section, {"latent": "gaussian", "aggregator": "mopoe"}, evaluation, ["mri", "pet", "label"], family)
    page = "".join(section.html)
    assert "<td>error predicting label</td><td>10.00 % from all other modalities (from mri alone 12.00 %)" in page
    assert (
        "<td>best classifier of label fitted on its labelled rows alone</td><td>14.00 % (logistic from mri alone, 120 labelled "
        "training rows"
    ) in page


def test_labels_as_a_modality_need_labels_on_every_split_and_say_which_lack_them():
    from infinimodal.data.labels import add_label_modality

    data = load_dataset("synthetic:modalities=2,shared=2,private=1,features=5,n=300")
    data.test.labels = None
    with pytest.raises(DataError, match="its test rows have no labels to turn into a modality"):
        add_label_modality(data, 0.1)
