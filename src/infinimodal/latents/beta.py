"""Beta sticks written as evidence: the stick-breaking family whose product of experts is exact.

Each encoder outputs non-negative pseudo-counts (e_a, e_b) per stick. Read as the expert
Beta(1 + e_a, 1 + e_b), i.e. the likelihood-like factor v^e_a (1 - v)^e_b, its product with the prior
Beta(1, alpha) is the posterior

    q(v | x) = Beta(1 + e_a, alpha + e_b),

because Beta natural parameters (a - 1, b - 1) add. With several modalities the evidence of the
available ones adds the same way, a missing modality contributes zero, and the result is always a
proper Beta. Samples use torch's `Beta.rsample`, whose gradients come from implicit
reparameterisation (Figurnov et al. 2018).

Evidence reaches exp(15) = 3.3e6 pseudo-counts, where the closed-form KL and log density are
differences of lgamma terms of order 1e7 that float32 cannot resolve (measured: the KL off by 1.8 nats,
log q by 0.45 nats). `StableBeta` is torch's Beta with both evaluated in float64, its KL registered with
`torch.distributions.kl`, so every caller of `kl_divergence` and `log_prob` gets the precise value
without changing torch's own Beta for anyone else. A training step (`float32_beta_kl`, entered by the training plan)
takes the KL in float32 where every concentration is below FLOAT32_KL_LIMIT, where float32 is exact to a step's noise.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.distributions import Beta, Dirichlet, Distribution, register_kl
from torch.distributions.exp_family import ExponentialFamily
from torch.distributions.utils import broadcast_all

from ..mixture import LinearLogDensity, register_linear_log_density
from ..settings import setting
from .base import register_product
from .sticks import StickLatent, StickSettings

if TYPE_CHECKING:
    from torch.types import _size  # the sample shapes torch.distributions accept


def log_beta_function(a: Tensor, b: Tensor) -> Tensor:
    """log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a + b), in the dtype given (callers pass float64)."""
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def standard_gamma(concentration: Tensor) -> Tensor:
    """Gamma(concentration, 1) draws with torch's implicit-reparameterisation gradient, as `Gamma.rsample` takes them
    (clamped to the dtype's tiny, so that x / (x + y) stays defined), without building a distribution and a unit
    rate for them at every step."""
    draws = torch._standard_gamma(concentration).clone()  # its backward reads its own output: clamp a copy
    draws.detach().clamp_(min=torch.finfo(draws.dtype).tiny)
    return draws


class StableBeta(Beta):
    """Beta(concentration1, concentration0) whose log density and KL are computed in float64.

    log p(v) = (a - 1) log v + (b - 1) log(1 - v) - log B(a, b): each term grows like a log a while the
    sum stays O(log a), so float32 loses everything past a ~ 1e6. Samples are drawn in float64 too: torch's
    implicit-reparameterisation gradient in float32 is half the true d E[logit v] / d b at b = 1e5, zero at
    1e7 and NaN at 1e9 (float64 holds to 1e7, beyond the evidence cap). Moments and entropy are torch's.

    It holds its two concentrations as they are given: torch's Beta stacks them into a two-class Dirichlet at every
    construction and selects them back at every read (a copy each way and two autograd nodes, about 0.14 ms for a
    [128, 7, 22] posterior, built several times per training step); the Dirichlet is built only for the mode and the
    entropy.
    """

    def __init__(self, concentration1: Tensor, concentration0: Tensor, validate_args: bool | None = None) -> None:
        self._concentration1, self._concentration0 = broadcast_all(concentration1, concentration0)
        ExponentialFamily.__init__(self, self._concentration1.shape, validate_args=validate_args)

    @property
    def concentration1(self) -> Tensor:
        return self._concentration1

    @property
    def concentration0(self) -> Tensor:
        return self._concentration0

    def expand(self, batch_shape, _instance=None) -> "StableBeta":
        shape = torch.Size(batch_shape)
        return StableBeta(self._concentration1.expand(shape), self._concentration0.expand(shape), validate_args=False)

    def _as_dirichlet(self) -> Dirichlet:
        return Dirichlet(torch.stack([self._concentration1, self._concentration0], -1), validate_args=False)

    @property
    def mode(self) -> Tensor:
        return self._as_dirichlet().mode[..., 0]

    def entropy(self) -> Tensor:
        return self._as_dirichlet().entropy()

    def rsample(self, sample_shape: _size = torch.Size()) -> Tensor:
        """v = x / (x + y) with x ~ Gamma(a), y ~ Gamma(b), each with torch's implicit-reparameterisation gradient: the
        same law and an unbiased pathwise gradient as torch's Beta (a two-class Dirichlet), at half its cost (the
        Dirichlet's gradient series was a tenth of the default model's training step; benchmarks/throughput.py)."""
        shape = self._extended_shape(sample_shape)
        x, y = (standard_gamma(c.double().expand(shape)) for c in (self.concentration1, self.concentration0))
        return (x / (x + y)).to(self.concentration1.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        a, b = self.concentration1.double(), self.concentration0.double()
        v = value.double()
        log_density = torch.xlogy(a - 1, v) + torch.xlogy(b - 1, -v + 1) - log_beta_function(a, b)
        return log_density.to(torch.promote_types(value.dtype, self.concentration1.dtype))


class _BetaKL(torch.autograd.Function):
    """KL(Beta(a1, b1) || Beta(a2, b2)) in float64 with its gradient written out: autograd through the formula would
    evaluate digamma again for lgamma's derivative and keep a dozen intermediates; the analytic gradient needs only
    trigamma of the first law's parameters (and, when the second law's parameters need a gradient, the digammas that
    the value already computed):

        dKL/da1 = (a1 - a2) psi'(a1) + (a2 - a1 + b2 - b1) psi'(a1 + b1),   dKL/da2 = psi(a2) - psi(a2 + b2) - psi(a1) + psi(a1 + b1)

    and the same with a and b exchanged. Inputs are float64 tensors that broadcast; each gradient is summed back to its
    input's shape (a prior of shape [L] costs lgamma on [L] only)."""

    @staticmethod
    def forward(ctx, a1: Tensor, b1: Tensor, a2: Tensor, b2: Tensor) -> Tensor:
        psi_a1, psi_b1, psi_sum1 = torch.digamma(a1), torch.digamma(b1), torch.digamma(a1 + b1)
        ctx.save_for_backward(a1, b1, a2, b2, psi_a1, psi_b1, psi_sum1)
        return (
            log_beta_function(a2, b2)
            - log_beta_function(a1, b1)
            + (a1 - a2) * psi_a1
            + (b1 - b2) * psi_b1
            + (a2 - a1 + b2 - b1) * psi_sum1
        )

    @staticmethod
    @once_differentiable  # the saved digammas are constants here: a second derivative would come out wrong, so it is refused
    def backward(ctx, grad: Tensor):
        a1, b1, a2, b2, psi_a1, psi_b1, psi_sum1 = ctx.saved_tensors
        grads = [None] * 4
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            rest = (a2 - a1 + b2 - b1) * torch.polygamma(1, a1 + b1)
            if ctx.needs_input_grad[0]:
                grads[0] = (grad * ((a1 - a2) * torch.polygamma(1, a1) + rest)).sum_to_size(a1.shape)
            if ctx.needs_input_grad[1]:
                grads[1] = (grad * ((b1 - b2) * torch.polygamma(1, b1) + rest)).sum_to_size(b1.shape)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            shared = psi_sum1 - torch.digamma(a2 + b2)
            if ctx.needs_input_grad[2]:
                grads[2] = (grad * (torch.digamma(a2) - psi_a1 + shared)).sum_to_size(a2.shape)
            if ctx.needs_input_grad[3]:
                grads[3] = (grad * (torch.digamma(b2) - psi_b1 + shared)).sum_to_size(b2.shape)
        return tuple(grads)


