"""What a trained model learned, as one self-contained HTML page: `write_report(run_dir)` -> run_dir/report.html.

Every figure is computed here from the run's model and test data (and its `metrics.csv` / `eval.json`),
written as a PNG into `run_dir/figures/` and embedded in the page (base64), so the page needs no network
and no other file to be viewed. Sections (their HTML ids): `summary`, `config`, `metrics`, `curves`,
`maps`, `sticks`, `per-dimension`, `generation`, `imputation`, `prior`. A section that does not apply to
a run (cross-modal generation of a single-modality model, imputation without missing rows) says why.

`compare_runs(run_dirs, out)` puts several runs side by side: their metrics and settings in one table,
overlaid curves and KL spectra, and each run's key figures in columns.

Definitions used by the figures:
- latent maps: t-SNE (openTSNE) of each test row's posterior mean in the space the decoder reads (logit E[v]
  for stick families, which E[pi] squashes towards zero for late sticks; E[z] for Gaussians), for the
  joint posterior and for each modality's own posterior (rows where that modality is observed);
- samples per latent dimension (as in Nalisnick & Smyth 2017): every latent dimension is held at its prior
  median; "one alone" sweeps dimension k over its prior quantiles 5 %..95 %; "first k" draws the first k
  dimensions from the prior (the same draws in every row, so row k adds dimension k to row k - 1).
  Dimensions are the sticks in order for stick families (as many as hold 99 % of E[pi] for 90 % of the
  test rows) and, for Gaussians, the KL-active dimensions by decreasing KL.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InfinimodalError
from ..runfiles import read_config, read_json_object, unfinished_warning
from ..stick_breaking import sticks_to_cover
from . import plots
from .metrics import KL_ACTIVE_THRESHOLD, encode

log = logging.getLogger("infinimodal")

FIGURES = "figures"
MIN_MAP_ROWS = 4
REPORT = "report.html"
SECTIONS = (
    ("summary", "Summary"),
    ("config", "Configuration"),
    ("metrics", "Test metrics"),
    ("curves", "Training curves"),
    ("maps", "Latent maps"),
    ("sticks", "Stick usage"),
    ("per-dimension", "Samples per latent dimension"),
    ("generation", "Reconstructions and cross-modal generation"),
    ("imputation", "Imputation of missing modalities"),
    ("prior", "Samples from the prior"),
)
#: eval.json entries shown as figures rather than in the metrics table.
LONG_METRICS = ("kl_per_dim", "mean_stick_weights", "sticks_99_histogram", "modalities", "notes")


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    html: list[str] = field(default_factory=list)  # tables, notes (already escaped)
    figures: list[Figure] = field(default_factory=list)


# --- reading a run directory ---------------------------------------------------------------------------


def read_curves(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-epoch values of every column of Lightning's metrics.csv (epochs counted from 1).

    Lightning writes step rows and epoch rows with different columns filled; an epoch's value of a column is
    the last non-empty entry logged in that epoch."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "epoch" not in rows[0]:
        raise InfinimodalError(f"{path}: no per-epoch curves (expected Lightning's metrics.csv with an 'epoch' column)")
    epochs = sorted({int(float(r["epoch"])) for r in rows if r.get("epoch")})
    columns = [c for c in rows[0] if c not in ("epoch", "step")]
    curves = {c: np.full(len(epochs), np.nan) for c in columns}
    position = {e: i for i, e in enumerate(epochs)}
    for row in rows:
        if not row.get("epoch"):
            continue
        i = position[int(float(row["epoch"]))]
        for c in columns:
            if row.get(c) not in (None, ""):
                curves[c][i] = float(row[c])
    curves = {c: v for c, v in curves.items() if np.isfinite(v).any()}
    return np.asarray(epochs) + 1, curves


def _flatten(values: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name} / ")
        else:
            out[name] = value
    return out


def _format(value) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, bold: set[tuple[int, int]] = frozenset()) -> str:
    lines = ["<table>"]
    if header:
        lines.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            text = html.escape(cell)
            cells.append(f"<td><b>{text}</b></td>" if (r, c) in bold else f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _tables_side_by_side(rows: Sequence[Sequence[str]], header: Sequence[str], columns: int) -> str:
    """A long two-column table cut into `columns` tables next to each other (less scrolling)."""
    size = max(1, math.ceil(len(rows) / columns))
    parts = [_table(rows[i : i + size], header) for i in range(0, len(rows), size)]
    return '<div class="tables">' + "".join(parts) + "</div>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


# --- what the figures are made of ------------------------------------------------------------------------


def tsne_map(points: np.ndarray, progress: bool = True, desc: str = "t-SNE", seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates of `points` [n, d] (openTSNE, FFT-accelerated), with a progress bar."""
    from openTSNE import TSNE

    points = np.asarray(points, dtype=np.float64)
    if len(points) < MIN_MAP_ROWS:
        raise InfinimodalError(f"a t-SNE map needs at least {MIN_MAP_ROWS} rows, got {len(points)}")
    perplexity = float(min(30.0, (len(points) - 1) / 3.0))
    every = 10
    total = 250 + 500  # openTSNE's early-exaggeration and main phases
    with tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar:
        def tick(iteration, error, embedding):
            bar.update(every)
            return False

        embedding = TSNE(perplexity=perplexity, n_jobs=2, random_state=seed, callbacks=tick, callbacks_every_iters=every).fit(points)
    return np.asarray(embedding)


