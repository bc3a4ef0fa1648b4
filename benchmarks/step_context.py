"""What the training step's context (`train.plan.training_step_context`: argument checks off, the sticks' Beta KL in
float32 where exact) is worth, side by side in one process: ms per MoPoE training step on three tabular modalities (20
features, batch 128, MLP 2 x 256, size 30, as throughput.py's families table) with the objective run in the training
step's context and with argument checks off only (the KL in float64), and each family over the Gaussian in both.
Families and contexts take turns round-robin, one torch thread; prints one JSON object.

    python benchmarks/step_context.py [--steps 40] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from infinimodal.aggregators import build_aggregator
from infinimodal.latents import build_latent
from infinimodal.modality import Modality
from infinimodal.model import MultimodalModule
from infinimodal.train.plan import arguments_unchecked, training_step_context

FAMILIES = ("gaussian", "gated", "beta")
#: context name -> the context the objective runs in
CONTEXTS = {"float64_kl": arguments_unchecked, "training_step": training_step_context}


def make(family: str, modalities: list[Modality]) -> MultimodalModule:
    settings = {"latent_dim": 30, "truncation": 30, "alpha": None if family == "gated" else 5.0}
    return MultimodalModule(modalities, build_latent(family, **settings), build_aggregator("mopoe"), hidden=[256, 256])


def step_ms(model: MultimodalModule, data, mask, context, steps: int) -> float:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    times = []
    for i in range(steps + 2):
        started = time.perf_counter()
        optimiser.zero_grad()
        with context():
            loss = model(data, mask).loss
        loss.backward()
        optimiser.step()
        if i >= 2:  # warm-up steps excluded
            times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    modalities = [Modality(f"m{i}", (20,), "gaussian") for i in range(3)]
    data = {m.name: torch.rand(128, 20) for m in modalities}
    mask = torch.ones(128, 3, dtype=torch.bool)
    models = {family: make(family, modalities) for family in FAMILIES}
    samples: dict[str, list[float]] = {f"{f}/{c}": [] for f in FAMILIES for c in CONTEXTS}
    for _ in range(args.rounds):
        for family, model in models.items():
            for name, context in CONTEXTS.items():
                samples[f"{family}/{name}"].append(step_ms(model, data, mask, context, args.steps))
    median = {key: statistics.median(values) for key, values in samples.items()}
    result = {
        "ms_per_step": {key: round(value, 2) for key, value in median.items()},
        "over_gaussian": {
            f"{family}/{name}": round(median[f"{family}/{name}"] / median[f"gaussian/{name}"], 3)
            for family in FAMILIES
            for name in CONTEXTS
        },
        "training_step_speed_up": {
            family: round(median[f"{family}/float64_kl"] / median[f"{family}/training_step"], 3) for family in FAMILIES
        },
        "steps": args.steps,
        "rounds": args.rounds,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
