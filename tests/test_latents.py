"""Each latent family against independent references: scipy quadrature, scipy.stats, Monte Carlo."""

import itertools
import math

import numpy as np
import pytest
import scipy.integrate as si
import scipy.special as sp
import scipy.stats as st
import torch
from torch.distributions import Beta, Normal, kl_divergence

import infinimodal  # noqa: F401  (registers the KL)
from infinimodal.latents import Kumaraswamy, LogitNormal, beta_matched_logit_moments, build_latent
from infinimodal.latents.kumaraswamy import expected_log_one_minus_v

GRID = [0.05, 0.1, 0.3, 0.7, 1.0, 2.0, 5.0, 12.0, 30.0, 50.0]


def kuma_logpdf(v, a, b):
    return math.log(a) + math.log(b) + (a - 1) * np.log(v) + (b - 1) * np.log1p(-(v**a))


def reference_kl_kuma_beta(a, b, alpha, beta):
    """KL(Kuma(a, b) || Beta(alpha, beta)) = int_0^1 q (log q - log p) du in the uniform variable.

    With u ~ U(0, 1) and v = (1 - (1 - u)^(1/b))^(1/a) the KL is E_u[log q(v) - log p(v)]; the
    integrand has only log singularities at the ends, which QUADPACK's extrapolation handles. The
    logs are evaluated in terms of u directly so that v near 0 or 1 loses nothing.
    """

    def integrand(u):
        log_w = math.log1p(-u) / b  # w = (1 - u)^(1/b) = 1 - v^a
        if u > 1e-12:
            log_v = math.log(-math.expm1(log_w)) / a  # v^a = 1 - w
        else:  # 1 - (1 - u)^(1/b) = (u / b) (1 + O(u))
            log_v = (math.log(u) - math.log(b)) / a
        if log_v < -1e-3:  # v < 0.999: log1p(-v) is accurate
            log_1mv = math.log1p(-math.exp(log_v))
        elif log_w > -30:
            log_1mv = math.log(-math.expm1(math.log1p(-math.exp(log_w)) / a))
        else:  # 1 - (1 - w)^(1/a) = (w / a) (1 + O(w)) once w < 1e-13
            log_1mv = log_w - math.log(a)
        log_q = math.log(a) + math.log(b) + (a - 1) * log_v + (b - 1) * log_w
        log_p = (alpha - 1) * log_v + (beta - 1) * log_1mv - sp.betaln(alpha, beta)
        return log_q - log_p

    # the last 2e-16 of u is left out: float64 rounds nodes there to 1, and it holds < 1e-12 of the KL
    pieces = [0.0, 1e-12, 1e-6, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-6, 1 - 1e-12, 1 - 2**-52]
    return sum(
        si.quad(integrand, lo, hi, limit=400, epsabs=1e-12, epsrel=1e-11)[0] for lo, hi in zip(pieces, pieces[1:])
    )


# --- Kumaraswamy ---------------------------------------------------------------------------------


def test_kumaraswamy_kl_reproduces_the_design_examples():
    # docs/design.md: true 8.33 at a=5, b=1 and 16.7 at a=10, b=0.5 against Beta(1, 5).
    for (a, b), expected in [((5.0, 1.0), 8.33), ((10.0, 0.5), 16.7)]:
        kl = kl_divergence(Kumaraswamy(torch.tensor(a), torch.tensor(b)), Beta(torch.tensor(1.0), torch.tensor(5.0)))
        assert kl.item() == pytest.approx(reference_kl_kuma_beta(a, b, 1.0, 5.0), rel=1e-4)
        assert kl.item() == pytest.approx(expected, abs=0.05)  # the design rounds


@pytest.mark.parametrize("prior", [(1.0, 5.0), (0.5, 0.5), (10.0, 0.5), (2.0, 10.0), (0.5, 3.0), (1.0, 1.0)])
def test_kumaraswamy_kl_against_quadrature_on_the_whole_range(prior):
    alpha, beta = prior
    a, b = np.array(list(itertools.product(GRID, GRID))).T
    ours = kl_divergence(
        Kumaraswamy(torch.tensor(a), torch.tensor(b)),
        Beta(torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)),
    ).numpy()
    reference = np.array([reference_kl_kuma_beta(ai, bi, alpha, beta) for ai, bi in zip(a, b)])
    relative = np.abs(ours - reference) / np.maximum(np.abs(reference), 1e-3)
    worst = int(np.argmax(relative))
    assert relative.max() < 1e-3, f"a={a[worst]}, b={b[worst]}: {ours[worst]} vs {reference[worst]}"