def prior_quantiles(latent, levels: np.ndarray, n_draws: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension prior quantiles at `levels` [L] and prior medians, from `n_draws` prior samples.

    Monte Carlo keeps this family-agnostic (the Beta, logit-normal and Gaussian priors alike): with 20,000
    draws a quantile's standard error is below 0.005 of the prior's spread. Returns [L, D] and [D]."""
    draws = latent.sample_prior(n_draws).double().numpy()
    return np.quantile(draws, levels, axis=0), np.median(draws, axis=0)


def dimension_sweeps(latent, alone_dims: Sequence[int], first_dims: Sequence[int], n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent codes for the per-dimension figure: alone [len(alone_dims), n, D], first [len(first_dims), n, D].

    alone[r, j]: every dimension at its prior median but alone_dims[r], which takes prior quantile level j of
    n levels evenly spaced in 5 %..95 %; first[r, j]: first_dims[0..r] take prior draw j (the same draws for
    every r), the rest their medians."""
    levels = np.linspace(0.05, 0.95, n)
    quantiles, median = prior_quantiles(latent, levels)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        draws = latent.sample_prior(n).double().numpy()  # [n, D]
    alone = np.broadcast_to(median, (len(alone_dims), n, len(median))).copy()
    first = np.broadcast_to(median, (len(first_dims), n, len(median))).copy()
    for r, d in enumerate(alone_dims):
        alone[r, :, d] = quantiles[:, d]
    for r in range(len(first_dims)):
        chosen = list(first_dims[: r + 1])
        first[r][:, chosen] = draws[:, chosen]
    return torch.from_numpy(alone).float(), torch.from_numpy(first).float()


def used_dimensions(latent_is_stick: bool, joint: dict, max_dims: int) -> tuple[list[int], list[int], str]:
    """Which latent dimensions the per-dimension figure shows: (one alone, in order), (first k, in order), why.

    One alone: the dimensions (sticks) with mean KL above the threshold, at most `max_dims` of the largest KL,
    in index order (what the data actually drive; for stick families these need not be early sticks, since
    a decoder reading logit v or log pi sees late sticks that E[pi] squashes). First k: for stick families the
    sticks in their prior order up to the 90 % quantile of sticks_99 over the test rows; for Gaussians the
    KL-active dimensions by decreasing KL."""
    kl = joint["kl_per_dim"].mean(0)
    active = int((kl > KL_ACTIVE_THRESHOLD).sum())
    by_kl = [int(d) for d in np.argsort(-kl, kind="stable")]
    count = int(np.clip(active, 1, max_dims))
    unit = "sticks" if latent_is_stick else "dimensions"
    why = f"one alone: the {count} {unit} of largest mean KL ({active} have KL > {KL_ACTIVE_THRESHOLD} nats)"
    if not latent_is_stick:
        return sorted(by_kl[:count]), by_kl[:count], why + "; first k: the same dimensions by decreasing KL"
    covered = sticks_to_cover(torch.from_numpy(joint["weights"]), 0.99).numpy()
    wanted = int(np.ceil(np.quantile(covered, 0.9)))
    first = int(np.clip(wanted, 2, min(max_dims, len(kl))))
    why += f"; first k: sticks 1..{first}, as 99 % of E[pi] lies in the first {wanted} sticks for 90 % of the test rows"
    return sorted(by_kl[:count]), list(range(first)), why + (f" (shown: at most {max_dims})" if wanted > max_dims else "")


@torch.no_grad()
def _decode(module, z: torch.Tensor, batch: int = 512) -> dict[str, np.ndarray]:
    flat = z.reshape(-1, z.shape[-1])
    parts = [module.decode_mean(flat[i : i + batch]) for i in range(0, len(flat), batch)]
    return {name: torch.cat([p[name] for p in parts]).numpy().reshape(*z.shape[:-1], *m.shape)
            for name, m in zip(module.names, module.modalities)}


# --- the report ------------------------------------------------------------------------------------------


def write_report(
    run_dir: str | Path,
    max_rows: int = 2000,
    examples: int = 8,
    max_dims: int = 16,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Write run_dir/report.html and run_dir/figures/*.png (see the module docstring).

    max_rows: test rows encoded for the maps and stick statistics; examples: rows shown in the generation,
    imputation and per-dimension figures; max_dims: most latent dimensions in the per-dimension figure."""
    from ..api import load, load_run_data

    run = Path(run_dir)
    started = time.perf_counter()
    vae, config = load(run)
    record = read_config(run / "config.json")
    data = load_run_data(run, config, progress=progress)
    test = data.test
    module, modalities, names = vae.module, vae.modalities, vae.names
    stick = module.latent.has_sticks
    unit = module.latent.unit_name
    figures_dir = run / FIGURES
    figures_dir.mkdir(exist_ok=True)
    (run / REPORT).unlink(missing_ok=True)  # a report that fails half-way leaves no page over the wrong figures
    for old in figures_dir.glob("*.png"):  # a rerun must not leave figures of an earlier model behind
        old.unlink()
    evaluation = read_json_object(run / "eval.json") if (run / "eval.json").is_file() else None
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(len(test))[: min(max_rows, len(test))])
    sample = test.take(rows)
    multimodal = len(modalities) > 1
    singles = [(m,) for m in range(len(modalities))] if multimodal else []
    sections = {key: Section(key, title) for key, title in SECTIONS}
    steps = tqdm(total=7, desc="report", disable=not progress)

    started_steps = []

    def step(name: str | None) -> None:
        """The previous step is done; `name` starts (None: all done)."""
        if started_steps:
            steps.update(1)
        if name is not None:
            started_steps.append(name)
            steps.set_postfix_str(name)
            log.info("report %s: %s", run, name)

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        # summary, configuration, metrics --------------------------------------------------------------
        _summary(sections["summary"], record, evaluation, names, module.latent)
        unfinished = unfinished_warning(run)
        if unfinished:
            sections["summary"].html.insert(0, _note(f"Warning: {unfinished}"))
        _config(sections["config"], record, test, modalities)
        _metrics(sections["metrics"], evaluation, run)
        curves_path = run / "metrics.csv"
        if curves_path.is_file():
            epochs, curves = read_curves(curves_path)
            sections["curves"].intro = (
                "Per-epoch means over the training rows (solid) and the validation rows (dashed). The ELBO is "
                "reconstruction minus KL, always with KL weight 1; the dotted grey line is the KL weight the optimiser used "
                "(the warm-up), so the training loss differs from the training ELBO while it is below 1."
            )
            sections["curves"].figures.append(Figure(plots.curves_figure(epochs, curves, figures_dir / "curves.png"), "ELBO, reconstruction and KL per epoch"))
        else:
            sections["curves"].html.append(_note(f"{curves_path} is missing: the run has no training curves."))
        step("encoding the test rows")
        codes = encode(module, sample, [None, *singles])
        joint, single = codes[0], codes[1:]

        step("latent maps")
        # latent maps ------------------------------------------------------------------------------------
        space = "decoder_space" if stick else "representation"
        space_name = module.latent.decoder_space_name  # the representation's own name where the two coincide
        candidates = [("joint posterior", joint[space], sample.labels)]
        for name, part in zip(names, single):
            chosen = part["rows"]
            candidates.append((f"given {name} only", part[space][chosen], None if sample.labels is None else sample.labels[chosen]))
        panels = [c for c in candidates if len(c[1]) >= MIN_MAP_ROWS and c[1].shape[1] >= 2]
        for title, points, _ in candidates:
            if len(points) < MIN_MAP_ROWS or points.shape[1] < 2:
                sections["maps"].html.append(_note(
                    f"No map of the {title}: {len(points)} test rows of {points.shape[1]} latent values "
                    f"(a t-SNE map needs at least {MIN_MAP_ROWS} rows and 2 values)."
                ))
        maps = []
        for title, points, labels in tqdm(panels, desc="latent maps", disable=not progress, leave=False):
            maps.append((title, tsne_map(points, progress=progress, desc=f"t-SNE, {title}", seed=seed), labels))
        sections["maps"].intro = (
            f"t-SNE maps (openTSNE) of the posterior mean in the space the decoder reads ({space_name}) for {len(rows)} test rows, "
            "from all observed modalities (joint) and from each modality alone. Colours are the data's labels; "
            "classes that form separate islands are separated by the latent code without supervision."
        )
        if sample.labels is None:
            sections["maps"].html.append(_note("The data have no labels: the maps are not coloured."))
        if maps:
            sections["maps"].figures.append(Figure(plots.map_figure(maps, figures_dir / "maps.png"), f"t-SNE of {space_name}, joint and per modality"))

        step("stick usage")
        # stick usage ----------------------------------------------------------------------------------
        kl, weights, counts = latent_usage(joint, single, names, stick)
        sticks = sections["sticks"]
        if stick:
            sticks.intro = (
                "Which sticks the model uses. Left: the mean weight E[pi_k] of each stick over the test rows; right: the mean KL "
                "of each stick's posterior to its prior (a stick with KL near 0 carries no information about the row). "
                "Bars: the joint posterior; lines: each modality's own posterior. Below: how many sticks hold 99 % of E[pi], per test row."
            )
        else:
            sticks.intro = (
                "Which dimensions the model uses: the mean KL of each latent dimension's posterior to the N(0, 1) prior over the test rows "
                "(a dimension with KL near 0 is switched off). Bars: the joint posterior; lines: each modality's own posterior. "
                "Gaussian latents have no stick weights, so there is no sticks_99 distribution."
            )
        sticks.figures.append(Figure(plots.stick_usage_figure(kl, weights, figures_dir / "stick_usage.png", KL_ACTIVE_THRESHOLD, unit), f"usage per {unit}"))
        if stick:
            sticks.figures.append(Figure(plots.sticks_99_figure(counts, module.latent.truncation, figures_dir / "sticks_99.png"), "sticks_99 over the test rows"))
            usage = [[name, f"{np.mean(c):.2f}", str(int(np.median(c))), str(int(c.max())), str(int((kl[name] > KL_ACTIVE_THRESHOLD).sum()))]
                     for name, c in counts.items()]
            sticks.html.append(_table(usage, ["posterior", "mean sticks_99", "median", "max", f"sticks with KL > {KL_ACTIVE_THRESHOLD}"]))
        else:
            sticks.html.append(_table([[name, str(int((v > KL_ACTIVE_THRESHOLD).sum())), f"{v.sum():.2f}"] for name, v in kl.items()],
                                      ["posterior", f"dimensions with KL > {KL_ACTIVE_THRESHOLD}", "total KL (nats)"]))

        step("samples per latent dimension")
        # samples per latent dimension -----------------------------------------------------------------------
        alone_dims, first_dims, why = used_dimensions(stick, joint, max_dims)
        alone, first = dimension_sweeps(module.latent, alone_dims, first_dims, n=examples, seed=seed)
        alone_x, first_x = _decode(module, alone), _decode(module, first)
        per_dim = sections["per-dimension"]
        per_dim.intro = (
            f"Decodes driven by one {unit} at a time (left: {unit} k swept over its prior quantiles 5 %..95 %, every other {unit} at its prior median) "
            f"and by the first k {unit}s (right: the first k drawn from the prior, the same draws in every row, the rest at their medians). "
            f"Shown: {why}. Image modalities show E[x | z]; tabular ones show, per feature, how much E[x | z] varies across the row."
        )
        for modality in modalities:
            path = plots.per_dimension_figure(
                modality, alone_x[modality.name], first_x[modality.name], alone_dims, first_dims, figures_dir / f"per_dimension_{modality.name}.png", unit
            )
            per_dim.figures.append(Figure(path, f"modality {modality.name}: one {unit} alone and the first k {unit}s"))

        step("reconstructions and cross-modal generation")
        # reconstructions and cross-modal generation ----------------------------------------------------------
        complete = np.flatnonzero(test.mask.all(axis=1))  # rows with every modality first: their data are all shown
        shown = np.concatenate([complete, np.flatnonzero(~test.mask.all(axis=1))])[:examples]
        truth = plots.observed_rows(test, shown, modalities)
        batch = test.batch(shown)
        generation = sections["generation"]
        generation.intro = (
            f"{len(shown)} test rows: the data (grey: missing), then every modality decoded (E[x | z] at one posterior sample z) "
            "from all observed modalities (reconstruction)" + (" and from each modality alone (cross-modal generation)." if multimodal else ".")
        )
        subsets = [None, *singles]
        for subset in subsets:
            mask = batch["mask"] if subset is None else batch["mask"] & torch.from_numpy(np.isin(np.arange(len(names)), subset))[None, :]
            usable = mask.any(dim=1)
            z = torch.zeros(len(shown), module.latent.latent_size)
            if bool(usable.any()):
                index = usable.nonzero().squeeze(-1)
                q = module.posterior({k: v.index_select(0, index) for k, v in batch["data"].items()}, mask.index_select(0, index))
                z[index] = module.latent.rsample(q)
            generated = _decode(module, z)
            label = ("all observed modalities" if multimodal else "reconstruction") if subset is None else f"{names[subset[0]]} only"
            columns = [(f"{name}\n(data)", m, truth[name]) for name, m in zip(names, modalities)]
            for name, m in zip(names, modalities):
                values = generated[name].astype(np.float64)
                values[~usable.numpy()] = np.nan  # rows where the given subset is not observed: nothing to condition on
                columns.append((f"{name}\n(reconstructed)" if label == "reconstruction" else f"{name}\n| {label}", m, values))
            stem = "reconstruction" if subset is None else f"given_{names[subset[0]]}"
            heading = "reconstruction" if label == "reconstruction" else f"generated from {label}"
            path = plots.columns_figure(columns, figures_dir / f"{stem}.png", title=heading)
            generation.figures.append(Figure(path, heading if label == "reconstruction" else f"every modality generated from {label}"))

        step("imputation")
        # imputation ------------------------------------------------------------------------------------------
        imputation = sections["imputation"]
        partial = np.flatnonzero(~test.mask.all(axis=1))
        if len(partial):
            chosen = partial[:examples]
            observed = plots.observed_rows(test, chosen, modalities)
            filled = vae.impute(test.take(chosen))
            columns = []
            for m, (name, modality) in enumerate(zip(names, modalities)):
                columns.append((f"{name}\n(observed)", modality, observed[name]))
                missing = ~test.mask[chosen, m]
                if missing.any():
                    values = np.asarray(filled[name], dtype=np.float64).copy()
                    values[~missing] = np.nan
                    columns.append((f"{name}\n(imputed)", modality, values))
            counts = ", ".join(f"{name}: {int((~test.mask[:, m]).sum())}" for m, name in enumerate(names))
            imputation.intro = (
                f"Test rows with a modality missing ({len(partial)} of {len(test)}; missing per modality: {counts}). "
                f"For {len(chosen)} of them: what was observed (grey: missing) and what the model fills in for the missing rows "
                "(E[x | z] at the posterior mean of z given the observed modalities, as `infinimodal impute` does)."
            )
            imputation.figures.append(Figure(plots.columns_figure(columns, figures_dir / "imputation.png"), "observed and imputed modalities"))
        else:
            imputation.html.append(_note(
                "The test set has no missing modalities, so there is nothing to impute. "
                + ("Cross-modal generation above shows what the model would fill in." if multimodal else "")
            ))

        step("prior samples")
        # prior samples ------------------------------------------------------------------------------------
        prior = sections["prior"]
        prior.intro = "Random draws z from the prior, decoded (E[x | z]). " + (
            "Each row is one draw decoded into every modality: a coherent model gives the same content in every column." if multimodal else ""
        )
        if len(modalities) == 1 and plots.is_image(modalities[0]):
            samples = vae.sample(4 * examples)
            path = plots.image_grid_figure(modalities[0], samples[names[0]], figures_dir / "prior_samples.png", columns=examples)
        else:
            samples = vae.sample(examples)
            path = plots.columns_figure([(name, m, samples[name]) for name, m in zip(names, modalities)], figures_dir / "prior_samples.png")
        prior.figures.append(Figure(path, "samples from the prior"))
        step(None)
    steps.close()

    title = f"{run.name}: {config.latent} latent, {config.aggregator} over {', '.join(names)}"
    page = render_page(title, list(sections.values()), footer=f"written by infinimodal in {time.perf_counter() - started:.0f} s from {run.resolve()}")
    out = run / REPORT
    out.write_text(page)
    log.info("report written: %s", out)
    return out


def latent_usage(joint: dict, single: Sequence[dict], names: Sequence[str], stick: bool) -> tuple[dict, dict | None, dict | None]:
    """Per posterior ("joint", then each modality over the rows where it is observed): mean KL per dimension,
    mean E[pi] per stick and each row's sticks_99 (the last two None for Gaussian latents)."""
    kl = {"joint": joint["kl_per_dim"].mean(0)}
    weights = {"joint": joint["weights"].mean(0)} if stick else None
    counts = {"joint": sticks_to_cover(torch.from_numpy(joint["weights"]), 0.99).numpy()} if stick else None
    for name, part in zip(names, single):
        chosen = part["rows"]
        if not chosen.any():
            continue
        kl[name] = part["kl_per_dim"][chosen].mean(0)
        if stick:
            weights[name] = part["weights"][chosen].mean(0)
            counts[name] = sticks_to_cover(torch.from_numpy(part["weights"][chosen]), 0.99).numpy()
    return kl, weights, counts


def _summary(section: Section, record: dict, evaluation: dict | None, names: list[str], family) -> None:
    latent, stick, size = record.get("latent"), family.has_sticks, family.describe()
    rows = [
        ["data", f"{record.get('data')} ({record.get('data_source', '')})"],
        ["modalities", ", ".join(names)],
        ["model", f"{latent} latent, {size}, {record.get('aggregator')} fusion"],
        ["training", f"{record.get('epochs')} epochs on {record.get('n_train')} rows, {_format(record.get('train_seconds'))} s; best validation ELBO {_format(record.get('best_val_elbo'))}"],
    ]
    if evaluation is not None:
        if evaluation.get("posterior_family") and evaluation["posterior_family"] != latent:
            rows.append(["posterior family", evaluation["posterior_family"]])
        rows.append([f"test ELBO (the {record.get('aggregator')} bound)", _format(evaluation.get("elbo"))])
        rows.append([f"test log p(x) ({evaluation.get('iw_samples')} samples)", _format(evaluation.get("log_likelihood"))])
        if stick and "sticks_99" in evaluation:
            rows.append(["sticks holding 99 % of E[pi]", f"{evaluation['sticks_99']:.2f} of {family.truncation}"])
        rows.append(["dimensions with KL > 0.05", str(evaluation.get("kl_active"))])
        if "kl_span_99" in evaluation:
            rows.append(["leading dimensions holding 99 % of the KL", f"{evaluation['kl_span_99']} of {family.n_dimensions}"])
            rows.append(["Spearman correlation of dimension index and KL (-1: ordered)", _format(evaluation.get("kl_order_spearman"))])
    section.html.append(_table(rows))


def _config(section: Section, record: dict, test, modalities) -> None:
    section.intro = "The run's config.json: every setting it was trained with, and its modalities."
    settings = [[key, _format(value) if not isinstance(value, dict) else json.dumps(value)] for key, value in record.items() if key != "modalities"]
    section.html.append(_tables_side_by_side(settings, ["setting", "value"], 3))
    observed = test.mask.mean(axis=0)
    section.html.append(_table(
        [[m.name, " x ".join(map(str, m.shape)), m.likelihood, f"{100 * observed[i]:.1f} %"] for i, m in enumerate(modalities)],
        ["modality", "shape", "likelihood", "observed in test rows"],
    ))


def _metrics(section: Section, evaluation: dict | None, run: Path) -> None:
    if evaluation is None:
        section.html.append(_note(f"No eval.json: run `infinimodal evaluate {run}` for the test metrics, then this report again."))
        return
    section.intro = "The run's eval.json (see `infinimodal.evaluation.metrics` for each definition); per-dimension lists are drawn below."
    flat = _flatten({k: v for k, v in evaluation.items() if k not in LONG_METRICS})
    section.html.append(_tables_side_by_side([[k, _format(v)] for k, v in flat.items()], ["metric", "value"], 3))
    for note in evaluation.get("notes", []):
        section.html.append(_note(note))


# --- HTML --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #2b3a4a; color: white; padding: 16px 28px; }
header h1 { margin: 0; font-size: 22px; }
nav { padding: 8px 28px; background: #eef1f4; font-size: 14px; }
nav a { margin-right: 14px; color: #2b3a4a; }
main { padding: 4px 28px 28px 28px; max-width: 1400px; }
section { background: white; border: 1px solid #e2e2e2; border-radius: 6px; margin: 16px 0; padding: 4px 18px 14px 18px; }
h2 { font-size: 18px; border-bottom: 1px solid #e2e2e2; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 12px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { margin: 10px 0 18px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
p.intro { font-size: 14px; max-width: 1000px; }
p.note { font-size: 14px; color: #7a5a00; background: #fff8e1; padding: 6px 10px; border-radius: 4px; }
.tables { display: flex; flex-wrap: wrap; gap: 0 24px; align-items: flex-start; }
.side { display: grid; gap: 12px; }
.side > div { min-width: 0; }
.side img { max-width: 100%; height: auto; border: 1px solid #eee; }
footer { color: #888; font-size: 12px; padding: 0 28px 20px 28px; }
"""


def embed_png(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _figure(figure: Figure, base: Path) -> str:
    try:
        link = figure.path.relative_to(base).as_posix()
    except ValueError:
        link = figure.path.as_posix()
    return (
        f"<figure>{embed_png(figure.path, figure.caption)}"
        f'<figcaption>{html.escape(figure.caption)} (<a href="{html.escape(link)}">{html.escape(figure.path.name)}</a>)</figcaption></figure>'
    )


def render_page(title: str, sections: Sequence[Section], footer: str = "", base: Path | None = None) -> str:
    """One self-contained HTML page; figures are embedded, and linked as files relative to `base`."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1></header>",
        "<nav>" + "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections) + "</nav><main>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.id}"><h2>{html.escape(section.title)}</h2>')
        if section.intro:
            parts.append(f'<p class="intro">{html.escape(section.intro)}</p>')
        parts.extend(section.html)
        for figure in section.figures:
            parts.append(_figure(figure, base if base is not None else figure.path.parent.parent))
        parts.append("</section>")
    parts.append(f"</main><footer>{html.escape(footer)}</footer></body></html>")
    return "\n".join(parts) + "\n"


# --- several runs side by side ------------------------------------------------------------------------------

#: Metrics where larger is better / smaller is better: the best run's value is set in bold.
HIGHER_IS_BETTER = ("elbo", "log_likelihood", "linear_probe_accuracy", "linear_probe_accuracy_decoder_input", "coherence / conditional",
                    "coherence / joint", "shared_factor_r2", "shared_factor_r2_decoder_input")
LOWER_IS_BETTER = ("knn_error", "knn_error_decoder_input")
#: Metrics that are a different bound under each aggregator: bold only among runs of one aggregator.
AGGREGATOR_BOUNDS = ("elbo",)
#: Each run's figures shown side by side on the compare page (file stem, title).
SIDE_BY_SIDE = (("maps", "latent maps"), ("stick_usage", "stick usage"), ("per_dimension", "samples per latent dimension (first modality)"),
                ("reconstruction", "reconstructions"), ("prior_samples", "samples from the prior"))


def _direction(key: str) -> int:
    for prefixes, sign in ((HIGHER_IS_BETTER, 1), (LOWER_IS_BETTER, -1)):
        if any(key == p or key.startswith(p + " / ") for p in prefixes):
            return sign
    return 0


def _labels(runs: Sequence[Path]) -> list[str]:
    labels = [r.name for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.parent.name}/{r.name}" for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{i + 1}: {label}" for i, label in enumerate(labels)]
    return labels


def _report_is_current(run: Path) -> bool:
    """A report exists and is newer than the model and the metrics it shows."""
    page = run / REPORT
    if not page.is_file() or not (run / FIGURES).is_dir():
        return False
    inputs = [run / name for name in ("model.ckpt", "eval.json", "metrics.csv") if (run / name).is_file()]
    return all(page.stat().st_mtime >= path.stat().st_mtime for path in inputs)


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path, progress: bool = True, **report_settings) -> Path:
    """Write the compare page `out` (HTML) and its figures into `<out stem>_figures/` next to it.

    Runs without a report get one first (`write_report` with `report_settings`)."""
    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise InfinimodalError(f"compare needs at least two run directories, got {len(runs)}")
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InfinimodalError(f"--out must be an .html file, got {out.name}")
    for run in runs:
        for name in ("config.json", "model.ckpt"):
            if not (run / name).is_file():
                raise InfinimodalError(f"{run} is not a finished run directory: {name} is missing")
    started = time.perf_counter()
    labels = _labels(runs)
    for run in runs:
        if not _report_is_current(run):
            log.info("compare: %s has no report of its current model and metrics; writing it", run)
            write_report(run, progress=progress, **report_settings)
    records = [read_config(r / "config.json") for r in runs]
    evaluations = [read_json_object(r / "eval.json") if (r / "eval.json").is_file() else None for r in runs]
    figures_dir = out.parent / f"{out.stem}_figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    sections = []

    overview = Section("runs", "Runs")
    overview.html.append(_table(
        [[label, str(run), f"{rec.get('latent')} / {rec.get('aggregator')}", str(rec.get("data")), str(rec.get("epochs")), _format(rec.get("train_seconds"))]
         for label, run, rec in zip(labels, runs, records)],
        ["run", "directory", "latent / fusion", "data", "epochs", "training seconds"],
    ))
    keys = sorted({k for rec in records for k in rec if k != "modalities"})
    differing = [k for k in keys if len({json.dumps(rec.get(k), sort_keys=True) for rec in records}) > 1]
    overview.html.append("<h3>Settings that differ</h3>")
    overview.html.append(_table([[k, *(_format(rec.get(k)) if not isinstance(rec.get(k), dict) else json.dumps(rec.get(k)) for rec in records)] for k in differing],
                                ["setting", *labels]) if differing else _note("The runs have the same settings."))
    if len({rec.get("data") for rec in records}) > 1:
        overview.html.append(_note("The runs were trained on different data: their metrics are not comparable."))
    sections.append(overview)

    metrics = Section("metrics", "Test metrics", intro="Each run's eval.json; the best value of each metric where larger or smaller is better is in bold.")
    flat = [_flatten({k: v for k, v in e.items() if k not in LONG_METRICS}) if e is not None else {} for e in evaluations]
    names = list(dict.fromkeys(k for f in flat for k in f))
    rows, bold = [], set()
    for r, key in enumerate(names):
        values = [f.get(key) for f in flat]
        rows.append([key, *(_format(v) for v in values)])
        sign = 0 if key in AGGREGATOR_BOUNDS and len({rec.get("aggregator") for rec in records}) > 1 else _direction(key)
        numbers = [v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None for v in values]
        if sign and sum(v is not None for v in numbers) > 1:
            best = max(sign * v for v in numbers if v is not None)
            bold |= {(r, c + 1) for c, v in enumerate(numbers) if v is not None and sign * v == best}
    if len({rec.get("aggregator") for rec in records}) > 1:
        metrics.html.append(_note("The runs use different aggregators, and each aggregator's ELBO is its own bound (PoE: the joint posterior's; "
                                  "MoE: the mixture's; MoPoE: with a mixture of subset KLs), so no ELBO is set in bold: compare log_likelihood."))
    scored = [e for e in evaluations if e is not None]
    for key, what in (("n_test", "numbers of test rows"), ("iw_samples", "numbers of importance samples")):
        if len({e.get(key) for e in scored}) > 1:
            metrics.html.append(_note(f"The runs were evaluated with different {what} ({key}): their metrics are not directly comparable; "
                                      "evaluate them alike (infinimodal evaluate DIR --iw-samples S --max-test N)."))
    for label, e in zip(labels, evaluations):
        if e is None:
            metrics.html.append(_note(f"{label} has no eval.json: run `infinimodal evaluate` on it."))
    metrics.html.append(_table(rows, ["metric", *labels], bold))
    sections.append(metrics)

    curves = Section("curves", "Training curves and latent usage")
    runs_curves = {label: read_curves(run / "metrics.csv") for label, run in zip(labels, runs) if (run / "metrics.csv").is_file()}
    if runs_curves:
        curves.figures.append(Figure(plots.overlay_curves_figure(runs_curves, figures_dir / "curves.png"), "validation ELBO and KL per epoch"))
    spectra = {label: np.asarray(e["kl_per_dim"]) for label, e in zip(labels, evaluations) if e is not None and "kl_per_dim" in e}
    if spectra:
        curves.figures.append(Figure(plots.sorted_kl_figure(spectra, figures_dir / "kl_spectrum.png", KL_ACTIVE_THRESHOLD),
                                     "mean KL per dimension or stick, sorted: how many dimensions each model uses"))
    histograms = {label: np.repeat(np.arange(1, len(e["sticks_99_histogram"]) + 1), e["sticks_99_histogram"])
                  for label, e in zip(labels, evaluations) if e is not None and e.get("sticks_99_histogram")}
    if histograms:
        truncation = max(len(e["sticks_99_histogram"]) for e in evaluations if e is not None and e.get("sticks_99_histogram"))
        curves.figures.append(Figure(plots.sticks_99_figure(histograms, truncation, figures_dir / "sticks_99.png"), "sticks_99 over the test rows (stick families)"))
    sections.append(curves)

    side = Section("side-by-side", "Figures side by side", intro="Each run's own report figures, in columns (the full reports are in each run directory).")
    columns = f"repeat({len(runs)}, minmax(0, 1fr))"
    for stem, title in SIDE_BY_SIDE:
        side.html.append(f"<h3>{html.escape(title)}</h3>")
        cells = []
        for label, run, record in zip(labels, runs, records):
            first = record["modalities"][0]["name"] if record.get("modalities") else "image"
            path = run / FIGURES / (f"{stem}_{first}.png" if stem == "per_dimension" else f"{stem}.png")
            cell = embed_png(path, f"{label}: {title}") if path.is_file() else _note("not in this run's report")
            cells.append(f"<div><b>{html.escape(label)}</b><br>{cell}</div>")
        side.html.append(f'<div class="side" style="grid-template-columns: {columns}">' + "".join(cells) + "</div>")
    sections.append(side)

    page = render_page(f"infinimodal: {' vs '.join(labels)}", sections, base=out.parent,
                       footer=f"written by infinimodal in {time.perf_counter() - started:.0f} s")
    out.write_text(page)
    log.info("compare page written: %s", out)
    return out
