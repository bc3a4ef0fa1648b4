"""Observation models p(x_m | z): turn a decoder's output into a Distribution over one modality.

Each likelihood is a small `nn.Module` (some own learned per-feature parameters, such as the scale of a
Gaussian) that maps decoder parameters of shape [batch, n_params, *shape] to a Distribution whose
`event_shape` is the modality's shape, so `log_prob(x)` is one number per sample and `.mean` is the
expected observation (what imputation and generation return).

| name | data | decoder outputs per feature | learned per feature |
|---|---|---|---|
| bernoulli | values in [0, 1] (binary, or intensities read as cross-entropy) | logit | - |
| gaussian | real | mean | scale |
| laplace | real | location | scale |
| categorical | one-hot rows, shape (C,) | logit per class | - |
| poisson | non-negative integers | log rate | - |
| negative_binomial | non-negative integers | log mean | inverse dispersion r |

To add one: subclass `Likelihood`, then add one line to `LIKELIHOODS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    Distribution,
    Independent,
    Laplace,
    NegativeBinomial,
    Normal,
    OneHotCategorical,
    Poisson,
)

from .errors import format_rows
from .nets import full_precision

#: Smallest learned scale (Gaussian, Laplace): a per-pixel scale that shrinks to zero on constant pixels
#: would make the log-density unbounded; 1e-3 caps it at about 6 nats per feature.
MIN_SCALE = 1e-3
#: Rates within exp(+-20) ~ 5e8 / 2e-9: beyond any count data, and log p(x) stays finite when the decoder saturates.
MAX_LOG_RATE = 20.0


class Likelihood(nn.Module):
    """Base class: `forward(params)` returns p(x | z) with `event_shape == shape`."""

    #: One categorical variable (one-hot rows): small default networks, predictions are classes.
    categorical = False

    name: str = ""
    #: decoder outputs per feature
    n_params: int = 1

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, params: Tensor) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def _independent(self, base: Distribution) -> Distribution:
        return Independent(base, len(self.shape))

    @property
    def encoder_shape(self) -> tuple[int, ...]:
        """The shape of what the encoder reads for one row (`encoder_input`): the modality's own by default."""
        return self.shape

    def encoder_input(self, values: Tensor) -> Tensor:
        """What the modality's encoder reads for these observed values (the values themselves by default)."""
        return values

    @staticmethod
    def check(values: np.ndarray) -> str | None:
        """A description of what is wrong with these (observed, finite) values, or None."""
        return None

    #: What `deviance` is, for reports: variance explained is 1 - sum deviance(x, model) / sum deviance(x, mean of x).
    if TYPE_CHECKING:  # read-only: a class attribute here, a property where it depends on the columns (a table's)

        @property
        def deviance_name(self) -> str: ...

    else:
        deviance_name = "squared error"

    def deviance(self, x: Tensor, mean: Tensor) -> Tensor:
        """Elementwise unit deviance of values x from predicted means (float64): the squared error by default (R^2 of a
        Gaussian feature, MOFA's variance explained); families with another variance function override it."""
        return (x.double() - mean.double()).square()

    @staticmethod
    def placeholder(shape: tuple[int, ...]) -> np.ndarray:
        """A row inside the support: it stands in for missing rows while values are checked."""
        return np.zeros(shape)


class BernoulliLikelihood(Likelihood):
    """Bernoulli with logits (SB-VAE, IWAE and most MNIST VAEs)."""

    name = "bernoulli"
    deviance_name = "Bernoulli deviance"

    def deviance(self, x: Tensor, mean: Tensor) -> Tensor:
        return bernoulli_deviance(x, mean)

    def forward(self, params: Tensor) -> Distribution:
        return self._independent(Bernoulli(logits=full_precision(params[:, 0]), validate_args=False))

    @staticmethod
    def check(values: np.ndarray) -> str | None:
        outside = ((values < 0) | (values > 1)).reshape(len(values), -1).any(axis=1)
        if outside.any():
            wrong = values[outside]
            return f"bernoulli data must be 0 or 1, found values in [{wrong.min():g}, {wrong.max():g}] in rows {format_rows(outside)}"
        between = (values != 0) & (values != 1)
        if between.any():
            # a Bernoulli "log-likelihood" of intensities is a cross-entropy, not a log-likelihood: refuse it
            rows = between.reshape(len(values), -1).any(axis=1)
            return (
                f"bernoulli data must be 0 or 1, found {int(between.sum())} values strictly between (e.g. {values[between].flat[0]:g}) "
                f"in rows {format_rows(rows)}; binarise them, or give the modality a gaussian or laplace likelihood"
            )
        return None


