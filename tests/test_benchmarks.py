"""The benchmark scripts' CPU paths at toy size (their figures are measurements, not assertions)."""

import importlib.util
import json
from pathlib import Path

import pytest
import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 32 s of a benchmark script's plumbing: `make test` stays under its 10 minutes (624 s with it)
def test_polymnist_protocol_runs_on_the_cpu_at_toy_size(tmp_path):
    from tests.test_data import fake_mnist

    mnist = fake_mnist(tmp_path / "mnist", n_train=150, n_test=40)
    polymnist = load_script("polymnist")
    out = tmp_path / "poly"
    report = polymnist.main(
        [
            "--toy",
            "--modalities",
            "3",
            "--max-train",
            "60",
            "--minutes",
            "1e-6",
            "--curve-every",
            "1",
            "--latent-dim",
            "4",
            "--hidden",
            "16",
            "--data-dir",
            str(mnist),
            "--accelerator",
            "cpu",
            "--out",
            str(out),
        ]
    )
    # the epoch count came from the one-epoch probe run (a budget this small fits one epoch)
    assert report["epochs"] == 1 and report["probe_seconds_per_epoch"] > 0
    assert (out / "epoch-probe" / "model.ckpt").is_file()
    assert report["device"]["accelerator"] == "cpu" and report["device"]["device"].startswith("CPU")
    assert set(report["models"]) == {"gaussian (mopoe)", "gated (mopoe)"}
    for name, row in report["models"].items():
        config = json.loads((out / f"{row['latent']}-mopoe" / "config.json").read_text())
        # the MoPoE paper's likelihood and KL weight, on every modality
        assert (
            config["likelihoods"] == {"*": "laplace:0.75"}
            and config["kl_weight"] == 2.5
            and config["aggregator"] == "mopoe"
        )
        assert set(row["coherence"]["conditional"]) == {"1", "2"} and set(row["linear_probe_accuracy"]) == {
            "1",
            "2",
            "3",
        }
        assert [p["epoch"] for p in row["coherence_curve"]] == [1]
        assert 0 <= row["coherence_curve"][0]["conditional"]["1"] <= 1
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(report))
    table = (out / "results.md").read_text()
    assert "| gated (mopoe) |" in table and "MoPoE (paper, 300 epochs)" in table and "epoch 1" in table


