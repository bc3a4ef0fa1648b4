"""The suite every observation model of `tests/contracts.py` passes: log-probability and mean against scipy, draws
whose average is the mean and that lie in the support, the support check, and finite values at saturated outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinimodal.likelihoods import LIKELIHOODS
from infinimodal.tabular import TableLikelihood

from .contracts import LIKELIHOOD_CONTRACTS

NAMES = list(LIKELIHOOD_CONTRACTS)


def _params(likelihood, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, likelihood.n_params, *likelihood.shape, generator=generator, dtype=torch.float64)


def test_every_likelihood_has_a_contract():
    assert set(LIKELIHOODS) | {TableLikelihood.name} == set(LIKELIHOOD_CONTRACTS), "a new likelihood needs an entry in tests/contracts.py"


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_and_mean_match_scipy(name):
    contract = LIKELIHOOD_CONTRACTS[name]
    likelihood = contract.build()
    x = contract.data(np.random.default_rng(1), 6)
    p = _params(likelihood, 6)
    distribution = likelihood(p)
    np.testing.assert_allclose(distribution.log_prob(torch.from_numpy(x)).detach().numpy(), contract.reference(x, p.numpy(), likelihood), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(distribution.mean.detach().numpy(), contract.mean(p.numpy(), likelihood), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_draws_average_to_the_mean_and_lie_in_the_support(name):
    contract = LIKELIHOOD_CONTRACTS[name]
    likelihood = contract.build()
    torch.manual_seed(0)
    p = (0.5 * _params(likelihood, 1, seed=2)).expand(20_000, *([-1] * (likelihood.shape.__len__() + 1)))
    with torch.no_grad():
        distribution = likelihood(p)
        draws = distribution.sample()
    average, mean = draws.mean(0).numpy(), distribution.mean[0].numpy()
    spread = draws.std(0).numpy()
    assert (np.abs(average - mean) <= 5 * spread / np.sqrt(len(draws)) + 1e-9).all()  # five standard errors
    if not isinstance(likelihood, TableLikelihood):
        assert type(likelihood).check(draws[:200].numpy()) is None


@pytest.mark.parametrize("name", [n for n in NAMES if LIKELIHOOD_CONTRACTS[n].invalid is not None])
def test_the_support_check_refuses_a_row_outside_it(name):
    contract = LIKELIHOOD_CONTRACTS[name]
    likelihood = contract.build()
    valid = contract.data(np.random.default_rng(3), 2)
    assert type(likelihood).check(valid) is None
    problem = type(likelihood).check(np.concatenate([valid, contract.invalid]))
    assert problem is not None and "2" in problem  # it names the row


@pytest.mark.parametrize("name", NAMES)
def test_saturated_decoder_outputs_give_finite_values_and_gradients(name):
    contract = LIKELIHOOD_CONTRACTS[name]
    likelihood = contract.build()
    x = torch.from_numpy(contract.data(np.random.default_rng(4), 4))
    for extreme in (80.0, -80.0, 1e4, -1e4):
        p = torch.full((4, likelihood.n_params, *likelihood.shape), extreme, dtype=torch.float64, requires_grad=True)
        log_p = likelihood(p).log_prob(x)
        log_p.sum().backward()
        assert torch.isfinite(log_p).all() and torch.isfinite(p.grad).all(), (name, extreme)
