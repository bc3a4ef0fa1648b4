"""Logit-normal sticks: logit(v) ~ N(mu, sigma^2).

The prior is the logit-normal whose logit has the mean and variance of logit(v) under
v ~ Beta(1, alpha):  E = psi(1) - psi(alpha),  Var = psi'(1) + psi'(alpha)  (logit v = log v - log(1 - v)
with (log v, log(1 - v)) jointly the log of a Dirichlet pair; the covariance term vanishes for a = 1
as psi'(a + b) cancels). KL between logit-normals equals the KL between their Gaussian logits (KL is
invariant under the shared bijection), which torch's TransformedDistribution KL already computes.

The product of experts is taken in logit space: the densities of logit(v) are Gaussian and multiply
to a Gaussian (precisions add). In v-space this is the product of the experts' densities divided by
the Jacobian (v (1 - v))^(M-1), which is what "exact in logit space" means here.

The family's latent variable is the logit x = logit v itself (`StickLogits`, a Normal): sampling,
log densities and the decoder's input never pass through v, so nothing saturates. (Going x -> sigmoid ->
clamp(1e-6) -> logit made the decoder read 13.8 for every logit from 14 to 20, zeroed the gradient for
|loc| >= 14 and scored log q at the clamped point.) The KL is the Gaussian KL of the logits, as before.
`LogitNormal`, the law of v, remains for users and for products.
"""

from __future__ import annotations

import math
from typing import Sequence, cast

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Normal, SigmoidTransform, TransformedDistribution, constraints

from ..stick_breaking import clamp_sticks, log_stick_weights_from_logits, stick_weights
from .base import averaged_over_components, register_product
from .gaussian import MAX_LOG_PRECISION, normal_from_natural, normal_natural, normal_product
from .sticks import CLOSED_EXPERT, StickLatent

# Gauss-Hermite nodes for E[sigmoid(x)], x ~ N(mu, s^2): int exp(-t^2) f(mu + sqrt(2) s t) dt / sqrt(pi)
_HERMITE_T, _HERMITE_W = (torch.from_numpy(a) for a in np.polynomial.hermite.hermgauss(48))


class LogitNormal(TransformedDistribution):
    """v = sigmoid(x), x ~ N(loc, scale^2); log densities are evaluated through logit(v) in log space."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, validate_args: bool | None = None) -> None:
        super().__init__(
            Normal(loc, scale, validate_args=validate_args), SigmoidTransform(), validate_args=validate_args
        )

    @property
    def loc(self) -> Tensor:
        return cast(Normal, self.base_dist).loc  # the Normal that __init__ transforms

    @property
    def scale(self) -> Tensor:
        return cast(Normal, self.base_dist).scale

    def log_prob(self, value: Tensor) -> Tensor:
        value = clamp_sticks(value)
        log_v, log_1mv = torch.log(value), torch.log1p(-value)
        return self.base_dist.log_prob(log_v - log_1mv) - log_v - log_1mv

    def _on_nodes(self) -> tuple[Tensor, Tensor]:
        """sigmoid at the Gauss-Hermite nodes of the logit's law, and the normalised weights."""
        t = _HERMITE_T.to(self.loc)
        w = _HERMITE_W.to(self.loc) / math.sqrt(math.pi)
        x = self.loc.unsqueeze(-1) + math.sqrt(2.0) * self.scale.unsqueeze(-1) * t
        return torch.sigmoid(x), w

    @property
    def mean(self) -> Tensor:
        v, w = self._on_nodes()
        return (v * w).sum(-1)

    @property
    def variance(self) -> Tensor:
        v, w = self._on_nodes()
        mean = (v * w).sum(-1, keepdim=True)
        return ((v - mean).pow(2) * w).sum(-1)

    def expand(self, batch_shape, _instance=None):
        return LogitNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape))


