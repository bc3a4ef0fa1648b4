"""Observation models: support messages, likelihood inference, fixed scales. Every model against scipy (log-probability,
mean, draws, support, saturated outputs) is in the contract table, tests/contracts.py and tests/test_contracts.py."""

import numpy as np
import pytest
import scipy.stats as st
import torch

from infinimodal.likelihoods import LIKELIHOODS, build_likelihood, infer_likelihood


def test_a_categorical_modality_is_one_variable():
    with pytest.raises(ValueError, match="one-hot"):
        build_likelihood("categorical", (5, 2))


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

    from infinimodal.likelihoods import build_likelihood

    for spec in (name, f"{name}:0.75"):
        likelihood = build_likelihood(spec, (4, 3))
        if spec == name:
            with torch.no_grad():
                likelihood.raw_scale.copy_(torch.randn(4, 3))  # a different learned scale per feature
        params = torch.randn(5, 1, 4, 3) * 2
        x = torch.randn(5, 4, 3) * 3
        p = likelihood(params)
        expected = (
            getattr(st, law)
            .logpdf(x.double().numpy(), params[:, 0].double().numpy(), likelihood.scale().double().detach().numpy())
            .sum((-1, -2))
        )
        np.testing.assert_allclose(p.log_prob(x).detach().double().numpy(), expected, rtol=1e-5, atol=1e-4)
        assert p.mean.shape == (5, 4, 3) and p.sample().shape == (5, 4, 3)
        wider = p.expand((2, 5))  # Independent's expand reaches the base law's
        assert wider.batch_shape == (2, 5) and wider.log_prob(x).shape == (2, 5)
        torch.testing.assert_close(wider.log_prob(x)[1], p.log_prob(x))
