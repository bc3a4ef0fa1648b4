"""The stick-gated Gaussian family against independent references, and that it learns an ordered latent."""

import json
import math

import mpmath
import numpy as np
import pytest
import scipy.integrate as si
import scipy.stats as st
import torch
from torch.distributions import Beta, kl_divergence

from infinimodal import api
from infinimodal.cli import main
from infinimodal.evaluation.metrics import kl_order_spearman, kl_span
from infinimodal.latents import GatedPosterior, GatedSticks, StableBeta, build_latent, product
from infinimodal.mixture import MixturePosterior

mpmath.mp.dps = 50


def random_posterior(batch=(4,), dims=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, dims)
    return GatedPosterior(
        torch.randn(shape, generator=g, dtype=dtype),
        torch.rand(shape, generator=g, dtype=dtype) + 0.2,
        torch.rand(shape, generator=g, dtype=dtype) * 4 + 1,
        torch.rand(shape, generator=g, dtype=dtype) * 8 + 1,
    )


def test_log_prob_and_kl_against_scipy():
    q, p = random_posterior(seed=1), random_posterior(seed=2)
    z = q.sample()
    log_q = q.log_prob(z).numpy()
    g, v = z[..., :5].numpy(), z[..., 5:].numpy()
    np.testing.assert_allclose(log_q[..., :5], st.norm.logpdf(g, q.loc.numpy(), q.scale.numpy()), rtol=1e-10)
    np.testing.assert_allclose(
        log_q[..., 5:], st.beta.logpdf(v, q.concentration1.numpy(), q.concentration0.numpy()), rtol=1e-10
    )
    kl = kl_divergence(q, p).numpy()
    for i in [0, 3]:
        for d in [0, 4]:
            normal_q, normal_p = (
                st.norm(q.loc[i, d].item(), q.scale[i, d].item()),
                st.norm(p.loc[i, d].item(), p.scale[i, d].item()),
            )
            ref = si.quad(lambda x: normal_q.pdf(x) * (normal_q.logpdf(x) - normal_p.logpdf(x)), -40, 40, limit=200)[0]
            assert kl[i, d] == pytest.approx(ref, rel=1e-7)
            beta_q = st.beta(q.concentration1[i, d].item(), q.concentration0[i, d].item())
            beta_p = st.beta(p.concentration1[i, d].item(), p.concentration0[i, d].item())
            ref = si.quad(lambda x: beta_q.pdf(x) * (beta_q.logpdf(x) - beta_p.logpdf(x)), 0, 1, limit=200)[0]
            assert kl[i, 5 + d] == pytest.approx(ref, rel=1e-6)


def test_the_gate_is_the_remaining_stick_and_decreases():
    family = GatedSticks(latent_dim=6, alpha=3.0).double()
    z = family.rsample(family.prior(), 200)
    code = family.decoder_input(z).numpy()
    g, v = z[..., :6].numpy(), z[..., 6:].numpy()
    gate = np.cumprod(1.0 - v, axis=-1)  # plain products, not the family's log-space cumsum
    np.testing.assert_allclose(code, g * gate, rtol=1e-9, atol=1e-300)
    assert (np.diff(gate, axis=-1) <= 0).all()


def test_representation_and_weights_are_the_posterior_means():
    family = GatedSticks(latent_dim=5, alpha=3.0).double()
    q = random_posterior(batch=(3,), seed=4)
    torch.manual_seed(0)
    draws = family.rsample(q, 200_000)
    codes = family.decoder_input(draws)
    mc = codes.mean(0).numpy()
    se = (codes.std(0) / math.sqrt(len(codes))).numpy()
    assert (np.abs(family.representation(q).numpy() - mc) < 5 * se + 1e-6).all()
    v = draws[..., 5:]
    weights = torch.cat([v, torch.ones_like(v[..., :1])], -1) * torch.cat(
        [torch.ones_like(v[..., :1]), torch.cumprod(1 - v, -1)], -1
    )
    np.testing.assert_allclose(family.expected_weights(q).numpy(), weights.mean(0).numpy(), atol=3e-3)
    # a mixture's representation is its components' average
    mixture = MixturePosterior(
        random_posterior(batch=(3, 2), seed=5), torch.tensor([[0.25, 0.75]] * 3, dtype=torch.float64)
    )
    components = family.representation(mixture.components)
    np.testing.assert_allclose(
        family.representation(mixture).numpy(), (0.25 * components[:, 0] + 0.75 * components[:, 1]).numpy()
    )


