"""The multimodal module with every latent family and aggregator: training steps, bounds against exact
marginals, missing modalities, DReG, mixed precision."""

import itertools
import math

import numpy as np
import pytest
import scipy.integrate as si
import torch
from torch import Tensor
from torch.distributions import kl_divergence

from infinimodal.aggregators import AGGREGATORS, MoE, MoPoE, PoE, build_aggregator
from infinimodal.latents import DECODER_INPUTS, LATENT_FAMILIES, STICK_FAMILIES, build_latent
from infinimodal.modality import Modality
from infinimodal.model import MultimodalModule

MODALITIES = [
    Modality("bits", (12,), "bernoulli"),
    Modality("values", (5,), "gaussian"),
    Modality("image", (1, 8, 8), "laplace"),
]


def latent(family: str, **settings):
    defaults = {"truncation": 5, "alpha": 3.0, "latent_dim": 4}  # each family takes the settings it has
    return build_latent(family, **(defaults | settings))


def small_model(family: str, aggregator: str = "mopoe", modalities=MODALITIES, **settings) -> MultimodalModule:
    return MultimodalModule(
        modalities, latent(family, **settings), build_aggregator(aggregator, moe_samples=3), hidden=[16]
    )


def batch(n=32, seed=0, modalities=MODALITIES):
    g = torch.Generator().manual_seed(seed)
    data = {}
    for m in modalities:
        if m.likelihood == "bernoulli":
            data[m.name] = torch.bernoulli(torch.full((n, *m.shape), 0.3), generator=g)
        else:
            data[m.name] = torch.rand((n, *m.shape), generator=g)
    mask = torch.ones(n, len(modalities), dtype=torch.bool)
    return data, mask


@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_one_training_step_changes_every_weight(family, aggregator):
    torch.manual_seed(0)
    model = small_model(family, aggregator)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point and "prior" not in k}
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    data, mask = batch()
    mask[::3, 1] = False  # some rows miss a modality
    out = model(data, mask)
    assert (
        torch.isfinite(out.loss) and out.elbo.shape == (32,) and out.kl_per_dim.shape == (32, model.latent.n_dimensions)
    )
    out.loss.backward()
    optimiser.step()
    after = model.state_dict()
    unchanged = [k for k, v in before.items() if torch.equal(v, after[k])]
    assert not unchanged, f"not updated: {unchanged}"


