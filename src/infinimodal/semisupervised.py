"""Semi-supervised terms of the training objective for a categorical modality observed on few rows (a label).

The multimodal ELBO trains a label's decoder p(label | z) only on the rows where the label is observed. Two terms,
each an option of training (never of evaluation, which scores the ELBO itself):

- the prediction term (`--predict label=ALPHA`, `MultimodalModule.prediction_term`): on the labelled rows, alpha
  times log p(label | z), z ~ q(z | the other modalities) (M2's classification term, Kingma et al. 2014);
- the information term (`--infomax label=BETA`, `information_term` here): on the rows where the label is missing,
  beta times the mutual information between a row and the class imputation gives it,

      I = H(mean over rows of p) - mean over rows of H(p),   p = p(label | z), z ~ q(z | the observed modalities),

  the objective of regularised information maximisation (Krause, Perona & Gomory 2010). Its second part asks each
  unlabelled row for a confident class (entropy minimisation, Grandvalet & Bengio 2005: decision boundaries move to
  where the latent space has few rows), its first part asks the batch to use every class (no collapse onto one).
  It ramps in with the KL warm-up (`MultimodalModule.warm_up`): sharpened from the first step, before the class
  decoder has learned from the labelled rows, it collapsed onto few classes at beta = 20 (section 9).

Why not M2's own use of unlabelled rows, E_q(label | x)[ELBO(x, label)] + H(q(label | x)) in place of their ELBO:
measured on MNIST with 1 % of the labels (docs/results.md section 9) it took 4.3 times as long per epoch and
predicted worse (24.9 % error against 13.9 % without it). Here the label is a modality decoded from the shared z,
not a second latent the image decoder reads: given z, the label does not change how well the image is explained,
so the marginal over labels tells the classifier little, while its entropy bonus pulls predictions apart.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .model import MultimodalModule


def class_entropy(log_p: Tensor) -> Tensor:
    """H(p) of each row of finite log-probabilities [..., C] (what log_softmax gives for finite logits)."""
    return -(log_p.exp() * log_p).sum(-1)


def mutual_information(log_p: Tensor) -> Tensor:
    """H(mean_r p_r) - mean_r H(p_r) of the rows of log-probabilities [R, C]: the mutual information between a row
    drawn uniformly and its class drawn from p_r; between 0 and log C."""
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
    return class_entropy(log_mean) - class_entropy(log_p).mean()


def others_observed(mask: Tensor, c: int) -> Tensor:
    """[B] bool: whether a modality other than c is observed in each row (what a term about c can condition on)."""
    return torch.cat([mask[:, :c], mask[:, c + 1 :]], dim=1).any(dim=1)


def unlabelled_rows(mask: Tensor, c: int) -> Tensor:
    """Indices of the rows where modality c is missing and another modality is observed."""
    return (~mask[:, c] & others_observed(mask, c)).nonzero().squeeze(-1)


def information_term(module: "MultimodalModule", data: dict[str, Tensor], mask: Tensor, weights: dict[str, float]) -> Tensor:
    """sum_c beta_c (R_c / B) I_c: for each categorical modality c, beta_c times the mutual information of its imputed
    class over the R_c rows of the batch (B rows) where c is missing, z drawn from q(z | the observed modalities)."""
    total = torch.zeros((), device=mask.device)
    for name, beta in weights.items():
        c = module.names.index(name)
        rows = unlabelled_rows(mask, c)
        if len(rows) < 2:  # one row has no spread of classes to reward
            continue
        chosen = {k: v.index_select(0, rows) for k, v in data.items()}
        z = module.latent.rsample(module.posterior(chosen, mask.index_select(0, rows)))
        log_p = torch.log_softmax(module.class_logits(name, z), dim=-1)
        total = total + beta * len(rows) / mask.shape[0] * mutual_information(log_p)
    return total