def test_kl_per_dimension_sums_the_value_and_the_stick():
    family = GatedSticks(latent_dim=4, alpha=2.0).double()
    q = random_posterior(dims=4, seed=6)
    prior = family.prior()
    per_dim = family.kl_per_dim(q)
    expected = kl_divergence(q.values, prior.values) + kl_divergence(
        Beta(q.concentration1, q.concentration0), Beta(prior.concentration1, prior.concentration0)
    )
    torch.testing.assert_close(per_dim, expected)
    assert per_dim.shape == (4, family.n_dimensions)


def test_product_of_experts_is_exact_for_values_and_sticks():
    a, b = random_posterior(seed=7), random_posterior(seed=8)
    fused = product([a, b])
    precision = a.scale.pow(-2) + b.scale.pow(-2)
    torch.testing.assert_close(fused.scale, precision.rsqrt())
    torch.testing.assert_close(fused.loc, (a.loc * a.scale.pow(-2) + b.loc * b.scale.pow(-2)) / precision)
    torch.testing.assert_close(fused.concentration1, a.concentration1 + b.concentration1 - 1)
    torch.testing.assert_close(fused.concentration0, a.concentration0 + b.concentration0 - 1)


def test_an_untrained_dimension_sits_at_the_prior_and_costs_nothing():
    family = build_latent("gated", latent_dim=3, alpha=4.0)
    q = family.posterior(torch.full((2, family.head_size), -40.0))  # no evidence, zero mean
    q = GatedPosterior(torch.zeros_like(q.loc), q.scale, q.concentration1, q.concentration0)
    assert family.kl_per_dim(q).abs().max() < 1e-6


# --- gate warm-up ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "progress, alpha_t",
    [(0.0, 2.0), (0.25, 2.0**0.75 * 30.0**0.25), (0.5, math.sqrt(60.0)), (1.0, 30.0), (3.0, 30.0), (-1.0, 2.0)],
)
def test_gate_warm_up_moves_the_sticks_prior_from_alpha_start_to_alpha_geometrically(progress, alpha_t):
    family = build_latent("gated", latent_dim=3, alpha=30.0, alpha_start=2.0).double()
    raw = torch.zeros(2, family.head_size, dtype=torch.float64)  # exp evidence: e_a = e_b = 1
    family.warm_up(progress)
    np.testing.assert_allclose(family.prior().concentration0.numpy(), alpha_t, rtol=1e-12)
    np.testing.assert_allclose(family.prior().concentration1.numpy(), 1.0)
    np.testing.assert_allclose(family.posterior(raw).concentration0.numpy(), alpha_t + 1.0, rtol=1e-12)
    # the prior gate E[r_k] = (alpha_t / (1 + alpha_t))^k, which the warm-up closes for late k
    gate = family.representation(
        GatedPosterior(
            torch.ones(3, dtype=torch.float64),
            torch.ones(3, dtype=torch.float64),
            family.prior().concentration1,
            family.prior().concentration0,
        )
    )
    np.testing.assert_allclose(gate.numpy(), (alpha_t / (1 + alpha_t)) ** np.arange(1, 4), rtol=1e-12)
    family.warm_up(1.0)
    assert family.prior().concentration0.tolist() == [30.0] * 3


def test_no_gate_warm_up_when_alpha_start_is_alpha():
    family = build_latent("gated", latent_dim=2, alpha=7.0, alpha_start=7.0)
    family.warm_up(0.0)
    assert family.prior().concentration0.tolist() == [7.0, 7.0]
    assert (
        "warm-up" not in family.describe()
        and "gate warm-up from alpha = 2" in build_latent("gated", latent_dim=2).describe()
    )


def test_training_sees_the_gate_warm_up_and_validation_and_the_saved_model_only_alpha(tmp_path):
    """The plan applies the schedule to training steps (from the step counter, as the KL weight), validates the
    model itself, and the fitted (and reloaded) model is the one at alpha."""
    import lightning as L

    from infinimodal import MultimodalVAE
    from infinimodal.data import load_dataset

    class Record(L.Callback):
        def __init__(self):
            self.train, self.valid = [], []

        def on_train_batch_end(self, trainer, plan, outputs, batch, batch_idx):
            self.train.append(
                (plan.global_step - 1, plan.model.latent.prior().concentration0[0].item(), plan.kl_weight())
            )

        def on_validation_batch_start(self, trainer, plan, batch, batch_idx, dataloader_idx=0):
            self.valid.append(plan.model.latent.prior().concentration0[0].item())

    data = load_dataset("synthetic:shared=2,private=1,features=4,n=400")
    vae = MultimodalVAE(
        data.modalities, latent="gated", aggregator="poe", latent_dim=3, hidden=[8], alpha=30.0, alpha_start=2.0
    )
    record = Record()
    vae.fit(data, epochs=3, batch_size=80, kl_warmup=2, progress=False, out_dir=tmp_path / "run", callbacks=[record])
    steps_per_epoch = math.ceil(len(data.train) / 80)
    assert len(record.train) == 3 * steps_per_epoch
    for step, alpha_t, _ in record.train:
        progress = min(1.0, step / (2 * steps_per_epoch))
        assert alpha_t == pytest.approx(2.0 ** (1 - progress) * 30.0**progress, rel=1e-6)  # the prior is float32
    assert record.train[0][1] == pytest.approx(2.0) and record.train[-1][1] == 30.0
    assert record.valid and set(record.valid) == {30.0}
    assert vae.module.latent.prior().concentration0.tolist() == [30.0] * 3
    vae.save(tmp_path / "saved")
    loaded = MultimodalVAE.load(tmp_path / "saved")
    assert loaded.module.latent.prior().concentration0.tolist() == [30.0] * 3 and loaded.config.alpha_start == 2.0


