"""The observation model of a table modality: one likelihood per column (`infinimodal.columns`), empty cells masked.

A row of a table modality holds one position per numeric column and C one-hot positions per categorical column;
an empty cell is NaN in its column's positions. `TableLikelihood` turns the decoder's output (one number per
position) into a `TableDistribution` whose `log_prob` is the sum of the observed cells' terms (an empty cell adds
nothing and passes no gradient), whose `mean` is each column's expectation (Gaussian mean, Bernoulli probability,
count mean, the score's mean, class probabilities) and whose `sample` draws every cell. The encoder reads the
observed values (counts as log(1 + x), scores as a fraction of their range, empty cells as 0) followed by one
indicator per column saying whether its cell is observed, so an empty cell is never read as a value. In training a
share CELL_DROPOUT of the filled cells is hidden from the encoder (the likelihood still scores them), so that empty
cells are something the encoder has seen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Beta, Binomial, Distribution, NegativeBinomial, constraints

from .columns import Column, positions
from .likelihoods import MAX_LOG_RATE, MIN_SCALE, Likelihood
from .nets import full_precision
from .options import CELL_DROPOUT

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


class TableDistribution(Distribution):
    """p(row | z) of a table modality: independent columns given z (see the module docstring). Batch shape: the
    decoder's rows; event shape: the row's positions."""

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, likelihood: "TableLikelihood", params: Tensor) -> None:
        self.law = likelihood
        self.params = params
        super().__init__(params.shape[:-1], params.shape[-1:], validate_args=False)

    def _take(self, values: Tensor, name: str) -> Tensor:
        return values.index_select(-1, getattr(self.law, f"{name}_positions"))

    def log_prob(self, value: Tensor) -> Tensor:
        law = self.law
        observed = ~torch.isnan(value)
        zero = torch.zeros((), dtype=value.dtype, device=value.device)
        filled = torch.where(observed, value, zero)
        # an empty cell's term is computed at parameter 0 and then dropped: no value it could take reaches a gradient
        params = torch.where(observed, self.params, torch.zeros((), dtype=self.params.dtype, device=self.params.device))
        terms = torch.zeros_like(params)
        parts = {}
        if law.gaussian_positions.numel():
            x, loc, scale = self._take(filled, "gaussian"), self._take(params, "gaussian"), law.gaussian_scale()
            parts["gaussian"] = -0.5 * ((x - loc) / scale).square() - torch.log(scale) - 0.5 * math.log(2 * math.pi)
        if law.bernoulli_positions.numel():
            logit = self._take(params, "bernoulli")
            parts["bernoulli"] = -F.binary_cross_entropy_with_logits(logit, self._take(filled, "bernoulli"), reduction="none")
        if law.poisson_positions.numel():
            x, log_rate = self._take(filled, "poisson"), self._take(params, "poisson").clamp(-MAX_LOG_RATE, MAX_LOG_RATE)
            parts["poisson"] = x * log_rate - torch.exp(log_rate) - torch.lgamma(x + 1)
        if law.negative_binomial_positions.numel():
            log_mean = self._take(params, "negative_binomial").clamp(-MAX_LOG_RATE, MAX_LOG_RATE)
            r = law.inverse_dispersion()
            counts = NegativeBinomial(total_count=r, logits=log_mean - torch.log(r), validate_args=False)
            parts["negative_binomial"] = counts.log_prob(self._take(filled, "negative_binomial"))
        if law.beta_binomial_positions.numel():
            k = self._take(filled, "beta_binomial").clamp(min=0)
            k = torch.minimum(k, law.trials.to(k.dtype))
            parts["beta_binomial"] = beta_binomial_log_prob(k, law.trials, self._take(params, "beta_binomial"), law.concentration()).to(params.dtype)
        for family, part in parts.items():
            terms = terms.index_copy(-1, getattr(law, f"{family}_positions"), part.to(terms.dtype))
        for start, width in law.categorical_blocks:
            logits = params[..., start : start + width]
            block = torch.log_softmax(logits, dim=-1) * filled[..., start : start + width]
            terms = terms.index_copy(-1, torch.tensor([start], device=terms.device), block.sum(-1, keepdim=True).to(terms.dtype))
        return torch.where(observed, terms, torch.zeros((), dtype=terms.dtype, device=terms.device)).sum(-1)

    @property
    def mean(self) -> Tensor:
        law, params = self.law, self.params
        out = torch.empty_like(params)
        if law.gaussian_positions.numel():
            out[..., law.gaussian_positions] = self._take(params, "gaussian")
        if law.bernoulli_positions.numel():
            out[..., law.bernoulli_positions] = torch.sigmoid(self._take(params, "bernoulli"))
        for family in ("poisson", "negative_binomial"):
            if getattr(law, f"{family}_positions").numel():
                out[..., getattr(law, f"{family}_positions")] = torch.exp(self._take(params, family).clamp(-MAX_LOG_RATE, MAX_LOG_RATE))
        if law.beta_binomial_positions.numel():
            out[..., law.beta_binomial_positions] = torch.sigmoid(self._take(params, "beta_binomial")) * law.trials.to(params.dtype)
        for start, width in law.categorical_blocks:
            out[..., start : start + width] = torch.softmax(params[..., start : start + width], dim=-1)
        return out

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        if len(sample_shape):
            return torch.stack([self.sample() for _ in range(math.prod(sample_shape))]).view(*sample_shape, *self.params.shape)
        law, params = self.law, self.params
        with torch.no_grad():
            out = torch.empty_like(params)
            if law.gaussian_positions.numel():
                loc = self._take(params, "gaussian")
                out[..., law.gaussian_positions] = loc + law.gaussian_scale() * torch.randn_like(loc)
            if law.bernoulli_positions.numel():
                out[..., law.bernoulli_positions] = torch.bernoulli(torch.sigmoid(self._take(params, "bernoulli")))
            if law.poisson_positions.numel():
                out[..., law.poisson_positions] = torch.poisson(torch.exp(self._take(params, "poisson").clamp(-MAX_LOG_RATE, MAX_LOG_RATE)))
            if law.negative_binomial_positions.numel():
                log_mean = self._take(params, "negative_binomial").clamp(-MAX_LOG_RATE, MAX_LOG_RATE)
                r = law.inverse_dispersion()
                out[..., law.negative_binomial_positions] = NegativeBinomial(total_count=r, logits=log_mean - torch.log(r), validate_args=False).sample()
            if law.beta_binomial_positions.numel():
                mean = torch.sigmoid(self._take(params, "beta_binomial")).double().clamp(1e-6, 1 - 1e-6)
                c = law.concentration().double()
                p = Beta(mean * c, (1 - mean) * c).sample()
                out[..., law.beta_binomial_positions] = Binomial(law.trials.double().expand_as(p), probs=p).sample().to(params.dtype)
            for start, width in law.categorical_blocks:
                drawn = torch.distributions.Categorical(logits=params[..., start : start + width]).sample()
                out[..., start : start + width] = F.one_hot(drawn, width).to(params.dtype)
        return out


class TableLikelihood(Likelihood):
    """One likelihood per column of a table modality (module docstring); learned per column: the Gaussian columns'
    scales, the negative-binomial columns' inverse dispersions, the bounded scores' concentrations."""

    name = "table"

    def __init__(self, columns: tuple[Column, ...] | list[Column]) -> None:
        self.columns = tuple(columns)
        spans = positions(self.columns)
        super().__init__((sum(width for _, width in spans),))
        for family in ("gaussian", "bernoulli", "poisson", "negative_binomial", "beta_binomial"):
            chosen = [start for (start, _), column in zip(spans, self.columns) if column.family == family]
            self.register_buffer(f"{family}_positions", torch.tensor(chosen, dtype=torch.long), persistent=False)
        self.categorical_blocks = [span for span, column in zip(spans, self.columns) if column.family == "categorical"]
        self.register_buffer("first_positions", torch.tensor([start for start, _ in spans], dtype=torch.long), persistent=False)
        column_of = [c for c, (_, width) in enumerate(spans) for _ in range(width)]
        self.register_buffer("position_columns", torch.tensor(column_of, dtype=torch.long), persistent=False)
        #: in training, each filled cell is hidden from the encoder (read as empty) with this probability while the
        #: likelihood still scores it, so that the encoder learns what an empty cell means and the decoder to fill a cell
        #: from the rest of the row (`--cell-dropout`; docs/results.md section 13 measures it)
        self.cell_dropout = CELL_DROPOUT
        bounded = [column for column in self.columns if column.family == "beta_binomial"]
        self.register_buffer("trials", torch.tensor([float(c.trials) for c in bounded]), persistent=False)
        self.raw_scale = nn.Parameter(torch.full((len(self.gaussian_positions),), _inverse_softplus(1.0)))
        self.raw_inverse_dispersion = nn.Parameter(torch.full((len(self.negative_binomial_positions),), _inverse_softplus(START_CONCENTRATION)))
        self.raw_concentration = nn.Parameter(torch.full((len(bounded),), _inverse_softplus(START_CONCENTRATION)))

    def gaussian_scale(self) -> Tensor:
        return F.softplus(self.raw_scale) + MIN_SCALE

    def inverse_dispersion(self) -> Tensor:
        return F.softplus(self.raw_inverse_dispersion) + 1e-4

    def concentration(self) -> Tensor:
        return F.softplus(self.raw_concentration) + 1e-4

    @property
    def encoder_shape(self) -> tuple[int, ...]:
        """Observed values, then one indicator per column."""
        return (self.shape[0] + len(self.columns),)

    def encoder_input(self, values: Tensor) -> Tensor:
        observed = ~torch.isnan(values)
        if self.training and self.cell_dropout > 0:  # whole cells (a categorical column's positions together), CELL_DROPOUT
            hidden = torch.rand(values.shape[0], len(self.columns), device=values.device) < self.cell_dropout
            observed = observed & ~hidden.index_select(1, self.position_columns)
        x = torch.where(observed, values, torch.zeros((), dtype=values.dtype, device=values.device))
        if self.poisson_positions.numel() or self.negative_binomial_positions.numel():
            counts = torch.cat([self.poisson_positions, self.negative_binomial_positions])
            x = x.index_copy(-1, counts, torch.log1p(x.index_select(-1, counts).clamp(min=0)))
        if self.beta_binomial_positions.numel():
            x = x.index_copy(-1, self.beta_binomial_positions, x.index_select(-1, self.beta_binomial_positions) / self.trials.to(x.dtype))
        return torch.cat([x, observed.index_select(-1, self.first_positions).to(x.dtype)], dim=-1)

    def forward(self, params: Tensor) -> Distribution:
        return TableDistribution(self, full_precision(params[:, 0]))
