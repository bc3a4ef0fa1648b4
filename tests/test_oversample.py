"""`--oversample MODALITY=K`: every training batch gets K rows where a rarely observed modality (a label) is
observed, every row still comes once an epoch, and the option's contract."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from infinimodal import MultimodalVAE, api
from infinimodal.cli import main
from infinimodal.data import load_dataset
from infinimodal.errors import InfinimodalError
from infinimodal.train.data import APPENDED_ROWS, MultimodalDataModule, OversampledShuffle


@pytest.mark.parametrize(
    "n, batch, extra, labelled", [(1000, 100, 20, 13), (1003, 100, 7, 250), (50, 100, 3, 1), (10, 3, 2, 4)]
)
def test_each_block_of_a_batch_is_followed_by_oversampled_rows(n, batch, extra, labelled):
    rows = np.sort(np.random.default_rng(0).choice(n, labelled, replace=False))
    sampler = OversampledShuffle(n, rows, batch, extra, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler)
    blocks = -(-n // batch)
    plain, added = [], []
    for b in range(blocks):
        start = b * (batch + extra)
        size = min(batch, n - b * batch)
        plain += order[start : start + size]
        added += order[start + size : start + size + extra]
        assert len(order[start + size : start + size + extra]) == extra  # every batch, the last one too
    assert sorted(plain) == list(range(n))  # every row once an epoch
    assert set(added) <= set(rows.tolist()) and len(added) == blocks * extra
    counts = Counter(added)
    if len(added) >= len(rows):
        assert (
            max(counts.values()) - min(counts[r] for r in rows.tolist()) <= 1
        )  # drawn evenly: successive permutations
    # the same epoch gives the same order; another epoch another
    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order or n <= 1


def test_the_sampler_refuses_a_modality_never_observed():
    with pytest.raises(InfinimodalError, match="no training row"):
        OversampledShuffle(10, np.array([], dtype=int), 5, 2, seed=0)


def test_training_batches_carry_the_oversampled_labels():
    data = load_dataset("synthetic:n=1000,features=4,labels=0.02")
    label = data.train.mask[:, -1]
    assert 0 < label.sum() < 30
    loader = MultimodalDataModule(data, batch_size=50, seed=0, oversample=("label", 10)).train_dataloader()
    batches = list(loader)
    assert len(batches) == -(-len(data.train) // 50)
    for batch in batches:
        assert int(batch["mask"][:, -1].sum()) >= 10  # the ten added rows have the label
        assert batch["mask"].shape[0] == 60 or batch is batches[-1]
        assert batch[APPENDED_ROWS] == 10 and bool(batch["mask"][-10:, -1].all())  # marked: the last ten
    plain = list(MultimodalDataModule(data, batch_size=50, seed=0).train_dataloader())
    assert all(APPENDED_ROWS not in b for b in plain)
    assert sum(int(b["mask"][:, -1].sum()) for b in plain) == int(label.sum())  # without the option: once an epoch


def test_the_training_elbo_of_metrics_csv_counts_each_row_once_not_the_appended_rows(tmp_path, monkeypatch):
    import pandas as pd

    from infinimodal.model import MultimodalModule

    trained = []  # each training step's per-row ELBO and its batch's mask, as the model returned them
    forward = MultimodalModule.forward

    def recording_forward(self, data, mask, kl_weight=1.0, weights=None):
        out = forward(self, data, mask, kl_weight, weights)
        if torch.is_grad_enabled():
            trained.append((out.elbo.detach().double(), mask[:, -1].clone()))
        return out

    monkeypatch.setattr(MultimodalModule, "forward", recording_forward)
    # a label on 2 % of the rows, 10 of them appended to each batch of 60 (the last of 20): a seventh of what is trained on
    config = api.TrainConfig(
        data="synthetic:n=1000,features=4,labels=0.02",
        epochs=1,
        hidden=[16],
        latent_dim=3,
        batch_size=60,
        oversample={"label": 10},
        weights={"label": 50.0},
        seed=0,
    )
    out = api.train(config, tmp_path / "run", progress=False)
    logged = pd.read_csv(out / "metrics.csv").dropna(subset=["train_elbo"])["train_elbo"].item()
    assert (
        len(trained) == 14 and len(trained[-1][0]) == 30
    )  # 800 training rows in 13 blocks of 60 and one of 20, each with 10 more
    counted = torch.cat([elbo[:-10] for elbo, _ in trained])
    assert len(counted) == 800 and sum(int(labelled[:-10].sum()) for _, labelled in trained) == 16
    assert logged == pytest.approx(counted.mean().item(), rel=1e-5)
    everything = torch.cat([elbo for elbo, _ in trained]).mean().item()
    assert abs(everything - counted.mean().item()) > 1e-3  # the appended rows would have moved it


def test_oversample_is_recorded_and_checked(tmp_path, capsys):
    out = tmp_path / "over"
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=400,features=4,labels=0.05",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--latent-dim",
                "3",
                "--predict",
                "label=10",
                "--oversample",
                "label=5",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["oversample"] == {"label": 5}
    base = [
        "--data",
        "synthetic:n=400,features=4,labels=0.05",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "x"),
    ]
    for args, problem in (
        (["--data", "synthetic:n=400,features=4", "--oversample", "label=2"], "--oversample given for label"),
        ([*base, "--oversample", "label=2", "--oversample", "x0=2"], "--oversample takes one modality"),
        ([*base, "--oversample", "label=2", "--devices", "2"], "--oversample trains on one device"),
    ):
        assert main(["train", *args, "--epochs", "1", "--quiet", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err
    with pytest.raises(SystemExit):  # argparse's own one-line usage error
        main(["train", *base, "--oversample", "label=1.5"])
    assert "positive whole number of rows" in capsys.readouterr().err


def test_fit_refuses_a_modality_with_no_observed_training_row():
    data = load_dataset("synthetic:n=300,features=4,labels=0.1")
    data.train.mask[:, -1] = False
    vae = MultimodalVAE(data.modalities, latent_dim=3, hidden=[8])
    with pytest.raises(InfinimodalError, match="--oversample label: no training row has it observed"):
        vae.fit(data, epochs=1, progress=False, oversample={"label": 4})
    with pytest.raises(InfinimodalError, match="positive whole numbers"):
        vae.fit(data, epochs=1, progress=False, oversample={"x0": 0})
    assert api.TrainConfig(oversample={"label": 3}).oversample == {"label": 3}


def test_the_terms_round_trip_through_config_json_and_old_records_load(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=400,features=4,labels=0.05",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--latent-dim",
                "3",
                "--predict",
                "label=10",
                "--vat",
                "label=2",
                "--vat-radius",
                "0.3",
                "--oversample",
                "label=4",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "config.json").read_text())
    config = api.TrainConfig.from_dict(record)  # what --resume and load read
    config.validate()
    assert (config.oversample, config.vat, config.vat_radius, config.predict) == (
        {"label": 4},
        {"label": 2.0},
        0.3,
        {"label": 10.0},
    )
    assert api.load(out)[1].oversample == {"label": 4}
    older = {
        k: v for k, v in record.items() if k not in ("vat", "vat_radius", "oversample")
    }  # a run from before these options
    config = api.TrainConfig.from_dict(older)
    config.validate()
    assert (config.oversample, config.vat) == ({}, {})


def test_vat_radius_alone_is_refused(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=400,features=4,labels=0.05",
                "--epochs",
                "1",
                "--vat-radius",
                "0.5",
                "--quiet",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "give --vat too" in capsys.readouterr().err


def test_compare_reads_whole_numbers_for_oversample():
    from tests.test_benchmarks import load_script

    parse = load_script("compare").parse_settings
    assert parse(["oversample=label:20", "vat=label:3", "likelihoods=x0:laplace"]) == {
        "oversample": {"label": 20},
        "vat": {"label": 3.0},
        "likelihoods": {"x0": "laplace"},
    }
    with pytest.raises(SystemExit, match="takes int values"):
        parse(["oversample=label:2.5"])
