"""Evaluation of a trained model on held-out data.

Single- and multimodal (the SB-VAE paper's protocol, then the MoPoE paper's):

- `elbo`: mean ELBO on the test set (the aggregator's own bound on log p(X_observed), nats);
- `log_likelihood`: mean importance-sampled log p(X_observed) with S samples (Burda et al. 2016), the
  proposal being the model's joint posterior;
- `knn_error`: k-nearest-neighbour classification error (fraction) on the joint representation, fitted
  on training representations, k = 3, 5, 10 (posterior mean of pi for stick families, of z for Gaussians);
- `active_dims`: active units, Cov_x(E_q[z_d]) > 0.01 (Burda et al. 2016), on the latent variable the
  prior is placed on (z, or the sticks v);
- `kl_active`: dimensions or sticks whose mean KL to the prior exceeds 0.05 nats (for mixtures, the
  components' weighted KL, which bounds the mixture's from above);
- `kl_span_99`: how many leading dimensions (in index order) hold 99 % of the total mean KL: equal to
  `kl_active` for a perfectly ordered latent, up to the latent size for an unordered one;
- `truncation_elbo_change`: how much the dimensions after the first `kl_span_99` matter: the ELBO
  E_q[log p(X, z) - log q(z)] of the joint posterior q against the same bound with every later dimension
  of q set to its prior (`keep` dimensions kept; same samples count, `samples` per row). A latent whose
  trailing dimensions carry nothing loses (almost) nothing;
- `kl_order_spearman`: Spearman correlation of dimension index and mean KL (-1: information decreases
  strictly with the index; None when every dimension has the same KL);
- `kl_parts`: the mean KL per test row by the part of the latent that carries it, `values` (Gaussian values) and/or
  `sticks` (stick fractions; the gated family has both: stick KL near 0 means its sticks stay at their prior);
- `sticks_99` (stick families, not the gated one, whose prior gates always leave mass after the last dimension):
  mean number of sticks that cover 99% of the posterior mean of pi;
  `per_modality_sticks_99`: the same for each modality's own posterior (`per_modality_kl_active` and
  `per_modality_kl_span_99`: each modality's own KL-active dimensions and leading dimensions holding 99 % of
  its KL, for every family);
- `knn_error_decoder_input` (stick families): kNN error on the posterior mean mapped to what the decoder
  reads (logit v or log pi). E[pi] squashes every small stick towards zero, which hides what a decoder
  reading logit v or log pi separates, so both are reported;
- `linear_probe_accuracy` (multimodal): keyed by the number k of given modalities, the mean over subsets
  of size k of a logistic-regression probe's test accuracy on the posterior mean given that subset
  (fitted on `probe_train_rows` training rows; stick families also `..._decoder_input`, as for kNN);
- `coherence` (multimodal, labelled): `conditional[k]` is the mean over subsets S of size k and target
  modalities m not in S of the accuracy of m's classifier on x_m generated from z ~ q(z | X_S);
  `joint` is the fraction of samples from the prior whose generated modalities all get the same label;
  `coherence_classifier_accuracy` gives each classifier's own test accuracy;
- `shared_factor_r2` (synthetic data): linear R^2 of the true shared factors from the representation;
- `imputation_mse` (several modalities): per modality, the mean squared error (Brier score for binary and
  categorical values) of imputing it on test rows with every modality observed and it hidden on purpose, for the
  model (`impute`'s conditional mean) and for baselines from the other modalities tuned on validation rows (ridge,
  MLP, logistic regression, the training mean), with `best_baseline` (`imputation_errors`);
- `prediction_error` (categorical modalities): keyed by modality, the test error of its imputation (argmax of
  E[x_c | the given modalities], what `impute` fills in) from all the other modalities ("all") and from each alone. A data set's
  label modality (`--data NAME:labels=F`) is scored against the test labels, and no representation metric
  reads it: kNN, probes and coherence predict it.
- `prediction_baselines` (a data set's label modality): for the same keys and test rows, the error of a logistic
  regression and an MLP classifier fitted on the labelled training rows and tuned on the labelled validation rows,
  with `best_baseline`: what the few labels give without the model (`prediction_baselines`).

Subsets are enumerated up to 5 modalities; beyond, `max_subsets` per size are drawn at random.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
import torch
from torch.distributions import Distribution
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from tqdm.auto import tqdm

from ..columns import COVARIATES
from ..data import MultimodalData, Split
from ..model import IMPUTATION_SAMPLES, MultimodalModule, imputation_draws
from ..stick_breaking import sticks_to_cover

ACTIVE_UNIT_THRESHOLD = 0.01
#: Posterior draws whose decoded class probabilities `prediction_errors` averages (`class_probabilities`, unweighted:
#: the same number validation's `val_<modality>_error` uses); imputation weighs its own draws (`imputation_draws`).
DEFAULT_IMPUTATION_SAMPLES = IMPUTATION_SAMPLES
KL_ACTIVE_THRESHOLD = 0.05
KNN_K = (3, 5, 10)
#: A probe's coordinate whose spread is at most this share of its own size counts as constant (`probe_accuracy`).
PROBE_ROUNDING_SPREAD = 1e-6


def subsets_by_size(n_modalities: int, max_subsets: int = 10, seed: int = 0) -> dict[int, list[tuple[int, ...]]]:
    """Subsets of modality indices grouped by size: all of them for M <= 5, else up to `max_subsets` per size."""
    rng = np.random.default_rng(seed)
    out = {}
    for size in range(1, n_modalities + 1):
        if math.comb(n_modalities, size) <= max_subsets or n_modalities <= 5:
            out[size] = list(itertools.combinations(range(n_modalities), size))
        else:
            chosen: set[tuple[int, ...]] = set()
            while len(chosen) < max_subsets:
                chosen.add(tuple(sorted(rng.choice(n_modalities, size, replace=False).tolist())))
            out[size] = sorted(chosen)
    return out


def _restricted(mask: torch.Tensor, subset: tuple[int, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask limited to `subset` and which rows have all of the subset observed."""
    if subset is None:
        return mask, torch.ones(mask.shape[0], dtype=torch.bool)
    keep = torch.zeros(mask.shape[1], dtype=torch.bool)
    keep[list(subset)] = True
    limited = mask & keep
    complete = mask[:, list(subset)].all(-1)
    # rows lacking the subset keep their full mask so the posterior is defined; callers drop them
    return torch.where(complete.unsqueeze(-1), limited, mask), complete