class RecordingEncoder(torch.nn.Module):
    """An encoder that remembers what it was given."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(n_features, 3)
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.layer(x)


@pytest.mark.parametrize("likelihood", ["poisson", "negative_binomial"])
def test_count_encoders_read_log_one_plus_counts_and_others_read_values(likelihood):
    counts, values = (
        Modality("counts", (6,), likelihood, encoder=RecordingEncoder(6)),
        Modality("values", (5,), "gaussian", encoder=RecordingEncoder(5)),
    )
    model = MultimodalModule([counts, values], latent("gated"), build_aggregator("mopoe"), hidden=[16])
    x = torch.tensor(np.random.default_rng(0).integers(0, 1500, size=(8, 6)), dtype=torch.float32)
    y = torch.randn(8, 5)
    mask = torch.ones(8, 2, dtype=torch.bool)
    mask[::2, 0] = False  # the encoder sees only the observed rows
    model({"counts": x, "values": y}, mask)
    np.testing.assert_allclose(counts.encoder.seen.numpy(), np.log1p(x.numpy()[1::2]), rtol=1e-6)
    np.testing.assert_array_equal(values.encoder.seen.numpy(), y.numpy())


@pytest.mark.parametrize("decoder_input", DECODER_INPUTS)
@pytest.mark.parametrize("family", STICK_FAMILIES)
def test_decoder_inputs_for_every_stick_family(family, decoder_input):
    model = small_model(family, decoder_input=decoder_input)
    out = model(*batch())
    assert torch.isfinite(out.loss)
    assert model.latent.decoder_input_size == (4 if decoder_input == "logitv" else 5)
    torch.testing.assert_close(out.elbo, out.reconstruction - out.kl)
    assert (out.kl_per_dim >= -1e-5).all()


@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
@pytest.mark.parametrize("family", STICK_FAMILIES)
def test_two_sticks_minimum_truncation(family, aggregator):
    model = small_model(family, aggregator, truncation=2)
    out = model(*batch())
    assert out.kl_per_dim.shape == (32, 1) and torch.isfinite(out.loss)


@pytest.mark.parametrize("aggregator", ["poe", "mopoe"])
def test_kl_weight_scales_only_the_kl(aggregator):
    torch.manual_seed(0)
    model = small_model("beta", aggregator, modalities=MODALITIES[:1])
    data, mask = batch(modalities=MODALITIES[:1])
    torch.manual_seed(1)
    full = model(data, mask, kl_weight=1.0)
    torch.manual_seed(1)
    none = model(data, mask, kl_weight=0.0)
    torch.testing.assert_close(none.loss, -full.reconstruction.mean())
    torch.testing.assert_close(full.loss, -(full.reconstruction - full.kl).mean())


# --- bounds against the exact marginal ----------------------------------------------------------------


ONE_D = {
    "gaussian": ({"latent_dim": 1}, (-10.0, 10.0)),
    "beta": ({"truncation": 2, "alpha": 3.0}, (0.0, 1.0)),
    "kumaraswamy": ({"truncation": 2, "alpha": 3.0}, (0.0, 1.0)),
    "logitnormal": ({"truncation": 2, "alpha": 3.0}, (-25.0, 15.0)),  # the latent is the stick's logit
    "gated": ({"latent_dim": 1, "alpha": 3.0}, ((-10.0, 10.0), (0.0, 1.0))),  # one value g and one stick v
}


def exact_log_marginal(model, data, mask, lo, hi, n=100_001) -> np.ndarray:
    """log p(X_observed) = log int p(z) prod_m p(x_m | z) dz for a one-dimensional latent, by Simpson's rule;
    for a two-dimensional one ((lo, hi) pairs per dimension) by Simpson's rule on a product grid."""
    if isinstance(lo, tuple):
        return exact_log_marginal_2d(model, data, mask, lo, hi)
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)[1:-1]
    z = grid.view(-1, 1)
    with torch.no_grad():
        log_joint = model.latent.prior().log_prob(z).sum(-1).unsqueeze(1).expand(-1, mask.shape[0]).clone()
        for m, name in enumerate(model.names):
            obs = model.observation(name, z)  # [n, ...] over the grid
            x = data[name].unsqueeze(1)  # [batch, 1, ...] -> broadcast against the grid below
            lp = torch.stack([obs.log_prob(x[b].expand(len(z), *x.shape[2:])) for b in range(mask.shape[0])], dim=1)
            log_joint += mask[:, m].double() * lp
    peak = log_joint.max(0).values
    integral = si.simpson(torch.exp(log_joint - peak).numpy(), x=grid.numpy(), axis=0)
    return np.log(integral) + peak.numpy()


def exact_log_marginal_2d(model, data, mask, first, second, n=1201) -> np.ndarray:
    axes = [torch.linspace(lo, hi, n, dtype=torch.float64)[1:-1] for lo, hi in (first, second)]
    z = torch.cartesian_prod(*axes)  # [(n-2)^2, 2]
    with torch.no_grad():
        log_joint = model.latent.prior().log_prob(z).sum(-1).unsqueeze(1).expand(-1, mask.shape[0]).clone()
        for m, name in enumerate(model.names):
            obs = model.observation(name, z)
            for b in range(mask.shape[0]):
                if mask[b, m]:
                    log_joint[:, b] += obs.log_prob(data[name][b].expand(len(z), *data[name].shape[1:]))
    peak = log_joint.max(0).values
    values = torch.exp(log_joint - peak).numpy().reshape(n - 2, n - 2, -1)
    inner = si.simpson(values, x=axes[1].numpy(), axis=1)
    return np.log(si.simpson(inner, x=axes[0].numpy(), axis=0)) + peak.numpy()


