"""Baselines for imputing one modality from the others, each tuned on validation rows as carefully as the model.

A model's imputation error means something only beside the best simple predictor of the same values from the same
inputs. Every baseline here is fitted on training rows and has its settings chosen by its error on validation rows
(never the test rows it is then scored on):
- `mean`: the training mean (nothing to tune);
- `ridge`: linear regression with the L2 penalty chosen from 13 values, 1e-3 to 1e3;
- `mlp`: scikit-learn's MLPRegressor, one hidden layer of 64 or 256 ReLUs, L2 penalty 0.01, 1, 10 or 100, early stopped;
  scikit-learn's default penalty (1e-4) was worse than the training mean on a cohort's binary markers;
- `logistic` (binary and categorical modalities): logistic regression per binary feature, or multinomial over the
  classes, its inverse penalty C chosen from 1e-3 to 1e2.
Predictions of binary and categorical values are probabilities (regressions clipped to [0, 1]), so the squared error
is the Brier score, as for the model's conditional mean.

`tuned_classifiers` is the same for predicting a class from a few labelled rows (a label modality observed on some
rows): multinomial logistic regression (C from 1e-3 to 1e2) and an MLP classifier (`MLP_CLASSIFIER_SETTINGS`: 64 ReLUs
with L2 penalty 0.01, 1 or 10, or 256 with penalty 1; early stopped from 1,000 rows), each chosen on the labelled validation rows by log loss (an error rate on a few dozen rows moves in steps of
several points; the log loss ranks settings on every row's confidence).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RIDGE_PENALTIES = tuple(np.logspace(-3, 3, 13))
MLP_SETTINGS = tuple((width, penalty) for width in (64, 256) for penalty in (1e-2, 1.0, 10.0, 100.0))
LOGISTIC_C = tuple(np.logspace(-3, 2, 6))
#: Training rows the settings are compared on at most (the chosen setting is refitted on every training row).
TUNING_ROWS = 5000
#: Binary modalities with more features than this (images) get no per-feature logistic regression.
MAX_LOGISTIC_FEATURES = 64
#: What the values of a modality are: continuous values, independent 0/1 features, or one-hot classes.
KINDS = ("continuous", "binary", "categorical")


def _squared_error(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(((predicted - truth) ** 2).mean())


def _ridge(alpha: float):
    return Ridge(alpha=alpha)


def _mlp(setting: tuple[int, float], seed: int):
    width, penalty = setting
    return make_pipeline(
        StandardScaler(),
        MLPRegressor(hidden_layer_sizes=(width,), alpha=penalty, early_stopping=True, max_iter=300, random_state=seed),
    )


class _PerFeatureLogistic:
    """One logistic regression per binary feature (a feature with one value in training: that value's frequency)."""

    def __init__(self, c: float) -> None:
        self.c = c

    def fit(self, x, y):
        self.models = []
        for j in range(y.shape[1]):
            classes = np.unique(y[:, j])
            self.models.append(
                float(classes[0])
                if len(classes) < 2
                else make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=1000)).fit(x, y[:, j])
            )
        return self

    def predict(self, x):
        return np.column_stack(
            [np.full(len(x), m) if isinstance(m, float) else m.predict_proba(x)[:, 1] for m in self.models]
        )


class _Multinomial:
    """Multinomial logistic regression over one-hot rows, predicting the probability of every class."""

    def __init__(self, c: float) -> None:
        self.c = c

    def fit(self, x, y):
        self.n_classes = y.shape[1]
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=1000)).fit(x, y.argmax(1))
        return self

    def predict(self, x):
        out = np.zeros((len(x), self.n_classes))
        out[:, self.model.classes_] = self.model.predict_proba(x)
        return out


def _tuned(build, settings, predict, x_train, y_train, x_valid, y_valid, tuning_rows: np.ndarray):
    """The setting whose model, fitted on the tuning rows of the training set, predicts the validation rows best; and
    that setting's model fitted on every training row."""
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", ConvergenceWarning
        )  # early stopping ends most MLP fits; the rest stop at max_iter
        fitted = {setting: build(setting).fit(x_train[tuning_rows], y_train[tuning_rows]) for setting in settings}
        errors = {setting: _squared_error(predict(model, x_valid), y_valid) for setting, model in fitted.items()}
        best = min(errors, key=errors.__getitem__)
        if len(tuning_rows) == len(x_train):  # the tuning rows are every training row, in order: that fit is the refit
            return best, fitted[best]
        return best, build(best).fit(x_train, y_train)


