"""Product rules against the numerically normalised product of the expert densities."""

import numpy as np
import pytest
import scipy.integrate as si
import torch
from torch.distributions import Beta, Normal

from infinimodal.latents import BetaSticks, Kumaraswamy, LogitNormal, ProductNotClosedForm, product


def normalised_product_moments(log_densities, lo, hi):
    """Mean and variance of the density proportional to exp(sum of log densities), by quadrature."""
    f = lambda x: np.exp(sum(ld(x) for ld in log_densities))  # noqa: E731
    z = si.quad(f, lo, hi, limit=400, epsabs=0, epsrel=1e-12)[0]
    m1 = si.quad(lambda x: x * f(x), lo, hi, limit=400, epsabs=0, epsrel=1e-12)[0] / z
    m2 = si.quad(lambda x: x * x * f(x), lo, hi, limit=400, epsabs=0, epsrel=1e-12)[0] / z
    return z, m1, m2 - m1**2


def log_density(dist):
    return lambda x: dist.log_prob(torch.tensor(x, dtype=torch.float64)).item()


def f64(*values):
    return [torch.tensor(v, dtype=torch.float64) for v in values]


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
    _, mean, var = normalised_product_moments([log_density(d) for d in experts + [prior]], 0, 1)
    assert result.mean.item() == pytest.approx(mean, rel=1e-7)
    assert result.variance.item() == pytest.approx(var, rel=1e-7)
    # and the density itself, pointwise
    z, _, _ = normalised_product_moments([log_density(d) for d in experts + [prior]], 0, 1)
    for v in [0.05, 0.3, 0.7]:
        unnormalised = np.exp(sum(log_density(d)(v) for d in experts + [prior]))
        assert result.log_prob(torch.tensor(v, dtype=torch.float64)).exp().item() == pytest.approx(unnormalised / z, rel=1e-7)


def test_beta_evidence_posterior_is_prior_times_expert():
    family = BetaSticks(hidden_size=8, truncation=6, alpha=3.0)
    hidden = torch.randn(4, 8)
    direct = family.posterior(hidden)
    via_product = product([family.expert(hidden)], prior=family.prior())
    torch.testing.assert_close(direct.concentration1, via_product.concentration1)
    torch.testing.assert_close(direct.concentration0, via_product.concentration0)
    # evidence adds: two experts' evidence gives the posterior of their summed evidence
    e1 = family.expert(hidden)
    e2 = family.expert(hidden.flip(0))
    joint = product([e1, e2], prior=family.prior())
    torch.testing.assert_close(joint.concentration1, 1 + (e1.concentration1 - 1) + (e2.concentration1 - 1))
    torch.testing.assert_close(joint.concentration0, 3.0 + (e1.concentration0 - 1) + (e2.concentration0 - 1))


def test_improper_beta_product_is_refused():
    with pytest.raises(ValueError, match="not normalisable"):
        product([Beta(*f64(0.3, 2.0)), Beta(*f64(0.4, 2.0))])


def test_logitnormal_product_is_exact_in_logit_space():
    experts = [LogitNormal(*f64(0.5, 1.0)), LogitNormal(*f64(-2.0, 0.7))]
    prior = LogitNormal(*f64(-1.0, 1.5))
    result = product(experts, prior=prior)
    # densities of x = logit(v) are the base Gaussians; their normalised product must be result's base
    logit_densities = [log_density(d.base_dist) for d in experts + [prior]]
    _, mean, var = normalised_product_moments(logit_densities, -30, 30)
    assert result.loc.item() == pytest.approx(mean, rel=1e-8)
    assert result.scale.item() ** 2 == pytest.approx(var, rel=1e-8)


def test_kumaraswamy_product_raises_a_clear_error():
    with pytest.raises(ProductNotClosedForm, match="no closed form"):
        product([Kumaraswamy(*f64(2.0, 3.0)), Kumaraswamy(*f64(1.0, 1.0))])


def test_mixed_families_are_refused():
    with pytest.raises(TypeError, match="one family"):
        product([Beta(*f64(2.0, 3.0))], prior=Normal(*f64(0.0, 1.0)))
