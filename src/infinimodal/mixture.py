"""A mixture of mean-field posteriors: the joint posterior of MoE (over modalities) and MoPoE (over subsets).

q(z) = sum_c w_c q_c(z), with components of any latent family stacked along the second-to-last batch
dimension. It is a `torch.distributions.Distribution` whose event is the whole latent vector (the
mixture does not factorise over dimensions), so `log_prob` returns one value per row:

    log q(z) = logsumexp_c [log w_c + sum_d log q_c(z_d)].

`rsample` picks a component per row from w, then returns that component's reparameterised sample: the
gradient flows through the chosen component (the choice itself carries none, as in Shi et al. 2019 and
Sutter et al. 2021, whose objectives never differentiate through it).

Components of an exponential family (Gaussian, Beta, and the gated family's values beside sticks) have log
densities linear in their sufficient statistics, log q_c(z) = sum_d <eta_cd, T(z_d)> - A_cd, so the mixture
scores C components with one batched matrix product of T(z) (computed once per sample, not once per component)
against the components' natural parameters, in float64: the importance-sampled log-likelihood of a MoPoE model
evaluates this for every subset at every one of its thousand samples. A family registers its terms with
`register_linear_log_density`; any other family is scored component by component with its own `log_prob`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor
from torch.distributions import Distribution

if TYPE_CHECKING:
    from torch.types import _size  # the sample shapes torch.distributions accept


@dataclass
class LinearLogDensity:
    """log q(z) = sum_d [<natural[..., d, :], statistics(z)[..., d, :]> - log_normalizer[..., d]], per scalar dimension d
    (the base measure folded into the statistics or the normaliser)."""

    natural: Tensor  # [..., L, F]
    log_normalizer: Tensor  # [..., L]
    statistics: Callable[[Tensor], Tensor]  # z [..., L] -> [..., L, F], float64


_LINEAR_LOG_DENSITIES: dict[type, Callable[[Distribution], LinearLogDensity]] = {}


def register_linear_log_density(cls: type) -> Callable:
    """Decorator: `@register_linear_log_density(Normal)` registers how a class's log density is linear in its
    statistics (found along the method resolution order, so subclasses with the same density inherit it)."""

    def decorator(rule: Callable[[Distribution], LinearLogDensity]) -> Callable:
        _LINEAR_LOG_DENSITIES[cls] = rule
        return rule

    return decorator


#: Devices without float64 (the linear forms compute in it): their callers score with the family's own `log_prob`.
NO_FLOAT64_DEVICES = ("mps",)


def linear_log_density(q: Distribution, device: torch.device | None = None) -> LinearLogDensity | None:
    """The registered linear form of q's log density, or None for a family without one or a `device` without float64."""
    if device is not None and torch.device(device).type in NO_FLOAT64_DEVICES:
        return None
    for cls in type(q).__mro__:
        if cls in _LINEAR_LOG_DENSITIES:
            return _LINEAR_LOG_DENSITIES[cls](q)
    return None


def linear_component_log_prob(terms: LinearLogDensity, value: Tensor, batch_shape: torch.Size) -> Tensor:
    """log q_c(value) for every component c, [*sample, *batch, C], from components [*batch, C, L] in linear form and
    values [*sample, *batch, L]: the statistics of each sample once, then one batched matrix product per batch row
    (float64, returned so)."""
    *_, n_components, latent, features = terms.natural.shape
    sample_shape = value.shape[: value.dim() - len(batch_shape) - 1]
    rows, draws = batch_shape.numel(), sample_shape.numel()
    statistics = (
        terms.statistics(value.double()).reshape(draws, rows, latent * features).transpose(0, 1)
    )  # [rows, draws, L F]
    natural = (
        terms.natural.double()
        .expand(*batch_shape, n_components, latent, features)
        .reshape(rows, n_components, latent * features)
    )
    normalizer = (
        terms.log_normalizer.double().expand(*batch_shape, n_components, latent).sum(-1).reshape(rows, 1, n_components)
    )
    scores = torch.baddbmm(-normalizer, statistics, natural.transpose(1, 2))  # [rows, draws, C]
    return scores.transpose(0, 1).reshape(*sample_shape, *batch_shape, n_components)


