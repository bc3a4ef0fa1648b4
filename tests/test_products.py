"""Product rules and subset fusion against the numerically normalised product of densities (scipy quadrature)."""

import math

import numpy as np
import pytest
import scipy.integrate as si
import torch
from torch.distributions import Beta, Normal

from infinimodal.latents import (
    GatedPosterior,
    LATENT_FAMILIES,
    BetaSticks,
    Kumaraswamy,
    LogitNormal,
    build_latent,
    product,
)


def normalised_product_moments(log_densities, lo, hi, points=None):
    """Normaliser, mean and variance of the density proportional to exp(sum of log densities), by quadrature."""
    f = lambda x: np.exp(sum(ld(x) for ld in log_densities))  # noqa: E731
    kw = dict(limit=500, epsabs=0, epsrel=1e-12)
    if points is not None:
        kw["points"] = points
    z = si.quad(f, lo, hi, **kw)[0]
    m1 = si.quad(lambda x: x * f(x), lo, hi, **kw)[0] / z
    m2 = si.quad(lambda x: (x - m1) ** 2 * f(x), lo, hi, **kw)[0] / z
    return z, m1, m2


def log_density(dist):
    return lambda x: dist.log_prob(torch.tensor(x, dtype=torch.float64)).item()


def f64(*values):
    return [torch.tensor(v, dtype=torch.float64) for v in values]


# --- product(experts, prior) ----------------------------------------------------------------------


def test_gaussian_product_is_the_normalised_product():
    experts = [Normal(*f64(0.5, 1.3)), Normal(*f64(-1.0, 0.4)), Normal(*f64(2.0, 2.0))]
    prior = Normal(*f64(0.0, 1.0))
    result = product(experts, prior=prior)
    _, mean, var = normalised_product_moments([log_density(d) for d in experts + [prior]], -30, 30)
    assert result.mean.item() == pytest.approx(mean, rel=1e-8)
    assert result.variance.item() == pytest.approx(var, rel=1e-8)


def test_beta_product_is_the_normalised_product():
    experts = [Beta(*f64(2.5, 1.5)), Beta(*f64(1.2, 3.0)), Beta(*f64(0.7, 1.1))]
    prior = Beta(*f64(1.0, 5.0))
    result = product(experts, prior=prior)
    z, mean, var = normalised_product_moments([log_density(d) for d in experts + [prior]], 0, 1)
    assert result.mean.item() == pytest.approx(mean, rel=1e-7)
    assert result.variance.item() == pytest.approx(var, rel=1e-7)
    for v in [0.05, 0.3, 0.7]:  # and the density itself, pointwise
        unnormalised = np.exp(sum(log_density(d)(v) for d in experts + [prior]))
        assert result.log_prob(torch.tensor(v, dtype=torch.float64)).exp().item() == pytest.approx(
            unnormalised / z, rel=1e-7
        )


def test_beta_evidence_posterior_is_prior_times_expert():
    family = BetaSticks(truncation=6, alpha=3.0)
    raw = torch.randn(4, family.head_size)
    e_a, e_b = family.evidence(raw)
    via_product = product([Beta(1 + e_a, 1 + e_b)], prior=family.prior())
    direct = family.posterior(raw)
    torch.testing.assert_close(direct.concentration1, via_product.concentration1)
    torch.testing.assert_close(direct.concentration0, via_product.concentration0)


def test_improper_beta_product_is_refused():
    with pytest.raises(ValueError, match="not normalisable"):
        product([Beta(*f64(0.3, 2.0)), Beta(*f64(0.4, 2.0))])


def test_logitnormal_product_is_exact_in_logit_space():
    experts = [LogitNormal(*f64(0.5, 1.0)), LogitNormal(*f64(-2.0, 0.7))]
    prior = LogitNormal(*f64(-1.0, 1.5))
    result = product(experts, prior=prior)
    logit_densities = [log_density(d.base_dist) for d in experts + [prior]]
    _, mean, var = normalised_product_moments(logit_densities, -30, 30)
    assert result.loc.item() == pytest.approx(mean, rel=1e-8)
    assert result.scale.item() ** 2 == pytest.approx(var, rel=1e-8)


