"""What every latent family provides, and the product-of-experts dispatch.

A latent family is an `nn.Module` that knows the prior, turns an encoder head's raw output into a
unimodal posterior Distribution, fuses unimodal posteriors into subset posteriors, and maps a latent
sample to what the decoder reads. The model never asks which family it holds: it calls these methods,
and the loss is `kl_divergence` and `log_prob` on the Distributions they return.

**Unimodal posteriors already contain the prior.** Every family parameterises q(z | x_m) as the prior
times an expert (for Beta sticks: Beta(1 + e_a, alpha + e_b) with evidence e >= 0; for Gaussians:
precision 1 + lambda with lambda >= 0). The posterior given a subset S of modalities is then

    q(z | X_S)  ∝  p(z) prod_{m in S} q(z | x_m) / p(z),

which for exponential families is one sum of natural parameters, eta_S = eta_p + sum_m (eta_m - eta_p),
always proper, and a missing modality (weight 0) contributes nothing. `fuse` evaluates it for many
subsets at once from a [batch, subsets, modalities] 0/1 tensor.

`product(experts, prior=None)` multiplies expert densities and returns the normalised product as a
Distribution, dispatched on the experts' class the way `torch.distributions.kl_divergence` is
dispatched; each family file registers its rule with `register_product`.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

from ..mixture import MixturePosterior, linear_log_density
from ..nets import full_precision
from ..settings import Settings as _Settings  # the base class, inside LatentFamily whose `Settings` is an attribute

_PRODUCT_RULES: dict[type, Callable[[Sequence[Distribution]], Distribution]] = {}
#: Other classes a rule multiplies in (a Kumaraswamy rule accepts the Beta prior).
_ALSO_ACCEPTED: dict[type, tuple[type, ...]] = {}


class ProductNotClosedForm(NotImplementedError):
    """Raised for families whose product of experts has no closed form."""


def register_product(cls: type, also: tuple[type, ...] = ()) -> Callable:
    """Decorator: `@register_product(Beta)` registers the product rule for Beta experts.

    `also`: further factor classes the rule accepts (e.g. a Beta prior among Kumaraswamy experts).
    """

    def decorator(rule: Callable[[Sequence[Distribution]], Distribution]) -> Callable:
        _PRODUCT_RULES[cls] = rule
        _ALSO_ACCEPTED[cls] = also
        return rule

    return decorator


def product(experts: Sequence[Distribution], prior: Distribution | None = None) -> Distribution:
    """Normalised product of expert densities (and of the prior, when given).

    All factors must be of one family; their batch shapes broadcast. The rule is looked up along
    the method resolution order of the first factor's class, so subclasses inherit their parent's rule.
    """
    factors = list(experts) + ([prior] if prior is not None else [])
    if not factors:
        raise ValueError("product() needs at least one expert")
    for cls in type(factors[0]).__mro__:
        if cls in _PRODUCT_RULES:
            allowed = _ALSO_ACCEPTED.get(cls, ())
            strangers = {type(f) for f in factors if not isinstance(f, (cls, *allowed))}
            if strangers:
                names = ", ".join(sorted({type(factors[0]).__name__} | {k.__name__ for k in strangers}))
                raise TypeError(f"product() needs experts of one family, got {names}")
            return _PRODUCT_RULES[cls](factors)
    raise ProductNotClosedForm(f"no product rule is registered for {type(factors[0]).__name__}")


def averaged_over_components(method: Callable) -> Callable:
    """A family method of a posterior q (`method(self, q, ...)` returning [..., L]) that, for a mixture posterior
    (MoE, MoPoE), is the weighted average of its components' values: sum_c w_c method(q_c). Mixtures are handled here
    once, not by an isinstance in each method."""

    @functools.wraps(method)
    def per_mixture(self, q, *args, **kwargs):
        if isinstance(q, MixturePosterior):
            return q.average(lambda components: method(self, components, *args, **kwargs))
        return method(self, q, *args, **kwargs)

    return per_mixture


class LatentFamily(nn.Module):
    """Base class of the latent families (see the module docstring)."""

    #: Name used in configs and on the command line.
    name: str = ""
    #: Raw encoder-head outputs per latent dimension.
    n_params: int = 2
    #: Dimension of the latent variable z that the prior is placed on.
    latent_size: int
    #: Dimension of the vector the decoder reads.
    decoder_input_size: int
    #: Whether the family has stick-breaking weights (E[pi], a truncation).
    has_sticks: bool = False
    #: Whether the sticks needed to hold 99 % of E[pi] (`sticks_99`) say how many dimensions a row uses. Not for the
    #: gated family: its prior gates leave (alpha / (1 + alpha))^D of the mass after the last dimension by design
    #: (0.19 at alpha = 30, D = 50), so sticks_99 is D + 1 for every gated model.
    mass_counts_dimensions: bool = True
    #: The family's typed options (`infinimodal.settings.Settings`): config fields and command-line flags.
    Settings: type[_Settings] = None  # type: ignore[assignment]

    def __init__(self, latent_size: int) -> None:
        super().__init__()
        self.latent_size = latent_size

    @property
    def head_size(self) -> int:
        """Outputs of the linear head that each modality's encoder ends with."""
        return self.n_params * self.latent_size

    def raw_params(self, raw: Tensor) -> tuple[Tensor, ...]:
        """Split a head's output [..., n_params * latent_size] into n_params blocks, in float32."""
        return tuple(full_precision(raw).chunk(self.n_params, dim=-1))

    # --- what each family defines -------------------------------------------------------------

    def posterior(self, raw: Tensor) -> Distribution:  # pragma: no cover - abstract
        """The unimodal posterior q(z | x_m) (prior times expert) from a head's raw output."""
        raise NotImplementedError

    def prior(self) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def decoder_input(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def representation(self, q: Distribution) -> Tensor:  # pragma: no cover - abstract
        """The deterministic summary of a posterior used for kNN, probes and embeddings."""
        raise NotImplementedError

    def natural(self, q: Distribution) -> tuple[Tensor, ...]:  # pragma: no cover - abstract
        """Natural parameters (up to a constant offset) of an exponential-family posterior."""
        raise NotImplementedError

    def from_natural(self, eta: tuple[Tensor, ...]) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def n_dimensions(self) -> int:
        """Latent dimensions as reports count them: the length of `kl_per_dim` (latent_size unless a family
        sums several scalars per dimension)."""
        return self.latent_size

    #: What a fused (several-modality) posterior of this family is, where it differs from the family itself.
    fused_posterior: str | None = None

    def posterior_description(self, fuses: bool, n_modalities: int) -> str:
        """The posterior family a run really uses: e.g. Kumaraswamy sticks whose fused subsets are Beta projections."""
        if fuses and n_modalities > 1 and self.fused_posterior:
            return f"{self.name} for one modality; {self.fused_posterior} for posteriors fused from several"
        return self.name

    #: What reports call one latent coordinate.
    unit_name = "dimension"

    #: How reports name `representation` and `decoder_space_representation`.
    representation_name = "E[z]"

    @property
    def decoder_space_name(self) -> str:
        return self.representation_name

    def describe(self) -> str:
        """The family's size and prior in a few words, for reports ("D = 50", "K = 50 (alpha = 5)")."""
        return f"D = {self.latent_size}"

    # --- shared behaviour -----------------------------------------------------------------------

    def fuse(self, posteriors: Distribution, subsets: Tensor) -> Distribution:
        """Subset posteriors p(z) prod_{m in S} q_m(z) / p(z), for exponential families.

        posteriors: unimodal posteriors with batch shape [batch, M, latent_size];
        subsets: [batch, S, M] weights (0/1: which modalities each subset holds).
        Returns a Distribution with batch shape [batch, S, latent_size].
        """
        device_type = subsets.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            prior_eta = self.natural(self.prior())
            fused = tuple(
                p + torch.einsum("bsm,bml->bsl", subsets.to(q.dtype), q - p)
                for q, p in zip(self.natural(posteriors), prior_eta)
            )
        return self.from_natural(fused)

    def decoder_space_representation(self, q: Distribution) -> Tensor:
        """The posterior mean mapped to what the decoder reads (logit E[v], log E[pi], ...)."""
        return self.decoder_input(q.mean)

    def expected_weights(self, q: Distribution) -> Tensor | None:
        """E_q[pi] for stick families, None for families without stick weights."""
        return None

    def kl_parts(self, q: Distribution) -> dict[str, Tensor]:
        """Each row's KL to the prior (nats) by the part of the latent that carries it: "values" (Gaussian values) or
        "sticks" (stick-breaking fractions); the gated family has both."""
        return {"sticks" if self.has_sticks else "values": self.kl_per_dim(q).sum(-1)}

    @averaged_over_components
    def kl_per_dim(self, q: Distribution) -> Tensor:
        """KL(q || prior) for each latent dimension or stick, shape [batch, latent_size].

        For a mixture posterior this is the weighted sum of its components' KLs, an upper bound on the
        mixture's own KL (convexity) that, unlike it, splits over dimensions.
        """
        return kl_divergence(q, self.prior())

    def kl_per_dim_at(self, q: Distribution, z: Tensor) -> Tensor:
        """`kl_per_dim(q)` for a training step that also drew z ~ q (same shape as `rsample(q)`): a family whose KL
        is itself estimated at a draw (the gated family's experts on the code) uses z instead of drawing again; an
        exact KL ignores z."""
        return self.kl_per_dim(q)

    def mixture_kl_per_dim(self, q: MixturePosterior, drawn: Distribution, z: Tensor) -> Tensor:
        """`kl_per_dim(q)` of a mixture for a training step whose rows drew z ([B, 1, L]) from the components `drawn`
        ([B, 1, L], one per row, chosen by q's weights): exact here (every component's KL, weighted); a family with a
        costly part may estimate that part at the drawn component, which is unbiased for the weighted sum."""
        return self.kl_per_dim(q)

    def truncated(self, q: Distribution, keep: int) -> Distribution:
        """q with every dimension from index `keep` on replaced by the prior (all of a dimension's scalars).

        Every family's posterior parameters are [..., n_dimensions] tensors named as in `arg_constraints`, and
        the prior's parameters carry the same names (a Kumaraswamy(1, alpha) posterior is the Beta(1, alpha)
        prior), so one rule serves them all; a mixture truncates each component."""
        if isinstance(q, MixturePosterior):
            return MixturePosterior(self.truncated(q.components, keep), q.weights)
        prior = self.prior()
        kept = torch.arange(self.n_dimensions, device=q.mean.device) < keep
        # the posterior's own class, built from its parameters by name (not Distribution's shape arguments)
        posterior_class: Callable[..., Distribution] = type(q)
        return posterior_class(
            **{name: torch.where(kept, getattr(q, name), getattr(prior, name)) for name in q.arg_constraints}
        )

    #: Whether the family's dimensions are ordered (used in index order) and can be exchanged during training
    #: (`value_head_rows`, `mean_gates`; `MultimodalModule.swap_dimensions`).
    orders_dimensions: bool = False

    def value_head_rows(self, dim: int) -> list[int]:  # pragma: no cover - only families that order dimensions
        """The rows of an encoder head's output that parameterise dimension `dim`'s exchangeable part."""
        raise NotImplementedError

    def exchange_scales(
        self, q: Distribution, j: int, k: int
    ) -> tuple[float, float]:  # pragma: no cover - only families that order dimensions
        """How much the decoder columns of the dimensions moving k -> j and j -> k are scaled so that the decoders read in
        mean what they read before (`MultimodalModule.swap_dimensions`)."""
        raise NotImplementedError

    def mean_gates(self, q: Distribution) -> Tensor:  # pragma: no cover - only families that order dimensions
        """The decoder's mean scale of each dimension under q (mean over rows)."""
        raise NotImplementedError

    # --- adaptive truncation (`--truncation auto`, train.callbacks.AdaptTruncation) --------------------------------

    #: Whether the number of dimensions adapts during training (a family built with truncation "auto").
    adaptive: bool = False
    #: The most dimensions an adaptive family may grow to.
    max_dimensions: int = 0

    def can_resize(self) -> bool:
        """Whether `resize` can add dimensions without changing what the model computes: dimension k's head outputs
        are rows k of each of the n_params blocks, the decoders read one column per dimension, and a new dimension whose
        head outputs `prior_head_output()` is at its prior while the decoders ignore it."""
        return False

    def prior_head_output(self) -> Tensor:  # pragma: no cover - only resizable families
        """One raw head output per parameter block ([n_params]) whose posterior is the prior to within about 1e-12 in
        KL: what a new dimension's head rows give (their weights zero), so that a grown model scores the same."""
        raise NotImplementedError

    def resize(self, n: int) -> None:  # pragma: no cover - only resizable families
        """Make the family n dimensions wide (its prior buffers and sizes); `MultimodalModule.resize_dimensions`
        resizes the heads and decoders with it."""
        raise NotImplementedError

    def warm_up(self, progress: float) -> None:
        """Called by the training plan before every training step with the warm-up's progress in [0, 1] (the KL
        warm-up's, 1 once it is over) and with 1 before validation. A family whose prior follows a schedule during
        the warm-up (the gated family's gate warm-up) overrides it; the others have none."""

    def rsample(self, q: Distribution, n_samples: int | None = None) -> Tensor:
        """Reparameterised sample(s) of z, kept where the decoder and log densities are finite."""
        shape = torch.Size() if n_samples is None else torch.Size([n_samples])
        return q.rsample(shape)

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z), summed over latent dimensions: for a prior linear in its statistics (`mixture.linear_log_density`)
        one matrix-vector product of the samples' statistics (float64), else the prior's own `log_prob`."""
        prior = self.prior()
        terms = linear_log_density(prior, z.device)
        if terms is None:
            return prior.log_prob(z).sum(-1)
        statistics = terms.statistics(z).flatten(-2)  # [..., L F]
        return (statistics @ terms.natural.reshape(-1) - terms.log_normalizer.sum()).to(z.dtype)

    def sample_prior(self, n: int) -> Tensor:
        with torch.no_grad():
            return self.rsample(self.prior(), n)
