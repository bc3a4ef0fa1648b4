"""Clinical uses: deviation scores, synthetic cohorts with their privacy report, imputation and multiple imputation."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPRegressor

from infinimodal import MultimodalVAE, api
from infinimodal.cli import main
from infinimodal.data import Split, load_dataset
from infinimodal.deviation import MIN_REFERENCE_ROWS
from infinimodal.errors import InfinimodalError
from infinimodal.evaluation import privacy


# --- privacy, fidelity and utility measures on planted cases -------------------------------------------------


def _population(n, rng, shift=0.0):
    """Rows of 6 correlated features (two factors)."""
    factors = rng.normal(size=(n, 2))
    return (
        factors @ np.array([[1.0, 0.5, 0.0, 1.0, -1.0, 0.3], [0.0, 1.0, 1.0, -0.5, 0.2, 1.0]])
        + 0.3 * rng.normal(size=(n, 6))
        + shift
    )


def test_a_copier_of_a_few_of_many_training_rows_fails_every_privacy_measure():
    # the case a review found the old report passed: it searched a subsample of the training rows, so a copied row whose
    # source was left out looked like a fresh subject (DCR share 0.566, membership AUC 0.495 on MNIST)
    rng = np.random.default_rng(0)
    train, holdout = _population(6000, rng), _population(1000, rng)
    copies = train[rng.choice(6000, 500, replace=False)]
    report = privacy.privacy(copies, train, holdout)
    assert report["memorisation"] == list(privacy.MEASURES)
    assert report["exact_copies"] == 500 and report["exact_copies_holdout"] == 0 and report["nndr"] == 0.0
    assert report["dcr_share"] == 1.0 and report["dcr_share_null_interval"][1] < 1.0
    assert report["dcr_close_share"] == 1.0 and report["membership_tpr"] > 0.08 > 0.02 > report["membership_fpr"]
    # training rows with noise a tenth of a feature's spread: no exact copy, every distance measure fails
    noisy = copies + 0.1 * rng.normal(size=copies.shape)
    report = privacy.privacy(noisy, train, holdout)
    assert report["exact_copies"] == 0 and report["memorisation"] == list(privacy.MEASURES[1:])
    # a generator that copies one row in ten: the copies and the close share find it
    partial = np.concatenate([_population(450, rng), copies[:50]])
    assert {"exact_copies", "dcr_close_share"} <= set(privacy.privacy(partial, train, holdout)["memorisation"])


def test_fresh_draws_from_the_population_are_the_no_memorisation_baseline():
    rng = np.random.default_rng(1)
    train, holdout, fresh = _population(3000, rng), _population(600, rng), _population(1000, rng)
    report = privacy.privacy(fresh, train, holdout)
    assert report["memorisation"] == [] and report["inconclusive"] == [] and report["exact_copies"] == 0
    assert all(p > 0.01 for p in report["tests"].values())
    # exchangeable rows: a fresh row's nearest of the pooled training and reference rows (the held-out rows after the
    # first half, which plays the null) is a training row with probability n_train / (n_train + n_reference)
    assert report["rows"]["holdout_null"] == report["rows"]["holdout_reference"] == 300
    expected = 3000 / (3000 + 300)
    assert report["dcr_share_null"] == pytest.approx(expected, abs=0.03) and report["dcr_share"] == pytest.approx(
        expected, abs=0.03
    )
    low, high = report["dcr_share_null_interval"]
    assert low < report["dcr_share_null"] < high and high - low < 0.08
    assert report["dcr_close_share_null"] == pytest.approx(privacy.CLOSE_QUANTILE, abs=0.01)
    assert report["dcr_close_share"] == pytest.approx(privacy.CLOSE_QUANTILE, abs=0.025)
    assert 0.45 < report["membership_auc"] < 0.55
    assert report["nndr"] == pytest.approx(report["nndr_holdout"], abs=0.05)
    # the planted copiers are caught by every measure on these rows
    assert report["controls"] == {"copier": list(privacy.MEASURES), "noisy_copier": list(privacy.MEASURES[1:])}
    good = privacy.fidelity(fresh, holdout)
    assert good["ks_mean"] < 0.06 and good["correlation_error"] < 0.05 and 0.4 < good["detection_auc"] < 0.6
    # a shifted population and one without the correlations are told apart
    shifted = privacy.fidelity(_population(1000, rng, shift=0.8), holdout)
    assert shifted["ks_mean"] > 0.2 and shifted["detection_auc"] > 0.8
    independent = np.column_stack([rng.permutation(fresh[:, j]) for j in range(6)])
    broken = privacy.fidelity(independent, holdout)
    assert broken["correlation_error"] > 0.3 and broken["ks_mean"] < 0.06  # the same marginals, not the same joint


def test_held_out_rows_stored_in_blocks_of_siblings_do_not_raise_a_false_alarm():
    # subjects come in families of five near-duplicates, stored together (one writer's digits, one family's members):
    # a held-out row's sibling is another held-out row, never a training row, and a fresh subject has none at all
    rng = np.random.default_rng(7)

    def families(n):
        return np.repeat(_population(n, rng), 5, axis=0) + 0.1 * rng.normal(size=(5 * n, 6))

    train, holdout, fresh = families(1000), families(300), families(200)
    report = privacy.privacy(fresh, train, holdout)
    assert report["memorisation"] == [], report["tests"]
    assert report["dcr_share"] == pytest.approx(
        report["dcr_share_null"], abs=0.05
    )  # 150 families each: rows are not independent
    # a null from a random half of the held-out rows would have siblings on the reference side: fewer of its rows
    # nearer a training row than a fresh subject's
    shuffled = holdout[rng.permutation(len(holdout))]
    assert privacy.privacy(fresh, train, shuffled, controls=False)["dcr_share_null"] < report["dcr_share_null"] - 0.05


def test_too_few_rows_make_the_report_inconclusive_instead_of_a_pass():
    rng = np.random.default_rng(4)
    train, holdout = _population(300, rng), _population(6, rng)
    report = privacy.privacy(_population(300, rng), train, holdout)
    assert report["memorisation"] == [] and report["inconclusive"]  # six held-out rows cannot show what a copier does


def test_the_exact_search_agrees_with_scikit_learn_across_blocks(monkeypatch):
    from sklearn.neighbors import NearestNeighbors

    from infinimodal.evaluation import neighbours

    monkeypatch.setattr(neighbours, "QUERY_BLOCK", 7)
    monkeypatch.setattr(neighbours, "REFERENCE_BLOCK", 11)
    rng = np.random.default_rng(5)
    mixed = lambda n: np.column_stack([rng.random((n, 3)), (rng.random((n, 4)) < 0.3).astype(float)])  # noqa: E731
    queries, references = mixed(30), mixed(50)
    queries[:5] = references[:5]
    found = neighbours.gower_neighbours(queries, references, k=2)
    assert (
        found.distances.shape == (30, 2)
        and neighbours.binary_columns(queries, references).tolist() == [False] * 3 + [True] * 4
    )
    reference = NearestNeighbors(n_neighbors=2, metric="manhattan").fit(references)
    distances, indices = reference.kneighbors(queries)
    np.testing.assert_allclose(found.distances, distances / 7, atol=1e-12)
    np.testing.assert_array_equal(found.indices[:5, 0], indices[:5, 0])
    np.testing.assert_allclose(
        found.nearest_query,
        NearestNeighbors(n_neighbors=1, metric="manhattan").fit(queries).kneighbors(references)[0][:, 0] / 7,
        atol=1e-12,
    )


def test_dcr_share_agrees_with_sdmetrics():
    from sdmetrics.single_table import DCROverfittingProtection

    rng = np.random.default_rng(2)
    values = rng.random((3, 300, 4))  # continuous: no ties (SDMetrics counts a tie as not closer, we count it half)
    train, holdout, synthetic = values
    train[0], train[1] = 0.0, 1.0  # both real sets span [0, 1] in every feature, so the ranges agree
    holdout[0], holdout[1] = [0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]  # (with rows of their own: no ties)
    synthetic[:40] = train[2:42]  # some memorisation
    # the share's definition (the report applies it to the held-out reference rows; the features span [0, 1] already)
    from infinimodal.evaluation.neighbours import gower_neighbours

    ours = privacy._closer_to_train(gower_neighbours(synthetic, train), gower_neighbours(synthetic, holdout)).mean()
    columns = [f"f{j}" for j in range(4)]
    metadata = {"columns": {c: {"sdtype": "numerical"} for c in columns}}
    frames = [pd.DataFrame(rows, columns=columns) for rows in (train, synthetic, holdout)]
    reference = DCROverfittingProtection.compute_breakdown(*frames, metadata, "rows")["synthetic_data_percentages"][
        "closer_to_training"
    ]
    assert ours == pytest.approx(reference, abs=1e-9)


def test_utility_trains_on_synthetic_and_tests_on_real():
    rng = np.random.default_rng(3)

    def rows(n, noise):
        x = rng.normal(size=(n, 3))
        label = (x[:, 0] + noise * rng.normal(size=n) > 0).astype(int)
        return {"x": x, "label": np.eye(2)[label]}

    train, holdout = rows(500, 0.1), rows(500, 0.1)
    good = privacy.utility(rows(500, 0.1), train, holdout, "label")
    useless = privacy.utility(
        {"x": rng.normal(size=(500, 3)), "label": np.eye(2)[rng.integers(0, 2, 500)]}, train, holdout, "label"
    )
    assert good["utility"] > 0.9 and good["utility_real"] > 0.9 and useless["utility"] < 0.7


# --- a trained model on the cohort: scores, synthesis, imputation ------------------------------------------------

COHORT = "cohort:n=2500,atypical=0.2"


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "run"
    assert (
        main(
            [
                "train",
                "--data",
                COHORT,
                "--epochs",
                "8",
                "--hidden",
                "64",
                "--latent-dim",
                "12",
                "--kl-warmup",
                "1",
                "--batch-size",
                "64",
                "--lr",
                "2e-3",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_deviation_scores_rank_planted_atypical_subjects_above_typical_ones(cohort_run):
    vae, config = api.load(cohort_run)
    data = api.load_run_data(cohort_run, config, progress=False)
    scores = vae.score(data.test, data.valid, samples=20)
    kinds = data.truth["kinds"]
    assert list(scores) == [
        "score",
        "deviation_mri",
        "deviation_pet",
        "deviation_clinical",
        "deviation_genetics",
        "latent_deviation",
        "reconstruction_mri",
        "reconstruction_pet",
        "reconstruction_clinical",
        "reconstruction_genetics",
        "latent_distance_robust",
        "latent_p",
        "extreme_features",
        "observed_mri",
        "observed_pet",
        "observed_clinical",
        "observed_genetics",
    ]
    np.testing.assert_array_equal(np.isnan(scores["reconstruction_pet"]), ~data.test.mask[:, 1])
    # subjects with planted regional shifts have extreme features; typical subjects few
    extreme = scores["extreme_features"]
    assert np.median(extreme[kinds == 1]) >= 3 and np.median(extreme[kinds == 0]) <= 1
    # the robust latent distance: subjects at a factor's far end have small p-values, typical ones do not
    far = (kinds == 0) | (kinds == 2)
    auc = roc_auc_score(kinds[far] == 2, -np.log(scores["latent_p"][far]))
    assert auc > 0.7 and np.median(scores["latent_p"][kinds == 0]) > 0.2, auc  # 0.77 on this briefly trained model
    assert all(len(v) == len(data.test) for v in scores.values())
    # a missing modality is not scored, and the flags say which were observed
    np.testing.assert_array_equal(np.isnan(scores["deviation_pet"]), ~data.test.mask[:, 1])
    np.testing.assert_array_equal(scores["observed_pet"], data.test.mask[:, 1])
    for kind in (1, 2):
        rows = (kinds == 0) | (kinds == kind)
        assert roc_auc_score(kinds[rows] == kind, scores["score"][rows]) > 0.8, kind
    # the reference population itself scores around zero in every part
    own = vae.score(data.valid.take(slice(150, 400)), data.valid.take(slice(0, 150)), samples=20)
    assert abs(np.nanmedian(own["deviation_mri"])) < 0.6 and abs(np.median(own["latent_deviation"])) < 0.6
    assert abs(np.nanmedian(own["reconstruction_mri"])) < 0.6
    assert np.mean(own["latent_p"] < 0.05) < 0.2  # chi^2 calibration of the robust distance, roughly
    # ... and seen through each missingness pattern: the same subjects with PET hidden are compared with reference rows
    # with PET hidden (their posteriors are broader and nearer the centre; against the reference as it is, hiding a
    # modality would make every subject look more typical: median -0.55 on this model)
    complete = data.valid.take(np.flatnonzero(data.valid.mask.all(1)))
    hidden = Split(complete.arrays, complete.mask.copy())
    hidden.mask[:, 1] = False
    reference = data.train.take(slice(0, 600))
    as_they_are, without_pet = vae.score(complete, reference, samples=20), vae.score(hidden, reference, samples=20)
    assert abs(np.median(without_pet["latent_deviation"]) - np.median(as_they_are["latent_deviation"])) < 0.25


def test_score_on_the_command_line_writes_one_csv_row_per_input_row(cohort_run, tmp_path):
    rng = np.random.default_rng(0)
    subjects = {
        "mri": rng.normal(size=(7, 40)),
        "pet": rng.normal(size=(7, 20)),
        "clinical": rng.normal(size=(7, 5)),
        "genetics": (rng.random((7, 10)) < 0.5).astype(float),
    }
    subjects["pet"][[1, 4]] = np.nan
    subjects["mri"][3] += 6.0  # far off in every region
    np.savez(tmp_path / "subjects.npz", **subjects)
    out = tmp_path / "scores.csv"
    assert (
        main(
            [
                "score",
                str(cohort_run),
                "--data",
                str(tmp_path / "subjects.npz"),
                "--samples",
                "10",
                "--out",
                str(out),
                "--features",
                str(tmp_path / "z.csv"),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out)))
    assert (
        len(rows) == 7
        and rows[1]["deviation_pet"] == ""
        and rows[1]["observed_pet"] == "0"
        and rows[0]["observed_pet"] == "1"
    )
    score = np.array([float(r["score"]) for r in rows])
    assert score.argmax() == 3
    z = list(csv.DictReader(open(tmp_path / "z.csv")))
    assert len(z) == 7 and len(z[0]) == 40 + 20 + 5 + 10 and z[1]["pet.pet[0]"] == ""
    mri = np.array([[float(r[f"mri.mri[{i}]"]) for i in range(40)] for r in z])
    assert (
        np.median(mri[3]) > 2.6 > np.median(np.abs(mri[[0, 1, 2, 4, 5, 6]]))
    )  # the shifted subject's regions stand out
    assert int(rows[3]["extreme_features"]) >= 30


def test_a_built_in_data_set_of_other_modalities_is_refused_in_one_line(cohort_run, tmp_path, capsys):
    """`score --data synthetic` on a cohort model used to end in a KeyError traceback deep in the feature z-maps."""
    out = tmp_path / "scores.csv"
    assert main(["score", str(cohort_run), "--data", "synthetic", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [error[0]] and "synthetic's modalities" in error[0] and "differ from the model's" in error[0]
    assert not out.exists()


def test_synthesize_draws_every_modality_from_its_likelihood_and_reports_privacy(cohort_run, tmp_path):
    out = tmp_path / "synthetic.npz"
    assert main(["synthesize", str(cohort_run), "--n", "300", "--out", str(out)]) == 0
    samples = np.load(out)
    assert set(samples.files) == {"mri", "pet", "clinical", "genetics"} and samples["mri"].shape == (300, 40)
    assert set(np.unique(samples["genetics"])) <= {0.0, 1.0}  # binary markers come out binary
    report = json.loads((tmp_path / "synthetic.privacy.json").read_text())
    assert report["source"] == "prior" and report["synthetic_rows"] == 300
    assert set(report["privacy"]) >= {
        "dcr_share",
        "dcr_share_null",
        "dcr_share_interval",
        "nndr",
        "nndr_holdout",
        "exact_copies",
        "membership_auc",
        "membership_tpr",
        "tests",
        "memorisation",
        "controls",
    }
    assert set(report["fidelity"]) == {"ks_mean", "ks_max", "correlation_error", "detection_auc"}
    assert report["privacy"]["exact_copies"] == 0 and report["memorisation"] == {}
    # every real row with the modalities compared: PET is missing for some subjects, so each modality alone uses more
    # rows than the complete cases, and the report says how many each used
    data_rows = api.load_run_data(cohort_run, api.load(cohort_run)[1], progress=False)
    complete = int(data_rows.valid.mask.all(1).sum())
    assert report["privacy"]["rows"]["holdout"] == report["held_out_rows"] == complete
    assert report["privacy_by_modality"]["mri"]["rows"]["holdout"] == int(data_rows.valid.mask[:, 0].sum()) > complete
    assert report["privacy_by_modality"]["mri"]["rows"]["train"] == int(data_rows.train.mask[:, 0].sum())
    vae, config = api.load(cohort_run)
    data = api.load_run_data(cohort_run, config, progress=False)
    aggregate = vae.synthesize(200, source="aggregate", data=data, seed=1)
    assert aggregate["pet"].shape == (200, 20) and np.isfinite(aggregate["pet"]).all()
    with pytest.raises(InfinimodalError, match="needs the training data"):
        vae.synthesize(5, source="aggregate")
    with pytest.raises(InfinimodalError, match="unknown source"):
        vae.synthesize(5, source="posterior")


def test_synthesize_fails_loudly_when_the_generator_copies_training_subjects(cohort_run, tmp_path, monkeypatch, capsys):
    vae, config = api.load(cohort_run)
    data = api.load_run_data(cohort_run, config, progress=False)
    train = data.train_for_evaluation()
    complete = np.flatnonzero(train.mask.all(1))[:300]
    copied = vae.to_user_units({name: train.batch(complete)["data"][name].numpy() for name in vae.names})
    monkeypatch.setattr(MultimodalVAE, "synthesize", lambda self, n, **kwargs: {k: v[:n] for k, v in copied.items()})
    out = tmp_path / "copied.npz"
    assert main(["synthesize", str(cohort_run), "--n", "300", "--out", str(out)]) == 4  # EXIT_MEMORISATION
    assert "PRIVACY CHECK FAILED" in capsys.readouterr().err and out.exists()
    report = json.loads((tmp_path / "copied.privacy.json").read_text())
    found = report["privacy"]["memorisation"]
    assert {"exact_copies", "dcr_close_share", "nndr"} <= set(found)
    # a measure that misses the copier on these few held-out rows is one the planted copier missed too, and said so
    assert set(privacy.MEASURES) - set(found) <= set(report["privacy"]["inconclusive"])
    assert report["privacy"]["exact_copies"] == 300 and report["verdict"].startswith("MEMORISATION")


def test_impute_averages_posterior_draws_and_multiple_imputation_draws_from_the_predictive(cohort_run):
    vae, config = api.load(cohort_run)
    data = api.load_run_data(cohort_run, config, progress=False)
    rows = data.test.take(np.flatnonzero(data.test.mask.all(1))[:30])
    hidden = {
        "mri": rows.arrays["mri"],
        "clinical": rows.arrays["clinical"],
        "genetics": rows.arrays["genetics"],
        "pet": np.where(np.arange(30)[:, None] < 10, np.nan, rows.arrays["pet"]),
    }
    mean = vae.impute(hidden)
    np.testing.assert_array_equal(mean["pet"][10:], rows.arrays["pet"][10:])
    np.testing.assert_array_equal(vae.impute(hidden)["pet"], mean["pet"])  # the draws are seeded: the same answer twice
    assert not np.allclose(vae.impute(hidden, samples=0)["pet"][:10], mean["pet"][:10])  # the plug-in differs
    draws = vae.impute_draws(hidden, 40)
    assert draws["pet"].shape == (40, 30, 20)
    np.testing.assert_array_equal(draws["pet"][:, 10:], np.broadcast_to(rows.arrays["pet"][10:], (40, 20, 20)))
    assert draws["pet"][:, :10].std(0).min() > 0.05  # the imputations vary
    # their average is the conditional mean, up to Monte Carlo error (the draws add the likelihood's noise)
    assert np.abs(draws["pet"][:, :10].mean(0) - mean["pet"][:10]).mean() < 0.25
    assert set(np.unique(vae.impute_draws({"mri": rows.arrays["mri"]}, 3)["genetics"])) <= {0.0, 1.0}


def test_evaluation_reports_imputation_error_against_regression_baselines(cohort_run):
    assert main(["evaluate", str(cohort_run), "--iw-samples", "2", "--quiet"]) == 0
    result = json.loads((cohort_run / "eval.json").read_text())
    errors = result["imputation_mse"]
    assert set(errors) == {"mri", "pet", "clinical", "genetics"}
    vae, config = api.load(cohort_run)
    data = api.load_run_data(cohort_run, config, progress=False)
    complete = data.test.mask.all(1)
    train_complete = data.train.mask.all(1)
    assert set(errors["genetics"]) >= {"logistic"} and set(errors["genetics"]["baseline_settings"]) == {
        "ridge",
        "mlp",
        "logistic",
    }
    for name in ("mri", "pet"):
        entry = errors[name]
        assert set(entry) == {
            "rows",
            "model",
            "model_all_rows",
            "model_unweighted",
            "mean",
            "ridge",
            "mlp",
            "baseline_settings",
            "best_baseline",
            "model_interval",
            "model_all_rows_interval",
            "model_unweighted_interval",
        }
        assert entry["model_interval"][0] < entry["model"] < entry["model_interval"][1]
        assert entry["model"] != entry["model_unweighted"]  # the weighted conditional mean is another estimate
        assert entry["rows"] == complete.sum() and entry[entry["best_baseline"]] == min(
            entry[b] for b in ("mean", "ridge", "mlp")
        )
        # the training-mean baseline, written out
        truth, train = data.test.arrays[name][complete], data.train.arrays[name][train_complete]
        assert entry["mean"] == pytest.approx(float(((truth - train.mean(0)) ** 2).mean()), rel=1e-5)
        assert entry["ridge"] < entry["mean"] and entry["model"] < entry["mean"]


def test_imputation_baselines_choose_their_settings_on_validation_rows():
    from infinimodal.evaluation.baselines import tuned_predictions

    rng = np.random.default_rng(6)

    def rows(n, signal):
        x = rng.normal(size=(n, 60))
        logit = signal * x[:, :3].sum(1, keepdims=True) + 0.0 * x[:, 3:4]
        return x, (rng.random((n, 4)) < 1 / (1 + np.exp(-logit))).astype(float)

    # binary targets unrelated to 60 inputs, 150 training rows: an unpenalised fit chases noise and loses to the mean
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = rows(150, 0.0), rows(300, 0.0), rows(2000, 0.0)
    predicted, settings = tuned_predictions(x_train, y_train, x_valid, y_valid, x_test, "binary")
    brier = {name: float(((p - y_test) ** 2).mean()) for name, p in predicted.items()}
    assert settings["ridge"] >= 100 and settings["logistic"] <= 0.01  # validation picks the strongest penalties
    for name in ("ridge", "mlp", "logistic"):
        assert brier[name] < brier["mean"] + 0.01, (name, brier)
    default_mlp = MLPRegressor(hidden_layer_sizes=(256,), early_stopping=True, max_iter=200, random_state=0).fit(
        x_train, y_train
    )
    assert (
        float(((default_mlp.predict(x_test) - y_test) ** 2).mean()) > brier["mean"] + 0.02
    )  # what evaluate used before
    # with signal, the settings loosen and every baseline beats the mean; categorical targets get class probabilities
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = rows(1000, 1.5), rows(300, 1.5), rows(1000, 1.5)
    predicted, settings = tuned_predictions(x_train, y_train, x_valid, y_valid, x_test, "binary")
    assert all(
        ((predicted[n] - y_test) ** 2).mean() < ((predicted["mean"] - y_test) ** 2).mean() - 0.03
        for n in ("ridge", "mlp", "logistic")
    )
    classes = np.eye(3)[(x_train[:, 0] > 0.5).astype(int) + (x_train[:, 0] > -0.5)]
    predicted, _ = tuned_predictions(
        x_train,
        classes,
        x_valid,
        np.eye(3)[(x_valid[:, 0] > 0.5).astype(int) + (x_valid[:, 0] > -0.5)],
        x_test,
        "categorical",
    )
    np.testing.assert_allclose(predicted["logistic"].sum(1), 1.0, atol=1e-9)
    assert (predicted["logistic"].argmax(1) == (x_test[:, 0] > 0.5).astype(int) + (x_test[:, 0] > -0.5)).mean() > 0.9


def test_an_imputation_comparison_on_few_complete_rows_says_so():
    from infinimodal.evaluation.metrics import imputation_errors

    data = load_dataset("synthetic:n=400,features=3,modalities=3,missing=0.5")
    vae = MultimodalVAE(data.modalities, latent="gated", latent_dim=2, hidden=[8])
    errors = imputation_errors(vae.module, data.train, data.test, samples=2, valid=data.valid)
    entry = errors["x0"]
    assert entry["rows"] == int(data.test.mask.all(1).sum()) < 100 and "too few rows to conclude" in entry["warning"]


def test_the_label_modality_and_a_single_modality_have_no_imputation_baselines():
    data = load_dataset("synthetic:n=300,features=3,modalities=1")
    vae = MultimodalVAE(data.modalities, latent="gated", latent_dim=2, hidden=[8])
    assert "imputation_mse" not in vae.evaluate(data, iw_samples=2, coherence=False, progress=False)


def test_the_privacy_report_compares_binary_samples_with_training_images_binarised_as_the_model_saw_them():
    from infinimodal.data import MultimodalData
    from infinimodal.data.multimodal import binarize_fixed
    from infinimodal.modality import Modality
    from infinimodal.synthesis import synthesis_report

    rng = np.random.default_rng(0)
    grey = lambda n: np.clip(rng.beta(0.5, 0.5, (n, 1)) + 0.2 * rng.normal(size=(n, 30)), 0, 1).astype(np.float32)  # noqa: E731
    everything = np.ones((600, 1), dtype=bool)
    data = MultimodalData(
        [Modality("image", (30,), "bernoulli")],
        Split({"image": grey(600)}, everything),
        Split({"image": binarize_fixed(grey(600), 1)}, everything),
        Split({"image": binarize_fixed(grey(600), 2)}, everything),
        "binarised",
        dynamic_binarize=["image"],
    )
    vae = MultimodalVAE(data.modalities, latent="gated", latent_dim=2, hidden=[8])
    fresh = {"image": binarize_fixed(grey(600), 3)}  # new draws of the same population: the no-memorisation case
    report = synthesis_report(vae.module, fresh, data)
    # at its null (600 training against 300 held-out reference rows: about 2/3); against the grey training images
    # every binary row would be nearer a held-out row, near 0
    assert report["memorisation"] == {} and report["privacy"]["dcr_share"] == pytest.approx(
        report["privacy"]["dcr_share_null"], abs=0.08
    )
    assert report["privacy"]["dcr_share"] > 0.5


def test_the_cohort_data_set_plants_its_atypical_subjects_in_the_test_rows_only():
    data = load_dataset("cohort:n=1000,atypical=0.2,missing=0.5")
    assert [m.name for m in data.modalities] == ["mri", "pet", "clinical", "genetics"] and len(data.test) == 100
    kinds = data.truth["kinds"]
    assert np.bincount(kinds, minlength=3).tolist() == [80, 10, 10]
    assert 0.3 < 1 - data.train.mask[:, 1].mean() < 0.7 and data.train.mask[:, [0, 2, 3]].all()
    assert (
        abs(data.train.arrays["mri"].mean()) < 0.05 and abs(data.train.arrays["mri"].std() - 1) < 0.05
    )  # standardised on the reference
    off = kinds == 1  # off the map: a few regions moved by 4 SD
    assert np.abs(data.test.arrays["mri"][off]).max(axis=1).min() > 2.5
    # the truth holds each split's shared factors; the extreme subjects have one of them at exactly 4 SD
    factors = data.truth["shared_factors"]
    assert {k: v.shape for k, v in factors.items()} == {"train": (800, 4), "valid": (100, 4), "test": (100, 4)}
    at_shift = np.isclose(np.abs(factors["test"]), 4.0).sum(axis=1)
    assert (at_shift[kinds == 2] == 1).all() and (at_shift[kinds != 2] == 0).all()
    # ... and belong to their rows: MRI, a smooth map of them plus noise, predicts them on every split
    from sklearn.linear_model import LinearRegression

    mri = {split: getattr(data, split).arrays["mri"] for split in factors}
    fitted = LinearRegression().fit(mri["train"], factors["train"])
    assert min(fitted.score(mri[split], factors[split]) for split in ("valid", "test")) > 0.5
    assert fitted.score(mri["valid"], factors["valid"][::-1]) < 0.1  # rows out of order: nothing
    for bad, message in (
        ("cohort:foo=1", "cannot read 'foo=1'"),
        ("cohort:n=x", "n must be a number"),
        ("cohort:missing=1", "invalid missing=1"),
    ):
        with pytest.raises(InfinimodalError, match=message):
            load_dataset(bad)


def test_synthetic_values_outside_a_columns_range_or_type_are_reported(tmp_path):
    rng = np.random.default_rng(8)
    n = 600
    score = np.clip(np.round(24 + 6 * rng.normal(size=n)), 0, 30)  # a bounded score such as MMSE
    block = np.column_stack([rng.normal(size=n), (rng.random(n) < 0.4).astype(float), score])  # one Gaussian block
    np.savez(tmp_path / "clinic.npz", clinical=block, mri=rng.normal(size=(n, 4)) + block[:, :1])
    data = load_dataset(str(tmp_path / "clinic.npz"))
    assert {m.name: m.likelihood for m in data.modalities}["clinical"] == "gaussian"
    vae = MultimodalVAE(data.modalities, latent="gated", latent_dim=3, hidden=[16])
    vae.fit(data, epochs=2, batch_size=100, progress=False)
    report = vae.synthesis_report(vae.synthesize(400, data=data), data)
    unlike = report["values_unlike_the_data"]
    assert {1, 2} <= set(unlike["clinical"])  # the 0/1 column and the score
    # no continuous column is called not whole (a 2-epoch model's Gaussian tails may reach past a column's range: that
    # part of the report is about the model, measured at 2.75 % above one MRI column's range in one run, 0 % in another)
    assert all(
        entry["not_whole"] == 0.0
        for name, columns in unlike.items()
        for j, entry in columns.items()
        if (name, j) not in {("clinical", 1), ("clinical", 2)}
    )
    assert unlike["clinical"][1]["not_whole"] > 0.9 and unlike["clinical"][2]["not_whole"] > 0.9
    assert any(line.startswith("clinical: ") and "not whole" in line for line in report["warnings"])


def test_a_reference_too_small_to_standardise_against_is_refused(cohort_run):
    """With 1 to 3 reference rows the scores came out NaN or in the millions without a word; now a clear error, and the
    smallest reference allowed scores finitely."""
    vae, config = api.load(cohort_run)
    data = api.load_run_data(cohort_run, config, progress=False)
    rows = data.test.take(np.arange(5))
    for n in (1, 3, MIN_REFERENCE_ROWS - 1):
        with pytest.raises(InfinimodalError, match=f"at least {MIN_REFERENCE_ROWS} reference rows.*has {n}:"):
            vae.score(rows, data.valid.take(np.arange(n)), samples=5)
    scores = vae.score(rows, data.valid.take(np.arange(MIN_REFERENCE_ROWS)), samples=5)
    assert np.isfinite(scores["score"]).all()


def test_the_reference_size_benchmark_compares_small_references_with_the_full_one(cohort_run):
    """benchmarks/reference_size.py (the figures behind MIN_REFERENCE_ROWS): a reference as large as the full one ranks
    the rows exactly as it does, and the scores it reports are `score`'s own."""
    from tests.test_benchmarks import load_script

    script = load_script("reference_size")
    result = script.main([str(cohort_run), "--sizes", "8", "40", "--full", "40", "--rows", "30", "--samples", "2"])
    assert result["full_reference"] == 40 and result["rows"] == 30
    assert result["sizes"]["40"]["score"]["spearman_with_full"] == 1.0
    assert -1.0 <= result["sizes"]["8"]["latent_deviation"]["spearman_with_full"] < 1.0
    vae, config = api.load(cohort_run)
    data = api.load_run_data(cohort_run, config, progress=False)
    rows, reference = data.test.take(np.arange(30)), data.valid.take(np.arange(40))
    np.testing.assert_allclose(
        script.scores_against(vae, rows, reference, 2)["score"], vae.score(rows, reference, samples=2)["score"]
    )