# --- float64 Beta: the encoder's evidence reaches exp(15) ------------------------------------------------


def mp_beta_kl(a1, b1, a2, b2):
    a1, b1, a2, b2 = (mpmath.mpf(x) for x in (a1, b1, a2, b2))
    lb = lambda a, b: mpmath.loggamma(a) + mpmath.loggamma(b) - mpmath.loggamma(a + b)  # noqa: E731
    return float(
        lb(a2, b2)
        - lb(a1, b1)
        + (a1 - a2) * mpmath.digamma(a1)
        + (b1 - b2) * mpmath.digamma(b1)
        + (a2 - a1 + b2 - b1) * mpmath.digamma(a1 + b1)
    )


def mp_beta_logpdf(v, a, b):
    v, a, b = mpmath.mpf(v), mpmath.mpf(a), mpmath.mpf(b)
    return float(
        (a - 1) * mpmath.log(v)
        + (b - 1) * mpmath.log1p(-v)
        - (mpmath.loggamma(a) + mpmath.loggamma(b) - mpmath.loggamma(a + b))
    )


@pytest.mark.parametrize("evidence", [1e2, 1e4, 1e6, math.exp(15)])
def test_stable_beta_matches_mpmath_at_large_evidence_in_float32(evidence):
    a = torch.tensor([1.0 + evidence, 1.0 + 0.3 * evidence], dtype=torch.float32)
    b = torch.tensor([5.0 + 2.0 * evidence, 5.0 + evidence], dtype=torch.float32)
    q, p = StableBeta(a, b), StableBeta(torch.ones(2), torch.full((2,), 5.0))
    kl = kl_divergence(q, p)
    for i in range(2):
        assert kl[i].item() == pytest.approx(mp_beta_kl(a[i].item(), b[i].item(), 1.0, 5.0), abs=2e-3, rel=1e-6)
    v = torch.tensor(
        [a[0].item() / (a[0].item() + b[0].item()), a[1].item() / (a[1].item() + b[1].item())], dtype=torch.float32
    )
    log_q = q.log_prob(v)
    for i in range(2):
        assert log_q[i].item() == pytest.approx(mp_beta_logpdf(v[i].item(), a[i].item(), b[i].item()), abs=2e-3)
    assert kl.dtype == torch.float32 and log_q.dtype == torch.float32


def test_torch_float32_beta_is_what_stable_beta_replaces():
    evidence = 1e6
    a, b = torch.tensor([1.0 + evidence]), torch.tensor([5.0 + 2 * evidence])
    torch_kl = kl_divergence(Beta(a, b), Beta(torch.ones(1), torch.full((1,), 5.0))).item()
    assert abs(torch_kl - mp_beta_kl(a.item(), b.item(), 1.0, 5.0)) > 0.1  # the cancellation this family avoids


def test_beta_sticks_use_the_stable_beta():
    family = build_latent("beta", truncation=4, alpha=5.0)
    assert isinstance(family.posterior(torch.zeros(2, family.head_size)), StableBeta)
    assert isinstance(family.prior(), StableBeta)


# --- metrics of order ---------------------------------------------------------------------------------


def test_kl_span_and_order_on_hand_made_spectra():
    assert kl_span(np.array([3.0, 2.0, 1.0, 0.0, 0.0])) == 3
    assert kl_span(np.array([0.0, 0.0, 1.0])) == 3
    assert kl_span(np.array([1.0, 0.0, 0.0, 0.001])) == 1  # 0.1 % of the KL at the end is below the 1 % left out
    assert kl_span(np.zeros(4)) == 0
    assert kl_order_spearman(np.array([5.0, 4.0, 3.0, 1.0])) == pytest.approx(-1.0)
    assert kl_order_spearman(np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)
    assert kl_order_spearman(np.ones(3)) is None


