"""Latent families, one file each, and their registry.

To add a family: write one file defining a `LatentFamily` subclass (its prior, its posterior from an
encoder head, and either natural parameters, which make products exact, or its own `fuse`), register
its `product` rule, then add one line to `LATENT_FAMILIES`.
Importing this package registers KL(Kumaraswamy || Beta) with `torch.distributions.kl`.
"""

import dataclasses

from .base import LatentFamily, ProductNotClosedForm, product, register_product
from .beta import BetaSticks, StableBeta, beta_product
from .gated import GatedPosterior, GatedSticks, gated_product
from .gaussian import GaussianLatent, normal_product
from .kumaraswamy import Kumaraswamy, KumaraswamySticks, kl_kumaraswamy_beta, kumaraswamy_product
from .logitnormal import LogitNormal, LogitNormalSticks, beta_matched_logit_moments
from .sticks import DECODER_INPUTS, StickLatent

LATENT_FAMILIES: dict[str, type[LatentFamily]] = {
    "gaussian": GaussianLatent,
    "beta": BetaSticks,
    "kumaraswamy": KumaraswamySticks,
    "logitnormal": LogitNormalSticks,
    "gated": GatedSticks,
}

#: Families whose latent variable is the sticks themselves (truncation K, decoder input pi / log pi / logit v).
STICK_FAMILIES = tuple(name for name, cls in LATENT_FAMILIES.items() if issubclass(cls, StickLatent))


def build_latent(name: str, **settings) -> LatentFamily:
    """Instantiate the family called `name` with the entries of `settings` that its `Settings` declares
    (validated; None or absent: the family's default). The rest belong to other families, so one config
    serves them all."""
    if name not in LATENT_FAMILIES:
        raise ValueError(f"unknown latent family {name!r}; choose one of {', '.join(LATENT_FAMILIES)}")
    cls = LATENT_FAMILIES[name]
    return cls(**dataclasses.asdict(cls.Settings.from_values(settings)))


__all__ = [
    "LATENT_FAMILIES",
    "STICK_FAMILIES",
    "DECODER_INPUTS",
    "BetaSticks",
    "GatedPosterior",
    "GatedSticks",
    "GaussianLatent",
    "Kumaraswamy",
    "KumaraswamySticks",
    "LatentFamily",
    "LogitNormal",
    "LogitNormalSticks",
    "ProductNotClosedForm",
    "StableBeta",
    "StickLatent",
    "beta_matched_logit_moments",
    "beta_product",
    "build_latent",
    "gated_product",
    "kl_kumaraswamy_beta",
    "kumaraswamy_product",
    "normal_product",
    "product",
    "register_product",
]
