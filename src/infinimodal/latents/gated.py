"""Stick-gated Gaussian latents: Gaussian values whose dimensions are switched off, in order, by stick-breaking.

Each of D dimensions carries a Gaussian value g_k ~ N(0, 1) and a stick v_k ~ Beta(1, alpha); the decoder
reads the gated code

    z_k = g_k * r_k,      r_k = prod_{j<=k} (1 - v_j)      (the stick left after k breaks),

so r_1 >= r_2 >= ... >= r_D by construction: dimension k reaches the decoder only as far as every stick
before it stays short. Using a late dimension therefore costs the KL of keeping all earlier sticks short,
which orders the dimensions by use, and the prior's expected remaining stick (alpha / (1 + alpha))^k sets
how fast unused dimensions fade (DESIGN.md section 6; the remaining-stick gate plays the role of the
IBP's gate probability prod_{j<=k} nu_j with nu_j = 1 - v_j ~ Beta(alpha, 1): Teh et al. 2007, Singh et al.
2017). A dimension whose gate is closed has g_k at its prior too, so unused dimensions carry no KL.

Both factors keep exact products of experts: the values' precisions add (Gaussian experts, as in the
`gaussian` family) and the sticks' evidence adds (Beta experts written as evidence, as in the `beta`
family), so PoE and MoPoE stay exact. The latent vector the prior is placed on is [g_1..g_D, v_1..v_D]
(2D scalars); `kl_per_dim` reports D values, dimension k's value KL plus its stick's KL.

The representation used for kNN and probes is the posterior mean of the gated code, E[g_k] E[r_k] (exact
for the mean-field posterior, where g and the sticks are independent); `expected_weights` gives the
stick-breaking weights E[pi] of the D sticks, so `sticks_99` is defined as for the other stick families.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal, constraints, kl_divergence, register_kl

from ..mixture import MixturePosterior
from ..stick_breaking import clamp_sticks, expected_stick_weights
from .base import LatentFamily, register_product
from .beta import EVIDENCE_LINKS, StableBeta, beta_product, evidence_from_raw
from .gaussian import MAX_LOG_PRECISION, normal_product


class GatedPosterior(Distribution):
    """Independent N(loc, scale^2) values and StableBeta(concentration1, concentration0) sticks, side by side.

    Batch shape [..., 2D] with scalar events: entries [..., :D] are the values g, [..., D:] the sticks v.
    """

    arg_constraints = {
        "loc": constraints.real, "scale": constraints.positive,
        "concentration1": constraints.positive, "concentration0": constraints.positive,
    }
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, concentration1: Tensor, concentration0: Tensor, validate_args=None) -> None:
        self.values = Normal(loc, scale, validate_args=validate_args)
        self.sticks = StableBeta(concentration1, concentration0, validate_args=validate_args)
        if self.values.batch_shape != self.sticks.batch_shape:
            raise ValueError(f"values {tuple(self.values.batch_shape)} and sticks {tuple(self.sticks.batch_shape)} differ in shape")
        *batch, dims = self.values.batch_shape
        super().__init__(torch.Size([*batch, 2 * dims]), validate_args=False)

    @property
    def dims(self) -> int:
        return self.values.batch_shape[-1]

    def split(self, value: Tensor) -> tuple[Tensor, Tensor]:
        return value[..., : self.dims], value[..., self.dims :]

    @property
    def loc(self) -> Tensor:
        return self.values.loc

    @property
    def scale(self) -> Tensor:
        return self.values.scale

    @property
    def concentration1(self) -> Tensor:
        return self.sticks.concentration1

    @property
    def concentration0(self) -> Tensor:
        return self.sticks.concentration0

    @property
    def support(self):
        return constraints.real

    def log_prob(self, value: Tensor) -> Tensor:
        g, v = self.split(value)
        return torch.cat(torch.broadcast_tensors(self.values.log_prob(g), self.sticks.log_prob(v)), dim=-1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return torch.cat([self.values.rsample(sample_shape), self.sticks.rsample(sample_shape)], dim=-1)

    @property
    def mean(self) -> Tensor:
        return torch.cat([self.values.mean, self.sticks.mean], dim=-1)

    @property
    def variance(self) -> Tensor:
        return torch.cat([self.values.variance, self.sticks.variance], dim=-1)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        half = torch.Size([*shape[:-1], shape[-1] // 2])
        return GatedPosterior(self.loc.expand(half), self.scale.expand(half), self.concentration1.expand(half), self.concentration0.expand(half))


@register_kl(GatedPosterior, GatedPosterior)
def _kl_gated(p: GatedPosterior, q: GatedPosterior) -> Tensor:
    """Per scalar: the values' Gaussian KL beside the sticks' Beta KL (float64, see StableBeta)."""
    return torch.cat(torch.broadcast_tensors(kl_divergence(p.values, q.values), kl_divergence(p.sticks, q.sticks)), dim=-1)


@register_product(GatedPosterior)
def gated_product(factors: Sequence[GatedPosterior]) -> GatedPosterior:
    """Values multiply as Gaussians (precisions add), sticks as Betas (natural parameters add)."""
    values = normal_product([f.values for f in factors])
    sticks = beta_product([f.sticks for f in factors])
    return GatedPosterior(values.loc, values.scale, sticks.concentration1, sticks.concentration0)


def remaining_stick(v: Tensor) -> Tensor:
    """r_k = prod_{j<=k} (1 - v_j) in log space (a cumulative sum of log1p(-v)), shape of v."""
    return torch.exp(torch.cumsum(torch.log1p(-clamp_sticks(v)), dim=-1))


class GatedSticks(LatentFamily):
    """D Gaussian values gated by the remaining stick of D Beta(1, alpha) sticks (see the module docstring)."""

    name = "gated"
    has_sticks = True
    n_params = 4  # value mean, value expert log-precision, stick evidence e_a, e_b: per dimension

    def __init__(self, latent_dim: int = 50, alpha: float = 5.0, evidence: str = "exp") -> None:
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        if not alpha > 0:
            raise ValueError(f"the prior concentration alpha must be positive, got {alpha}")
        if evidence not in EVIDENCE_LINKS:
            raise ValueError(f"evidence link must be one of {', '.join(EVIDENCE_LINKS)}, got {evidence!r}")
        super().__init__(latent_size=2 * latent_dim)
        self.latent_dim = latent_dim
        self.truncation = latent_dim + 1  # stick-breaking weights: D sticks and the rest
        self.alpha = float(alpha)
        self.evidence_link = evidence
        self.decoder_input_size = latent_dim
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))
        self.register_buffer("prior_a", torch.ones(latent_dim))
        self.register_buffer("prior_b", torch.full((latent_dim,), self.alpha))

    @property
    def n_dimensions(self) -> int:
        return self.latent_dim

    def describe(self) -> str:
        return f"D = {self.latent_dim} values gated by {self.latent_dim} sticks (alpha = {self.alpha:g})"

    @property
    def head_size(self) -> int:
        return self.n_params * self.latent_dim

    def prior(self) -> GatedPosterior:
        return GatedPosterior(self.prior_loc, self.prior_scale, self.prior_a, self.prior_b)

    def posterior(self, raw: Tensor) -> GatedPosterior:
        loc, log_expert_precision, raw_a, raw_b = self.raw_params(raw)
        precision = 1.0 + torch.exp(log_expert_precision.clamp_max(MAX_LOG_PRECISION))
        e_a, e_b = evidence_from_raw((raw_a, raw_b), self.evidence_link)
        return GatedPosterior(loc, precision.rsqrt(), self.prior_a + e_a, self.prior_b + e_b)

    def natural(self, q: GatedPosterior) -> tuple[Tensor, Tensor]:
        # values: (precision * mean, precision); sticks: (a, b), Beta's natural parameters up to a constant
        precision = q.scale.pow(-2)
        return torch.cat([precision * q.loc, q.concentration1], -1), torch.cat([precision, q.concentration0], -1)

    def from_natural(self, eta: tuple[Tensor, Tensor]) -> GatedPosterior:
        first, second = eta
        d = self.latent_dim
        precision = second[..., :d]
        return GatedPosterior(first[..., :d] / precision, precision.rsqrt(), first[..., d:], second[..., d:])

    def rsample(self, q: Distribution, n_samples: int | None = None) -> Tensor:
        z = super().rsample(q, n_samples)
        d = self.latent_dim
        return torch.cat([z[..., :d], clamp_sticks(z[..., d:])], dim=-1)

    def decoder_input(self, z: Tensor) -> Tensor:
        d = self.latent_dim
        return z[..., :d] * remaining_stick(z[..., d:])

    def kl_per_dim(self, q: Distribution) -> Tensor:
        if isinstance(q, MixturePosterior):
            return q.average(self.kl_per_dim)
        kl = kl_divergence(q, self.prior())
        return kl[..., : self.latent_dim] + kl[..., self.latent_dim :]

    def expected_gate(self, q: Distribution) -> Tensor:
        """E[r_k] = prod_{j<=k} (1 - E[v_j]) for independent sticks (mixtures: the components' average)."""
        if isinstance(q, MixturePosterior):
            return q.average(self.expected_gate)
        return torch.cumprod(1.0 - q.sticks.mean, dim=-1)

    def representation(self, q: Distribution) -> Tensor:
        """E[g_k r_k] = E[g_k] E[r_k] per mean-field component; a mixture averages its components'."""
        if isinstance(q, MixturePosterior):
            return q.average(self.representation)
        return q.values.mean * self.expected_gate(q)

    def decoder_space_representation(self, q: Distribution) -> Tensor:
        return self.representation(q)

    def expected_weights(self, q: Distribution) -> Tensor:
        if isinstance(q, MixturePosterior):
            return q.average(self.expected_weights)
        return expected_stick_weights(q.sticks.mean)
