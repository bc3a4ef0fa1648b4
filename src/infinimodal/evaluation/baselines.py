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
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPRegressor
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
    return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(width,), alpha=penalty, early_stopping=True, max_iter=300, random_state=seed))


class _PerFeatureLogistic:
    """One logistic regression per binary feature (a feature with one value in training: that value's frequency)."""

    def __init__(self, c: float) -> None:
        self.c = c

    def fit(self, x, y):
        self.models = []
        for j in range(y.shape[1]):
            classes = np.unique(y[:, j])
            self.models.append(float(classes[0]) if len(classes) < 2 else
                               make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=1000)).fit(x, y[:, j]))
        return self

    def predict(self, x):
        return np.column_stack([np.full(len(x), m) if isinstance(m, float) else m.predict_proba(x)[:, 1] for m in self.models])


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
        warnings.simplefilter("ignore", ConvergenceWarning)  # early stopping ends most MLP fits; the rest stop at max_iter
        errors = {setting: _squared_error(predict(build(setting).fit(x_train[tuning_rows], y_train[tuning_rows]), x_valid), y_valid)
                  for setting in settings}
        best = min(errors, key=errors.get)
        return best, build(best).fit(x_train, y_train)


def tuned_predictions(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray, x_test: np.ndarray,
                      kind: str, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, object]]:
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
    chosen: dict[str, object] = {}
    candidates = {"ridge": (_ridge, RIDGE_PENALTIES), "mlp": (lambda setting: _mlp(setting, seed), MLP_SETTINGS)}
    if kind == "categorical" or (kind == "binary" and y_train.shape[1] <= MAX_LOGISTIC_FEATURES):
        candidates["logistic"] = (_PerFeatureLogistic if kind == "binary" else _Multinomial, LOGISTIC_C)
    for name, (build, settings) in candidates.items():
        predict = regress if name != "logistic" else (lambda model, x: model.predict(x))
        chosen[name], model = _tuned(build, settings, predict, x_train, y_train, x_valid, y_valid, tuning_rows)
        predictions[name] = predict(model, x_test)
    chosen = {name: (float(value) if np.isscalar(value) else [float(v) for v in value]) for name, value in chosen.items()}
    return predictions, chosen