class MixturePosterior(Distribution):
    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, components: Distribution, weights: Tensor, validate_args: bool | None = None) -> None:
        """components: batch shape [..., C, L], scalar events; weights: [..., C], non-negative, any scale."""
        if components.event_shape != torch.Size():
            raise ValueError("mixture components must be per-dimension (scalar-event) distributions")
        *batch, n_components, latent = components.batch_shape
        if weights.shape[-1] != n_components:
            raise ValueError(f"{weights.shape[-1]} weights for {n_components} components")
        self.components = components
        total = weights.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("every row of a mixture needs at least one component with positive weight")
        self.weights = weights / total
        super().__init__(torch.Size(batch), torch.Size([latent]), validate_args=False)

    @property
    def n_components(self) -> int:
        return self.weights.shape[-1]

    def component_log_prob(self, value: Tensor) -> Tensor:
        """log q_c(z) for every component: [..., C] (by `linear_component_log_prob` where the family has a linear form and
        `value`'s batch dimensions are the mixture's own; values that broadcast against them take the family's `log_prob`)."""
        terms = linear_log_density(self.components, value.device)
        batch = tuple(self.batch_shape)
        if (
            terms is not None
            and value.dim() > len(batch)
            and tuple(value.shape[value.dim() - 1 - len(batch) : -1]) == batch
        ):
            return linear_component_log_prob(terms, value, self.batch_shape).to(
                torch.promote_types(value.dtype, self.weights.dtype)
            )
        return self.components.log_prob(value.unsqueeze(-2)).sum(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        log_w = torch.log(self.weights)  # -inf for absent components, which logsumexp ignores
        return torch.logsumexp(self.component_log_prob(value) + log_w, dim=-1)

    def choose(self, sample_shape: _size = torch.Size()) -> Tensor:
        """Component index per row: [*sample_shape, *batch]."""
        flat = self.weights.reshape(-1, self.n_components)
        n = int(torch.Size(sample_shape).numel())
        idx = torch.multinomial(flat, n, replacement=True).T  # [n, rows]
        return idx.reshape(*sample_shape, *self.batch_shape)

    def rsample(self, sample_shape: _size = torch.Size()) -> Tensor:
        """One draw per row (and sample) from its chosen component only: the chosen component's parameters are
        gathered first and only they are sampled (drawing from every component and keeping one cost C times as
        much, with implicit-reparameterisation gradients for each Beta or Gamma draw)."""
        sample_shape = torch.Size(sample_shape)
        idx = self.choose(sample_shape)  # [*s, *batch]
        return gather_components(self.components, idx.unsqueeze(-1), sample_shape).rsample().squeeze(-2)

    def sample(self, sample_shape: _size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def average(self, per_component: Callable[[Distribution], Tensor]) -> Tensor:
        """sum_c w_c f(q_c) for a function returning [..., C, L] (a moment, a KL per dimension, ...)."""
        return (self.weights.unsqueeze(-1) * per_component(self.components)).sum(-2)

    @property
    def mean(self) -> Tensor:
        return self.average(lambda c: c.mean)

    @property
    def support(self):
        return self.components.support


def gather_components(components: Distribution, index: Tensor, sample_shape: _size = torch.Size()) -> Distribution:
    """The components at `index` ([*sample_shape, *batch, K] positions along the component dimension) of components with
    batch shape [*batch, C, L]: the same family with batch shape [*sample_shape, *batch, K, L], rebuilt from its
    `arg_constraints` parameters."""
    chosen = {}
    names = list(components.arg_constraints)
    for name, value in zip(names, torch.broadcast_tensors(*(getattr(components, n) for n in names))):  # [*batch, C, L]
        value = value.expand(*sample_shape, *value.shape)
        chosen[name] = value.gather(-2, index.unsqueeze(-1).expand(*index.shape, value.shape[-1]))
    return type(components)(**chosen)


def detach_distribution(q: Distribution) -> Distribution:
    """The same law with its parameters cut from the autograd graph (rebuilt from `arg_constraints`).

    DReG evaluates the proposal's density this way, so that the encoder's gradient flows only through
    the samples.
    """
    return type(q)(**{name: getattr(q, name).detach() for name in q.arg_constraints})
