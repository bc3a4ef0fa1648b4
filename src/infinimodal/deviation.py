"""How atypical is a subject for the population a model was trained on: per-subject deviation scores.

Normative modelling (Marquand et al. 2016; for multimodal VAEs, Lawry Aguila et al. 2023) trains on a healthy
reference population and asks how far each new subject lies from it. `deviation_scores` gives, for every row:

- `deviation_<m>` for each observed modality m: how unlikely x_m is given the subject's other observed modalities,
  -log p(x_m | x_others) estimated as -log mean_s p(x_m | z_s) with z_s ~ q(z | x_others) (or, when m is the only
  modality observed, -log p(x_m) by importance sampling with q(z | x_m)), standardised against the reference rows
  (the same quantity computed on them: z-scores; every deviation is standardised against the reference rows seen
  through the row's own missingness pattern, `Reference`, empty cells of tables included). A subject whose measurements disagree with each other, off the map
  from latent factors to measurements, has a high value;
- `latent_deviation`: how far the subject's posterior mean (the family's representation, given every observed
  modality) lies from the reference rows' posterior means, as a Mahalanobis distance (centre and Ledoit-Wolf shrunk
  covariance from half of the reference rows, `shrunk_centre`), standardised against the distances of the other half. A subject coherent in every measure but far out in the population has a high value;
- `reconstruction_<m>`: -log p(x_m | z from the row's own joint posterior), m included, standardised the same way:
  a shift in a modality's private variance, which the other modalities cannot predict, still shows here;
- `latent_distance_robust`, `latent_p`: the squared robust (minimum covariance determinant) Mahalanobis distance of
  the posterior mean and its p-value under a scaled chi^2 fitted to held-out reference rows (`RobustCentre`);
- `extreme_features`: the number of the row's features whose deviation z-score (`infinimodal.feature_deviation`:
  observed minus the prediction from the row's other modalities, in reference SDs) exceeds 2.6 in size;
- `score`: the largest of the latent deviation, the row's largest modality deviation and its largest reconstruction
  deviation, the last two standardised against the reference rows' largest (a typical row's largest of several
  z-scores is above zero; `COMBINATION`, chosen by measurement on cohorts with six kinds of deviation nobody tuned to,
  docs/results.md section 15: mean AUC 0.951 against 0.909 for section 10's "either", which lacked the
  reconstruction and ranked subjects with 12 of 90 regions lowered by 1.5 SD at 0.81 where this gets 0.999; it
  gives up 0.02 on subjects at 3 SD of one factor); `COMBINATIONS` holds the others;
- `observed_<m>`: whether modality m was observed (a missing modality is not scored and has deviation NaN).

Everything is computed in the model's units (standardised modalities stay standardised).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from .data import Split
from .errors import InfinimodalError
from .feature_deviation import FeatureReference, extreme_counts
from .model import MultimodalModule

#: How a row's parts are combined into `score` (docs/results.md sections 10 and 15 measure the alternatives).
COMBINATION = "either_reconstruction"


@torch.no_grad()
def conditional_log_likelihoods(
    module: MultimodalModule, split: Split, samples: int = 50, batch_size: int = 200, by_row: bool = True
) -> np.ndarray:
    """[rows, M]: log p(x_m | the row's other observed modalities) for every observed m (NaN where m is missing); for a
    row with m alone, log p(x_m) (importance-sampled with q(z | x_m)). With `by_row` each row's draws are its own
    (`MultimodalModule.conditional_draws`): a subject's figures do not depend on the other rows of the call (six times
    the time; the reference population, the same rows at every call, is drawn as one batch)."""
    module.eval()
    out = np.full((len(split), module.n_modalities), np.nan)
    for rows, batch in split.batches(batch_size):
        data, mask = batch["data"], batch["mask"]
        for m in range(module.n_modalities):
            observed = mask[:, m]
            if not bool(observed.any()):
                continue
            given = mask.clone()
            given[:, m] = False
            alone = observed & ~given.any(dim=1)
            conditional = observed & given.any(dim=1)
            if bool(conditional.any()):
                index = conditional.nonzero().squeeze(-1)
                part = {k: v.index_select(0, index) for k, v in data.items()}
                z = module.conditional_draws(part, given.index_select(0, index), samples, seed=m, by_row=by_row)
                out[rows[index.numpy()], m] = _log_mean_exp(_log_lik(module, z, part, m)).numpy()
            if bool(alone.any()):
                index = alone.nonzero().squeeze(-1)
                part = {k: v.index_select(0, index) for k, v in data.items()}
                only = torch.zeros(len(index), module.n_modalities, dtype=torch.bool)
                only[:, m] = True
                q = module.conditional_posterior(part, only)
                z = module.conditional_draws(part, only, samples, seed=m, by_row=by_row)
                log_w = _log_lik(module, z, part, m) + module.latent.log_prior(z) - q.log_prob(z)
                out[rows[index.numpy()], m] = _log_mean_exp(log_w).numpy()
    return out


@torch.no_grad()
def reconstruction_log_likelihoods(
    module: MultimodalModule, split: Split, samples: int = 50, batch_size: int = 200, by_row: bool = True
) -> np.ndarray:
    """[rows, M]: log p(x_m | z) averaged over z ~ q(z | every observed modality of the row, m included) (log mean exp
    over the draws; NaN where m is missing): how well the subject's own joint posterior reconstructs each modality,
    the score of normative VAEs. A shift the other modalities cannot predict (a modality's private variance) still
    shows here, as the reconstruction of a point off the map from latent factors to measurements."""
    module.eval()
    out = np.full((len(split), module.n_modalities), np.nan)
    for rows, batch in split.batches(batch_size):
        data, mask = batch["data"], batch["mask"]
        z = module.conditional_draws(data, mask, samples, seed=module.n_modalities + 1, by_row=by_row)
        for m in range(module.n_modalities):
            observed = mask[:, m]
            if bool(observed.any()):
                index = observed.nonzero().squeeze(-1)
                part = {k: v.index_select(0, index) for k, v in data.items()}
                out[rows[index.numpy()], m] = _log_mean_exp(_log_lik(module, z.index_select(1, index), part, m)).numpy()
    return out


def _log_lik(module, z, data, m):
    """[samples, rows]: log p(x_m | z_s) at the draws z [samples, rows, latent]."""
    samples, n = z.shape[:2]
    select = torch.zeros(samples * n, module.n_modalities, dtype=torch.bool)
    select[:, m] = True
    rows = torch.arange(n).repeat(samples)
    return module.log_likelihoods(z.reshape(samples * n, -1), data, select, rows)[:, m].view(samples, n)


def _log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(values.double(), dim=0) - math.log(values.shape[0])


@torch.no_grad()
def representations(module: MultimodalModule, split: Split, batch_size: int = 500) -> np.ndarray:
    """The family's representation of q(z | every observed modality), per row."""
    module.eval()
    return np.concatenate(
        [
            module.latent.representation(module.conditional_posterior(batch["data"], batch["mask"])).numpy()
            for _, batch in split.batches(batch_size)
        ]
    )


#: Fewer reference rows than this are refused (`Reference.fit`): the latent centre is fitted on one half and its
#: distances scaled on the other. On a cohort model, 1 to 3 rows gave scores that were NaN or in the millions, and 200
#: test subjects scored against 4, 6, 8 and 10 rows ranked as against 500 at Spearman 0.59, 0.61, 0.73 and 0.81 (the
#: latent deviation alone 0.15, 0.50, 0.61, 0.57; `python benchmarks/reference_size.py RUN`). Eight rows (four a
#: half) keeps a study of about 80 subjects, whose validation split has 8, able to score.
MIN_REFERENCE_ROWS = 8

#: A missingness pattern needs at least this many reference rows observing all of its modalities to get its own
#: standardisation; rarer patterns are standardised against the reference rows as they are.
MIN_PATTERN_ROWS = 30


@dataclass
class Standardisation:
    """What one missingness pattern's deviations are standardised against, from reference rows seen the same way."""

    modality_mean: np.ndarray  # [M]: mean -log p(x_m | the pattern's other modalities) on the reference rows
    modality_std: np.ndarray
    latent_mean: np.ndarray  # [d]
    latent_precision: np.ndarray  # [d, d]
    distance_mean: float
    distance_std: float
    worst_mean: float  # the reference rows' largest standardised modality deviation: its mean and spread
    worst_std: float
    reconstruction_mean: np.ndarray  # [M]: mean -log p(x_m | z from the joint posterior) on the reference rows
    reconstruction_std: np.ndarray
    reconstruction_worst_mean: float
    reconstruction_worst_std: float
    robust: "RobustCentre"

    @classmethod
    def fit(cls, module: MultimodalModule, rows: Split, samples: int) -> "Standardisation":
        nll = -conditional_log_likelihoods(module, rows, samples, by_row=False)
        reconstruction = -reconstruction_log_likelihoods(module, rows, samples, by_row=False)
        codes = representations(module, rows)
        # the centre and covariance from one half of the rows, the distances' scale from the other: distances of the
        # rows a covariance was fitted on are smaller than those of new rows (by a lot with many dimensions)
        fitting, scaling = codes[::2], codes[1::2]
        mean, precision = shrunk_centre(fitting)
        distances = _mahalanobis(scaling, mean, precision)
        modality_mean, modality_std = _column_moments(nll, rows.mask)
        worst = _largest((nll - modality_mean) / modality_std)  # NaN where a row misses a modality
        recon_mean, recon_std = _column_moments(reconstruction, rows.mask)
        recon_worst = _largest((reconstruction - recon_mean) / recon_std)
        return cls(
            modality_mean,
            modality_std,
            mean,
            precision,
            float(distances.mean()),
            float(distances.std() + 1e-8),
            float(worst.mean()),
            float(worst.std() + 1e-8),
            recon_mean,
            recon_std,
            float(recon_worst.mean()),
            float(recon_worst.std() + 1e-8),
            RobustCentre.fit(fitting, scaling),
        )


def shrunk_centre(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference codes' mean and the precision of their Ledoit-Wolf covariance: the sample covariance shrunk
    towards a multiple of the identity by the amount that minimises its expected error (Ledoit and Wolf 2004).

    A few hundred reference rows estimate the directions in which the codes barely vary poorly, and an unshrunk inverse
    weights noise there most: on 6,000 new cohort subjects (docs/results.md section 10) the self-sizing default's 10
    dimensions ranked those at 4 SD of one factor at AUC 0.80-0.83 with the sample covariance, below 50-dimensional
    models, although its codes held the true factors as well as theirs; with this one, 0.88, level with them
    (0.87-0.90). That is the cohort the estimator was chosen on; section 15's three cohorts, which it did not see, are
    consistent with it. Codes that never vary get a zero precision: every distance is 0, the latent says nothing."""
    shrunk = LedoitWolf().fit(np.asarray(codes, dtype=np.float64))
    return shrunk.location_, shrunk.precision_


def _column_moments(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each modality's mean and SD over the rows that observe it (NaN for a modality no row observes: it has no values
    and is never used)."""
    mean, std = np.full(mask.shape[1], np.nan), np.full(mask.shape[1], np.nan)
    for m in np.flatnonzero(mask.any(axis=0)):
        column = values[mask[:, m], m]
        mean[m], std[m] = column.mean(), column.std() + 1e-8
    return mean, std


#: The robust distance is taken in the principal directions of the reference representations whose variance is at
#: least this share of the largest (posterior means of unused dimensions are nearly constant, and a covariance over
#: them singular), and in at most a third as many directions as fitting rows.
VARYING_SHARE = 1e-3


#: Below this many fitting rows the centre and covariance are the classical ones: the minimum covariance determinant
#: keeps about half the rows and reweights by a chi^2 cut, which on 4 rows of one direction kept none and failed.
MIN_ROBUST_ROWS = 20


@dataclass
class RobustCentre:
    """The reference rows' representations summarised by the minimum covariance determinant (Rousseeuw 1984,
    scikit-learn's `MinCovDet`): a centre and covariance that a few atypical reference subjects do not drag, fitted on
    one half of the reference rows, in their principal directions that vary (`VARYING_SHARE`). A squared robust
    Mahalanobis distance d^2 is compared with a scaled chi^2, d^2 / scale ~ chi^2(df), whose scale and degrees of
    freedom make its median and 90th percentile those of the other half's distances (rows a covariance was not fitted
    on, whose distances are larger and heavier-tailed than chi^2 on as many degrees of freedom as directions: measured
    on a cohort model, 55 % of held-out reference rows had p < 0.05 under that plain chi^2, 25 % after matching the
    median alone)."""

    centre: np.ndarray  # the fitting rows' mean
    basis: np.ndarray  # [representation, directions]: the principal directions kept
    location: np.ndarray
    precision: np.ndarray
    scale: float
    df: float

    @classmethod
    def fit(cls, fitting: np.ndarray, scaling: np.ndarray, seed: int = 0) -> "RobustCentre":
        from sklearn.covariance import MinCovDet

        fitting = fitting.astype(np.float64)
        centre = fitting.mean(0)
        _, singular, directions = np.linalg.svd(fitting - centre, full_matrices=False)
        variance = singular**2
        kept = np.flatnonzero(variance >= VARYING_SHARE * max(float(variance.max(initial=0.0)), 1e-300))[
            : max(1, len(fitting) // 3)
        ]
        basis = directions[kept].T
        projected = (fitting - centre) @ basis
        if len(fitting) >= MIN_ROBUST_ROWS:
            fitted = MinCovDet(random_state=seed).fit(projected)
            location, covariance = fitted.location_, fitted.covariance_
        else:  # too few rows to leave any out: the classical mean and covariance
            location, covariance = projected.mean(0), np.atleast_2d(np.cov(projected, rowvar=False))
        robust = cls(centre, basis, location, np.linalg.pinv(covariance), 1.0, float(len(kept)))
        robust.df, robust.scale = scaled_chi2(robust.squared_distances(scaling), len(kept))
        return robust

    def squared_distances(self, codes: np.ndarray) -> np.ndarray:
        """Squared robust Mahalanobis distances, unscaled."""
        centred = (codes.astype(np.float64) - self.centre) @ self.basis - self.location
        return np.maximum(np.einsum("nd,de,ne->n", centred, self.precision, centred), 0.0)

    def p_values(self, codes: np.ndarray) -> np.ndarray:
        from scipy.stats import chi2

        return chi2.sf(self.squared_distances(codes) / self.scale, df=self.df)


#: The degrees of freedom a scaled chi^2 may take.
DF_RANGE = (0.2, 1000.0)


def scaled_chi2(distances: np.ndarray, df: int) -> tuple[float, float]:
    """(df, scale) of the scaled chi^2 whose median and 90th percentile are those of `distances` (df from the ratio of
    the two, which falls as df grows; clipped to DF_RANGE), or (df, median ratio) for fewer than 20 distances."""
    from scipy.optimize import brentq
    from scipy.stats import chi2

    median = float(np.median(distances))
    if len(distances) < 20 or median <= 0:
        return float(df), max(median / chi2.median(df), 1e-12) if median > 0 else 1.0
    ratio = float(np.percentile(distances, 90)) / median
    gap = lambda k: chi2.ppf(0.9, k) / chi2.median(k) - ratio  # noqa: E731
    low, high = DF_RANGE
    k = low if gap(low) <= 0 else high if gap(high) >= 0 else brentq(gap, low, high)
    return float(k), median / chi2.median(k)


@dataclass
class Reference:
    """The reference population (rows of the data the model was trained on) that new rows are scored against.

    A subject is compared with the reference rows seen through its own missingness pattern: the reference rows that
    observe every modality the subject has, with the others hidden (a posterior from fewer modalities is broader and
    its mean closer to the centre, and a modality predicted from fewer others is predicted worse, so pooling patterns
    would score every subject with a missing modality as more typical than it is). Each pattern's standardisation is
    computed once, when first needed."""

    module: MultimodalModule
    rows: Split
    samples: int
    patterns: dict
    feature_reference: FeatureReference | None = None

    @classmethod
    def fit(cls, module: MultimodalModule, reference: Split, samples: int = 50) -> "Reference":
        """The reference population of these rows; refused (InfinimodalError) below MIN_REFERENCE_ROWS rows."""
        if len(reference) < MIN_REFERENCE_ROWS:
            raise InfinimodalError(
                f"deviation scores need at least {MIN_REFERENCE_ROWS} reference rows to standardise against (half fit "
                f"the latent centre, half scale its distances); the reference has {len(reference)}: pass more reference "
                "rows (with `infinimodal score` they are the run's validation rows: train on more subjects)"
            )
        return cls(module, reference, samples, {})

    def features(self) -> FeatureReference:
        """The reference's per-feature residual spreads (`infinimodal.feature_deviation`), computed once."""
        if self.feature_reference is None:
            self.feature_reference = FeatureReference.fit(self.module, self.rows)
        return self.feature_reference

    def standardisation(self, pattern: tuple[bool, ...], empty: tuple = ()) -> Standardisation:
        """The standardisation of rows with modalities `pattern` and, in table modalities, the empty cells `empty`
        (a row of `empty_cells`): the reference rows' same cells are emptied too, since a row's likelihood sums its filled
        cells only, and fewer terms would make a subject with empty cells look more typical than it is."""
        key = (pattern, empty)
        if key not in self.patterns:
            wanted = np.array(pattern)
            having = np.flatnonzero((self.rows.mask | ~wanted).all(axis=1))
            if len(having) >= MIN_PATTERN_ROWS:
                mask = np.broadcast_to(wanted, (len(having), len(wanted))).copy()
                rows = Split({k: v[having] for k, v in self.rows.arrays.items()}, mask, None)
            else:
                rows = self.rows  # too few reference rows see this pattern: the reference as it is
            self.patterns[key] = Standardisation.fit(
                self.module, with_empty_cells(self.module, rows, empty), self.samples
            )
        return self.patterns[key]


def table_names(module: MultimodalModule) -> list[str]:
    return [modality.name for modality in module.modalities if modality.is_table]


def empty_cells(module: MultimodalModule, split: Split) -> np.ndarray:
    """[rows, table positions] bool: the empty cells of each row's observed table modalities, side by side in
    `table_names` order (no column for a model without tables)."""
    flags = [
        np.isnan(split.arrays[name]) & split.mask[:, module.names.index(name), None] for name in table_names(module)
    ]
    return np.concatenate(flags, axis=1) if flags else np.zeros((len(split), 0), dtype=bool)


def with_empty_cells(module: MultimodalModule, rows: Split, empty: tuple[bool, ...]) -> Split:
    """The rows with the cells `empty` (one row of `empty_cells`) emptied."""
    if not any(empty):
        return rows
    arrays, start = dict(rows.arrays), 0
    for name in table_names(module):
        width = arrays[name].shape[1]
        chosen = np.array(empty[start : start + width], dtype=bool)
        if chosen.any():
            values = np.array(arrays[name], dtype=np.float32, copy=True)
            values[:, chosen] = np.nan
            arrays[name] = values
        start += width
    return Split(arrays, rows.mask, rows.labels, rows.ids)


def _largest(deviations: np.ndarray) -> np.ndarray:
    """Each row's largest deviation over its observed modalities (NaN elsewhere; every row observes one)."""
    return np.max(np.where(np.isnan(deviations), -np.inf, deviations), axis=1)


def _mahalanobis(codes: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = codes - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision, centred), 0.0))


def deviation_parts(
    module: MultimodalModule, split: Split, reference: Reference, samples: int = 50, by_row: bool = True
) -> "Parts":
    """Every row's standardised deviations, each against the reference rows seen through the row's own pattern (`by_row`:
    each row's posterior draws its own, so that a subject's scores do not depend on the other rows of the call)."""
    nll = -conditional_log_likelihoods(module, split, samples, by_row=by_row)
    reconstruction = -reconstruction_log_likelihoods(module, split, samples, by_row=by_row)
    codes = representations(module, split)
    deviations = np.full((len(split), module.n_modalities), np.nan)
    recon = np.full((len(split), module.n_modalities), np.nan)
    latent, worst, recon_worst = np.full(len(split), np.nan), np.full(len(split), np.nan), np.full(len(split), np.nan)
    robust_d2, robust_p = np.full(len(split), np.nan), np.full(len(split), np.nan)
    # a row's pattern: the modalities it has, and its empty table cells
    patterns, which = np.unique(
        np.concatenate([split.mask, empty_cells(module, split)], axis=1), axis=0, return_inverse=True
    )
    for p, flags in enumerate(patterns):
        rows = which.reshape(-1) == p
        observed, empty = flags[: module.n_modalities], flags[module.n_modalities :]
        fitted = reference.standardisation(tuple(bool(b) for b in observed), tuple(bool(b) for b in empty))
        deviations[np.ix_(rows, observed)] = (
            nll[np.ix_(rows, observed)] - fitted.modality_mean[observed]
        ) / fitted.modality_std[observed]
        latent[rows] = (
            _mahalanobis(codes[rows], fitted.latent_mean, fitted.latent_precision) - fitted.distance_mean
        ) / fitted.distance_std
        worst[rows] = (_largest(deviations[rows]) - fitted.worst_mean) / fitted.worst_std
        recon[np.ix_(rows, observed)] = (
            reconstruction[np.ix_(rows, observed)] - fitted.reconstruction_mean[observed]
        ) / fitted.reconstruction_std[observed]
        recon_worst[rows] = (_largest(recon[rows]) - fitted.reconstruction_worst_mean) / fitted.reconstruction_worst_std
        robust_d2[rows] = fitted.robust.squared_distances(codes[rows])
        robust_p[rows] = fitted.robust.p_values(codes[rows])
    return Parts(deviations, worst, latent, recon, recon_worst, robust_d2, robust_p)


def deviation_scores(
    module: MultimodalModule,
    split: Split,
    reference: Reference,
    samples: int = 50,
    z_maps: dict[str, np.ndarray] | None = None,
    by_row: bool = True,
) -> dict[str, np.ndarray]:
    """How atypical each row of `split` is for the reference population (the module docstring defines each column).

    Args:
        module: the trained model.
        split: the rows to score, with their missing modalities and empty cells.
        reference: the reference population's statistics (`Reference`, built from held-out reference rows).
        samples: posterior draws per row for the conditional and reconstruction likelihoods.
        z_maps: the rows' feature z-maps (`Reference.features().z_maps`) when the caller has them already.
        by_row: True draws each row with its own seed, so that a row's value does not depend on the rows scored with
            it; False draws each batch at once (faster, for figures of many rows).

    Returns:
        {column: [rows]} in the rows' order: `score`, `latent_deviation`, `deviation_<m>`, `reconstruction_<m>`,
        `latent_distance_robust`, `latent_p`, `extreme_features` and `observed_<m>`; NaN where a modality is missing.
    """
    parts = deviation_parts(module, split, reference, samples, by_row)
    if z_maps is None:
        z_maps = reference.features().z_maps(module, split, by_row=by_row)
    columns = {"score": combine(parts)}
    columns |= {f"deviation_{name}": parts.modalities[:, m] for m, name in enumerate(module.names)}
    columns["latent_deviation"] = parts.latent
    columns |= {f"reconstruction_{name}": parts.reconstruction[:, m] for m, name in enumerate(module.names)}
    columns["latent_distance_robust"] = parts.robust_distance
    columns["latent_p"] = parts.robust_p
    columns["extreme_features"] = extreme_counts(z_maps)
    columns |= {f"observed_{name}": split.mask[:, m].copy() for m, name in enumerate(module.names)}
    return columns


@dataclass
class Parts:
    """A row's standardised deviations: per modality ([rows, M], NaN where missing), the largest of them standardised
    against the reference rows' largest (`worst`), and the latent one."""

    modalities: np.ndarray
    worst: np.ndarray
    latent: np.ndarray
    #: [rows, M]: -log p(x_m | z from the row's own joint posterior), standardised (NaN where missing)
    reconstruction: np.ndarray
    #: the largest of them, standardised against the reference rows' largest
    reconstruction_worst: np.ndarray
    #: squared robust Mahalanobis distance of the representation (`RobustCentre`) and its chi^2 p-value
    robust_distance: np.ndarray
    robust_p: np.ndarray


#: Ways to combine a row's deviations into one score. `COMBINATION` is the one `deviation_scores` uses.
COMBINATIONS = {
    "either": lambda parts: np.maximum(parts.latent, parts.worst),
    "max": lambda parts: np.nanmax(np.column_stack([parts.modalities, parts.latent]), axis=1),
    "mean": lambda parts: np.nanmean(np.column_stack([parts.modalities, parts.latent]), axis=1),
    "latent": lambda parts: parts.latent,
    "modalities": lambda parts: _largest(parts.modalities),
    "reconstruction": lambda parts: parts.reconstruction_worst,
    "robust_latent": lambda parts: _p_as_z(parts.robust_p),
    "either_reconstruction": lambda parts: np.maximum(
        np.maximum(parts.latent, parts.worst), parts.reconstruction_worst
    ),
    "robust_either_reconstruction": lambda parts: np.maximum(
        np.maximum(_p_as_z(parts.robust_p), parts.worst), parts.reconstruction_worst
    ),
}


def _p_as_z(p: np.ndarray) -> np.ndarray:
    """A one-sided p-value as the standard normal quantile it stands for (p = 0.5: 0; tiny p: large)."""
    from scipy.stats import norm

    return norm.isf(np.clip(p, 1e-300, 1.0))


def combine(parts: Parts, how: str = COMBINATION) -> np.ndarray:
    return COMBINATIONS[how](parts)
