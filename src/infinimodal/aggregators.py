"""How unimodal posteriors become a joint posterior, and the objective that trains it: PoE, MoE, MoPoE.

Every aggregator works for every latent family: it asks the family to `fuse` unimodal posteriors into
subset posteriors (exact for exponential families) and otherwise uses only `rsample`, `log_prob` and
`kl_divergence`. Missing modalities enter as a [batch, M] availability mask: a missing modality is
never in a subset, never a mixture component and never reconstructed.

- `poe` (Wu & Goodman 2018, MVAE): q(z | X_S) ∝ p(z) prod_{m in S} q(z | x_m) / p(z). Trained on the
  sub-sampled ELBO: the joint term, one term per available modality, and `poe_subsets` random subsets,
  each term reconstructing the modalities of its subset.
- `moe` (Shi et al. 2019, MMVAE): q(z | X) = mean over available m of q(z | x_m). Stratified ELBO:
  samples of each unimodal posterior reconstruct every available modality, log q is the mixture's
  (logsumexp over experts). With `iw_samples` K > 1: the importance-weighted bound with K samples from
  the mixture, trained with the doubly reparameterised (DReG) gradient of Tucker et al. 2019; other
  estimators: the stratified IWAE bound, or the mixture-sampled one with the plain gradient. (DReG on stratified
  samples, as in the MMVAE code, is biased; see `MoE._from_mixture`.)
- `mopoe` (Sutter et al. 2021): uniform mixture over the non-empty subsets of the available modalities
  of their PoE posteriors. One subset per row is sampled for reconstruction (decoders run once), and the
  KL is the weighted sum of subset KLs, a lower bound on the ELBO because the KL of a mixture is at most
  the mixture of KLs. Up to `max_enumerate` modalities all 2^M - 1 subsets are enumerated; beyond, each
  row draws `sampled_subsets` uniform non-empty subsets, so a step costs O(M). With `mopoe_kl` "sampled", each
  row's KL is that of its reconstruction subset alone: the row's term is the ELBO of one subset drawn from the
  weights, E_S[ELBO_S] = the same objective in expectation, and a step fuses and scores one subset per row instead
  of 2^M - 1 (the KL of stick families, with its special functions, dominates their step at M = 6). With
  "sticks-sampled", a training step keeps every subset's KL for the gated family's Gaussian values (closed form, cheap)
  and takes its sticks' Beta KL (lgamma, digamma, and trigamma for the gradient: a fifth of the step) at the row's
  drawn subset only, again the same objective in expectation; evaluation (the module in eval mode) computes every
  subset's, so reported ELBOs are exact in the KL.

Every objective sums the modalities' log-likelihoods through `outputs.weigh` with the `weights` its `loss` is given, so
that training weights (`--weight`, 1 by default) reach every aggregator; the `elbo` each reports is always the unweighted
bound. An aggregator reads the model through `outputs.Encodes` (its latent family, experts and log-likelihoods) only.

To add an aggregator: subclass `Aggregator` (a `loss` and a `posterior`) and add a line to `AGGREGATORS`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Iterator, cast

import torch
from torch import Tensor
from torch.distributions import Distribution

from .mixture import MixturePosterior, detach_distribution, gather_components
from .outputs import Encodes, LossOutput, weigh
from .settings import Settings, setting
from .settings import Settings as _Settings  # the base class, inside classes whose `Settings` is an attribute


# --- subsets ---------------------------------------------------------------------------------------


def nonempty_subsets(n_modalities: int, device=None) -> Tensor:
    """All 2^M - 1 non-empty subsets of M modalities as a [2^M - 1, M] bool tensor, smallest first."""
    rows = [
        [m in chosen for m in range(n_modalities)]
        for size in range(1, n_modalities + 1)
        for chosen in itertools.combinations(range(n_modalities), size)
    ]
    return torch.tensor(rows, dtype=torch.bool, device=device)


def sample_subsets(mask: Tensor, n: int, max_tries: int = 64, generator: torch.Generator | None = None) -> Tensor:
    """n subsets per row drawn uniformly from the non-empty subsets of that row's available modalities.

    Each available modality joins with probability 1/2; empty draws are redrawn (rejection sampling is
    exactly uniform). A row still empty after `max_tries` draws (probability 2^-64) gets one modality.
    """
    available = mask.unsqueeze(1).expand(mask.shape[0], n, mask.shape[1])
    subsets = available & (torch.rand(available.shape, device=mask.device, generator=generator) < 0.5)
    for _ in range(max_tries):
        empty = ~subsets.any(-1)
        if not bool(empty.any()):
            return subsets
        redraw = available & (torch.rand(available.shape, device=mask.device, generator=generator) < 0.5)
        subsets = torch.where(empty.unsqueeze(-1), redraw, subsets)
    empty = ~subsets.any(-1)
    first = torch.nn.functional.one_hot(available.float().argmax(-1), mask.shape[1]).bool()
    return torch.where(empty.unsqueeze(-1), first, subsets)


def subsets_of_available(
    mask: Tensor, max_enumerate: int, n_sampled: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Subsets for a mixture over the non-empty subsets of each row's available modalities.

    Returns (subsets [batch, S, M] bool, weights [batch, S]) with uniform weights over the valid
    subsets. With M <= max_enumerate every subset of the M modalities is intersected with the row's
    mask: each non-empty subset of the available ones then appears 2^(M - available) times, so uniform
    weights over the non-empty intersections are uniform over the subsets of the available modalities.
    """
    n_modalities = mask.shape[1]
    if n_modalities <= max_enumerate:
        subsets = nonempty_subsets(n_modalities, mask.device).unsqueeze(0) & mask.unsqueeze(1)
    else:
        subsets = sample_subsets(mask, n_sampled, generator=generator)
    weights = subsets.any(-1).float()
    return subsets, weights / weights.sum(-1, keepdim=True)


