"""Figures (matplotlib, no display needed), one function per kind, arrays in and a PNG out.

Image modalities ((C, H, W), or flat vectors whose length is a square of at least 64 pixels, such as
MNIST's 784) are drawn as images; tabular ones as heat maps (rows x features). Every figure goes
through `_style()` so that fonts, sizes and colours agree across a report, and `_save` writes it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from ..data import Split  # noqa: E402
from ..modality import Modality  # noqa: E402
from .associations import as_numbers, present  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: One look for every figure of a report.
STYLE: dict[RcKeyType, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.grid": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "image.interpolation": "nearest",
}
#: Joint posterior first, then one colour per modality, the same in every figure.
JOINT_COLOUR = "black"
HEATMAP = "viridis"
MISSING_COLOUR = "#dddddd"


def _style():
    return plt.rc_context(STYLE)


def modality_colour(index: int) -> tuple[float, float, float, float]:
    return plt.get_cmap("tab10")(index % 10)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


# --- images and heat maps ------------------------------------------------------------------------------


def as_images(modality: Modality, values: np.ndarray) -> np.ndarray | None:
    """[n, H, W, C] in [0, 1] for image-like modalities, None for tabular ones."""
    shape = modality.shape
    if len(shape) == 3 and shape[0] in (1, 3):  # grey or RGB; other channel counts are drawn as heat maps
        images = np.moveaxis(values, 1, -1)
    elif len(shape) == 1 and shape[0] >= 64 and math.isqrt(shape[0]) ** 2 == shape[0]:
        side = math.isqrt(shape[0])
        images = values.reshape(-1, side, side, 1)
    else:
        return None
    return np.clip(images, 0.0, 1.0)


def is_image(modality: Modality) -> bool:
    return as_images(modality, np.zeros((1, *modality.shape), dtype=np.float32)) is not None


def mosaic(images: np.ndarray, gap: int = 1) -> np.ndarray:
    """[rows, cols, H, W, C] images as one [rows*(H+gap)-gap, cols*(W+gap)-gap, C] picture on white.

    NaN images (missing rows) are drawn in light grey."""
    rows, cols, h, w, c = images.shape
    out = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 3))
    grey = np.asarray(matplotlib.colors.to_rgb(MISSING_COLOUR))
    for r in range(rows):
        for col in range(cols):
            image = images[r, col]
            tile = (
                np.broadcast_to(grey, (h, w, 3))
                if np.isnan(image).all()
                else np.broadcast_to(np.nan_to_num(image, nan=1.0), (h, w, 3))
            )
            out[r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = tile
    return out


def _draw_column(
    fig, ax, modality: Modality, values: np.ndarray, title: str, scale: tuple[np.ndarray, np.ndarray] | None = None
) -> None:
    """One modality's rows: images stacked top to bottom, or a rows x features heat map (NaN grey) of each feature in SDs
    from its mean, `scale` = (mean, SD) per feature, shared by every column of the modality so that data and generation
    compare, and features in large units (age in years) do not swamp the others; the features named where they are few."""
    flat = values.reshape(len(values), -1).astype(np.float64)
    missing = np.isnan(flat).all(axis=1)
    images = as_images(modality, np.where(np.isnan(values), 0.0, values))
    if images is not None:
        images = images.astype(np.float64)
        images[missing] = np.nan
        ax.imshow(mosaic(images[:, None]), vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        cmap = plt.get_cmap(DIVERGING).with_extremes(bad=MISSING_COLOUR)
        if scale is not None:
            flat = (flat - scale[0]) / scale[1]
        shown = ax.imshow(np.ma.masked_invalid(flat), aspect="auto", cmap=cmap, vmin=-Z_LIMIT, vmax=Z_LIMIT)
        names = modality.feature_names
        if names is not None and len(names) <= MAX_NAMED_FEATURES:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        else:
            ax.set_xlabel("feature")
        ax.set_ylabel("row")
        fig.colorbar(shown, ax=ax, fraction=0.05, label="SDs from the feature's mean")
    ax.set_title(title, fontsize=9)


#: Heat maps of tabular rows: each feature in SDs from its mean over the rows drawn, on -Z_LIMIT..Z_LIMIT.
Z_LIMIT = 2.5
DIVERGING = "RdBu_r"
#: Features named on a heat map's axis up to this many.
MAX_NAMED_FEATURES = 40


def columns_figure(
    columns: Sequence[tuple[str, Modality, np.ndarray]], path: str | Path, title: str | None = None
) -> Path:
    """Side by side columns (title, modality, values [n, *shape]) of the same n rows; NaN rows are missing."""
    n = len(columns[0][2])
    widths = [1.0 if is_image(m) else 2.2 for _, m, _ in columns]
    with _style():
        fig, axes = plt.subplots(
            1,
            len(columns),
            figsize=(sum(widths) * 1.3 + 0.6, 0.45 * n + 1.4),
            squeeze=False,
            gridspec_kw={"width_ratios": widths},
        )
        scales = {}
        for name in {m.name for _, m, _ in columns}:
            rows = np.concatenate([v.reshape(len(v), -1).astype(np.float64) for _, m, v in columns if m.name == name])
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", RuntimeWarning
                )  # a feature with no finite value: its mean is NaN, drawn grey
                mean, sd = np.nanmean(rows, axis=0), np.nanstd(rows, axis=0)
            scales[name] = (mean, np.where(sd > 0, sd, 1.0))
        for ax, (label, modality, values) in zip(axes[0], columns):
            _draw_column(fig, ax, modality, values, label, scales.get(modality.name))
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return _save(fig, path)


def observed_rows(split: Split, rows: np.ndarray, modalities: Sequence[Modality]) -> dict[str, np.ndarray]:
    """The rows' data as floats (intensities scaled to [0, 1] whatever the storage), NaN where missing."""
    batch = split.batch(rows)["data"]
    out = {}
    for m, modality in enumerate(modalities):
        keep = split.mask[rows, m].reshape(-1, *[1] * len(modality.shape))
        out[modality.name] = np.where(keep, batch[modality.name].numpy(), np.nan)
    return out


