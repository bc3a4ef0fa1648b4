"""`--truncation auto`: the latent grows and trims during training (train.callbacks.AdaptTruncation,
MultimodalModule.resize_dimensions)."""

import json

import pytest
import torch

from infinimodal import MultimodalVAE
from infinimodal.cli import main
from infinimodal.data import load_dataset
from infinimodal.modality import Modality
from infinimodal.errors import TrainingInterrupted
from infinimodal.truncation import SPARE_DIMENSIONS, full, next_truncation, too_wide

FAMILIES = ["gated", "beta", "kumaraswamy", "logitnormal"]


def _trained_looking_model(latent: str, aggregator: str, seed: int = 0):
    """A two-modality model with truncation auto whose weights are perturbed away from their initial values (the
    sticks' evidence included), after one Adam step so that the optimiser has state."""
    vae = MultimodalVAE(
        [Modality("a", (5,)), Modality("b", (4,), "bernoulli")],
        latent=latent,
        aggregator=aggregator,
        truncation="auto",
        hidden=[16],
        seed=seed,
    )
    module = vae.module
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    data, mask = _batch(seed)
    module(data, mask).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return module, optimizer


def _batch(seed: int = 0, rows: int = 9):
    generator = torch.Generator().manual_seed(seed + 1)
    data = {
        "a": torch.randn(rows, 5, generator=generator),
        "b": torch.bernoulli(torch.full((rows, 4), 0.5), generator=generator),
    }
    mask = torch.ones(rows, 2, dtype=torch.bool)
    mask[0, 1] = False  # a row without b
    mask[1, 0] = False  # and one without a
    return data, mask


def _pad(z: torch.Tensor, old: int, new: int, fill: torch.Tensor) -> torch.Tensor:
    """Latent draws of an `old`-dimensional model as draws of the `new`-dimensional one: each block of `old` scalars
    (the gated family's values, then its sticks; the sticks of the others) followed by its new dimensions' values `fill`."""
    per = z.shape[-1] // old
    blocks = z.reshape(*z.shape[:-1], per, old)
    extra = fill.reshape(per, 1).expand(*z.shape[:-1], per, new - old)
    return torch.cat([blocks, extra], dim=-1).reshape(*z.shape[:-1], per * new)


def _log_weights(module, q, z, data, mask) -> torch.Tensor:
    """log p(X_observed | z) + log p(z) - log q(z | X) at given draws z: the importance weight, term by term."""
    return module.log_likelihoods(z, data, mask).sum(-1) + module.latent.log_prior(z) - q.log_prob(z)