KUMARASWAMY_CASES = [
    [(2, 6), (3, 8)],
    [(1, 20), (1, 30)],  # evidence-free a: exponential tail in logit space, sharp on the other side
    [(10, 10), (10, 10)],
    [(5, 5), (1, 40)],  # conflicting experts
    [(30, 6), (20, 7)],
    [(1.5, 5), (1.2, 5.5), (2, 7)],
    [(3, 50), (40, 6)],
    [(1, 5000), (2, 300)],  # sticks near 0
    [(200, 5), (50, 8)],  # sticks near 1
    [(1000, 1000), (3, 5)],
    [(0.5, 0.7), (0.8, 2.0)],  # singular at 0, still integrable
]


def kuma_log_density(a, b):
    return lambda v: math.log(a) + math.log(b) + (a - 1) * math.log(v) + (b - 1) * math.log1p(-(v**a))


@pytest.mark.parametrize("experts", KUMARASWAMY_CASES)
@pytest.mark.parametrize("with_prior", [False, True])
def test_kumaraswamy_product_has_the_moments_of_the_normalised_product(experts, with_prior):
    factors = [kuma_log_density(a, b) for a, b in experts]
    prior = Beta(*f64(1.0, 5.0)) if with_prior else None
    if with_prior:
        factors.append(log_density(prior))
    _, mean, var = normalised_product_moments(factors, 0, 1, points=[1e-9, 1e-6, 1e-3, 0.1, 0.5, 0.9, 0.999, 1 - 1e-6])
    result = product([Kumaraswamy(*f64(a, b)) for a, b in experts], prior=prior)
    assert isinstance(result, Beta)  # the projection (mean and variance matched)
    assert result.mean.item() == pytest.approx(mean, rel=5e-4)
    assert result.variance.item() == pytest.approx(var, rel=5e-4)


def test_kumaraswamy_product_is_differentiable_and_refuses_divergent_products():
    a = torch.tensor([2.0, 3.0], requires_grad=True)
    b = torch.tensor([6.0, 8.0], requires_grad=True)
    q = product([Kumaraswamy(a[0], b[0]), Kumaraswamy(a[1], b[1])])
    q.mean.backward()
    assert torch.isfinite(a.grad).all() and (a.grad != 0).all()
    with pytest.raises(ValueError, match="not normalisable"):
        product([Kumaraswamy(*f64(0.3, 2.0)), Kumaraswamy(*f64(0.4, 2.0))])


def test_mixed_families_are_refused():
    with pytest.raises(TypeError, match="one family"):
        product([Beta(*f64(2.0, 3.0))], prior=Normal(*f64(0.0, 1.0)))


# --- fuse: subset posteriors p(z) prod_m q_m(z) / p(z) ----------------------------------------------


def family_with_one_dimension(name):
    return build_latent(name, latent_dim=1, truncation=2, alpha=3.0).double()


def scalar(dist, b, m):
    """The scalar distribution at row b, modality/subset m, dimension 0 of a [batch, M, 1] distribution."""
    return type(dist)(**{k: getattr(dist, k)[b, m, 0] for k in dist.arg_constraints})


def scalar_parts(dist):
    """(part, integration range) for each kind of scalar a family's posterior holds: the gated family's values
    (Gaussian) and sticks (Beta) are fused independently, every other family has one kind."""
    if isinstance(dist, GatedPosterior):
        return [(dist.values, (-30.0, 30.0)), (dist.sticks, (0.0, 1.0))]
    return [(dist, (-30.0, 30.0) if isinstance(dist, Normal) else (0.0, 1.0))]


@pytest.mark.parametrize("name", list(LATENT_FAMILIES))
def test_fuse_is_the_normalised_product_with_the_prior_divided_out(name):
    torch.manual_seed(0)
    family = family_with_one_dimension(name)
    raw = torch.randn(2, 3, family.head_size, dtype=torch.float64) * 1.5  # 2 rows, 3 modalities
    subsets = torch.tensor([[[1, 0, 1], [1, 1, 1], [0, 1, 0]], [[1, 1, 0], [0, 0, 1], [1, 1, 1]]], dtype=torch.bool)
    unimodal_all = family.posterior(raw)
    fused_all = family.fuse(unimodal_all, subsets)
    prior_all = family.prior()
    for (unimodal, (lo, hi)), (fused, _), (prior, _) in zip(
        scalar_parts(unimodal_all), scalar_parts(fused_all), scalar_parts(prior_all)
    ):
        prior_scalar = type(prior)(**{k: getattr(prior, k)[0] for k in prior.arg_constraints})
        for b in range(2):
            for s in range(3):
                members = [m for m in range(3) if subsets[b, s, m]]
                logs = [log_density(prior_scalar)]
                for m in members:
                    q, p = log_density(scalar(unimodal, b, m)), log_density(prior_scalar)
                    logs.append(lambda x, q=q, p=p: q(x) - p(x))
                _, mean, var = normalised_product_moments(logs, lo, hi)
                result = scalar(fused, b, s)
                tolerance = 5e-4 if name == "kumaraswamy" else 1e-7  # Kumaraswamy: the Beta projection's moments
                assert result.mean.item() == pytest.approx(mean, rel=tolerance), (b, s)
                assert result.variance.item() == pytest.approx(var, rel=tolerance), (b, s)