def test_a_gated_run_learns_ordered_dimensions(tmp_path):
    """Three tabular modalities from 2 shared + 1 private factors each (5 true dimensions), 16 dimensions:
    the information ends up in the leading dimensions, which a Gaussian latent has no reason to do."""
    out = tmp_path / "gated"
    data = "synthetic:shared=2,private=1,features=8,n=3000"
    common = [
        "--data",
        data,
        "--aggregator",
        "poe",
        "--latent-dim",
        "16",
        "--truncation",
        "fixed",
        "--hidden",
        "64",
        "--epochs",
        "6",
        "--kl-warmup",
        "1",
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--quiet",
    ]
    assert main(["train", *common, "--latent", "gated", "--alpha", "5", "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--iw-samples", "5", "--no-coherence", "--no-baselines", "--quiet"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert 3 <= result["kl_active"] <= 8
    assert result["kl_span_99"] <= result["kl_active"] + 2
    assert result["kl_order_spearman"] < -0.6
    assert len(result["kl_per_dim"]) == 16
    # the gates always leave mass after the last dimension: no sticks_99; the KL split into the values' and the sticks'
    assert "sticks_99" not in result and set(result["kl_parts"]) == {"values", "sticks"}
    vae, config = api.load(out)
    data_set = api.load_run_data(out, config, progress=False)
    batch = data_set.test.batch(np.arange(len(data_set.test)))
    with torch.no_grad():
        mixture = vae.module.posterior(batch["data"], batch["mask"])  # PoE: one component per row
        q, weights = mixture.components, mixture.weights.unsqueeze(-1)
        prior_sticks = torch.distributions.Beta(
            torch.ones(16, dtype=torch.float64), vae.module.latent.stick_prior_b().double()
        )
        sticks = torch.distributions.kl_divergence(
            torch.distributions.Beta(q.sticks.concentration1.double(), q.sticks.concentration0.double()), prior_sticks
        )
        values = torch.distributions.kl_divergence(
            torch.distributions.Normal(q.values.loc, q.values.scale), torch.distributions.Normal(0.0, 1.0)
        )
    assert result["kl_parts"]["sticks"] == pytest.approx(
        float((weights * sticks).sum((-2, -1)).mean()), rel=1e-4, abs=1e-6
    )
    assert result["kl_parts"]["values"] == pytest.approx(float((weights * values).sum((-2, -1)).mean()), rel=1e-4)
    assert sum(result["kl_parts"].values()) == pytest.approx(sum(result["kl_per_dim"]), rel=1e-4)
    assert main(["report", str(out), "--quiet", "--max-rows", "200", "--examples", "2", "--max-dims", "2"]) == 0
    page = (out / "report.html").read_text()
    assert not (out / "figures" / "sticks_99.png").exists()
    assert "the values carry " in page and "How many sticks hold 99 % of E[pi] is not shown" in page
    assert "hold 99 % of the KL" in page  # the per-dimension figure's first k, which sticks_99 chose before


@pytest.mark.parametrize("name", ["gaussian", "beta", "kumaraswamy", "logitnormal", "gated"])
def test_truncated_posteriors_keep_the_leading_dimensions_and_reset_the_rest(name):
    family = build_latent(name, latent_dim=4, truncation=5, alpha=3.0)
    torch.manual_seed(0)
    q = family.posterior(torch.randn(3, 2, family.head_size) * 2 + 1)  # evidence well away from zero
    for posterior in (q, MixturePosterior(q, torch.tensor([[1.0, 3.0]] * 3))):
        cut = family.truncated(posterior, 2)
        kl, kl_cut = family.kl_per_dim(posterior), family.kl_per_dim(cut)
        torch.testing.assert_close(kl_cut[..., :2], kl[..., :2])
        assert kl_cut[..., 2:].abs().max() < 1e-5 and kl[..., 2:].abs().min() > 1e-3


def test_truncation_elbo_against_a_direct_monte_carlo(tmp_path):
    from infinimodal import MultimodalVAE
    from infinimodal.data import load_dataset
    from infinimodal.evaluation.metrics import truncation_elbo

    data = load_dataset("synthetic:shared=2,private=1,features=5,n=600")
    vae = MultimodalVAE(data.modalities, latent="gated", aggregator="poe", latent_dim=4, hidden=[16])
    test = data.test.take(slice(0, 40))
    batch = test.batch(np.arange(40))
    with torch.no_grad():
        # keep nothing: q is the prior, so the bound is E_prior[log p(X | z)], drawn here without the helper
        torch.manual_seed(1)
        z = vae.module.latent.sample_prior(20_000)
        lik = torch.stack(
            [
                vae.module.log_likelihoods(
                    z,
                    {k: v[i].expand(len(z), *v.shape[1:]) for k, v in batch["data"].items()},
                    batch["mask"][i].expand(len(z), -1),
                )
                .sum(-1)
                .mean()
                for i in range(40)
            ]
        )
    torch.manual_seed(2)
    estimate = truncation_elbo(vae.module, test, keep=0, n_samples=2000)
    assert estimate == pytest.approx(float(lik.mean()), abs=0.05 * abs(float(lik.mean())) / 10 + 0.1)
    # keeping every dimension is the untruncated bound (same draws)
    torch.manual_seed(3)
    full = truncation_elbo(vae.module, test, keep=None)
    torch.manual_seed(3)
    assert truncation_elbo(vae.module, test, keep=4) == pytest.approx(full, abs=1e-5)


def test_the_default_model_is_the_stick_gated_latent(tmp_path):
    from infinimodal import MultimodalVAE, api
    from infinimodal.modality import Modality

    config = api.TrainConfig()
    config.validate()
    assert (config.latent, config.aggregator, config.alpha, config.expert) == ("gated", "mopoe", 30.0, "value")
    assert MultimodalVAE([Modality("x", (3,))], hidden=[4]).config.latent == "gated"
    out = tmp_path / "default"
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=300,features=4",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--latent-dim",
                "3",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "config.json").read_text())
    assert record["latent"] == "gated" and record["alpha"] == 30.0 and record["latent_dim"] == 3
    # another family keeps its own default for the shared option
    beta = api.TrainConfig(latent="beta")
    beta.validate()
    assert beta.alpha == 5.0


