"""Evaluation of a trained model on held-out data, with the SB-VAE paper's protocol.

- `elbo`: mean single-sample ELBO on the test set (nats);
- `log_likelihood`: mean importance-sampled log p(x) with S samples (Burda et al. 2016);
- `knn_error`: k-nearest-neighbour classification error (fraction) on the latent representation,
  fitted on training latents, k = 3, 5, 10 (posterior mean of pi for stick families, posterior mean
  of z for Gaussians);
- `active_dims`: active units, Cov_x(E_q[z_d]) > 0.01 (Burda et al. 2016), on the latent variable the
  prior is placed on (z, or the sticks v);
- `kl_active`: dimensions or sticks whose mean KL to the prior exceeds 0.05 nats;
- `sticks_99` (stick families): mean number of sticks that cover 99% of the posterior mean of pi;
- `knn_error_decoder_input` (stick families): kNN error on the posterior mean of v mapped to what the
  decoder reads (logit v or log pi). E[pi] squashes every small stick towards zero, which hides what a
  decoder reading logit v or log pi separates, so both are reported.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier
from tqdm.auto import tqdm

from ..model import VAE
from ..stick_breaking import sticks_to_cover

ACTIVE_UNIT_THRESHOLD = 0.01
KL_ACTIVE_THRESHOLD = 0.05
KNN_K = (3, 5, 10)


@torch.no_grad()
def encode(model: VAE, x: np.ndarray, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """Posterior summaries of every row of x: representation, mean of z, per-dimension KL, ELBO, E[pi]."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {
        "representation": [], "decoder_space": [], "mean": [], "kl_per_dim": [], "elbo": [], "weights": []
    }
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size])
        q = model.posterior(xb)
        out = model(xb)
        parts["representation"].append(model.latent.representation(q).numpy())
        parts["decoder_space"].append(model.latent.decoder_space_representation(q).numpy())
        parts["mean"].append(q.mean.numpy())
        parts["kl_per_dim"].append(out.kl_per_dim.numpy())
        parts["elbo"].append(out.elbo.numpy())
        weights = model.latent.expected_weights(q)
        if weights is not None:
            parts["weights"].append(weights.numpy())
    return {key: np.concatenate(value) for key, value in parts.items() if value}


@torch.no_grad()
def importance_log_likelihood(
    model: VAE, x: np.ndarray, n_samples: int = 1000, batch_size: int = 100, progress: bool = True
) -> np.ndarray:
    """Per-row importance-sampled log p(x), batched over rows and samples so memory stays flat."""
    model.eval()
    chunk = max(1, min(n_samples, 10_000 // batch_size))
    values = []
    starts = range(0, len(x), batch_size)
    for start in tqdm(starts, desc=f"log p(x), {n_samples} samples", disable=not progress, leave=False):
        xb = torch.from_numpy(x[start : start + batch_size])
        values.append(model.log_likelihood(xb, n_samples=n_samples, chunk=chunk).numpy())
    return np.concatenate(values)


def knn_errors(train_rep: np.ndarray, train_y: np.ndarray, test_rep: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    errors = {}
    for k in KNN_K:
        classifier = KNeighborsClassifier(n_neighbors=k).fit(train_rep, train_y)
        errors[str(k)] = float(1.0 - classifier.score(test_rep, test_y))
    return errors


def evaluate_model(
    model: VAE,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    iw_samples: int = 1000,
    progress: bool = True,
) -> dict:
    """All metrics of the module docstring, on binary train/test arrays."""
    train = encode(model, train_x)
    test = encode(model, test_x)
    mean_kl = test["kl_per_dim"].mean(0)
    result = {
        "elbo": float(test["elbo"].mean()),
        "log_likelihood": float(importance_log_likelihood(model, test_x, iw_samples, progress=progress).mean()),
        "iw_samples": int(iw_samples),
        "knn_error": knn_errors(train["representation"], train_y, test["representation"], test_y),
        "active_dims": int((np.var(test["mean"], axis=0) > ACTIVE_UNIT_THRESHOLD).sum()),
        "kl_active": int((mean_kl > KL_ACTIVE_THRESHOLD).sum()),
        "kl_per_dim": [float(v) for v in mean_kl],
        "n_test": int(len(test_x)),
        "n_train_knn": int(len(train_x)),
    }
    if "weights" in test:
        covered = sticks_to_cover(torch.from_numpy(test["weights"]), 0.99).numpy()
        result["sticks_99"] = float(covered.mean())
        result["mean_stick_weights"] = [float(v) for v in test["weights"].mean(0)]
        result["knn_error_decoder_input"] = knn_errors(train["decoder_space"], train_y, test["decoder_space"], test_y)
    return result
