"""The metrics a run is judged by, declared once: which way is better, whether `infinimodal evaluate` prints it, and
whether it is a different bound under each aggregator. `compare` ranks runs by these declarations and the command
line prints the summary ones; eval.json's keys are the names here (a nested entry's key starts with its metric's).

A new metric is one line here beside the code that computes it (`infinimodal.evaluation.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """key: eval.json's (or metrics.csv's, for val_*); direction: +1 larger is better, -1 smaller is better, 0 not
    ranked; summary: printed by `infinimodal evaluate`; per_aggregator: a bound that differs with the aggregator, ranked
    only among runs of one aggregator; meaning: one line for a reader; computed_by: the function of
    `infinimodal.evaluation.metrics` that computes it; needs: what the data or model must have for it to be computed
    (empty: every run)."""

    key: str
    direction: int
    meaning: str
    summary: bool = False
    per_aggregator: bool = False
    computed_by: str = ""
    needs: str = ""


METRICS: tuple[Metric, ...] = (
    Metric("elbo", 1, "test ELBO, the aggregator's own bound", summary=True, per_aggregator=True, computed_by="encode"),
    Metric(
        "val_elbo",
        1,
        "validation ELBO of the saved model",
        per_aggregator=True,
        computed_by="the training plan (metrics.csv)",
    ),
    Metric(
        "log_likelihood", 1, "importance-sampled test log p(x)", summary=True, computed_by="importance_log_likelihood"
    ),
    Metric(
        "knn_error",
        -1,
        "kNN classification error of the representation (k = 3, 5, 10)",
        summary=True,
        computed_by="knn_errors",
        needs="labels",
    ),
    Metric(
        "knn_error_decoder_input",
        -1,
        "kNN error of what the decoder reads",
        computed_by="knn_errors",
        needs="labels and a stick family",
    ),
    Metric(
        "active_dims", 0, "dimensions whose posterior mean varies across test rows", summary=True, computed_by="encode"
    ),
    Metric("kl_active", 0, "dimensions with KL above the threshold", summary=True, computed_by="encode"),
    Metric(
        "sticks_99",
        0,
        "sticks holding 99 % of E[pi]",
        summary=True,
        computed_by="sticks_to_cover",
        needs="a stick family",
    ),
    Metric(
        "linear_probe_accuracy",
        1,
        "logistic-regression probe accuracy per number of observed modalities",
        summary=True,
        computed_by="probe_accuracy",
        needs="labels and several modalities",
    ),
    Metric(
        "linear_probe_accuracy_decoder_input",
        1,
        "probe accuracy on what the decoder reads",
        computed_by="probe_accuracy",
        needs="labels, several modalities and a stick family",
    ),
    Metric(
        "coherence",
        1,
        "cross-modal and joint coherence (conditional, joint)",
        summary=True,
        computed_by="coherence",
        needs="labels, several modalities and the coherence classifiers",
    ),
    Metric(
        "shared_factor_r2",
        1,
        "R² of the true shared factors from the representation (synthetic data)",
        computed_by="r2_of_factors",
        needs="generated data whose factors are known",
    ),
    Metric(
        "shared_factor_r2_decoder_input",
        1,
        "the same from what the decoder reads",
        computed_by="r2_of_factors",
        needs="known factors and a stick family",
    ),
    Metric(
        "prediction_error",
        -1,
        "error of the imputed class of each categorical modality",
        computed_by="prediction_errors",
        needs="a categorical modality",
    ),
    Metric(
        "imputation_mse",
        0,
        "squared error of imputing each modality from the others, beside tuned baselines (only the model's own "
        "entries are ranked)",
        computed_by="imputation_errors",
        needs="several modalities",
    ),
)
#: eval.json's imputation_mse entries that are the model's own errors (beside them: baselines and row counts, not ranked).
MODEL_IMPUTATION = ("model", "model_all_rows", "model_unweighted")
#: Metrics by key.
BY_KEY = {metric.key: metric for metric in METRICS}


def summary_keys() -> tuple[str, ...]:
    """The eval.json keys `infinimodal evaluate` prints."""
    return tuple(metric.key for metric in METRICS if metric.summary)


def metric_of(key: str) -> Metric | None:
    """The declared metric a flattened key ("coherence / joint", "knn_error / 5") belongs to, or None."""
    for metric in METRICS:
        if key == metric.key or key.startswith(metric.key + " / "):
            return metric
    return None


def direction(key: str) -> int:
    """+1 / -1 / 0 for a flattened eval.json or metrics key (imputation errors: only the model's own are ranked)."""
    if key.startswith("imputation_mse / "):
        return -1 if key.rsplit(" / ", 1)[-1] in MODEL_IMPUTATION else 0
    metric = metric_of(key)
    return 0 if metric is None else metric.direction
