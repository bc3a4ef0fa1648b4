"""Observation models against scipy.stats, their support checks, and likelihood inference."""

import numpy as np
import pytest
import scipy.stats as st
import torch

from infinimodal.likelihoods import LIKELIHOODS, build_likelihood, infer_likelihood

SHAPE = (3, 2)


def params(likelihood, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, likelihood.n_params, *likelihood.shape, generator=g, dtype=torch.float64)


def test_bernoulli_against_scipy():
    lik = build_likelihood("bernoulli", SHAPE).double()
    p = params(lik)
    x = torch.bernoulli(torch.full((4, *SHAPE), 0.4, dtype=torch.float64))
    probs = torch.sigmoid(p[:, 0]).numpy()
    expected = st.bernoulli.logpmf(x.numpy(), probs).reshape(4, -1).sum(1)
    np.testing.assert_allclose(lik(p).log_prob(x).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(lik(p).mean.numpy(), probs)


@pytest.mark.parametrize("name,law", [("gaussian", st.norm), ("laplace", st.laplace)])
def test_location_scale_against_scipy_with_learned_scale(name, law):
    lik = build_likelihood(name, SHAPE).double()
    with torch.no_grad():
        lik.raw_scale.copy_(torch.linspace(-2, 2, 6, dtype=torch.float64).view(SHAPE))
    p = params(lik)
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    scale = lik.scale().detach().numpy()
    expected = law.logpdf(x.numpy(), p[:, 0].numpy(), scale).reshape(4, -1).sum(1)
    np.testing.assert_allclose(lik(p).log_prob(x).detach().numpy(), expected, rtol=1e-10)
    assert scale.min() >= 1e-3  # the floor that keeps the density bounded


def test_categorical_against_scipy():
    lik = build_likelihood("categorical", (5,)).double()
    p = params(lik)
    codes = np.array([0, 4, 2, 2])
    x = torch.from_numpy(np.eye(5)[codes])
    probs = torch.softmax(p[:, 0], -1).numpy()
    np.testing.assert_allclose(lik(p).log_prob(x).numpy(), np.log(probs[np.arange(4), codes]), rtol=1e-10)
    with pytest.raises(ValueError, match="one-hot"):
        build_likelihood("categorical", (5, 2))


def test_poisson_against_scipy():
    lik = build_likelihood("poisson", SHAPE).double()
    p = params(lik)
    x = torch.poisson(torch.full((4, *SHAPE), 3.0, dtype=torch.float64))
    rate = torch.exp(p[:, 0]).numpy()
    expected = st.poisson.logpmf(x.numpy(), rate).reshape(4, -1).sum(1)
    np.testing.assert_allclose(lik(p).log_prob(x).numpy(), expected, rtol=1e-10)


def test_negative_binomial_against_scipy():
    lik = build_likelihood("negative_binomial", SHAPE).double()
    p = params(lik)
    x = torch.poisson(torch.full((4, *SHAPE), 5.0, dtype=torch.float64))
    mean = torch.exp(p[:, 0]).numpy()
    r = (torch.nn.functional.softplus(lik.raw_inverse_dispersion) + 1e-4).detach().numpy()
    # scipy's nbinom(n, p) counts failures before n successes with success probability p: mean n (1 - p) / p
    expected = st.nbinom.logpmf(x.numpy(), r, r / (r + mean)).reshape(4, -1).sum(1)
    dist = lik(p)
    np.testing.assert_allclose(dist.log_prob(x).detach().numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(dist.mean.detach().numpy(), mean, rtol=1e-9)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_huge_decoder_outputs_stay_finite(name):
    shape = (4,)
    lik = build_likelihood(name, shape)
    p = torch.tensor([[[80.0, -80.0, 1e4, -1e4]]]).expand(1, lik.n_params, 4).contiguous()
    x = torch.tensor([[0.0, 1.0, 0.0, 0.0]]) if name == "categorical" else torch.tensor([[0.0, 1.0, 3.0, 1.0]])
    if name == "bernoulli":
        x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert torch.isfinite(lik(p).log_prob(x)).all()


def test_support_checks_name_the_rows():
    assert "rows 1" in LIKELIHOODS["poisson"].check(np.array([[1.0, 2.0], [0.5, 1.0]]))
    assert "rows 0" in LIKELIHOODS["negative_binomial"].check(np.array([[-1.0], [2.0]]))
    assert "must be 0 or 1, found values in [0, 2]" in LIKELIHOODS["bernoulli"].check(np.array([[0.0, 2.0]]))
    assert "1 values strictly between (e.g. 0.4)" in LIKELIHOODS["bernoulli"].check(np.array([[0.0, 0.4], [1.0, 1.0]]))
    assert LIKELIHOODS["bernoulli"].check(np.array([[0.0, 1.0], [1.0, 1.0]])) is None
    assert "rows 1" in LIKELIHOODS["categorical"].check(np.array([[0, 1, 0], [1, 1, 0]]))
    assert LIKELIHOODS["gaussian"].check(np.array([[-3.0, 2.0]])) is None


def test_likelihood_inference_from_values():
    assert infer_likelihood(np.array([[0.0, 1.0], [1.0, np.nan]])) == "bernoulli"
    assert infer_likelihood(np.array([[0, 3], [7, 2]])) == "poisson"
    assert infer_likelihood(np.array([[0.5, -1.0]])) == "gaussian"


@pytest.mark.parametrize("name, law", [("gaussian", "norm"), ("laplace", "laplace")])
def test_location_scale_log_prob_matches_scipy_with_learned_and_fixed_scales(name, law):
    import scipy.stats as st

    from infinimodal.likelihoods import build_likelihood

    for spec in (name, f"{name}:0.75"):
        likelihood = build_likelihood(spec, (4, 3))
        if spec == name:
            with torch.no_grad():
                likelihood.raw_scale.copy_(torch.randn(4, 3))  # a different learned scale per feature
        params = torch.randn(5, 1, 4, 3) * 2
        x = torch.randn(5, 4, 3) * 3
        p = likelihood(params)
        expected = getattr(st, law).logpdf(x.double().numpy(), params[:, 0].double().numpy(), likelihood.scale().double().detach().numpy()).sum((-1, -2))
        np.testing.assert_allclose(p.log_prob(x).detach().double().numpy(), expected, rtol=1e-5, atol=1e-4)
        assert p.mean.shape == (5, 4, 3) and p.sample().shape == (5, 4, 3)
        wider = p.expand((2, 5))  # Independent's expand reaches the base law's
        assert wider.batch_shape == (2, 5) and wider.log_prob(x).shape == (2, 5)
        torch.testing.assert_close(wider.log_prob(x)[1], p.log_prob(x))