def test_kumaraswamy_kl_against_quadrature_on_the_encoders_range():
    # The encoder's sticks are Kumaraswamy(1 + e_a, alpha + e_b) with evidence up to 1e4 pseudo-counts.
    alpha = 5.0
    values = [1.0, 3.0, 30.0, 300.0, 3000.0, 10_001.0]
    a, b = np.array(list(itertools.product(values, [v - 1 + alpha for v in values]))).T
    ours = kl_divergence(
        Kumaraswamy(torch.tensor(a), torch.tensor(b)),
        Beta(torch.tensor(1.0, dtype=torch.float64), torch.tensor(alpha, dtype=torch.float64)),
    ).numpy()
    reference = np.array([reference_kl_kuma_beta(ai, bi, 1.0, alpha) for ai, bi in zip(a, b)])
    relative = np.abs(ours - reference) / np.maximum(np.abs(reference), 1e-3)
    worst = int(np.argmax(relative))
    assert relative.max() < 1e-3, f"a={a[worst]}, b={b[worst]}: {ours[worst]} vs {reference[worst]}"


def test_kumaraswamy_kl_in_float32_matches_float64():
    a = torch.tensor(GRID).repeat_interleave(len(GRID))
    b = torch.tensor(GRID).repeat(len(GRID))
    prior = Beta(torch.tensor(1.0), torch.tensor(5.0))
    kl32 = kl_divergence(Kumaraswamy(a.float(), b.float()), prior)
    kl64 = kl_divergence(
        Kumaraswamy(a.double(), b.double()),
        Beta(torch.tensor(1.0, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64)),
    )
    torch.testing.assert_close(kl32.double(), kl64, rtol=1e-4, atol=1e-4)


def test_the_ten_term_series_is_what_we_replace():
    # The original SB-VAE series underestimates E[log(1 - v)] for b <= 1; ours matches quadrature.
    a, b = 5.0, 1.0
    series = -sum(b / m * math.exp(sp.betaln(1 + m / a, b)) for m in range(1, 11))
    exact = si.quad(lambda v: math.log1p(-v) * math.exp(kuma_logpdf(v, a, b)), 0, 1, limit=200)[0]
    ours = expected_log_one_minus_v(
        torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    ).item()
    assert ours == pytest.approx(exact, rel=1e-6)
    assert abs(series - exact) > 0.1


def test_kumaraswamy_kl_gradients_are_finite_at_the_edges():
    a = torch.tensor([0.05, 0.05, 50.0, 50.0, 1.0, 0.3], requires_grad=True)
    b = torch.tensor([0.05, 50.0, 0.05, 50.0, 1.0, 7.0], requires_grad=True)
    kl = kl_divergence(Kumaraswamy(a, b), Beta(torch.ones(6), torch.full((6,), 5.0)))
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # the gradient is the derivative of the KL: compare with a central difference in float64
    a64 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    b64 = torch.tensor(0.7, dtype=torch.float64)
    prior = Beta(torch.tensor(1.0, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64))
    kl_divergence(Kumaraswamy(a64, b64), prior).backward()
    h = 1e-5
    numeric = (reference_kl_kuma_beta(2.0 + h, 0.7, 1, 5) - reference_kl_kuma_beta(2.0 - h, 0.7, 1, 5)) / (2 * h)
    assert a64.grad.item() == pytest.approx(numeric, rel=1e-4)


def test_kumaraswamy_log_prob_integrates_to_one_and_matches_torch():
    for a, b in [(0.3, 0.5), (2.0, 3.0), (20.0, 0.2)]:
        pieces = [0.0, 1e-6, 0.5, 1 - 1e-6, 1.0]
        total = sum(
            si.quad(lambda v: math.exp(kuma_logpdf(v, a, b)), lo, hi, limit=400)[0]
            for lo, hi in zip(pieces, pieces[1:])
        )
        assert total == pytest.approx(1.0, abs=1e-5)
        v = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
        ours = Kumaraswamy(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)).log_prob(v)
        np.testing.assert_allclose(ours.numpy(), [kuma_logpdf(x, a, b) for x in v.numpy()], rtol=1e-10)


