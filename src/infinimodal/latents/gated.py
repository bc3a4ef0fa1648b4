"""Stick-gated Gaussian latents: Gaussian values whose dimensions are switched off, in order, by stick-breaking.

Each of D dimensions carries a Gaussian value g_k ~ N(0, 1) and a stick v_k ~ Beta(1, alpha); the decoder
reads the gated code

    z_k = g_k * r_k,      r_k = prod_{j<=k} (1 - v_j)      (the stick left after k breaks),

so r_1 >= r_2 >= ... >= r_D by construction: dimension k reaches the decoder only as far as every stick
before it stays short. A late dimension therefore reaches the decoder through a smaller gate, so the same effect
costs it more value KL (or the KL of keeping earlier sticks short), which orders the dimensions by use, and the
prior's expected remaining stick (alpha / (1 + alpha))^k sets how fast unused dimensions fade. Measured
(docs/results.md sections 7 and 16, `kl_parts`, benchmarks/sticks.py), at the default alpha = 30 trained models leave
the sticks at their prior (under 2 % of the KL): the order comes from the prior gates' shrinkage, the same for every
row, not from sticks learned per row; at alpha = 5 they learn (3-13 % of the KL; subjects that need more dimensions
open more gates), best with experts on the code (docs/results.md section 16, "Do the sticks learn?"). The
remaining-stick gate plays the role of the IBP's gate probability prod_{j<=k} nu_j with nu_j = 1 - v_j ~ Beta(alpha, 1)
(Teh et al. 2007, Singh et al. 2017; docs/design.md section 5). A dimension whose gate is closed has g_k at its prior
too, so unused dimensions carry no KL.

Both factors keep exact products of experts: the values' precisions add (Gaussian experts, as in the
`gaussian` family) and the sticks' evidence adds (Beta experts written as evidence, as in the `beta`
family), so PoE and MoPoE stay exact. The latent vector the prior is placed on is [g_1..g_D, v_1..v_D]
(2D scalars); `kl_per_dim` reports D values, dimension k's value KL plus its stick's KL.

Two posteriors, chosen by the setting `expert`:

- ``value``: mean-field, each expert is a Gaussian on the value g (q(g) independent of the sticks). The
  decoder then sees g * r with the gate's sampling noise: r_k's spread multiplies the value.
- ``code``: each expert is a Gaussian likelihood on the gated code z = g * r with precision lambda and mean m,
  so q(g | v) = N(0, 1) * N(g r; m, 1 / lambda) = N(lambda m r / (1 + lambda r^2), 1 / (1 + lambda r^2)).
  With the gate open (lambda r^2 >> 1) the decoder reads z ~ N(m, 1 / lambda) whatever the gate's own noise;
  as r -> 0 the expert loses its grip and g returns to its prior, so a late dimension can only carry
  information as precisely as its gate is open: the order comes from the prior's shrinking gates without
  injecting their noise into the decoder. Experts still multiply exactly (lambda and lambda m add across
  modalities, conditionally on v), and KL(q || p) = KL(q(v) || p(v)) + E_q(v)[KL(q(g | v) || N(0, 1))], the
  second term estimated with one draw of the sticks (unbiased; the sticks' part is exact). Caveat: q(g | v)'s
  normaliser depends on v, so a fused subset posterior is the exact product for g given v and for the sticks,
  but not the normalised product of the unimodal posteriors q_m(g, v) (it is still a proper posterior, and
  every ELBO stays a bound). The ``value`` posterior's products are exact.

The representation used for kNN and probes is the posterior mean of the gated code: E[g_k] E[r_k] for
``value`` (exact, g and the sticks being independent), and for ``code`` the conditional mean of z at the
sticks' mean (a plug-in); `expected_weights` gives the stick-breaking weights E[pi] of the D sticks, so
`sticks_99` is defined as for the other stick families.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, cast

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal, constraints, kl_divergence, register_kl

from ..mixture import LinearLogDensity, MixturePosterior, linear_log_density, register_linear_log_density
from ..settings import Settings, positive, setting
from ..stick_breaking import clamp_sticks, expected_stick_weights
from .base import LatentFamily, averaged_over_components, register_product
from .beta import EVIDENCE_LINKS, StableBeta, beta_product, evidence_from_raw
from .gaussian import MAX_LOG_PRECISION, normal_product
from .sticks import AUTO, CLOSED_EXPERT, DEFAULT_MAX_TRUNCATION, become_adaptive, truncation_setting

if TYPE_CHECKING:
    from torch.types import _size  # the sample shapes torch.distributions accept
    from typing_extensions import Self


class _ValuesBesideSticks(Distribution):
    """What both gated posteriors share: D values then D StableBeta sticks along the last batch dimension."""

    sticks: StableBeta
    has_rsample = True

    @property
    def dims(self) -> int:
        return self.sticks.batch_shape[-1]

    @property
    def concentration1(self) -> Tensor:
        return self.sticks.concentration1

    @property
    def concentration0(self) -> Tensor:
        return self.sticks.concentration0

    @property
    def support(self):
        return constraints.real

    if TYPE_CHECKING:
        # What each gated posterior defines (declared for the type checker; `GatedSticks` calls them on either).
        @classmethod
        def from_expert(
            cls, loc: Tensor, expert_precision: Tensor, concentration1: Tensor, concentration0: Tensor
        ) -> Self: ...

        @classmethod
        def from_natural(cls, eta: tuple[Tensor, ...]) -> Self: ...

        def natural(self) -> tuple[Tensor, Tensor]: ...

        def gain(self, gates: Tensor) -> Tensor: ...

        def expected_code(self) -> Tensor: ...

    def kl_given_sticks(self, other: Self, v: Tensor) -> Tensor:
        """Per scalar [..., 2D]: KL(self || other) for a step that drew the sticks v ~ self; exact here, so v is unused
        (`CodeGatedPosterior` reads its values' KL at v)."""
        return kl_divergence(self, other)

    def kl_at_drawn(self, mixture: MixturePosterior, other: Self, v: Tensor) -> Tensor:
        """Per scalar [..., 1, 2D]: the KL to `other` of a MoPoE step whose rows drew the sticks v from this component of
        `mixture` (one per row): here `kl_given_sticks` of the drawn component (the code expert's values' KL is read at a
        stick draw, which only the drawn component has)."""
        return self.kl_given_sticks(other, v)


class GatedPosterior(_ValuesBesideSticks):
    """Independent N(loc, scale^2) values and StableBeta(concentration1, concentration0) sticks, side by side.

    Batch shape [..., 2D] with scalar events: entries [..., :D] are the values g, [..., D:] the sticks v.
    """

    arg_constraints = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
    }

    def __init__(
        self, loc: Tensor, scale: Tensor, concentration1: Tensor, concentration0: Tensor, validate_args=None
    ) -> None:
        self.values = Normal(loc, scale, validate_args=validate_args)
        self.sticks = StableBeta(concentration1, concentration0, validate_args=validate_args)
        if self.values.batch_shape != self.sticks.batch_shape:
            raise ValueError(
                f"values {tuple(self.values.batch_shape)} and sticks {tuple(self.sticks.batch_shape)} differ in shape"
            )
        *batch, dims = self.values.batch_shape
        super().__init__(torch.Size([*batch, 2 * dims]), validate_args=False)

    def split(self, value: Tensor) -> tuple[Tensor, Tensor]:
        return value[..., : self.dims], value[..., self.dims :]

    @property
    def loc(self) -> Tensor:
        return self.values.loc

    @property
    def scale(self) -> Tensor:
        return self.values.scale

    def log_prob(self, value: Tensor) -> Tensor:
        g, v = self.split(value)
        return torch.cat(torch.broadcast_tensors(self.values.log_prob(g), self.sticks.log_prob(v)), dim=-1)

    def rsample(self, sample_shape: _size = torch.Size()) -> Tensor:
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
        return GatedPosterior(
            self.loc.expand(half),
            self.scale.expand(half),
            self.concentration1.expand(half),
            self.concentration0.expand(half),
        )

    @classmethod
    def from_expert(
        cls, loc: Tensor, expert_precision: Tensor, concentration1: Tensor, concentration0: Tensor
    ) -> "GatedPosterior":
        """The prior N(0, 1) times an expert of precision lambda on the value: precision 1 + lambda, mean `loc`."""
        return cls(loc, (1.0 + expert_precision).rsqrt(), concentration1, concentration0)

    def natural(self) -> tuple[Tensor, Tensor]:
        """(precision * mean, precision) of the values beside the sticks' (a, b): sums of these are products."""
        precision = self.scale.pow(-2)
        return torch.cat([precision * self.loc, self.concentration1], -1), torch.cat(
            [precision, self.concentration0], -1
        )

    @classmethod
    def from_natural(cls, eta: tuple[Tensor, ...]) -> "GatedPosterior":
        first, second = eta
        d = first.shape[-1] // 2
        precision = second[..., :d]
        return cls(first[..., :d] / precision, precision.rsqrt(), first[..., d:], second[..., d:])

    def kl_at_drawn(self, mixture: MixturePosterior, other: "GatedPosterior", v: Tensor) -> Tensor:
        """Every component's value KL (Gaussian, closed form), weighted, beside the drawn component's sticks' KL alone:
        unbiased for the mixture's weighted KL, and the Beta KL's lgamma, digamma and trigamma run on one component per
        row instead of all of them."""
        values = mixture.average(
            lambda components: kl_divergence(cast(GatedPosterior, components).values, other.values)
        ).unsqueeze(-2)  # the mixture's components are GatedPosteriors like this one
        return torch.cat(torch.broadcast_tensors(values, kl_divergence(self.sticks, other.sticks)), dim=-1)

    def gain(self, gates: Tensor) -> Tensor:
        """How much of each value expert reaches the decoder at these gates: the gate itself (the decoder reads g r)."""
        return gates.expand_as(self.values.loc)

    def expected_code(self) -> Tensor:
        """E[g_k r_k] = E[g_k] prod_{j<=k} (1 - E[v_j]), exact: the values and the sticks are independent."""
        return self.values.mean * torch.cumprod(1.0 - self.sticks.mean, dim=-1)


