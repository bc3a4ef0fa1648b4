"""What every latent family provides, and the product-of-experts dispatch.

A latent family is an `nn.Module` that owns the encoder head (hidden features -> posterior
Distribution), the prior, and the map from a latent sample to what the decoder reads. The model
never asks which family it holds: it calls these methods, and the loss is `kl_divergence` and
`log_prob` on the Distributions they return.

`product(experts, prior=None)` multiplies expert densities and returns the normalised product as a
Distribution, dispatched on the experts' class the way `torch.distributions.kl_divergence` is
dispatched; each family file registers its rule with `register_product`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

from ..nets import full_precision

_PRODUCT_RULES: dict[type, Callable[[Sequence[Distribution]], Distribution]] = {}


class ProductNotClosedForm(NotImplementedError):
    """Raised for families whose product of experts has no closed form."""


def register_product(cls: type) -> Callable:
    """Decorator: `@register_product(Beta)` registers the product rule for Beta experts."""

    def decorator(rule: Callable[[Sequence[Distribution]], Distribution]) -> Callable:
        _PRODUCT_RULES[cls] = rule
        return rule

    return decorator


def product(experts: Sequence[Distribution], prior: Distribution | None = None) -> Distribution:
    """Normalised product of expert densities (and of the prior, when given).

    All factors must be of one family; their batch shapes broadcast. The rule is looked up along
    the method resolution order of the first factor's class, so subclasses inherit their parent's rule.
    """
    factors = list(experts) + ([prior] if prior is not None else [])
    if not factors:
        raise ValueError("product() needs at least one expert")
    kinds = {type(f) for f in factors}
    if len(kinds) > 1:
        names = ", ".join(sorted(k.__name__ for k in kinds))
        raise TypeError(f"product() needs experts of one family, got {names}")
    for cls in type(factors[0]).__mro__:
        if cls in _PRODUCT_RULES:
            return _PRODUCT_RULES[cls](factors)
    raise ProductNotClosedForm(f"no product rule is registered for {type(factors[0]).__name__}")


class LatentFamily(nn.Module):
    """Base class of the latent families (see the module docstring)."""

    #: Name used in configs and on the command line.
    name: str = ""
    #: Dimension of the latent variable z that the prior is placed on.
    latent_size: int
    #: Dimension of the vector the decoder reads.
    decoder_input_size: int

    def __init__(self, hidden_size: int, n_params: int, latent_size: int) -> None:
        super().__init__()
        self.latent_size = latent_size
        self.head = nn.Linear(hidden_size, n_params * latent_size)
        self.n_params = n_params

    def head_params(self, hidden: Tensor) -> tuple[Tensor, ...]:
        """Split the head's output into its `n_params` raw parameter blocks of size latent_size."""
        return tuple(full_precision(self.head(hidden)).chunk(self.n_params, dim=-1))

    def posterior(self, hidden: Tensor) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def prior(self) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def decoder_input(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def representation(self, q: Distribution) -> Tensor:  # pragma: no cover - abstract
        """The deterministic summary of a posterior used for kNN and probes."""
        raise NotImplementedError

    def decoder_space_representation(self, q: Distribution) -> Tensor:
        """The posterior mean mapped to what the decoder reads (logit E[v], log E[pi], ...)."""
        return self.decoder_input(q.mean)

    def expected_weights(self, q: Distribution) -> Tensor | None:
        """E_q[pi] for stick families, None for families without stick weights."""
        return None

    def kl_per_dim(self, q: Distribution) -> Tensor:
        """KL(q || prior) for each latent dimension or stick, shape [batch, latent_size]."""
        return kl_divergence(q, self.prior())

    def rsample(self, q: Distribution, n_samples: int | None = None) -> Tensor:
        """Reparameterised sample(s) of z, kept where the decoder and log densities are finite."""
        shape = torch.Size() if n_samples is None else torch.Size([n_samples])
        return q.rsample(shape)

    def sample_prior(self, n: int) -> Tensor:
        with torch.no_grad():
            return self.rsample(self.prior(), n)
