"""Multimodal image data sets built offline from MNIST: PolyMNIST and Noisy-MNIST.

**PolyMNIST** (Sutter et al. 2021): M modalities; row i shows the same digit class in every modality,
each time a different MNIST image of that class, drawn as the binarised digit colour-inverting a random
28x28 crop of a background texture unique to the modality. The original uses five photographs; here the
textures are procedural (seeded), so any M from 2 to 16 is available offline. RGB 3x28x28.

**Noisy-MNIST** (Wang et al. 2015, "On Deep Multi-View Representation Learning"): view 1 is the digit
rotated by an angle drawn from U(-45, 45) degrees; view 2 is a different image of the same class with
U(0, 1) noise added to every pixel and clipped to [0, 1]. 1x28x28 each.

Both keep the MNIST splits (50k train / 10k validation / 10k test, the test rows built from the official
test set), are seedable, and are cached to disk after the first build (see `infinimodal.data.cache`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import DataError
from ..modality import Modality
from .cache import cached_build, fingerprint
from .mnist import load_mnist, mnist_dataset
from .multimodal import MultimodalData, Split

MAX_POLYMNIST_MODALITIES = 16
#: Textures are 512 pixels square (crops from 235,225 positions), with features sized as on a 128-pixel tile.
TEXTURE_SIZE = 512
TEXTURE_FEATURE_SCALE = 128
CROP = 28
#: Part of every cache key: a change to how the data sets are built must not reuse an old build.
BUILD_VERSION = 2


# --- textures ------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _palette_map(t: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] through three colours (low, middle, high): [3, H, W]."""
    low = np.clip(1 - 2 * t, 0, 1)
    high = np.clip(2 * t - 1, 0, 1)
    mid = 1 - low - high
    return (
        low[None] * palette[0][:, None, None]
        + mid[None] * palette[2][:, None, None]
        + high[None] * palette[1][:, None, None]
    )