def test_report_of_a_gated_run_names_its_code_and_order(tmp_path):
    import html as html_module

    out = tmp_path / "gated_report"
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:n=400,features=4,missing=0.2",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--latent-dim",
                "4",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(out), "--iw-samples", "2", "--no-coherence", "--no-baselines", "--quiet"]) == 0
    assert main(["report", str(out), "--quiet"]) == 0
    page = html_module.unescape((out / "report.html").read_text())
    result = json.loads((out / "eval.json").read_text())
    assert f"leading dimensions holding 99 % of the KL</td><td>{result['kl_span_99']} of 4" in page.replace("\n", "")
    assert "E[g r]" in page and "values gated by 4 sticks (alpha = 30" in page


def test_eval_names_the_posterior_family_a_run_really_uses():
    from infinimodal.aggregators import build_aggregator

    kumaraswamy = build_latent("kumaraswamy", truncation=4)
    assert "Beta projection" in kumaraswamy.posterior_description(build_aggregator("mopoe").fuses, 2)
    assert "Beta projection" in kumaraswamy.posterior_description(build_aggregator("poe").fuses, 3)
    assert (
        kumaraswamy.posterior_description(build_aggregator("moe").fuses, 3) == "kumaraswamy"
    )  # a mixture of the experts themselves
    assert (
        kumaraswamy.posterior_description(build_aggregator("poe").fuses, 1) == "kumaraswamy"
    )  # one modality: the SB-VAE posterior
    assert build_latent("gated").posterior_description(True, 3) == "gated"


def test_a_gated_run_saved_before_the_gate_warm_up_reads_as_trained_without_one():
    from infinimodal.config import ModelConfig, TrainConfig

    old = {"latent": "gated", "aggregator": "mopoe", "alpha": 30.0, "latent_dim": 8, "epochs": 3}
    assert TrainConfig.from_dict(old).alpha_start == 30.0 and ModelConfig.from_dict(old).alpha_start == 30.0
    assert TrainConfig.from_dict(old | {"alpha_start": 2.0}).alpha_start == 2.0
    fresh = TrainConfig(latent="gated")
    fresh.validate()
    assert fresh.alpha_start == 2.0


# --- moving stragglers forward ------------------------------------------------------------------------------


def _gated_model(latent_dim=6, seed=0, expert="value"):
    from infinimodal import MultimodalVAE
    from infinimodal.modality import Modality

    vae = MultimodalVAE(
        [Modality("a", (5,)), Modality("b", (4,), "bernoulli")],
        latent="gated",
        aggregator="mopoe",
        latent_dim=latent_dim,
        hidden=[16],
        seed=seed,
        expert=expert,
    )
    module = vae.module
    with torch.no_grad():
        for head in module.heads.values():
            head.bias[
                2 * latent_dim :
            ] = -30.0  # no stick evidence: every row's gates are the prior's, E[r] the same for all
            head.weight[2 * latent_dim :] = 0.0
    return module