@torch.no_grad()
def encode(
    model: MultimodalModule,
    split: Split,
    subsets: Sequence[tuple[int, ...] | None] = (None,),
    batch_size: int = 500,
    elbo: bool = False,
) -> list[dict]:
    """Posterior summaries of every row for each subset of given modalities (None = all observed).

    Encoders run once per batch; each subset's posterior is aggregated from the same unimodal posteriors (MoPoE fuses each
    subset once for all of them: `Aggregator.posteriors_given`).
    Returns per subset: representation, decoder_space, mean, kl_per_dim, weights (stick families),
    rows (which rows had the whole subset observed) and, for the first entry with elbo=True, elbo.
    """
    model.eval()
    parts: list[dict[str, list]] = [dict() for _ in subsets]
    for start in range(0, len(split), batch_size):
        batch = split.batch(np.arange(start, min(start + batch_size, len(split))))
        data, mask = batch["data"], batch["mask"]
        unimodal = model.unimodal_posteriors(data, mask)
        limited, completes = zip(*(_restricted(mask, subset) for subset in subsets))
        posteriors = model.aggregator.posteriors_given(model, unimodal, mask, list(limited))
        for out, q, complete in zip(parts, posteriors, completes):
            values = {
                "representation": model.latent.representation(q),
                "decoder_space": model.latent.decoder_space_representation(q),
                "mean": q.mean,
                "kl_per_dim": model.latent.kl_per_dim(q),
                "rows": complete,
            } | {f"kl_part_{part}": kl for part, kl in model.latent.kl_parts(q).items()}
            weights = model.latent.expected_weights(q)
            if weights is not None:
                values["weights"] = weights
            for key, value in values.items():
                out.setdefault(key, []).append(value.numpy())
        if elbo:
            parts[0].setdefault("elbo", []).append(model(data, mask).elbo.numpy())
    return [{key: np.concatenate(value) for key, value in out.items()} for out in parts]