def test_a_subject_gets_the_same_score_and_imputation_alone_as_in_any_batch(cohort_run):
    vae, config = api.load(cohort_run)
    data = api.load_run_data(cohort_run, config, progress=False)
    rows = data.test.take(np.arange(40))
    reference = data.valid.take(np.arange(200))
    together = vae.score(rows, reference, samples=10)
    order = np.random.default_rng(0).permutation(40)
    shuffled = vae.score(rows.take(order), reference, samples=10)
    for i in (0, 7, 23):
        alone = vae.score(rows.take(np.array([i])), reference, samples=10)
        for column in ("score", "latent_deviation", "deviation_mri"):
            np.testing.assert_allclose(alone[column][0], together[column][i], atol=1e-5, err_msg=column)
            np.testing.assert_allclose(
                shuffled[column][np.flatnonzero(order == i)[0]], together[column][i], atol=1e-5, err_msg=column
            )
    # imputation: PET hidden in some rows, the same fill alone and together
    arrays = {name: rows.arrays[name].astype(np.float64) for name in vae.names}
    arrays["pet"][:20] = np.nan
    filled = vae.impute(arrays)
    for i in (3, 11):
        alone = vae.impute({name: value[i : i + 1] for name, value in arrays.items()})
        np.testing.assert_allclose(alone["pet"][0], filled["pet"][i], atol=1e-5)
    # and the draws are still draws: another subject's fill differs
    assert not np.allclose(filled["pet"][3], filled["pet"][11])
    # multiple imputation too: a subject's draws are the same alone, in a batch and in another order
    draws = vae.impute_draws(arrays, 5, batch_size=7)
    for i in (3, 11):
        alone = vae.impute_draws({name: value[i : i + 1] for name, value in arrays.items()}, 5)
        np.testing.assert_allclose(alone["pet"][:, 0], draws["pet"][:, i], atol=1e-5)
        np.testing.assert_allclose(alone["genetics"][:, 0], draws["genetics"][:, i])
    reversed_draws = vae.impute_draws({name: value[::-1] for name, value in arrays.items()}, 5)
    np.testing.assert_allclose(reversed_draws["pet"][:, ::-1], draws["pet"], atol=1e-5)
    assert not np.allclose(draws["pet"][0, 3], draws["pet"][1, 3])  # and the draws of one subject differ


