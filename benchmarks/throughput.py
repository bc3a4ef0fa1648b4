"""Training-step throughput of each latent family, measured side by side in one process.

Prints one JSON object: per family, median milliseconds per training step (forward + backward + Adam) on a
batch of 100 MNIST-sized inputs with the paper's MLP (784-500-latent-500-784), and the ratio to the Gaussian
baseline; also the cost of the Kumaraswamy KL (quadrature) against torch's closed-form Beta KL, and fp32 against
bf16 autocast for one family. Ratios, not absolute times, are what to compare: machines here are noisy.

    python benchmarks/throughput.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.distributions import Beta, kl_divergence

from infinimodal.latents import LATENT_FAMILIES, Kumaraswamy, build_latent
from infinimodal.model import VAE


def step_times(model: VAE, x: torch.Tensor, steps: int, autocast: bool = False) -> list[float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 5):
        started = time.perf_counter()
        optimiser.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(x).loss
        loss.backward()
        optimiser.step()
        if i >= 5:  # warm-up steps excluded
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((100, 784), 0.15))
    result: dict = {"batch": 100, "threads": torch.get_num_threads(), "ms_per_step": {}}
    models = {}
    for name in LATENT_FAMILIES:
        settings = {"latent_dim": 50} if name == "gaussian" else {"truncation": 50, "alpha": 5.0}
        models[name] = VAE(784, build_latent(name, 500, **settings), hidden=[500])
    # interleave families round-robin so that machine noise hits all of them alike
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(3):
        for name, model in models.items():
            samples[name] += step_times(model, x, args.steps // 3)
    for name, values in samples.items():
        result["ms_per_step"][name] = round(1000 * statistics.median(values), 3)
    base = result["ms_per_step"]["gaussian"]
    result["ratio_to_gaussian"] = {k: round(v / base, 3) for k, v in result["ms_per_step"].items()}

    a = torch.rand(100, 49) * 5 + 0.1
    b = torch.rand(100, 49) * 5 + 0.1
    prior = Beta(torch.ones(49), torch.full((49,), 5.0))

    def kl_ms(make):
        times = []
        for _ in range(30):
            aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
            started = time.perf_counter()
            kl_divergence(make(aa, bb), prior).sum().backward()
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    kuma, beta = kl_ms(Kumaraswamy), kl_ms(Beta)
    result["kl_ms_forward_backward"] = {"kumaraswamy_quadrature": round(kuma, 3), "beta_closed_form": round(beta, 3), "ratio": round(kuma / beta, 2)}

    fp32 = statistics.median(step_times(models["beta"], x, args.steps))
    bf16 = statistics.median(step_times(models["beta"], x, args.steps, autocast=True))
    result["beta_bf16_autocast_speedup"] = round(fp32 / bf16, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