def test_swapping_two_dimensions_keeps_what_the_decoders_read_in_mean():
    module = _gated_model()
    torch.manual_seed(0)
    data = {"a": torch.randn(7, 5), "b": torch.bernoulli(torch.full((7, 4), 0.5))}
    mask = torch.ones(7, 2, dtype=torch.bool)
    q = module.posterior(data, mask)
    before = {name: module.decoders[f"mod_{name}"].input_layer()(module.latent.representation(q)) for name in data}
    loc_before = module.unimodal_posteriors(data, mask).loc.clone()
    gates = module.latent.mean_gates(q).detach()
    # the gates are the prior's: (alpha / (1 + alpha))^k (independent reference)
    torch.testing.assert_close(gates, (30.0 / 31.0) ** torch.arange(1, 7, dtype=torch.float32), rtol=1e-5, atol=0)
    scales = module.latent.exchange_scales(q, 1, 4)
    assert scales == pytest.approx(
        (float(gates[4] / gates[1]), float(gates[1] / gates[4])), rel=1e-6
    )  # value experts: the gate ratio
    module.swap_dimensions(1, 4, scales)
    q_after = module.posterior(data, mask)
    after = {name: module.decoders[f"mod_{name}"].input_layer()(module.latent.representation(q_after)) for name in data}
    for name in data:  # E[g r] W: the value moved to a position with another mean gate, its column rescaled to match
        torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-5)
    loc_after = module.unimodal_posteriors(data, mask).loc
    torch.testing.assert_close(loc_after[..., 1], loc_before[..., 4])
    torch.testing.assert_close(loc_after[..., 4], loc_before[..., 1])
    torch.testing.assert_close(loc_after[..., [0, 2, 3, 5]], loc_before[..., [0, 2, 3, 5]])
    module.swap_dimensions(1, 4, (1 / scales[1], 1 / scales[0]))  # back
    torch.testing.assert_close(module.unimodal_posteriors(data, mask).loc, loc_before)


def test_swapping_keeps_what_the_decoders_read_for_code_experts_too():
    # the code expert's decoder input is lambda m r^2 / (1 + lambda r^2): near m wherever the gate is open, so moving it
    # to a position with another gate must not rescale its column by the gate ratio (that changed it by 0.105 of 0.59)
    module = _gated_model(expert="code")
    with torch.no_grad():
        for head in module.heads.values():
            head.bias[6:12] = 3.0  # confident experts (log-precision 3): open gates pass their means
    torch.manual_seed(2)
    data = {"a": torch.randn(200, 5), "b": torch.bernoulli(torch.full((200, 4), 0.5))}
    mask = torch.ones(200, 2, dtype=torch.bool)
    with torch.no_grad():
        q = module.posterior(data, mask)
    layer = module.decoders["mod_a"].input_layer()
    before = (layer(module.latent.representation(q)) - layer.bias).detach()
    scales = module.latent.exchange_scales(q, 1, 4)
    gates = module.latent.mean_gates(q).detach()
    assert abs(scales[0] - 1.0) < 0.03 and abs(float(gates[4] / gates[1]) - 1.0) > 0.09  # not the gate ratio
    module.swap_dimensions(1, 4, scales)
    after = (layer(module.latent.representation(module.posterior(data, mask))) - layer.bias).detach()
    change = float((after - before).abs().mean() / before.abs().mean())
    assert change < 0.005
    module.swap_dimensions(1, 4, (1 / scales[1], 1 / scales[0]))  # back, then the old rule for comparison
    module.swap_dimensions(1, 4, (float(gates[4] / gates[1]), float(gates[1] / gates[4])))
    by_gates = (layer(module.latent.representation(module.posterior(data, mask))) - layer.bias).detach()
    assert float((by_gates - before).abs().mean() / before.abs().mean()) > 5 * change