def fit_encoders(model, data, mask, steps=200):
    """Encoder-only ELBO steps, so the proposals are sensible ones."""
    params = [p for name, p in model.named_parameters() if name.startswith(("encoders", "heads"))]
    optimiser = torch.optim.Adam(params, lr=3e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        model(data, mask).loss.backward()
        optimiser.step()


TWO = [Modality("a", (6,), "bernoulli"), Modality("b", (3,), "gaussian")]


@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_importance_sampled_log_likelihood_matches_the_exact_marginal(family, aggregator):
    torch.manual_seed(0)
    settings, bounds = ONE_D[family]
    model = MultimodalModule(TWO, build_latent(family, **settings), build_aggregator(aggregator), hidden=[8]).double()
    data = {
        "a": torch.bernoulli(torch.full((3, 6), 0.4, dtype=torch.float64)),
        "b": torch.randn(3, 3, dtype=torch.float64),
    }
    mask = torch.tensor([[True, True], [True, False], [False, True]])  # complete, and each modality alone
    exact = exact_log_marginal(model, data, mask, *bounds)
    fit_encoders(model, data, mask)
    torch.manual_seed(3)
    estimate = model.log_likelihood(data, mask, n_samples=20_000, chunk=5_000)
    np.testing.assert_allclose(estimate.numpy(), exact, atol=0.03)
    # the aggregator's bound sits below the marginal (4000 draws at once: the rows repeated)
    repeats = 4000
    with torch.no_grad():
        elbos = model({k: v.repeat(repeats, 1) for k, v in data.items()}, mask.repeat(repeats, 1)).elbo.view(repeats, 3)
    mean, standard_error = elbos.mean(0).numpy(), (elbos.std(0) / math.sqrt(repeats)).numpy()
    assert (mean <= exact + 4 * standard_error + 1e-3).all(), (mean - exact) / standard_error


# --- missing modalities ---------------------------------------------------------------------------


class Spy(torch.nn.Module):
    """An encoder that records every input it sees."""

    def __init__(self, shape, width=16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), width), torch.nn.ReLU())
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
@pytest.mark.parametrize("family", ["gaussian", "beta", "kumaraswamy"])
def test_missing_rows_never_reach_an_encoder_nor_a_likelihood(family, aggregator):
    mods = [Modality(m.name, m.shape, m.likelihood, encoder=Spy(m.shape)) for m in MODALITIES]
    torch.manual_seed(0)
    model = small_model(family, aggregator, modalities=mods)
    data, mask = batch()
    mask[1::2, 0] = False
    mask[::4, 2] = False
    mask[5] = torch.tensor([False, True, False])  # all but one modality missing
    poisoned = {k: v.clone() for k, v in data.items()}
    for m, name in enumerate(model.names):
        poisoned[name][~mask[:, m]] = float("nan")
    results = []
    for values in (data, poisoned):
        for spy in (m.encoder for m in mods):
            spy.seen.clear()
        model.zero_grad()
        torch.manual_seed(5)
        out = model(values, mask)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((out.loss.detach(), grads))
        for m, spy in enumerate(m.encoder for m in mods):
            seen = torch.cat(spy.seen)
            assert len(seen) == int(mask[:, m].sum()), "an encoder saw a missing row"
            assert torch.isfinite(seen).all()
    # what missing rows hold changes nothing: not the loss, not a single gradient
    assert torch.isfinite(results[1][0])
    torch.testing.assert_close(results[0][0], results[1][0])
    for g0, g1 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g0, g1)


def test_a_row_without_any_modality_is_refused_by_the_mixtures():
    model = small_model("beta", "moe")
    data, mask = batch(4)
    mask[2] = False
    with pytest.raises(ValueError, match="at least one component"):
        model(data, mask)


def test_sixteen_modalities_train_at_linear_cost():
    mods = [Modality(f"m{i}", (4,), "gaussian") for i in range(16)]
    model = MultimodalModule(mods, latent("beta"), MoPoE(), hidden=[8])
    data = {m.name: torch.randn(8, 4) for m in mods}
    mask = torch.rand(8, 16) < 0.7
    mask[:, 0] = True
    subsets, weights = model.aggregator.subsets(mask)
    assert subsets.shape == (8, 32, 16)  # 2M sampled subsets, not 2^16 - 1
    assert not (subsets & ~mask.unsqueeze(1)).any()
    out = model(data, mask)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mopoe_inference_beyond_enumeration_is_deterministic():
    """With more modalities than it enumerates, MoPoE draws subsets: inference draws the same ones every call
    (embed and impute give one answer), without touching the global random state; training draws fresh ones."""
    mods = [Modality(f"m{i}", (3,), "gaussian") for i in range(8)]
    model = MultimodalModule(mods, latent("gated"), MoPoE(max_enumerate=4), hidden=[8]).eval()
    data = {m.name: torch.randn(6, 3) for m in mods}
    mask = torch.rand(6, 8) < 0.6
    mask[:, 0] = True
    with torch.no_grad():
        first = model.posterior(data, mask)
        state = torch.get_rng_state()
        second = model.posterior(data, mask)
        assert torch.equal(torch.get_rng_state(), state)
        torch.testing.assert_close(model.latent.representation(first), model.latent.representation(second))
        torch.testing.assert_close(first.weights, second.weights)
        draws = [model.aggregator.subsets(mask)[0] for _ in range(2)]
    assert not torch.equal(*draws)  # training's subsets stay random