#: Inside a training step on the CPU (`float32_beta_kl`), a Beta KL whose concentrations are all below this is computed in
#: float32: measured against float64 over a, b in [1, 100] (prior Beta(1, 30)), float32 is off by at most 2e-4 nats per stick, a
#: training step's noise; above it float32's lgamma and digamma lose the KL (2e-3 nats at 1e3, 0.03 at 1e4, 0.36 at
#: 1e5). The float32 KL and its gradient take 0.64 of float64's time on the CPU.
FLOAT32_KL_LIMIT = 100.0
_float32_kl = False


@contextmanager
def float32_beta_kl():
    """Within it, `beta_kl_float64` may work in float32 where every concentration is below FLOAT32_KL_LIMIT. The training
    plan enters it for its training steps only: validation, evaluation and everything a user calls keep float64."""
    global _float32_kl
    before, _float32_kl = _float32_kl, True
    try:
        yield
    finally:
        _float32_kl = before


def kl_dtype(*concentrations: Tensor) -> torch.dtype:
    """float32 inside `float32_beta_kl` for float32 laws on the CPU whose concentrations are all below FLOAT32_KL_LIMIT,
    else float64. The CPU only: the check reads the largest concentration back, free there but a host sync per step on
    an accelerator, where the speed-up was not measured."""
    if not _float32_kl or any(c.dtype != torch.float32 or c.device.type != "cpu" for c in concentrations):
        return torch.float64
    largest = torch.stack([c.detach().max() for c in concentrations]).max()
    return torch.float32 if float(largest) < FLOAT32_KL_LIMIT else torch.float64


def beta_kl_float64(p: Beta, q: Beta) -> Tensor:
    """KL(Beta(a1, b1) || Beta(a2, b2)) = log B(a2, b2) - log B(a1, b1) + (a1 - a2) psi(a1) + (b1 - b2) psi(b1)
    + (a2 - a1 + b2 - b1) psi(a1 + b1), evaluated in float64 (float32 within a training step where that is exact
    enough: `kl_dtype`) and returned in the parameters' dtype."""
    concentrations = (p.concentration1, p.concentration0, q.concentration1, q.concentration0)
    dtype = kl_dtype(*concentrations)
    return _BetaKL.apply(*(c.to(dtype) for c in concentrations)).to(
        torch.promote_types(p.concentration1.dtype, q.concentration1.dtype)
    )


