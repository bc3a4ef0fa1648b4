"""Observation models p(x | z): map a decoder's output to a Distribution over one data point.

Each entry takes the decoder output (one parameter block per feature) and returns a Distribution
whose `log_prob(x)` is per-feature; the model sums over features.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor
from torch.distributions import Bernoulli, Distribution


def bernoulli(logits: Tensor) -> Distribution:
    """Binary pixels: Bernoulli with logits, as in the SB-VAE and IWAE MNIST experiments."""
    return Bernoulli(logits=logits, validate_args=False)


#: name -> (decoder outputs per feature, constructor)
LIKELIHOODS: dict[str, tuple[int, Callable[[Tensor], Distribution]]] = {
    "bernoulli": (1, bernoulli),
}