def test_mopoe_sampled_kl_is_the_weighted_kl_of_every_subset_in_expectation():
    """mopoe_kl = sampled scores one subset per row, drawn uniformly from the row's available ones: its KL averages to
    the weighted KL over all subsets (the Gaussian's KL is closed form, so the all-subset value is exact), rows with one
    modality get that modality's KL every time, and no draw uses a missing modality."""
    torch.manual_seed(0)
    model = MultimodalModule(MODALITIES, latent("gaussian"), MoPoE(), hidden=[8])
    data, mask = batch(n=6)
    mask[1, 0] = mask[2, 2] = False  # two available: three subsets each
    mask[3, :2] = False  # one available
    with torch.no_grad():
        exact = model(data, mask).kl.double()
        model.aggregator = MoPoE(mopoe_kl="sampled")
        repeats = 4000  # each row 4000 times in one batch: 4000 independent draws of its subset
        copies = {name: x.repeat(repeats, *[1] * (x.dim() - 1)) for name, x in data.items()}
        draws = model(copies, mask.repeat(repeats, 1)).kl.double().view(repeats, len(mask))
    mean, error = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert bool(((mean - exact).abs() <= 4 * error + 1e-5 * exact.abs()).all()), (mean, exact, error)
    assert float(draws[:, 3].std()) < 1e-5 * float(exact[3])  # one subset only
    assert len({round(float(v), 3) for v in draws[:, 1]}) == 3  # the row's three subsets, nothing else


def sticks_sampled_model():
    """A gated MoPoE model (value experts) on six rows with one, two and three modalities: what `sticks-sampled` acts on."""
    torch.manual_seed(0)
    model = MultimodalModule(MODALITIES, latent("gated"), MoPoE(mopoe_kl="sticks-sampled"), hidden=[8])
    data, mask = batch(n=6)
    mask[1, 0] = mask[2, 2] = False  # two available: three subsets each
    mask[3, :2] = False  # one available
    return model, data, mask


def test_mopoe_sticks_sampled_kl_is_every_subsets_value_kl_plus_the_drawn_subsets_stick_kl():
    """A training step's KL under sticks-sampled is, for each row, the subsets' weighted value KL plus the sticks' KL of
    one of the row's subsets, and averages to the weighted KL of every subset; evaluation gives that exact KL. The
    reference is `kl_parts` and `kl_divergence` of the mixture's components, not the aggregator's code path."""
    model, data, mask = sticks_sampled_model()
    with torch.no_grad():
        q = model.aggregator.posterior(model, model.unimodal_posteriors(data, mask), mask)
        parts = model.latent.kl_parts(q)  # each weighted over the subsets
        exact = (parts["values"] + parts["sticks"]).double()
        prior = model.latent.prior()
        stick_kl = kl_divergence(q.components.sticks, prior.sticks).sum(-1).double()  # [rows, subsets]
        candidates = parts["values"].double().unsqueeze(-1) + stick_kl  # each subset's possible draw
        possible = q.weights > 0
        torch.testing.assert_close(model.eval()(data, mask).kl.double(), exact, rtol=1e-6, atol=1e-6)
        model.train()
        repeats = 3000
        copies = {name: x.repeat(repeats, *[1] * (x.dim() - 1)) for name, x in data.items()}
        draws = model(copies, mask.repeat(repeats, 1)).kl.double().view(repeats, len(mask))
    distance = (draws.unsqueeze(-1) - candidates).abs() + torch.where(
        possible, 0.0, math.inf
    )  # [repeats, rows, subsets]
    assert bool((distance.min(-1).values <= 1e-4 * candidates.abs().amax(-1)).all())  # always one of the row's subsets
    mean, error = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert bool(((mean - exact).abs() <= 4 * error + 1e-5 * exact.abs()).all()), (mean, exact, error)
    assert len({round(float(v), 4) for v in draws[:, 1]}) == 3  # the row's three subsets' stick KLs differ


