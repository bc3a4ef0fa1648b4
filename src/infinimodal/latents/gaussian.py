"""Gaussian latents: the baseline every stick-breaking model is compared against.

Prior N(0, I) of dimension D (Kingma & Welling 2014). The unimodal posterior is the prior times a
Gaussian expert: the head gives the posterior mean mu and the expert's precision lambda = exp(r) >= 0,
so q(z | x_m) = N(mu, 1 / (1 + lambda)). Products of Gaussians are Gaussian: precisions add and the
mean is the precision-weighted mean (Wu & Goodman 2018, "Multimodal Generative Models for Scalable
Weakly-Supervised Learning"), so PoE and MoPoE are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, cast

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from ..mixture import LinearLogDensity, register_linear_log_density
from ..settings import Settings, setting
from .base import LatentFamily, register_product

#: exp(18) = 6.6e7: posterior scales down to ~1.2e-4, which keeps log sigma and the KL finite.
MAX_LOG_PRECISION = 18.0


@register_product(Normal)
def normal_product(factors: Sequence[Normal]) -> Normal:
    """prod_m N(mu_m, s_m^2) ∝ N(sum(mu_m / s_m^2) / sum(1 / s_m^2), 1 / sum(1 / s_m^2))."""
    precisions = [f.scale.pow(-2) for f in factors]
    total_precision = torch.stack(torch.broadcast_tensors(*precisions)).sum(0)
    weighted = torch.stack(torch.broadcast_tensors(*[p * f.loc for p, f in zip(precisions, factors)])).sum(0)
    return Normal(weighted / total_precision, total_precision.rsqrt())


def normal_statistics(z: Tensor) -> Tensor:
    """(z, z^2): a Gaussian's sufficient statistics, [..., L, 2], in float64."""
    z = z.double()
    return torch.stack([z, z.square()], dim=-1)


@register_linear_log_density(Normal)
def normal_linear_log_density(q: Normal) -> LinearLogDensity:
    """log N(z; mu, s^2) = z mu / s^2 - z^2 / (2 s^2) - [mu^2 / (2 s^2) + log s + log(2 pi) / 2], in float64: the terms are
    of order mu^2 / s^2 and cancel, which float32 would not survive (mu = 3, s = 1e-3: 0.5 nats)."""
    loc, scale = q.loc.double(), q.scale.double()
    precision = scale.pow(-2)
    natural = torch.stack(torch.broadcast_tensors(precision * loc, -0.5 * precision), dim=-1)
    normalizer = 0.5 * precision * loc.square() + torch.log(scale) + 0.5 * math.log(2 * math.pi)
    return LinearLogDensity(natural, normalizer, normal_statistics)


def normal_natural(q: Normal) -> tuple[Tensor, Tensor]:
    """(precision * mean, precision): linear in the natural parameters, so products are sums."""
    precision = q.scale.pow(-2)
    return precision * q.loc, precision


def normal_from_natural(eta: tuple[Tensor, ...]) -> Normal:
    weighted_mean, precision = eta
    return Normal(weighted_mean / precision, precision.rsqrt())


@dataclass
class GaussianSettings(Settings):
    owner = "gaussian"
    latent_dim: int = setting(50, "latent dimension D", check=lambda v: v >= 1, requirement="at least 1")


class GaussianLatent(LatentFamily):
    """z ~ N(mu, sigma^2) in D dimensions; the decoder reads z and kNN uses the posterior mean."""

    name = "gaussian"
    Settings = GaussianSettings
    #: The N(0, I) prior's parameters (buffers: they move with the module and are saved).
    prior_loc: Tensor
    prior_scale: Tensor

    def __init__(self, latent_dim: int = 50) -> None:
        super().__init__(latent_dim)
        self.decoder_input_size = latent_dim
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def posterior(self, raw: Tensor) -> Normal:
        loc, log_expert_precision = self.raw_params(raw)
        precision = 1.0 + torch.exp(log_expert_precision.clamp_max(MAX_LOG_PRECISION))
        return Normal(loc, precision.rsqrt())

    def prior(self) -> Normal:
        return Normal(self.prior_loc, self.prior_scale)

    def natural(self, q: Distribution) -> tuple[Tensor, Tensor]:
        return normal_natural(cast(Normal, q))  # the family's own posteriors and prior (`fuse`)

    def from_natural(self, eta: tuple[Tensor, ...]) -> Normal:
        return normal_from_natural(eta)

    def decoder_input(self, z: Tensor) -> Tensor:
        return z

    def representation(self, q) -> Tensor:
        return q.mean