def test_kumaraswamy_samples_follow_the_cdf():
    torch.manual_seed(0)
    # (Parameters whose mass sits within 1e-16 of 1 cannot be checked this way: float64 rounds it to 1.)
    for a, b in [(0.3, 0.5), (2.0, 5.0), (40.0, 0.3)]:
        v = (
            Kumaraswamy(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
            .sample((20_000,))
            .numpy()
        )
        assert np.all((v >= 0) & (v <= 1))
        statistic = st.kstest(v, lambda x: 1 - (1 - np.clip(x, 0, 1) ** a) ** b).statistic
        assert statistic < 0.015


def test_kumaraswamy_rsample_has_pathwise_gradients():
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    torch.manual_seed(1)
    Kumaraswamy(a, b).rsample((50_000,)).mean().backward()
    # d/da E[v] with E[v] = b B(1 + 1/a, b): finite difference of the closed form
    mean = lambda a_, b_: b_ * math.exp(sp.betaln(1 + 1 / a_, b_))  # noqa: E731
    h = 1e-5
    assert a.grad.item() == pytest.approx((mean(2 + h, 3) - mean(2 - h, 3)) / (2 * h), rel=0.05)
    assert b.grad.item() == pytest.approx((mean(2, 3 + h) - mean(2, 3 - h)) / (2 * h), rel=0.05)


# --- Beta ----------------------------------------------------------------------------------------


def test_beta_log_prob_and_kl_against_scipy():
    a, b, alpha = 2.5, 0.7, 5.0
    v = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)
    np.testing.assert_allclose(
        Beta(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)).log_prob(v).numpy(),
        st.beta.logpdf(v.numpy(), a, b),
        rtol=1e-7,
    )
    q, p = st.beta(a, b), st.beta(1, alpha)
    reference = si.quad(lambda x: q.pdf(x) * (q.logpdf(x) - p.logpdf(x)), 0, 1, limit=400)[0]
    kl = kl_divergence(
        Beta(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)),
        Beta(torch.tensor(1.0, dtype=torch.float64), torch.tensor(alpha, dtype=torch.float64)),
    )
    assert kl.item() == pytest.approx(reference, rel=1e-6)


def test_beta_rsample_gradients_are_finite_for_tiny_and_huge_concentrations():
    from infinimodal.stick_breaking import clamp_sticks, log_stick_weights

    a = torch.tensor([1e-3, 1.0, 1e3, 1.0], requires_grad=True)
    b = torch.tensor([1.0, 1e-3, 1e3, 1e4], requires_grad=True)
    torch.manual_seed(0)
    v = clamp_sticks(Beta(a, b).rsample((256,)))
    log_pi = log_stick_weights(v)
    assert torch.isfinite(log_pi).all()
    log_pi.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_beta_family_reads_the_logit_of_sticks_far_below_1e_minus_6():
    """Beta(1, 1e5) and Beta(2, 1e7) sticks sit around 1e-5 and 1e-7: in float32, the decoder's mean input is
    E[logit v] = psi(a) - psi(b), not a clamp at logit(1e-6) = -13.8, and its gradient is d/db = -psi'(b)."""
    from infinimodal.latents import build_latent

    family = build_latent("beta", truncation=3, alpha=5.0, decoder_input="logitv")
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1e5, 1e7], requires_grad=True)
    torch.manual_seed(0)
    code = family.decoder_input(family.rsample(type(family.prior())(a, b), 4000))
    b64 = b.detach().double().numpy()
    expected = sp.digamma(a.double().numpy()) - sp.digamma(b64)
    np.testing.assert_allclose(code.mean(0).detach().numpy(), expected, atol=0.1)
    code.mean(0).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), -sp.polygamma(1, b64), rtol=0.05)


# --- Logit-normal --------------------------------------------------------------------------------


def logitnormal_pdf(v, mu, s):
    return st.norm.pdf(sp.logit(v), mu, s) / (v * (1 - v))