@pytest.mark.parametrize("latent", FAMILIES)
@pytest.mark.parametrize("aggregator", ["poe", "mopoe", "moe"])
def test_growth_keeps_what_the_model_computes(latent, aggregator):
    module, optimizer = _trained_looking_model(latent, aggregator)
    module.eval()
    data, mask = _batch()
    old = module.latent.n_dimensions
    with torch.no_grad():
        q = module.posterior(data, mask)
        torch.manual_seed(3)
        z = module.latent.rsample(q)
        weights_before = _log_weights(module, q, z, data, mask)
        kl_before = module.latent.kl_per_dim(q)
        means_before = module.decode_mean(z)
    module.resize_dimensions(old + 5, optimizer)
    assert module.latent.n_dimensions == old + 5
    with torch.no_grad():
        q_after = module.posterior(data, mask)
        # a new dimension's draw, anywhere in the prior's support: the decoders ignore it and q matches p there
        fill = (
            torch.tensor([0.7, 0.2]) if latent == "gated" else torch.tensor([0.2 if latent != "logitnormal" else -1.0])
        )
        z_after = _pad(z, old, old + 5, fill)
        weights_after = _log_weights(module, q_after, z_after, data, mask)
        kl_after = module.latent.kl_per_dim(q_after)
        means_after = module.decode_mean(z_after)
    for (
        name
    ) in means_before:  # the decoders read the new dimensions with zero weights: the same outputs (to the last bits
        # of float32, where the wider product sums in another order)
        torch.testing.assert_close(means_after[name], means_before[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(kl_after[..., :old], kl_before, rtol=1e-5, atol=1e-6)
    assert (
        float(kl_after[..., old:].abs().max()) < 1e-6
    )  # the new dimensions sit at the prior (Kumaraswamy's fused: its quadrature)
    # the importance weights at the same draws: equal to about 1e-5 nats (the new experts' evidence exp(-15) in log q - log p)
    torch.testing.assert_close(weights_after, weights_before, rtol=0, atol=1e-4)


def test_growth_and_trimming_keep_the_optimiser_state_of_the_kept_entries():
    module, optimizer = _trained_looking_model("gated", "mopoe")
    head, layer = module.heads["mod_a"], module.decoders["mod_a"].input_layer()
    first = {
        name: optimizer.state[p]["exp_avg"].clone()
        for name, p in (("head", head.weight), ("bias", head.bias), ("layer", layer.weight))
    }
    steps = optimizer.state[head.weight]["step"].clone()
    old = module.latent.n_dimensions
    module.resize_dimensions(old + 3, optimizer)
    head, layer = module.heads["mod_a"], module.decoders["mod_a"].input_layer()
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in module.parameters()}
    state = optimizer.state[head.weight]
    grown = state["exp_avg"].reshape(
        4, old + 3, -1
    )  # four blocks (value mean, value precision, the sticks' two evidences)
    torch.testing.assert_close(grown[:, :old], first["head"].reshape(4, old, -1))
    assert float(grown[:, old:].abs().max()) == 0.0 and torch.equal(state["step"], steps)
    torch.testing.assert_close(optimizer.state[layer.weight]["exp_avg"][:, :old], first["layer"])
    assert float(optimizer.state[layer.weight]["exp_avg"][:, old:].abs().max()) == 0.0
    # the new rows' biases give the prior; the old rows keep theirs
    torch.testing.assert_close(
        head.bias.reshape(4, old + 3)[:, old:], module.latent.prior_head_output()[:, None].expand(4, 3)
    )
    data, mask = _batch()
    module.train()
    module(data, mask).loss.backward()
    optimizer.step()  # Adam steps the resized parameters with their resized state
    before_trim = head.weight.detach().reshape(4, old + 3, -1)[:, :2].clone()
    module.resize_dimensions(2, optimizer)
    head = module.heads["mod_a"]
    torch.testing.assert_close(head.weight.detach().reshape(4, 2, -1), before_trim)
    assert optimizer.state[head.weight]["exp_avg"].shape == head.weight.shape
    assert module.decoders["mod_b"].input_layer().weight.shape[1] == 2 and module.latent.prior_b.shape == (2,)


@pytest.mark.parametrize("fused", [False, True])
def test_grown_entries_take_the_steps_a_fresh_adam_would_take(fused):
    # a run 500 steps old grows its latent; the new entries' moments start at zero, and their steps must be those of an
    # Adam that starts with them (bias correction for their own step count), not 3-6 times larger
    from infinimodal.adam_state import BORN, correct_young_entries

    module, _ = _trained_looking_model("gated", "poe")
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2, fused=fused)
    generator = torch.Generator().manual_seed(5)
    gradients = [torch.randn(200, 1, generator=generator) for _ in range(3)]

    def step(grow_gradient):
        optimizer.zero_grad()
        for p in module.parameters():
            p.grad = torch.full_like(p, 0.01)
        layer = module.decoders["mod_a"].input_layer()
        if grow_gradient is not None:
            layer.weight.grad[:, old:] = grow_gradient[: layer.weight.shape[0]].expand(-1, 4)
        optimizer.step()
        correct_young_entries(optimizer)

    old = module.latent.n_dimensions
    for _ in range(500):
        step(None)
    module.resize_dimensions(old + 4, optimizer)
    layer = module.decoders["mod_a"].input_layer()
    assert (
        float(optimizer.state[layer.weight][BORN][:, old:].min()) == 500.0
        and float(optimizer.state[layer.weight][BORN][:, :old].max()) == 0.0
    )
    fresh = torch.zeros(layer.weight.shape[0], 4, requires_grad=True)
    reference = torch.optim.Adam([fresh], lr=1e-2)
    kept = layer.weight.detach()[:, :old].clone().requires_grad_()  # the old columns: Adam as if nothing had grown
    kept_reference = torch.optim.Adam([kept], lr=1e-2)
    kept_reference.state[kept] = {k: v.clone() for k, v in optimizer.state[layer.weight].items() if k != BORN}
    for name in ("exp_avg", "exp_avg_sq"):
        kept_reference.state[kept][name] = kept_reference.state[kept][name][:, :old].contiguous()
    for gradient in gradients:  # the new columns start at zero, as the fresh tensor does
        step(gradient)
        fresh.grad = gradient[: layer.weight.shape[0]].expand(-1, 4).clone()
        reference.step()
        kept.grad = torch.full_like(kept, 0.01)
        kept_reference.step()
        torch.testing.assert_close(layer.weight.detach()[:, old:], fresh.detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(layer.weight.detach()[:, :old], kept.detach(), rtol=1e-6, atol=1e-8)
    assert float(fresh.detach().abs().max()) > 0.02  # three steps of about lr each, not 3-6 times more


def test_the_rule_grows_when_full_and_trims_only_when_allowed():
    s = SPARE_DIMENSIONS

    def rule(span, current, grow=True, trim=False):
        return next_truncation(span, current, largest=99, can_grow=grow, can_trim=trim)

    assert rule(8, 8) == 16  # every dimension used: doubles
    assert rule(30, 32) == 30 + 2 * s  # full: the used ones and twice the spare ones
    assert rule(8, 8, grow=False) == 8  # not full for long enough
    assert rule(3, 3) == 3 + 2 * s  # to span + 2 spare when that is more than doubling
    assert rule(95, 97) == 99  # capped
    assert rule(99, 99, trim=True) == 99  # at the cap and full: stays
    assert rule(3, 30) == 30  # too wide but not allowed to trim yet
    assert rule(3, 30, trim=True) == 3 + s
    assert rule(3, 3 + s, trim=True) == 3 + s  # the spare dimensions are kept
    assert rule(0, 8, trim=True) == s  # nothing used: the spare ones stay
    assert full(3, 3 + s - 1) and not full(3, 3 + s)
    assert too_wide(3, 3 + 2 * s + 1) and not too_wide(3, 3 + 2 * s)


def _model_using(dimensions: int, used: int, seed: int = 0):
    """A gated truncation-auto model over the synthetic data's three modalities, `dimensions` wide, whose first `used`
    dimensions carry information (heads that read the input, a precise expert, open sticks) and the rest sit at the prior
    (the rows a grown dimension gets); and the data."""
    data = load_dataset("synthetic:shared=2,private=0,features=6,n=600")
    vae = MultimodalVAE(data.modalities, latent="gated", aggregator="poe", truncation="auto", hidden=[16], seed=seed)
    module = vae.module
    module.resize_dimensions(dimensions)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in module.heads.values():
            weight, bias = head.weight.view(4, dimensions, -1), head.bias.view(4, dimensions)
            weight.zero_()
            bias.copy_(module.latent.prior_head_output()[:, None].expand(4, dimensions))
            weight[0, :used] = 2.0 * torch.randn(
                used, weight.shape[-1], generator=generator
            )  # the values' means read the input
            bias[1, :used] = 4.0  # a precise expert
            bias[3, :used] = 3.0  # long remaining sticks (evidence on 1 - v): open gates
    return module, data


class _Trainer:
    """What AdaptTruncation reads of Lightning's trainer."""

    def __init__(self, data, epoch: int) -> None:
        self.current_epoch, self.optimizers = epoch, []
        self.strategy = type(
            "Strategy", (), {"broadcast": staticmethod(lambda obj, src=0: obj), "model": None}
        )()  # one process
        self.datamodule = type("DataModule", (), {"data": data})()


class _Plan:
    """What AdaptTruncation reads of the training plan: the model, the device, the warm-up, and a log of what it logs."""

    def __init__(self, module) -> None:
        self.model, self.device, self.logged = module, torch.device("cpu"), []

    def warmup_progress(self) -> float:
        return 1.0

    def log(self, name, value, **_) -> None:
        self.logged.append((name, value))


def test_the_callback_grows_a_full_latent_after_two_epochs_and_trims_a_wide_one_after_three():
    from infinimodal.train.callbacks import AdaptTruncation
    from infinimodal.truncation import GROW_PATIENCE, TRIM_PATIENCE

    module, data = _model_using(dimensions=8, used=6)
    callback, plan = AdaptTruncation(seed=0), _Plan(module)
    sizes = []
    for epoch in range(GROW_PATIENCE + 1):
        callback.on_train_epoch_start(_Trainer(data, epoch), plan)
        sizes.append(module.latent.n_dimensions)
    assert sizes == [8] * GROW_PATIENCE + [
        6 + 2 * SPARE_DIMENSIONS
    ]  # 6 of 8 used (fewer than 4 free): grown (not before the first epoch)
    logged = dict(plan.logged[-4:])
    assert (
        logged["truncation"] == 14 and logged["truncation_span"] == 6 and logged["truncation_last_kl"] < 1e-6
    )  # the 8th at the prior

    module, data = _model_using(dimensions=30, used=3)
    callback, plan = AdaptTruncation(seed=0), _Plan(module)
    sizes = []
    for epoch in range(1, TRIM_PATIENCE + 2):
        callback.on_train_epoch_start(_Trainer(data, epoch), plan)
        sizes.append(module.latent.n_dimensions)
    assert (
        sizes == [30] * (TRIM_PATIENCE - 1) + [3 + SPARE_DIMENSIONS] * 2
    )  # trimmed to the used ones and the spare ones
    assert callback.state_dict() == {"full_epochs": 0, "wide_epochs": 0}


def _fit(data_name: str, epochs: int, out, resume: bool = False, callbacks=(), hidden: int = 32) -> MultimodalVAE:
    data = load_dataset(data_name)
    vae = MultimodalVAE(data.modalities, latent="gated", aggregator="poe", truncation="auto", hidden=[hidden])
    return vae.fit(
        data,
        epochs=epochs,
        batch_size=64,
        kl_warmup=1,
        lr=3e-3,
        progress=False,
        out_dir=out,
        resume=resume,
        callbacks=callbacks,
    )


def _history(run) -> list[tuple[int, int]]:
    from infinimodal.evaluation.curves import read_curves

    epochs, curves = read_curves(run / "metrics.csv")
    return [(int(e), int(k)) for e, k in zip(epochs, curves["truncation"])]


MANY, FEW = "synthetic:shared=24,private=0,features=32,n=4000", "synthetic:shared=2,private=0,features=16,n=4000"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two small runs, 8 epochs (warm-up 1): 24 shared factors (the 16 starting dimensions are too few) and 2."""
    root = tmp_path_factory.mktemp("auto")
    common = [
        "--latent",
        "gated",
        "--aggregator",
        "poe",
        "--truncation",
        "auto",
        "--hidden",
        "64",
        "--epochs",
        "8",
        "--kl-warmup",
        "1",
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--quiet",
    ]
    for name, data in (("many", MANY), ("few", FEW)):
        assert main(["train", "--data", data, *common, "--out", str(root / name)]) == 0
    return root / "many", root / "few"


@pytest.mark.slow
def test_the_latent_grows_on_data_that_need_it_and_stays_small_on_data_that_do_not(runs):
    many, few = runs
    grown, small = _history(many), _history(few)
    assert grown[0][1] == 16 and small[0][1] == 16  # both start with 16 dimensions
    assert grown[-1][1] > 24  # 24 true factors: it had to grow past 16
    # 2 true factors: a young model's posteriors use every dimension a little (so it may grow after the first epoch), and
    # the latent is trimmed back once they have settled
    assert small[-1][1] <= 2 + 2 * SPARE_DIMENSIONS < grown[-1][1]
    for run, truth in ((many, 24), (few, 2)):
        assert main(["evaluate", str(run), "--iw-samples", "5", "--no-coherence", "--no-baselines", "--quiet"]) == 0
        result = json.loads((run / "eval.json").read_text())
        # the saved model is loaded with its own number of dimensions (the best epoch's)
        assert (
            result["latent_dimensions"] == len(result["kl_per_dim"])
            and result["truncation"] == result["latent_dimensions"] + 1
        )
        assert abs(result["kl_active"] - truth) <= 4


def test_a_resumed_auto_run_continues_from_its_dimensions(tmp_path):
    """Stop a 12-factor run after 3 of 4 epochs (after its growth at the second epoch's start), resume it: the same
    dimensions and weights as the uninterrupted run."""
    import lightning as L

    from infinimodal.runfiles import read_state_dict

    class StopAfter(L.Callback):
        def on_train_epoch_end(self, trainer, plan):
            if trainer.current_epoch + 1 == 3:
                trainer.should_stop = True

    data = "synthetic:shared=12,private=0,features=16,n=800"
    whole, out = tmp_path / "whole", tmp_path / "resumed"
    _fit(data, 4, out=whole)
    assert [k for _, k in _history(whole)][:2] == [16, 32]  # every dimension used after one epoch: doubled
    with pytest.raises(TrainingInterrupted):
        _fit(data, 4, out=out, callbacks=[StopAfter()])
    assert _history(out) == _history(whole)[:3]
    vae = _fit(data, 4, out=out, resume=True)
    assert _history(out) == _history(whole)
    assert vae.module.latent.n_dimensions == read_state_dict(whole / "model.ckpt")["heads.mod_x0.bias"].shape[0] // 4
    resumed = read_state_dict(out / "last.ckpt")
    for name, value in read_state_dict(whole / "last.ckpt").items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0)


def test_truncation_auto_on_the_command_line_and_what_it_refuses(tmp_path, capsys):
    out = tmp_path / "beta"
    data = [
        "--data",
        "synthetic:shared=2,private=0,features=6,n=600",
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--kl-warmup",
        "1",
        "--quiet",
    ]
    assert (
        main(
            [
                "train",
                *data,
                "--latent",
                "beta",
                "--aggregator",
                "mopoe",
                "--truncation",
                "auto",
                "--max-truncation",
                "12",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["truncation"] == "auto" and config["max_truncation"] == 12
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"truncation", "truncation_span", "truncation_last_kl", "truncation_mass_left"} <= set(header)
    assert main(["report", str(out), "--max-rows", "200", "--quiet"]) == 0
    assert (out / "figures" / "truncation.png").is_file()
    assert "Truncation auto" in (out / "report.html").read_text()
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                *data,
                "--latent",
                "beta",
                "--truncation",
                "auto",
                "--decoder-input",
                "logpi",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        != 0
    )
    assert "--truncation auto needs --decoder-input logitv" in capsys.readouterr().err
    assert main(["train", *data, "--latent", "gated", "--truncation", "several", "--out", str(tmp_path / "y")]) != 0
    assert "--truncation must be fixed, auto or an integer" in capsys.readouterr().err


def test_a_custom_decoder_cannot_be_resized_and_says_so():
    from infinimodal.errors import InfinimodalError

    data = load_dataset("synthetic:shared=2,private=0,features=6,n=600")
    custom = [
        Modality(m.name, m.shape, m.likelihood, decoder=torch.nn.Sequential(torch.nn.Linear(16, 6)))
        for m in data.modalities
    ]
    vae = MultimodalVAE(custom, latent="gated", truncation="auto", hidden=[8])
    with pytest.raises(InfinimodalError, match="default decoders"):
        vae.fit(data, epochs=1, progress=False)


SAME_WEIGHTS_ON_EVERY_RANK = """
import sys
import lightning as L
import torch
from infinimodal import MultimodalVAE
from infinimodal.data import load_dataset

class SameWeights(L.Callback):
    # after every epoch (and so after the growth at the second epoch's start): every process holds rank 0's weights
    def on_train_epoch_end(self, trainer, plan):
        flat = torch.cat([p.detach().reshape(-1) for p in plan.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        assert torch.equal(gathered[0], gathered[1]), (trainer.current_epoch, (gathered[0] - gathered[1]).abs().max())
        sizes.append(plan.model.latent.n_dimensions)

sizes = []
data = load_dataset("synthetic:shared=12,private=0,features=16,n=800")
vae = MultimodalVAE(data.modalities, hidden=[32], seed=0)
vae.fit(data, epochs=3, batch_size=64, kl_warmup=1, progress=False, out_dir=sys.argv[1], devices=2, strategy="ddp",
        accelerator="cpu", callbacks=[SameWeights()])
if vae.module.latent.n_dimensions == 16 or sizes[0] != 16 or sizes[-1] == 16:
    raise SystemExit(f"expected a growth from 16 dimensions, got {sizes}")
"""


def test_the_default_latent_grows_under_ddp_and_every_process_keeps_the_same_weights(tmp_path):
    """--truncation auto (the default) on two CPU processes: rank 0 decides, every process resizes, and the rebuilt
    DDP reducer keeps the grown parameters' gradients in step (a stale reducer would leave them per process)."""
    import subprocess
    import sys

    script = tmp_path / "same_weights.py"  # a file: Lightning starts the second process by running it again
    script.write_text(SAME_WEIGHTS_ON_EVERY_RANK)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_default_latent_adapts_its_size_and_latent_dim_bounds_it():
    """No latent option: the gated family with truncation auto, 16 dimensions to start, at most --latent-dim (50)."""
    from infinimodal.config import ModelConfig

    modalities = [Modality("a", (5,)), Modality("b", (4,), "bernoulli")]
    default = MultimodalVAE(modalities, hidden=[8]).module.latent
    assert (
        ModelConfig().latent == "gated"
        and default.adaptive
        and (default.n_dimensions, default.max_dimensions) == (16, 50)
    )
    bounded = MultimodalVAE(modalities, latent_dim=8, hidden=[8]).module.latent
    assert bounded.adaptive and (bounded.n_dimensions, bounded.max_dimensions) == (8, 8)
    assert MultimodalVAE(modalities, latent_dim=30, max_truncation=21, hidden=[8]).module.latent.max_dimensions == 20
    fixed = MultimodalVAE(modalities, latent_dim=30, truncation="fixed", hidden=[8]).module.latent
    assert not fixed.adaptive and fixed.n_dimensions == 30
    with pytest.raises(
        ValueError, match="truncation='fixed'"
    ):  # a custom decoder made for 50 inputs is told why it gets 16
        MultimodalVAE([Modality("a", (5,), decoder=torch.nn.Linear(50, 5))], hidden=[8])