def test_the_scaled_chi2_of_the_robust_distance_recovers_a_known_scale_and_df():
    from scipy import stats

    from infinimodal.deviation import scaled_chi2

    distances = 2.5 * stats.chi2.rvs(7, size=20_000, random_state=0)
    df, scale = scaled_chi2(distances, df=3)
    assert df == pytest.approx(7, rel=0.1) and scale == pytest.approx(2.5, rel=0.1)
    # a heavy tail (a t-like mixture) gets fewer degrees of freedom than the coordinates' count
    heavy = stats.chi2.rvs(7, size=20_000, random_state=1) * np.where(
        np.random.default_rng(2).random(20_000) < 0.2, 4.0, 1.0
    )
    assert scaled_chi2(heavy, df=7)[0] < 5


def test_the_robust_centre_resists_outliers_and_falls_back_to_the_classical_one_on_few_rows():
    """On 400 reference rows with 5 % gross outliers the MCD centre stays at the bulk's (the classical mean moves); on 4
    rows, too few to leave half out, the centre and covariance are numpy's mean and covariance, and scores come out."""
    from infinimodal.deviation import MIN_ROBUST_ROWS, RobustCentre

    rng = np.random.default_rng(0)
    bulk = rng.standard_normal((400, 2)) * [1.0, 0.5]
    bulk[:20] += 30.0
    robust = RobustCentre.fit(bulk, bulk)
    location = robust.centre + robust.basis @ robust.location
    assert np.abs(location).max() < 0.3 and np.abs(bulk.mean(0)).max() > 1.0
    few = rng.standard_normal((4, 3))
    assert len(few) < MIN_ROBUST_ROWS
    small = RobustCentre.fit(few, few)
    projected = (few - small.centre) @ small.basis
    np.testing.assert_allclose(small.location, projected.mean(0), atol=1e-12)
    np.testing.assert_allclose(
        np.linalg.pinv(small.precision), np.atleast_2d(np.cov(projected, rowvar=False)), atol=1e-10
    )
    assert np.isfinite(small.p_values(few)).all()


