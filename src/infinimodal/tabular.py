"""The observation model of a table modality: one likelihood per column (`infinimodal.columns`), empty cells masked.

A row of a table modality holds one position per numeric column and C one-hot positions per categorical column;
an empty cell is NaN in its column's positions. `TableLikelihood` turns the decoder's output (one number per
position) into a `TableDistribution` whose `log_prob` is the sum of the observed cells' terms (an empty cell adds
nothing and passes no gradient), whose `mean` is each column's expectation (Gaussian mean, Bernoulli probability,
count mean, the score's mean, class probabilities) and whose `sample` draws every cell: each family's columns by
that family's own likelihood (`NUMERIC_FAMILIES`, the modalities' likelihoods, and `BetaBinomialLikelihood` for
bounded scores). The encoder reads the observed values as that family's encoders do (counts as log(1 + x), scores
as a fraction of their range), empty cells as 0, followed by one indicator per column saying whether its cell is
observed, so an empty cell is never read as a value. In training a
share CELL_DROPOUT of the filled cells is hidden from the encoder (the likelihood still scores them), so that empty
cells are something the encoder has seen.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Beta, Binomial, Distribution, constraints

from .columns import Column, positions
from .likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    Likelihood,
    NegativeBinomialLikelihood,
    PoissonLikelihood,
    poisson_deviance,
)
from .nets import full_precision
from .options import CELL_DROPOUT

if TYPE_CHECKING:
    from torch.types import _size  # the sample shapes torch.distributions accept

#: Starting inverse dispersion of negative-binomial columns and concentration a + b of bounded scores.
START_CONCENTRATION = 10.0


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


#: Smallest Beta parameter of a bounded score: lgamma(a) - lgamma(a + b) stays finite when the decoder saturates.
MIN_BETA_PARAMETER = 1e-30


def beta_binomial_log_prob(k: Tensor, trials: Tensor, logit: Tensor, concentration: Tensor) -> Tensor:
    """log P(k) of the beta-binomial with `trials` trials, success probability drawn from Beta(a, b), a = sigmoid(logit)
    * concentration, b = sigmoid(-logit) * concentration; in float64 from the logit (the log-gamma terms cancel to a
    few nats, and 1 - sigmoid(logit) rounds to 0 in float32 from a logit of 17)."""
    k, n, logit, c = (t.double() for t in (k, trials, logit, concentration))
    a = (torch.sigmoid(logit) * c).clamp(min=MIN_BETA_PARAMETER)
    b = (torch.sigmoid(-logit) * c).clamp(min=MIN_BETA_PARAMETER)
    log_choose = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    log_beta = torch.lgamma(k + a) + torch.lgamma(n - k + b) - torch.lgamma(n + a + b)
    return log_choose + log_beta - (torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b))


class BetaBinomial(Distribution):
    """Elementwise beta-binomial: `trials` trials whose success probability is Beta(sigmoid(logit) c, sigmoid(-logit) c)."""

    arg_constraints: dict = {}
    support = constraints.nonnegative_integer

    def __init__(self, trials: Tensor, logit: Tensor, concentration: Tensor) -> None:
        self.trials, self.logit, self.concentration = torch.broadcast_tensors(
            trials.to(logit.dtype), logit, concentration.to(logit.dtype)
        )
        super().__init__(self.logit.shape, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        k = torch.minimum(value.clamp(min=0), self.trials)  # a placeholder outside the range stays finite
        return beta_binomial_log_prob(k, self.trials, self.logit, self.concentration).to(self.logit.dtype)

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.logit) * self.trials

    def sample(self, sample_shape: _size = torch.Size()) -> Tensor:
        with torch.no_grad():
            mean = torch.sigmoid(self.logit).double().clamp(1e-6, 1 - 1e-6)
            c = self.concentration.double()
            p = Beta(mean * c, (1 - mean) * c).sample(sample_shape)
            return Binomial(self.trials.double().expand_as(p), probs=p).sample().to(self.logit.dtype)


class BetaBinomialLikelihood(Likelihood):
    """Bounded integer scores: value - low on `trials` = high - low trials, the concentration learned per feature."""

    name = "beta_binomial"
    deviance_name = "Poisson deviance"

    def deviance(self, x: Tensor, mean: Tensor) -> Tensor:
        return poisson_deviance(x, mean)

    #: Each feature's number of trials, high - low (a buffer: it moves with the module).
    trials: Tensor

    def __init__(self, shape: tuple[int, ...], trials: list[int]) -> None:
        super().__init__(shape)
        self.register_buffer("trials", torch.tensor([float(t) for t in trials]), persistent=False)
        self.raw_concentration = nn.Parameter(torch.full(self.shape, _inverse_softplus(START_CONCENTRATION)))

    def concentration(self) -> Tensor:
        return F.softplus(self.raw_concentration) + 1e-4

    def encoder_input(self, values: Tensor) -> Tensor:
        """A score as a fraction of its range."""
        return values / self.trials.to(values.dtype)

    def forward(self, params: Tensor) -> Distribution:
        return self._independent(BetaBinomial(self.trials, full_precision(params[:, 0]), self.concentration()))


#: The observation model of each numeric column family, for a group of such columns of shape (n,): the modalities'
#: own likelihoods (a table's Gaussian columns learn their scales as a Gaussian modality's features do, ...).
NUMERIC_FAMILIES = {
    "gaussian": GaussianLikelihood,
    "bernoulli": BernoulliLikelihood,
    "poisson": PoissonLikelihood,
    "negative_binomial": NegativeBinomialLikelihood,
    "beta_binomial": BetaBinomialLikelihood,
}


class TableDistribution(Distribution):
    """p(row | z) of a table modality: independent columns given z (see the module docstring), each group of numeric
    columns of one family scored, averaged and drawn by that family's own distribution, each categorical column by a
    one-hot categorical. Batch shape: the decoder's rows; event shape: the row's positions."""

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, likelihood: "TableLikelihood", params: Tensor) -> None:
        self.law = likelihood
        self.params = params
        super().__init__(params.shape[:-1], params.shape[-1:], validate_args=False)

    def _numeric(self, params: Tensor):
        """(positions, elementwise distribution of those positions) of each numeric family."""
        return [
            (index, part(params.index_select(-1, index).unsqueeze(-2)).base_dist)
            for index, part in self.law.numeric_parts()
        ]

    def _categorical(self, params: Tensor):
        """(positions, one-hot categorical) of each categorical column."""
        return [
            (index, part(params.index_select(-1, index).unsqueeze(-2))) for index, part in self.law.categorical_parts()
        ]

    def _parts(self, params: Tensor):
        return self._numeric(params) + self._categorical(params)

    def log_prob(self, value: Tensor) -> Tensor:
        observed = ~torch.isnan(value)
        filled = torch.where(observed, value, torch.zeros((), dtype=value.dtype, device=value.device))
        # an empty cell's term is computed at parameter 0 and then dropped: no value it could take reaches a gradient
        params = torch.where(observed, self.params, torch.zeros((), dtype=self.params.dtype, device=self.params.device))
        terms = torch.zeros_like(params)
        for index, part in self._numeric(params):
            terms = terms.index_copy(-1, index, part.log_prob(filled.index_select(-1, index)).to(terms.dtype))
        for index, part in self._categorical(params):  # one term per column, at its first position (the others stay 0)
            terms = terms.index_copy(
                -1, index[:1], part.log_prob(filled.index_select(-1, index)).unsqueeze(-1).to(terms.dtype)
            )
        return torch.where(observed, terms, torch.zeros((), dtype=terms.dtype, device=terms.device)).sum(-1)

    @property
    def mean(self) -> Tensor:
        out = torch.empty_like(self.params)
        for index, part in self._parts(self.params):
            out = out.index_copy(-1, index, part.mean.to(out.dtype))
        return out

    def sample(self, sample_shape: _size = torch.Size()) -> Tensor:
        with torch.no_grad():
            out = torch.empty(*sample_shape, *self.params.shape, dtype=self.params.dtype, device=self.params.device)
            for index, part in self._parts(self.params):
                out = out.index_copy(-1, index, part.sample(sample_shape).to(out.dtype))
        return out


class TableLikelihood(Likelihood):
    """One likelihood per column of a table modality (module docstring): the numeric columns of each family share
    that family's likelihood module (`NUMERIC_FAMILIES`: the Gaussian columns' scales, the negative-binomial columns'
    inverse dispersions and the bounded scores' concentrations learned per column), each categorical column has its
    own `CategoricalLikelihood`."""

    name = "table"
    #: Buffers: each column's first position, and each position's column.
    first_positions: Tensor
    position_columns: Tensor

    def __init__(self, columns: tuple[Column, ...] | list[Column]) -> None:
        self.columns = tuple(columns)
        spans = positions(self.columns)
        super().__init__((sum(width for _, width in spans),))
        self.families = nn.ModuleDict()
        for family, cls in NUMERIC_FAMILIES.items():
            chosen = [(start, column) for (start, _), column in zip(spans, self.columns) if column.family == family]
            if chosen:
                self.register_buffer(
                    f"{family}_positions",
                    torch.tensor([start for start, _ in chosen], dtype=torch.long),
                    persistent=False,
                )
                extra = {"trials": [column.trials for _, column in chosen]} if family == "beta_binomial" else {}
                self.families[family] = cls((len(chosen),), **extra)
        blocks = [
            (start, width) for (start, width), column in zip(spans, self.columns) if column.family == "categorical"
        ]
        for c, (start, width) in enumerate(blocks):
            self.register_buffer(f"categorical_{c}_positions", torch.arange(start, start + width), persistent=False)
        self.categories = nn.ModuleList([CategoricalLikelihood((width,)) for _, width in blocks])
        self.register_buffer(
            "first_positions", torch.tensor([start for start, _ in spans], dtype=torch.long), persistent=False
        )
        column_of = [c for c, (_, width) in enumerate(spans) for _ in range(width)]
        self.register_buffer("position_columns", torch.tensor(column_of, dtype=torch.long), persistent=False)
        #: in training, each filled cell is hidden from the encoder (read as empty) with this probability while the
        #: likelihood still scores it, so that the encoder learns what an empty cell means and the decoder to fill a cell
        #: from the rest of the row (`--cell-dropout`; docs/results.md section 13 measures it)
        self.cell_dropout = CELL_DROPOUT

    def numeric_parts(self):
        """(positions, likelihood module) of each numeric family the table has."""
        return [(getattr(self, f"{family}_positions"), part) for family, part in self.families.items()]

    def categorical_parts(self):
        """(positions, likelihood module) of each categorical column."""
        return [(getattr(self, f"categorical_{c}_positions"), part) for c, part in enumerate(self.categories)]

    @property
    def encoder_shape(self) -> tuple[int, ...]:
        """Observed values, then one indicator per column."""
        return (self.shape[0] + len(self.columns),)

    def encoder_input(self, values: Tensor) -> Tensor:
        observed = ~torch.isnan(values)
        if (
            self.training and self.cell_dropout > 0
        ):  # whole cells (a categorical column's positions together), CELL_DROPOUT
            hidden = torch.rand(values.shape[0], len(self.columns), device=values.device) < self.cell_dropout
            observed = observed & ~hidden.index_select(1, self.position_columns)
        x = torch.where(observed, values, torch.zeros((), dtype=values.dtype, device=values.device))
        for (
            index,
            part,
        ) in self.numeric_parts():  # each family's cells as its modalities' encoders read them (counts as log(1 + x))
            x = x.index_copy(-1, index, part.encoder_input(x.index_select(-1, index)))
        return torch.cat([x, observed.index_select(-1, self.first_positions).to(x.dtype)], dim=-1)

    def forward(self, params: Tensor) -> Distribution:
        return TableDistribution(self, full_precision(params[:, 0]))

    @property
    def deviance_name(self) -> str:
        names = sorted({part.deviance_name for _, part in self.numeric_parts() + self.categorical_parts()})
        return "per column: " + ", ".join(names)

    def deviance(self, x: Tensor, mean: Tensor) -> Tensor:
        """Each position's deviance by its column's family (NaN where the cell is empty)."""
        out = torch.full(x.shape, float("nan"), dtype=torch.float64, device=x.device)
        for index, part in self.numeric_parts() + self.categorical_parts():
            out = out.index_copy(-1, index, part.deviance(x.index_select(-1, index), mean.index_select(-1, index)))
        return torch.where(torch.isnan(x), torch.full_like(out, float("nan")), out)
