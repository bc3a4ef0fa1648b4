import math

import numpy as np
import pytest
import scipy.integrate as si
import torch

from infinimodal.latents import DECODER_INPUTS, LATENT_FAMILIES, STICK_FAMILIES, build_latent
from infinimodal.model import VAE


def small_model(family: str, input_size: int = 12, **settings) -> VAE:
    if family in STICK_FAMILIES:
        settings = {"truncation": 5, "alpha": 3.0} | settings
    else:
        settings = {"latent_dim": 4} | settings
    return VAE(input_size, build_latent(family, 16, **settings), hidden=[16])


def binary_batch(n=32, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.3), generator=g)


@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_one_training_step_changes_every_weight(family):
    torch.manual_seed(0)
    model = small_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point and "prior" not in k}
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    out = model(binary_batch())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    optimiser.step()
    after = model.state_dict()
    unchanged = [k for k, v in before.items() if torch.equal(v, after[k])]
    assert not unchanged, f"not updated: {unchanged}"


@pytest.mark.parametrize("decoder_input", DECODER_INPUTS)
@pytest.mark.parametrize("family", STICK_FAMILIES)
def test_decoder_inputs_for_every_stick_family(family, decoder_input):
    model = small_model(family, decoder_input=decoder_input)
    out = model(binary_batch())
    assert torch.isfinite(out.loss)
    expected = 4 if decoder_input == "logitv" else 5
    assert model.latent.decoder_input_size == expected
    torch.testing.assert_close(out.elbo, out.reconstruction - out.kl)
    assert out.kl_per_dim.shape == (32, 4)
    assert (out.kl_per_dim >= -1e-5).all()


@pytest.mark.parametrize("family", STICK_FAMILIES)
def test_two_sticks_minimum_truncation(family):
    model = small_model(family, truncation=2)
    out = model(binary_batch())
    assert out.kl_per_dim.shape == (32, 1) and torch.isfinite(out.loss)


def test_kl_weight_scales_only_the_kl():
    torch.manual_seed(0)
    model = small_model("beta")
    x = binary_batch()
    torch.manual_seed(1)
    full = model(x, kl_weight=1.0)
    torch.manual_seed(1)
    none = model(x, kl_weight=0.0)
    torch.testing.assert_close(none.loss, -full.reconstruction.mean())
    torch.testing.assert_close(full.loss, -(full.reconstruction - full.kl).mean())


def exact_log_marginal(model: VAE, x: torch.Tensor, lo: float, hi: float, n: int = 200_001) -> np.ndarray:
    """log p(x) = log int p(z) p(x | z) dz for a one-dimensional latent, by Simpson's rule on a fine grid.

    The integrand is bounded on [lo, hi] for every family here, so 2e5 nodes give ~1e-8 accuracy.
    """
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)[1:-1]  # open interval
    z = grid.view(-1, 1, 1)  # [n, 1 (broadcast over the batch), latent 1]
    with torch.no_grad():
        log_joint = model.latent.prior().log_prob(z).sum(-1) + model.observation(z).log_prob(x).sum(-1)  # [n, batch]
    peak = log_joint.max(0).values
    integral = si.simpson(torch.exp(log_joint - peak).numpy(), x=grid.numpy(), axis=0)
    return np.log(integral) + peak.numpy()


def fit_encoder(model: VAE, x: torch.Tensor, steps: int = 300) -> None:
    """A few hundred ELBO steps on the encoder only, so the proposal q(z | x) is a sensible one."""
    optimiser = torch.optim.Adam(list(model.encoder.parameters()) + list(model.latent.parameters()), lr=3e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        model(x).loss.backward()
        optimiser.step()


@pytest.mark.parametrize(
    "family,settings,bounds",
    [
        ("gaussian", {"latent_dim": 1}, (-10.0, 10.0)),
        ("beta", {"truncation": 2}, (0.0, 1.0)),
        ("kumaraswamy", {"truncation": 2}, (0.0, 1.0)),
        ("logitnormal", {"truncation": 2}, (0.0, 1.0)),
    ],
)
def test_importance_sampled_log_likelihood_matches_exact_marginal(family, settings, bounds):
    torch.manual_seed(0)
    model = VAE(6, build_latent(family, 8, **settings), hidden=[8]).double()
    x = binary_batch(3, 6, seed=2).double()
    exact = exact_log_marginal(model, x, *bounds)
    fit_encoder(model, x)
    torch.manual_seed(3)
    estimate = model.log_likelihood(x, n_samples=20_000, chunk=5_000)
    np.testing.assert_allclose(estimate.numpy(), exact, atol=0.02)
    # the single-sample bound sits below the marginal, E[ELBO] <= log p(x), and is not equal to it
    with torch.no_grad():
        elbos = torch.stack([model(x).elbo for _ in range(2000)]).mean(0).numpy()
    assert (elbos <= exact + 0.01).all() and (elbos < exact - 1e-3).any()


@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_mixed_precision_keeps_distributions_and_likelihood_in_float32(family):
    torch.manual_seed(0)
    model = small_model(family)
    x = binary_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = model.posterior(x)
        out = model(x)
    assert q.mean.dtype == torch.float32 and q.rsample().dtype == torch.float32
    assert out.loss.dtype == torch.float32 and out.kl_per_dim.dtype == torch.float32
    reference = model(x)  # fp32 throughout: bf16 matmuls change the loss by well under a percent
    assert out.kl.mean().item() == pytest.approx(reference.kl.mean().item(), rel=0.05)


@pytest.mark.parametrize("link", ["exp", "softplus"])
def test_beta_evidence_links_give_proper_posteriors_even_for_extreme_encoder_outputs(link):
    family = build_latent("beta", 4, truncation=3, alpha=2.0, evidence=link)
    with torch.no_grad():
        family.head.weight.zero_()
        family.head.bias.copy_(torch.tensor([-1e4, 0.0, 1e4, 50.0]))  # e_a for 2 sticks, then e_b
    q = family.posterior(torch.zeros(1, 4))
    a, b = q.concentration1, q.concentration0
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a >= 1).all() and (b >= 2.0).all()  # evidence never removes prior pseudo-counts
    assert torch.isfinite(family.kl_per_dim(q)).all()


def test_unknown_evidence_link_is_refused():
    with pytest.raises(ValueError, match="evidence link"):
        build_latent("beta", 4, evidence="square")
