"""Default networks: multilayer perceptrons (the SB-VAE paper used one hidden layer of 500 ReLUs)."""

from __future__ import annotations

from typing import Sequence

from torch import nn


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
