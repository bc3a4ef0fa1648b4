"""Semi-supervised terms of the training objective for a categorical modality observed on few rows (a label).

The multimodal ELBO trains a label's decoder p(label | z) only on the rows where the label is observed. Two terms,
each an option of training (never of evaluation, which scores the ELBO itself):

- the prediction term (`--predict label=ALPHA`, `prediction_term` here): on the labelled rows, alpha
  times log p(label | z), z ~ q(z | the other modalities) (M2's classification term, Kingma et al. 2014);
- the information term (`--infomax label=BETA`, `information_term` here): on the rows where the label is missing,
  beta times the mutual information between a row and the class imputation gives it,

      I = H(mean over rows of p) - mean over rows of H(p),   p = p(label | z), z ~ q(z | the observed modalities),

  the objective of regularised information maximisation (Krause, Perona & Gomory 2010). Its second part asks each
  unlabelled row for a confident class (entropy minimisation, Grandvalet & Bengio 2005: decision boundaries move to
  where the latent space has few rows), its first part asks the batch to use every class (no collapse onto one).
  It ramps in with the KL warm-up (`TrainingObjective`): sharpened from the first step, before the class
  decoder has learned from the labelled rows, it collapsed onto few classes at beta = 20 (section 9).

- the smoothness term (`--vat label=GAMMA`, `smoothness_term` here): on every row where another modality is
  observed, gamma times KL(p(label | x) || p(label | x + r)), r the perturbation of the other modalities' encoder
  inputs within a radius that changes the imputed class most (virtual adversarial training, Miyato et al. 2018):
  imputation is asked not to change under a small move of the data in any direction, so class boundaries leave
  the dense regions of the data, labelled or not. Here p(label | x) decodes the mean of q(z | x), as imputation's
  plug-in does, and the radius is a fraction of each modality's root-mean-square row norm (its own units). It
  ramps in with the KL warm-up too: unramped, gamma = 10 gave 14.1 % error where ramped it gave 11.2 % (section 9).

Why not M2's own use of unlabelled rows, E_q(label | x)[ELBO(x, label)] + H(q(label | x)) in place of their ELBO:
measured on MNIST with 1 % of the labels (docs/results.md section 9) it took 4.3 times as long per epoch and
predicted worse (24.9 % error against 13.9 % without it). Here the label is a modality decoded from the shared z,
not a second latent the image decoder reads: given z, the label does not change how well the image is explained,
so the marginal over labels tells the classifier little, while its entropy bonus pulls predictions apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .model import MultimodalModule, hidden_in_rows, labelled_rows, others_observed, select_rows
from .options import DEFAULT_SMOOTHNESS_RADIUS, TrainingOptions
from .outputs import LossOutput


def class_entropy(log_p: Tensor) -> Tensor:
    """H(p) of each row of finite log-probabilities [..., C] (what log_softmax gives for finite logits)."""
    return -(log_p.exp() * log_p).sum(-1)


def mutual_information(log_p: Tensor) -> Tensor:
    """H(mean_r p_r) - mean_r H(p_r) of the rows of log-probabilities [R, C]: the mutual information between a row
    drawn uniformly and its class drawn from p_r; between 0 and log C."""
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
    return class_entropy(log_mean) - class_entropy(log_p).mean()


def unlabelled_rows(mask: Tensor, c: int) -> Tensor:
    """Indices of the rows where modality c is missing and another modality is observed."""
    return (~mask[:, c] & others_observed(mask, c)).nonzero().squeeze(-1)


def information_term(
    module: MultimodalModule, data: dict[str, Tensor], mask: Tensor, weights: dict[str, float]
) -> Tensor:
    """sum_c beta_c (R_c / B) I_c: for each categorical modality c, beta_c times the mutual information of its imputed
    class over the R_c rows of the batch (B rows) where c is missing, z drawn from q(z | the observed modalities), the
    posterior imputation draws from (`MultimodalModule.conditional_posterior`)."""
    total = torch.zeros((), device=mask.device)
    for name, beta in weights.items():
        c = module.names.index(name)
        rows = unlabelled_rows(mask, c)
        if len(rows) < 2:  # one row has no spread of classes to reward
            continue
        chosen = select_rows(data, rows)
        z = module.latent.rsample(
            module.conditional_posterior(chosen, mask.index_select(0, rows))
        )  # as imputation draws
        log_p = torch.log_softmax(module.class_logits(name, z, module.covariates_of(chosen)), dim=-1)
        total = total + beta * len(rows) / mask.shape[0] * mutual_information(log_p)
    return total


#: The radius of the probe that finds the most sensitive direction (one power iteration), in the same units: small
#: enough for the divergence to be quadratic in it, large enough for float32 to resolve it.
PROBE_RADIUS = 1e-3


def class_divergence(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) of each row of log-probabilities [R, C]."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def row_directions(t: Tensor) -> Tensor:
    """Each row of `t` [R, ...] scaled to unit Euclidean norm (a row of zeros stays zero)."""
    flat = t.flatten(1)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)).view_as(t)


def row_norm_scale(inputs: Tensor, observed: Tensor) -> Tensor:
    """The root-mean-square Euclidean norm of the observed rows of `inputs` (the unit of a perturbation's radius; 0
    when no row is observed). Masked, not indexed: no host sync in the training step."""
    squares = torch.where(observed, inputs.detach().flatten(1).square().sum(1), 0.0)
    return (squares.sum() / observed.sum().clamp_min(1)).sqrt()


def perturbable(module: MultimodalModule, name: str) -> list[str]:
    """The modalities whose encoder inputs the smoothness term of categorical modality `name` moves: every other
    modality that is not itself categorical (a one-hot row has no small moves)."""
    return [m for m in module.names if m != name and not module.likelihood(m).categorical]


def class_log_probs(
    module: MultimodalModule, name: str, data: dict[str, Tensor], given: Tensor, shifts: dict[str, Tensor] | None = None
) -> Tensor:
    """log p(name | x) [R, C]: categorical modality `name` decoded at the mean of q(z | the modalities in `given`),
    their encoders' inputs moved by `shifts` (the plug-in imputation the smoothness term asks to be stable)."""
    q = module.conditional_posterior(data, given, shifts)
    return torch.log_softmax(module.class_logits(name, q.mean, module.covariates_of(data)), dim=-1)