def test_mopoe_sticks_sampled_kl_gradient_averages_to_the_exact_kls():
    """The encoders' gradient of the sticks-sampled KL, averaged over 3,000 draws of each row's subset, is the gradient of
    the exact weighted KL (to 4 % of its norm)."""
    model, data, mask = sticks_sampled_model()

    def kl_gradient(training: bool, repeats: int) -> Tensor:
        model.train(training)
        model.zero_grad()
        copies = {name: x.repeat(repeats, *[1] * (x.dim() - 1)) for name, x in data.items()}
        model(copies, mask.repeat(repeats, 1)).kl.mean().backward()
        return torch.cat([p.grad.flatten() for name, p in model.named_parameters() if p.grad is not None])

    exact, sampled = kl_gradient(False, 1), kl_gradient(True, 3000)
    assert float((sampled - exact).norm()) < 0.04 * float(exact.norm())


def test_mopoe_sticks_sampled_changes_nothing_for_a_family_without_sticks():
    torch.manual_seed(0)
    model = MultimodalModule(MODALITIES, latent("gaussian"), MoPoE(), hidden=[8])
    data, mask = batch(n=6)
    mask[1, 0] = False
    torch.manual_seed(1)
    every = model(data, mask)
    model.aggregator = MoPoE(mopoe_kl="sticks-sampled")
    torch.manual_seed(1)
    sticks = model(data, mask)
    torch.testing.assert_close(sticks.loss, every.loss, rtol=0, atol=0)
    torch.testing.assert_close(sticks.kl_per_dim, every.kl_per_dim, rtol=0, atol=0)


@pytest.mark.parametrize("family", [*LATENT_FAMILIES, "gated/code"])
@pytest.mark.parametrize("estimate", ["sampled", "sticks-sampled"])
def test_mopoe_sampled_kl_trains_every_family_with_missing_modalities(family, estimate):
    torch.manual_seed(0)
    family, _, expert = family.partition("/")
    settings = {"expert": expert} if expert else {}
    model = MultimodalModule(MODALITIES, latent(family, **settings), MoPoE(mopoe_kl=estimate), hidden=[16])
    data, mask = batch()
    mask[::3, 1] = False
    mask[1::4, 0] = False
    out = model(data, mask)
    assert torch.isfinite(out.loss) and out.kl_per_dim.shape == (32, model.latent.n_dimensions)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_mopoe_posteriors_given_subsets_from_one_fusion_match_fusing_each(family):
    """Evaluation's given-subset posteriors (`posteriors_given`: every subset fused once, then gathered) against the
    posterior built from scratch for each given mask."""
    from infinimodal.evaluation.metrics import _restricted

    torch.manual_seed(0)
    model = MultimodalModule(MODALITIES, latent(family), MoPoE(), hidden=[16]).eval()
    data, mask = batch(n=12)
    mask[1, 0] = mask[2, 2] = mask[5, 1] = False
    mask[3, :2] = False
    subsets = [None] + [s for size in range(1, 4) for s in itertools.combinations(range(3), size)]
    givens = [_restricted(mask, subset)[0] for subset in subsets]
    with torch.no_grad():
        unimodal = model.unimodal_posteriors(data, mask)
        together = model.aggregator.posteriors_given(model, unimodal, mask, givens)
        z = model.latent.rsample(model.aggregator.posterior(model, unimodal, mask))
        for given, q in zip(givens, together):
            alone = model.aggregator.posterior(model, unimodal, given)
            torch.testing.assert_close(q.weights, alone.weights)
            torch.testing.assert_close(
                model.latent.representation(q), model.latent.representation(alone), rtol=1e-5, atol=1e-6
            )
            torch.testing.assert_close(model.latent.kl_per_dim(q), model.latent.kl_per_dim(alone), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(q.log_prob(z), alone.log_prob(z), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="does not have"):
        next(model.aggregator.posteriors_given(model, unimodal, mask, [torch.ones_like(mask), mask]))


def test_mopoe_refuses_an_unknown_kl_estimate():
    with pytest.raises(ValueError, match="mopoe_kl must be one of all, sampled, sticks-sampled"):
        MoPoE(mopoe_kl="some")
    with pytest.raises(ValueError, match="--mopoe-kl"):
        build_aggregator("mopoe", mopoe_kl="some")


# --- DReG ---------------------------------------------------------------------------------------


def encoder_gradients(model, data, mask, repeats, kl_weight=1.0):
    grads = []
    for _ in range(repeats):
        model.zero_grad()
        model(data, mask, kl_weight=kl_weight).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for name, p in model.named_parameters() if name.startswith("heads")]))
    return torch.stack(grads)


