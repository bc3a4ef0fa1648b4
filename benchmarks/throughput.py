"""Training-step throughput, measured side by side in one process; prints one JSON object.

- `mnist`: each latent family in the SB-VAE setting (one modality, 784 Bernoulli pixels, MLP 784-500-latent),
  median ms per step (forward + backward + Adam, batch 100) and the ratio to the Gaussian baseline;
- `polymnist5`: gaussian and beta with each aggregator on five 3x28x28 modalities with the default CNNs
  (dense width 256), ms per step and the ratio to gaussian/mopoe, and the seconds a 50,000-row epoch takes;
- `mopoe_3_tabular`: each latent family with MoPoE on three tabular modalities (20 features, batch 128, MLP
  2x256, size 30), ms per step and the ratio to Gaussian (Kumaraswamy's product of experts is numerical);
- `modalities`: MoPoE's cost per step against the number of modalities M (tabular, 20 features each), to
  check that subset sampling keeps it linear beyond `max_enumerate`;
- the Kumaraswamy KL (quadrature) against torch's closed-form Beta KL, and bf16 autocast against fp32;
- `adam_step_ms_3_tabular`: the optimiser step alone, torch's plain Adam against the fused kernel training uses.

Families and settings are interleaved round-robin so machine noise hits all alike; compare ratios, not
absolute times (machines here are noisy).

    python benchmarks/throughput.py [--steps 30] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.distributions import Beta, kl_divergence

from infinimodal.aggregators import build_aggregator
from infinimodal.latents import LATENT_FAMILIES, Kumaraswamy, build_latent
from infinimodal.modality import Modality
from infinimodal.model import MultimodalModule
from infinimodal.train.plan import training_step_context


#: Aggregators with settings other than their defaults, by the name the benchmarks give them
AGGREGATOR_VARIANTS = {"mopoe-sampled": ("mopoe", {"mopoe_kl": "sampled"})}


def make(modalities, family: str, aggregator: str, hidden, size: int = 50) -> MultimodalModule:
    # each family takes the options it declares: D = size for gaussian / gated, K = size for the stick families
    # (alpha: the paper's 5 for stick families, the gated family's own default)
    settings = {"latent_dim": size, "truncation": size, "alpha": None if family == "gated" else 5.0}
    name, options = AGGREGATOR_VARIANTS.get(aggregator, (aggregator, {}))
    return MultimodalModule(
        modalities, build_latent(family, **settings), build_aggregator(name, **options), hidden=hidden
    )


def batch_for(modalities, n: int):
    data = {}
    for m in modalities:
        data[m.name] = (
            torch.bernoulli(torch.full((n, *m.shape), 0.15)) if m.likelihood == "bernoulli" else torch.rand(n, *m.shape)
        )
    return data, torch.ones(n, len(modalities), dtype=torch.bool)


def step_times(model, data, mask, steps: int, autocast: bool = False) -> list[float]:
    optimiser = torch.optim.Adam(
        model.parameters(), lr=1e-3, fused=True
    )  # as training builds it (training.fused_adam_supported)
    times = []
    for i in range(steps + 2):
        started = time.perf_counter()
        optimiser.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with training_step_context():  # as training_step
                loss = model(data, mask).loss
        loss.backward()
        optimiser.step()
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - started)
    return times


def interleaved(models: dict, data, mask, steps: int, rounds: int = 3) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            samples[name] += step_times(model, data, mask, max(1, steps // rounds))
    return {name: 1000 * statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="fewer steps and settings (a smoke run)")
    args = parser.parse_args()
    steps = 6 if args.quick else args.steps
    torch.manual_seed(0)
    result: dict = {"threads": torch.get_num_threads(), "steps": steps}

    mnist = [Modality("image", (784,), "bernoulli")]
    data, mask = batch_for(mnist, 100)
    ms = interleaved({f: make(mnist, f, "poe", [500]) for f in LATENT_FAMILIES}, data, mask, steps)
    result["mnist"] = {
        "ms_per_step": {k: round(v, 2) for k, v in ms.items()},
        "ratio_to_gaussian": {k: round(v / ms["gaussian"], 3) for k, v in ms.items()},
    }

    poly = [Modality(f"m{i}", (3, 28, 28), "laplace") for i in range(5)]
    data, mask = batch_for(poly, 100)
    aggregators = ["mopoe"] if args.quick else ["poe", "moe", "mopoe"]
    models = {f"{f}/{a}": make(poly, f, a, [256]) for f in ("gaussian", "beta") for a in aggregators}
    ms = interleaved(models, data, mask, max(3, steps // 3))
    base = ms["gaussian/mopoe"]
    result["polymnist5"] = {
        "ms_per_step": {k: round(v, 1) for k, v in ms.items()},
        "ratio_to_gaussian_mopoe": {k: round(v / base, 3) for k, v in ms.items()},
        "seconds_per_50k_epoch": {k: round(v * 500 / 1000, 1) for k, v in ms.items()},
    }

    # every family with MoPoE on three tabular modalities (the synthetic benchmark's setting): the cost of
    # Kumaraswamy's numerical product of experts against the closed-form products
    tab = [Modality(f"x{i}", (20,), "gaussian") for i in range(3)]
    data, mask = batch_for(tab, 128)
    ms = interleaved({f: make(tab, f, "mopoe", [256, 256], size=30) for f in LATENT_FAMILIES}, data, mask, steps)
    result["mopoe_3_tabular"] = {
        "ms_per_step": {k: round(v, 2) for k, v in ms.items()},
        "ratio_to_gaussian": {k: round(v / ms["gaussian"], 3) for k, v in ms.items()},
    }

    # the optimiser step alone, torch's plain Adam against the fused kernel that training uses (same model, same gradients)
    model = make(tab, "gated", "mopoe", [256, 256], size=30)
    model(data, mask).loss.backward()
    adam_ms = {}
    for name, fused in (("plain", False), ("fused", True)):
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
        times = []
        for i in range(steps + 2):
            started = time.perf_counter()
            optimiser.step()
            if i >= 2:
                times.append(time.perf_counter() - started)
        adam_ms[name] = round(1000 * statistics.median(times), 3)
    result["adam_step_ms_3_tabular"] = adam_ms

    per_m = {}
    for n_modalities in [2, 8] if args.quick else [2, 4, 6, 8, 12, 16]:
        mods = [Modality(f"x{i}", (20,), "gaussian") for i in range(n_modalities)]
        data, mask = batch_for(mods, 128)
        per_m[str(n_modalities)] = round(
            interleaved({"m": make(mods, "beta", "mopoe", [64])}, data, mask, steps, rounds=1)["m"], 2
        )
    result["mopoe_ms_per_step_by_modalities"] = per_m

    a = torch.rand(100, 49) * 5 + 1
    b = torch.rand(100, 49) * 5 + 5
    prior = Beta(torch.ones(49), torch.full((49,), 5.0))

    def kl_ms(law):
        times = []
        for _ in range(20):
            aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
            started = time.perf_counter()
            kl_divergence(law(aa, bb), prior).sum().backward()
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    kuma, beta = kl_ms(Kumaraswamy), kl_ms(Beta)
    result["kl_ms_forward_backward"] = {
        "kumaraswamy_quadrature": round(kuma, 3),
        "beta_closed_form": round(beta, 3),
        "ratio": round(kuma / beta, 2),
    }

    data, mask = batch_for(mnist, 100)
    model = make(mnist, "beta", "poe", [500])
    fp32 = statistics.median(step_times(model, data, mask, steps))
    bf16 = statistics.median(step_times(model, data, mask, steps, autocast=True))
    result["mnist_beta_bf16_autocast_speedup"] = round(fp32 / bf16, 3)
    data, mask = batch_for(poly, 50)
    model = make(poly, "beta", "mopoe", [256])
    fp32 = statistics.median(step_times(model, data, mask, 3))
    bf16 = statistics.median(step_times(model, data, mask, 3, autocast=True))
    result["polymnist5_cnn_bf16_autocast_speedup"] = round(fp32 / bf16, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