# --- aggregators -----------------------------------------------------------------------------------


@dataclass
class PoESettings(Settings):
    owner = "poe"
    poe_subsets: int = setting(
        1,
        "random subset terms per step besides the joint and unimodal ones",
        check=lambda v: v >= 0,
        requirement=">= 0",
    )


@dataclass
class MoESettings(Settings):
    owner = "moe"
    moe_samples: int = setting(
        1,
        "importance samples K per row in training (K > 1: the IWAE bound)",
        check=lambda v: v >= 1,
        requirement="at least 1",
    )
    moe_estimator: str = setting(
        "auto",
        "auto = stratified ELBO for K = 1, IWAE bound with DReG gradients for K > 1",
        choices=("auto", "stratified", "iwae", "dreg"),
    )


#: How a MoPoE training step estimates the KL (see `MoPoE.loss`).
MoPoE_KL_ESTIMATES = ("all", "sampled", "sticks-sampled")
#: The default: every subset's KL. "sticks-sampled" trains the gated family 1.2-1.8 times as fast on 3-6 modalities with
#: the same fit, but leaves fewer dimensions aligned with one true factor each (docs/results.md section 16).
DEFAULT_MOPOE_KL = "all"


@dataclass
class MoPoESettings(Settings):
    owner = "mopoe"
    max_enumerate: int = setting(
        6,
        "enumerate all subsets up to this many modalities, sample them beyond",
        check=lambda v: v >= 1,
        requirement="at least 1",
    )
    mopoe_kl: str = setting(
        DEFAULT_MOPOE_KL,
        "all: the weighted KL of every subset; sampled: the KL of each row's reconstruction subset only "
        "(the same objective in expectation, one subset fused per row); sticks-sampled: as all, but a training "
        "step takes the gated family's sticks' KL at each row's reconstruction subset only (the same objective "
        "in expectation; other families as all)",
        choices=MoPoE_KL_ESTIMATES,
    )


