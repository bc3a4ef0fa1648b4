"""The information term for unlabelled rows (`--infomax`): its mutual information against scipy, which rows it reads,
that it trains confident and balanced imputations, and its command-line contract; both label terms' warm-up ramp."""

import json

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy

from infinimodal import MultimodalVAE, api
from infinimodal.cli import main
from infinimodal.data import load_dataset
from infinimodal.semisupervised import TrainingObjective, information_term, mutual_information


def _reference_information(logits: np.ndarray) -> float:
    p = softmax(logits.astype(np.float64), axis=1)
    return float(entropy(p.mean(0)) - np.mean([entropy(row) for row in p]))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e4])
def test_mutual_information_matches_scipy_from_flat_to_saturated_logits(scale):
    rng = np.random.default_rng(int(np.log10(scale) + 10))
    logits = rng.normal(size=(50, 7)) * scale
    ours = mutual_information(torch.log_softmax(torch.from_numpy(logits), dim=1))
    assert torch.isfinite(ours)
    assert float(ours) == pytest.approx(_reference_information(logits), abs=1e-9)


def test_mutual_information_edges():
    same = torch.log_softmax(torch.randn(1, 5).expand(40, 5), dim=1)
    assert float(mutual_information(same)) == pytest.approx(0.0, abs=1e-6)  # one belief for every row: nothing learned
    one_hot = torch.full((6, 3), -1e4).scatter(1, torch.tensor([[0], [1], [2], [0], [1], [2]]), 0.0)
    assert float(mutual_information(torch.log_softmax(one_hot, 1))) == pytest.approx(
        np.log(3), abs=1e-6
    )  # its maximum, log C
    two = torch.log_softmax(torch.tensor([[50.0, -50.0], [-50.0, 50.0]]), 1)  # K = 2 classes, certain and balanced
    assert float(mutual_information(two)) == pytest.approx(np.log(2), abs=1e-6)


def _labelled_batch(latent="gated"):
    data = load_dataset("synthetic:n=300,features=4,labels=0.3")
    batch = data.train.batch(np.arange(64))
    vae = MultimodalVAE(data.modalities, latent=latent, aggregator="mopoe", latent_dim=3, hidden=[8])
    return vae.module, batch["data"], batch["mask"]


def test_the_information_term_reads_the_unlabelled_rows_only():
    module, data, mask = _labelled_batch()
    module.train()
    unlabelled = (~mask[:, 3] & mask[:, :3].any(1)).nonzero().squeeze(-1)
    assert 2 <= len(unlabelled) < 64
    torch.manual_seed(5)
    term = information_term(module, data, mask, {"label": 4.0})
    # the same draw by hand: z from the unlabelled rows' posterior as imputation conditions on it (the product of their
    # observed experts), the label decoder's classes, scipy's information
    torch.manual_seed(5)
    chosen = {k: v.index_select(0, unlabelled) for k, v in data.items()}
    z = module.latent.rsample(module.conditional_posterior(chosen, mask.index_select(0, unlabelled)))
    logits = module.class_logits("label", z).detach().double().numpy()
    assert term.item() == pytest.approx(
        4.0 * len(unlabelled) / 64 * _reference_information(logits), rel=1e-4
    )  # float32 against float64
    module.zero_grad()
    term.backward()
    head = module.heads["mod_label"]
    assert head.weight.grad is None or head.weight.grad.abs().max() == 0  # no unlabelled row has a label to encode
    assert (
        module.heads["mod_x0"].weight.grad.abs().max() > 0
        and module.decoders["mod_label"].input_layer().weight.grad.abs().max() > 0
    )
    # labelled rows change nothing: every row labelled gives no term
    labelled = mask.clone()
    labelled[:, 3] = True
    assert float(information_term(module, data, labelled, {"label": 4.0})) == 0.0


