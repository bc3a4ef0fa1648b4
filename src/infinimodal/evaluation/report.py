"""What a trained model learned, as one self-contained HTML page: `write_report(run_dir)` -> run_dir/report.html.

Every figure is computed here from the run's model and test data (and its `metrics.csv` / `eval.json`),
written as a PNG into `run_dir/figures/` and embedded in the page (base64), so the page needs no network
and no other file to be viewed. Sections (their HTML ids): `summary`, `config`, `metrics`, `curves`,
`maps`, `sticks`, `per-dimension`, `generation`, `classes`, `imputation`, `deviation`, `prior`. A section that does not apply to
a run (cross-modal generation of a single-modality model, imputation without missing rows) says why.

`infinimodal.evaluation.compare.compare_runs(run_dirs, out)` puts several runs side by side; `html` renders both pages.

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

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..columns import COVARIATES
from ..errors import InfinimodalError
from ..runfiles import read_config, read_json_object, unfinished_warning
from ..stick_breaking import sticks_to_cover
from . import plots
from ..truncation import SPARE_DIMENSIONS, USED_DIMENSION_KL
from .html import Figure, Section, flatten, format_value, note, render_page, table, tables_side_by_side
from ..deviation import Reference, deviation_scores
from .curves import class_error_curves, read_curves
from .explain import explanation_variables
from .report_explain import explain_section, found_summary
from .catalogue import metric_of
from .metrics import KL_ACTIVE_THRESHOLD, encode, kl_span

if TYPE_CHECKING:
    from ..data import MultimodalData, Split

#: Posterior samples per likelihood estimate in the report's deviation scores.
DEVIATION_SAMPLES = 20

log = logging.getLogger("infinimodal")

FIGURES = "figures"
MIN_MAP_ROWS = 4
REPORT = "report.html"
SECTIONS = (
    ("summary", "Summary"),
    ("explain", "What each dimension does"),
    ("config", "Configuration"),
    ("data", "The data as read, and the covariates"),
    ("metrics", "Test metrics"),
    ("curves", "Training curves"),
    ("maps", "Latent maps"),
    ("sticks", "Stick usage"),
    ("per-dimension", "Samples per latent dimension"),
    ("generation", "Reconstructions and cross-modal generation"),
    ("classes", "Generation from a class"),
    ("imputation", "Imputation of missing modalities"),
    ("deviation", "How atypical the test rows are"),
    ("prior", "Samples from the prior"),
)
#: What the heat maps of tabular rows show, said in every caption that has them.
TABULAR_UNITS = (
    " Tabular modalities are heat maps of each feature in SDs from its mean over the rows drawn (red above, blue below, "
    "grey missing), so that a feature in large units (age in years) does not swamp the others."
)
#: Sections folded under their title (details a reader opens when needed).
FOLDED = ("config",)
#: eval.json entries shown as figures rather than in the metrics table.
LONG_METRICS = ("kl_per_dim", "mean_stick_weights", "sticks_99_histogram", "modalities", "notes")


# --- reading a run directory ---------------------------------------------------------------------------


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

        embedding = TSNE(
            perplexity=perplexity, n_jobs=2, random_state=seed, callbacks=tick, callbacks_every_iters=every
        ).fit(points)
    return np.asarray(embedding)


def prior_quantiles(latent, levels: np.ndarray, n_draws: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension prior quantiles at `levels` [L] and prior medians, from `n_draws` prior samples.

    Monte Carlo keeps this family-agnostic (the Beta, logit-normal and Gaussian priors alike): with 20,000
    draws a quantile's standard error is below 0.005 of the prior's spread. Returns [L, D] and [D]."""
    draws = latent.sample_prior(n_draws).double().numpy()
    return np.quantile(draws, levels, axis=0), np.median(draws, axis=0)