@pytest.mark.parametrize("kl_weight", [0.2, 1.0, 3.0])
def test_dreg_is_an_unbiased_lower_variance_gradient_of_the_importance_weighted_bound(kl_weight):
    torch.manual_seed(0)
    mods = [Modality("a", (4,), "gaussian"), Modality("b", (3,), "gaussian")]
    model = MultimodalModule(mods, build_latent("gaussian", latent_dim=2), MoE(iw_samples=4), hidden=[6]).double()
    data = {"a": torch.randn(5, 4, dtype=torch.float64), "b": torch.randn(5, 3, dtype=torch.float64)}
    mask = torch.ones(5, 2, dtype=torch.bool)
    mask[0, 1] = False
    dreg = encoder_gradients(model, data, mask, 1000, kl_weight)
    model.aggregator = MoE(iw_samples=4, estimator="iwae")  # the same bound, differentiated through q's density too
    iwae = encoder_gradients(model, data, mask, 1000, kl_weight)
    assert unbiased(dreg, iwae)
    assert dreg.var(0).sum() < iwae.var(0).sum()


def unbiased(a, b, sigmas=5.0):
    """Do two gradient estimators have the same mean, up to `sigmas` standard errors in every coordinate?"""
    difference = a.mean(0) - b.mean(0)
    standard_error = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    return bool((difference.abs() <= sigmas * standard_error + 1e-9).all())


# --- mixed precision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_mixed_precision_keeps_distributions_and_likelihood_in_float32(family):
    torch.manual_seed(0)
    model = small_model(family, "poe")
    data, mask = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = model.unimodal_posteriors(data, mask)
        out = model(data, mask)
    assert q.mean.dtype == torch.float32 and q.rsample().dtype == torch.float32
    assert out.loss.dtype == torch.float32 and out.kl_per_dim.dtype == torch.float32
    reference = model(data, mask)  # fp32 throughout: bf16 matmuls change the KL by well under a few percent
    assert out.kl.mean().item() == pytest.approx(reference.kl.mean().item(), rel=0.05)


@pytest.mark.parametrize("link", ["exp", "softplus"])
def test_beta_evidence_links_give_proper_posteriors_even_for_extreme_encoder_outputs(link):
    family = build_latent("beta", truncation=3, alpha=2.0, evidence=link)
    raw = torch.tensor([[-1e4, 0.0, 1e4, 50.0]])  # e_a for 2 sticks, then e_b
    q = family.posterior(raw)
    a, b = q.concentration1, q.concentration0
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a >= 1).all() and (b >= 2.0).all()  # evidence never removes prior pseudo-counts
    assert torch.isfinite(family.kl_per_dim(q)).all()


@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_extreme_head_outputs_keep_every_family_finite(family):
    fam = latent(family)
    raw = torch.tensor([[-1e4] * fam.head_size, [1e4] * fam.head_size, [0.0] * fam.head_size])
    q = fam.posterior(raw)
    z = fam.rsample(q)
    assert torch.isfinite(fam.kl_per_dim(q)).all() and torch.isfinite(fam.decoder_input(z)).all()
    assert torch.isfinite(q.log_prob(z)).all()


def test_unknown_evidence_link_and_aggregator_are_refused():
    with pytest.raises(ValueError, match="--evidence must be one of"):
        build_latent("beta", evidence="square")
    with pytest.raises(ValueError, match="unknown aggregator"):
        build_aggregator("sum")
    with pytest.raises(ValueError, match="poe_subsets"):
        PoE(-1)