def sample_figure(
    modalities: Sequence[Modality],
    samples: dict[str, np.ndarray],
    path: str | Path,
    inputs: Split | None = None,
    given: Sequence[str] = (),
) -> Path:
    """Generated samples of every modality, preceded by the given inputs when there are any."""
    columns = []
    if inputs is not None:
        observed = observed_rows(inputs, np.arange(len(inputs)), modalities)
        columns += [(f"{m.name}\n(given)", m, observed[m.name]) for m in modalities if m.name in given]
    columns += [(f"{m.name}\n(generated)", m, samples[m.name]) for m in modalities]
    return columns_figure(columns, path)


def image_grid_figure(
    modality: Modality, values: np.ndarray, path: str | Path, columns: int = 8, title: str | None = None
) -> Path:
    """Many samples of one image modality as a grid, `columns` per row."""
    images = as_images(modality, values)
    if images is None:
        raise ValueError(f"modality {modality.name!r} is not an image modality: its samples cannot be drawn as a grid")
    rows = math.ceil(len(images) / columns)
    padded = np.full((rows * columns, *images.shape[1:]), np.nan)
    padded[: len(images)] = images
    grid = padded.reshape(rows, columns, *images.shape[1:])
    with _style():
        fig, ax = plt.subplots(figsize=(0.8 * columns + 0.4, 0.8 * rows + 0.6))
        ax.imshow(mosaic(grid), vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title)
        return _save(fig, path)


# --- training ------------------------------------------------------------------------------------------


