"""Figures (matplotlib, no display needed).

`sample_figure`: one panel per column of samples, rows = samples. Image modalities ((C, H, W), or flat
vectors whose length is a square of at least 64 pixels, such as MNIST's 784) are shown as images stacked
top to bottom; tabular modalities as a heat map of samples x features.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..data import Split  # noqa: E402
from ..modality import Modality  # noqa: E402


def as_images(modality: Modality, values: np.ndarray) -> np.ndarray | None:
    """[n, H, W, C] in [0, 1] for image-like modalities, None for tabular ones."""
    shape = modality.shape
    if len(shape) == 3:
        images = np.moveaxis(values, 1, -1)
    elif len(shape) == 1 and shape[0] >= 64 and math.isqrt(shape[0]) ** 2 == shape[0]:
        side = math.isqrt(shape[0])
        images = values.reshape(-1, side, side, 1)
    else:
        return None
    return np.clip(images, 0.0, 1.0)


def _strip(images: np.ndarray) -> np.ndarray:
    """Stack [n, H, W, C] images top to bottom with a 1-pixel white gap."""
    n, h, w, c = images.shape
    out = np.ones((n * (h + 1) - 1, w, c))
    for i, image in enumerate(images):
        out[i * (h + 1) : i * (h + 1) + h] = image
    return out[..., 0] if c == 1 else out


def sample_figure(
    modalities: Sequence[Modality], samples: dict[str, np.ndarray], path: str | Path,
    inputs: Split | None = None, given: Sequence[str] = (),
) -> Path:
    """Generated samples of every modality, preceded by the given inputs when there are any."""
    columns = []
    if inputs is not None:
        observed = inputs.batch(np.arange(len(inputs)))["data"]  # floats in [0, 1] whatever the storage
        for m, modality in enumerate(modalities):
            if modality.name in given:
                values = np.where(inputs.mask[:, m].reshape(-1, *[1] * len(modality.shape)), observed[modality.name].numpy(), np.nan)
                columns.append((f"{modality.name}\n(given)", modality, values))
    columns += [(f"{m.name}\n(generated)", m, samples[m.name]) for m in modalities]
    fig, axes = plt.subplots(1, len(columns), figsize=(1.6 * len(columns) + 1, 0.5 * len(samples[modalities[0].name]) + 1.5), squeeze=False)
    for ax, (title, modality, values) in zip(axes[0], columns):
        images = as_images(modality, np.nan_to_num(values, nan=1.0))
        if images is not None:
            ax.imshow(_strip(images), cmap="gray" if images.shape[-1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            flat = values.reshape(len(values), -1)
            shown = ax.imshow(flat, aspect="auto", cmap="viridis", interpolation="nearest")
            ax.set_xlabel("feature")
            ax.set_ylabel("sample")
            fig.colorbar(shown, ax=ax, fraction=0.05)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