class FeatureScaleNormal(Normal):
    """N(loc, scale^2) whose scale is one per feature, shared by every row: `log_prob` standardises the residual once
    and takes log(scale) on the features alone (torch's Normal squares and logs the scale broadcast to every row)."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.feature_scale = scale
        super().__init__(loc, scale, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        standardised = (value - self.loc) / self.feature_scale
        return -0.5 * standardised.square() - (torch.log(self.feature_scale) + 0.5 * math.log(2 * math.pi))

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.loc.expand(batch_shape), self.feature_scale)


class FeatureScaleLaplace(Laplace):
    """Laplace(loc, scale) with one scale per feature (see FeatureScaleNormal)."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.feature_scale = scale
        super().__init__(loc, scale, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        return -(value - self.loc).abs() / self.feature_scale - torch.log(2 * self.feature_scale)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.loc.expand(batch_shape), self.feature_scale)


class _LocationScale(Likelihood):
    """Location from the decoder; one learned scale per feature (softplus, floored at MIN_SCALE), or a fixed
    scale for every feature ("laplace:0.75", as the MoPoE PolyMNIST experiments use)."""

    #: The distribution of each feature, from its location and scale (a `torch.distributions` class).
    family: Callable[[Tensor, Tensor], Distribution]
    #: The fixed scale's buffer, registered only when a fixed scale is given.
    fixed_scale: Tensor

    def __init__(self, shape: tuple[int, ...], scale: float | None = None) -> None:
        super().__init__(shape)
        if scale is None:
            # softplus(0.5413) = 1: start at unit scale, the scale of standardised data
            self.raw_scale = nn.Parameter(torch.full(self.shape, 0.5413))
        else:
            if not scale > 0:
                raise ValueError(f"a fixed {self.name} scale must be positive, got {scale}")
            self.register_buffer("fixed_scale", torch.full(self.shape, float(scale)))

    def scale(self) -> Tensor:
        if hasattr(self, "fixed_scale"):
            return self.fixed_scale
        return F.softplus(self.raw_scale) + MIN_SCALE

    def forward(self, params: Tensor) -> Distribution:
        return self._independent(self.family(full_precision(params[:, 0]), self.scale()))


class GaussianLikelihood(_LocationScale):
    name = "gaussian"
    family = FeatureScaleNormal


class LaplaceLikelihood(_LocationScale):
    name = "laplace"
    family = FeatureScaleLaplace


