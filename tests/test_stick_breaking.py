import math

import numpy as np
import pytest
import torch

from infinimodal.stick_breaking import (
    expected_stick_weights,
    expected_truncation_mass,
    log_stick_weights,
    stick_weights,
    sticks_from_weights,
    sticks_to_cover,
)


def direct_weights(v: np.ndarray) -> np.ndarray:
    """The textbook definition, in float64 and without logs."""
    K = v.shape[-1] + 1
    pi = np.empty(v.shape[:-1] + (K,))
    rest = np.ones(v.shape[:-1])
    for k in range(K - 1):
        pi[..., k] = v[..., k] * rest
        rest = rest * (1 - v[..., k])
    pi[..., K - 1] = rest
    return pi


@pytest.mark.parametrize("K", [2, 3, 50])
def test_weights_match_definition_and_sum_to_one(K):
    v = torch.rand(64, K - 1, dtype=torch.float64) * 0.98 + 0.01
    pi = stick_weights(v)
    assert pi.shape == (64, K)
    np.testing.assert_allclose(pi.numpy(), direct_weights(v.numpy()), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(pi.sum(-1).numpy(), 1.0, rtol=1e-12)


def test_log_weights_stay_finite_where_products_underflow():
    # 200 sticks of 0.99 leave 1e-400 of mass: pi underflows in float64, log pi does not.
    v = torch.full((1, 200), 0.99, dtype=torch.float64)
    log_pi = log_stick_weights(v)
    assert torch.isfinite(log_pi).all()
    assert log_pi[0, -1].item() == pytest.approx(200 * math.log(0.01), rel=1e-9)


def test_extreme_sticks_are_clamped_not_infinite():
    v = torch.tensor([[0.0, 1.0, 0.5]])
    log_pi = log_stick_weights(v)
    assert torch.isfinite(log_pi).all()
    assert stick_weights(v).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_sticks_from_weights_inverts():
    v = torch.rand(10, 7, dtype=torch.float64) * 0.9 + 0.05
    torch.testing.assert_close(sticks_from_weights(stick_weights(v)), v)


def test_expected_weights_match_monte_carlo():
    # For independent sticks E[pi_k] = E[v_k] prod_{j<k} (1 - E[v_j]).
    a = torch.tensor([2.0, 1.0, 3.0, 0.5])
    b = torch.tensor([1.0, 4.0, 2.0, 2.0])
    samples = torch.distributions.Beta(a, b).sample((200_000,)).double()
    mc = stick_weights(samples).mean(0)
    exact = expected_stick_weights((a / (a + b)).double())
    torch.testing.assert_close(exact, mc, atol=3e-3, rtol=0)


def test_sticks_to_cover():
    pi = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.995, 0.001, 0.002, 0.002], [0.25, 0.25, 0.25, 0.25]])
    assert sticks_to_cover(pi, 0.99).tolist() == [4, 1, 4]
    assert sticks_to_cover(pi, 0.8).tolist() == [2, 1, 4]


def test_expected_truncation_mass_matches_prior_samples():
    alpha, K = 5.0, 10
    v = torch.distributions.Beta(torch.ones(K - 1), torch.full((K - 1,), alpha)).sample((200_000,)).double()
    mc = stick_weights(v)[:, -1].mean().item()
    assert expected_truncation_mass(alpha, K) == pytest.approx(mc, rel=0.03)
