"""Data sets. Each loader returns plain arrays; `infinimodal.training` wraps them for Lightning."""

from .mnist import MNIST, FallbackWarning, Split, binarize_fixed, load_mnist, read_idx

__all__ = ["MNIST", "FallbackWarning", "Split", "binarize_fixed", "load_mnist", "read_idx"]
