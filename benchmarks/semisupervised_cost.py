"""What each semi-supervised term costs per training step, measured side by side in one process; prints one JSON object.

The setting of docs/results.md section 9: MNIST-shaped rows (784 Bernoulli pixels) with a 10-class label observed on
1 % of them, the default gated MoPoE model (D = 50, MLP 784-500), batch 100, forward + backward + fused Adam. Every
setting has the prediction term (`--predict label=100`), as the section's runs do; the others add `--infomax
label=20`, `--vat label=3`, both, and both with `--oversample label=20` (20 more labelled rows in each batch). Settings are interleaved round-robin so machine noise hits all alike: compare
the ratios to `predict`, not the absolute times.

    python benchmarks/semisupervised_cost.py [--steps 30] [--quick]
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
from infinimodal.semisupervised import TrainingObjective
from infinimodal.train.plan import training_step_context

#: setting -> (information weights, smoothness weights, labelled rows added to the batch by --oversample), each
#: beside the prediction term
SETTINGS = {
    "predict": ({}, {}, 0),
    "predict+infomax": ({"label": 20.0}, {}, 0),
    "predict+vat": ({}, {"label": 3.0}, 0),
    "predict+infomax+vat": ({"label": 20.0}, {"label": 3.0}, 0),
    "predict+infomax+vat+oversample20": ({"label": 20.0}, {"label": 3.0}, 20),
}


def labelled_batch(rows: int = 100, labelled: int = 1, classes: int = 10):
    """`rows` MNIST-shaped rows, the label observed on the first `labelled` of them."""
    data = {
        "image": torch.bernoulli(torch.full((rows, 784), 0.13)),
        "label": torch.nn.functional.one_hot(torch.arange(rows) % classes, classes).float(),
    }
    mask = torch.ones(rows, 2, dtype=torch.bool)
    mask[labelled:, 1] = False
    return data, mask


def model(information: dict, smoothness: dict, oversampled: int = 0) -> tuple[MultimodalModule, TrainingObjective]:
    """The section's model and its training objective with these terms (`oversampled` only changes the batch: see `measure`)."""
    modalities = [Modality("image", (784,), "bernoulli"), Modality("label", (10,), "categorical")]
    module = MultimodalModule(modalities, build_latent("gated", latent_dim=50), build_aggregator("mopoe"), hidden=[500])
    module.train()
    return module, TrainingObjective(module, predict={"label": 100.0}, infomax=information, vat=smoothness)


def step_ms(modelled: tuple[MultimodalModule, TrainingObjective], data, mask, steps: int) -> list[float]:
    module, objective = modelled
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)
    times = []
    for i in range(steps + 2):
        started = time.perf_counter()
        optimiser.zero_grad()
        with training_step_context():  # as training_step
            loss = objective(module, data, mask).loss
        loss.backward()
        optimiser.step()
        if i >= 2:  # warm-up steps excluded
            times.append(1000 * (time.perf_counter() - started))
    return times


def measure(steps: int, rounds: int = 3) -> dict:
    torch.manual_seed(0)
    # 1 % of 100 rows labelled; --oversample K adds K labelled rows to the batch
    batches = {name: labelled_batch(100 + extra, 1 + extra) for name, (_, _, extra) in SETTINGS.items()}
    modules = {name: model(*setting) for name, setting in SETTINGS.items()}
    samples: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(rounds):
        for name, module in modules.items():
            samples[name] += step_ms(module, *batches[name], max(1, steps // rounds))
    ms = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "threads": torch.get_num_threads(),
        "steps": steps,
        "ms_per_step": {k: round(v, 2) for k, v in ms.items()},
        "ratio_to_predict": {k: round(v / ms["predict"], 3) for k, v in ms.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="a few steps (a smoke run)")
    args = parser.parse_args(argv)
    result = measure(3 if args.quick else args.steps, rounds=1 if args.quick else 3)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