class StickLogits(Normal):
    """The law of the sticks' logits x = logit v, x ~ N(loc, scale^2): the logit-normal family's latent variable.

    `stick_mean` is E[v] = E[sigmoid(x)] by 48-node Gauss-Hermite quadrature."""

    @property
    def stick_mean(self) -> Tensor:
        t = _HERMITE_T.to(self.loc)
        w = _HERMITE_W.to(self.loc) / math.sqrt(math.pi)
        x = self.loc.unsqueeze(-1) + math.sqrt(2.0) * self.scale.unsqueeze(-1) * t
        return (torch.sigmoid(x) * w).sum(-1)

    def expand(self, batch_shape, _instance=None):
        return StickLogits(self.loc.expand(batch_shape), self.scale.expand(batch_shape))


def beta_matched_logit_moments(alpha: float) -> tuple[float, float]:
    """Mean and standard deviation of logit(v) for v ~ Beta(1, alpha)."""
    from scipy.special import digamma, polygamma

    mean = float(digamma(1.0) - digamma(alpha))
    var = float(polygamma(1, 1.0) + polygamma(1, alpha))
    return mean, math.sqrt(var)


@register_product(LogitNormal)
def logitnormal_product(factors: Sequence[LogitNormal]) -> LogitNormal:
    """Product in logit space: the Gaussian product of the logits' laws."""
    logits = normal_product([f.base_dist for f in factors])
    return LogitNormal(logits.loc, logits.scale)


class LogitNormalSticks(StickLatent):
    """Sticks v_k = sigmoid(x_k), x_k ~ N(mu, sigma^2), prior matched to Beta(1, alpha) in logit space.

    As for Gaussians, the head gives the posterior mean of the logit and an expert precision
    lambda = exp(r) >= 0 on top of the prior's: 1 / sigma^2 = 1 / sigma_0^2 + lambda.
    """

    name = "logitnormal"
    #: The logit-normal prior's parameters, matched to Beta(1, alpha) (buffers: they move with the module and are saved).
    prior_loc: Tensor
    prior_scale: Tensor

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        mean, std = beta_matched_logit_moments(self.alpha)
        self.register_buffer("prior_loc", torch.full((self.latent_size,), mean))
        self.register_buffer("prior_scale", torch.full((self.latent_size,), std))

    def prior_head_output(self) -> Tensor:
        mean, _ = beta_matched_logit_moments(self.alpha)  # the head's first block is the posterior mean itself
        return torch.tensor([mean, CLOSED_EXPERT])

    def resize(self, n: int) -> None:
        super().resize(n)
        mean, std = beta_matched_logit_moments(self.alpha)
        self.prior_loc = self.prior_loc.new_full((n,), mean)
        self.prior_scale = self.prior_scale.new_full((n,), std)

    def posterior(self, raw: Tensor) -> StickLogits:
        loc, log_expert_precision = self.raw_params(raw)
        precision = self.prior_scale.pow(-2) + torch.exp(log_expert_precision.clamp_max(MAX_LOG_PRECISION))
        return StickLogits(loc, precision.rsqrt())

    def prior(self) -> StickLogits:
        return StickLogits(self.prior_loc, self.prior_scale)

    def natural(self, q: Distribution) -> tuple[Tensor, Tensor]:
        return normal_natural(cast(StickLogits, q))  # the family's own posteriors and prior (`fuse`)

    def from_natural(self, eta: tuple[Tensor, ...]) -> StickLogits:
        logits = normal_from_natural(eta)
        return StickLogits(logits.loc, logits.scale)

    @property
    def decoder_space_name(self) -> str:
        # the latent is the logit: its posterior mean is E[logit v], not the logit of E[v]
        return {"logitv": "E[logit v]", "logpi": "log pi at E[logit v]", "pi": "pi at E[logit v]"}[
            self.decoder_input_mode
        ]

    def rsample(self, q, n_samples: int | None = None) -> Tensor:
        # logits are real numbers: nothing to clamp
        shape = torch.Size() if n_samples is None else torch.Size([n_samples])
        return q.rsample(shape)

    def decoder_input(self, x: Tensor) -> Tensor:
        if self.decoder_input_mode == "logitv":
            return x
        log_pi = log_stick_weights_from_logits(x)
        return log_pi if self.decoder_input_mode == "logpi" else log_pi.exp()

    @averaged_over_components
    def expected_weights(self, q) -> Tensor:
        return stick_weights(q.stick_mean)