def tuned_predictions(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    x_test: np.ndarray,
    kind: str,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Each baseline's predictions of the test rows' y, its setting chosen on the validation rows: (predictions by name,
    chosen setting by name). Settings are compared on at most TUNING_ROWS training rows; the chosen one is refitted on
    all of them. Per-feature logistic regression is left out above MAX_LOGISTIC_FEATURES binary features (images)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: choose {', '.join(KINDS)}")
    bounded = kind != "continuous"

    def regress(model, x):
        predicted = model.predict(x).reshape(len(x), -1)
        return np.clip(predicted, 0.0, 1.0) if bounded else predicted

    tuning_rows = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:TUNING_ROWS])
    predictions = {"mean": np.broadcast_to(y_train.mean(0), (len(x_test), y_train.shape[1])).copy()}
    chosen: dict[str, Any] = {}  # each model's setting: a number or a list of numbers
    candidates = {"ridge": (_ridge, RIDGE_PENALTIES), "mlp": (lambda setting: _mlp(setting, seed), MLP_SETTINGS)}
    if kind == "categorical" or (kind == "binary" and y_train.shape[1] <= MAX_LOGISTIC_FEATURES):
        candidates["logistic"] = (_PerFeatureLogistic if kind == "binary" else _Multinomial, LOGISTIC_C)
    for name, (build, settings) in candidates.items():
        predict = regress if name != "logistic" else (lambda model, x: model.predict(x))
        chosen[name], model = _tuned(build, settings, predict, x_train, y_train, x_valid, y_valid, tuning_rows)
        predictions[name] = predict(model, x_test)
    chosen = {
        # numpy's isscalar narrows to every scalar type, complex and text among them: the settings are real numbers
        name: (float(value) if np.isscalar(value) else [float(v) for v in value])  # type: ignore[arg-type]
        for name, value in chosen.items()
    }
    return predictions, chosen


#: The MLP classifier's (width, L2 penalty) settings; fewer than the regression's, since every key of a prediction
#: table fits all of them.
MLP_CLASSIFIER_SETTINGS = ((64, 1e-2), (64, 1.0), (64, 10.0), (256, 1.0))
#: From this many training rows the MLP classifier stops early on a tenth of them; below, it runs its iterations.
EARLY_STOPPING_ROWS = 1000


def _classifier(name: str, setting, seed: int, rows: int):
    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=setting, max_iter=1000))
    width, penalty = setting
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(width,),
            alpha=penalty,
            max_iter=200,
            random_state=seed,
            early_stopping=rows >= EARLY_STOPPING_ROWS,
        ),
    )


def _class_probabilities(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out / out.sum(
        axis=1, keepdims=True
    )  # float64 rows that sum to one (float32 inputs give float32 probabilities)


#: The classifiers `tuned_classifiers` fits, with the settings each is chosen from.
CLASSIFIERS = {"logistic": LOGISTIC_C, "mlp": MLP_CLASSIFIER_SETTINGS}


def tuned_classifiers(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    x_test: np.ndarray,
    n_classes: int,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Each classifier's class probabilities for the test rows, its setting chosen by log loss on the validation rows
    (labels as integers 0..n_classes-1): (probabilities by name, chosen setting by name). With fewer than two classes
    among the training labels there is nothing to fit: the training frequencies are the prediction."""
    if len(np.unique(y_train)) < 2:
        frequencies = np.bincount(y_train, minlength=n_classes) / len(y_train)
        return {"logistic": np.tile(frequencies, (len(x_test), 1))}, {"logistic": "training frequencies (one class)"}
    predictions: dict[str, np.ndarray] = {}
    chosen: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, settings in CLASSIFIERS.items():
            fitted = {
                setting: _classifier(name, setting, seed, len(x_train)).fit(x_train, y_train) for setting in settings
            }
            losses = {
                setting: log_loss(y_valid, _class_probabilities(model, x_valid, n_classes), labels=range(n_classes))
                for setting, model in fitted.items()
            }
            best = min(losses, key=losses.__getitem__)
            predictions[name] = _class_probabilities(fitted[best], x_test, n_classes)
            # numpy's isscalar narrows to every scalar type, complex and text among them: the settings are real numbers
            chosen[name] = float(best) if np.isscalar(best) else [float(v) for v in best]  # type: ignore[arg-type]
    return predictions, chosen