def test_the_latent_centre_shrinks_a_covariance_estimated_from_few_rows():
    """Fresh rows of the reference's own population have a mean squared Mahalanobis distance equal to the dimension
    under the true covariance. Estimated from 30 rows in 20 dimensions, the inverse sample covariance inflates it about
    3.6 times (d (n - 1) / (n - d - 2)); the shrunk one stays near it. With many rows the shrinkage vanishes and the
    precision is the true covariance's inverse."""
    from infinimodal.deviation import _mahalanobis, shrunk_centre

    rng = np.random.default_rng(0)
    few, fresh = rng.standard_normal((30, 20)), rng.standard_normal((5000, 20))
    mean, precision = shrunk_centre(few)
    np.testing.assert_allclose(mean, few.mean(0))
    shrunk = np.mean(_mahalanobis(fresh, mean, precision) ** 2)
    unshrunk = np.mean(_mahalanobis(fresh, mean, np.linalg.inv(np.cov(few, rowvar=False))) ** 2)
    assert shrunk < 1.5 * 20 < 2.5 * 20 < unshrunk, (shrunk, unshrunk)
    scales = np.array([3.0, 1.0, 0.1])
    _, precision = shrunk_centre(rng.standard_normal((200_000, 3)) * scales)
    np.testing.assert_allclose(precision * np.outer(scales, scales), np.eye(3), atol=0.02)
    # codes that never vary (a collapsed latent) carry no deviation, rather than dividing by zero
    mean, precision = shrunk_centre(np.ones((40, 3), dtype=np.float32))
    assert precision.dtype == np.float64 and (_mahalanobis(fresh[:, :3], mean, precision) == 0).all()