def adversarial_shifts(
    module: MultimodalModule, name: str, data: dict[str, Tensor], given: Tensor, clean: Tensor, radius: float
) -> dict[str, Tensor]:
    """The perturbation of the encoder inputs of `perturbable(name)` that changes `clean` = class_log_probs(no shift)
    most, to second order: one power iteration of the divergence's Hessian from a random probe (Miyato et al. 2018),
    each modality's rows scaled to `radius` times its `row_norm_scale`. The result carries no gradient; finding it
    needs one, so it is computed also where the caller scores the objective without gradients. The probe's pass runs
    outside mixed precision: a probe this small is below bf16's resolution, where its gradient would be 0 or noise."""
    moved = perturbable(module, name)
    inputs = {m: module.likelihood(m).encoder_input(data[m]).detach() for m in moved}
    scale = {m: row_norm_scale(inputs[m], given[:, module.names.index(m)]) for m in moved}
    with torch.enable_grad(), torch.autocast(clean.device.type, enabled=False):
        probe = {
            m: (PROBE_RADIUS * scale[m] * row_directions(torch.randn_like(inputs[m]))).requires_grad_() for m in moved
        }
        divergence = class_divergence(clean.detach(), class_log_probs(module, name, data, given, probe)).sum()
        sensitivity = torch.autograd.grad(divergence, list(probe.values()))
    return {m: radius * scale[m] * row_directions(g.detach()) for m, g in zip(moved, sensitivity)}


def smoothness_term(
    module: MultimodalModule,
    data: dict[str, Tensor],
    mask: Tensor,
    weights: dict[str, float],
    radius: float = DEFAULT_SMOOTHNESS_RADIUS,
) -> Tensor:
    """sum_c gamma_c (1 / B) sum_rows KL(p_c(x) || p_c(x + r_adv)): for each categorical modality c, over the rows of
    the batch (B rows) where another modality is observed, p_c = `class_log_probs` from the other observed
    modalities, the clean prediction held fixed, and r_adv = `adversarial_shifts` (virtual adversarial training)."""
    total = torch.zeros((), device=mask.device)
    for name, gamma in weights.items():
        c = module.names.index(name)
        rows = others_observed(mask, c).nonzero().squeeze(-1)
        if not len(rows) or not perturbable(module, name):
            continue
        chosen, given = hidden_in_rows(data, mask, c, rows)
        with torch.no_grad():
            clean = class_log_probs(module, name, chosen, given)
        shifts = adversarial_shifts(module, name, chosen, given, clean, radius)
        total = (
            total
            + gamma
            * class_divergence(clean, class_log_probs(module, name, chosen, given, shifts)).sum()
            / mask.shape[0]
        )
    return total