class Aggregator:
    """Base class: `loss` trains, `posterior` is q(z | the modalities in `mask`) for evaluation and generation."""

    name = ""
    Settings: type[_Settings] = _Settings

    @classmethod
    def from_settings(cls, settings: _Settings) -> "Aggregator":
        return cls(**asdict(settings))

    #: Whether the aggregator multiplies experts into fused subset posteriors (PoE, MoPoE) or mixes them (MoE).
    fuses = True

    def loss(
        self,
        model: Encodes,
        data: dict[str, Tensor],
        mask: Tensor,
        kl_weight: float = 1.0,
        weights: Tensor | None = None,
    ) -> LossOutput:  # pragma: no cover
        """The training objective of a batch and its ELBO per row; `weights` [M]: each modality's log-likelihood weight
        in the objective (`outputs.weigh`; None: 1, and the reported ELBO is always unweighted)."""
        raise NotImplementedError

    def posterior(self, model: Encodes, unimodal: Distribution, mask: Tensor) -> MixturePosterior:  # pragma: no cover
        raise NotImplementedError

    def posteriors_given(
        self, model: Encodes, unimodal: Distribution, mask: Tensor, givens: list[Tensor]
    ) -> Iterator[MixturePosterior]:
        """q(z | the modalities of each mask in `givens`, each within `mask`) from the same unimodal posteriors, one at a
        time (a generator: a caller that uses each and drops it holds one posterior's parameters, not all of them); MoPoE
        fuses each subset once for all of them."""
        for given in givens:
            yield self.posterior(model, unimodal, given)


class PoE(Aggregator):
    name = "poe"
    Settings = PoESettings

    def __init__(self, poe_subsets: int = 1) -> None:
        if poe_subsets < 0:
            raise ValueError(f"poe_subsets must be >= 0, got {poe_subsets}")
        self.poe_subsets = poe_subsets

    def terms(self, mask: Tensor) -> Tensor:
        """[batch, T, M]: the joint, each single modality, then `poe_subsets` random subsets (MVAE)."""
        n_modalities = mask.shape[1]
        if n_modalities == 1:
            return mask.unsqueeze(1)
        single = torch.eye(n_modalities, dtype=torch.bool, device=mask.device).unsqueeze(0) & mask.unsqueeze(1)
        parts = [mask.unsqueeze(1), single]
        if self.poe_subsets:
            parts.append(sample_subsets(mask, self.poe_subsets))
        return torch.cat(parts, dim=1)

    def loss(self, model, data, mask, kl_weight=1.0, weights=None):
        unimodal = model.unimodal_posteriors(data, mask)
        subsets = self.terms(mask)  # [B, T, M]
        batch, n_terms, n_modalities = subsets.shape
        fused = model.latent.fuse(unimodal, subsets)
        z = model.latent.rsample(fused)  # [B, T, L]
        kl_per_dim = model.latent.kl_per_dim_at(fused, z)  # [B, T, L]
        rows = torch.arange(batch, device=mask.device).repeat_interleave(n_terms)
        log_lik = model.log_likelihoods(z.reshape(batch * n_terms, -1), data, subsets.reshape(-1, n_modalities), rows)
        reconstruction = log_lik.view(batch, n_terms, n_modalities).sum(-1)
        kl = kl_per_dim.sum(-1)
        valid = subsets.any(-1).float()
        objective = (valid * (weigh(log_lik, weights).view(batch, n_terms) - kl_weight * kl)).sum(1)
        return LossOutput(
            -objective.mean(), reconstruction[:, 0] - kl[:, 0], reconstruction[:, 0], kl[:, 0], kl_per_dim[:, 0]
        )

    def posterior(self, model, unimodal, mask):
        fused = model.latent.fuse(unimodal, mask.unsqueeze(1))
        return MixturePosterior(fused, torch.ones(mask.shape[0], 1, device=mask.device))