def texture(index: int, seed: int = 0, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A procedural RGB texture in [0, 1], shape [3, size, size], distinct for each index.

    The pattern (marble veins, stripes, cells, multi-scale noise) cycles with index % 4; every index has its
    own frequencies and two palettes of three colours, blended by a slowly varying field. Like the
    photographs of the original PolyMNIST, the texture is large and not periodic, so a 28x28 crop is
    close to unique: its position is not a two-number summary that a model could learn before the digit.
    """
    rng = np.random.default_rng([seed, index, 7919])
    y, x = np.mgrid[0:size, 0:size] / TEXTURE_FEATURE_SCALE  # features keep their size in pixels
    kind = index % 4
    if kind == 0:  # marble: a sinusoid bent by smooth noise
        angle = rng.uniform(0, math.pi)
        turbulence = _smooth_noise(rng, size, rng.uniform(4, 10))
        t = np.sin(2 * math.pi * rng.uniform(3, 8) * (x * math.cos(angle) + y * math.sin(angle)) + 2.5 * turbulence)
    elif kind == 1:  # stripes of two widths, bent slowly
        angle = rng.uniform(0, math.pi)
        u = x * math.cos(angle) + y * math.sin(angle) + 0.3 * _smooth_noise(rng, size, 40)
        t = np.tanh(4 * np.sin(2 * math.pi * rng.uniform(6, 14) * u)) + 0.5 * np.sin(
            2 * math.pi * rng.uniform(1, 3) * u
        )
    elif kind == 2:  # cells: distance to the nearest of random points
        points = (
            rng.random((int(rng.integers(12, 30) * (size / TEXTURE_FEATURE_SCALE) ** 2), 2))
            * size
            / TEXTURE_FEATURE_SCALE
        )
        d = np.full((size, size), np.inf)
        for start in range(0, len(points), 64):
            chunk = points[start : start + 64]
            d = np.minimum(d, np.min(np.hypot(x[..., None] - chunk[:, 1], y[..., None] - chunk[:, 0]), axis=-1))
        t = np.sin(d * rng.uniform(20, 40))
    else:  # noise at two scales
        t = _smooth_noise(rng, size, rng.uniform(1.0, 2.5)) + _smooth_noise(rng, size, rng.uniform(5, 12))
    t = (t - t.min()) / (t.max() - t.min() + 1e-12)
    palettes = rng.random((2, 3, 3))  # two palettes of three colours, RGB
    palettes[:, 1] = 1 - palettes[:, 0]  # keep contrast between the ends
    blend = _smooth_noise(rng, size, size / 8)
    blend = (blend - blend.min()) / (blend.max() - blend.min() + 1e-12)
    image = (1 - blend)[None] * _palette_map(t, palettes[0]) + blend[None] * _palette_map(t, palettes[1])
    return image.astype(np.float32)


# --- pairing -------------------------------------------------------------------------------------


def same_class_partners(labels: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """For each row, another row of the same class: within a random order of each class, `shift` places on.

    Different shifts give different partners whenever the class has more rows than shifts used.
    """
    partners = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        partners[rows] = np.roll(rows, -shift)
    return partners


def _mnist_for_building(data_dir):
    mnist = load_mnist(data_dir)
    parts = {"train": mnist.train, "valid": mnist.valid, "test": mnist.test}
    key = fingerprint(*(p.labels for p in parts.values()), extra=mnist.source)
    return mnist, parts, key


# --- PolyMNIST -----------------------------------------------------------------------------------


def polymnist_dataset(n_modalities: int, data_dir=None, seed: int = 0, progress: bool = True) -> MultimodalData:
    if not 2 <= n_modalities <= MAX_POLYMNIST_MODALITIES:
        raise DataError(f"polymnist:M needs 2 <= M <= {MAX_POLYMNIST_MODALITIES}, got {n_modalities}")
    mnist, parts, key = _mnist_for_building(data_dir)
    names = [f"m{m}" for m in range(n_modalities)]

    def build():
        rng = np.random.default_rng([seed, n_modalities])
        textures = [texture(m, seed) for m in range(n_modalities)]
        splits = {}
        for split_name, part in parts.items():
            digits = part.images.reshape(-1, 28, 28) > 0.5
            arrays = {"labels": part.labels}
            for m, name in enumerate(names):
                partner = same_class_partners(part.labels, m, rng) if m else np.arange(len(part.labels))
                top = rng.integers(0, TEXTURE_SIZE - CROP + 1, len(partner))
                left = rng.integers(0, TEXTURE_SIZE - CROP + 1, len(partner))
                arrays[name] = _compose(textures[m], digits[partner], top, left)
                # provenance, kept in the cache: which MNIST row and which crop each image came from
                arrays[f"{name}_source"] = np.stack([partner, top, left], axis=1)
            splits[split_name] = arrays
        return splits, {"modalities": n_modalities, "seed": seed, "mnist": mnist.source}

    splits, _ = cached_build("polymnist", f"v{BUILD_VERSION}-M{n_modalities}-seed{seed}-{key}", build, progress)
    modalities = [Modality(name, (3, CROP, CROP), "laplace") for name in names]
    return _image_dataset(modalities, splits, f"polymnist:{n_modalities} (seed {seed}) from MNIST at {mnist.source}")


def _compose(background: np.ndarray, digits: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """uint8 [n, 3, 28, 28]: crops of the background, colour-inverted where the binarised digit is."""
    offsets = np.arange(CROP)
    rows = (top[:, None] + offsets)[:, :, None]  # [n, 28, 1]
    cols = (left[:, None] + offsets)[:, None, :]  # [n, 1, 28]
    crops = background[:, rows, cols].transpose(1, 0, 2, 3)  # [n, 3, 28, 28]
    images = np.where(digits[:, None], 1.0 - crops, crops)
    return np.round(images * 255).astype(np.uint8)


# --- Noisy-MNIST ---------------------------------------------------------------------------------


def rotate(images: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotate [n, 28, 28] images about their centre by the given angles in degrees (bilinear, zero outside).

    Positive angles turn the image clockwise as displayed (row 0 at the top): +90 equals np.rot90(k=-1).
    """
    theta = torch.from_numpy(np.deg2rad(degrees)).float()
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates: the inverse rotation
    matrix = torch.stack([torch.stack([cos, sin, zero], -1), torch.stack([-sin, cos, zero], -1)], 1)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    out = []
    for start in range(0, len(x), 10_000):
        grid = F.affine_grid(matrix[start : start + 10_000], list(x[start : start + 10_000].shape), align_corners=False)
        out.append(
            F.grid_sample(x[start : start + 10_000], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    return torch.cat(out).squeeze(1).numpy() if out else np.zeros_like(images, dtype=np.float32)


#: Seed of the rotated-MNIST angles: every model sees the same rotated digits.
ROTATION_SEED = 360


def rotated_mnist_dataset(data_dir=None, binarize: str = "dynamic") -> MultimodalData:
    """MNIST with every digit rotated once by an angle from U(0, 360) degrees (the "MNIST+rot" of Larochelle et
    al. 2007 that the SB-VAE paper uses to compare stick usage), fixed per split by ROTATION_SEED, then the
    `mnist` protocol (binarisation, splits) on the rotated grey levels."""
    rng = np.random.default_rng(ROTATION_SEED)
    seeds = {name: int(s) for name, s in zip(("train", "valid", "test"), rng.integers(0, 2**31, 3))}

    def turn(images: np.ndarray, split: str) -> np.ndarray:
        angles = np.random.default_rng(seeds[split]).uniform(0.0, 360.0, len(images))
        return rotate(images.reshape(-1, 28, 28), angles).reshape(len(images), 784).clip(0.0, 1.0).astype(np.float32)

    return mnist_dataset(data_dir, binarize, transform=turn)


def noisy_mnist_dataset(data_dir=None, seed: int = 0, progress: bool = True) -> MultimodalData:
    mnist, parts, key = _mnist_for_building(data_dir)

    def build():
        rng = np.random.default_rng([seed, 2015])
        splits = {}
        for split_name, part in parts.items():
            images = part.images.reshape(-1, 28, 28)
            angles = rng.uniform(-45.0, 45.0, len(images))
            partner = same_class_partners(part.labels, 1, rng)
            noisy = np.clip(images[partner] + rng.uniform(0.0, 1.0, images.shape), 0.0, 1.0)
            splits[split_name] = {
                "labels": part.labels,
                "angles": angles,
                "partner": partner,
                "view1": np.round(rotate(images, angles) * 255).clip(0, 255).astype(np.uint8)[:, None],
                "view2": np.round(noisy * 255).astype(np.uint8)[:, None],
            }
        return splits, {"seed": seed, "mnist": mnist.source}

    splits, _ = cached_build("noisy-mnist", f"v{BUILD_VERSION}-seed{seed}-{key}", build, progress)
    modalities = [Modality("view1", (1, 28, 28), "laplace"), Modality("view2", (1, 28, 28), "laplace")]
    return _image_dataset(modalities, splits, f"noisy-mnist (seed {seed}) from MNIST at {mnist.source}")


def _image_dataset(modalities: list[Modality], splits: dict, source: str) -> MultimodalData:
    def split(arrays: dict) -> Split:
        n = len(arrays["labels"])
        return Split(
            {m.name: arrays[m.name] for m in modalities},
            np.ones((n, len(modalities)), dtype=bool),
            np.asarray(arrays["labels"]),
        )

    return MultimodalData(modalities, split(splits["train"]), split(splits["valid"]), split(splits["test"]), source)