def test_scaling_benchmark_runs_at_toy_size(tmp_path):
    scaling = load_script("scaling")
    out = tmp_path / "scaling.json"
    result = scaling.main(
        [
            "--modalities",
            "2",
            "3",
            "--families",
            "gaussian",
            "beta",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--no-memory",
            "--aggregators",
            "poe",
            "mopoe",
            "--square",
            "128",
            "--matmul-rounds",
            "1",
            "--iwae-rows",
            "3",
            "--iwae-samples",
            "150",
            "--iwae-repeats",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert (
        result["threads"] >= 1 and result["torch"] and result["defaults"]["latent"] and result["defaults"]["aggregator"]
    )
    grid = result["by_modalities"]
    for table in ("ms_per_step", "samples_per_second", "ms_per_step_fastest_round"):
        assert set(grid[table]) == {"2", "3"}
        assert all(v > 0 for per_family in grid[table].values() for row in per_family.values() for v in row.values())
    assert (
        set(grid["mopoe_over_poe"]["3"]) == {"gaussian", "beta"}
        and grid["ratio_to_gaussian"]["2"]["poe"]["gaussian"] == 1.0
    )
    assert (
        set(grid["ms_per_step_per_modality"]["poe"]["beta"]) == {"2", "3"}
        and grid["per_modality_growth"]["poe"]["gaussian"] > 0
    )
    assert "peak_memory" not in grid  # --no-memory; one configuration's fresh process instead:
    memory = scaling.peak_memory("gaussian", "poe", 2, steps=1)
    assert memory["peak_increase_mib"] > 0 and memory["params_mib"] > 0
    matmul = result["matmul_efficiency"]
    assert len(matmul["mm_gflops"]) == 3 and all(v > 0 for v in matmul["mm_gflops"].values())
    for name in ("mnist_1_modality", "tabular_3_modalities"):
        row = matmul[name]
        assert row["gflop_per_step"] > 0 and row["achieved_gflops"] > 0 and row["fraction_of_square_mm"] > 0
    # the hook counts what runs: MNIST-shaped MoPoE with one modality decodes its batch once
    assert matmul["mnist_1_modality"]["gflop_per_step"] > 3 * 2 * 100 * 784 * 500 * 2 / 1e9
    iwae = result["iwae"]
    for family in {result["defaults"]["latent"], "gaussian"}:
        assert (
            iwae[family]["rows_per_second"] > 0
            and iwae[family]["minutes_for_10000_rows"] > 0
            and iwae[family]["finite"]
        )


def test_benchmarks_page_is_written_from_the_json(tmp_path):
    scaling = load_script("scaling")
    bench = tmp_path / "bench"
    bench.mkdir()
    scaling.main(
        [
            "--modalities",
            "2",
            "3",
            "--families",
            "gaussian",
            "gated",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--no-memory",
            "--aggregators",
            "poe",
            "mopoe",
            "mopoe-sampled",
            "--square",
            "64",
            "--matmul-rounds",
            "1",
            "--iwae-rows",
            "2",
            "--iwae-samples",
            "20",
            "--iwae-repeats",
            "1",
            "--threads",
            "1",
            "--out",
            str(bench / "scaling.json"),
        ]
    )
    page = load_script("benchmarks_md").main([str(bench)])
    assert "| gated/mopoe |" in page and "| gaussian/poe |" in page and "M = 3" in page
    assert "## Share of the machine's matmul rate" in page and "minutes for 10,000 rows" in page
    assert "Not run (`python benchmarks/vs_multivae.py" in page and "Not run (`python benchmarks/throughput.py" in page
    assert "--data mfeat --aggregators mopoe --mopoe-kl sampled" in page
    assert (
        "`--mopoe-kl sampled` (one subset fused and scored per row): its speed-up" in page
        and "| gated/mopoe-sampled |" in page
    )


def test_the_multivae_comparison_offers_our_mopoe_kl_choices_and_default():
    from infinimodal.aggregators import DEFAULT_MOPOE_KL, MoPoE_KL_ESTIMATES

    script = load_script("vs_multivae")
    assert script.MOPOE_KL_CHOICES == MoPoE_KL_ESTIMATES and script.MOPOE_KL_DEFAULT == DEFAULT_MOPOE_KL


def test_the_six_view_section_shows_the_mopoe_pairing_and_the_kl_estimate(tmp_path):
    def model(sps, probe):
        return {"samples_per_second": sps, "peak_over_import_mib": 50.0, "probe_accuracy": probe}

    result = {
        "data": "mfeat",
        "features": {"fac": 216, "fou": 76},
        "rows": {"train": 1600},
        "epochs": 3,
        "threads": 1,
        "multivae": "1.0.3",
        "torch": "2.13.0",
        "default_latent": "gated",
        "mopoe_kl": "sampled",
        "models": {
            "multivae/MoPoE": model(1000, 0.9),
            "infinimodal/gaussian/mopoe": model(4000, 0.95),
            "infinimodal/gated/mopoe": model(2500, 0.94),
        },
        "stick_over_our_gaussian": {"gated/mopoe": {"samples_per_second": 0.625}},
    }
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "vs_multivae_mfeat_sampled.json").write_text(json.dumps(result))
    page = load_script("benchmarks_md").main([str(bench)])
    section = page[page.index("our KL: sampled") :]
    assert (
        "UCI handwritten digits (216, 76 features" in section
        and "63 subsets" in section
        and "--mopoe-kl sampled" in section
    )
    assert "| gated/mopoe vs MoPoE | 2,500 | 1,000 | 2.50x |" in section and "MVAE" not in section
    (bench / "vs_multivae_mfeat_sticks.json").write_text(json.dumps(result | {"mopoe_kl": "sticks-sampled"}))
    page = load_script("benchmarks_md").main([str(bench)])
    section = page[page.index("our KL: sticks-sampled") : page.index("our KL: sampled")]
    assert "gated family's sticks' at each row's drawn subset (--mopoe-kl sticks-sampled;" in section
    assert "| gated/mopoe vs MoPoE | 2,500 | 1,000 | 2.50x |" in section
    assert "Not run (`python benchmarks/vs_multivae.py --data mfeat --aggregators mopoe --mopoe-kl all" in page


@pytest.mark.slow
def test_the_compile_benchmark_times_eager_and_compiled_steps(tmp_path):
    result = load_script("compile").main(["--quick"])
    row = result["tabular_3"]["gaussian"]
    assert row["eager_ms"] > 0 and row["compiled_ms"] > 0 and row["first_compiled_step_seconds"] > 0
    assert isinstance(row["graph_breaks"], int) and row["graph_breaks"] >= 1  # unimodal_posteriors branches on the mask
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "compile.json").write_text(json.dumps(result))
    page = load_script("benchmarks_md").main([str(bench)])
    assert (
        f"| tabular_3 gaussian/mopoe | {row['eager_ms']:.1f} | {row['compiled_ms']:.1f} |" in page
        and f"| {row['graph_breaks']} |" in page
    )


