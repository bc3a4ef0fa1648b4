"""Gaussian latents: the baseline every stick-breaking model is compared against.

Posterior N(mu, diag sigma^2) from the encoder, prior N(0, I) of dimension D (Kingma & Welling 2014).
The product of Gaussian experts is Gaussian: precisions add and the mean is the precision-weighted
mean (Wu & Goodman 2018, "Multimodal Generative Models for Scalable Weakly-Supervised Learning").
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Normal

from .base import LatentFamily, register_product

#: Smallest posterior scale: keeps log sigma and the KL finite when the encoder saturates.
MIN_SCALE = 1e-4


@register_product(Normal)
def normal_product(factors: Sequence[Normal]) -> Normal:
    """prod_m N(mu_m, s_m^2) ∝ N(sum(mu_m / s_m^2) / sum(1 / s_m^2), 1 / sum(1 / s_m^2))."""
    precisions = [f.scale.pow(-2) for f in factors]
    total_precision = torch.stack(torch.broadcast_tensors(*precisions)).sum(0)
    weighted = torch.stack(torch.broadcast_tensors(*[p * f.loc for p, f in zip(precisions, factors)])).sum(0)
    return Normal(weighted / total_precision, total_precision.rsqrt())


class GaussianLatent(LatentFamily):
    """z ~ N(mu, sigma^2) in D dimensions; the decoder reads z and kNN uses the posterior mean."""

    name = "gaussian"

    def __init__(self, hidden_size: int, latent_dim: int = 50) -> None:
        super().__init__(hidden_size, n_params=2, latent_size=latent_dim)
        self.decoder_input_size = latent_dim
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def posterior(self, hidden: Tensor) -> Normal:
        loc, raw_scale = self.head_params(hidden)
        return Normal(loc, F.softplus(raw_scale) + MIN_SCALE)

    def prior(self) -> Normal:
        return Normal(self.prior_loc, self.prior_scale)

    def decoder_input(self, z: Tensor) -> Tensor:
        return z

    def representation(self, q: Normal) -> Tensor:
        return q.mean
