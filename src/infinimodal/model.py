"""The multimodal variational autoencoder as a plain `nn.Module`: encode -> aggregate -> decode -> loss.

It knows nothing of Lightning or files. Each modality has an encoder, a linear head that gives its
unimodal posterior through the latent family, a decoder and a likelihood. The latent family supplies
every latent distribution and the aggregator the objective; the loss is `kl_divergence` and `log_prob`.
A single-modality model is the M = 1 case (the SB-VAE of Nalisnick & Smyth 2017 with any family).

Missing modalities: `mask[b, m]` says whether modality m is observed for row b. Encoders only ever see
observed rows, likelihoods only ever score observed rows, and what the data tensors hold in the other
rows is never read.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from typing import Protocol, Sequence, cast

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, OneHotCategorical

from .aggregators import Aggregator
from .columns import COVARIATES
from .latents import LatentFamily
from .likelihoods import Likelihood
from .mixture import NO_FLOAT64_DEVICES, MixturePosterior
from .adam_state import births, moments, replace_parameter
from .modality import Modality
from .nets import default_decoder, default_encoder, full_precision
from .outputs import LossOutput

__all__ = ["COVARIATES", "MultimodalModule", "kept_random_streams"]


#: Posterior draws averaged with equal weights: class predictions (`evaluate`'s prediction errors, validation's
#: `val_<modality>_error`) and `impute --unweighted`.
IMPUTATION_SAMPLES = 20
#: Posterior draws of the importance-weighted conditional mean (`conditional_means(weighted=True)`), what `impute` and
#: `evaluate`'s imputation errors use: about 30-450 effective draws on the cohort (docs/results.md section 10).
WEIGHTED_IMPUTATION_SAMPLES = 1000


def imputation_draws(samples: int | None, weighted: bool) -> int:
    """The posterior draws a conditional mean takes: `samples` when given, else WEIGHTED_IMPUTATION_SAMPLES for the
    importance-weighted mean and IMPUTATION_SAMPLES for the encoders' plain average."""
    if samples is not None:
        return samples
    return WEIGHTED_IMPUTATION_SAMPLES if weighted else IMPUTATION_SAMPLES


#: Draws the weighted conditional mean decodes at once (its memory: this many times the rows' decoder outputs).
WEIGHTED_CHUNK = 100


@contextmanager
def kept_random_streams(device: torch.device):
    """Random draws inside leave the caller's streams as they were: the CPU's and, on a GPU, that device's.
    (`torch.manual_seed` seeds every device, while `fork_rng(devices=[])` restores the CPU's stream alone: seeding
    inside it would reset a GPU's stream for whatever the caller draws next.)"""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def row_seeds(data: dict[str, Tensor], mask: Tensor, seed: int) -> list[int]:
    """A seed per row from `seed`, the row's mask and its observed values (BLAKE2b of their bytes; `data` in the mask's
    column order): the same row gets the same seed wherever it stands in a call, whatever else is in it."""
    observed = mask.cpu().numpy()
    arrays = {name: value.detach().cpu().float().numpy() for name, value in data.items()}
    seeds = []
    for row in range(mask.shape[0]):
        digest = hashlib.blake2b(int(seed).to_bytes(8, "little", signed=True) + observed[row].tobytes(), digest_size=8)
        for m, name in enumerate(arrays):
            if observed[row, m]:
                digest.update(arrays[name][row].tobytes())
        seeds.append(int.from_bytes(digest.digest(), "little") & (2**63 - 1))
    return seeds


def others_observed(mask: Tensor, c: int) -> Tensor:
    """[B] bool: whether a modality other than c is observed in each row (what a term about c can condition on)."""
    return torch.cat([mask[:, :c], mask[:, c + 1 :]], dim=1).any(dim=1)


