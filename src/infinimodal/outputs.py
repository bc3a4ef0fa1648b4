"""What the model's objective returns, and the one way the objective weighs modalities: low in the house, so that
aggregators, the model and the training plan all speak of it without importing one another."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor
from torch.distributions import Distribution


@dataclass
class LossOutput:
    """Per-batch results. `loss` is what the optimiser minimises; the rest are per-row diagnostics."""

    loss: Tensor  # scalar
    elbo: Tensor  # [batch]: the aggregator's bound on log p(X_available), KL weight 1
    reconstruction: Tensor  # [batch]: its reconstruction part, sum over available modalities
    kl: Tensor  # [batch]: its KL part
    kl_per_dim: Tensor  # [batch, latent_size] (mixtures: the components' weighted KLs)


def weigh(log_lik: Tensor, weights: Tensor | None = None) -> Tensor:
    """The training objective's reconstruction: log-likelihoods [..., M] summed over modalities, each times its weight
    (`--weight`: a label observed on few rows carries a few nats against an image's hundreds; weighting it is the
    semi-supervised lever, the alpha of Kingma et al. 2014's M2 and the label weight of Wu & Goodman 2018's MVAE).
    None: every weight 1, the ELBO itself, which validation and evaluation always score."""
    return log_lik.sum(-1) if weights is None else (log_lik * weights.to(log_lik)).sum(-1)


class Encodes(Protocol):
    """What an aggregator reads of the model: its latent family, its experts and its decoders' log-likelihoods
    (`model.MultimodalModule` is one)."""

    @property
    def latent(self) -> object: ...  # a `latents.LatentFamily` (a layer above this one); read-only

    #: Whether the model is training (an `nn.Module`'s flag): a training step may estimate a part of the objective
    #: that evaluation computes exactly (MoPoE's "sticks-sampled" KL).
    training: bool

    def unimodal_posteriors(self, data: dict[str, Tensor], mask: Tensor) -> Distribution: ...

    def log_likelihoods(
        self, z: Tensor, data: dict[str, Tensor], select: Tensor, rows: Tensor | None = None
    ) -> Tensor: ...