@register_kl(GatedPosterior, GatedPosterior)
def _kl_gated(p: GatedPosterior, q: GatedPosterior) -> Tensor:
    """Per scalar: the values' Gaussian KL beside the sticks' Beta KL (float64, see StableBeta)."""
    return torch.cat(
        torch.broadcast_tensors(kl_divergence(p.values, q.values), kl_divergence(p.sticks, q.sticks)), dim=-1
    )


@register_linear_log_density(GatedPosterior)
def gated_linear_log_density(q: GatedPosterior) -> LinearLogDensity:
    """The values' Gaussian terms beside the sticks' Beta terms (both linear in their statistics)."""
    values, sticks = linear_log_density(q.values), linear_log_density(q.sticks)
    assert values is not None and sticks is not None  # Normal and Beta have linear forms, and no device is named
    d = q.dims

    def statistics(z: Tensor) -> Tensor:
        return torch.cat([values.statistics(z[..., :d]), sticks.statistics(z[..., d:])], dim=-2)

    natural = torch.cat(torch.broadcast_tensors(values.natural, sticks.natural), dim=-2)
    normalizer = torch.cat(torch.broadcast_tensors(values.log_normalizer, sticks.log_normalizer), dim=-1)
    return LinearLogDensity(natural, normalizer, statistics)


