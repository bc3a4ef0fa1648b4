"""infinimodal: infinite-dimensional (stick-breaking) multimodal variational autoencoders.

Importing the package registers KL(Kumaraswamy || Beta) with `torch.distributions.kl`, so that
`torch.distributions.kl_divergence(Kumaraswamy(a, b), Beta(1, alpha))` just works.
"""

from . import latents  # noqa: F401  (registers KL rules and product rules)
from .latents import LATENT_FAMILIES, product

__version__ = "0.1.0"

__all__ = ["LATENT_FAMILIES", "product", "__version__"]
