"""Does `torch.compile` speed up a training step here? Eager against compiled, side by side; prints one JSON object.

For the Gaussian and the default family with MoPoE on three tabular modalities (20 features, batch 128, MLP 2 x 256,
size 20) and on one MNIST-shaped modality (784 Bernoulli pixels, MLP 500, size 50): median ms per training step
(forward, backward, fused Adam) of the eager model and of `torch.compile(model)` (inductor, default mode), their
ratio, the seconds the first compiled step took (compilation), and the graph breaks dynamo reports. Eager and
compiled steps take turns in rounds, so machine noise hits both alike.

Training does not compile: measured on this 2-core CPU the compiled step was no faster (docs/benchmarks.md). The
model's forward has data-dependent Python branches (which modalities a batch holds), each a graph break, and its
special functions (lgamma, digamma, the Beta sampler) are library calls that inductor cannot fuse.

    python benchmarks/compile.py [--steps 20] [--rounds 3] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from scaling import Trainer  # noqa: E402  (a model's timed training step)
from throughput import batch_for, make  # noqa: E402

from infinimodal.config import DEFAULT_LATENT  # noqa: E402
from infinimodal.modality import Modality  # noqa: E402

SETTINGS = {
    "tabular_3": ([Modality(f"x{i}", (20,), "gaussian") for i in range(3)], [256, 256], 20, 128),
    "mnist_1": ([Modality("image", (784,), "bernoulli")], [500], 50, 100),
}


def graph_breaks(model, data, mask) -> int:
    explanation = torch._dynamo.explain(model)(data, mask)
    return int(explanation.graph_break_count)


def compare(setting: str, family: str, steps: int, rounds: int) -> dict:
    modalities, hidden, size, batch = SETTINGS[setting]
    torch.manual_seed(0)
    data, mask = batch_for(modalities, batch)
    eager_model = make(modalities, family, "mopoe", hidden, size=size)
    compiled_model = make(modalities, family, "mopoe", hidden, size=size)
    compiled_model.load_state_dict(eager_model.state_dict())
    compiled = torch.compile(compiled_model)
    eager, fast = Trainer(eager_model, data, mask), Trainer(compiled_model, data, mask, forward=compiled)
    started = time.perf_counter()
    fast.step()
    compile_seconds = time.perf_counter() - started
    for stepper in (eager, fast):
        stepper.step()
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    per_round = max(1, steps // rounds)
    for r in range(rounds):
        order = (("eager", eager), ("compiled", fast)) if r % 2 == 0 else (("compiled", fast), ("eager", eager))
        for name, stepper in order:
            times[name] += [stepper.step() for _ in range(per_round)]
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    return {
        "eager_ms": round(ms["eager"], 2),
        "compiled_ms": round(ms["compiled"], 2),
        "speedup": round(ms["eager"] / ms["compiled"], 3),
        "first_compiled_step_seconds": round(compile_seconds, 1),
        "graph_breaks": graph_breaks(make(modalities, family, "mopoe", hidden, size=size), data, mask),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--quick", action="store_true", help="tabular only, the Gaussian only, few steps")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = ["tabular_3"] if args.quick else list(SETTINGS)
    families = ["gaussian"] if args.quick else ["gaussian", DEFAULT_LATENT]
    steps, rounds = (2, 1) if args.quick else (args.steps, args.rounds)
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "aggregator": "mopoe",
        "what": "median ms per training step, eager against torch.compile(model), turns in rounds",
        **{setting: {family: compare(setting, family, steps, rounds) for family in families} for setting in settings},
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