@pytest.mark.parametrize("name", list(LATENT_FAMILIES))
def test_a_missing_modality_contributes_nothing(name):
    torch.manual_seed(1)
    family = build_latent(name, latent_dim=4, truncation=5)
    unimodal = family.posterior(torch.randn(3, 3, family.head_size))
    with_gap = family.fuse(unimodal, torch.tensor([[[1, 0, 1]]] * 3, dtype=torch.bool))
    kept = family.posterior(torch.randn(3, 3, family.head_size))  # modality 1 replaced by anything else
    kept_params = {k: getattr(kept, k).clone() for k in kept.arg_constraints}
    for k in kept_params:
        kept_params[k][:, [0, 2]] = getattr(unimodal, k)[:, [0, 2]]
    other = family.fuse(type(unimodal)(**kept_params), torch.tensor([[[1, 0, 1]]] * 3, dtype=torch.bool))
    for k in with_gap.arg_constraints:
        torch.testing.assert_close(getattr(with_gap, k), getattr(other, k))


@pytest.mark.parametrize("name", list(LATENT_FAMILIES))
def test_a_subset_of_one_modality_is_that_modality(name):
    family = build_latent(name, latent_dim=4, truncation=5)
    unimodal = family.posterior(torch.randn(3, 1, family.head_size))
    fused = family.fuse(unimodal, torch.ones(3, 1, 1, dtype=torch.bool))
    torch.testing.assert_close(fused.mean, unimodal.mean, rtol=1e-5, atol=1e-6)
    assert type(fused) is type(unimodal)  # with one modality, Kumaraswamy stays the SB-VAE's own posterior


def test_kumaraswamy_fusion_of_sixteen_modalities_and_forty_subsets_is_finite_and_proper():
    # one batched computation (its peak memory is measured by benchmarks/fusion_memory.py, not asserted here)
    family = build_latent("kumaraswamy", truncation=8, alpha=2.0)
    unimodal = family.posterior(torch.randn(4, 16, family.head_size) * 3)
    subsets = torch.rand(4, 40, 16) < 0.5
    subsets[:, :, 0] = True
    fused = family.fuse(unimodal, subsets)
    assert fused.concentration1.shape == (4, 40, 7)
    assert torch.isfinite(fused.concentration1).all() and (fused.concentration1 > 0).all()
    assert torch.isfinite(family.kl_per_dim(fused)).all()


def test_kumaraswamy_fusion_entry_by_entry_matches_the_normalised_product():
    # rows with different subsets of three modalities: empty (the prior), one modality (closed-form projection),
    # two and three (the grid); each entry against scipy quadrature of p(v) prod_{m in S} q_m(v) / p(v)
    alpha = 5.0
    family = build_latent("kumaraswamy", truncation=2, alpha=alpha)
    experts = [
        [(2.0, 6.0), (30.0, 7.0), (1.0, 40.0)],
        [(1.5, 5.0), (3.0, 50.0), (200.0, 5.0)],
    ]  # [row][modality] (a, b)
    a = torch.tensor([[[ab[0]] for ab in row] for row in experts], dtype=torch.float64)
    b = torch.tensor([[[ab[1]] for ab in row] for row in experts], dtype=torch.float64)
    unimodal = Kumaraswamy(a, b)
    subsets = torch.tensor(
        [[[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 1, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 1], [1, 0, 1]]], dtype=torch.bool
    )
    fused = family.to(torch.float64).fuse(unimodal, subsets)
    prior = lambda v: math.log(alpha) + (alpha - 1) * math.log1p(-v)  # noqa: E731
    for row in range(2):
        for s in range(4):
            members = [m for m in range(3) if subsets[row, s, m]]
            k = len(members)
            factors = [lambda v, k=k: (1 - k) * prior(v)] + [
                kuma_log_density(*experts[row][m]) for m in members
            ]  # p prod (q_m / p)
            _, mean, var = normalised_product_moments(
                factors, 0, 1, points=[1e-9, 1e-6, 1e-3, 0.1, 0.5, 0.9, 0.999, 1 - 1e-6]
            )
            assert fused.mean[row, s, 0].item() == pytest.approx(mean, rel=5e-4), (row, members)
            assert fused.variance[row, s, 0].item() == pytest.approx(var, rel=5e-4), (row, members)
    assert (
        fused.concentration1[0, 0, 0].item() == 1.0 and fused.concentration0[0, 0, 0].item() == alpha
    )  # empty: the prior itself