@torch.no_grad()
def importance_log_likelihood(
    model: MultimodalModule, split: Split, n_samples: int = 1000, batch_size: int = 100, progress: bool = True
) -> np.ndarray:
    """Per-row importance-sampled log p(X_observed), batched over rows and samples so memory stays flat."""
    model.eval()
    chunk = max(1, min(n_samples, 10_000 // batch_size))
    values = []
    starts = range(0, len(split), batch_size)
    for start in tqdm(starts, desc=f"log p(x), {n_samples} samples", disable=not progress, leave=False):
        batch = split.batch(np.arange(start, min(start + batch_size, len(split))))
        values.append(model.log_likelihood(batch["data"], batch["mask"], n_samples=n_samples, chunk=chunk).numpy())
    return np.concatenate(values)


@torch.no_grad()
def truncation_elbo(
    model: MultimodalModule, split: Split, keep: int | None, n_samples: int = 10, batch_size: int = 250
) -> float:
    """Mean over rows of E_q[log p(X_observed, z) - log q(z)] for the joint posterior q, with every dimension from
    `keep` on set to the prior (None: q itself), by `n_samples` draws per row."""
    model.eval()
    total = 0.0
    for start in range(0, len(split), batch_size):
        batch = split.batch(np.arange(start, min(start + batch_size, len(split))))
        data, mask = batch["data"], batch["mask"]
        q: Distribution = model.posterior(data, mask)
        if keep is not None:
            q = model.latent.truncated(q, keep)
        total += float(model.log_importance_weights(q, data, mask, n_samples).mean(0).sum())
    return total / len(split)


def kl_span(mean_kl: np.ndarray, share: float = 0.99) -> int:
    """Smallest k such that dimensions 1..k hold `share` of the total mean KL (0 when there is no KL at all)."""
    kl = np.clip(np.asarray(mean_kl, dtype=np.float64), 0.0, None)
    total = kl.sum()
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(kl) / total, share - 1e-12) + 1)


def kl_order_spearman(mean_kl: np.ndarray) -> float | None:
    """Spearman's rank correlation of the dimension index and its mean KL (None if the KL is constant)."""
    kl = np.asarray(mean_kl, dtype=np.float64)
    if len(kl) < 2 or np.ptp(kl) == 0:
        return None
    return float(spearmanr(np.arange(len(kl)), kl).statistic)


def knn_errors(
    train_rep: np.ndarray, train_y: np.ndarray, test_rep: np.ndarray, test_y: np.ndarray
) -> dict[str, float]:
    errors = {}
    for k in KNN_K:
        classifier = KNeighborsClassifier(n_neighbors=k).fit(train_rep, train_y)
        errors[str(k)] = float(1.0 - classifier.score(test_rep, test_y))
    return errors


def probe_accuracy(train_rep, train_y, test_rep, test_y) -> float:
    """A logistic-regression probe on standardised representations (the MoPoE protocol's linear classifier).

    A coordinate that varies only by rounding on the training rows (an unused stick's weight: spread at most 1e-6 of its
    own size, about 16 float32 steps) is set to zero rather than divided by its spread: standardised, its rounding noise
    became a feature of unit scale that L-BFGS chased to its 1,000-iteration limit (minutes per probe on a one-epoch
    Kumaraswamy run). A small coordinate that really varies keeps its spread, however small next to the others."""
    mean, std = train_rep.mean(0), train_rep.std(0)
    scale = np.where(std > PROBE_ROUNDING_SPREAD * np.abs(mean), std, np.inf)
    probe = LogisticRegression(max_iter=1000).fit((train_rep - mean) / scale, train_y)
    return float(probe.score((test_rep - mean) / scale, test_y))


def r2_of_factors(train_rep, train_factors, test_rep, test_factors) -> float:
    return float(LinearRegression().fit(train_rep, train_factors).score(test_rep, test_factors))


@torch.no_grad()
def coherence(
    model: MultimodalModule,
    split: Split,
    classifiers,
    subsets: dict[int, list],
    n_joint: int = 1000,
    batch_size: int = 500,
    progress: bool = True,
) -> dict:
    """Conditional coherence by number of given modalities on `split`, and joint coherence from prior samples.

    classifiers: one per modality, in the model's modality order.
    """
    model.eval()
    labels = torch.from_numpy(np.array(split.labels))  # a copy: cached arrays are read-only memory maps
    names = model.names
    n_modalities = len(names)
    by_subset: dict[tuple, list[float]] = {}
    work = [s for size in range(1, n_modalities) for s in subsets.get(size, [])]
    for subset in tqdm(work, desc="coherence", disable=not progress, leave=False):
        correct = {m: 0 for m in range(n_modalities) if m not in subset}
        counted = 0
        for start in range(0, len(split), batch_size):
            batch = split.batch(np.arange(start, min(start + batch_size, len(split))))
            limited, complete = _restricted(batch["mask"], subset)
            if not bool(complete.any()):
                continue
            rows = complete.nonzero().squeeze(-1)
            data_rows = {k: v.index_select(0, rows) for k, v in batch["data"].items()}
            q = model.posterior(data_rows, limited.index_select(0, rows))
            generated = model.decode_mean(model.latent.rsample(q), model.covariates_of(data_rows))
            for m in correct:
                prediction = classifiers[m].predict(generated[names[m]])
                correct[m] += int((prediction == labels[start:][rows]).sum())
            counted += len(rows)
        if counted:
            by_subset[subset] = [correct[m] / counted for m in correct]
    conditional = {}
    for size in range(1, n_modalities):
        scores = [np.mean(by_subset[s]) for s in subsets.get(size, []) if s in by_subset]
        if scores:
            conditional[str(size)] = float(np.mean(scores))
    z = model.latent.sample_prior(n_joint)
    generated = model.decode_mean(z)
    predictions = torch.stack([c.predict(generated[name]) for c, name in zip(classifiers, names)], dim=1)
    joint = float((predictions == predictions[:, :1]).all(dim=1).float().mean())
    return {"conditional": conditional, "joint": joint}