def curves_figure(epochs: np.ndarray, curves: dict[str, np.ndarray], path: str | Path) -> Path:
    """ELBO, reconstruction and KL per epoch, training and validation (keys `train_elbo`, `val_kl`, ...),
    with the KL weight of the warm-up on the KL panel's right axis."""
    panels = [
        ("elbo", "ELBO (nats)"),
        ("reconstruction", "reconstruction log-likelihood (nats)"),
        ("kl", "KL to the prior (nats)"),
    ]
    with _style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        for ax, (key, label) in zip(axes, panels):
            for split, style in (("train", "-"), ("val", "--")):
                values = curves.get(f"{split}_{key}")
                if values is not None and np.isfinite(values).any():
                    ax.plot(
                        epochs,
                        values,
                        style,
                        marker="o",
                        markersize=3,
                        color=JOINT_COLOUR if split == "train" else "tab:blue",
                        label="training" if split == "train" else "validation",
                    )
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.legend(loc="best")
        weight = curves.get("kl_weight")
        if weight is not None and np.isfinite(weight).any():
            twin = axes[2].twinx()
            twin.plot(epochs, weight, ":", color="tab:gray")
            twin.set_ylabel("KL weight (warm-up)", color="tab:gray")
            twin.set_ylim(0, max(1.05, float(np.nanmax(weight)) * 1.05))
        fig.tight_layout()
        return _save(fig, path)


def class_error_figure(series: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """Validation errors of imputing categorical modalities per epoch (metrics.csv's `val_<modality>_error`), in %:
    {legend label (a modality, or a run and a modality): (epochs, errors)}."""
    with _style():
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for i, (label, (epochs, values)) in enumerate(series.items()):
            ax.plot(epochs, 100 * values, marker="o", markersize=3, color=modality_colour(i), label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation error of imputation (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        ax.legend(loc="best")
        fig.tight_layout()
        return _save(fig, path)


def truncation_figure(epochs: np.ndarray, curves: dict[str, np.ndarray], path: str | Path) -> Path:
    """`--truncation auto`: the dimensions each epoch trained with, and the last used one measured at its start."""
    with _style():
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        ax.step(epochs, curves["truncation"], where="mid", color=JOINT_COLOUR, label="dimensions (truncation)")
        if "truncation_span" in curves:
            ax.plot(
                epochs,
                curves["truncation_span"],
                "--",
                marker="o",
                markersize=3,
                color="tab:blue",
                label="last used dimension",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("dimensions")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, float(np.nanmax(curves["truncation"])) * 1.1 + 1)
        ax.legend(loc="best")
        fig.tight_layout()
        return _save(fig, path)


def overlay_curves_figure(runs: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]], path: str | Path) -> Path:
    """Validation ELBO and KL per epoch of several runs on shared axes (the compare page)."""
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        for i, (name, (epochs, curves)) in enumerate(runs.items()):
            for ax, key in zip(axes, ("val_elbo", "val_kl")):
                if key in curves:
                    ax.plot(epochs, curves[key], marker="o", markersize=3, color=modality_colour(i), label=name)
        axes[0].set_ylabel("validation ELBO (nats)")
        axes[1].set_ylabel("validation KL (nats)")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.legend(loc="best")
        fig.tight_layout()
        return _save(fig, path)


# --- latent space --------------------------------------------------------------------------------------


def map_figure(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    path: str | Path,
    class_names: Sequence[str] | None = None,
) -> Path:
    """2-D maps (title, coordinates [n, 2], integer labels or None), coloured by label, one panel each."""
    n_panels = len(panels)
    n_cols = min(3, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    all_labels = (
        np.concatenate([lab for _, _, lab in panels if lab is not None])
        if any(lab is not None for _, _, lab in panels)
        else None
    )
    classes = np.unique(all_labels) if all_labels is not None else None
    with _style():
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols + 1.2, 4.0 * n_rows), squeeze=False)
        for ax in axes.flat[n_panels:]:
            ax.axis("off")
        for ax, (title, coords, labels) in zip(axes.flat, panels):
            if labels is None:
                ax.scatter(coords[:, 0], coords[:, 1], s=3, color="tab:gray", linewidths=0)
            elif classes is not None and len(classes) <= 20:  # (classes is None only where every panel has no labels)
                cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
                for c, value in enumerate(classes):
                    chosen = labels == value
                    name = class_names[c] if class_names is not None else str(value)
                    ax.scatter(coords[chosen, 0], coords[chosen, 1], s=3, color=cmap(c), linewidths=0, label=name)
            else:
                shown = ax.scatter(coords[:, 0], coords[:, 1], s=3, c=labels, cmap=HEATMAP, linewidths=0)
                fig.colorbar(shown, ax=ax, label="label")
            ax.set_title(f"{title} ({len(coords)} rows)")
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
            ax.set_xticks([])
            ax.set_yticks([])
        if classes is not None and len(classes) <= 20:
            handles, names = axes.flat[0].get_legend_handles_labels()
            fig.legend(handles, names, loc="center right", title="label", markerscale=4)
            fig.tight_layout(rect=(0, 0, 0.92, 1))
        else:
            fig.tight_layout()
        return _save(fig, path)