class MoE(Aggregator):
    name = "moe"
    Settings = MoESettings
    fuses = False

    @classmethod
    def from_settings(cls, settings: _Settings) -> "MoE":
        settings = cast(MoESettings, settings)  # `build_aggregator` passes this class's own `Settings`
        return cls(iw_samples=settings.moe_samples, estimator=settings.moe_estimator)

    ESTIMATORS = ("stratified", "iwae", "dreg")

    def __init__(self, iw_samples: int = 1, estimator: str = "auto") -> None:
        """estimator: "stratified" (every expert samples K times; K = 1 is MMVAE's ELBO), "iwae" (K samples from
        the mixture, plain gradient) or "dreg" (the same bound, DReG gradient); "auto": stratified for K = 1,
        dreg for K > 1."""
        if iw_samples < 1:
            raise ValueError(f"iw_samples must be at least 1, got {iw_samples}")
        if estimator == "auto":
            estimator = "stratified" if iw_samples == 1 else "dreg"
        if estimator not in self.ESTIMATORS:
            raise ValueError(f"unknown MoE estimator {estimator!r}; choose one of auto, {', '.join(self.ESTIMATORS)}")
        self.iw_samples = iw_samples
        self.estimator = estimator

    def loss(self, model, data, mask, kl_weight=1.0, weights=None):
        unimodal = model.unimodal_posteriors(data, mask)  # [B, M, L]
        if self.estimator == "stratified":
            loss, elbo, recon = self._stratified(model, data, mask, unimodal, kl_weight, weights)
        else:
            dreg = self.estimator == "dreg" and torch.is_grad_enabled()
            loss, elbo, recon = self._from_mixture(model, data, mask, unimodal, kl_weight, dreg, weights)
        kl_per_dim = model.latent.kl_per_dim(MixturePosterior(unimodal, mask.float()))
        return LossOutput(loss, elbo, recon, recon - elbo, kl_per_dim)

    def _stratified(
        self, model, data, mask, unimodal, kl_weight, modality_weights=None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Every expert samples K times; each stratum's samples reconstruct every available modality and are
        weighted against the mixture. K = 1: the MMVAE ELBO; K > 1: the stratified IWAE bound, plain gradient."""
        batch, n_modalities = mask.shape
        k = self.iw_samples
        z = model.latent.rsample(unimodal, k)  # [K, B, M, L]
        log_q = MixturePosterior(unimodal, mask.float()).log_prob(z.transpose(1, 2)).transpose(1, 2)  # [K, B, M]
        log_p = model.latent.log_prior(z)
        rows = torch.arange(batch, device=mask.device).repeat_interleave(n_modalities).repeat(k)
        # stratum m of row b reconstructs every available modality of b (nothing for a missing stratum)
        select = (mask.unsqueeze(1) & mask.unsqueeze(2)).reshape(batch * n_modalities, n_modalities).repeat(k, 1)
        log_lik = model.log_likelihoods(z.reshape(k * batch * n_modalities, -1), data, select, rows)
        reconstruction = log_lik.view(k, batch, n_modalities, n_modalities).sum(-1)  # [K, B, M]
        log_w = weigh(log_lik, modality_weights).view(k, batch, n_modalities) + kl_weight * (log_p - log_q)
        objective = log_w[0] if k == 1 else torch.logsumexp(log_w, dim=0) - math.log(k)
        strata = mask.float()
        n_available = strata.sum(-1)
        loss = -((strata * objective).sum(-1) / n_available).mean()
        with torch.no_grad():
            elbo = (strata * (reconstruction + log_p - log_q).mean(0)).sum(-1) / n_available  # single-sample ELBO
            recon = (strata * reconstruction.mean(0)).sum(-1) / n_available
        return loss, elbo, recon  # the loss, the ELBO and its reconstruction part per row

    def _from_mixture(
        self, model, data, mask, unimodal, kl_weight, dreg: bool, modality_weights=None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The IWAE bound with K samples drawn from the mixture itself; with `dreg`, its DReG gradient
        (Tucker et al. 2019), else the plain reparameterised one.

        DReG's identity E_q[f(z) d log q(z)] = E[df/dz dz/dphi] needs the samples to come from the q whose
        density is in the weights. Stratified samples come from one expert each while the weights use the
        mixture, so stratified DReG (as in the MMVAE code) is biased. Here
        each sample picks its expert at random (with weights that do not depend on phi) and is then
        reparameterised, which keeps the identity exact.
        """
        batch = mask.shape[0]
        k = self.iw_samples
        mixture = MixturePosterior(unimodal, mask.float())
        z = model.latent.rsample(mixture, k)  # [K, B, L]
        proposal = (
            MixturePosterior(detach_distribution(unimodal), mask.float()) if dreg else mixture
        )  # DReG: q cut from the graph
        log_q = proposal.log_prob(z)  # [K, B]
        log_p = model.latent.log_prior(z)
        rows = torch.arange(batch, device=mask.device).repeat(k)
        log_lik = model.log_likelihoods(z.reshape(k * batch, -1), data, mask.repeat(k, 1), rows)
        reconstruction = log_lik.sum(-1).view(k, batch)
        log_w = weigh(log_lik, modality_weights).view(k, batch) + kl_weight * (log_p - log_q)
        if dreg:
            weights = torch.softmax(log_w.detach(), dim=0)  # normalised importance weights, [K, B]
            # For log w = r + beta (log p - log q) the score term -beta w~ d log q / d phi becomes, by DReG's
            # identity, -beta w~ (1 - w~) on the sample path: the path to the encoders gets w~ (1 - beta + beta w~),
            # which is w~^2 only at beta = 1 (the KL warm-up and --kl-weight use other betas).
            path_weight = (1.0 - kl_weight + kl_weight * weights).unsqueeze(-1)
            z.register_hook(lambda grad: grad * path_weight)
            loss = -(weights * log_w).sum(0).mean()  # its value is not the bound; its gradient is DReG's
        else:
            loss = -(torch.logsumexp(log_w, dim=0) - math.log(k)).mean()
        with torch.no_grad():
            elbo = (reconstruction + log_p - log_q).mean(0)
            recon = reconstruction.mean(0)
        return loss, elbo, recon  # the loss, the ELBO and its reconstruction part per row

    def posterior(self, model, unimodal, mask):
        return MixturePosterior(unimodal, mask.float())


class MoPoE(Aggregator):
    name = "mopoe"
    Settings = MoPoESettings

    KL_ESTIMATES = MoPoE_KL_ESTIMATES

    def __init__(
        self, max_enumerate: int = 6, sampled_subsets: int | None = None, mopoe_kl: str = DEFAULT_MOPOE_KL
    ) -> None:
        if mopoe_kl not in self.KL_ESTIMATES:
            raise ValueError(f"mopoe_kl must be one of {', '.join(self.KL_ESTIMATES)}, got {mopoe_kl!r}")
        self.max_enumerate = max_enumerate
        self.sampled_subsets = sampled_subsets
        self.mopoe_kl = mopoe_kl

    #: Seed of the subsets that inference draws beyond `max_enumerate` modalities (see `posterior`).
    INFERENCE_SEED = 0

    def subsets(self, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        n_sampled = self.sampled_subsets or 2 * mask.shape[1]
        return subsets_of_available(mask, self.max_enumerate, n_sampled, generator)

    def loss(self, model, data, mask, kl_weight=1.0, weights=None):
        unimodal = model.unimodal_posteriors(data, mask)
        if self.mopoe_kl == "sampled":
            # one uniform non-empty subset of each row's available modalities: the mixture's weights, drawn directly
            fused = model.latent.fuse(unimodal, sample_subsets(mask, 1))  # [B, 1, L]
            z = model.latent.rsample(fused)
            kl_per_dim = model.latent.kl_per_dim_at(fused, z)[:, 0]
            z = z[:, 0]
        else:
            subsets, subset_weights = self.subsets(mask)
            fused = model.latent.fuse(unimodal, subsets)  # [B, S, L]
            mixture = MixturePosterior(fused, subset_weights)
            if self.mopoe_kl == "all" or not model.training:
                kl_per_dim = (subset_weights.unsqueeze(-1) * model.latent.kl_per_dim(fused)).sum(1)  # [B, L]
                z = model.latent.rsample(mixture)  # one subset per row
            else:  # the row's drawn subset, then its draw, as MixturePosterior.rsample takes them (the same random stream)
                drawn = gather_components(fused, mixture.choose().unsqueeze(-1))  # [B, 1, L]
                z = model.latent.rsample(drawn)
                kl_per_dim = model.latent.mixture_kl_per_dim(mixture, drawn, z)
                z = z[:, 0]
        log_lik = model.log_likelihoods(z, data, mask)
        reconstruction = log_lik.sum(-1)
        kl = kl_per_dim.sum(-1)
        loss = -(weigh(log_lik, weights) - kl_weight * kl).mean()
        return LossOutput(loss, reconstruction - kl, reconstruction, kl, kl_per_dim)

    def posterior(self, model, unimodal, mask):
        """The mixture over the available subsets. Beyond `max_enumerate` modalities its subsets are drawn with a
        generator seeded by INFERENCE_SEED at every call, so embed, impute and evaluation give the same answer on
        the same rows every time (training keeps drawing fresh subsets); the caller's random state is untouched."""
        generator = None
        if mask.shape[1] > self.max_enumerate:
            generator = torch.Generator(device=mask.device).manual_seed(self.INFERENCE_SEED)
        subsets, weights = self.subsets(mask, generator)
        return MixturePosterior(model.latent.fuse(unimodal, subsets), weights)

    def posteriors_given(self, model, unimodal, mask, givens):
        """Each given mask's mixture from one fusion of every subset of `mask`: the given posterior's component for subset S
        is the fused S & given, which is the full mask's component for the subset S & given (the given modalities lie
        within `mask`). Evaluation asks for 2^M - 1 given subsets at once: this fuses 2^M - 1 subsets instead of (2^M - 1)^2
        (the Kumaraswamy family's numerical fusion most of all). Beyond `max_enumerate` modalities: one by one."""
        n_modalities = mask.shape[1]
        if n_modalities > self.max_enumerate or len(givens) < 2:
            yield from super().posteriors_given(model, unimodal, mask, givens)
            return
        if any(bool((given & ~mask).any()) for given in givens):
            raise ValueError("a given mask holds a modality its row does not have")
        subsets = nonempty_subsets(n_modalities, mask.device)  # [C, M]
        fused = model.latent.fuse(unimodal, subsets.unsqueeze(0) & mask.unsqueeze(1))  # [B, C, L]
        bits = 2 ** torch.arange(n_modalities, device=mask.device)
        position = torch.zeros(2**n_modalities, dtype=torch.long, device=mask.device)  # subset code -> its component
        position[(subsets.long() * bits).sum(-1)] = torch.arange(len(subsets), device=mask.device)
        for given in givens:
            within = subsets.unsqueeze(0) & given.unsqueeze(1)  # [B, C, M]: S & given (empty: weight 0, any component)
            weights = within.any(-1).float()
            components = gather_components(fused, position[(within.long() * bits).sum(-1)])
            yield MixturePosterior(components, weights)  # which refuses a row left with no component


AGGREGATORS: dict[str, type[Aggregator]] = {cls.name: cls for cls in (PoE, MoE, MoPoE)}


def build_aggregator(name: str, **settings) -> Aggregator:
    """The aggregator `name`, from the entries of `settings` that its `Settings` declares (validated; the rest
    belong to others)."""
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATORS)}")
    cls = AGGREGATORS[name]
    return cls.from_settings(cls.Settings.from_values(settings))