def test_the_information_term_is_added_by_the_training_objective_only():
    module, data, mask = _labelled_batch()
    module.train()
    torch.manual_seed(2)
    training = TrainingObjective(module, infomax={"label": 3.0})(module, data, mask)
    torch.manual_seed(2)
    scoring = module(data, mask)  # the model itself: what validation and evaluation score
    torch.testing.assert_close(training.elbo, scoring.elbo)
    assert training.loss.item() < scoring.loss.item()  # information (>= 0) is subtracted from the loss in training
    torch.manual_seed(2)
    assert TrainingObjective(module)(module, data, mask).loss.item() == pytest.approx(scoring.loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="x0 is not categorical"):
        TrainingObjective(module, infomax={"x0": 1.0})
    with pytest.raises(ValueError, match="not modalities of this model"):
        TrainingObjective(module, infomax={"y": 1.0})


@pytest.mark.parametrize("term, sign", [("infomax", -1.0), ("vat", 1.0)], ids=["information", "smoothness"])
def test_the_terms_ramp_in_with_the_warm_up(term, sign):
    # at progress p the loss moves by p times the term (the same draws with and without it; a Gaussian latent, whose
    # posterior does not itself change with the warm-up as the gated family's prior does); in float64, for the
    # smoothness term is small beside the ELBO. The information term (>= 0) is subtracted, the divergence added.
    module, data, mask = _labelled_batch("gaussian")
    module = module.double()
    data = {k: v.double() for k, v in data.items()}
    module.train()
    gaps = {}
    for progress in (0.0, 0.5, 1.0):
        module.warm_up(progress)
        losses = []
        for weights in ({}, {"label": 3.0}):
            objective = TrainingObjective(module, **{term: weights})
            torch.manual_seed(7)
            losses.append(objective(module, data, mask, warm_up=progress).loss.item())
        gaps[progress] = sign * (losses[1] - losses[0])
    assert gaps[0.0] == 0.0 and gaps[1.0] > 0
    assert gaps[0.5] == pytest.approx(0.5 * gaps[1.0], rel=1e-3)


def _imputed_classes(vae, split):
    hidden = {name: values for name, values in split.arrays.items()}
    mask = split.mask.copy()
    mask[:, -1] = False
    probabilities = vae.impute(api.Split(hidden, mask, split.labels))["label"]
    return probabilities


def test_training_with_the_information_term_makes_unlabelled_rows_confident_and_balanced():
    data = load_dataset("synthetic:n=1500,features=4,labels=0.05")
    unlabelled = ~data.train.mask[:, -1]
    results = {}
    for beta in (None, 20.0):
        vae = MultimodalVAE(data.modalities, latent="gated", aggregator="mopoe", latent_dim=4, hidden=[32], seed=0)
        vae.fit(
            data,
            epochs=6,
            batch_size=100,
            kl_warmup=2,
            progress=False,
            predict={"label": 10.0},
            infomax={"label": beta} if beta else None,
        )
        p = _imputed_classes(vae, data.train)[unlabelled]
        results[beta] = (float(entropy(p, axis=1).mean()), float(entropy(p.mean(0))))
    plain, informed = results[None], results[20.0]
    # (measured: mean entropy 1.36 without the term, 1.12 with it, of log 4 = 1.39; the classes of these data are a
    # linear cut through a Gaussian, with no gap between them for the term to find, so only confidence is asked here)
    assert informed[0] < plain[0] - 0.1  # confident classes for the unlabelled rows
    assert informed[1] > 0.85 * np.log(data.modalities[-1].shape[0])  # and all of the classes in use, not one


def test_infomax_is_recorded_and_checked(tmp_path, capsys):
    out = tmp_path / "infomax"
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
                "--infomax",
                "label=5",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["infomax"] == {"label": 5.0}
    for args, problem in (
        (["--data", "synthetic:n=400,features=4", "--infomax", "label=2"], "--infomax given for label"),
        (["--data", "synthetic:n=400,features=4,labels=0.3", "--infomax", "x0=2"], "x0 is not categorical"),
    ):
        assert main(["train", *args, "--epochs", "1", "--quiet", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err