def stick_usage_figure(
    kl: dict[str, np.ndarray],
    weights: dict[str, np.ndarray] | None,
    path: str | Path,
    threshold: float = 0.05,
    unit: str = "stick",
) -> Path:
    """Mean stick weight E[pi_k] (stick families) and mean KL to the prior, per stick or dimension, for the
    joint posterior (first key, bars) and each modality's own posterior (lines)."""
    panels = ([("weights", weights, "mean weight E[pi_k]", True)] if weights is not None else []) + [
        ("kl", kl, "mean KL to the prior (nats)", False)
    ]
    with _style():
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.4), squeeze=False)
        for ax, (key, values, label, log) in zip(axes[0], panels):
            for i, (name, vector) in enumerate(values.items()):
                index = np.arange(1, len(vector) + 1)
                if i == 0:
                    ax.bar(index, vector, color="lightgray", edgecolor="gray", linewidth=0.5, label=name)
                else:
                    ax.plot(
                        index, vector, marker="o", markersize=2.5, linewidth=1, color=modality_colour(i - 1), label=name
                    )
            if key == "kl":
                ax.axhline(threshold, color="tab:red", linestyle=":", linewidth=1, label=f"active: KL > {threshold}")
            if log:
                ax.set_yscale("log")
            ax.set_xlabel(f"{unit} k")
            ax.set_ylabel(label)
            ax.legend(loc="upper right")
        fig.tight_layout()
        return _save(fig, path)


def sticks_99_figure(counts: dict[str, np.ndarray], truncation: int, path: str | Path) -> Path:
    """Distribution over test rows of the number of sticks holding 99 % of E[pi], joint and per modality."""
    bins = np.arange(0.5, truncation + 1.5)
    with _style():
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for i, (name, values) in enumerate(counts.items()):
            colour = "lightgray" if i == 0 else modality_colour(i - 1)
            kind: Literal["stepfilled", "step"] = "stepfilled" if i == 0 else "step"
            ax.hist(
                values,
                bins=bins,  # type: ignore[arg-type]  # matplotlib's stubs take a Sequence, not the array it accepts
                histtype=kind,
                color=colour,
                edgecolor="gray" if i == 0 else colour,
                linewidth=1.2,
                density=True,
                label=f"{name} (mean {np.mean(values):.1f})",
            )
        ax.set_xlabel("sticks holding 99 % of E[pi] (sticks_99)")
        ax.set_ylabel("fraction of test rows")
        ax.set_xlim(0.5, min(truncation, int(max(v.max() for v in counts.values())) + 2) + 0.5)
        ax.legend(loc="upper right")
        fig.tight_layout()
        return _save(fig, path)


