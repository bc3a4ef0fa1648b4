"""Count-valued single-cell-like data: RNA and surface-protein counts of the same cells (a CITE-seq-shaped set), drawn
from negative binomials around a known low-dimensional state, for measuring what omics users bring.

`counts:genes=300,proteins=30,types=6,shared=4,private=1,n=4000,missing=0.3,seed=0` (every key optional; these are
the defaults). Each cell has a type (one of `types`, unequal shares) whose centre in the `shared` state dimensions is
random, plus its own N(0, 0.5^2) offset in them; each modality adds `private` N(0, 1) factors of its own. Then
- RNA: mean count mu_g = L * softmax_g(W z + b), with library size log L ~ N(7, 0.4^2) (about 1,100 counts a cell), gene
  baselines b ~ N(0, 1.5^2) (a few genes take most counts, most are sparse), counts ~ NB(mu_g, r_g) with the inverse
  dispersion r_g ~ U(0.5, 5) per gene (variance mu + mu^2 / r: over-dispersed, many zeros);
- protein: mu_p = L_p * exp(W_p z + b_p) with log L_p ~ N(0, 0.2^2), b_p ~ N(3, 0.5^2) (tens to hundreds of counts),
  counts ~ NB(mu_p, r_p), r_p ~ U(5, 20), observed for a share 1 - `missing` of the cells (most sets measure
  proteins on some batches only).
Both modalities are raw integer counts (not standardised) with the negative-binomial likelihood. The label is the cell
type. The truth travels with the data (`MultimodalData.truth`): true_dims = shared + 2 private + 2 (each modality's
library size is a factor of its own, which a model without a size offset must carry in its latent), the shared state
{split: [rows, shared]} as `shared_factors`, and the types. Split 80 / 10 / 10.
"""

from __future__ import annotations

import numpy as np

from ..modality import Modality
from .multimodal import MultimodalData, Split, split_rows
from .synthetic import read_settings, refuse_invalid

DEFAULTS = {"genes": 300, "proteins": 30, "types": 6, "shared": 4, "private": 1, "n": 4000, "missing": 0.3, "seed": 0}
_INTEGER_KEYS = ("genes", "proteins", "types", "shared", "private", "n", "seed")
LIKELIHOOD = "negative_binomial"


def parse_spec(text: str) -> dict:
    s = read_settings("counts", text, DEFAULTS, _INTEGER_KEYS)
    checks = {
        "genes": s["genes"] >= 2,
        "proteins": s["proteins"] >= 2,
        "types": s["types"] >= 2,
        "shared": s["shared"] >= 1,
        "private": s["private"] >= 0,
        "n": s["n"] >= 50,
        "missing": 0 <= s["missing"] < 1,
    }
    refuse_invalid("counts", s, checks)
    return s


def negative_binomial(rng: np.random.Generator, mean: np.ndarray, inverse_dispersion: np.ndarray) -> np.ndarray:
    """Counts with the given mean and variance mean + mean^2 / r: Poisson draws around Gamma(r, mean / r) rates."""
    return rng.poisson(rng.gamma(inverse_dispersion, mean / inverse_dispersion)).astype(np.float32)


def generate(s: dict) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict]:
    """Counts per modality, the availability mask, the cell types and the truth."""
    rng = np.random.default_rng([s["seed"], 2718])
    n, d = s["n"], s["shared"]
    shares = rng.dirichlet(np.full(s["types"], 2.0))
    types = rng.choice(s["types"], n, p=shares)
    centres = 1.5 * rng.standard_normal((s["types"], d))
    state = centres[types] + 0.5 * rng.standard_normal((n, d))
    private = {name: rng.standard_normal((n, s["private"])) for name in ("rna", "protein")}

    def loadings(rows: int, scale: float) -> np.ndarray:
        return scale * rng.standard_normal((rows, d + s["private"])) / np.sqrt(d + s["private"])

    z_rna = np.concatenate([state, private["rna"]], axis=1)
    logits = z_rna @ loadings(s["genes"], 1.5).T + 1.5 * rng.standard_normal(s["genes"])
    shares_rna = np.exp(logits - logits.max(1, keepdims=True))
    shares_rna /= shares_rna.sum(1, keepdims=True)
    library = np.exp(rng.normal(7.0, 0.4, (n, 1)))
    rna = negative_binomial(rng, library * shares_rna, rng.uniform(0.5, 5.0, s["genes"]))

    z_protein = np.concatenate([state, private["protein"]], axis=1)
    log_mean = (
        z_protein @ loadings(s["proteins"], 0.7).T + rng.normal(3.0, 0.5, s["proteins"]) + rng.normal(0.0, 0.2, (n, 1))
    )
    protein = negative_binomial(rng, np.exp(log_mean), rng.uniform(5.0, 20.0, s["proteins"]))

    mask = np.ones((n, 2), dtype=bool)
    mask[:, 1] = rng.random(n) >= s["missing"]
    protein[~mask[:, 1]] = 0.0
    truth = {
        "shared": d,
        "private": s["private"],
        "modalities": 2,
        "true_dims": d + 2 * s["private"] + 2,
        "shared_factors": state.astype(np.float32),
        "types": types,
    }
    return {"rna": rna, "protein": protein}, mask, types.astype(np.int64), truth


def counts_dataset(spec: str = "") -> MultimodalData:
    s = parse_spec(spec)
    arrays, mask, labels, truth = generate(s)
    n = s["n"]
    bounds = split_rows(n, [s["seed"], 97])
    splits = {
        k: Split({name: a[rows] for name, a in arrays.items()}, mask[rows], labels[rows]) for k, rows in bounds.items()
    }
    truth["shared_factors"] = {k: truth["shared_factors"][rows] for k, rows in bounds.items()}
    truth["types"] = {k: truth["types"][rows] for k, rows in bounds.items()}
    truth["settings"] = s
    modalities = [Modality(name, (a.shape[1],), LIKELIHOOD) for name, a in arrays.items()]
    text = ",".join(f"{k}={v:g}" for k, v in s.items())
    return MultimodalData(modalities, splits["train"], splits["valid"], splits["test"], f"counts:{text}", truth=truth)
