"""benchmarks/vs_multivae.py without MultiVae: the data, our side's child (in process and as a child process), the
running order, the summary and the torchvision stand-in. Nothing here installs anything."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_benchmarks import load_script

vs = load_script("vs_multivae")


@pytest.fixture
def tiny_data(tmp_path):
    return vs.ensure_data((300, 60, 120), tmp_path)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_data_are_deterministic_standardised_and_labelled():
    data = vs.make_data(200, 50, 60)
    again = vs.make_data(200, 50, 60)
    assert data.keys() == again.keys() and all(np.array_equal(data[k], again[k]) for k in data)
    assert not np.array_equal(data["x0_train"], vs.make_data(200, 50, 60, seed=1)["x0_train"])
    for name, features in vs.FEATURES.items():
        for split, rows in (("train", 200), ("valid", 50), ("test", 60)):
            assert data[f"{name}_{split}"].shape == (rows, features) and data[f"{name}_{split}"].dtype == np.float32
        assert np.allclose(data[f"{name}_train"].mean(0), 0, atol=1e-5) and np.allclose(
            data[f"{name}_train"].std(0), 1, atol=1e-4
        )
    labels = np.concatenate([data[f"labels_{split}"] for split in ("train", "valid", "test")])
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < vs.CLASSES and len(np.unique(labels)) > 2


def test_the_data_file_is_written_once(tmp_path):
    path = vs.ensure_data((30, 10, 10), tmp_path)
    written = path.stat().st_mtime_ns
    assert vs.ensure_data((30, 10, 10), tmp_path) == path and path.stat().st_mtime_ns == written
    assert set(np.load(path).files) == set(vs.make_data(30, 10, 10))


def fake_mfeat(seed: int = 0) -> dict[str, np.ndarray]:
    """Rows shaped like benchmarks/mfeat.py's file (integer-valued views, a constant feature, 200 of each digit)."""
    rng = np.random.default_rng(seed)
    widths = dict(zip(vs.MFEAT_VIEWS, (216, 76, 64, 6, 240, 47)))
    raw = {view: rng.integers(0, 50, size=(2000, width)).astype(np.float64) for view, width in widths.items()}
    raw["mor"][:, 0] = 7.0  # constant: centred, not divided by 0
    return raw | {"labels": np.repeat(np.arange(10), 200)}


def test_the_six_view_split_is_seeded_disjoint_and_standardised_with_the_training_rows():
    raw = fake_mfeat()
    data = vs.split_mfeat(raw)
    again = vs.split_mfeat(raw)
    assert all(np.array_equal(data[k], again[k]) for k in data)
    assert vs.features_of(data) == {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}
    assert [len(data[f"labels_{split}"]) for split in ("train", "valid", "test")] == list(vs.MFEAT_ROWS)
    # every raw row lands in exactly one split (matched by its pix view, unique with these random integers)
    rows = {tuple(r) for split in ("train", "valid", "test") for r in data[f"pix_{split}"]}
    assert len(rows) == 2000
    training_rows = np.random.default_rng(vs.SEED).permutation(2000)[:1600]  # the split's own training rows
    for view in vs.MFEAT_VIEWS:
        train = data[f"{view}_train"].astype(np.float64)
        assert np.allclose(train.mean(0), 0, atol=1e-5)
        varies = raw[view][training_rows].std(0) > 0
        assert np.allclose(train.std(0)[varies], 1, atol=1e-4) and np.all(train[:, ~varies] == 0)
    assert np.all(data["mor_train"][:, 0] == 0) and np.isfinite(data["mor_test"]).all()
    with pytest.raises(SystemExit, match="2000 rows"):
        vs.split_mfeat({**raw, "labels": raw["labels"][:100]})


def test_our_side_trains_six_views_with_the_sampled_mopoe_kl(tmp_path, restore_threads):
    path = tmp_path / "six.npz"
    split = vs.split_mfeat(fake_mfeat())
    np.savez(path, **{k: v[:300] if k.endswith("_train") else v for k, v in split.items()})
    result = vs.run_ours(
        vs.ChildSpec("infinimodal", "mopoe", str(path), epochs=1, threads=1, latent="gated", mopoe_kl="sampled")
    )
    assert result["model"] == "gated/mopoe" and result["train_rows"] == 300 and 0 <= result["probe_accuracy"] <= 1