def per_dimension_figure(
    modality: Modality,
    alone: np.ndarray,
    first: np.ndarray,
    alone_dims: Sequence[int],
    first_dims: Sequence[int],
    path: str | Path,
    unit: str = "stick",
) -> Path:
    """Decodes of one modality driven by one latent dimension at a time and by the first k dimensions.

    alone [len(alone_dims), n, *shape]: row r sweeps dimension alone_dims[r] over its prior quantiles;
    first [len(first_dims), n, *shape]: row r draws first_dims[0..r] from the prior; everything else sits at
    its prior median (see `infinimodal.evaluation.report.dimension_sweeps`). Images: a grid per panel;
    tabular: a heat map of each feature's standard deviation across the row's n decodes (how much the
    dimension, or the first k, move that feature)."""
    panels = (
        (alone, [f"{unit} {d + 1}" for d in alone_dims], f"one {unit} alone, over its prior quantiles"),
        (
            first,
            [f"first {r + 1}" if unit == "stick" else f"+ {unit} {d + 1}" for r, d in enumerate(first_dims)],
            f"first k {unit}s drawn from the prior",
        ),
    )
    rows = max(len(alone_dims), len(first_dims))
    with _style():
        if is_image(modality):
            n = alone.shape[1]
            fig, axes = plt.subplots(1, 2, figsize=(2 * (0.55 * n + 1.3), 0.55 * rows + 1.2))
            for ax, (values, names, title) in zip(axes, panels):
                flat = as_images(modality, values.reshape(-1, *modality.shape))
                assert flat is not None  # an image modality (`is_image`)
                images = flat.reshape(len(names), n, *flat.shape[1:])
                ax.imshow(mosaic(images), vmin=0, vmax=1)
                h = images.shape[2] + 1
                ax.set_yticks(np.arange(len(names)) * h + h / 2 - 1, names)
                ax.set_xticks([])
                ax.set_title(title)
        else:
            fig, axes = plt.subplots(1, 2, figsize=(11, 0.3 * rows + 1.8))
            for ax, (values, names, title) in zip(axes, panels):
                spread = values.reshape(len(names), values.shape[1], -1).std(axis=1)
                shown = ax.imshow(spread, aspect="auto", cmap=HEATMAP)
                ax.set_yticks(np.arange(len(names)), names)
                features = modality.feature_names
                if features is not None and len(features) <= MAX_NAMED_FEATURES:
                    ax.set_xticks(range(len(features)), features, rotation=90, fontsize=6)
                else:
                    ax.set_xlabel("feature")
                ax.set_title(
                    title + ": spread of each feature (model units: Gaussian features standardised)", fontsize=8
                )
                fig.colorbar(shown, ax=ax, fraction=0.05, label="std of E[x | z] across the row")
        fig.suptitle(f"modality {modality.name}")
        fig.tight_layout()
        return _save(fig, path)


def sorted_kl_figure(runs: dict[str, np.ndarray], path: str | Path, threshold: float = 0.05) -> Path:
    """Mean KL per latent dimension or stick of several runs, sorted from largest (the compare page):
    how many dimensions each model uses and how much information each carries."""
    with _style():
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        for i, (name, kl) in enumerate(runs.items()):
            values = np.sort(np.asarray(kl))[::-1]
            ax.plot(
                np.arange(1, len(values) + 1), values, marker="o", markersize=2.5, color=modality_colour(i), label=name
            )
        ax.axhline(threshold, color="tab:red", linestyle=":", linewidth=1, label=f"active: KL > {threshold}")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=0)  # KLs are non-negative: no room for symlog's negative half
        ax.set_xlabel("dimension or stick, by decreasing KL")
        ax.set_ylabel("mean KL to the prior (nats)")
        ax.legend(loc="upper right")
        fig.tight_layout()
        return _save(fig, path)


def score_figure(groups: dict[str, np.ndarray], path: str | Path) -> Path:
    """Distributions of deviation scores, one histogram per group of rows (the reference first, filled)."""
    finite = [v[np.isfinite(v)] for v in groups.values()]
    low, high = min(v.min() for v in finite if len(v)), max(v.max() for v in finite if len(v))
    bins = np.linspace(low, high, 41)
    with _style():
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        for i, (name, values) in enumerate(zip(groups, finite)):
            colour = "lightgray" if i == 0 else modality_colour(i - 1)
            ax.hist(
                values,
                bins=bins,  # type: ignore[arg-type]  # matplotlib's stubs take a Sequence, not the array it accepts
                histtype="stepfilled" if i == 0 else "step",
                color=colour,
                edgecolor="gray" if i == 0 else colour,
                linewidth=1.2,
                density=True,
                label=f"{name} ({len(values)} rows, median {np.median(values):.2f})",
            )
        ax.set_xlabel("deviation score (standardised against the reference; higher: more atypical)")
        ax.set_ylabel("density")
        ax.legend(loc="upper right")
        fig.tight_layout()
        return _save(fig, path)