def with_labels_observed(split: Split, m: int, name: str) -> Split:
    """The split with its label modality (`name`, column m) observed on every row: the one-hot of the split's labels."""
    arrays = dict(split.arrays)
    arrays[name] = np.eye(split.arrays[name].shape[1], dtype=np.float32)[split.labels]
    mask = split.mask.copy()
    mask[:, m] = True
    return Split(arrays, mask, split.labels)


def without_modality(split: Split, m: int) -> Split:
    """The split with modality m hidden wherever another modality is observed (the label a prediction is about)."""
    mask = split.mask.copy()
    mask[:, m] &= ~np.delete(split.mask, m, axis=1).any(axis=1)
    return Split(split.arrays, mask, split.labels)


@torch.no_grad()
def predicted_classes(
    model: MultimodalModule, split: Split, name: str, rows: np.ndarray, given: list[int], batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """(the positions in `rows` of the rows with any of the `given` modalities observed, the class imputation gives each
    of them: the argmax of E[x_name | the given modalities], what `impute` fills in)."""
    keep = torch.zeros(len(model.names), dtype=torch.bool)
    keep[given] = True
    positions, predicted = [], []
    for start in range(0, len(rows), batch_size):
        batch = split.batch(rows[start : start + batch_size])
        mask = batch["mask"] & keep
        usable = mask.any(dim=1)
        if not bool(usable.any()):
            continue
        index = usable.nonzero().squeeze(-1)
        probabilities = model.class_probabilities(
            name,
            {k: v.index_select(0, index) for k, v in batch["data"].items()},
            mask.index_select(0, index),
            samples=DEFAULT_IMPUTATION_SAMPLES,
        )
        positions.append(start + index.numpy())
        predicted.append(probabilities.argmax(dim=1).numpy())
    if not positions:
        return np.array([], dtype=int), np.array([], dtype=int)
    return np.concatenate(positions), np.concatenate(predicted)


def class_truth(split: Split, name: str, c: int, label_modality: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, true class) of categorical modality `name` (column c): its own value where observed; for the data set's
    label modality, whose test rows are missing by construction, the split's labels on every row."""
    if name == label_modality:
        return np.arange(len(split)), np.asarray(split.labels)
    rows = np.flatnonzero(split.mask[:, c])
    return rows, split.arrays[name][rows].argmax(axis=1)


@torch.no_grad()
def prediction_errors(
    model: MultimodalModule, split: Split, label_modality: str | None = None, batch_size: int = 500
) -> dict:
    """For every categorical modality c: the error of predicting it, the argmax of E[x_c | the other modalities] (the
    equal-weight average of posterior draws, `class_probabilities`, what `impute --unweighted` fills in and validation's
    `val_<c>_error` reads; the weighted mean `impute` gives by default is not yet measured for labels), from all of
    them ("all") and from each one alone.

    The truth is c's own value on the rows where it is observed; for the data set's label modality, whose test rows
    are missing by construction, it is the split's labels on every row. Rows without any of the given modalities
    are not counted."""
    model.eval()
    names = model.names
    out = {}
    for c, name in enumerate(names):
        if not model.likelihood(name).categorical or len(names) < 2:
            continue
        rows, truth = class_truth(split, name, c, label_modality)
        others = [m for m in range(len(names)) if m != c]
        errors = {}
        for key, given in ({"all": others} | {names[m]: [m] for m in others}).items():
            scored, predicted = predicted_classes(model, split, name, rows, given, batch_size)
            if len(scored):
                errors[key] = float(np.mean(predicted != truth[scored]))
        out[name] = errors
    return out


#: Labelled validation rows below which `prediction_baselines` does not tune (and says so).
FEW_LABELLED_VALIDATION_ROWS = 5


def _classifier_inputs(split: Split, given: list[int], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The features a baseline classifier reads from `given` modalities, and the rows that have any of them. With
    several modalities a missing one is zeros plus an indicator column (the one-hot of what is observed)."""
    available = split.mask[:, given].any(axis=1)
    rows = np.flatnonzero(available)
    data = split.batch(rows)["data"] if len(rows) else {}
    parts = [data[names[m]].reshape(len(rows), -1).numpy() for m in given] if len(rows) else []
    if len(given) > 1 and len(rows):
        observed = split.mask[rows][:, given]
        parts = [p * observed[:, i : i + 1] for i, p in enumerate(parts)]
        parts += [observed[:, [i]].astype(np.float32) for i in range(len(given)) if not observed[:, i].all()]
    return (np.concatenate(parts, axis=1) if parts else np.zeros((0, 0))), rows


def baseline_class_predictions(data: MultimodalData, test: Split, given: list[int], seed: int = 0) -> dict:
    """For the data set's label modality predicted from the `given` modalities: {"train_rows", "valid_rows", "rows":
    counts, "test_rows": the test rows with any given modality, "probabilities": {classifier: [rows, C]}, "settings"},
    or a "note" instead of the last three when there are too few labelled rows (`prediction_baselines`)."""
    from .baselines import tuned_classifiers

    names = [m.name for m in data.modalities]
    label = data.label_modality
    assert label is not None  # asked for a data set with a label modality only
    c = names.index(label)
    entry: dict = {}
    fits = {}
    for part, split in (("train", data.model_train()), ("valid", data.valid)):  # the labels the model saw, no more
        labelled = np.flatnonzero(split.mask[:, c])
        x, rows = _classifier_inputs(split.take(labelled), given, names)
        fits[part] = (x, split.arrays[label][labelled[rows]].argmax(axis=1))
        entry[f"{part}_rows"] = int(len(rows))
    x_test, test_rows = _classifier_inputs(test, given, names)
    entry["rows"] = int(len(test_rows))
    if entry["train_rows"] < 2 or entry["valid_rows"] < FEW_LABELLED_VALIDATION_ROWS or not len(test_rows):
        entry["note"] = "too few labelled rows to fit and tune a classifier"
        return entry
    entry["test_rows"] = test_rows
    entry["probabilities"], entry["settings"] = tuned_classifiers(
        *fits["train"], *fits["valid"], x_test, int(data.modalities[c].shape[0]), seed
    )
    return entry


def prediction_baselines(data: MultimodalData, test: Split, seed: int = 0) -> dict:
    """For the data set's label modality: the test error of classifiers that predict the label from the other modalities
    (all of them, "all", and each alone), fitted on the labelled training rows and tuned on the labelled validation
    rows (`baselines.tuned_classifiers`: logistic regression and an MLP). Each entry counts the same test rows as the
    model's `prediction_error` of the same key, so the model is compared with `best_baseline` on equal terms."""
    label = data.label_modality
    if label is None or test.labels is None or len(data.modalities) < 2:
        return {}
    names = [m.name for m in data.modalities]
    others = [m for m in range(len(names)) if m != names.index(label)]
    out = {}
    for key, given in ({"all": others} | {names[m]: [m] for m in others}).items():
        entry = baseline_class_predictions(data, test, given, seed)
        if "probabilities" in entry:
            truth = test.labels[entry.pop("test_rows")]
            for name, p in entry.pop("probabilities").items():
                entry[name] = float((p.argmax(axis=1) != truth).mean())
            entry["best_baseline"] = min(("logistic", "mlp"), key=lambda b: entry.get(b, math.inf))
        out[key] = entry
    return {label: out}


#: Training rows the regression baselines of `imputation_errors` fit on at most.
BASELINE_ROWS = 10_000


@torch.no_grad()
def imputation_errors(
    model: MultimodalModule,
    train: Split,
    test: Split,
    samples: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    valid: Split | None = None,
    tuned: bool = True,
    weighted: bool = True,
) -> dict:
    """Per modality m, the mean squared error (per feature, in the model's units; for binary and categorical values the
    Brier score; a table's empty cells are not scored, and the baselines read them as the training mean; a model's
    covariates are read by the baselines too) of imputing it on
    test rows with every modality observed, m hidden on purpose: the model's conditional mean (what `impute` gives:
    importance-weighted unless `weighted` is False; `model_unweighted`: the encoders' plain average of
    IMPUTATION_SAMPLES draws, on the same rows) beside the baselines of `infinimodal.evaluation.baselines` (training
    mean, ridge, MLP, logistic regression for binary and categorical values), fitted on the complete training rows with their settings
    chosen on the complete `valid` rows (`baseline_settings`), and the best of them (`best_baseline`, by test error, so
    the model is held to the strongest). `model_all_rows`: the model on every test row with m observed, from whatever
    else the row has. Each model figure has a 95 % interval over rows (`model_interval`, `model_all_rows_interval`),
    and `warning` says when fewer than FEW_IMPUTATION_ROWS complete test rows carry the comparison. Without validation
    rows with every modality, or with `tuned` False (`evaluate --no-baselines`), only the training mean is given."""
    from .baselines import tuned_predictions

    names = model.names
    if len(names) < 2:
        return {}
    samples = imputation_draws(samples, weighted)
    complete_test = np.flatnonzero(test.mask.all(axis=1))
    complete_train = np.flatnonzero(train.mask.all(axis=1))
    complete_train = np.sort(np.random.default_rng(seed).permutation(complete_train)[:BASELINE_ROWS])
    complete_valid = np.flatnonzero(valid.mask.all(axis=1)) if valid is not None else np.array([], dtype=int)

    def rows_of(split: Split | None, rows: np.ndarray) -> dict[str, np.ndarray]:  # (no rows where split is None)
        if not len(rows) or split is None:
            return {}
        return {k: v.numpy().reshape(len(rows), -1) for k, v in split.batch(rows)["data"].items()}

    real_train, real_valid, real_test = (
        rows_of(train, complete_train),
        rows_of(valid, complete_valid),
        rows_of(test, complete_test),
    )
    # empty cells of table modalities (NaN): baselines read and fit them as the training mean; no error counts them
    fill = (
        {name: np.nan_to_num(np.nanmean(values, axis=0), nan=0.0) for name, values in real_train.items()}
        if len(complete_train)
        else {}
    )
    filled_train, filled_valid, filled_test = (
        {k: np.where(np.isnan(v), fill[k], v) for k, v in rows.items()} for rows in (real_train, real_valid, real_test)
    )
    out = {}
    for m, name in enumerate(names):
        entry: dict = {"rows": int(len(complete_test))}
        for key, rows, draws, weigh in (
            ("model", complete_test, samples, weighted),
            (
                "model_all_rows",
                np.flatnonzero(test.mask[:, m] & np.delete(test.mask, m, axis=1).any(axis=1)),
                samples,
                weighted,
            ),
            ("model_unweighted", complete_test if weighted else np.array([], dtype=int), IMPUTATION_SAMPLES, False),
        ):
            if not len(rows):
                continue
            chunks = []
            for start in range(0, len(rows), batch_size):
                batch = test.batch(rows[start : start + batch_size])
                hidden = batch["mask"].clone()
                hidden[:, m] = False
                predicted = model.conditional_means(batch["data"], hidden, draws, weighted=weigh)[name]
                chunks.append(np.nanmean((predicted - batch["data"][name]).pow(2).flatten(1).double().numpy(), axis=1))
            per_row = np.concatenate(chunks)
            entry[key] = float(per_row.mean())
            half = 1.96 * per_row.std() / np.sqrt(len(per_row))
            entry[f"{key}_interval"] = [float(per_row.mean() - half), float(per_row.mean() + half)]
        if len(entry) == 1:
            continue  # no test row has m and something to impute it from
        if entry["rows"] < FEW_IMPUTATION_ROWS:
            entry["warning"] = (
                f"only {entry['rows']} test rows have every modality: the model and its baselines are compared on too few "
                "rows to conclude (model_all_rows uses every row with this modality)"
            )
        if len(complete_test) and len(complete_train) >= 10:
            others = [n for n in names if n != name]
            given = others + (
                [COVARIATES] if COVARIATES in filled_train else []
            )  # what the model reads, the baselines read
            x = {
                part: np.concatenate([rows[n] for n in given], axis=1)
                for part, rows in (("train", filled_train), ("test", filled_test))
            }
            y_train, y_test = filled_train[name], real_test[name]
            entry["mean"] = float(np.nanmean((y_test - y_train.mean(0)) ** 2))
            if tuned and len(complete_valid) >= 10:
                x_valid = np.concatenate([filled_valid[n] for n in given], axis=1)
                predictions, entry["baseline_settings"] = tuned_predictions(
                    x["train"], y_train, x_valid, filled_valid[name], x["test"], imputation_kind(model, name), seed
                )
                for baseline, guessed in predictions.items():
                    entry[baseline] = float(np.nanmean((guessed - y_test) ** 2))
            best = min((b for b in BASELINES if b in entry), key=entry.__getitem__)
            entry["best_baseline"] = best
        out[name] = entry
    return out


#: Below this many complete test rows, `imputation_errors` warns that its comparison rests on too few rows.
FEW_IMPUTATION_ROWS = 100
#: The baselines `imputation_errors` may report, by the key it gives their errors.
BASELINES = ("mean", "ridge", "mlp", "logistic")


def imputation_kind(model: MultimodalModule, name: str) -> str:
    """What modality `name` holds, for the baselines: one-hot classes, independent 0/1 features, or continuous values
    (a table's columns of several kinds count as continuous)."""
    likelihood = model.likelihood(name)
    return "categorical" if likelihood.categorical else "binary" if likelihood.name == "bernoulli" else "continuous"


def evaluate_model(
    model: MultimodalModule,
    data: MultimodalData,
    iw_samples: int = 1000,
    max_test: int | None = None,
    probe_train: int = 10_000,
    coherence_classifiers=None,
    max_subsets: int = 10,
    progress: bool = True,
    baselines: bool = True,
) -> dict:
    """All metrics of the module docstring; `iw_samples`: importance samples per row, of log p(x) and of the weighted
    conditional mean imputation is scored with. Coherence is computed when classifiers are given; `baselines` False
    skips the tuned baselines of imputation and prediction (`evaluate --no-baselines`: the training mean stays), which are most of
    an evaluation's time on small data."""
    test = data.test if max_test is None else data.test.take(slice(0, max_test))
    train = data.train_for_evaluation()
    names = [m.name for m in data.modalities]
    if data.label_modality is not None:
        # the label is what kNN, probes and coherence predict: representations never read it (test rows lack it anyway)
        train = without_modality(train, names.index(data.label_modality))
    n_modalities = len(names)
    multimodal = n_modalities > 1
    subsets = subsets_by_size(n_modalities, max_subsets) if multimodal else {}
    singles = [(m,) for m in range(n_modalities)] if multimodal else []
    probe_subsets = [s for size in sorted(subsets) for s in subsets[size]]

    test_codes = encode(model, test, [None, *singles, *probe_subsets], elbo=True)
    joint_test, single_test, probe_test = (
        test_codes[0],
        test_codes[1 : 1 + len(singles)],
        test_codes[1 + len(singles) :],
    )
    if data.label_modality is not None and test.labels is not None and multimodal:
        # the label's own posterior, for each test row's true class (its rows are missing from the test split)
        m = names.index(data.label_modality)
        single_test[m] = encode(model, with_labels_observed(test, m, data.label_modality), [(m,)])[0]
    labelled = train.labels is not None and test.labels is not None
    joint_train = encode(model, train)[0] if labelled else None
    # probes fit on a random subset of the training rows (one logistic regression per subset of modalities)
    probe_rows = np.sort(np.random.default_rng(0).permutation(len(train))[:probe_train])
    probe_train_codes = encode(model, train.take(probe_rows), probe_subsets) if labelled and multimodal else []

    mean_kl = joint_test["kl_per_dim"].mean(0)
    result: dict[str, Any] = {
        "elbo": float(joint_test["elbo"].mean()),
        "log_likelihood": float(importance_log_likelihood(model, test, iw_samples, progress=progress).mean()),
        "iw_samples": int(iw_samples),
        "active_dims": int((np.var(joint_test["mean"], axis=0) > ACTIVE_UNIT_THRESHOLD).sum()),
        "kl_active": int((mean_kl > KL_ACTIVE_THRESHOLD).sum()),
        "kl_per_dim": [float(v) for v in mean_kl],
        "kl_span_99": kl_span(mean_kl, 0.99),
        "kl_order_spearman": kl_order_spearman(mean_kl),
        "latent_dimensions": int(model.latent.n_dimensions),
        "n_test": int(len(test)),
        "modalities": names,
    }
    keep = result["kl_span_99"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        full = truncation_elbo(model, test, None)
        torch.manual_seed(0)
        cut = truncation_elbo(model, test, keep)
    result["truncation_elbo_change"] = {
        "keep": keep,
        "of": int(len(mean_kl)),
        "elbo": full,
        "elbo_truncated": cut,
        "change": cut - full,
        "samples": 10,
    }
    stick = "weights" in joint_test
    if labelled:
        assert joint_train is not None and train.labels is not None and test.labels is not None  # labelled
        result["knn_error"] = knn_errors(
            joint_train["representation"], train.labels, joint_test["representation"], test.labels
        )
        result["n_train_knn"] = int(len(train))
        if stick:
            result["knn_error_decoder_input"] = knn_errors(
                joint_train["decoder_space"], train.labels, joint_test["decoder_space"], test.labels
            )
    else:
        result["knn_error"] = None
        result["notes"] = ["the data have no labels: kNN error, probes and coherence are not computed"]
    result["kl_parts"] = {
        key.removeprefix("kl_part_"): float(value.mean())
        for key, value in joint_test.items()
        if key.startswith("kl_part_")
    }
    if stick:
        result["truncation"] = int(
            getattr(model.latent, "truncation")
        )  # K: with --truncation auto, where training left it
    if stick and model.latent.mass_counts_dimensions:
        covered = sticks_to_cover(torch.from_numpy(joint_test["weights"]), 0.99).numpy()
        result["sticks_99"] = float(covered.mean())
        result["sticks_99_histogram"] = np.bincount(covered, minlength=len(mean_kl) + 2)[1:].tolist()
        result["mean_stick_weights"] = [float(v) for v in joint_test["weights"].mean(0)]
        if multimodal:
            result["per_modality_sticks_99"] = {
                name: float(sticks_to_cover(torch.from_numpy(codes["weights"][codes["rows"]]), 0.99).float().mean())
                for name, codes in zip(names, single_test)
                if codes["rows"].any()
            }
    if multimodal:
        # modalities observed on some test row (a label modality is observed on none)
        seen = [(name, codes) for name, codes in zip(names, single_test) if codes["rows"].any()]
        result["per_modality_kl_active"] = {
            name: int((codes["kl_per_dim"][codes["rows"]].mean(0) > KL_ACTIVE_THRESHOLD).sum()) for name, codes in seen
        }
        result["per_modality_kl_span_99"] = {
            name: kl_span(codes["kl_per_dim"][codes["rows"]].mean(0)) for name, codes in seen
        }
        errors = prediction_errors(model, test, data.label_modality)
        if errors:
            result["prediction_error"] = errors
        fitted = prediction_baselines(data, test) if baselines else None
        if fitted:
            result["prediction_baselines"] = fitted
        imputation = imputation_errors(model, data.train, test, samples=iw_samples, valid=data.valid, tuned=baselines)
        if imputation:
            result["imputation_mse"] = imputation
    if multimodal and labelled:
        assert train.labels is not None and test.labels is not None  # labelled
        probe_labels = train.labels[probe_rows]
        for space, suffix in [("representation", "")] + ([("decoder_space", "_decoder_input")] if stick else []):
            accuracy: dict[str, list[float]] = {}
            for subset, tr, te in zip(probe_subsets, probe_train_codes, probe_test):
                train_rows, test_rows = np.flatnonzero(tr["rows"]), np.flatnonzero(te["rows"])
                if len(train_rows) and len(test_rows):
                    score = probe_accuracy(
                        tr[space][train_rows], probe_labels[train_rows], te[space][test_rows], test.labels[test_rows]
                    )
                    accuracy.setdefault(str(len(subset)), []).append(score)
            result[f"linear_probe_accuracy{suffix}"] = {k: float(np.mean(v)) for k, v in accuracy.items()}
        result["probe_train_rows"] = int(len(probe_rows))
    if coherence_classifiers is not None and labelled and multimodal:
        result["coherence"] = coherence(model, test, coherence_classifiers, subsets, progress=progress)
        result["coherence_classifier_accuracy"] = {c.name: c.test_accuracy for c in coherence_classifiers}
    if data.truth is not None and data.truth.get("shared", 0) > 0 and labelled:
        assert joint_train is not None  # labelled
        factors = data.truth["shared_factors"]
        test_factors = factors["test"][: len(test)]
        result["shared_factor_r2"] = r2_of_factors(
            joint_train["representation"], factors["train"], joint_test["representation"], test_factors
        )
        if stick:
            result["shared_factor_r2_decoder_input"] = r2_of_factors(
                joint_train["decoder_space"], factors["train"], joint_test["decoder_space"], test_factors
            )
        result["true_dims"] = int(data.truth["true_dims"])
    return result