@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
def test_importance_sampling_in_three_dimensions_against_the_linear_gaussian_marginal(aggregator):
    """z ~ N(0, I_3), x_m = W_m z + b_m + noise (fixed scale): log p(X_observed) is a Gaussian density in closed
    form (scipy), for rows with every modality and rows missing some. The importance-sampled estimate matches it
    and the aggregator's ELBO sits below it."""
    import scipy.stats as st

    torch.manual_seed(0)
    scale = 0.5
    mods = [
        Modality("a", (4,), f"gaussian:{scale}", decoder=torch.nn.Linear(3, 4)),
        Modality("b", (2,), f"gaussian:{scale}", decoder=torch.nn.Linear(3, 2)),
    ]
    model = MultimodalModule(
        mods, build_latent("gaussian", latent_dim=3), build_aggregator(aggregator), hidden=[16]
    ).double()
    n = 4
    data = {"a": torch.randn(n, 4, dtype=torch.float64), "b": torch.randn(n, 2, dtype=torch.float64)}
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    fit_encoders(model, data, mask, steps=300)
    exact = []
    for i in range(n):
        weights, biases = [], []
        for m, name in enumerate(model.names):
            if mask[i, m]:
                layer = model.decoders[f"mod_{name}"]
                weights.append(layer.weight.detach().numpy())
                biases.append(layer.bias.detach().numpy())
        W, b = np.concatenate(weights), np.concatenate(biases)
        x = np.concatenate([data[name][i].numpy() for m, name in enumerate(model.names) if mask[i, m]])
        exact.append(st.multivariate_normal(b, W @ W.T + scale**2 * np.eye(len(b))).logpdf(x))
    torch.manual_seed(1)
    estimate = model.log_likelihood(data, mask, n_samples=20_000, chunk=5_000)
    np.testing.assert_allclose(estimate.numpy(), exact, atol=0.03)
    repeats = 2000
    with torch.no_grad():
        elbos = model({k: v.repeat(repeats, 1) for k, v in data.items()}, mask.repeat(repeats, 1)).elbo.view(repeats, n)
    mean, standard_error = elbos.mean(0).numpy(), (elbos.std(0) / math.sqrt(repeats)).numpy()
    assert (mean <= np.array(exact) + 4 * standard_error + 1e-3).all(), (mean - exact) / standard_error


def test_mixture_samples_follow_the_mixture_and_carry_only_their_components_gradient():
    from infinimodal.mixture import MixturePosterior

    loc = torch.tensor([[[-3.0], [4.0]]], requires_grad=True)  # one row, two components, one dimension
    mixture = MixturePosterior(torch.distributions.Normal(loc, torch.tensor(0.5)), torch.tensor([[0.25, 0.75]]))
    torch.manual_seed(0)
    draws = mixture.rsample((200_000,))  # [S, 1, 1]
    assert draws.shape == (200_000, 1, 1)
    x = draws.detach().flatten()
    assert float((x < 0.5).float().mean()) == pytest.approx(0.25, abs=0.005)
    assert float(x.mean()) == pytest.approx(0.25 * -3 + 0.75 * 4, abs=0.02)
    assert float(x.var()) == pytest.approx(0.25 + 0.25 * 9 + 0.75 * 16 - 2.25**2, rel=0.01)
    draws.sum().backward()  # d(sum of draws)/d loc_c = number of draws from component c
    assert loc.grad.flatten().tolist() == pytest.approx([float((x < 0.5).sum()), float((x >= 0.5).sum())])


def test_a_non_finite_loss_is_traced_to_its_modality_and_latent_term():
    from infinimodal.aggregators import LossOutput
    from infinimodal.train.plan import non_finite_terms

    torch.manual_seed(0)
    model = small_model("gated", "mopoe")
    data, mask = batch()
    with torch.no_grad():
        for p in model.decoders["mod_values"].parameters():
            p.fill_(float("nan"))
        out = model(data, mask)
    said = non_finite_terms(out, model, {"data": data, "mask": mask})
    assert "reconstruction of modality 'values'" in said and "'bits'" not in said and "'image'" not in said
    kl_per_dim = torch.zeros(32, model.latent.n_dimensions)
    kl_per_dim[3, 2] = float("inf")
    finite = LossOutput(torch.tensor(1.0), torch.zeros(32), torch.zeros(32), kl_per_dim.sum(-1), kl_per_dim)
    assert (
        non_finite_terms(finite, model, {"data": data, "mask": mask})
        == "the KL of the GatedSticks latent (dimensions [2])"
    )