def dimension_sweeps(
    latent, alone_dims: Sequence[int], first_dims: Sequence[int], n: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
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


def used_dimensions(
    latent_is_stick: bool, joint: dict, max_dims: int, mass_counts_dimensions: bool = True
) -> tuple[list[int], list[int], str]:
    """Which latent dimensions the per-dimension figure shows: (one alone, in order), (first k, in order), why.

    One alone: the dimensions (sticks) with mean KL above the threshold, at most `max_dims` of the largest KL,
    in index order (what the data actually drive; for stick families these need not be early sticks, since
    a decoder reading logit v or log pi sees late sticks that E[pi] squashes). First k: for stick families the
    sticks in their prior order up to the 90 % quantile of sticks_99 over the test rows (the gated family, whose
    gates always leave mass after the last dimension: up to the dimensions holding 99 % of the KL); for Gaussians
    the KL-active dimensions by decreasing KL."""
    kl = joint["kl_per_dim"].mean(0)
    active = int((kl > KL_ACTIVE_THRESHOLD).sum())
    by_kl = [int(d) for d in np.argsort(-kl, kind="stable")]
    count = int(np.clip(active, 1, max_dims))
    unit = "sticks" if latent_is_stick else "dimensions"
    why = f"one alone: the {count} {unit} of largest mean KL ({active} have KL > {KL_ACTIVE_THRESHOLD} nats)"
    if not latent_is_stick:
        return sorted(by_kl[:count]), by_kl[:count], why + "; first k: the same dimensions by decreasing KL"
    if mass_counts_dimensions:
        covered = sticks_to_cover(torch.from_numpy(joint["weights"]), 0.99).numpy()
        wanted = int(np.ceil(np.quantile(covered, 0.9)))
        reason = f"as 99 % of E[pi] lies in the first {wanted} sticks for 90 % of the test rows"
    else:
        wanted = kl_span(kl)
        reason = f"as dimensions 1..{wanted} hold 99 % of the KL"
    first = int(np.clip(wanted, 2, min(max_dims, len(kl))))
    why += f"; first k: {unit} 1..{first}, {reason}"
    return (
        sorted(by_kl[:count]),
        list(range(first)),
        why + (f" (shown: at most {max_dims})" if wanted > max_dims else ""),
    )


@torch.no_grad()
def _decode(module, z: torch.Tensor, covariates: torch.Tensor | None = None, batch: int = 512) -> dict[str, np.ndarray]:
    """E[x | z] of every modality for z [..., latent]; a conditional model's `covariates` are one row for every z, or one
    row per z."""
    flat = z.reshape(-1, z.shape[-1])
    if covariates is not None and len(covariates) == 1:
        covariates = covariates.expand(len(flat), -1)
    parts = [
        module.decode_mean(flat[i : i + batch], None if covariates is None else covariates[i : i + batch])
        for i in range(0, len(flat), batch)
    ]
    return {
        name: torch.cat([p[name] for p in parts]).numpy().reshape(*z.shape[:-1], *m.shape)
        for name, m in zip(module.names, module.modalities)
    }


# --- the report ------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every section of one report reads: the run's model and data, the test rows drawn, where figures go."""

    path: Path
    vae: Any  # the MultimodalVAE facade, which `write_report`'s load_run gives (a layer above: not imported)
    data: MultimodalData
    sample: Split  # the test rows the maps and stick statistics use
    figures: Path
    examples: int
    seed: int
    progress: bool

    @property
    def module(self):
        return self.vae.module

    @property
    def modalities(self):
        return self.vae.modalities

    @property
    def names(self) -> list[str]:
        return self.vae.names

    @property
    def multimodal(self) -> bool:
        return len(self.modalities) > 1

    @property
    def singles(self) -> list[tuple[int]]:
        return [(m,) for m in range(len(self.modalities))] if self.multimodal else []


def write_report(
    run_dir: str | Path,
    load_run: Callable,
    max_rows: int = 2000,
    examples: int = 8,
    max_dims: int = 16,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Write run_dir/report.html and run_dir/figures/*.png (see the module docstring).

    load_run(run_dir, progress) -> (model, configuration, data): the run as the facade loads it (`api.load_run`; the
    report receives a loaded run rather than reaching up to the facade for one). max_rows: test rows encoded for the
    maps and stick statistics; examples: rows shown in the generation, imputation and per-dimension figures;
    max_dims: most latent dimensions in the per-dimension figure."""
    run = Path(run_dir)
    started = time.perf_counter()
    vae, config, data = load_run(run, progress)
    record = read_config(run / "config.json")
    figures_dir = run / FIGURES
    figures_dir.mkdir(exist_ok=True)
    (run / REPORT).unlink(missing_ok=True)  # a report that fails half-way leaves no page over the wrong figures
    for old in figures_dir.glob("*.png"):  # a rerun must not leave figures of an earlier model behind
        old.unlink()
    evaluation = read_json_object(run / "eval.json") if (run / "eval.json").is_file() else None
    rows = np.sort(np.random.default_rng(seed).permutation(len(data.test))[: min(max_rows, len(data.test))])
    ctx = _Run(run, vae, data, data.test.take(rows), figures_dir, examples, seed, progress)
    sections = {key: Section(key, title, folded=key in FOLDED) for key, title in SECTIONS}
    steps = tqdm(total=10, desc="report", disable=not progress)
    started_steps: list[str] = []

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
        _summary(sections["summary"], record, evaluation, ctx.names, ctx.module.latent)
        unfinished = unfinished_warning(run)
        if unfinished:
            sections["summary"].html.insert(0, note(f"Warning: {unfinished}"))
        _config(sections["config"], record, data.test, ctx.modalities)
        _data(sections["data"], ctx)
        _metrics(sections["metrics"], evaluation, run)
        _curves(sections["curves"], run, figures_dir)
        step("what each dimension does")
        found = explain_section(sections["explain"], ctx.vae, ctx.sample, ctx.path, ctx.figures)
        sections["summary"].html.append(found_summary(found))
        step("encoding the test rows")
        codes = encode(ctx.module, ctx.sample, [None, *ctx.singles])
        joint, single = codes[0], codes[1:]
        step("latent maps")
        _latent_maps(sections["maps"], ctx, joint, single)
        step("stick usage")
        _stick_usage(sections["sticks"], ctx, joint, single)
        step("samples per latent dimension")
        _per_dimension(sections["per-dimension"], ctx, joint, max_dims)
        step("reconstructions and cross-modal generation")
        _generation(sections["generation"], ctx)
        step("generation from a class")
        _class_generation(sections["classes"], ctx)
        step("imputation")
        _imputation(sections["imputation"], ctx)
        step("deviation scores")
        _deviation(sections["deviation"], ctx)
        step("prior samples")
        _prior(sections["prior"], ctx)
        step(None)
    steps.close()

    title = f"{run.name}: {config.latent} latent, {config.aggregator} over {', '.join(ctx.names)}"
    page = render_page(
        title,
        list(sections.values()),
        footer=f"written by infinimodal in {time.perf_counter() - started:.0f} s from {run.resolve()}",
    )
    out = run / REPORT
    out.write_text(page)
    log.info("report written: %s", out)
    return out


#: Training rows whose embeddings fit the covariate probes of the report's data section, at most.
COVARIATE_PROBE_ROWS = 5000


def _data(section: Section, ctx: _Run) -> None:
    """What training printed about the data (for tables: subjects per table, missingness patterns, each column's
    likelihood) and, for a model with covariates, how much of each covariate the embedding still carries."""
    notes = ctx.data.notes
    if notes:
        section.html.append(table([[line] for line in notes], ["as read when training started"]))
    encoding = ctx.data.covariates
    if encoding is None:
        if not notes:
            section.html.append(note("Nothing to show: a built-in data set, read as documented."))
        return
    from sklearn.linear_model import LogisticRegression, RidgeCV

    train = ctx.data.train.take(slice(0, COVARIATE_PROBE_ROWS))
    z_train, z_test = (
        encode(ctx.module, train)[0]["representation"],
        encode(ctx.module, ctx.sample)[0]["representation"],
    )
    known, held = encoding.decode(train.arrays[COVARIATES]), encoding.decode(ctx.sample.arrays[COVARIATES])
    rows = []
    for column in encoding.columns:
        y_train, y_test = known[column.name], held[column.name]
        if column.family == "categorical":
            chance = max(float(np.mean(y_test == c)) for c in np.unique(y_test))
            accuracy = (
                float((LogisticRegression(max_iter=2000).fit(z_train, y_train).predict(z_test) == y_test).mean())
                if len(np.unique(y_train)) > 1
                else chance
            )
            rows.append([column.name, column.describe(), f"accuracy {accuracy:.3f}", f"majority share {chance:.3f}"])
        else:
            predicted = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(z_train, y_train).predict(z_test)
            r2 = 1 - float(np.sum((predicted - y_test) ** 2) / np.sum((y_test - y_test.mean()) ** 2))
            rows.append([column.name, f"numeric (mean {column_mean(encoding, column):.4g})", f"R² {r2:.3f}", "0"])
    section.intro = (
        "Every encoder and decoder reads these covariates, so the latent should hold what they do not explain. Below: how well "
        f"each is predicted from the test rows' embeddings (a classifier or ridge regression fitted on up to {COVARIATE_PROBE_ROWS} "
        "training rows' embeddings) against chance; near chance means the latent does not carry it."
    )
    section.html.append(table(rows, ["covariate", "encoded as", "predicted from the embedding", "chance"]))


def column_mean(encoding, column) -> float:
    return encoding.mean[encoding.names.index(column.name)]


def _curves(section: Section, run: Path, figures_dir: Path) -> None:
    path = run / "metrics.csv"
    if not path.is_file():
        section.html.append(note(f"{path} is missing: the run has no training curves."))
        return
    epochs, curves = read_curves(path)
    section.intro = (
        "Per-epoch means over the training rows (solid) and the validation rows (dashed). The ELBO is "
        "reconstruction minus KL, always with KL weight 1; the dotted grey line is the KL weight the optimiser used "
        "(the warm-up), so the training loss differs from the training ELBO while it is below 1."
    )
    section.figures.append(
        Figure(plots.curves_figure(epochs, curves, figures_dir / "curves.png"), "ELBO, reconstruction and KL per epoch")
    )
    errors = class_error_curves(curves)
    if errors:
        series = {name: (epochs, values) for name, values in errors.items()}
        section.figures.append(
            Figure(
                plots.class_error_figure(series, figures_dir / "class_errors.png"),
                "validation error of imputing each categorical modality from the others, per epoch",
            )
        )
    if "truncation" in curves:
        _truncation_history(section, epochs, curves, figures_dir)


def _truncation_history(section: Section, epochs: np.ndarray, curves: dict[str, np.ndarray], figures_dir: Path) -> None:
    """`--truncation auto`: how many dimensions each epoch trained with (train.callbacks.AdaptTruncation)."""
    sizes = curves["truncation"]
    changes = [
        f"epoch {int(e)}: {int(before)} -> {int(after)}"
        for e, before, after in zip(epochs[1:], sizes[:-1], sizes[1:])
        if np.isfinite(before) and np.isfinite(after) and before != after
    ]
    section.html.append(
        note(
            f"Truncation auto: the latent started with {int(sizes[0])} dimensions; at each epoch's start it grew when fewer than "
            f"{SPARE_DIMENSIONS} were unused after the last used one (mean KL above {USED_DIMENSION_KL} nats on validation rows) and, "
            "after the warm-up, trimmed unused trailing dimensions. "
            + ("Changes: " + "; ".join(changes) + "." if changes else "It never changed.")
        )
    )
    section.figures.append(
        Figure(
            plots.truncation_figure(epochs, curves, figures_dir / "truncation.png"),
            "dimensions per epoch (truncation auto)",
        )
    )


def _latent_maps(section: Section, ctx: _Run, joint: dict, single: list[dict]) -> None:
    stick = ctx.module.latent.has_sticks
    space = "decoder_space" if stick else "representation"
    space_name = ctx.module.latent.decoder_space_name  # the representation's own name where the two coincide
    labels = ctx.sample.labels
    candidates = [("joint posterior", joint[space], labels)]
    for name, part in zip(ctx.names, single):
        chosen = part["rows"]
        candidates.append((f"given {name} only", part[space][chosen], None if labels is None else labels[chosen]))
    panels = [c for c in candidates if len(c[1]) >= MIN_MAP_ROWS and c[1].shape[1] >= 2]
    for title, points, _ in candidates:
        if len(points) < MIN_MAP_ROWS or points.shape[1] < 2:
            section.html.append(
                note(
                    f"No map of the {title}: {len(points)} test rows of {points.shape[1]} latent values "
                    f"(a t-SNE map needs at least {MIN_MAP_ROWS} rows and 2 values)."
                )
            )
    maps = []
    for title, points, colours in tqdm(panels, desc="latent maps", disable=not ctx.progress, leave=False):
        maps.append((title, tsne_map(points, progress=ctx.progress, desc=f"t-SNE, {title}", seed=ctx.seed), colours))
    section.intro = (
        f"t-SNE maps (openTSNE) of the posterior mean in the space the decoder reads ({space_name}) for {len(ctx.sample)} test rows, "
        "from all observed modalities (joint) and from each modality alone. Colours are the data's labels; "
        "classes that form separate islands are separated by the latent code without supervision."
    )
    if labels is None:
        section.html.append(note("The data have no labels: the maps are not coloured."))
    if maps:
        section.figures.append(
            Figure(plots.map_figure(maps, ctx.figures / "maps.png"), f"t-SNE of {space_name}, joint and per modality")
        )
        variables = {
            name: values
            for name, values in explanation_variables(ctx.modalities, ctx.sample, ctx.vae.covariates).items()
            if name != "label"
        }
        if variables and maps[0][0] == "joint posterior":
            section.figures.append(
                Figure(
                    plots.coloured_maps_figure(maps[0][1], variables, ctx.figures / "maps_coloured.png"),
                    "the joint map coloured by each covariate and categorical column (light grey: unknown)",
                )
            )


def _stick_usage(section: Section, ctx: _Run, joint: dict, single: list[dict]) -> None:
    latent = ctx.module.latent
    stick, unit = latent.has_sticks, latent.unit_name
    mass = stick and latent.mass_counts_dimensions
    kl, weights, counts = latent_usage(joint, single, ctx.names, stick)
    if stick and not mass:
        parts = {
            part[len("kl_part_") :]: float(value.mean()) for part, value in joint.items() if part.startswith("kl_part_")
        }
        section.intro = (
            "Which dimensions the model uses. Left: the mean weight E[pi_k] of each stick over the test rows; right: the mean KL "
            "of each dimension's posterior to its prior, values and stick together (a dimension with KL near 0 carries no information "
            "about the row). Bars: the joint posterior; lines: each modality's own posterior. "
            f"Of the joint posterior's KL per test row, the values carry {parts.get('values', 0.0):.2f} nats and the sticks "
            f"{parts.get('sticks', 0.0):.2f}: sticks with KL near 0 stay at their prior, and then every row's gates shrink its "
            "dimensions alike. How many sticks hold 99 % of E[pi] is not shown: the prior gates always leave mass after the last dimension."
        )
    elif stick:
        section.intro = (
            "Which sticks the model uses. Left: the mean weight E[pi_k] of each stick over the test rows; right: the mean KL "
            "of each stick's posterior to its prior (a stick with KL near 0 carries no information about the row). "
            "Bars: the joint posterior; lines: each modality's own posterior. Below: how many sticks hold 99 % of E[pi], per test row."
        )
    else:
        section.intro = (
            "Which dimensions the model uses: the mean KL of each latent dimension's posterior to the N(0, 1) prior over the test rows "
            "(a dimension with KL near 0 is switched off). Bars: the joint posterior; lines: each modality's own posterior. "
            "Gaussian latents have no stick weights, so there is no sticks_99 distribution."
        )
    section.figures.append(
        Figure(
            plots.stick_usage_figure(kl, weights, ctx.figures / "stick_usage.png", KL_ACTIVE_THRESHOLD, unit),
            f"usage per {unit}",
        )
    )
    if mass:
        assert counts is not None  # mass: a stick family, whose counts `latent_usage` gives
        section.figures.append(
            Figure(
                plots.sticks_99_figure(counts, latent.truncation, ctx.figures / "sticks_99.png"),
                "sticks_99 over the test rows",
            )
        )
        usage = [
            [
                name,
                f"{np.mean(c):.2f}",
                str(int(np.median(c))),
                str(int(c.max())),
                str(int((kl[name] > KL_ACTIVE_THRESHOLD).sum())),
            ]
            for name, c in counts.items()
        ]
        section.html.append(
            table(usage, ["posterior", "mean sticks_99", "median", "max", f"sticks with KL > {KL_ACTIVE_THRESHOLD}"])
        )
    else:
        section.html.append(
            table(
                [[name, str(int((v > KL_ACTIVE_THRESHOLD).sum())), f"{v.sum():.2f}"] for name, v in kl.items()],
                ["posterior", f"dimensions with KL > {KL_ACTIVE_THRESHOLD}", "total KL (nats)"],
            )
        )


def _typical_covariates(ctx: _Run) -> torch.Tensor | None:
    """One row of covariates to decode prior draws at, for a conditional model: the test rows' typical values."""
    encoding = ctx.data.covariates
    if encoding is None:
        return None
    return torch.from_numpy(encoding.typical(ctx.data.test.arrays[COVARIATES]))[None, :]


def _per_dimension(section: Section, ctx: _Run, joint: dict, max_dims: int) -> None:
    latent = ctx.module.latent
    unit = latent.unit_name
    alone_dims, first_dims, why = used_dimensions(latent.has_sticks, joint, max_dims, latent.mass_counts_dimensions)
    alone, first = dimension_sweeps(latent, alone_dims, first_dims, n=ctx.examples, seed=ctx.seed)
    typical = _typical_covariates(ctx)
    alone_x, first_x = _decode(ctx.module, alone, typical), _decode(ctx.module, first, typical)
    section.intro = (
        f"Decodes driven by one {unit} at a time (left: {unit} k swept over its prior quantiles 5 %..95 %, every other {unit} at its prior median) "
        f"and by the first k {unit}s (right: the first k drawn from the prior, the same draws in every row, the rest at their medians). "
        f"Shown: {why}. Image modalities show E[x | z]; tabular ones show, per feature, how much E[x | z] varies across the row."
        + (
            " Decoded at typical covariates (the test rows' mean number, their most frequent class)."
            if typical is not None
            else ""
        )
    )
    for modality in ctx.modalities:
        path = plots.per_dimension_figure(
            modality,
            alone_x[modality.name],
            first_x[modality.name],
            alone_dims,
            first_dims,
            ctx.figures / f"per_dimension_{modality.name}.png",
            unit,
        )
        section.figures.append(Figure(path, f"modality {modality.name}: one {unit} alone and the first k {unit}s"))


def _generation(section: Section, ctx: _Run) -> None:
    module, modalities, names, test = ctx.module, ctx.modalities, ctx.names, ctx.data.test
    complete = np.flatnonzero(test.mask.all(axis=1))  # rows with every modality first: their data are all shown
    shown = np.concatenate([complete, np.flatnonzero(~test.mask.all(axis=1))])[: ctx.examples]
    truth = plots.observed_rows(test, shown, modalities)
    batch = test.batch(shown)
    section.intro = (
        f"{len(shown)} test rows: the data (grey: missing), then every modality decoded (E[x | z] at one posterior sample z) "
        "from all observed modalities (reconstruction)"
        + (" and from each modality alone (cross-modal generation)." if ctx.multimodal else ".")
        + TABULAR_UNITS
    )
    for subset in [None, *ctx.singles]:
        mask = (
            batch["mask"]
            if subset is None
            else batch["mask"] & torch.from_numpy(np.isin(np.arange(len(names)), subset))[None, :]
        )
        usable = mask.any(dim=1)
        if subset is not None and not bool(usable.any()):
            section.html.append(
                note(f"No test row shown has {names[subset[0]]} observed: nothing to generate from it here.")
            )
            continue
        z = torch.zeros(len(shown), module.latent.latent_size)
        if bool(usable.any()):
            index = usable.nonzero().squeeze(-1)
            q = module.posterior(
                {k: v.index_select(0, index) for k, v in batch["data"].items()}, mask.index_select(0, index)
            )
            z[index] = module.latent.rsample(q)
        generated = _decode(module, z, batch["data"].get(COVARIATES))
        label = (
            ("all observed modalities" if ctx.multimodal else "reconstruction")
            if subset is None
            else f"{names[subset[0]]} only"
        )
        columns = [(f"{name}\n(data)", m, truth[name]) for name, m in zip(names, modalities)]
        for name, m in zip(names, modalities):
            values = generated[name].astype(np.float64)
            values[~usable.numpy()] = np.nan  # rows where the given subset is not observed: nothing to condition on
            columns.append(
                (f"{name}\n(reconstructed)" if label == "reconstruction" else f"{name}\n| {label}", m, values)
            )
        stem = "reconstruction" if subset is None else f"given_{names[subset[0]]}"
        heading = "reconstruction" if label == "reconstruction" else f"generated from {label}"
        path = plots.columns_figure(columns, ctx.figures / f"{stem}.png", title=heading)
        section.figures.append(
            Figure(path, heading if label == "reconstruction" else f"every modality generated from {label}")
        )


#: Most classes of a categorical modality shown in the class-conditioned figures.
MAX_CLASSES_SHOWN = 10


def _class_generation(section: Section, ctx: _Run) -> None:
    """Per categorical modality: each other modality generated from q(z | that class alone), a row per class."""
    categorical = [m for m in ctx.modalities if m.categorical]
    if not categorical or not ctx.multimodal:
        section.html.append(
            note(
                "The model has no categorical modality beside another one (a label, --data NAME:labels=F): "
                "there is no class to generate from."
            )
        )
        return
    section.intro = (
        f"Generation from a class: for each class of a categorical modality (rows), {ctx.examples} draws z from the posterior given "
        "that class alone, each decoded into the other modalities (E[x | z]), as `infinimodal sample DIR --given NAME=CLASS` does. "
        "A model that learned what the class means shows it in every column of its row." + TABULAR_UNITS
    )
    for spec in categorical:
        classes = spec.class_values[:MAX_CLASSES_SHOWN]
        draws = [ctx.vae.sample_class(ctx.examples, spec.name, value) for value in classes]
        for other in ctx.modalities:
            if other.name == spec.name:
                continue
            stem = f"class_{spec.name}_{other.name}"
            values = np.concatenate([d[other.name] for d in draws])
            title = f"{other.name} generated from each class of {spec.name} ({', '.join(map(str, classes))}; " + (
                "one row each)" if plots.is_image(other) else "one panel each)"
            )
            if plots.is_image(other):
                path = plots.image_grid_figure(other, values, ctx.figures / f"{stem}.png", columns=ctx.examples)
            else:
                path = plots.columns_figure(
                    [
                        (f"{other.name}\n| {spec.name} = {value}", other, d[other.name])
                        for value, d in zip(classes, draws)
                    ],
                    ctx.figures / f"{stem}.png",
                    title=title,
                )
            section.figures.append(Figure(path, title))


def _imputation(section: Section, ctx: _Run) -> None:
    modalities, names, test = ctx.modalities, ctx.names, ctx.data.test
    partial = np.flatnonzero(~test.mask.all(axis=1))
    if not len(partial):
        section.html.append(
            note(
                "The test set has no missing modalities, so there is nothing to impute. "
                + ("Cross-modal generation above shows what the model would fill in." if ctx.multimodal else "")
            )
        )
        return
    chosen = partial[: ctx.examples]
    observed = plots.observed_rows(test, chosen, modalities)
    filled = ctx.vae.impute(test.take(chosen))
    columns = []
    for m, (name, modality) in enumerate(zip(names, modalities)):
        columns.append((f"{name}\n(observed)", modality, observed[name]))
        missing = ~test.mask[chosen, m]
        if missing.any():
            values = np.asarray(filled[name], dtype=np.float64).copy()
            values[~missing] = np.nan
            columns.append((f"{name}\n(imputed)", modality, values))
    counts = ", ".join(f"{name}: {int((~test.mask[:, m]).sum())}" for m, name in enumerate(names))
    section.intro = (
        f"Test rows with a modality missing ({len(partial)} of {len(test)}; missing per modality: {counts}). "
        f"For {len(chosen)} of them: what was observed (grey: missing) and what the model fills in for the missing rows "
        "(E[x | z] at the posterior mean of z given the observed modalities, as `infinimodal impute` does; a categorical "
        "modality is filled with its class probabilities)." + TABULAR_UNITS
    )
    label = ctx.data.label_modality
    if label is not None and test.labels is not None:
        values = modalities[names.index(label)].class_values
        predicted = [values[i] for i in filled[label].argmax(axis=1)]
        section.html.append(
            table(
                [[str(r), str(int(test.labels[r])), str(value)] for r, value in zip(chosen, predicted)],
                ["test row", "true class", f"predicted {label} (argmax of the imputed probabilities)"],
            )
        )
    section.figures.append(
        Figure(plots.columns_figure(columns, ctx.figures / "imputation.png"), "observed and imputed modalities")
    )


#: Validation rows the deviation section standardises against, and as many again shown as the reference population.
DEVIATION_REFERENCE_ROWS = 500
#: Test rows the deviation section scores at most.
DEVIATION_TEST_ROWS = 1000


def _deviation(section: Section, ctx: _Run) -> None:
    valid = ctx.data.valid
    if len(valid) < 20:
        section.html.append(note(f"The validation split has {len(valid)} rows: too few to be a reference population."))
        return
    half = min(DEVIATION_REFERENCE_ROWS, len(valid) // 2)
    fitting, shown = valid.take(slice(0, half)), valid.take(slice(half, 2 * half))
    test = ctx.sample.take(slice(0, DEVIATION_TEST_ROWS))
    reference = Reference.fit(ctx.module, fitting, samples=DEVIATION_SAMPLES)
    # a figure of distributions: each batch drawn at once (a subject's own reproducible score is `infinimodal score`'s)
    groups = {
        "reference (validation rows)": deviation_scores(ctx.module, shown, reference, DEVIATION_SAMPLES, by_row=False)[
            "score"
        ],
        "test rows": deviation_scores(ctx.module, test, reference, DEVIATION_SAMPLES, by_row=False)["score"],
    }
    section.intro = (
        f"Deviation scores (`infinimodal score`): how atypical each row is for the population the model was trained on. "
        f"Each observed modality's -log p(x_m | the other modalities), its -log p(x_m | the subject's own joint posterior) and the "
        f"posterior's Mahalanobis distance from the reference, standardised against {half} validation rows seen through the row's own "
        f"missing modalities; a row's score is the largest of the latent deviation, its largest modality deviation and its largest "
        f"reconstruction deviation (each on the reference's scale). Shown: {len(shown)} other validation "
        f"rows (the reference population) and {len(test)} test rows. A test set like the training data overlaps the reference; "
        "atypical subjects form a tail to the right."
    )
    section.figures.append(
        Figure(
            plots.score_figure(groups, ctx.figures / "deviation_scores.png"),
            "deviation scores, reference and test rows",
        )
    )
    quantile = float(np.quantile(groups["reference (validation rows)"], 0.95))
    section.html.append(
        table(
            [[name, f"{np.median(v):.2f}", f"{100 * np.mean(v > quantile):.1f} %"] for name, v in groups.items()],
            ["rows", "median score", "share above the reference's 95th percentile"],
        )
    )


def _prior(section: Section, ctx: _Run) -> None:
    modalities, names = ctx.modalities, ctx.names
    section.intro = "Random draws z from the prior, decoded (E[x | z]). " + (
        "Each row is one draw decoded into every modality: a coherent model gives the same content in every column."
        if ctx.multimodal
        else ""
    )
    if len(modalities) == 1 and plots.is_image(modalities[0]):
        samples = ctx.vae.sample(4 * ctx.examples)
        path = plots.image_grid_figure(
            modalities[0], samples[names[0]], ctx.figures / "prior_samples.png", columns=ctx.examples
        )
    else:
        typical = _typical_covariates(ctx)
        samples = ctx.vae.sample(ctx.examples, covariates=None if typical is None else typical.numpy())
        path = plots.columns_figure(
            [(name, m, samples[name]) for name, m in zip(names, modalities)], ctx.figures / "prior_samples.png"
        )
    section.figures.append(Figure(path, "samples from the prior"))


def latent_usage(
    joint: dict, single: Sequence[dict], names: Sequence[str], stick: bool
) -> tuple[dict, dict | None, dict | None]:
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
            assert weights is not None and counts is not None  # made above for stick families
            weights[name] = part["weights"][chosen].mean(0)
            counts[name] = sticks_to_cover(torch.from_numpy(part["weights"][chosen]), 0.99).numpy()
    return kl, weights, counts


def _summary(section: Section, record: dict, evaluation: dict | None, names: list[str], family) -> None:
    latent, stick, size = record.get("latent"), family.has_sticks, family.describe()
    rows = [
        ["data", f"{record.get('data')} ({record.get('data_source', '')})"],
        ["modalities", ", ".join(names)],
        ["model", f"{latent} latent, {size}, {record.get('aggregator')} fusion"],
        [
            "training",
            f"{record.get('epochs')} epochs on {record.get('n_train')} rows, {format_value(record.get('train_seconds'))} s; best validation ELBO {format_value(record.get('best_val_elbo'))}",
        ],
    ]
    if evaluation is not None:
        if evaluation.get("posterior_family") and evaluation["posterior_family"] != latent:
            rows.append(["posterior family", evaluation["posterior_family"]])
        rows.append([f"test ELBO (the {record.get('aggregator')} bound)", format_value(evaluation.get("elbo"))])
        rows.append(
            [f"test log p(x) ({evaluation.get('iw_samples')} samples)", format_value(evaluation.get("log_likelihood"))]
        )
        if stick and "sticks_99" in evaluation:
            rows.append(["sticks holding 99 % of E[pi]", f"{evaluation['sticks_99']:.2f} of {family.truncation}"])
        if evaluation.get("kl_parts"):
            rows.append(
                [
                    "KL per test row (nats)",
                    ", ".join(f"{part} {value:.2f}" for part, value in evaluation["kl_parts"].items()),
                ]
            )
        rows.append(["dimensions with KL > 0.05", str(evaluation.get("kl_active"))])
        for name, errors in evaluation.get("prediction_error", {}).items():
            alone = ", ".join(f"from {other} alone {100 * e:.2f} %" for other, e in errors.items() if other != "all")
            rows.append(
                [
                    f"error predicting {name}",
                    f"{100 * errors['all']:.2f} % from all other modalities" + (f" ({alone})" if alone else "")
                    if "all" in errors
                    else alone or "-",
                ]
            )
        for name, entries in evaluation.get("prediction_baselines", {}).items():
            fitted = [
                (entry[entry["best_baseline"]], key, entry["best_baseline"], entry["train_rows"])
                for key, entry in entries.items()
                if "best_baseline" in entry
            ]
            if fitted:
                error, key, classifier, labelled = min(fitted)
                given = "all other modalities" if key == "all" else f"{key} alone"
                rows.append(
                    [
                        f"best classifier of {name} fitted on its labelled rows alone",
                        f"{100 * error:.2f} % ({classifier} from {given}, {labelled} labelled training rows, tuned on the labelled validation rows)",
                    ]
                )
        if "kl_span_99" in evaluation:
            rows.append(
                ["leading dimensions holding 99 % of the KL", f"{evaluation['kl_span_99']} of {family.n_dimensions}"]
            )
            rows.append(
                [
                    "Spearman correlation of dimension index and KL (-1: ordered)",
                    format_value(evaluation.get("kl_order_spearman")),
                ]
            )
    section.html.append(table(rows))


def _config(section: Section, record: dict, test, modalities) -> None:
    section.intro = "The run's config.json: every setting it was trained with, and its modalities."
    settings = [
        [key, format_value(value) if not isinstance(value, dict) else json.dumps(value)]
        for key, value in record.items()
        if key != "modalities"
    ]
    section.html.append(tables_side_by_side(settings, ["setting", "value"], 3))
    observed = test.mask.mean(axis=0)
    section.html.append(
        table(
            [
                [m.name, " x ".join(map(str, m.shape)), m.likelihood, f"{100 * observed[i]:.1f} %"]
                for i, m in enumerate(modalities)
            ],
            ["modality", "shape", "likelihood", "observed in test rows"],
        )
    )


def _metrics(section: Section, evaluation: dict | None, run: Path) -> None:
    if evaluation is None:
        section.html.append(
            note(f"No eval.json: run `infinimodal evaluate {run}` for the test metrics, then this report again.")
        )
        return
    section.intro = (
        "The run's eval.json (see `infinimodal.evaluation.metrics` for each definition); per-dimension lists are drawn below. "
        "First the declared metrics (`infinimodal.evaluation.catalogue`) with what each means and which way is better, then "
        "every other entry."
    )
    flat = flatten({k: v for k, v in evaluation.items() if k not in LONG_METRICS})
    declared = {
        k: (v, metric)
        for k, v in flat.items()
        if (metric := metric_of(k)) is not None and metric.key != "imputation_mse"
    }
    better = {1: "larger", -1: "smaller", 0: "-"}
    section.html.append(
        table(
            [[k, format_value(v), better[metric.direction], metric.meaning] for k, (v, metric) in declared.items()],
            ["metric", "value", "better", "meaning"],
        )
    )
    rest = [[k, format_value(v)] for k, v in flat.items() if k not in declared]
    if rest:
        section.html.append(tables_side_by_side(rest, ["entry", "value"], 3))
    for line in evaluation.get("notes", []):
        section.html.append(note(line))
