"""Contract tables: one entry per observation model, each with an independent reference (scipy.stats), from which
`tests/test_contracts.py` runs the same suite on every entry. A new likelihood is one entry here; a registered
likelihood without an entry fails that suite.

An entry gives a likelihood to build, valid data to score, the reference log-probability and mean computed from the
decoder's raw outputs with scipy (never through the code under test), and a row outside the support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.stats as st
import torch
from scipy.special import expit, softmax

from infinimodal.columns import Column
from infinimodal.likelihoods import Likelihood, build_likelihood
from infinimodal.tabular import TableLikelihood

SHAPE = (3, 2)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


@dataclass(frozen=True)
class LikelihoodContract:
    """build(): the likelihood (float64, its learned parameters set away from their start); data(rng, n): n valid rows;
    reference(params, likelihood): per-row log p with scipy from the raw decoder outputs [n, n_params, *shape];
    mean(params, likelihood): E[x] likewise; invalid: one row outside the support (None: every real row is valid)."""

    build: Callable[[], Likelihood]
    data: Callable[[np.random.Generator, int], np.ndarray]
    reference: Callable[[np.ndarray, Likelihood], np.ndarray]
    mean: Callable[[np.ndarray, Likelihood], np.ndarray]
    invalid: np.ndarray | None = None


def _learned(spec: str, shape=SHAPE, **raw) -> Callable[[], Likelihood]:
    def build() -> Likelihood:
        likelihood = build_likelihood(spec, shape).double()
        with torch.no_grad():
            for name, value in raw.items():
                getattr(likelihood, name).copy_(
                    torch.as_tensor(value, dtype=torch.float64).expand_as(getattr(likelihood, name))
                )
        return likelihood

    return build


def _rows(law) -> Callable[[np.ndarray, Likelihood], np.ndarray]:
    """Per-row sums of an elementwise scipy log-density law(x, params[:, 0], likelihood) over the row's features."""
    return lambda x, p, lik: law(x, p[:, 0], lik).reshape(len(x), -1).sum(1)


def _scale(lik) -> np.ndarray:
    return _softplus(lik.raw_scale.detach().numpy()) + 1e-3


def _inverse_dispersion(lik) -> np.ndarray:
    return _softplus(lik.raw_inverse_dispersion.detach().numpy()) + 1e-4


TABLE_COLUMNS = (
    Column("volume", "gaussian"),
    Column("smoker", "bernoulli"),
    Column("lesions", "negative_binomial"),
    Column("mmse", "beta_binomial", low=0, high=30),
    Column("site", "categorical", ("a", "b", "c")),
    Column("visits", "poisson"),
)


def _table() -> Likelihood:
    likelihood = TableLikelihood(TABLE_COLUMNS).double()
    with torch.no_grad():
        likelihood.families["gaussian"].raw_scale.fill_(0.3)
        likelihood.families["negative_binomial"].raw_inverse_dispersion.fill_(1.7)
        likelihood.families["beta_binomial"].raw_concentration.fill_(2.5)
    return likelihood


def _table_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = np.column_stack(
        [
            rng.normal(size=n),
            rng.integers(0, 2, n),
            rng.poisson(4.0, n),
            rng.integers(0, 31, n),
            np.eye(3)[rng.integers(0, 3, n)],
            rng.poisson(2.0, n),
        ]
    ).astype(np.float64)
    rows[rng.random(rows.shape[:1]) < 0.3, 0] = np.nan  # empty cells: skipped by the likelihood
    rows[rng.random(rows.shape[:1]) < 0.3, 4:7] = np.nan
    return rows


@np.errstate(divide="ignore")  # log 0 for the empty categorical cells, whose terms are then dropped
def _table_reference(x: np.ndarray, p: np.ndarray, lik) -> np.ndarray:
    p = p[:, 0]
    scale, r = _softplus(0.3) + 1e-3, _softplus(1.7) + 1e-4
    c = _softplus(2.5) + 1e-4
    terms = [
        st.norm.logpdf(x[:, 0], p[:, 0], scale),
        st.bernoulli.logpmf(x[:, 1], expit(p[:, 1])),
        st.nbinom.logpmf(x[:, 2], r, r / (r + np.exp(p[:, 2]))),
        st.betabinom.logpmf(x[:, 3], 30, expit(p[:, 3]) * c, expit(-p[:, 3]) * c),
        np.log(np.sum(softmax(p[:, 4:7], axis=1) * np.nan_to_num(x[:, 4:7]), axis=1)),
        st.poisson.logpmf(x[:, 7], np.exp(p[:, 7])),
    ]
    empty = [
        np.isnan(x[:, 0]),
        np.zeros(len(x), bool),
        np.zeros(len(x), bool),
        np.zeros(len(x), bool),
        np.isnan(x[:, 4]),
        np.zeros(len(x), bool),
    ]
    return sum(np.where(e, 0.0, t) for t, e in zip(terms, empty))