def test_format_table_keeps_runs_with_different_semi_supervised_terms_apart():
    describe = load_script("format_table").describe
    base = {"latent": "gaussian", "aggregator": "mopoe", "latent_dim": 50, "predict": {"label": 100.0}}
    plain, informed = describe(base), describe(base | {"infomax": {"label": 10.0}})
    assert "predict label=100" in plain and "infomax" not in plain
    assert "predict label=100, infomax label=10" in informed and informed != plain


def test_the_m2_marginal_benchmark_trains_with_the_bound_and_restores_the_model(tmp_path):
    script = load_script("m2_marginal")
    from infinimodal.model import MultimodalModule

    forward = MultimodalModule.forward
    summary = script.main(
        [
            "--data",
            "synthetic:n=300,features=4,labels=0.3",
            "--epochs",
            "1",
            "--latent-dim",
            "3",
            "--hidden",
            "8",
            "--iw-samples",
            "2",
            "--out",
            str(tmp_path / "m2"),
        ]
    )
    assert MultimodalModule.forward is forward
    assert 0.0 <= summary["label_error"] <= 1.0 and summary["train_seconds"] > 0


def test_the_m2_marginal_bound_sums_each_class_elbo_under_the_classifier(monkeypatch):
    # the gain written out by hand, class by class, with every draw at the posterior mean (deterministic)
    import numpy as np
    import torch
    from torch.distributions import Normal, kl_divergence
    from infinimodal import MultimodalVAE
    from infinimodal.data import load_dataset
    from infinimodal.mixture import MixturePosterior

    script = load_script("m2_marginal")
    data = load_dataset("synthetic:n=200,features=4,labels=0.3")
    batch = data.train.batch(np.arange(40))
    module = MultimodalVAE(data.modalities, latent="gaussian", aggregator="poe", latent_dim=2, hidden=[8]).module
    module.train()
    monkeypatch.setattr(
        module.latent, "rsample", lambda q: q.components.mean[:, 0] if isinstance(q, MixturePosterior) else q.mean
    )
    d, mask = batch["data"], batch["mask"]
    gain = script.marginal_gain(module, d, mask, 1.0, "label")
    rows = (~mask[:, 3] & mask[:, :3].any(1)).nonzero().squeeze(-1)
    assert 0 < len(rows) < 40
    chosen = {k: v[rows] for k, v in d.items()}

    def elbo(values, observed):
        c = module.posterior(values, observed).components
        post = Normal(c.mean[:, 0], c.stddev[:, 0])
        return module.log_likelihoods(post.mean, values, observed).sum(-1) - kl_divergence(post, Normal(0.0, 1.0)).sum(
            -1
        )

    q = torch.softmax(module.class_logits("label", module.posterior(chosen, mask[rows]).components.mean[:, 0]), -1)
    n, classes = q.shape
    expected = -(q * q.log()).sum(-1) - elbo(chosen, mask[rows])
    for y in range(classes):
        labelled = chosen | {"label": torch.nn.functional.one_hot(torch.full((n,), y), classes).float()}
        observed = mask[rows].clone()
        observed[:, 3] = True
        expected = expected + q[:, y] * elbo(labelled, observed)
    assert gain.item() == pytest.approx(expected.sum().item() / 40, rel=1e-4, abs=1e-5)


