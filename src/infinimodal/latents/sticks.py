"""What the stick-breaking families share: truncation, prior concentration, and what the decoder reads.

The latent variable is the vector of K - 1 sticks v in (0, 1)^(K-1); the stick weights pi follow
from `infinimodal.stick_breaking`. The generative model is "decoder(f(pi))" for a fixed bijection f,
so the choice of f does not change the model class, only how well-conditioned the decoder's input is
(DESIGN.md section 5 found raw pi, mostly tiny entries, halves the ELBO):

- ``pi``: the weights themselves (K values, as in Nalisnick & Smyth 2017);
- ``logpi``: log pi (K values);
- ``logitv``: logit v = log v - log(1 - v) (K - 1 values).
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor
from torch.distributions import Beta, Distribution

from ..mixture import MixturePosterior
from ..settings import Settings, positive, setting
from ..stick_breaking import clamp_sticks, expected_stick_weights, log_stick_weights
from .base import LatentFamily

DECODER_INPUTS = ("pi", "logpi", "logitv")
#: Chosen by measurement on MNIST (docs/results.md): logit v gave the best ELBO and log p(x).
DEFAULT_DECODER_INPUT = "logitv"


@dataclass
class StickSettings(Settings):
    owner = "stick families"
    truncation: int = setting(50, "truncation K: K weights from K - 1 sticks", check=lambda v: v >= 2, requirement="at least 2")
    alpha: float = setting(5.0, "prior concentration of the sticks, Beta(1, alpha)", check=positive, requirement="a positive number")
    decoder_input: str = setting(DEFAULT_DECODER_INPUT, "what the decoder reads", choices=DECODER_INPUTS)


class StickLatent(LatentFamily):
    """Base of the stick-breaking families: K - 1 sticks with the GEM prior v_k ~ Beta(1, alpha).

    Subclasses provide `posterior` (from the encoder head's raw output) and the fusion rule; a family
    whose prior is not the Beta itself (logit-normal) overrides `prior` too.
    """

    has_sticks = True
    Settings = StickSettings
    representation_name = "E[pi]"
    unit_name = "stick"

    @property
    def decoder_space_name(self) -> str:
        return {"logitv": "logit E[v]", "logpi": "log E[pi]", "pi": "E[pi]"}[self.decoder_input_mode]

    def __init__(
        self,
        truncation: int = 50,
        alpha: float = 5.0,
        decoder_input: str = DEFAULT_DECODER_INPUT,
    ) -> None:
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

    def describe(self) -> str:
        return f"K = {self.truncation} (alpha = {self.alpha:g}), decoder reads {self.decoder_input_mode}"

    def rsample(self, q: Distribution, n_samples: int | None = None) -> Tensor:
        return clamp_sticks(super().rsample(q, n_samples))

    def decoder_input(self, v: Tensor) -> Tensor:
        v = clamp_sticks(v)
        if self.decoder_input_mode == "logitv":
            return torch.log(v) - torch.log1p(-v)
        log_pi = log_stick_weights(v)
        return log_pi if self.decoder_input_mode == "logpi" else log_pi.exp()

    def expected_weights(self, q: Distribution) -> Tensor:
        # Under a mixture the sticks are not independent: E[pi] is the weighted sum of the components' E[pi].
        if isinstance(q, MixturePosterior):
            return q.average(self.expected_weights)
        return expected_stick_weights(q.mean)

    def representation(self, q: Distribution) -> Tensor:
        # The posterior mean of pi, as in the SB-VAE paper's kNN experiments.
        return self.expected_weights(q)
