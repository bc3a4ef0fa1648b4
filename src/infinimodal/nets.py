"""Default networks: MLPs for vectors (the SB-VAE paper used one hidden layer of 500 ReLUs) and a small CNN
for (C, H, W) images, as in the MVAE / MMVAE / MoPoE image experiments.

An encoder maps a batch [n, *shape] to features [n, F]; a decoder maps the latent code [n, d] to
likelihood parameters [n, n_params, *shape].
"""

from __future__ import annotations

import math
from typing import Sequence, cast

import torch
from torch import Tensor, nn

_HALF = (torch.bfloat16, torch.float16)
#: Channels of the two stride-2 convolutions of the image networks.
CONV_CHANNELS = (32, 64)


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


class MLPEncoder(nn.Module):
    """Flatten, then an MLP; features = the last hidden layer."""

    def __init__(self, shape: tuple[int, ...], hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(math.prod(shape), hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class Conditioned(nn.Module):
    """Mixin of the default decoders: `conditions` covariates (a conditional VAE) enter the layer that reads the latent
    code, through weights of their own (`condition`), so that the code's columns of that layer (`input_layer`) stay
    one per latent dimension whatever the covariates."""

    def _condition(self, conditions: int, width: int) -> None:
        self.conditions = conditions
        self.condition = nn.Linear(conditions, width, bias=False) if conditions else None

    def _read_code(self, layer: nn.Linear, code: Tensor, covariates: Tensor | None) -> Tensor:
        out = layer(code)
        if self.condition is None:
            return out
        if covariates is None:
            raise ValueError(f"this decoder is conditioned on {self.conditions} covariate values per row: give them")
        return out + self.condition(covariates.to(out.dtype))


class MLPDecoder(Conditioned):
    def __init__(
        self, in_features: int, shape: tuple[int, ...], hidden: Sequence[int], n_params: int, conditions: int = 0
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.n_params = n_params
        self.net = mlp(in_features, list(reversed(hidden)), n_params * math.prod(shape))
        self._condition(conditions, self.input_layer().out_features)

    def forward(self, code: Tensor, covariates: Tensor | None = None) -> Tensor:
        out = self.net[1:](self._read_code(self.input_layer(), code, covariates))
        return out.view(code.shape[0], self.n_params, *self.shape)

    def input_layer(self) -> nn.Linear:
        """The layer that reads the latent code (one weight column per latent dimension)."""
        return cast(nn.Linear, self.net[0])  # `mlp` starts with a Linear


class ConvEncoder(nn.Module):
    """Two stride-2 4x4 convolutions (32, 64 channels), then a dense layer of `width` ReLUs."""

    def __init__(self, shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        channels, height, breadth = shape
        c1, c2 = CONV_CHANNELS
        self.conv = nn.Sequential(
            nn.Conv2d(channels, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(), nn.Flatten()
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, channels, height, breadth)).shape[1]
        self.dense = nn.Sequential(nn.Linear(flat, width), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(self.conv(x))


class ConvDecoder(Conditioned):
    """The mirror image: dense layers to a 64-channel map of a quarter the size, two transposed convolutions.

    Sizes that are not multiples of 4 are generated one step larger and cropped.
    """

    def __init__(
        self, in_features: int, shape: tuple[int, int, int], width: int, n_params: int, conditions: int = 0
    ) -> None:
        super().__init__()
        channels, height, breadth = shape
        c1, c2 = CONV_CHANNELS
        self.shape = tuple(shape)
        self.n_params = n_params
        self.grid = (math.ceil(height / 4), math.ceil(breadth / 4))
        self.dense = nn.Sequential(
            nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, c2 * self.grid[0] * self.grid[1]), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(c1, n_params * channels, 4, 2, 1)
        )
        self._condition(conditions, width)

    def input_layer(self) -> nn.Linear:
        """The layer that reads the latent code (one weight column per latent dimension)."""
        return cast(nn.Linear, self.dense[0])  # built so in __init__

    def forward(self, code: Tensor, covariates: Tensor | None = None) -> Tensor:
        out = self.deconv(
            self.dense[1:](self._read_code(self.input_layer(), code, covariates)).view(
                code.shape[0], CONV_CHANNELS[1], *self.grid
            )
        )
        _, height, breadth = self.shape
        return out[:, :, :height, :breadth].reshape(code.shape[0], self.n_params, *self.shape)


#: Hidden units of a categorical modality's default decoder: a class needs a small classifier, not the image-sized MLP.
CATEGORICAL_HIDDEN = 64


def default_encoder(shape: tuple[int, ...], hidden: Sequence[int], categorical: bool = False) -> nn.Module:
    """A CNN for images, an MLP for vectors; for a categorical modality the one-hot row itself, so that the head
    that follows is an embedding: each class has its own expert."""
    if categorical:
        return nn.Flatten()
    return ConvEncoder(shape, hidden[-1]) if len(shape) == 3 else MLPEncoder(shape, hidden)


def default_decoder(
    in_features: int,
    shape: tuple[int, ...],
    hidden: Sequence[int],
    n_params: int,
    categorical: bool = False,
    conditions: int = 0,
) -> nn.Module:
    """The encoder's mirror image; for a categorical modality one hidden layer of CATEGORICAL_HIDDEN units to the logits.
    `conditions`: covariate values per row that the decoder also reads (a conditional VAE; `Conditioned`)."""
    if categorical:
        return MLPDecoder(in_features, shape, [CATEGORICAL_HIDDEN], n_params, conditions)
    if len(shape) == 3:
        return ConvDecoder(in_features, shape, hidden[-1], n_params, conditions)
    return MLPDecoder(in_features, shape, hidden, n_params, conditions)