def variance_explained_figure(
    r2: dict[str, Sequence[float]],
    kl_share: Sequence[float],
    dims: Sequence[int],
    path: str | Path,
    measure: str = "R²",
) -> Path:
    """MOFA's table as a figure: each shown dimension's variance explained (alone) in each modality, annotated, beside
    its share of the KL."""
    names = list(r2)
    values = np.array([[r2[name][j] for name in names] for j in dims], dtype=np.float64).reshape(len(dims), len(names))
    with _style():
        fig, (bars, ax) = plt.subplots(
            1,
            2,
            figsize=(2.0 + 0.9 * len(names) + 1.6, 0.8 + 0.32 * max(len(dims), 3)),
            gridspec_kw={"width_ratios": [1.2, max(len(names), 1)]},
            sharey=True,
        )
        bars.barh(np.arange(len(dims)), [100 * kl_share[j] for j in dims], color="gray")
        bars.set_xlabel("share of KL (%)")
        bars.invert_xaxis()
        image = ax.imshow(
            np.clip(values, 0, None),
            cmap="Blues",
            vmin=0,
            vmax=max(0.05, float(np.nanmax(values)) if values.size else 0.05),
            aspect="auto",
        )
        for (i, k), v in np.ndenumerate(values):
            ax.text(
                k,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > 0.6 * image.get_clim()[1] else "black",
            )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        bars.set_yticks(range(len(dims)), [f"dim {j}" for j in dims])
        ax.set_title(f"variance explained by each dimension alone ({measure})")
        fig.colorbar(image, ax=ax, fraction=0.05)
        fig.tight_layout()
        return _save(fig, path)


#: Most panels of the coloured map figure, and most classes a panel shows with a legend (more: the commonest, the rest grey).
MAX_COLOURED_PANELS = 9
MAX_LEGEND_CLASSES = 10


def coloured_maps_figure(
    coords: np.ndarray, variables: dict[str, np.ndarray], path: str | Path, title: str = "joint posterior"
) -> Path:
    """One 2-D map, drawn once per variable and coloured by it: classes with a legend (missing values light grey),
    numbers on a colour scale with a colour bar."""
    names = list(variables)[:MAX_COLOURED_PANELS]
    n_cols = min(3, len(names))
    n_rows = math.ceil(len(names) / n_cols)
    with _style():
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.4 * n_cols, 3.9 * n_rows), squeeze=False)
        for ax in axes.flat[len(names) :]:
            ax.axis("off")
        for ax, name in zip(axes.flat, names):
            values = np.asarray(variables[name], dtype=object)
            given = present(values)
            ax.scatter(
                coords[~given, 0],
                coords[~given, 1],
                s=3,
                color="lightgray",
                linewidths=0,
                label="unknown" if (~given).any() else None,
            )
            numbers = as_numbers(values[given])
            if numbers is not None and len(np.unique(numbers)) > MAX_LEGEND_CLASSES:
                shown = ax.scatter(coords[given, 0], coords[given, 1], s=3, c=numbers, cmap=HEATMAP, linewidths=0)
                fig.colorbar(shown, ax=ax, label=name)
            else:
                text = values[given].astype(str)
                classes, counts = np.unique(text, return_counts=True)
                kept = classes[np.argsort(-counts)][:MAX_LEGEND_CLASSES]
                cmap = plt.get_cmap("tab10")
                for c, value in enumerate(sorted(kept)):
                    chosen = text == value
                    ax.scatter(
                        coords[given][chosen, 0],
                        coords[given][chosen, 1],
                        s=3,
                        color=cmap(c % 10),
                        linewidths=0,
                        label=value,
                    )
                ax.legend(loc="best", markerscale=4, fontsize=7, title=name)
            ax.set_title(f"{title}, coloured by {name}")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        return _save(fig, path)