def test_relative_clip_cuts_spikes_to_a_multiple_of_the_running_norm_and_leaves_steady_growth():
    from infinimodal.train.plan import RelativeClip

    weight = torch.nn.Parameter(torch.zeros(4))
    clip = RelativeClip(10.0)

    def step(norm: float) -> float:
        weight.grad = torch.tensor([norm, 0.0, 0.0, 0.0])
        clip([weight])
        return float(weight.grad.norm())

    assert [step(1.0) for _ in range(30)] == [1.0] * 30
    assert clip.average == pytest.approx(1.0)
    assert step(500.0) == pytest.approx(10.0)  # a spike: cut to 10x the running average
    assert clip.average == pytest.approx(0.99 + 0.01 * 10.0)  # the average moves with the clipped norm
    growing = [step(1.02**k) for k in range(200)]  # steady growth by 2 % a step is never cut
    assert growing == pytest.approx([1.02**k for k in range(200)])
    fresh = RelativeClip(10.0)
    weight.grad = torch.tensor([1000.0, 0.0, 0.0, 0.0])
    fresh([weight])
    assert float(weight.grad.norm()) == 1000.0  # nothing is cut before 20 steps have set the average
    weight.grad = torch.tensor([float("nan"), 0.0, 0.0, 0.0])
    clip([weight])
    assert torch.isnan(weight.grad).any()  # a non-finite gradient is left for the non-finite check to name


@pytest.mark.parametrize("aggregator", ["poe", "mopoe", "moe"])
def test_the_weighted_conditional_mean_is_the_linear_gaussian_models_exact_one_whatever_the_encoders(aggregator):
    """A linear-Gaussian model (z ~ N(0, I), x_m = W_m z + b_m + s_m eps) has E[x_b | x_a] in closed form. Its encoders
    are left untrained, so q(z | x_a) is wrong: the plain average of decoded draws misses the conditional mean, the
    importance-weighted one finds it (up to Monte Carlo error), also with a missing modality and a row seen twice."""
    torch.manual_seed(0)
    dims, scale_a, scale_b = 2, 0.5, 0.3
    w_a, b_a, w_b, b_b = torch.randn(3, dims), torch.randn(3), torch.randn(2, dims), torch.randn(2)

    def linear(weight, bias):
        layer = torch.nn.Linear(dims, weight.shape[0])
        layer.weight.data, layer.bias.data = weight.clone(), bias.clone()
        return layer

    mods = [
        Modality("a", (3,), f"gaussian:{scale_a}", decoder=linear(w_a, b_a)),
        Modality("b", (2,), f"gaussian:{scale_b}", decoder=linear(w_b, b_b)),
    ]
    module = MultimodalModule(mods, build_latent("gaussian", latent_dim=dims), build_aggregator(aggregator), hidden=[8])
    module.eval()
    z = torch.randn(6, dims)
    data = {"a": z @ w_a.T + b_a + scale_a * torch.randn(6, 3), "b": z @ w_b.T + b_b + scale_b * torch.randn(6, 2)}
    data["b"][:3] = 0.0  # rows 0-2: b is missing (the value there is never read)
    mask = torch.tensor([[True, False]] * 6)
    precision = torch.eye(dims, dtype=torch.float64) + (w_a.T @ w_a).double() / scale_a**2
    posterior_mean = torch.linalg.solve(precision, (w_a.T.double() @ (data["a"] - b_a).T.double()) / scale_a**2).T
    exact = (posterior_mean @ w_b.T.double() + b_b.double()).float()
    weighted = module.conditional_means(data, mask, 20_000, weighted=True)
    plain = module.conditional_means(data, mask, 20_000)
    torch.testing.assert_close(weighted["b"], exact, atol=0.03, rtol=0)
    assert float((plain["b"] - exact).abs().max()) > 0.2  # the encoders' own answer is far off
    # the observed modality's conditional mean given itself is its posterior-weighted reconstruction, not the data
    exact_a = (posterior_mean @ w_a.T.double() + b_a.double()).float()
    torch.testing.assert_close(weighted["a"], exact_a, atol=0.03, rtol=0)


def test_the_weighted_conditional_mean_refuses_rows_no_draw_can_explain():
    module = small_model("gaussian", "poe", modalities=MODALITIES[:2]).eval()
    data, mask = batch(4, modalities=MODALITIES[:2])
    q = module.conditional_posterior(data, mask)
    z = q.rsample((10,))
    z[:, 2] = float("nan")  # no draw of row 2 has a weight: its answer would be NaN
    with pytest.raises(ValueError, match=r"rows \[2\]: no draw has a finite importance weight"):
        module.weighted_means(z, data, mask)
    z[3:, 2] = 0.0  # one draw with a finite weight is an answer
    assert all(bool(torch.isfinite(v).all()) for v in module.weighted_means(z, data, mask).values())