def test_logitnormal_density_mean_and_kl_against_quadrature():
    mu, s = 0.8, 1.7
    q = LogitNormal(torch.tensor(mu, dtype=torch.float64), torch.tensor(s, dtype=torch.float64))
    v = torch.linspace(0.01, 0.99, 21, dtype=torch.float64)
    np.testing.assert_allclose(q.log_prob(v).exp().numpy(), logitnormal_pdf(v.numpy(), mu, s), rtol=1e-9)
    assert si.quad(lambda x: logitnormal_pdf(x, mu, s), 0, 1, limit=200)[0] == pytest.approx(1.0, abs=1e-7)
    mean = si.quad(lambda x: x * logitnormal_pdf(x, mu, s), 0, 1, limit=200)[0]
    assert q.mean.item() == pytest.approx(mean, rel=1e-8)
    mu0, s0 = -1.2, 0.9
    p = LogitNormal(torch.tensor(mu0, dtype=torch.float64), torch.tensor(s0, dtype=torch.float64))
    reference = si.quad(
        lambda x: logitnormal_pdf(x, mu, s) * (np.log(logitnormal_pdf(x, mu, s)) - np.log(logitnormal_pdf(x, mu0, s0))),
        1e-12,
        1 - 1e-12,
        limit=400,
    )[0]
    assert kl_divergence(q, p).item() == pytest.approx(reference, rel=1e-6)


def test_logitnormal_prior_matches_beta_in_logit_space():
    for alpha in [0.5, 1.0, 5.0, 20.0]:
        mean, std = beta_matched_logit_moments(alpha)
        samples = st.beta(1, alpha).rvs(400_000, random_state=0)
        logits = sp.logit(samples)
        assert mean == pytest.approx(logits.mean(), abs=0.02)
        assert std == pytest.approx(logits.std(), rel=0.01)


def test_logitnormal_with_huge_logits_stays_finite():
    loc = torch.tensor([-40.0, 0.0, 40.0], requires_grad=True)
    q = LogitNormal(loc, torch.tensor([1e-4, 10.0, 1e-4]))
    from infinimodal.stick_breaking import clamp_sticks

    v = clamp_sticks(q.rsample((10,)))
    lp = q.log_prob(v)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(loc.grad).all()


def test_logitnormal_family_reads_and_differentiates_large_logits():
    """The family's latent is the logit itself: the decoder reads 14 ... 20 as they are, the gradient with
    respect to the logit's mean does not vanish, and log q is the Normal density at the sample."""
    from infinimodal.latents import build_latent
    from infinimodal.stick_breaking import stick_weights

    family = build_latent("logitnormal", truncation=8, alpha=3.0, decoder_input="logitv").double()
    loc = torch.tensor([14.0, 16.0, 18.0, 20.0, -14.0, -18.0, -20.0], dtype=torch.float64, requires_grad=True)
    q = type(family.prior())(loc, torch.full((7,), 1e-3, dtype=torch.float64))
    x = family.rsample(q)
    code = family.decoder_input(x)
    np.testing.assert_allclose(code.detach().numpy(), loc.detach().numpy(), atol=0.01)
    code.sum().backward()
    np.testing.assert_allclose(loc.grad.numpy(), 1.0)
    np.testing.assert_allclose(
        q.log_prob(x).detach().numpy(), st.norm.logpdf(x.detach().numpy(), loc.detach().numpy(), 1e-3), rtol=1e-9
    )
    # log pi from the logits, against the weights of v = sigmoid(x) computed in float64 by plain products
    for mode in ("logpi", "pi"):
        other = build_latent("logitnormal", truncation=8, alpha=3.0, decoder_input=mode).double()
        logits = torch.tensor([[-3.0, 0.5, 2.0, -1.0, 4.0, -2.0, 1.0]], dtype=torch.float64)
        expected = stick_weights(torch.sigmoid(logits)).numpy()
        got = other.decoder_input(logits).numpy()
        np.testing.assert_allclose(np.exp(got) if mode == "logpi" else got, expected, rtol=1e-10)
    # E[pi] uses E[sigmoid(x)]: against Monte Carlo
    q = type(family.prior())(
        torch.tensor([0.3, -1.0], dtype=torch.float64), torch.tensor([1.5, 0.7], dtype=torch.float64)
    )
    mc = torch.sigmoid(q.sample((400_000,))).mean(0)
    np.testing.assert_allclose(q.stick_mean.numpy(), mc.numpy(), atol=3e-3)