class CategoricalLikelihood(Likelihood):
    """One categorical variable per modality, observed as one-hot rows of shape (C,)."""

    name = "categorical"
    categorical = True
    deviance_name = "categorical deviance"

    def deviance(self, x: Tensor, mean: Tensor) -> Tensor:
        """-2 log p(observed class), carried by the observed class's one-hot position (the other positions give 0)."""
        return categorical_deviance(x, mean)

    def __init__(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 1 or shape[0] < 2:
            raise ValueError(f"a categorical modality has shape (C,) with C >= 2 classes (one-hot rows), got {shape}")
        super().__init__(shape)

    def forward(self, params: Tensor) -> Distribution:
        return OneHotCategorical(logits=full_precision(params[:, 0]), validate_args=False)

    @staticmethod
    def check(values: np.ndarray) -> str | None:
        flat = values.reshape(len(values), -1)
        one_hot = np.isin(flat, (0, 1)).all(axis=1) & (flat.sum(axis=1) == 1)
        if not one_hot.all():
            return f"categorical data must be one-hot rows; rows {format_rows(~one_hot)} are not"
        return None

    @staticmethod
    def placeholder(shape: tuple[int, ...]) -> np.ndarray:
        row = np.zeros(shape)
        row.flat[0] = 1.0
        return row


class _CountLikelihood(Likelihood):
    """Counts reach the encoder as log(1 + x), as in scVI: raw counts in the thousands (a histogram view,
    read depths) drove the encoder's first layer to posteriors tens of thousands of nats from the prior."""

    def encoder_input(self, values: Tensor) -> Tensor:
        return torch.log1p(values)

    deviance_name = "Poisson deviance"

    def deviance(self, x: Tensor, mean: Tensor) -> Tensor:
        return poisson_deviance(x, mean)


class PoissonLikelihood(_CountLikelihood):
    name = "poisson"

    def forward(self, params: Tensor) -> Distribution:
        rate = torch.exp(full_precision(params[:, 0]).clamp(-MAX_LOG_RATE, MAX_LOG_RATE))
        return self._independent(Poisson(rate, validate_args=False))

    @staticmethod
    def check(values: np.ndarray) -> str | None:
        return _check_counts(values, "poisson")


class NegativeBinomialLikelihood(_CountLikelihood):
    """Mean from the decoder, inverse dispersion r learned per feature (variance mu + mu^2 / r)."""

    name = "negative_binomial"

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.raw_inverse_dispersion = nn.Parameter(torch.full(self.shape, math.log(math.expm1(10.0))))

    def forward(self, params: Tensor) -> Distribution:
        log_mean = full_precision(params[:, 0]).clamp(-MAX_LOG_RATE, MAX_LOG_RATE)
        r = F.softplus(self.raw_inverse_dispersion) + 1e-4
        # torch's NegativeBinomial(total_count=r, logits=l) has mean r * exp(l)
        return self._independent(NegativeBinomial(total_count=r, logits=log_mean - torch.log(r), validate_args=False))

    @staticmethod
    def check(values: np.ndarray) -> str | None:
        return _check_counts(values, "negative_binomial")


#: Predicted probabilities and rates are kept this far from 0 and 1 in deviances (a saturated decoder stays finite).
DEVIANCE_FLOOR = 1e-12


def bernoulli_deviance(x: Tensor, mean: Tensor) -> Tensor:
    """2 [x log(x / mu) + (1 - x) log((1 - x) / (1 - mu))] (0 log 0 = 0), float64."""
    x, mu = x.double(), mean.double().clamp(DEVIANCE_FLOOR, 1 - DEVIANCE_FLOOR)
    return 2 * (torch.xlogy(x, x) - torch.xlogy(x, mu) + torch.xlogy(1 - x, 1 - x) - torch.xlogy(1 - x, 1 - mu))


def categorical_deviance(x: Tensor, mean: Tensor) -> Tensor:
    """-2 x log mu per one-hot position, float64 (summed over a row's positions: -2 log p(its class))."""
    return -2 * torch.xlogy(x.double(), mean.double().clamp_min(DEVIANCE_FLOOR))


def poisson_deviance(x: Tensor, mean: Tensor) -> Tensor:
    """2 [x log(x / mu) - (x - mu)], float64: the deviance of counts (for negative-binomial and bounded counts too, as
    their mean's fit, without the dispersion)."""
    x, mu = x.double(), mean.double().clamp_min(DEVIANCE_FLOOR)
    return 2 * (torch.xlogy(x, x) - torch.xlogy(x, mu) - (x - mu))


def _check_counts(values: np.ndarray, name: str) -> str | None:
    flat = values.reshape(len(values), -1)
    bad = ((flat < 0) | (flat != np.round(flat))).any(axis=1)
    if bad.any():
        return f"{name} data must be non-negative integers; rows {format_rows(bad)} are not"
    return None


LIKELIHOODS: dict[str, type[Likelihood]] = {
    cls.name: cls
    for cls in (
        BernoulliLikelihood,
        GaussianLikelihood,
        LaplaceLikelihood,
        CategoricalLikelihood,
        PoissonLikelihood,
        NegativeBinomialLikelihood,
    )
}


#: Likelihoods that take an argument after a colon: a fixed scale ("gaussian:0.1", "laplace:0.75").
WITH_FIXED_SCALE = ("gaussian", "laplace")


@dataclass(frozen=True)
class LikelihoodSpec:
    """A modality's likelihood as written ("gaussian", "laplace:0.75"), parsed once: its family (a `LIKELIHOODS` name)
    and, for the location-scale families, a fixed scale in the data's units (None: learned per feature)."""

    family: str
    scale: float | None = None

    @classmethod
    def parse(cls, text: str) -> "LikelihoodSpec":
        """ValueError saying what is allowed when `text` is not a likelihood."""
        name, colon, argument = str(text).partition(":")
        if name not in LIKELIHOODS:
            raise ValueError(
                f"unknown likelihood {text!r}; choose one of {', '.join(LIKELIHOODS)} (gaussian:S, laplace:S for a fixed scale S)"
            )
        if not colon:
            return cls(name)
        if name not in WITH_FIXED_SCALE:
            raise ValueError(f"likelihood {name!r} takes no argument, got {text!r}")
        try:
            scale = float(argument)
        except ValueError:
            raise ValueError(f"likelihood {text!r}: the fixed scale must be a number") from None
        if not scale > 0:
            raise ValueError(f"likelihood {text!r}: the fixed scale must be positive")
        return cls(name, scale)

    @property
    def cls(self) -> type[Likelihood]:
        return LIKELIHOODS[self.family]

    def build(self, shape: tuple[int, ...]) -> Likelihood:
        if self.scale is None:
            return self.cls(shape)
        # a fixed scale is parsed for the location-scale families only (WITH_FIXED_SCALE)
        return cast(type[_LocationScale], self.cls)(shape, scale=self.scale)


def likelihood_class(spec: str) -> type[Likelihood]:
    """The class of a likelihood spec ("laplace", "laplace:0.75"); ValueError saying what is allowed otherwise."""
    return LikelihoodSpec.parse(spec).cls


def build_likelihood(spec: str, shape: tuple[int, ...]) -> Likelihood:
    return LikelihoodSpec.parse(spec).build(shape)


def infer_likelihood(values: np.ndarray) -> str:
    """Binary -> bernoulli, non-negative integers -> poisson, anything else -> gaussian (observed rows only)."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if finite.size and np.isin(finite, (0, 1)).all():
        return "bernoulli"
    if finite.size and (finite >= 0).all() and (finite == np.round(finite)).all():
        return "poisson"
    return "gaussian"