def _table_mean(p: np.ndarray, lik) -> np.ndarray:
    p = p[:, 0]
    return np.column_stack(
        [p[:, 0], expit(p[:, 1]), np.exp(p[:, 2]), 30 * expit(p[:, 3]), softmax(p[:, 4:7], axis=1), np.exp(p[:, 7])]
    )


#: One entry per observation model: every name of `infinimodal.likelihoods.LIKELIHOODS`, and the table's.
LIKELIHOOD_CONTRACTS: dict[str, LikelihoodContract] = {
    "bernoulli": LikelihoodContract(
        _learned("bernoulli"),
        lambda rng, n: rng.integers(0, 2, (n, *SHAPE)).astype(np.float64),
        _rows(lambda x, p, lik: st.bernoulli.logpmf(x, expit(p))),
        lambda p, lik: expit(p[:, 0]),
        np.full((1, *SHAPE), 0.5),
    ),
    "gaussian": LikelihoodContract(
        _learned("gaussian", raw_scale=np.linspace(-2, 2, 6).reshape(SHAPE)),
        lambda rng, n: rng.normal(size=(n, *SHAPE)) * 2,
        _rows(lambda x, p, lik: st.norm.logpdf(x, p, _scale(lik))),
        lambda p, lik: p[:, 0],
    ),
    "laplace": LikelihoodContract(
        _learned("laplace", raw_scale=np.linspace(-1, 1, 6).reshape(SHAPE)),
        lambda rng, n: rng.laplace(size=(n, *SHAPE)),
        _rows(lambda x, p, lik: st.laplace.logpdf(x, p, _scale(lik))),
        lambda p, lik: p[:, 0],
    ),
    "categorical": LikelihoodContract(
        _learned("categorical", (5,)),
        lambda rng, n: np.eye(5)[rng.integers(0, 5, n)],
        lambda x, p, lik: np.log(np.sum(softmax(p[:, 0], axis=1) * x, axis=1)),
        lambda p, lik: softmax(p[:, 0], axis=1),
        np.array([[1.0, 1, 0, 0, 0]]),
    ),
    "poisson": LikelihoodContract(
        _learned("poisson"),
        lambda rng, n: rng.poisson(3.0, (n, *SHAPE)).astype(np.float64),
        _rows(lambda x, p, lik: st.poisson.logpmf(x, np.exp(p))),
        lambda p, lik: np.exp(p[:, 0]),
        np.full((1, *SHAPE), 1.5),
    ),
    "negative_binomial": LikelihoodContract(
        _learned("negative_binomial", raw_inverse_dispersion=np.linspace(-1, 3, 6).reshape(SHAPE)),
        lambda rng, n: rng.negative_binomial(3, 0.4, (n, *SHAPE)).astype(np.float64),
        # scipy's nbinom(n, p) counts failures before n successes: mean n (1 - p) / p = mu at p = r / (r + mu)
        _rows(
            lambda x, p, lik: st.nbinom.logpmf(
                x, _inverse_dispersion(lik), _inverse_dispersion(lik) / (_inverse_dispersion(lik) + np.exp(p))
            )
        ),
        lambda p, lik: np.exp(p[:, 0]),
        np.full((1, *SHAPE), -1.0),
    ),
    "table": LikelihoodContract(_table, _table_rows, _table_reference, _table_mean),
}


@dataclass(frozen=True)
class LatentContract:
    """A latent family built with `settings` (`build_latent(family, **settings)`); `exact_fusion`: whether its product
    of experts is exactly q proportional to p(z) prod_m q_m(z) / p(z), or an approximation (and why)."""

    family: str
    settings: dict
    exact_fusion: bool | str = True


#: One entry per latent family, and per gated posterior (`--expert`): every name of `infinimodal.latents.LATENT_FAMILIES`.
LATENT_CONTRACTS: dict[str, LatentContract] = {
    "gaussian": LatentContract("gaussian", {"latent_dim": 4}),
    "beta": LatentContract("beta", {"truncation": 5}),
    "kumaraswamy": LatentContract("kumaraswamy", {"truncation": 5}, "a Kumaraswamy matched to the product numerically"),
    "logitnormal": LatentContract("logitnormal", {"truncation": 5}),
    "gated": LatentContract("gated", {"latent_dim": 4}),
    "gated, experts on the code": LatentContract(
        "gated",
        {"latent_dim": 4, "expert": "code"},
        "the code's Gaussian experts multiply given the sticks, whose Beta product ignores the "
        "sticks' share of the values' normaliser",
    ),
}