def test_adam_moments_move_with_their_parameters():
    module = _gated_model()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    torch.manual_seed(1)
    data = {"a": torch.randn(16, 5), "b": torch.bernoulli(torch.full((16, 4), 0.5))}
    module(data, torch.ones(16, 2, dtype=torch.bool)).loss.backward()
    optimizer.step()
    layer = module.decoders["mod_a"].input_layer()
    head = module.heads["mod_a"]
    first, second = (
        optimizer.state[layer.weight]["exp_avg"].clone(),
        optimizer.state[layer.weight]["exp_avg_sq"].clone(),
    )
    head_first = optimizer.state[head.weight]["exp_avg"].clone()
    module.swap_dimensions(0, 3, (0.7 / 1.0, 1.0 / 0.7), optimizer)
    into_0 = 0.7 / 1.0  # the column moving from 3 to 0 is scaled by gates[3] / gates[0]; its gradient by the inverse
    torch.testing.assert_close(optimizer.state[layer.weight]["exp_avg"][:, 0], first[:, 3] / into_0)
    torch.testing.assert_close(optimizer.state[layer.weight]["exp_avg_sq"][:, 0], second[:, 3] / into_0**2)
    torch.testing.assert_close(
        optimizer.state[head.weight]["exp_avg"][[0, 6]], head_first[[3, 9]]
    )  # loc and log-precision rows
    torch.testing.assert_close(optimizer.state[head.weight]["exp_avg"][12:], head_first[12:])  # the sticks stay


def test_a_straggler_is_moved_to_the_first_free_position_and_the_order_restored():
    """Train a small gated model, move one of its used dimensions far back by hand, and let `move_stragglers` find it."""
    from infinimodal import MultimodalVAE
    from infinimodal.data import load_dataset
    from infinimodal.train.callbacks import move_stragglers
    from infinimodal.truncation import EXCHANGE_TOLERANCE, USED_DIMENSION_KL

    data = load_dataset("synthetic:shared=2,private=1,features=6,n=3000")
    vae = MultimodalVAE(data.modalities, latent="gated", aggregator="poe", latent_dim=12, hidden=[64])
    vae.fit(data, epochs=4, batch_size=64, kl_warmup=1, lr=3e-3, progress=False, order_dimensions=False)
    module = vae.module
    batch = data.valid.batch(np.arange(len(data.valid)))

    def used():
        with torch.no_grad():
            return np.flatnonzero(
                (
                    module.latent.kl_per_dim(module.posterior(batch["data"], batch["mask"])).mean(0) > USED_DIMENSION_KL
                ).numpy()
            )

    move_stragglers(
        module, batch["data"], batch["mask"]
    )  # whatever training left out of order (this seed: dimension 7 of 5 used)
    first = used()
    assert len(first) >= 3 and first.tolist() == list(range(len(first)))
    with torch.no_grad():
        scales = module.latent.exchange_scales(module.posterior(batch["data"], batch["mask"]), 1, 10)
    module.swap_dimensions(1, 10, scales)  # a straggler made by hand
    assert used().tolist() == sorted(set(first.tolist()) - {1} | {10})
    moves = move_stragglers(module, batch["data"], batch["mask"])
    assert [(m, t) for m, t, _, _ in moves] == [(11, 2)]
    assert used().tolist() == first.tolist()
    assert moves[0][3] >= moves[0][2] - EXCHANGE_TOLERANCE  # kept only because the ELBO did not drop by more
    assert move_stragglers(module, batch["data"], batch["mask"]) == []  # nothing left to move


def test_training_moves_stragglers_unless_told_not_to(tmp_path):
    from infinimodal import MultimodalVAE
    from infinimodal.data import load_dataset
    from infinimodal.modality import Modality

    data = load_dataset("synthetic:shared=2,private=1,features=6,n=600")
    assert MultimodalVAE(data.modalities, latent="gated", hidden=[8]).module.can_swap_dimensions()
    assert not MultimodalVAE(data.modalities, latent="gaussian", hidden=[8]).module.can_swap_dimensions()
    custom = [
        Modality(m.name, m.shape, m.likelihood, decoder=torch.nn.Sequential(torch.nn.Linear(3, 6)))
        for m in data.modalities
    ]
    assert not MultimodalVAE(
        custom, latent="gated", latent_dim=3, hidden=[8]
    ).module.can_swap_dimensions()  # its input layer is its author's
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic:shared=2,private=1,features=6,n=600",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--latent-dim",
                "3",
                "--no-order-dimensions",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["order_dimensions"] is False


def _pinned_kl_module(monkeypatch, used_positions: list[int], follow: bool = False):
    """An untrained gated module whose per-dimension KL is pinned: `used_positions` are used, and stay where they are
    whatever is exchanged, or (`follow`) move with the exchanged dimensions."""
    from infinimodal import MultimodalVAE
    from infinimodal.data import load_dataset

    data = load_dataset("synthetic:shared=2,private=1,features=6,n=300")
    module = MultimodalVAE(data.modalities, latent="gated", aggregator="poe", latent_dim=6, hidden=[8]).module
    pinned = torch.zeros(6)
    pinned[used_positions] = 1.0
    monkeypatch.setattr(module.latent, "kl_per_dim", lambda q: pinned.expand(2, 6))
    if follow:
        exchange = module.swap_dimensions

        def exchange_and_follow(j, k, *args):  # (scales, optimizer)
            pinned[[j, k]] = pinned[[k, j]]
            return exchange(j, k, *args)

        monkeypatch.setattr(module, "swap_dimensions", exchange_and_follow)
    batch = data.valid.batch(np.arange(len(data.valid)))
    return module, batch