def test_the_semisupervised_cost_benchmark_times_every_setting_side_by_side():
    script = load_script("semisupervised_cost")
    result = script.main(["--quick"])
    assert set(result["ms_per_step"]) == set(script.SETTINGS) == set(result["ratio_to_predict"])
    assert all(ms > 0 for ms in result["ms_per_step"].values())
    # each setting's module carries the terms its name says
    _, informed = script.model(*script.SETTINGS["predict+infomax+vat"])
    assert [term.name for term in informed.terms] == ["prediction", "information", "smoothness"]
    data, mask = script.labelled_batch()
    assert int(mask[:, 1].sum()) == 1 and bool(mask[:, 0].all())  # 1 % of the rows labelled, every image observed
    data, mask = script.labelled_batch(120, 21)
    assert mask.shape[0] == 120 and int(mask[:, 1].sum()) == 21  # --oversample label=20 on top


def test_format_table_names_the_smoothness_term():
    describe = load_script("format_table").describe
    base = {"latent": "gaussian", "aggregator": "mopoe", "latent_dim": 50, "predict": {"label": 100.0}}
    smoothed = describe(base | {"vat": {"label": 3.0}, "vat_radius": 0.25})
    assert "vat label=3, vat radius=0.25" in smoothed and smoothed != describe(base)