def prediction_term(
    module: MultimodalModule, data: dict[str, Tensor], mask: Tensor, weights: dict[str, float]
) -> Tensor:
    """sum_c alpha_c sum over rows where c and another modality are observed of log p(x_c | z), z ~ q(z | the other
    observed modalities), divided by the batch size.

    The semi-supervised term of Kingma et al. 2014 (M2's alpha-weighted classification loss) for any modality: the
    ELBO trains a label's decoder mostly from posteriors that saw the label itself, while imputing it means reading
    it from the other modalities; this term trains exactly that path, and by Jensen's inequality it is a lower
    bound on the log-probability imputation gives the truth, log E_q(z | others)[p(x_c | z)], with q the posterior
    imputation conditions on (`MultimodalModule.conditional_posterior`: under MoPoE the product of the other observed
    experts, not the mixture over their subsets, which the bound would not be about)."""
    total = torch.zeros((), device=mask.device)
    for name, alpha in weights.items():
        c = module.names.index(name)
        rows = labelled_rows(mask, c)
        if not len(rows):
            continue
        chosen, given = hidden_in_rows(data, mask, c, rows)
        q = module.conditional_posterior(chosen, given)
        select = torch.zeros(len(rows), module.n_modalities, dtype=torch.bool, device=mask.device)
        select[:, c] = True
        log_lik = module.log_likelihoods(module.latent.rsample(q), chosen, select)
        total = total + alpha * log_lik[:, c].sum() / mask.shape[0]
    return total


@dataclass
class LossTerm:
    """A named term of the training objective: `value(module, data, mask)` (a scalar per batch) times `sign` (-1: a
    quantity to raise, subtracted from the loss; +1: a penalty), ramped in with the warm-up when `ramped`."""

    name: str
    value: Callable[[MultimodalModule, dict[str, Tensor], Tensor], Tensor]
    sign: float
    ramped: bool


class TrainingObjective:
    """The loss training minimises: the model's objective (`MultimodalModule.forward`) with each modality's
    log-likelihood weighted (`weights`, `--weight`), minus the prediction terms (`--predict`), minus the information
    terms (`--infomax`, ramped in with the warm-up) and plus the smoothness terms (`--vat`, ramped likewise). The
    model holds none of it: validation, evaluation and every use of a trained model score the ELBO itself. Refuses,
    as a ValueError naming them, weights for modalities the model lacks and class terms for modalities without
    classes."""

    def __init__(
        self,
        module: MultimodalModule,
        weights: dict[str, float] | None = None,
        predict: dict[str, float] | None = None,
        infomax: dict[str, float] | None = None,
        vat: dict[str, float] | None = None,
        vat_radius: float = DEFAULT_SMOOTHNESS_RADIUS,
    ) -> None:
        weights, predict, infomax, vat = dict(weights or {}), dict(predict or {}), dict(infomax or {}), dict(vat or {})
        for what, given in (
            ("weights", weights),
            ("prediction terms", predict),
            ("information terms", infomax),
            ("smoothness terms", vat),
        ):
            unknown = set(given) - set(module.names)
            if unknown:
                raise ValueError(
                    f"{what} given for {', '.join(sorted(unknown))}, which are not modalities of this model ({', '.join(module.names)})"
                )
        for what, given in (("information", infomax), ("smoothness", vat)):
            not_classes = [name for name in given if not module.likelihood(name).categorical]
            if not_classes:
                raise ValueError(
                    f"{what} terms are for categorical modalities; {', '.join(sorted(not_classes))} is not categorical"
                )
        unmoved = [name for name in vat if not perturbable(module, name)]
        if unmoved:
            raise ValueError(
                f"smoothness terms need a modality that is not categorical to perturb; {', '.join(unmoved)} has none beside it"
            )
        if not (vat_radius > 0 and math.isfinite(vat_radius)):
            raise ValueError(f"the smoothness radius must be a positive number, got {vat_radius}")
        self.likelihood_weights = (
            torch.tensor([float(weights.get(name, 1.0)) for name in module.names]) if weights else None
        )
        self.terms = [
            term
            for term in (
                LossTerm("prediction", lambda m, d, k: prediction_term(m, d, k, predict), -1.0, False)
                if predict
                else None,
                LossTerm("information", lambda m, d, k: information_term(m, d, k, infomax), -1.0, True)
                if infomax
                else None,
                LossTerm("smoothness", lambda m, d, k: smoothness_term(m, d, k, vat, vat_radius), 1.0, True)
                if vat
                else None,
            )
            if term is not None
        ]

    @classmethod
    def from_options(cls, module: MultimodalModule, options: TrainingOptions) -> "TrainingObjective":
        return cls(module, options.weights, options.predict, options.infomax, options.vat, options.vat_radius)

    def __call__(
        self,
        module: MultimodalModule,
        data: dict[str, Tensor],
        mask: Tensor,
        kl_weight: float = 1.0,
        warm_up: float = 1.0,
    ) -> LossOutput:
        """The batch's `LossOutput` with the loss training minimises; `warm_up` (0 to 1) ramps the ramped terms in, as
        the KL weight is (a class decoder that has seen few labels is not yet worth sharpening or smoothing)."""
        if self.likelihood_weights is not None and self.likelihood_weights.device != mask.device:
            self.likelihood_weights = self.likelihood_weights.to(mask.device)  # once, not a copy every step
        out = module(data, mask, kl_weight, self.likelihood_weights)
        for term in self.terms:
            out.loss = out.loss + term.sign * (warm_up if term.ramped else 1.0) * term.value(module, data, mask)
        return out