@register_product(GatedPosterior)
def gated_product(factors: Sequence[GatedPosterior]) -> GatedPosterior:
    """Values multiply as Gaussians (precisions add), sticks as Betas (natural parameters add)."""
    values = normal_product([f.values for f in factors])
    sticks = beta_product([f.sticks for f in factors])
    return GatedPosterior(values.loc, values.scale, sticks.concentration1, sticks.concentration0)


def remaining_stick(v: Tensor) -> Tensor:
    """r_k = prod_{j<=k} (1 - v_j) in log space (a cumulative sum of log1p(-v)), shape of v."""
    return torch.exp(torch.cumsum(torch.log1p(-clamp_sticks(v)), dim=-1))


class CodeGatedPosterior(_ValuesBesideSticks):
    """q(v) q(g | v): StableBeta sticks, and values g | v = N(0, 1) times a Gaussian expert on the code g * r(v).

    expert_loc m and expert_precision lambda >= 0 describe the expert on the gated code (lambda = 0: the prior).
    Batch shape [..., 2D], scalar events ([..., :D] values, [..., D:] sticks); `log_prob` gives per-scalar
    terms whose sum is log q(g, v) (a value's term depends on the sticks before it)."""

    arg_constraints = {
        "expert_loc": constraints.real,
        "expert_precision": constraints.nonnegative,
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
    }

    def __init__(
        self,
        expert_loc: Tensor,
        expert_precision: Tensor,
        concentration1: Tensor,
        concentration0: Tensor,
        validate_args=None,
    ) -> None:
        self.expert_loc, self.expert_precision = torch.broadcast_tensors(expert_loc, expert_precision)
        self.sticks = StableBeta(concentration1, concentration0, validate_args=validate_args)
        if self.expert_loc.shape != self.sticks.batch_shape:
            raise ValueError(
                f"experts {tuple(self.expert_loc.shape)} and sticks {tuple(self.sticks.batch_shape)} differ in shape"
            )
        *batch, dims = self.expert_loc.shape
        super().__init__(torch.Size([*batch, 2 * dims]), validate_args=False)

    def values_given(self, v: Tensor) -> Normal:
        """q(g | v): precision 1 + lambda r^2, mean lambda m r / (1 + lambda r^2)."""
        r = remaining_stick(v)
        precision = 1.0 + self.expert_precision * r.square()
        return Normal(self.expert_precision * self.expert_loc * r / precision, precision.rsqrt())

    def kl_given_sticks(self, other: "CodeGatedPosterior", v: Tensor) -> Tensor:
        """Per scalar [..., 2D]: KL(self(g | v) || other(g | v)) at the sticks v (a draw from self), beside the sticks'
        exact KL."""
        values = kl_divergence(self.values_given(v), other.values_given(v))
        return torch.cat(torch.broadcast_tensors(values, kl_divergence(self.sticks, other.sticks)), dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        g, v = value[..., : self.dims], value[..., self.dims :]
        return torch.cat(torch.broadcast_tensors(self.values_given(v).log_prob(g), self.sticks.log_prob(v)), dim=-1)

    def rsample(self, sample_shape: _size = torch.Size()) -> Tensor:
        v = clamp_sticks(self.sticks.rsample(sample_shape))
        return torch.cat([self.values_given(v).rsample(), v], dim=-1)

    @classmethod
    def from_expert(
        cls, loc: Tensor, expert_precision: Tensor, concentration1: Tensor, concentration0: Tensor
    ) -> "CodeGatedPosterior":
        return cls(loc, expert_precision, concentration1, concentration0)

    def natural(self) -> tuple[Tensor, Tensor]:
        """(lambda m, lambda) of the code's expert (they add across modalities, given the sticks) beside (a, b)."""
        return (
            torch.cat([self.expert_precision * self.expert_loc, self.concentration1], -1),
            torch.cat([self.expert_precision, self.concentration0], -1),
        )

    @classmethod
    def from_natural(cls, eta: tuple[Tensor, ...]) -> "CodeGatedPosterior":
        first, second = eta
        d = first.shape[-1] // 2
        precision = second[..., :d]
        # an expert of precision 0 (no modality, or the prior alone) has mean 0
        loc = torch.where(
            precision > 0,
            first[..., :d] / precision.clamp_min(torch.finfo(precision.dtype).tiny),
            torch.zeros_like(precision),
        )
        return cls(loc, precision, first[..., d:], second[..., d:])

    def gain(self, gates: Tensor) -> Tensor:
        """How much of each code expert's mean reaches the decoder at these gates: lambda r^2 / (1 + lambda r^2), near 1
        wherever the gate is open (the decoder reads the expert's mean whatever the gate), unlike the value expert's r."""
        precision = self.expert_precision
        return precision * gates.square() / (1.0 + precision * gates.square())

    def expected_code(self) -> Tensor:
        """The conditional mean of the code z = g r at the sticks' mean: lambda m r^2 / (1 + lambda r^2) (a plug-in)."""
        r = torch.cumprod(1.0 - self.sticks.mean, dim=-1)
        return self.expert_precision * self.expert_loc * r.square() / (1.0 + self.expert_precision * r.square())

    @property
    def mean(self) -> Tensor:
        """E[v] exactly; for the values E[g | v] at v = E[v] (a plug-in: E[g] has no closed form)."""
        return torch.cat([self.values_given(self.sticks.mean).mean, self.sticks.mean], dim=-1)


@register_kl(CodeGatedPosterior, CodeGatedPosterior)
def _kl_code_gated(p: CodeGatedPosterior, q: CodeGatedPosterior) -> Tensor:
    """KL(p(v) || q(v)) exactly, and KL(p(g | v) || q(g | v)) at one draw v ~ p(v) (unbiased for its mean over v)."""
    return p.kl_given_sticks(q, clamp_sticks(p.sticks.rsample()))


#: Chosen by measurement (docs/results.md section 7): the prior gate of dimension k is (alpha / (1 + alpha))^k.
DEFAULT_GATE_ALPHA = 30.0
#: The sticks' prior concentration when training starts (gate warm-up, docs/results.md section 7): with alpha = 2 the
#: prior gate of dimension 8 is (2/3)^8 = 0.04, so the first epochs can only use the leading dimensions.
DEFAULT_ALPHA_START = 2.0
#: The gated posteriors by the setting `expert`: where each modality's expert sits.
POSTERIORS: dict[str, type[_ValuesBesideSticks]] = {"value": GatedPosterior, "code": CodeGatedPosterior}
EXPERTS = tuple(POSTERIORS)


@dataclass
class GatedSettings(Settings):
    owner = "gated"
    absent_means = {"alpha_start": "alpha"}  # runs saved before the gate warm-up existed trained at alpha throughout
    latent_dim: int = setting(
        50,
        "the most dimensions D (each a value and a stick): with --truncation auto (the default) training "
        "starts with up to 16 and grows or trims them up to this bound; with --truncation fixed, exactly D",
        check=lambda v: v >= 1,
        requirement="at least 1",
    )
    alpha: float = setting(
        DEFAULT_GATE_ALPHA,
        "stick prior Beta(1, alpha): the prior gate of dimension k is (alpha / (1 + alpha))^k",
        check=positive,
        requirement="a positive number",
    )
    alpha_start: float = setting(
        DEFAULT_ALPHA_START,
        "gate warm-up: the sticks' prior alpha when training starts; it rises "
        "geometrically to alpha over the KL warm-up, so that dimensions fill in index order (alpha: none)",
        check=positive,
        requirement="a positive number",
    )
    evidence: str = setting("exp", "how encoder outputs become the sticks' evidence", choices=EVIDENCE_LINKS)
    expert: str = setting("value", "experts on the values g (mean-field) or on the gated code g * r", choices=EXPERTS)
    truncation: int | str = setting(
        AUTO,
        "auto: start with 16 dimensions (or --latent-dim, when fewer), grow and trim them during "
        "training, at most --latent-dim (and --max-truncation - 1); fixed (or any integer, the stick "
        "families' K): exactly --latent-dim dimensions",
        check=lambda v: v in ("fixed", AUTO) or truncation_setting(v),
        requirement="fixed, auto or an integer",
    )
    max_truncation: int = setting(
        DEFAULT_MAX_TRUNCATION,
        "with --truncation auto: the largest K (K - 1 sticks or dimensions)",
        check=lambda v: v >= 3,
        requirement="at least 3",
    )


class GatedSticks(LatentFamily):
    """D Gaussian values gated by the remaining stick of D Beta(1, alpha) sticks (see the module docstring)."""

    name = "gated"
    has_sticks = True
    mass_counts_dimensions = False
    Settings = GatedSettings
    representation_name = "E[g r]"
    n_params = 4  # value mean, value expert log-precision, stick evidence e_a, e_b: per dimension
    #: The prior's value means and Beta(1, alpha) sticks (buffers: they move with the module and are saved).
    prior_loc: Tensor
    prior_a: Tensor
    prior_b: Tensor

    EXPERTS = EXPERTS

    def __init__(
        self,
        latent_dim: int = 50,
        alpha: float = DEFAULT_GATE_ALPHA,
        evidence: str = "exp",
        expert: str = "value",
        alpha_start: float = DEFAULT_ALPHA_START,
        truncation: str = AUTO,
        max_truncation: int = DEFAULT_MAX_TRUNCATION,
    ) -> None:
        if truncation == AUTO:  # latent_dim is the bound (and max_truncation's, kept from when it was the only one)
            latent_dim = become_adaptive(self, max_truncation, largest=latent_dim)
        elif not (truncation == "fixed" or truncation_setting(truncation)):
            raise ValueError(
                f"the gated family's truncation is fixed (--latent-dim dimensions), auto or an integer, got {truncation!r}"
            )
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        if not alpha > 0:
            raise ValueError(f"the prior concentration alpha must be positive, got {alpha}")
        if not (alpha_start > 0 and math.isfinite(alpha_start)):
            raise ValueError(f"the starting concentration alpha_start must be a positive number, got {alpha_start}")
        if evidence not in EVIDENCE_LINKS:
            raise ValueError(f"evidence link must be one of {', '.join(EVIDENCE_LINKS)}, got {evidence!r}")
        if expert not in self.EXPERTS:
            raise ValueError(f"gated expert must be one of {', '.join(self.EXPERTS)}, got {expert!r}")
        super().__init__(latent_size=2 * latent_dim)
        self.expert = expert
        self.posterior_class = POSTERIORS[expert]
        self.latent_dim = latent_dim
        self.truncation = latent_dim + 1  # stick-breaking weights: D sticks and the rest
        self.alpha = float(alpha)
        self.alpha_start = float(alpha_start)
        self.alpha_now = self.alpha  # the sticks' prior concentration at this point of training (`warm_up`)
        self.evidence_link = evidence
        self.decoder_input_size = latent_dim
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_a", torch.ones(latent_dim))
        self.register_buffer("prior_b", torch.full((latent_dim,), self.alpha))

    @property
    def n_dimensions(self) -> int:
        return self.latent_dim

    def describe(self) -> str:
        warm_up = f", gate warm-up from alpha = {self.alpha_start:g}" if self.alpha_start != self.alpha else ""
        adaptive = (
            f", truncation auto: grown or trimmed during training, at most {self.max_dimensions}"
            if self.adaptive
            else ""
        )
        return (
            f"D = {self.latent_dim} values gated by {self.latent_dim} sticks (alpha = {self.alpha:g}{warm_up}, {self.describe_expert()}"
            f"{adaptive})"
        )

    @property
    def head_size(self) -> int:
        return self.n_params * self.latent_dim

    orders_dimensions = True

    def value_head_rows(self, dim: int) -> list[int]:
        """Dimension `dim`'s value expert (mean, log-precision) in a head's output; its stick belongs to the position."""
        return [dim, self.latent_dim + dim]

    @torch.no_grad()
    def exchange_scales(self, q: Distribution, j: int, k: int) -> tuple[float, float]:
        """(into_j, into_k): the factors by which the decoder columns of the experts moving k -> j and j -> k are scaled
        so that the decoders read in mean what they read before: the expert's mean gain (`gain`) at its old position
        over its gain at the new one, averaged over the rows (and mixture components) of q. For value experts that is
        the ratio of the mean gates (`mean_gates`); a code expert reads almost the same at any open gate (a ratio near
        1: scaling by the gates changed what the decoder read by 0.105 of 0.59 in one exchange)."""
        here, there = (self._gains(q, swapped).reshape(-1, self.latent_dim).mean(0) for swapped in (None, (j, k)))
        tiny = torch.finfo(here.dtype).tiny

        def ratio(dim: int) -> float:  # an expert that reaches the decoder nowhere (no evidence): nothing to keep
            return float(here[dim] / there[dim]) if float(there[dim]) > 1e-6 and float(here[dim]) > tiny else 1.0

        return ratio(k), ratio(j)

    @averaged_over_components
    def _gains(self, q: _ValuesBesideSticks, swapped: tuple[int, int] | None) -> Tensor:
        """Each expert's gain at its position's gates, or (swapped = (j, k)) at the gates of j and k exchanged."""
        gates = torch.cumprod(1.0 - q.sticks.mean, dim=-1)
        if swapped is not None:
            j, k = swapped
            gates = gates.clone()
            gates[..., [j, k]] = gates[..., [k, j]]
        return q.gain(gates)

    def mean_gates(self, q: Distribution) -> Tensor:
        """E[r_k] = prod_{j<=k} (1 - E[v_j]) (the sticks are independent), averaged over rows and mixture components."""
        return self.row_gates(q).reshape(-1, self.latent_dim).mean(0)

    @averaged_over_components
    def row_gates(self, q: _ValuesBesideSticks) -> Tensor:
        """[..., D]: each row's E[r_k | x] (a mixture: its components' weighted sum); benchmarks/sticks.py reads it."""
        return torch.cumprod(1.0 - q.sticks.mean, dim=-1)

    def can_resize(self) -> bool:
        return True

    def prior_head_output(self) -> Tensor:
        # value mean 0 (the prior's), and the value's expert precision and the stick's evidence about 3e-7
        return torch.tensor([0.0, CLOSED_EXPERT, CLOSED_EXPERT, CLOSED_EXPERT])

    def resize(self, n: int) -> None:
        self.latent_dim, self.latent_size, self.truncation, self.decoder_input_size = n, 2 * n, n + 1, n
        self.prior_loc = self.prior_loc.new_zeros(n)
        self.prior_a = self.prior_a.new_ones(n)
        self.prior_b = self.prior_b.new_full((n,), self.alpha)

    def warm_up(self, progress: float) -> None:
        """Gate warm-up: the sticks' prior is Beta(1, alpha_t) with log alpha_t moving linearly from log alpha_start
        (progress 0) to log alpha (progress 1 and after: the model itself).

        A small alpha_t closes the prior gates of late dimensions, so the first epochs put what they learn into the
        leading ones; as alpha_t grows, later dimensions open one after another. Like the KL warm-up it changes the
        path of the optimisation, not the model: training ends on the ELBO at alpha, and validation, evaluation and
        checkpoints only ever see alpha (the training plan calls `warm_up(1)` before validating). At alpha = 30 the
        objective's own pull towards order is weak (the gate's noise grows only like sqrt(k) / alpha), so where
        information first lands is where it stays: docs/results.md section 7 measures both."""
        progress = min(max(float(progress), 0.0), 1.0)
        if progress == 1.0:
            self.alpha_now = self.alpha  # exactly: exp(log(alpha)) may differ from it in the last bit
            return
        self.alpha_now = math.exp((1.0 - progress) * math.log(self.alpha_start) + progress * math.log(self.alpha))

    def stick_prior_b(self) -> Tensor:
        """The sticks' prior concentration0 now: alpha, or alpha_t during the gate warm-up."""
        return self.prior_b if self.alpha_now == self.alpha else torch.full_like(self.prior_b, self.alpha_now)

    def prior(self) -> _ValuesBesideSticks:
        return self.posterior_class.from_expert(
            self.prior_loc, torch.zeros_like(self.prior_loc), self.prior_a, self.stick_prior_b()
        )

    def posterior(self, raw: Tensor) -> _ValuesBesideSticks:
        loc, log_expert_precision, raw_a, raw_b = self.raw_params(raw)
        expert_precision = torch.exp(log_expert_precision.clamp_max(MAX_LOG_PRECISION))
        e_a, e_b = evidence_from_raw((raw_a, raw_b), self.evidence_link)
        return self.posterior_class.from_expert(loc, expert_precision, self.prior_a + e_a, self.stick_prior_b() + e_b)

    def natural(self, q: Distribution) -> tuple[Tensor, Tensor]:
        return cast(_ValuesBesideSticks, q).natural()  # the family's own posteriors and prior (`fuse`)

    def from_natural(self, eta: tuple[Tensor, ...]) -> _ValuesBesideSticks:
        return self.posterior_class.from_natural(eta)

    def rsample(self, q: Distribution, n_samples: int | None = None) -> Tensor:
        z = super().rsample(q, n_samples)
        d = self.latent_dim
        return torch.cat([z[..., :d], clamp_sticks(z[..., d:])], dim=-1)

    def decoder_input(self, z: Tensor) -> Tensor:
        d = self.latent_dim
        return z[..., :d] * remaining_stick(z[..., d:])

    def kl_per_dim(self, q: Distribution) -> Tensor:
        return self._per_dimension(self._values_and_sticks_kl(q))

    def kl_per_dim_at(self, q: Distribution, z: Tensor) -> Tensor:
        """The KL at the sticks of the step's own draw z ~ q (`kl_given_sticks`): with experts on the code, the values'
        KL is read there instead of at a second Beta draw (the Gamma draws and their gradients were the code expert's
        extra cost), unbiased as before; value experts' KL is exact. A mixture: `kl_per_dim`."""
        if not isinstance(q, _ValuesBesideSticks):
            return self.kl_per_dim(q)
        return self._per_dimension(q.kl_given_sticks(self.prior(), z[..., self.latent_dim :]))

    def mixture_kl_per_dim(self, q: MixturePosterior, drawn: Distribution, z: Tensor) -> Tensor:
        """The posterior's `kl_at_drawn`: value experts weigh every component's value KL and take the sticks' KL at the
        drawn component (its special functions were a fifth of MoPoE's step); experts on the code take the drawn
        component's KL, as with mopoe_kl "sampled"."""
        drawn_posterior = cast(_ValuesBesideSticks, drawn)  # a component of this family's mixture
        return self._per_dimension(drawn_posterior.kl_at_drawn(q, self.prior(), z[..., self.latent_dim :]))[..., 0, :]

    def _per_dimension(self, kl: Tensor) -> Tensor:
        """[..., 2D] per scalar -> [..., D]: each dimension's value KL plus its stick's."""
        return kl[..., : self.latent_dim] + kl[..., self.latent_dim :]

    def kl_parts(self, q: Distribution) -> dict[str, Tensor]:
        """The values' KL and the sticks' KL of each row: whether the sticks learn from the data (they carry KL) or
        stay at their prior, the gates then shrinking every row's dimensions alike."""
        kl = self._values_and_sticks_kl(q)
        return {"values": kl[..., : self.latent_dim].sum(-1), "sticks": kl[..., self.latent_dim :].sum(-1)}

    @averaged_over_components
    def _values_and_sticks_kl(self, q: Distribution) -> Tensor:
        """[..., 2 D]: each value's KL, then each stick's (a mixture: its components' weighted sum)."""
        return kl_divergence(q, self.prior())

    def describe_expert(self) -> str:
        return "experts on the gated code" if self.expert == "code" else "experts on the values"

    @averaged_over_components
    def representation(self, q: _ValuesBesideSticks) -> Tensor:
        """The posterior mean of the gated code, E[g r] (see each posterior's `expected_code`); a mixture averages
        its components'."""
        return q.expected_code()

    def decoder_space_representation(self, q: Distribution) -> Tensor:
        return self.representation(q)

    @averaged_over_components
    def expected_weights(self, q: _ValuesBesideSticks) -> Tensor:
        return expected_stick_weights(q.sticks.mean)