def select_rows(data: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """The rows `rows` (indices) of every modality's values."""
    return {name: values.index_select(0, rows) for name, values in data.items()}


def labelled_rows(mask: Tensor, c: int) -> Tensor:
    """Indices of the rows where modality c and another modality are observed (where predicting c can be scored)."""
    return (mask[:, c] & others_observed(mask, c)).nonzero().squeeze(-1)


def hidden_in_rows(data: dict[str, Tensor], mask: Tensor, c: int, rows: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """The values of the rows `rows` (indices), and their mask with modality c hidden: what predicting c reads."""
    given = mask.index_select(0, rows).clone()
    given[:, c] = False
    return select_rows(data, rows), given


class _ReadsCode(Protocol):
    """A decoder whose layer that reads the latent code is known (the default ones: `nets.Conditioned`)."""

    def input_layer(self) -> nn.Linear: ...


class MultimodalModule(nn.Module):
    """The model: per modality an encoder, a head that gives its expert q(z | x_m) through the latent family, a decoder
    and a likelihood; the aggregator joins the experts and defines the ELBO that `forward` returns. Missing modalities
    follow the mask (module docstring). What training adds to the ELBO (modality weights, semi-supervised terms) is
    not the model's: `infinimodal.semisupervised.TrainingObjective` composes it."""

    def __init__(
        self,
        modalities: Sequence[Modality],
        latent: LatentFamily,
        aggregator: Aggregator,
        hidden: Sequence[int] = (500,),
        covariates: int = 0,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("a model needs at least one modality")
        names = [m.name for m in modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden layer sizes must be positive, got {list(hidden)}")
        if COVARIATES in names:
            raise ValueError(f"{COVARIATES!r} is reserved for the covariates; rename that modality")
        self.modalities = list(modalities)
        self.names = names
        #: covariate values per row that every encoder head and decoder reads (0: an unconditional model)
        self.n_covariates = int(covariates)
        self.latent = latent
        self.aggregator = aggregator
        self.encoders = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        self.likelihoods = nn.ModuleDict()
        for modality in self.modalities:
            likelihood = modality.observation_model()
            encoder = (
                modality.encoder
                if modality.encoder is not None
                else default_encoder(likelihood.encoder_shape, hidden, likelihood.categorical)
            )
            if modality.decoder is not None and covariates:
                raise ValueError(
                    f"modality {modality.name!r}: a custom decoder cannot read covariates; use the default networks or no covariates"
                )
            decoder = (
                modality.decoder
                if modality.decoder is not None
                else default_decoder(
                    latent.decoder_input_size,
                    modality.shape,
                    hidden,
                    likelihood.n_params,
                    likelihood.categorical,
                    conditions=covariates,
                )
            )
            features = _check_networks(
                modality, encoder, decoder, latent.decoder_input_size, likelihood, covariates, latent.adaptive
            )
            key = _key(modality.name)
            self.encoders[key] = encoder
            self.heads[key] = nn.Linear(features + covariates, latent.head_size)
            self.decoders[key] = decoder
            self.likelihoods[key] = likelihood

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    # --- ordered dimensions ------------------------------------------------------------------------------

    def can_swap_dimensions(self) -> bool:
        """Whether `swap_dimensions` applies: a family with ordered dimensions, and decoders whose input layer is known
        (the default ones; a custom decoder is left as its author wrote it)."""
        return self.latent.orders_dimensions and all(
            hasattr(decoder, "input_layer") for decoder in self.decoders.values()
        )

    @torch.no_grad()
    def swap_dimensions(
        self, j: int, k: int, scales: tuple[float, float], optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Exchange what latent dimensions j and k carry, keeping what the decoders compute as far as a deterministic
        change can: every encoder head's rows of the two dimensions' exchangeable part are swapped (for the gated
        family, the experts; the sticks belong to the positions), and every decoder's input columns are swapped, the
        column that moves from k to j scaled by scales[0] and the one from j to k by scales[1]
        (`latent.exchange_scales`: what the decoder reads of an expert depends on its position's gate). Swapping back
        takes (1 / scales[1], 1 / scales[0]). Adam's moments move with their parameters (scaled as the gradient is)."""
        rows_j, rows_k = self.latent.value_head_rows(j), self.latent.value_head_rows(k)
        into_j, into_k = scales
        state = optimizer.state if optimizer is not None else {}
        for key in self.names:
            head = cast(nn.Linear, self.heads[_key(key)])  # built as a Linear in __init__
            for tensor in (
                head.weight,
                head.bias,
                *moments(state, head.weight),
                *moments(state, head.bias),
                *births(state, head.weight),
                *births(state, head.bias),
            ):
                _swap_rows(tensor, rows_j, rows_k)
            layer = cast(_ReadsCode, self.decoders[_key(key)]).input_layer()  # `can_swap_dimensions`
            _swap_columns(layer.weight, j, k, into_j, into_k)
            for born in births(state, layer.weight):
                _swap_columns(born, j, k, 1.0, 1.0)
            first, second = moments(state, layer.weight) or (None, None)
            if first is not None and second is not None:  # both or neither: Adam has stepped with the layer
                _swap_columns(first, j, k, 1.0 / into_j, 1.0 / into_k)
                _swap_columns(second, j, k, 1.0 / into_j**2, 1.0 / into_k**2)

    # --- adaptive truncation -----------------------------------------------------------------------------

    def can_resize_dimensions(self) -> bool:
        """Whether `resize_dimensions` applies: a family that can resize, and decoders whose input layer is known."""
        return self.latent.can_resize() and all(hasattr(decoder, "input_layer") for decoder in self.decoders.values())

    @torch.no_grad()
    def resize_dimensions(self, n: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make the latent n dimensions wide; the resized heads and decoder input layers are new parameters, which replace
        the old ones in `optimizer`'s parameter list and state.

        Growing keeps what the model computes: a new dimension's head rows have zero weights and the bias
        `latent.prior_head_output()`, so its posterior is the prior whatever the input (KL of order 1e-12), and every
        decoder's input column of it is zero, so the decoders ignore it; the stick-breaking weights of the dimensions
        before it do not depend on it. Trimming drops the last dimensions' rows and columns (train.callbacks.AdaptTruncation
        trims only dimensions that carry nothing). Adam's moments are resized with their parameters: kept entries keep
        theirs, new ones start at zero and record the step they were born at (`BORN`), so that `correct_young_entries`
        gives them Adam's bias correction for their own step count."""
        old = self.latent.n_dimensions
        if n == old:
            return
        keep = min(n, old)
        blocks = self.latent.n_params
        fill = self.latent.prior_head_output()
        for key in self.names:
            head = cast(nn.Linear, self.heads[_key(key)])  # built as a Linear in __init__
            replace_parameter(
                head, "weight", lambda t, moment: _resized_blocks(t, blocks, old, n, keep, 0.0), optimizer
            )
            replace_parameter(
                head,
                "bias",
                lambda t, moment: _resized_blocks(t, blocks, old, n, keep, 0.0 if moment else fill),
                optimizer,
            )
            head.out_features = blocks * n
            layer = cast(_ReadsCode, self.decoders[_key(key)]).input_layer()  # `can_resize_dimensions`
            replace_parameter(layer, "weight", lambda t, moment: _resized_columns(t, n, keep), optimizer)
            layer.in_features = n
        self.latent.resize(n)

    def dimensions_in(self, state: dict[str, Tensor]) -> int | None:
        """The latent dimensions of a state dict of this model's weights (keys without a prefix), from its first head."""
        bias = state.get(f"heads.{_key(self.names[0])}.bias")
        return None if bias is None else bias.shape[0] // self.latent.n_params

    def match_dimensions(self, state: dict[str, Tensor]) -> None:
        """An adaptive latent (truncation auto) takes the number of dimensions of the weights `state` holds."""
        n = self.dimensions_in(state)
        if self.latent.adaptive and n is not None and n >= 1 and n != self.latent.n_dimensions:
            self.resize_dimensions(n)

    def likelihood(self, name: str) -> Likelihood:
        """The likelihood module of modality `name`."""
        return cast(Likelihood, self.likelihoods[_key(name)])  # built from `Modality.observation_model`

    # --- encoding ------------------------------------------------------------------------------------

    def encoder_features(self, name: str, values: Tensor, shift: Tensor | None = None) -> Tensor:
        """The encoder's features of observed values of modality `name`, read as its likelihood says
        (counts as log(1 + x), everything else as given); `shift` is added to what the encoder reads (a
        perturbation, `infinimodal.semisupervised.smoothness_term`)."""
        key = _key(name)
        inputs = cast(Likelihood, self.likelihoods[key]).encoder_input(values)
        return self.encoders[key](inputs if shift is None else inputs + shift)

    def unimodal_posteriors(
        self, data: dict[str, Tensor], mask: Tensor, shifts: dict[str, Tensor] | None = None
    ) -> Distribution:
        """q(z | x_m) for every modality, batch shape [batch, M, latent_size].

        Rows where a modality is missing get the head output 0 (a finite placeholder that every
        aggregator ignores through the mask); its encoder never runs on them. `shifts`: {modality: [batch, ...]}
        added to what that modality's encoder reads (`encoder_features`).
        """
        batch = mask.shape[0]
        shifts = shifts or {}
        covariates = self.covariates_of(data)
        raws = []
        for m, name in enumerate(self.names):
            observed = mask[:, m]
            shift = shifts.get(name)
            head = cast(nn.Linear, self.heads[_key(name)])  # built as a Linear in __init__
            if bool(observed.all()):
                raws.append(
                    full_precision(
                        head(self._with_covariates(self.encoder_features(name, data[name], shift), covariates))
                    )
                )
                continue
            rows = observed.nonzero().squeeze(-1)
            raw = torch.zeros(batch, self.latent.head_size, device=mask.device, dtype=head.weight.dtype)
            if len(rows):
                shift = None if shift is None else shift.index_select(0, rows)
                features = self.encoder_features(name, data[name].index_select(0, rows), shift)
                out = full_precision(
                    head(
                        self._with_covariates(
                            features, None if covariates is None else covariates.index_select(0, rows)
                        )
                    )
                )
                raw = raw.index_copy(0, rows, out)
            raws.append(raw)
        return self.latent.posterior(torch.stack(raws, dim=1))

    def covariates_of(self, data: dict[str, Tensor]) -> Tensor | None:
        """The rows' covariates (`COVARIATES` in `data`), for a conditional model; None for an unconditional one."""
        if not self.n_covariates:
            return None
        covariates = data.get(COVARIATES)
        if covariates is None or covariates.shape[-1] != self.n_covariates:
            found = "none" if covariates is None else f"{covariates.shape[-1]} per row"
            raise ValueError(
                f"this model is conditioned on {self.n_covariates} covariate values per row; the data give {found}"
            )
        return covariates

    def _with_covariates(self, features: Tensor, covariates: Tensor | None) -> Tensor:
        return features if covariates is None else torch.cat([features, covariates.to(features.dtype)], dim=-1)

    def posterior(self, data: dict[str, Tensor], mask: Tensor) -> MixturePosterior:
        """q(z | the modalities observed in `mask`), as the aggregator defines it."""
        return self.aggregator.posterior(self, self.unimodal_posteriors(data, mask), mask)

    def conditional_posterior(
        self, data: dict[str, Tensor], mask: Tensor, shifts: dict[str, Tensor] | None = None
    ) -> MixturePosterior:
        """q(z | X_S) for the observed set S itself, what imputation and deviation scores condition on: where the
        aggregator fuses experts (PoE, MoPoE), the product of the observed experts, the posterior trained to explain
        every modality from exactly S (MoPoE's own posterior mixes it with its sub-subsets' broader ones); where it
        mixes them (MoE), its own mixture. `shifts`: perturbations of the encoders' inputs (`unimodal_posteriors`)."""
        experts = self.unimodal_posteriors(data, mask, shifts)
        if not self.aggregator.fuses:
            return self.aggregator.posterior(self, experts, mask)
        fused = self.latent.fuse(experts, mask.unsqueeze(1))
        return MixturePosterior(fused, torch.ones(mask.shape[0], 1, device=mask.device))

    @torch.no_grad()
    def conditional_means(
        self,
        data: dict[str, Tensor],
        mask: Tensor,
        samples: int = IMPUTATION_SAMPLES,
        seed: int = 0,
        by_row: bool = False,
        decode_at: Tensor | None = None,
        weighted: bool = False,
    ) -> dict[str, Tensor]:
        """E[x_m | the observed modalities] for every modality from `samples` draws z_s of `conditional_posterior` (the
        draws seeded, so the same rows give the same answer; `by_row`: each row's own, whatever else is in the call,
        `conditional_draws`):
        - `weighted`: the model's own conditional mean, sum_s w_s E[x_m | z_s] with self-normalised importance weights
          w_s ∝ p(X_S | z_s) p(z_s) / q(z_s | X_S), which converges to E_p(z | X_S)[E[x_m | z]] as the draws grow,
          whatever the encoders' error (`weighted_means`);
        - otherwise the encoders' approximation, (1 / samples) sum_s E[x_m | z_s] (z from q, not from p(z | X_S)).
        samples = 0 decodes at the posterior's mean instead, unweighted (a plug-in: E[x | E[z]] is not E[x] when the
        decoder is nonlinear). `decode_at`: covariates [rows, K] to decode at instead of the rows' own (the encoders and
        the weights read their own): each subject as if measured at other covariates."""
        covariates = self.covariates_of(data) if decode_at is None else decode_at
        if samples == 0:
            return self.decode_mean(self.conditional_posterior(data, mask).mean, covariates)
        draws = self.conditional_draws(data, mask, samples, seed, by_row)
        if weighted:
            return self.weighted_means(draws, data, mask, decode_at)
        means = self.decode_mean(draws.flatten(0, 1), repeat_rows(covariates, samples))
        return {name: value.view(samples, mask.shape[0], *value.shape[1:]).mean(0) for name, value in means.items()}

    @torch.no_grad()
    def weighted_means(
        self, z: Tensor, data: dict[str, Tensor], mask: Tensor, decode_at: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Self-normalised importance sampling of E[x_m | X_S] for every modality m from draws z [S, rows, latent] of
        `conditional_posterior` (the proposal): log w_s = sum_{m in S} log p(x_m | z_s) + log p(z_s) - log q(z_s | X_S),
        normalised over s per row, then sum_s w_s E[x_m | z_s] (decoded at `decode_at`, else at the rows' own
        covariates). The draws are decoded WEIGHTED_CHUNK at a time and combined by a running log-sum-exp in float64
        (float32 on `NO_FLOAT64_DEVICES`), so memory does not grow with S; each decoder runs once per draw for both its
        likelihood term and its mean (`log_likelihoods` would run the observed ones a second time)."""
        wide = torch.float32 if z.device.type in NO_FLOAT64_DEVICES else torch.float64
        q = self.conditional_posterior(data, mask)
        log_proposal = (self.latent.log_prior(z) - q.log_prob(z)).to(wide)  # [S, rows]
        own = self.covariates_of(data)
        rows = mask.shape[0]
        peak = torch.full((rows,), -math.inf, dtype=wide, device=z.device)
        total = torch.zeros(rows, dtype=wide, device=z.device)
        sums: dict[str, Tensor] = {}
        start = 0
        for chunk in z.split(WEIGHTED_CHUNK):
            count = chunk.shape[0]
            log_w, means = self._weighted_chunk(chunk, data, mask, own, decode_at, wide)
            log_w = torch.nan_to_num(log_w + log_proposal[start : start + count], nan=-math.inf)
            start += count
            new_peak = torch.maximum(peak, log_w.max(0).values)
            shift = torch.exp(peak - new_peak).nan_to_num(0.0)  # exp(-inf - -inf): nothing was summed yet
            w = torch.exp(log_w - new_peak)  # [count, rows]
            total = total * shift + w.sum(0)
            for name, value in means.items():
                # a draw of weight 0 adds nothing, even where its decoded mean is NaN
                counted = (w > 0).view(*w.shape, *[1] * (value.dim() - 2))
                weighted = torch.einsum("sr,sr...->r...", w, torch.where(counted, value.to(wide), 0.0))
                sums[name] = weighted if name not in sums else sums[name] * _widen(shift, value.dim() - 2) + weighted
            peak = new_peak
        if not bool(torch.isfinite(peak).all()):
            bad = torch.nonzero(~torch.isfinite(peak)).flatten().tolist()
            raise ValueError(
                f"rows {bad[:10]}: no draw has a finite importance weight (the observed values' likelihood)"
            )
        return {name: (value / _widen(total, value.dim() - 1)).to(z.dtype) for name, value in sums.items()}

    def _weighted_chunk(
        self,
        z: Tensor,
        data: dict[str, Tensor],
        mask: Tensor,
        own: Tensor | None,
        decode_at: Tensor | None,
        wide: torch.dtype = torch.float64,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """For draws z [c, rows, latent]: sum over the observed modalities of log p(x_m | z) [c, rows], and E[x_m | z]
        [c, rows, ...] for every modality (at `decode_at` when given)."""
        count, rows = z.shape[:2]
        code = self.latent.decoder_input(z.flatten(0, 1))
        at_own = repeat_rows(own, count)
        at = at_own if decode_at is None else repeat_rows(decode_at, count)
        log_lik = torch.zeros(count * rows, dtype=wide, device=z.device)
        means = {}
        for m, name in enumerate(self.names):
            params = self._decoded_parameters(name, code, at_own)
            observed = torch.nonzero(mask[:, m].repeat(count)).flatten()  # only observed values are scored
            if len(observed):
                x = data[name].repeat(count, *[1] * (data[name].dim() - 1)).index_select(0, observed)
                term = self.likelihood(name)(params.index_select(0, observed)).log_prob(x)
                log_lik.index_add_(0, observed, term.to(wide))
            mean = (self.likelihood(name)(params) if decode_at is None else self._observation(name, code, at)).mean
            means[name] = mean.view(count, rows, *mean.shape[1:])
        return log_lik.view(count, rows), means

    def conditional_draws(
        self, data: dict[str, Tensor], mask: Tensor, samples: int, seed: int, by_row: bool = False
    ) -> Tensor:
        """[samples, rows, latent] draws from `conditional_posterior`, seeded by `seed`, the caller's random streams
        left as they were. Seeded once for the batch, a row's draws depend on its position and on the rows beside it
        (a deviation score moved by up to 0.65 SD with the other rows of a call); `by_row` seeds each row by its own
        values and mask (`row_seeds`) and draws it alone, so a subject gets the same draws alone or in any batch (an
        encoder pass per row: for inference, not training)."""
        with kept_random_streams(mask.device):
            if not by_row:
                q = self.conditional_posterior(data, mask)
                torch.manual_seed(seed)
                return self.latent.rsample(q, samples)
            return torch.cat(
                [
                    self.latent.rsample(self.conditional_posterior(alone, row_mask), samples)
                    for alone, row_mask in self.rows_alone(data, mask, seed)
                ],
                dim=1,
            )

    def rows_alone(self, data: dict[str, Tensor], mask: Tensor, seed: int):
        """Each row's values and mask on their own, with torch's stream seeded by the row (`row_seeds`) before it is
        yielded: what is drawn for a row depends on that row and `seed` alone (the caller keeps its streams)."""
        for row, row_seed in enumerate(row_seeds({name: data[name] for name in self.names}, mask, seed)):
            torch.manual_seed(row_seed)
            yield {name: value[row : row + 1] for name, value in data.items()}, mask[row : row + 1]

    @torch.no_grad()
    def predictive_draws(self, data: dict[str, Tensor], mask: Tensor, draws: int, seed: int = 0) -> dict[str, Tensor]:
        """[draws, rows, ...] per modality: x_m ~ p(x_m | z), z ~ `conditional_posterior` (multiple imputation), each
        row drawn alone from its own seed (`row_seeds`), so a subject gets the same draws alone or in any batch."""
        out: dict[str, list[Tensor]] = {name: [] for name in self.names}
        with kept_random_streams(mask.device):
            for alone, row_mask in self.rows_alone(data, mask, seed):
                z = self.latent.rsample(self.conditional_posterior(alone, row_mask), draws).flatten(0, 1)
                covariates = repeat_rows(self.covariates_of(alone), draws)
                for name in self.names:
                    out[name].append(self.observation(name, z, covariates).sample())
        return {name: torch.stack(values, dim=1) for name, values in out.items()}

    @torch.no_grad()
    def class_probabilities(
        self, name: str, data: dict[str, Tensor], mask: Tensor, samples: int = IMPUTATION_SAMPLES, seed: int = 0
    ) -> Tensor:
        """E[x_name | the observed modalities] [rows, C] for a categorical modality: its imputed class probabilities,
        what `conditional_means(...)[name]` gives with the same draws, decoding that modality alone (its decoder is
        small; the others' need not run)."""
        covariates = self.covariates_of(data)
        if samples == 0:
            return torch.softmax(
                self.class_logits(name, self.conditional_posterior(data, mask).mean, covariates), dim=-1
            )
        draws = self.conditional_draws(data, mask, samples, seed).flatten(0, 1)
        probabilities = torch.softmax(self.class_logits(name, draws, repeat_rows(covariates, samples)), dim=-1)
        return probabilities.view(samples, mask.shape[0], -1).mean(0)

    @torch.no_grad()
    def class_errors(
        self, data: dict[str, Tensor], mask: Tensor, samples: int = IMPUTATION_SAMPLES
    ) -> dict[str, tuple[Tensor, int]]:
        """For each categorical modality c of a model with others: (the error rate of its imputation, rows scored) on
        the rows where c and another modality are observed, c hidden: the argmax of `class_probabilities` from the
        others against c's own value. What validation reports each epoch (`val_<c>_error`); modalities with no such
        row are left out."""
        errors: dict[str, tuple[Tensor, int]] = {}
        if self.n_modalities < 2:
            return errors
        for c, name in enumerate(self.names):
            if not self.likelihood(name).categorical:
                continue
            rows = labelled_rows(mask, c)
            if not len(rows):
                continue
            chosen, given = hidden_in_rows(data, mask, c, rows)
            predicted = self.class_probabilities(name, chosen, given, samples).argmax(dim=-1)
            errors[name] = ((predicted != chosen[name].argmax(dim=-1)).float().mean(), len(rows))
        return errors

    # --- decoding ------------------------------------------------------------------------------------

    def observation(self, name: str, z: Tensor, covariates: Tensor | None = None) -> Distribution:
        """p(x_name | z, covariates) for latent samples z of shape [n, latent_size] (covariates [n, K]: a conditional model's)."""
        return self._observation(name, self.latent.decoder_input(z), covariates)

    def _observation(self, name: str, code: Tensor, covariates: Tensor | None = None) -> Distribution:
        return self.likelihood(name)(self._decoded_parameters(name, code, covariates))

    def _decoded_parameters(self, name: str, code: Tensor, covariates: Tensor | None = None) -> Tensor:
        """The likelihood parameters [n, n_params, *shape] modality `name`'s decoder gives for the codes [n, d]."""
        likelihood = self.likelihood(name)
        decoder = self.decoders[_key(name)]
        params = decoder(code, covariates) if self.n_covariates else decoder(code)
        return params.reshape(code.shape[0], likelihood.n_params, *likelihood.shape)

    def log_likelihoods(self, z: Tensor, data: dict[str, Tensor], select: Tensor, rows: Tensor | None = None) -> Tensor:
        """log p(x_m[rows[r]] | z[r]) for every r and modality m with select[r, m], 0 elsewhere: [R, M].

        z: [R, latent_size]; rows: the data row each z belongs to (default: r itself); select: [R, M] bool.
        Decoders run only on the selected rows.
        """
        code = self.latent.decoder_input(z)
        covariates = self.covariates_of(data)
        if covariates is not None and rows is not None:
            covariates = covariates.index_select(0, rows)
        columns = []
        for m, name in enumerate(self.names):
            chosen = select[:, m]
            x = data[name] if rows is None else data[name].index_select(0, rows)
            if bool(chosen.all()):
                columns.append(self._log_prob(name, code, x, covariates))
                continue
            idx = chosen.nonzero().squeeze(-1)
            column = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
            if len(idx):
                given = None if covariates is None else covariates.index_select(0, idx)
                column = column.index_copy(
                    0, idx, self._log_prob(name, code.index_select(0, idx), x.index_select(0, idx), given).to(z.dtype)
                )
            columns.append(column)
        return torch.stack(columns, dim=-1)

    def _log_prob(self, name: str, code: Tensor, x: Tensor, covariates: Tensor | None = None) -> Tensor:
        return self._observation(name, code, covariates).log_prob(x)

    def decode_mean(self, z: Tensor, covariates: Tensor | None = None) -> dict[str, Tensor]:
        """E[x_m | z] for every modality (Bernoulli probabilities, Gaussian means, Poisson rates, ...); a conditional
        model's `covariates` [n, K] are those the rows are decoded at."""
        return self.decode_code_mean(self.latent.decoder_input(z), covariates)

    def decode_code_mean(self, code: Tensor, covariates: Tensor | None = None) -> dict[str, Tensor]:
        """E[x_m | code] for every modality, from what the decoders read (`LatentFamily.decoder_input`) rather than z:
        what `explain` moves one coordinate of at a time."""
        return {name: self._observation(name, code, covariates).mean for name in self.names}

    # --- objectives ----------------------------------------------------------------------------------

    def warm_up(self, progress: float) -> None:
        """Where training stands in the warm-up, 0 to 1 (1: the model itself); see `LatentFamily.warm_up`."""
        self.latent.warm_up(progress)

    def forward(
        self, data: dict[str, Tensor], mask: Tensor, kl_weight: float = 1.0, weights: Tensor | None = None
    ) -> LossOutput:
        """The aggregator's objective on a batch (its ELBO per row, and the loss at this KL weight); `weights` [M]: each
        modality's log-likelihood weight in the loss (None: 1; the ELBO reported is unweighted either way)."""
        return self.aggregator.loss(self, data, mask, kl_weight, weights)

    def class_logits(self, name: str, z: Tensor, covariates: Tensor | None = None) -> Tensor:
        """The logits of categorical modality `name` given z (and a conditional model's covariates): [R, C]."""
        # a categorical modality's likelihood is a OneHotCategorical (`CategoricalLikelihood`)
        observation = cast(OneHotCategorical, self._observation(name, self.latent.decoder_input(z), covariates))
        return observation.logits

    @torch.no_grad()
    def log_likelihood(self, data: dict[str, Tensor], mask: Tensor, n_samples: int = 1000, chunk: int = 100) -> Tensor:
        """Importance-sampled log p(X_observed) (the IWAE bound of Burda et al. 2016), proposal = q(z | X).

        log p(X) ~= logsumexp_s [sum_m log p(x_m | z_s) + log p(z_s) - log q(z_s | X)] - log S, computed
        `chunk` samples at a time and combined by a running logsumexp, so memory does not grow with S.
        """
        q = self.posterior(data, mask)
        batch = mask.shape[0]
        running = torch.full((batch,), -math.inf, device=mask.device)
        done = 0
        while done < n_samples:
            s = min(chunk, n_samples - done)
            running = torch.logaddexp(running, torch.logsumexp(self.log_importance_weights(q, data, mask, s), dim=0))
            done += s
        return running - math.log(n_samples)

    def log_importance_weights(self, q: Distribution, data: dict[str, Tensor], mask: Tensor, n_samples: int) -> Tensor:
        """log p(X_observed, z_s) - log q(z_s) for n_samples draws z_s ~ q per row: [n_samples, batch]."""
        batch = mask.shape[0]
        z = self.latent.rsample(q, n_samples)  # [S, batch, latent_size]
        rows = torch.arange(batch, device=mask.device).repeat(n_samples)
        log_lik = (
            self.log_likelihoods(z.reshape(n_samples * batch, -1), data, mask.repeat(n_samples, 1), rows)
            .sum(-1)
            .view(n_samples, batch)
        )
        return log_lik + self.latent.log_prior(z) - q.log_prob(z)


def _widen(per_row: Tensor, trailing: int) -> Tensor:
    """A per-row value [rows] shaped to scale a per-row array with `trailing` more axes ([rows, ...])."""
    return per_row.view(-1, *[1] * trailing)


def repeat_rows(covariates: Tensor | None, times: int) -> Tensor | None:
    """Covariates [rows, K] for draws flattened sample-major ([times * rows]), None stays None."""
    return None if covariates is None else covariates.repeat(times, 1)


def _resized_blocks(tensor: Tensor, blocks: int, old: int, n: int, keep: int, new_entries) -> Tensor:
    """A head's weight or bias ([blocks * old, ...]: block b's row k belongs to dimension k) with n rows per block: the
    first `keep` of each block kept, new rows set to `new_entries` (a number, or one value per block)."""
    rest = tensor.shape[1:]
    current = tensor.reshape(blocks, old, *rest)
    fill = torch.as_tensor(new_entries, dtype=tensor.dtype, device=tensor.device)
    fill = fill.reshape(blocks, *([1] * (1 + len(rest)))) if fill.dim() else fill
    resized = fill.expand(blocks, n, *rest).clone()
    resized[:, :keep] = current[:, :keep]
    return resized.reshape(blocks * n, *rest)


def _resized_columns(tensor: Tensor, n: int, keep: int) -> Tensor:
    """A decoder input layer's weight (or its moments) with n columns: the first `keep` kept, new ones zero."""
    resized = tensor.new_zeros(tensor.shape[0], n)
    resized[:, :keep] = tensor[:, :keep]
    return resized


def _swap_rows(tensor: Tensor, rows_j: list[int], rows_k: list[int]) -> None:
    a, b = tensor[rows_j].clone(), tensor[rows_k].clone()
    tensor[rows_j], tensor[rows_k] = b, a


def _swap_columns(tensor: Tensor, j: int, k: int, into_j: float, into_k: float) -> None:
    a, b = tensor[:, j].clone(), tensor[:, k].clone()
    tensor[:, j], tensor[:, k] = b * into_j, a * into_k


def _key(name: str) -> str:
    """Submodule key of a modality: prefixed, so that names like "values" or "keys" cannot clash with ModuleDict."""
    return f"mod_{name}"


def _check_networks(
    modality: Modality,
    encoder: nn.Module,
    decoder: nn.Module,
    code_size: int,
    likelihood: Likelihood,
    covariates: int = 0,
    adaptive_latent: bool = False,
) -> int:
    """Dry-run the networks on two zero rows; return the encoder's feature size or say what does not fit."""
    n_params = likelihood.n_params
    with torch.no_grad():
        try:
            features = encoder(likelihood.encoder_input(torch.zeros(2, *modality.shape)))
        except Exception as exc:  # a user's module: any failure is reported with what was expected
            raise ValueError(
                f"modality {modality.name!r}: the encoder fails on a batch of shape {(2, *likelihood.encoder_shape)}: {exc}"
            ) from exc
        if features.dim() != 2 or features.shape[0] != 2:
            raise ValueError(
                f"modality {modality.name!r}: the encoder must return [batch, features], got {tuple(features.shape)}"
            )
        try:
            params = (
                decoder(torch.zeros(2, code_size), torch.zeros(2, covariates))
                if covariates
                else decoder(torch.zeros(2, code_size))
            )
        except Exception as exc:
            adaptive = (
                (
                    f" (the latent starts with {code_size} dimensions and adapts them during training, truncation auto: "
                    "give truncation='fixed' for exactly latent_dim)"
                )
                if adaptive_latent
                else ""
            )
            raise ValueError(
                f"modality {modality.name!r}: the decoder fails on a code of shape {(2, code_size)}{adaptive}: {exc}"
            ) from exc
        expected = n_params * math.prod(modality.shape)
        if params.numel() != 2 * expected:
            raise ValueError(
                f"modality {modality.name!r}: the decoder must return {n_params} x {modality.shape} parameters per row "
                f"({modality.likelihood}), got {tuple(params.shape)}"
            )
    return features.shape[1]
