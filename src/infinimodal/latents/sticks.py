"""What the stick-breaking families share: truncation, prior concentration, and what the decoder reads.

The latent variable is the vector of K - 1 sticks v in (0, 1)^(K-1); the stick weights pi follow
from `infinimodal.stick_breaking`. The generative model is "decoder(f(pi))" for a fixed bijection f,
so the choice of f does not change the model class, only how well-conditioned the decoder's input is
(docs/design.md section 5: raw pi, mostly tiny entries, halves the ELBO):

- ``pi``: the weights themselves (K values, as in Nalisnick & Smyth 2017);
- ``logpi``: log pi (K values);
- ``logitv``: logit v = log v - log(1 - v) (K - 1 values).
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor
from torch.distributions import Beta, Distribution

from ..settings import SettingError, Settings, positive, setting
from ..stick_breaking import clamp_sticks, expected_stick_weights, log_stick_weights
from .base import LatentFamily, averaged_over_components

DECODER_INPUTS = ("pi", "logpi", "logitv")
#: Chosen by measurement on MNIST (docs/results.md): logit v gave the best ELBO and log p(x).
DEFAULT_DECODER_INPUT = "logitv"
#: `--truncation auto`: training starts with AUTO_START_DIMENSIONS dimensions (sticks) and `train.callbacks.AdaptTruncation`
#: grows or trims them, up to max_truncation - 1 (docs/results.md section 11). 16, not 8, by measurement: a grown
#: dimension starts at the prior with a decoder that ignores it, and takes a few hundred steps to be used, while the
#: starting ones are used from the first step; starting at 8 cost 2.3 nats of ELBO on synthetic 12 + 1 (15 epochs) and
#: 0.25 nats of log p(x) on MNIST (10 epochs) against starting at 16, which ends with as few dimensions.
AUTO = "auto"
AUTO_START_DIMENSIONS = 16
DEFAULT_MAX_TRUNCATION = 100
#: A raw head output whose exp (or softplus) is 3e-7: a new dimension's expert adds about nothing to the prior (KL of order
#: 1e-13, log q - log p of order 1e-6 at a draw), while Adam can still open it: its head weights' gradients are 3e-7 of an
#: open expert's, well above Adam's eps (1e-8), and Adam's steps do not shrink with the gradient's scale.
CLOSED_EXPERT = -15.0


def truncation_setting(value) -> bool:
    return value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 2)


def become_adaptive(family: LatentFamily, max_truncation: int, largest: int | None = None) -> int:
    """Mark `family` adaptive (truncation auto) with at most max_truncation - 1 dimensions (and at most `largest`, the
    gated family's --latent-dim); return the dimensions it starts with."""
    if max_truncation < 3:
        raise ValueError(f"--max-truncation must be at least 3, got {max_truncation}")
    if largest is not None and largest < 1:
        raise ValueError(f"latent_dim must be at least 1, got {largest}")
    family.adaptive = True
    family.max_dimensions = max_truncation - 1 if largest is None else min(largest, max_truncation - 1)
    return min(AUTO_START_DIMENSIONS, family.max_dimensions)


def auto_needs_logitv(decoder_input: str) -> str:
    return (
        f"--truncation auto needs --decoder-input logitv: with {decoder_input} a new stick would split the last weight the "
        "decoder reads, so growing could not keep what the model computes"
    )


@dataclass
class StickSettings(Settings):
    owner = "stick families"
    truncation: int | str = setting(
        50,
        "truncation K: K weights from K - 1 sticks; auto: start with 16 sticks, grow and trim them "
        "during training (needs --decoder-input logitv)",
        check=truncation_setting,
        requirement="an integer of at least 2, or auto",
    )
    alpha: float = setting(
        5.0, "prior concentration of the sticks, Beta(1, alpha)", check=positive, requirement="a positive number"
    )
    decoder_input: str = setting(DEFAULT_DECODER_INPUT, "what the decoder reads", choices=DECODER_INPUTS)
    max_truncation: int = setting(
        DEFAULT_MAX_TRUNCATION,
        "with --truncation auto: the largest K (K - 1 sticks or dimensions)",
        check=lambda v: v >= 3,
        requirement="at least 3",
    )

    def validate(self) -> None:
        super().validate()
        if self.truncation == AUTO and self.decoder_input != "logitv":
            raise SettingError(auto_needs_logitv(self.decoder_input))


class StickLatent(LatentFamily):
    """Base of the stick-breaking families: K - 1 sticks with the GEM prior v_k ~ Beta(1, alpha).

    Subclasses provide `posterior` (from the encoder head's raw output) and the fusion rule; a family
    whose prior is not the Beta itself (logit-normal) overrides `prior` too.
    """

    has_sticks = True
    Settings = StickSettings
    representation_name = "E[pi]"
    unit_name = "stick"
    #: The Beta(1, alpha) prior's parameters, one per stick (buffers: they move with the module and are saved).
    prior_a: Tensor
    prior_b: Tensor

    @property
    def decoder_space_name(self) -> str:
        return {"logitv": "logit E[v]", "logpi": "log E[pi]", "pi": "E[pi]"}[self.decoder_input_mode]

    def __init__(
        self,
        truncation: int | str = 50,
        alpha: float = 5.0,
        decoder_input: str = DEFAULT_DECODER_INPUT,
        max_truncation: int = DEFAULT_MAX_TRUNCATION,
    ) -> None:
        if truncation == AUTO:
            if decoder_input != "logitv":
                raise ValueError(auto_needs_logitv(decoder_input))
            truncation = become_adaptive(self, max_truncation) + 1
        if isinstance(truncation, str):  # the TypeError that comparing it with 2 raised, said in words
            raise TypeError(f"truncation K must be an integer or {AUTO!r}, got {truncation!r}")
        if truncation < 2:
            raise ValueError(f"truncation K must be at least 2 (one stick), got {truncation}")
        if not alpha > 0:
            raise ValueError(f"the prior concentration alpha must be positive, got {alpha}")
        if decoder_input not in DECODER_INPUTS:
            raise ValueError(f"decoder input must be one of {', '.join(DECODER_INPUTS)}, got {decoder_input!r}")
        super().__init__(latent_size=truncation - 1)
        self.truncation = truncation
        self.alpha = float(alpha)
        self.decoder_input_mode = decoder_input
        self.decoder_input_size = truncation - 1 if decoder_input == "logitv" else truncation
        self.register_buffer("prior_a", torch.ones(self.latent_size))
        self.register_buffer("prior_b", torch.full((self.latent_size,), self.alpha))

    def prior(self) -> Distribution:
        return Beta(self.prior_a, self.prior_b)

    def can_resize(self) -> bool:
        return (
            self.decoder_input_mode == "logitv"
        )  # one decoder column per stick; pi and log pi change with every stick

    def prior_head_output(self) -> Tensor:
        return torch.full((self.n_params,), CLOSED_EXPERT)  # evidence (or an expert's precision) of about 3e-7

    def resize(self, n: int) -> None:
        self.truncation, self.latent_size, self.decoder_input_size = n + 1, n, n
        self.prior_a = self.prior_a.new_ones(n)
        self.prior_b = self.prior_b.new_full((n,), self.alpha)

    def describe(self) -> str:
        adaptive = (
            f", truncation auto: grown or trimmed during training, at most K = {self.max_dimensions + 1}"
            if self.adaptive
            else ""
        )
        return f"K = {self.truncation} (alpha = {self.alpha:g}), decoder reads {self.decoder_input_mode}{adaptive}"

    def rsample(self, q: Distribution, n_samples: int | None = None) -> Tensor:
        return clamp_sticks(super().rsample(q, n_samples))

    def decoder_input(self, v: Tensor) -> Tensor:
        v = clamp_sticks(v)
        if self.decoder_input_mode == "logitv":
            return torch.log(v) - torch.log1p(-v)
        log_pi = log_stick_weights(v)
        return log_pi if self.decoder_input_mode == "logpi" else log_pi.exp()

    @averaged_over_components  # under a mixture the sticks are not independent: E[pi] is the components' weighted sum
    def expected_weights(self, q: Distribution) -> Tensor:
        return expected_stick_weights(q.mean)

    def representation(self, q: Distribution) -> Tensor:
        # The posterior mean of pi, as in the SB-VAE paper's kNN experiments.
        return self.expected_weights(q)
