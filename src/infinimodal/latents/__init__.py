"""Latent families, one file each, and their registry.

To add a family: write one file defining a `LatentFamily` subclass (its prior, its posterior from an
encoder head, and either natural parameters, which make products exact, or its own `fuse`), register
its `product` rule, then add one line to `LATENT_FAMILIES`.
Importing this package registers KL(Kumaraswamy || Beta) with `torch.distributions.kl`.
"""

from .base import LatentFamily, ProductNotClosedForm, product, register_product
from .beta import BetaSticks, beta_product
from .gaussian import GaussianLatent, normal_product
from .kumaraswamy import Kumaraswamy, KumaraswamySticks, kl_kumaraswamy_beta, kumaraswamy_product
from .logitnormal import LogitNormal, LogitNormalSticks, beta_matched_logit_moments
from .sticks import DECODER_INPUTS, StickLatent

LATENT_FAMILIES: dict[str, type[LatentFamily]] = {
    "gaussian": GaussianLatent,
    "beta": BetaSticks,
    "kumaraswamy": KumaraswamySticks,
    "logitnormal": LogitNormalSticks,
}

STICK_FAMILIES = tuple(name for name, cls in LATENT_FAMILIES.items() if issubclass(cls, StickLatent))


def build_latent(name: str, **settings) -> LatentFamily:
    """Instantiate the family called `name` with its settings (latent_dim, or truncation/alpha/decoder_input)."""
    if name not in LATENT_FAMILIES:
        raise ValueError(f"unknown latent family {name!r}; choose one of {', '.join(LATENT_FAMILIES)}")
    return LATENT_FAMILIES[name](**settings)


__all__ = [
    "LATENT_FAMILIES",
    "STICK_FAMILIES",
    "DECODER_INPUTS",
    "BetaSticks",
    "GaussianLatent",
    "Kumaraswamy",
    "KumaraswamySticks",
    "LatentFamily",
    "LogitNormal",
    "LogitNormalSticks",
    "ProductNotClosedForm",
    "StickLatent",
    "beta_matched_logit_moments",
    "beta_product",
    "build_latent",
    "kl_kumaraswamy_beta",
    "kumaraswamy_product",
    "normal_product",
    "product",
    "register_product",
]
