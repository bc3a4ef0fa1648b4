"""The suites the entries of `tests/contracts.py` pass. Every observation model: log-probability and mean against
scipy, draws whose average is the mean and that lie in the support, the support check, finite values at saturated
outputs. Every latent family and gated posterior: its KL to the prior against a Monte Carlo mean of log q - log p,
its fusion against the product of the experts over the prior (where the table says it is exact), finite prior draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinimodal.latents import LATENT_FAMILIES, build_latent
from infinimodal.latents.gated import EXPERTS
from infinimodal.likelihoods import LIKELIHOODS
from infinimodal.tabular import TableLikelihood

from .contracts import LATENT_CONTRACTS, LIKELIHOOD_CONTRACTS

NAMES = list(LIKELIHOOD_CONTRACTS)


def _params(likelihood, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, likelihood.n_params, *likelihood.shape, generator=generator, dtype=torch.float64)


def test_every_likelihood_has_a_contract():
    assert set(LIKELIHOODS) | {TableLikelihood.name} == set(LIKELIHOOD_CONTRACTS), (
        "a new likelihood needs an entry in tests/contracts.py"
    )


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_and_mean_match_scipy(name):
    contract = LIKELIHOOD_CONTRACTS[name]
    likelihood = contract.build()
    x = contract.data(np.random.default_rng(1), 6)
    p = _params(likelihood, 6)
    distribution = likelihood(p)
    np.testing.assert_allclose(
        distribution.log_prob(torch.from_numpy(x)).detach().numpy(),
        contract.reference(x, p.numpy(), likelihood),
        rtol=1e-8,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        distribution.mean.detach().numpy(), contract.mean(p.numpy(), likelihood), rtol=1e-8, atol=1e-10
    )


@pytest.mark.parametrize("name", NAMES)
def test_draws_average_to_the_mean_and_lie_in_the_support(name):
    contract = LIKELIHOOD_CONTRACTS[name]
    likelihood = contract.build()
    torch.manual_seed(0)
    p = (0.5 * _params(likelihood, 1, seed=2)).expand(20_000, *([-1] * (likelihood.shape.__len__() + 1)))
    with torch.no_grad():
        distribution = likelihood(p)
        draws, mean = distribution.sample(), distribution.mean[0].numpy()
    average = draws.mean(0).numpy()
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


# --- latent families ---------------------------------------------------------------------------------------

LATENTS = list(LATENT_CONTRACTS)
#: Draws of the Monte Carlo references.
DRAWS = 100_000


def _latent(key: str):
    contract = LATENT_CONTRACTS[key]
    torch.manual_seed(0)
    latent = build_latent(contract.family, **contract.settings).double()
    raw = 0.5 * torch.randn(3, 2, latent.head_size, dtype=torch.float64)  # three rows, two experts each
    return latent, raw


def test_every_latent_family_and_posterior_has_a_contract():
    assert {c.family for c in LATENT_CONTRACTS.values()} == set(LATENT_FAMILIES), (
        "a new family needs an entry in tests/contracts.py"
    )
    assert {c.settings.get("expert", "value") for c in LATENT_CONTRACTS.values() if c.family == "gated"} == set(EXPERTS)


@pytest.mark.parametrize("key", LATENTS)
def test_kl_to_the_prior_is_the_monte_carlo_mean_of_log_q_minus_log_p(key):
    latent, raw = _latent(key)
    q = latent.posterior(raw[:, 0])
    with torch.no_grad():
        kl = torch.stack(
            [latent.kl_per_dim(q).sum(-1) for _ in range(50)]
        )  # a family may estimate part of it from one draw
        z = latent.rsample(q, DRAWS)
        gap = q.log_prob(z).sum(-1) - latent.log_prior(z)
    standard_error = (gap.std(0) / DRAWS**0.5 + kl.std(0) / 50**0.5).numpy()
    assert (np.abs(kl.mean(0).numpy() - gap.mean(0).numpy()) <= 5 * standard_error + 1e-3).all(), (
        kl.mean(0),
        gap.mean(0),
    )


@pytest.mark.parametrize("key", [k for k in LATENTS if LATENT_CONTRACTS[k].exact_fusion is True])
def test_the_fused_posterior_is_the_product_of_the_experts_over_the_prior(key):
    latent, raw = _latent(key)
    experts = latent.posterior(raw)
    fused = latent.fuse(experts, torch.ones(3, 1, 2, dtype=torch.bool))
    with torch.no_grad():
        z = latent.rsample(fused, 8)[:, :, 0]  # [draws, rows, latent]
        ratio = (
            fused.log_prob(z.unsqueeze(2)).sum(-1)[:, :, 0]
            - experts.log_prob(z.unsqueeze(2)).sum(-1).sum(-1)
            + latent.log_prior(z)
        )
    assert ratio.var(0).max() < 1e-12  # the same constant (the normaliser) at every z


@pytest.mark.parametrize("key", LATENTS)
def test_prior_draws_have_finite_log_prior_and_decoder_input(key):
    latent, _ = _latent(key)
    z = latent.sample_prior(500)
    assert z.shape == (500, latent.latent_size)
    assert torch.isfinite(latent.log_prior(z)).all() and torch.isfinite(latent.decoder_input(z)).all()