# --- Gaussian ------------------------------------------------------------------------------------


def test_gaussian_kl_against_scipy():
    mu, s = 0.3, 0.4
    q, p = st.norm(mu, s), st.norm(0, 1)
    reference = si.quad(lambda x: q.pdf(x) * (q.logpdf(x) - p.logpdf(x)), -10, 10, limit=200)[0]
    kl = kl_divergence(
        Normal(torch.tensor(mu, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)),
        Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
    )
    assert kl.item() == pytest.approx(reference, rel=1e-7)


def test_beta_kl_gradient_matches_finite_differences_for_both_laws():
    # the KL's gradient is written out (trigamma terms), not derived by autograd: check it against finite differences,
    # for a batch of posteriors against a prior that broadcasts, from sharp to flat laws
    from infinimodal.latents.beta import StableBeta

    g = torch.Generator().manual_seed(0)
    a1 = torch.exp(torch.randn(4, 3, generator=g, dtype=torch.float64) * 3).requires_grad_()
    b1 = torch.exp(torch.randn(4, 3, generator=g, dtype=torch.float64) * 3).requires_grad_()
    a2 = torch.exp(torch.randn(3, generator=g, dtype=torch.float64)).requires_grad_()
    b2 = torch.exp(torch.randn(3, generator=g, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: kl_divergence(StableBeta(a, b), StableBeta(c, d)), (a1, b1, a2, b2)
    )


@pytest.mark.parametrize("name", ["gaussian", "beta", "kumaraswamy", "logitnormal", "gated"])
def test_log_prior_by_statistics_matches_scipy(name):
    # log_prior takes the linear form (statistics times natural parameters); scipy scores the same prior law directly
    family = build_latent(name, latent_dim=6, truncation=7, alpha=4.0)
    family.warm_up(0.5)  # the gated family's prior mid gate warm-up (alpha_t between alpha_start and alpha)
    z = family.sample_prior(50)
    prior = family.prior()
    zn = z.double().numpy()
    if name in ("gaussian", "logitnormal"):
        expected = st.norm.logpdf(zn, prior.loc.double().numpy(), prior.scale.double().numpy()).sum(-1)
    elif name in ("beta", "kumaraswamy"):
        expected = st.beta.logpdf(zn, prior.concentration1.double().numpy(), prior.concentration0.double().numpy()).sum(
            -1
        )
    else:
        d = family.latent_dim
        expected = st.norm.logpdf(zn[:, :d], 0.0, 1.0).sum(-1) + st.beta.logpdf(
            zn[:, d:], 1.0, prior.concentration0.double().numpy()
        ).sum(-1)
    np.testing.assert_allclose(family.log_prior(z).double().numpy(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("a, b", [(1.0, 30.0), (2.5, 0.7), (1.0, 1e4), (40.0, 3.0)])
def test_stable_beta_samples_follow_the_beta_law_and_their_gradients_are_the_exact_ones(a, b):
    """StableBeta draws through two Gamma draws: the samples against scipy's Beta CDF (Kolmogorov-Smirnov), and the
    pathwise gradient of the Monte Carlo mean of log v and log(1 - v) against the closed forms d/da E[log v] =
    psi'(a) - psi'(a + b), d/db E[log v] = -psi'(a + b) (and the same with a and b exchanged for log(1 - v))."""
    from infinimodal.latents.beta import StableBeta

    torch.manual_seed(0)
    ca, cb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    v = StableBeta(ca, cb).rsample((40000,)).double()
    assert st.kstest(v.detach().numpy(), st.beta(a, b).cdf).pvalue > 0.01
    for statistic, expected in (
        (torch.log(v), (sp.polygamma(1, a) - sp.polygamma(1, a + b), -sp.polygamma(1, a + b))),
        (torch.log1p(-v), (-sp.polygamma(1, a + b), sp.polygamma(1, b) - sp.polygamma(1, a + b))),
    ):
        grad_a, grad_b = torch.autograd.grad(statistic.mean(), (ca, cb), retain_graph=True)
        np.testing.assert_allclose([grad_a.item(), grad_b.item()], expected, rtol=0.05, atol=1e-6)


def test_stable_beta_moments_mode_entropy_and_expand_are_the_beta_laws():
    """StableBeta keeps its concentrations as given instead of torch's stacked Dirichlet: its mean, variance, entropy and
    mode against scipy (the mode against (a - 1) / (a + b - 2), for a, b > 1), an expanded copy against the original,
    and the concentrations' gradients flow."""
    from infinimodal.latents.beta import StableBeta

    a = torch.tensor([[1.0, 2.5, 40.0], [3.0, 7.0, 1.5]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([30.0, 4.0, 3.0], dtype=torch.float64)
    q = StableBeta(a, b)
    assert q.batch_shape == (2, 3) and isinstance(q, torch.distributions.Beta)
    law = st.beta(a.detach().numpy(), b.numpy())
    np.testing.assert_allclose(q.mean.detach().numpy(), law.mean(), rtol=1e-12)
    np.testing.assert_allclose(q.variance.detach().numpy(), law.var(), rtol=1e-12)
    np.testing.assert_allclose(q.entropy().detach().numpy(), law.entropy(), rtol=1e-10)
    aa = a.detach().numpy()
    bb = np.broadcast_to(b.numpy(), aa.shape)
    inside = (aa > 1) & (bb > 1)
    np.testing.assert_allclose(q.mode.detach().numpy()[inside], ((aa - 1) / (aa + bb - 2))[inside], rtol=1e-12)
    wide = q.expand((4, 2, 3))
    assert isinstance(wide, StableBeta) and wide.batch_shape == (4, 2, 3)
    torch.testing.assert_close(wide.concentration0[2], q.concentration0)
    (grad,) = torch.autograd.grad(q.mean.sum() + q.entropy().sum(), a)
    assert bool(torch.isfinite(grad).all()) and bool((grad != 0).all())


def scipy_beta_kl(a1, b1, a2, b2):
    """KL(Beta(a1, b1) || Beta(a2, b2)) from scipy's gammaln and digamma in float64."""
    log_b = lambda a, b: sp.gammaln(a) + sp.gammaln(b) - sp.gammaln(a + b)  # noqa: E731
    return (
        log_b(a2, b2)
        - log_b(a1, b1)
        + (a1 - a2) * sp.digamma(a1)
        + (b1 - b2) * sp.digamma(b1)
        + (a2 - a1 + b2 - b1) * sp.digamma(a1 + b1)
    )


@pytest.mark.parametrize("largest", [30.0, 99.0, 5e3])
def test_the_beta_kl_works_in_float32_only_inside_a_training_step_and_below_the_limit(largest):
    """Within `float32_beta_kl` (training steps) float32 laws whose concentrations are all below FLOAT32_KL_LIMIT take
    the float32 KL, within 3e-4 nats of scipy's; a law above the limit, and every law outside the context, take
    float64 (to 1e-9 of scipy's, relative)."""
    from infinimodal.latents.beta import FLOAT32_KL_LIMIT, StableBeta, float32_beta_kl, kl_dtype

    grid = np.geomspace(1.0, largest, 40)
    a1, b1 = (torch.tensor(v, dtype=torch.float32) for v in np.meshgrid(grid, grid))
    prior = StableBeta(torch.ones(()), torch.full((), 30.0))
    expected = scipy_beta_kl(a1.double().numpy(), b1.double().numpy(), 1.0, 30.0)
    outside = kl_divergence(StableBeta(a1, b1), prior).double().numpy()
    assert kl_dtype(a1, b1) == torch.float64
    with float32_beta_kl():
        inside = kl_divergence(StableBeta(a1, b1), prior).double().numpy()
        below = largest < FLOAT32_KL_LIMIT
        assert kl_dtype(a1, b1, prior.concentration0) == (torch.float32 if below else torch.float64)
        assert kl_dtype(a1.double(), b1.double()) == torch.float64  # float64 laws stay float64
    np.testing.assert_allclose(outside, expected, rtol=1e-6, atol=1e-6)  # returned in float32
    if below:
        np.testing.assert_allclose(inside, expected, rtol=0, atol=3e-4)
        assert not np.array_equal(inside, outside)  # it did work in float32, not in float64 rounded to float32
    else:
        np.testing.assert_array_equal(inside, outside)
