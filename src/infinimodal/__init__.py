"""infinimodal: infinite-dimensional (stick-breaking) multimodal variational autoencoders.

Importing the package registers KL(Kumaraswamy || Beta) with `torch.distributions.kl`, so that
`torch.distributions.kl_divergence(Kumaraswamy(a, b), Beta(1, alpha))` just works.
"""

from . import latents  # noqa: F401  (registers KL rules and product rules)
from .aggregators import AGGREGATORS
from .latents import LATENT_FAMILIES, product
from .modality import Modality

__version__ = "0.2.0"


def __getattr__(name: str):
    # The facade pulls in Lightning and scikit-learn: imported on first use, not with the package.
    if name == "MultimodalVAE":
        from .api import MultimodalVAE

        return MultimodalVAE
    raise AttributeError(f"module 'infinimodal' has no attribute {name!r}")


__all__ = ["AGGREGATORS", "LATENT_FAMILIES", "Modality", "MultimodalVAE", "product", "__version__"]