def test_the_validation_errors_script_scores_the_saved_model_as_training_logged_it(tmp_path, capsys):
    from infinimodal.cli import main
    from infinimodal.evaluation.curves import read_curves

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=600,features=4,labels=0.3",
                "--epochs",
                "3",
                "--latent-dim",
                "3",
                "--hidden",
                "8",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert load_script("validation_errors").main([str(out), str(tmp_path / "not_a_run")]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["run"] == str(out) and result["rows"]["label"] > 0
    _, curves = read_curves(out / "metrics.csv")
    best = curves["val_elbo"].argmax()
    assert result["label"] == pytest.approx(curves["val_label_error"][best], abs=1e-6)
    assert load_script("format_table").validation_error({"run_directory": str(out)}) == pytest.approx(
        result["label"], abs=1e-6
    )
    assert load_script("format_table").validation_error({"run_directory": str(tmp_path / "not_a_run")}) is None
    # the semi-supervised table: the validation column and the ordering of the dimensions (Spearman of index and KL)
    from infinimodal import api

    result = api.evaluate(out, iw_samples=2, coherence=False, progress=False)
    table = load_script("format_table")
    table.semi(table.load([str(out)]))
    header, _, row = capsys.readouterr().out.strip().splitlines()
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(header.strip("|").split("|"))
    assert (
        cells[6] == f"{100 * curves['val_label_error'][best]:.2f}" and cells[-1] == f"{result['kl_order_spearman']:.2f}"
    )


def test_the_cohort_benchmark_scores_runs_on_more_subjects_and_pairs_the_model_with_its_baselines(
    tmp_path, monkeypatch, capsys
):
    import numpy as np

    from infinimodal.cli import main
    from infinimodal.evaluation import metrics

    out = tmp_path / "default" / "run_s0"
    assert (
        main(
            [
                "train",
                "--data",
                "cohort:n=800,groups=3,separation=2,labels=0.2",
                "--epochs",
                "2",
                "--latent-dim",
                "3",
                "--hidden",
                "8",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    script = load_script("semisupervised_cohort")
    monkeypatch.setattr("sys.argv", ["semisupervised_cohort.py", "--test", "900", str(out)])
    assert script.main() == 0
    report = json.loads(capsys.readouterr().out)
    (run,) = report["runs"]
    assert run["test_rows"] == 900 and run["data_seed"] == 0
    # the model's error is the evaluation's own prediction error on those 900 rows
    from infinimodal import api
    from infinimodal.data import load_dataset

    vae, _ = api.load(out)
    data = load_dataset("cohort:test=900,n=800,groups=3,separation=2,labels=0.2")
    assert run["model"]["all"] == pytest.approx(
        metrics.prediction_errors(vae.module, data.test, "label")["label"]["all"]
    )
    setting = report["summary"]["default"]
    # the paired difference against logistic regression on MRI is the difference of the two error rates
    assert setting["model_minus_mri_logistic"]["mean"] == pytest.approx(
        run["model"]["all"] - run["baselines"]["mri"]["logistic"]
    )
    assert setting["model_minus_mri_logistic"]["rows"] == 900
    low, high = setting["model_minus_best"]["interval"]
    assert low <= setting["model_minus_best"]["mean"] <= high and np.isfinite(low)
    assert run["best_baseline"]["error"] == min(v for entry in run["baselines"].values() for v in entry.values())


def test_the_imputation_benchmark_scores_a_cohort_run_on_more_complete_subjects(tmp_path):
    from infinimodal.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "cohort:n=600",
                "--epochs",
                "1",
                "--latent-dim",
                "3",
                "--hidden",
                "8",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = load_script("imputation_cohort").score(out, 400)
    assert result["test_rows"] == 400
    for name in ("mri", "pet", "clinical", "genetics"):
        entry = result[name]
        assert 0.5 * 400 < entry["rows"] < 0.8 * 400  # the subjects with PET, about 60 %
        low, high = entry["model_interval"]
        assert low < entry["model"] < high and entry["model_over_baseline"] == pytest.approx(
            entry["model"] / entry[entry["best_baseline"]]
        )
        assert entry["baseline"] == min(entry[b] for b in ("mean", "ridge", "mlp", "logistic") if b in entry)
        assert entry["valid"]["rows"] > 0 and entry["valid"]["model"] > 0  # what a choice between runs reads
        assert entry["model_unweighted"] != entry["model"]


def test_the_cohort_oracle_imputes_near_the_noise_floor_and_knows_the_generator():
    oracle_script = load_script("cohort_oracle")
    from infinimodal.data import load_dataset
    from infinimodal.data.cohort import parse_spec

    settings = parse_spec("n=600,test=60")
    oracle = oracle_script.Oracle(settings)  # replays the generator: refuses if its draws changed
    data = load_dataset("cohort:n=600,test=60", progress=False)
    rows = np.flatnonzero(data.test.mask.all(1) & (data.truth["kinds"] == 0))[:4]
    rng = np.random.default_rng(0)
    errors = []
    for r in rows:
        row = {name: data.test.arrays[name][r].astype(np.float64) for name in oracle_script.NAMES}
        errors.append(((oracle.conditional_mean(row, "mri", 4000, rng) - row["mri"]) ** 2).mean())
        assert np.isfinite(oracle.log_density(row, 4000, rng))
    # MRI from the other modalities: well below the features' variance (1, standardised), above the noise's share
    assert 0.1 < np.mean(errors) < 0.8


def test_stability_benchmark_scores_seeds_against_the_truth_at_toy_size(tmp_path):
    stability = load_script("stability")
    result = stability.main(
        [
            "--data",
            "factors:n=400,features=8",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--latent-dim",
            "4",
            "--no-mofa",
            "--workdir",
            str(tmp_path),
        ]
    )
    for method in ("gated", "gaussian"):
        entry = result["methods"][method]
        assert len(entry["per_seed"]) == 2 and {"factors_matched", "pattern_right", "used"} <= set(entry["per_seed"][0])
        assert 0 <= entry["per_seed"][0]["factors_matched"] <= 6 and entry["stability"]["used_per_run"] == [
            s["used"] for s in entry["per_seed"]
        ]


def test_every_entry_point_refuses_every_bad_input_in_one_line(tmp_path):
    """benchmarks/bad_inputs.py (docs/reliability.md's table): exit 2, one line, no traceback, nothing written, for every
    bad file given to train, impute, embed, sample, score and explain, every bad folder of tables, a damaged checkpoint."""
    result = load_script("bad_inputs").main_(["--work", str(tmp_path)])
    assert result["all_refused_in_one_line"], {
        name: row
        for name, row in result["table"].items()
        if any(c["exit"] not in (2, "InfinimodalError") or c["traceback"] for c in row.values())
    }
    assert {"score", "explain"} <= set(result["table"]["inf"])


def test_the_sticks_benchmark_measures_each_subjects_open_gates(tmp_path):
    """benchmarks/sticks.py on a small cohort run: the expected number of open gates per subject against a Monte Carlo
    estimate from the posterior's own sticks (sum_k of the mean of prod_{j<=k} (1 - v_j) over draws), and a Gaussian run
    is skipped in words."""
    import numpy as np
    import torch

    from infinimodal import api
    from infinimodal.cli import main
    from infinimodal.rundata import load_run_data

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "cohort:n=600",
                "--epochs",
                "2",
                "--latent-dim",
                "6",
                "--hidden",
                "8",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = load_script("sticks").stick_information(str(out), max_rows=50)
    assert result["rows"] == 50 and result["dimensions"] == 6 and 0 <= result["stick_share"] <= 1
    vae, config = api.load(out)
    batch = load_run_data(out, config, progress=False).test.take(np.arange(50)).full_batch()
    with torch.no_grad():
        q = vae.module.posterior(batch["data"], batch["mask"])
        torch.manual_seed(0)
        v = q.sample((20000,))[..., 6:].double()  # [values, sticks] under the MoPoE mixture: the sticks' draws
    n_eff = torch.cumprod(1 - v, dim=-1).mean(0).sum(-1).numpy()
    assert abs(result["n_eff_mean"] - n_eff.mean()) < 0.01 and abs(result["n_eff_sd"] - n_eff.std()) < 0.01
    assert result["n_eff_prior"] == pytest.approx(sum((30 / 31) ** k for k in range(1, 7)))
    gaussian = tmp_path / "gaussian"
    assert (
        main(
            [
                "train",
                "--data",
                "cohort:n=600",
                "--latent",
                "gaussian",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--quiet",
                "--out",
                str(gaussian),
            ]
        )
        == 0
    )
    assert "only the gated family" in load_script("sticks").stick_information(str(gaussian))["skipped"]


def test_the_default_speed_benchmark_times_whole_fits_of_each_model():
    speed = load_script("default_speed")
    speed.DATA["tabular3"] = "synthetic:n=600,features=6"  # toy size
    seen = []
    original = speed.training_rate

    def recording(data, settings, epochs, seed):
        seen.append((speed.FLOAT64_KL in settings, speed.beta.FLOAT32_KL_LIMIT))
        return original(data, settings, epochs, seed)

    speed.training_rate = recording
    result = speed.main(
        ["--data", "tabular3", "--epochs", "1", "--rounds", "1", "--sampled", "--also", "small=latent_dim=6"]
    )
    assert {limit for _, limit in seen} == {speed.beta.FLOAT32_KL_LIMIT} and speed.beta.FLOAT32_KL_LIMIT > 0
    both = speed.main(["--data", "tabular3", "--epochs", "1", "--rounds", "1", "--float64-kl"])["data"]["tabular3"]
    assert set(both["samples_per_second"]) == {*speed.MODELS, *(f"{m}, float64 KL" for m in speed.MODELS)}
    assert (False, 0.0) in seen  # the float64 runs trained with the limit at 0 (the recursive call)
    entry = result["data"]["tabular3"]
    assert entry["rows"] == 480 and entry["ratio_to_gaussian"]["gaussian"] == 1.0
    assert set(entry["samples_per_second"]) == {
        "default",
        "fixed",
        "gaussian",
        "default, mopoe_kl sampled",
        "fixed, mopoe_kl sampled",
        "gaussian, mopoe_kl sampled",
        "small",
        "small, mopoe_kl sampled",
    }
    assert entry["dimensions_at_the_end"]["default"] == [16] and entry["dimensions_at_the_end"]["fixed"] == [50]
    assert entry["dimensions_at_the_end"]["small"] == [6]  # --also: the default with latent_dim 6 (a bound of 6)
    table = speed.markdown(result).splitlines()
    assert table[0].startswith("| data | rows | modalities | default | fixed | gaussian |") and len(table) == 3
    rate, ratio = entry["samples_per_second"]["default"], entry["ratio_to_gaussian"]["default"]
    assert table[2].startswith(f"| tabular3 | 480 | 3 | {rate:,.0f} |") and f"| {ratio:.2f}x |" in table[2]


def test_the_factor_alignment_benchmark_counts_found_and_one_to_one_factors(tmp_path):
    script = load_script("factor_alignment")
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(500, 3))
    # factor 0 alone in a dimension; 2 found (|r| 0.77) in a dimension that also carries 1 (|r| 0.64, not found)
    mixed = np.stack([factors[:, 0], factors[:, 1] + 1.2 * factors[:, 2], rng.normal(size=500)], 1)
    assert script.alignment(mixed, factors) == {"found": 2, "one_to_one": 1, "factors": 3}
    assert script.alignment(factors[:, ::-1].copy(), factors) == {"found": 3, "one_to_one": 3, "factors": 3}
    result = script.main(
        [
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--settings",
            "sticks=--mopoe-kl sticks-sampled",
            "--out",
            str(tmp_path / "a.json"),
        ]
    )
    run = result["settings"]["sticks"]["runs"]["0"]
    assert run["factors"] == 6 and 0 <= run["one_to_one"] <= run["found"] <= 6
    assert json.loads((tmp_path / "a.json").read_text()) == result


def test_the_step_benchmarks_time_the_step_as_training_runs_it():
    """throughput.py, scaling.py and semisupervised_cost.py time the objective in the training step's own context
    (`training_step_context`, which the training plan enters): before, they timed float64 Beta KLs, overstating the
    stick families' cost."""
    import torch
    from torch import nn
    from torch.distributions import Distribution

    from infinimodal.latents import beta
    from infinimodal.train.plan import training_step_context

    def flags():
        return beta._float32_kl, Distribution._validate_args

    with training_step_context():
        expected = flags()
    before = flags()
    assert expected != before  # the context changes both flags, so the check below can tell
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, data, mask):
            seen.append(flags())
            return type("Out", (), {"loss": self.w.sum()})()

    mask = torch.ones(1, 1, dtype=torch.bool)
    throughput, scaling, cost = load_script("throughput"), load_script("scaling"), load_script("semisupervised_cost")
    throughput.step_times(Recorder(), {}, mask, steps=1)
    scaling.Trainer(Recorder(), {}, mask).step()
    recorder = Recorder()
    cost.step_ms((recorder, lambda module, data, mask: module(data, mask)), {}, mask, steps=1)
    assert len(seen) == 3 + 1 + 3 and all(flag == expected for flag in seen), seen
    assert flags() == before  # both restored after each step


def test_the_step_context_benchmark_times_each_family_in_both_contexts():
    context = load_script("step_context")
    result = context.main(["--steps", "1", "--rounds", "1"])
    assert set(result["ms_per_step"]) == {f"{f}/{c}" for f in context.FAMILIES for c in context.CONTEXTS}
    assert result["over_gaussian"]["gaussian/training_step"] == 1.0
    assert all(value > 0 for value in result["training_step_speed_up"].values())


def test_the_factor_extreme_benchmark_rescores_a_cohort_run_on_new_subjects(tmp_path, capsys):
    from infinimodal.cli import main

    out = tmp_path / "run"
    command = ["train", "--data", "cohort:n=800", "--epochs", "2", "--latent-dim", "4", "--hidden", "8", "--quiet"]
    assert main([*command, "--out", str(out)]) == 0
    capsys.readouterr()
    report = load_script("factor_extreme").main([str(out), "--test", "1200", "--samples", "4"])
    (run,) = report["runs"]
    assert (
        report["test_rows"] == 1200 and run["extreme_subjects"]["all"] == 60
    )  # a tenth atypical, half of them extreme
    complete = run["complete"]
    # the benchmark's own shrunk Mahalanobis distance ranks rows as the deviation score's latent part does
    assert complete["latent"] == complete["latent_shrunk_covariance"]
    assert all(0.0 <= value <= 1.0 for value in [*complete.values(), *run["off_map_complete"].values()])
    assert (
        0.0 < run["shrinkage"] < 1.0 and run["reference_rows_fitted"] == 27
    )  # half of the 54 complete validation rows
