"""The benchmark scripts' CPU paths at toy size (their figures are measurements, not assertions)."""

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_polymnist_protocol_runs_on_the_cpu_at_toy_size(tmp_path):
    from tests.test_data import fake_mnist

    mnist = fake_mnist(tmp_path / "mnist", n_train=150, n_test=40)
    polymnist = load_script("polymnist")
    out = tmp_path / "poly"
    report = polymnist.main(["--toy", "--modalities", "3", "--max-train", "60", "--minutes", "1e-6", "--curve-every", "1",
                             "--latent-dim", "4", "--hidden", "16", "--data-dir", str(mnist), "--accelerator", "cpu", "--out", str(out)])
    # the epoch count came from the one-epoch probe run (a budget this small fits one epoch)
    assert report["epochs"] == 1 and report["probe_seconds_per_epoch"] > 0
    assert (out / "epoch-probe" / "model.ckpt").is_file()
    assert report["device"]["accelerator"] == "cpu" and report["device"]["device"].startswith("CPU")
    assert set(report["models"]) == {"gaussian (mopoe)", "gated (mopoe)"}
    for name, row in report["models"].items():
        config = json.loads((out / f"{row['latent']}-mopoe" / "config.json").read_text())
        # the MoPoE paper's likelihood and KL weight, on every modality
        assert config["likelihoods"] == {"*": "laplace:0.75"} and config["kl_weight"] == 2.5 and config["aggregator"] == "mopoe"
        assert set(row["coherence"]["conditional"]) == {"1", "2"} and set(row["linear_probe_accuracy"]) == {"1", "2", "3"}
        assert [p["epoch"] for p in row["coherence_curve"]] == [1]
        assert 0 <= row["coherence_curve"][0]["conditional"]["1"] <= 1
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(report))
    table = (out / "results.md").read_text()
    assert "| gated (mopoe) |" in table and "MoPoE (paper, 300 epochs)" in table and "epoch 1" in table