# --- mixtures score exponential-family components by one matrix product --------------------------------


def scipy_component_log_prob(name, params, z):
    """log q_c(z) summed over dimensions, by scipy.stats (float64), for components [B, C, L] and z [S, B, L]."""
    import scipy.stats as st

    zc = z.double().numpy()[..., None, :]  # [*S, B, 1, L]
    if name == "normal":
        loc, scale = (p.double().numpy() for p in params)
        return st.norm.logpdf(zc, loc, scale).sum(-1)
    if name == "beta":
        a, b = (p.double().numpy() for p in params)
        return st.beta.logpdf(zc, a, b).sum(-1)
    loc, scale, a, b = (p.double().numpy() for p in params)
    d = loc.shape[-1]
    return st.norm.logpdf(zc[..., :d], loc, scale).sum(-1) + st.beta.logpdf(zc[..., d:], a, b).sum(-1)


@pytest.mark.parametrize(
    "sample_shape", [(6,), (2, 3)]
)  # (2, 3): two sample dimensions, as MoE's stratified samples have
@pytest.mark.parametrize("name", ["normal", "beta", "gated"])
def test_mixture_component_log_prob_by_matrix_product_matches_scipy(name, sample_shape):
    # sharp components (scale 1e-3, concentrations to e^12) where the linear form's terms cancel by many orders
    from infinimodal.latents.beta import StableBeta
    from infinimodal.mixture import MixturePosterior, linear_log_density
    from infinimodal.stick_breaking import clamp_sticks

    g = torch.Generator().manual_seed(0)
    b_, c_, l_ = 3, 4, 5
    loc = torch.randn(b_, c_, l_, generator=g) * 3
    scale = torch.rand(b_, c_, l_, generator=g) + 1e-3
    conc = lambda: torch.exp(torch.randn(b_, c_, l_, generator=g) * 4).clamp(1e-2, 1.6e5)  # noqa: E731
    params = {"normal": (loc, scale), "beta": (conc(), conc()), "gated": (loc, scale, conc(), conc())}[name]
    components = {"normal": Normal, "beta": StableBeta, "gated": GatedPosterior}[name](*params)
    assert linear_log_density(components) is not None
    mixture = MixturePosterior(components, torch.rand(b_, c_, generator=g) + 0.1)
    z = mixture.sample(torch.Size(sample_shape))
    if name != "normal":
        z = torch.cat([z[..., : l_ * (name == "gated")], clamp_sticks(z[..., l_ * (name == "gated") :])], dim=-1)
    expected = scipy_component_log_prob(name, params, z)
    fast = mixture.component_log_prob(z)
    assert fast.dtype == torch.float32 and fast.shape == (*sample_shape, b_, c_)
    finite = np.isfinite(expected)
    assert finite.mean() > 0.9
    np.testing.assert_allclose(fast.double().numpy()[finite], expected[finite], rtol=2e-6, atol=1e-3)


def test_mixture_scores_values_that_broadcast_against_its_batch():
    # a value whose batch dimension is 1 against a mixture of batch 3 takes the family's own log_prob (broadcasting)
    from infinimodal.mixture import MixturePosterior

    components = Normal(torch.randn(3, 2, 4), torch.rand(3, 2, 4) + 0.5)
    mixture = MixturePosterior(components, torch.ones(3, 2))
    value = torch.randn(5, 1, 4)
    expected = components.log_prob(value.unsqueeze(-2)).sum(-1)
    torch.testing.assert_close(mixture.component_log_prob(value), expected)
