"""The variational autoencoder as a plain `nn.Module`: encode -> posterior -> sample -> decode -> loss.

It knows nothing of Lightning or files. The latent family supplies every distribution; the loss is
`kl_divergence` and `log_prob`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .latents import LatentFamily
from .likelihoods import LIKELIHOODS
from .nets import full_precision, mlp


@dataclass
class LossOutput:
    """Per-batch results. `loss` is what the optimiser minimises; the rest are per-sample diagnostics."""

    loss: Tensor  # scalar: -(reconstruction - kl_weight * kl), batch mean
    elbo: Tensor  # [batch], with KL weight 1
    reconstruction: Tensor  # [batch], log p(x | z) at one posterior sample
    kl: Tensor  # [batch]
    kl_per_dim: Tensor  # [batch, latent_size]


class VAE(nn.Module):
    """Single-modality VAE over any latent family, with an MLP encoder and decoder."""

    def __init__(
        self,
        input_size: int,
        latent: LatentFamily,
        hidden: Sequence[int] = (500,),
        likelihood: str = "bernoulli",
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the encoder needs at least one hidden layer")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        params_per_feature, self._likelihood = LIKELIHOODS[likelihood]
        self.input_size = input_size
        self.latent = latent
        self.encoder = mlp(input_size, hidden)
        self.decoder = mlp(latent.decoder_input_size, list(reversed(hidden)), params_per_feature * input_size)

    def posterior(self, x: Tensor) -> Distribution:
        return self.latent.posterior(self.encoder(x))

    def observation(self, z: Tensor) -> Distribution:
        """p(x | z) for latent samples z of shape [..., latent_size]."""
        return self._likelihood(full_precision(self.decoder(self.latent.decoder_input(z))))

    def forward(self, x: Tensor, kl_weight: float = 1.0) -> LossOutput:
        q = self.posterior(x)
        z = self.latent.rsample(q)
        reconstruction = self.observation(z).log_prob(x).sum(-1)
        kl_per_dim = self.latent.kl_per_dim(q)
        kl = kl_per_dim.sum(-1)
        loss = -(reconstruction - kl_weight * kl).mean()
        return LossOutput(loss, reconstruction - kl, reconstruction, kl, kl_per_dim)

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, n_samples: int = 1000, chunk: int = 100) -> Tensor:
        """Importance-sampled log p(x) (the IWAE bound of Burda et al. 2016) with the posterior as proposal.

        log p(x) ~= logsumexp_s [log p(x | z_s) + log p(z_s) - log q(z_s | x)] - log S, computed `chunk`
        samples at a time and combined by a running logsumexp, so memory does not grow with S.
        """
        q = self.posterior(x)
        prior = self.latent.prior()
        running = torch.full((x.shape[0],), -math.inf, device=x.device)
        done = 0
        while done < n_samples:
            s = min(chunk, n_samples - done)
            z = self.latent.rsample(q, s)  # [s, batch, latent_size]
            log_w = (
                self.observation(z).log_prob(x.expand(s, *x.shape)).sum(-1)
                + prior.log_prob(z).sum(-1)
                - q.log_prob(z).sum(-1)
            )
            running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
            done += s
        return running - math.log(n_samples)
