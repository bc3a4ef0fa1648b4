"""Default networks: multilayer perceptrons (the SB-VAE paper used one hidden layer of 500 ReLUs)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

_HALF = (torch.bfloat16, torch.float16)


def full_precision(t: Tensor) -> Tensor:
    """Leave float32/float64 alone; lift autocast's bf16/fp16 outputs to float32.

    Under mixed precision the matrix products run in bf16, but distribution parameters, KL terms
    (digamma, lgamma) and log-likelihood sums need float32.
    """
    return t.float() if t.dtype in _HALF else t


def mlp(in_features: int, hidden: Sequence[int], out_features: int | None = None) -> nn.Sequential:
    """Linear+ReLU layers through `hidden`, then a final Linear to `out_features` when given."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    if out_features is not None:
        layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