def check_result(result: dict, latent: str, aggregator: str) -> None:
    assert (
        result["library"] == "infinimodal"
        and result["model"] == f"{latent}/{aggregator}"
        and result["train_rows"] == 300
    )
    assert result["samples_per_second"] > 0 and 0 < result["seconds"] <= result["fit_seconds"]
    assert 0 <= result["probe_accuracy"] <= 1
    assert result["peak_rss_mib"] >= result["import_rss_mib"] > 0 and result["parameters"] > 0


def test_our_side_trains_embeds_and_probes(tiny_data, restore_threads):
    result = vs.run_ours(vs.ChildSpec("infinimodal", "poe", str(tiny_data), epochs=1, threads=1))
    check_result(result, "gaussian", "poe")


def test_our_side_runs_as_a_child_process(tiny_data):
    spec = vs.ChildSpec("infinimodal", "mopoe", str(tiny_data), epochs=1, threads=1, latent="gated")
    check_result(vs.run_child(Path(sys.executable), spec), "gated", "mopoe")


def test_each_round_runs_the_paired_models_back_to_back_rotating_the_first():
    runs = vs.plan(["poe", "moe", "mopoe"], ["gaussian", "gated"], repeats=2)
    assert len(runs) == 18
    groups = [runs[i : i + 3] for i in range(0, 18, 3)]
    for group in groups:
        assert len({aggregator for _, aggregator, _ in group}) == 1
        assert sorted(library for library, _, _ in group) == ["infinimodal", "infinimodal", "multivae"]
    assert [group[0] for group in groups[:3]] == [
        ("multivae", "poe", ""),
        ("infinimodal", "moe", "gaussian"),
        ("infinimodal", "mopoe", "gated"),
    ]


def test_the_summary_divides_ours_by_multivae_and_sticks_by_our_gaussian():
    def model(sps, fit, peak, over, probe):
        return {
            "samples_per_second": sps,
            "fit_seconds": fit,
            "peak_rss_mib": peak,
            "peak_over_import_mib": over,
            "probe_accuracy": probe,
        }

    models = {
        "multivae/MVAE": model(100, 10, 500, 50, 0.8),
        "infinimodal/gaussian/poe": model(200, 4, 400, 25, 0.9),
        "infinimodal/gated/poe": model(150, 5, 410, 30, 0.85),
    }
    summary = vs.summarise(models, ["poe"], ["gaussian", "gated"])
    assert summary["ours_over_multivae"]["gaussian/poe vs MVAE"] == {
        "samples_per_second": 2.0,
        "fit_seconds_inverse": 2.5,
        "peak_rss": 0.8,
        "peak_over_import": 0.5,
        "probe_accuracy_difference": 0.1,
    }
    assert summary["stick_over_our_gaussian"]["gated/poe"]["samples_per_second"] == 0.75
    combined = vs.combine(
        [{**models["multivae/MVAE"], "seconds": 3.0}, {**model(300, 8, 520, 60, 0.7), "seconds": 1.0}]
    )
    assert combined["samples_per_second"] == 200 and combined["runs_samples_per_second"] == [100, 300]


def test_the_torchvision_stand_in_imports_what_multivae_needs_and_refuses_to_run(tmp_path):
    vs.write_torchvision_stand_in(tmp_path)
    code = (
        "from torchvision import transforms\n"
        "from torchvision.transforms import Resize, ToTensor\n"
        "from torchvision.utils import make_grid, save_image\n"
        "from torchvision.datasets import MNIST, CelebA\n"
        "from torchvision.datasets.utils import download_and_extract_archive\n"
        "from torchvision import models, datasets\n"
        "transform = transforms.Compose([ToTensor()])\n"  # built as a default argument at import time
        "class Mine(MNIST): pass\n"
        "for call in (lambda: make_grid(1), lambda: MNIST('x'), lambda: transform(1), lambda: models.inception_v3()):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as exc:\n"
        "        assert 'import-only stand-in' in str(exc), exc\n"
        "    else:\n"
        "        raise AssertionError('ran')\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_nothing_of_the_torch_family_is_installed_with_its_dependencies():
    assert vs.brings_torch(["numpy-2.4.6", "torch-2.14.1"]) and vs.brings_torch(["nvidia-cublas-cu12-12.8"])
    assert not vs.brings_torch(["scikit-learn-1.9.1", "pydantic-2.14.4", "matplotlib-3.11.2"])