def test_a_straggler_pair_is_exchanged_at_most_once_per_call(monkeypatch):
    # positions 0 and 2 always look used: each exchange of 2 with 1 leaves a straggler at 2 again, which looped
    from infinimodal.train import callbacks

    module, batch = _pinned_kl_module(monkeypatch, [0, 2])
    monkeypatch.setattr(callbacks, "_fixed_draw_elbo", lambda *args: -10.0)
    assert [(m, t) for m, t, _, _ in callbacks.move_stragglers(module, batch["data"], batch["mask"])] == [(3, 2)]


@pytest.mark.parametrize(
    "elbos, kept", [([-10.0, float("nan")], 0), ([-10.0, -10.2, -10.2, -10.4], 1), ([-10.0, -10.1, -10.1, -10.2], 2)]
)
def test_exchanges_that_make_the_elbo_nan_or_cost_more_than_the_tolerance_in_total_are_undone(monkeypatch, elbos, kept):
    from infinimodal.train import callbacks

    module, batch = _pinned_kl_module(monkeypatch, [0, 3, 5], follow=True)  # two stragglers: 5 moves to 1, then 3 to 2
    weights = {name: p.detach().clone() for name, p in module.named_parameters()}
    calls = iter(elbos + [-10.0] * 10)
    monkeypatch.setattr(callbacks, "_fixed_draw_elbo", lambda *args: next(calls))
    moves = callbacks.move_stragglers(module, batch["data"], batch["mask"])
    assert len(moves) == kept  # 0.2 nats each: the second exchange would bring the total to 0.4 > EXCHANGE_TOLERANCE
    if kept == 0:  # undone (up to rounding: the moved column is scaled by a gate ratio and back)
        assert all(torch.allclose(p, weights[name], atol=1e-6) for name, p in module.named_parameters())


def test_the_code_experts_kl_at_the_steps_own_draw_matches_its_integral():
    """`kl_per_dim_at` for experts on the code: the mean over draws z ~ q of KL(q(g | v) || N(0, 1)) at z's stick, and
    the sticks' exact KL, against quadrature over the Beta stick (one dimension: r = 1 - v), scipy's densities only."""
    family = build_latent("gated", latent_dim=1, truncation="fixed", alpha=5.0, expert="code")
    m, lam, a, b = 1.3, 4.0, 2.0, 3.0
    q = family.posterior_class.from_expert(*(torch.tensor([x], dtype=torch.float64) for x in (m, lam, a, b)))
    torch.manual_seed(0)
    z = family.rsample(q, 200_000)
    kl = family.kl_per_dim_at(q, z)  # [draws, 1]: the value's KL at each draw's stick plus the stick's KL

    def value_kl(v: float) -> float:
        r = 1.0 - v
        precision = 1.0 + lam * r * r
        mean, var = lam * m * r / precision, 1.0 / precision
        return 0.5 * (var + mean * mean - 1.0 - math.log(var))

    stick = st.beta(a, b)
    expected_values = si.quad(lambda v: stick.pdf(v) * value_kl(v), 0, 1)[0]
    prior = st.beta(1.0, 5.0)
    expected_stick = si.quad(lambda v: stick.pdf(v) * (stick.logpdf(v) - prior.logpdf(v)), 0, 1)[0]
    assert float(kl.mean()) == pytest.approx(expected_values + expected_stick, rel=3e-3)
    values_only = kl - float(
        kl_divergence(Beta(torch.tensor(a), torch.tensor(b)), Beta(torch.tensor(1.0), torch.tensor(5.0)))
    )
    for i in range(5):  # the value's part is read at each draw's own stick (not at another draw, not at a mean)
        assert float(values_only[i, 0]) == pytest.approx(value_kl(float(z[i, 1])), rel=1e-6)
    value_expert = build_latent("gated", latent_dim=1, truncation="fixed", alpha=5.0)
    qv = value_expert.posterior_class.from_expert(*(torch.tensor([x], dtype=torch.float64) for x in (m, lam, a, b)))
    torch.testing.assert_close(
        value_expert.kl_per_dim_at(qv, value_expert.rsample(qv)), value_expert.kl_per_dim(qv)
    )  # exact: z unused