def beta_statistics(v: Tensor) -> Tensor:
    """(log v, log(1 - v)) of sticks (kept inside (0, 1) at float64's bounds, so that a stick that rounded to 0 or 1
    scores as the nearest representable one): a Beta's sufficient statistics, [..., L, 2]."""
    v = v.double().clamp(torch.finfo(torch.float64).tiny, 1.0 - torch.finfo(torch.float64).eps / 2)
    return torch.stack([torch.log(v), torch.log1p(-v)], dim=-1)


@register_linear_log_density(Beta)
def beta_linear_log_density(q: Beta) -> LinearLogDensity:
    """log Beta(v; a, b) = (a - 1) log v + (b - 1) log(1 - v) - log B(a, b), in float64 (see StableBeta)."""
    a, b = q.concentration1.double(), q.concentration0.double()
    return LinearLogDensity(torch.stack([a - 1, b - 1], dim=-1), log_beta_function(a, b), beta_statistics)


register_kl(StableBeta, StableBeta)(beta_kl_float64)
register_kl(StableBeta, Beta)(beta_kl_float64)
register_kl(Beta, StableBeta)(beta_kl_float64)


@register_product(Beta)
def beta_product(factors: Sequence[Beta]) -> Beta:
    """prod_m Beta(a_m, b_m) ∝ Beta(1 + sum(a_m - 1), 1 + sum(b_m - 1)), when both stay positive."""
    # Tensors: `product` passes at least one factor
    a = 1 + cast(Tensor, sum(f.concentration1 - 1 for f in factors))
    b = 1 + cast(Tensor, sum(f.concentration0 - 1 for f in factors))
    if bool((a <= 0).any()) or bool((b <= 0).any()):
        raise ValueError(
            "the product of these Beta experts is not normalisable (a concentration would be <= 0); "
            "experts written as evidence, Beta(1 + e_a, 1 + e_b) with e >= 0, always have a proper product"
        )
    return StableBeta(a, b)


#: How the encoder's raw outputs become evidence. A sharp posterior needs evidence in the hundreds
#: (the logit of v ~ Beta(a, b) has variance psi'(a) + psi'(b), about 1/a + 1/b), which a linear layer
#: reaches slowly through softplus but at once through exp.
EVIDENCE_LINKS = ("exp", "softplus")
#: exp(15) = 3.3e6 pseudo-counts: sharper than float32 sticks can resolve anyway.
MAX_LOG_EVIDENCE = 15.0


@dataclass
class BetaSettings(StickSettings):
    owner = "beta"
    evidence: str = setting("exp", "how encoder outputs become evidence (pseudo-counts)", choices=EVIDENCE_LINKS)


class BetaSticks(StickLatent):
    """Sticks v_k ~ Beta(1 + e_a, alpha + e_b), evidence e = exp(head output) (or softplus) >= 0."""

    name = "beta"
    Settings = BetaSettings

    def __init__(self, evidence: str = "exp", **settings) -> None:
        if evidence not in EVIDENCE_LINKS:
            raise ValueError(f"evidence link must be one of {', '.join(EVIDENCE_LINKS)}, got {evidence!r}")
        super().__init__(**settings)
        self.evidence_link = evidence

    def evidence(self, raw: Tensor) -> tuple[Tensor, ...]:
        """The expert's pseudo-counts (e_a, e_b) >= 0 from a head's raw output."""
        return evidence_from_raw(self.raw_params(raw), self.evidence_link)

    def posterior(self, raw: Tensor) -> Beta:
        e_a, e_b = self.evidence(raw)
        return StableBeta(self.prior_a + e_a, self.prior_b + e_b)

    def prior(self) -> StableBeta:
        return StableBeta(self.prior_a, self.prior_b)

    def natural(self, q: Distribution) -> tuple[Tensor, Tensor]:
        # (a - 1, b - 1) are Beta's natural parameters; the constant offset cancels in fuse's differences.
        q = cast(Beta, q)  # the family's own posteriors and prior (`fuse`)
        return q.concentration1, q.concentration0

    def from_natural(self, eta: tuple[Tensor, ...]) -> StableBeta:
        concentration1, concentration0 = eta
        return StableBeta(concentration1, concentration0)


def evidence_from_raw(raw: tuple[Tensor, ...], link: str) -> tuple[Tensor, ...]:
    """Non-negative pseudo-counts: exp (clamped at MAX_LOG_EVIDENCE) or softplus of the raw outputs."""
    if link == "exp":
        return tuple(torch.exp(r.clamp_max(MAX_LOG_EVIDENCE)) for r in raw)
    return tuple(F.softplus(r) for r in raw)
