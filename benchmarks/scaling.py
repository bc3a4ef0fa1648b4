"""How a training step scales with the number of modalities, how close the MLPs come to the machine's matmul
rate, and how fast importance-sampled log-likelihoods go; prints one JSON object (`--out FILE` also writes it).

- `by_modalities`: every latent family x every aggregator (and `mopoe-sampled`, MoPoE with `mopoe_kl` sampled) on M tabular Gaussian modalities (20 features each,
  batch 128, MLP 2x256, latent size 20), M in 2, 3, 5, 8, 16: median ms per training step (forward + backward +
  Adam) and samples per second, all 100 configurations timed round-robin in one process so machine noise hits
  them alike (a configuration whose steps are slow takes fewer of them: --seconds-per-configuration), and the
  median of each configuration's fastest round (noise only ever slows a step; `round_seconds` shows it); per M the
  ratio mopoe / poe (and moe / poe) per family and each family's ratio to gaussian per aggregator; ms per step
  divided by M (flat: linear in M); and the peak memory that training steps add, each configuration in a fresh
  process (see `peak_memory`), for the M of --memory-modalities (default 3 and 16; all five take ~3 more minutes).
- `matmul_efficiency`: the machine's float32 torch.mm rate (GFLOP/s, median of repeats, this run's thread count)
  on the MLP's shapes and a large square product, and for the default family and aggregator (config.py) on one
  MNIST-shaped modality (784 Bernoulli pixels, MLP 784-500, batch 100) and on three tabular ones, the FLOPs of a
  training step counted by a forward hook on every nn.Linear (2 * in * out per row it runs on, backward counted as
  twice the forward) over the measured step time: the achieved GFLOP/s and its fraction of the matmul rates. The
  products and the steps take turns in the same rounds.
- `iwae`: `log_likelihood(n_samples=1000)` on a batch of MNIST-shaped rows (PoE, one modality, MLP 784-500,
  size 50) for the default family and gaussian: test rows per second and the minutes 10,000 test rows take.

Compare ratios rather than absolute times: the machines here are shared and noisy. On two cores, two torch threads
and another busy process can make small operations tens of times slower for a while (`--threads 1` avoids it).
The default run takes about 3 minutes on two quiet cores; with other processes busy it took 7 to 19 (4 with
`--threads 1`). `--quick` (M in 2, 3, two families) takes under half a minute.

    python benchmarks/scaling.py [--quick] [--no-memory] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from throughput import AGGREGATOR_VARIANTS, batch_for, make  # noqa: E402  (benchmarks/throughput.py: model and batch builders)

from infinimodal.aggregators import AGGREGATORS  # noqa: E402
from infinimodal.config import DEFAULT_AGGREGATOR, DEFAULT_LATENT  # noqa: E402
from infinimodal.latents import LATENT_FAMILIES  # noqa: E402
from infinimodal.modality import Modality  # noqa: E402

from infinimodal.train.plan import fused_adam_supported, training_step_context  # noqa: E402  (the step as training runs it)

FUSED_ADAM = fused_adam_supported(torch.device("cpu"))

FEATURES, BATCH, HIDDEN, SIZE = 20, 128, [256, 256], 20  # the tabular setting
MNIST_HIDDEN, MNIST_SIZE, MNIST_BATCH = [500], 50, 100  # throughput.py's mnist case
MODALITIES = (2, 3, 5, 8, 16)
MEMORY_MODALITIES = (3, 16)
QUICK_MODALITIES = (2, 3)


def tabular(n_modalities: int) -> list[Modality]:
    return [Modality(f"x{i}", (FEATURES,), "gaussian") for i in range(n_modalities)]


def mnist() -> list[Modality]:
    return [Modality("image", (784,), "bernoulli")]


# --- timing ----------------------------------------------------------------------------------------


class Trainer:
    """A model, its Adam optimiser (as training builds it; kept across calls, so its state is allocated once) and a
    fixed batch; `forward` runs the model (default: the model itself; compile.py passes its compiled wrapper)."""

    def __init__(self, model: nn.Module, data, mask, forward=None) -> None:
        self.model, self.data, self.mask = model, data, mask
        self.forward = model if forward is None else forward
        self.optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, fused=FUSED_ADAM)
        self.last_loss = float("nan")

    def step(self) -> float:
        started = time.perf_counter()
        self.optimiser.zero_grad()
        with training_step_context():  # as training_step
            loss = self.forward(self.data, self.mask).loss
        loss.backward()
        self.optimiser.step()
        elapsed = time.perf_counter() - started
        self.last_loss = float(loss.detach())
        return elapsed


def round_robin(
    trainers: dict,
    steps: int,
    rounds: int,
    seconds_per_configuration: float = 4.0,
    label: str = "",
    warm_up: bool = True,
) -> tuple[dict, dict, list[float]]:
    """Median seconds per step of each trainer (anything with a timed `step()`), its timed steps round by round,
    and the wall seconds of each round.

    With `warm_up` each trainer first takes one untimed step (two when it is quick: lazy allocations, Adam's
    state). Then `rounds` passes go over all of them (alternating direction), each trainer taking steps / rounds
    timed steps per pass, but no more (beyond the first) than fit in its share of `seconds_per_configuration`,
    so a few slow configurations cannot take the whole run; the cap follows the steps' own times in that pass."""
    if warm_up:
        for trainer in trainers.values():
            if trainer.step() < 0.5:
                trainer.step()
    per_round = max(1, math.ceil(steps / rounds))
    budget = seconds_per_configuration / rounds
    samples: dict = {name: [] for name in trainers}
    names = list(trainers)
    round_seconds = []
    for r in range(rounds):
        started = time.perf_counter()
        for name in names if r % 2 == 0 else reversed(names):
            taken: list[float] = []
            while len(taken) < per_round and (not taken or sum(taken) + taken[-1] <= budget):
                taken.append(trainers[name].step())
            samples[name].append(taken)
        round_seconds.append(time.perf_counter() - started)
        print(f"[scaling] {label} round {r + 1}/{rounds}: {round_seconds[-1]:.0f} s", file=sys.stderr, flush=True)
    medians = {
        name: statistics.median(t for taken in per_round_samples for t in taken)
        for name, per_round_samples in samples.items()
    }
    return medians, samples, round_seconds


# --- memory (a fresh process per configuration) ----------------------------------------------------

CHILD = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[6]))
torch.manual_seed(0)
from scaling import Trainer, batch_for, make, tabular, BATCH, HIDDEN, SIZE
family, aggregator, n_modalities, steps = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
mods = tabular(n_modalities)
data, mask = batch_for(mods, BATCH)
trainer = Trainer(make(mods, family, aggregator, HIDDEN, size=SIZE), data, mask)
params = sum(p.numel() for p in trainer.model.parameters())

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    method = "vmhwm"
except OSError:
    method = "ru_maxrss"
rss, ru_before = status("VmRSS"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(steps):
    trainer.step()
# without the reset: the rise of ru_maxrss (as fusion_memory.py), which misses what stays under an earlier peak
increase = status("VmHWM") - rss if method == "vmhwm" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - ru_before
print(json.dumps({"peak_increase_mib": increase / 1024.0, "rss_before_mib": rss / 1024.0,
                  "params_mib": params * 4 / 2**20, "method": method}))
"""


def peak_memory(family: str, aggregator: str, n_modalities: int, steps: int = 2) -> dict:
    """MiB by which `steps` training steps raise the peak RSS of a fresh process that has built the model, batch
    and optimiser (gradients, Adam state and the step's activations). The peak is /proc's VmHWM, reset to the
    current RSS just before the steps: ru_maxrss, as fusion_memory.py reads it, starts in a child of this process
    at this process's own peak (vfork + exec hand it over), so it would hide the figure."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(HERE),
            family,
            aggregator,
            str(n_modalities),
            str(steps),
            str(torch.get_num_threads()),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- by modalities ---------------------------------------------------------------------------------


def by_modalities(
    modalities,
    families,
    aggregators,
    steps: int,
    rounds: int,
    memory_modalities=(),
    memory_steps: int = 2,
    seconds_per_configuration: float = 4.0,
) -> dict:
    trainers = {}
    for n in modalities:
        mods = tabular(n)
        data, mask = batch_for(mods, BATCH)
        for family in families:
            for aggregator in aggregators:
                trainers[(n, family, aggregator)] = Trainer(
                    make(mods, family, aggregator, HIDDEN, size=SIZE), data, mask
                )
    started = time.perf_counter()
    seconds, samples, round_seconds = round_robin(
        trainers, steps, rounds, seconds_per_configuration, label="by_modalities"
    )
    counts = {key: sum(map(len, values)) for key, values in samples.items()}
    # another process can slow every step for a while (see the module's notes): the fastest round's median is
    # what a quiet machine gives; the medians over all rounds, asked for, can carry such a stretch
    best_round = {key: 1000 * min(statistics.median(taken) for taken in values) for key, values in samples.items()}
    timing_s = time.perf_counter() - started
    ms = {key: 1000 * s for key, s in seconds.items()}
    non_finite = sorted(f"{n}/{f}/{a}" for (n, f, a), t in trainers.items() if not math.isfinite(t.last_loss))
    del trainers

    def table(value) -> dict:
        return {str(n): {f: {a: value(n, f, a) for a in aggregators} for f in families} for n in modalities}

    out: dict = {
        "settings": {
            "features": FEATURES,
            "batch": BATCH,
            "hidden": HIDDEN,
            "size": SIZE,
            "likelihood": "gaussian",
            "timed_steps_per_configuration": rounds * max(1, math.ceil(steps / rounds)),
            "rounds": rounds,
            "timing_seconds": round(timing_s, 1),
            "round_seconds": [round(x, 1) for x in round_seconds],
        },
        # configurations whose steps took so long that they got fewer timed steps (round_robin's time cap)
        "fewer_timed_steps": {
            f"{n}/{f}/{a}": c for (n, f, a), c in counts.items() if c < rounds * max(1, math.ceil(steps / rounds))
        },
        "ms_per_step": table(lambda n, f, a: round(ms[n, f, a], 2)),
        "samples_per_second": table(lambda n, f, a: round(1000 * BATCH / ms[n, f, a], 1)),
        "ms_per_step_fastest_round": table(lambda n, f, a: round(best_round[n, f, a], 2)),
    }
    for other in ("mopoe", "moe", "mopoe-sampled"):
        if other in aggregators and "poe" in aggregators:
            out[f"{other}_over_poe"] = {
                str(n): {f: round(ms[n, f, other] / ms[n, f, "poe"], 3) for f in families} for n in modalities
            }
    if "mopoe" in aggregators and "mopoe-sampled" in aggregators:
        out["mopoe_sampled_speedup"] = {
            str(n): {f: round(ms[n, f, "mopoe"] / ms[n, f, "mopoe-sampled"], 3) for f in families} for n in modalities
        }
    if "gaussian" in families:
        out["ratio_to_gaussian"] = {
            str(n): {a: {f: round(ms[n, f, a] / ms[n, "gaussian", a], 3) for f in families} for a in aggregators}
            for n in modalities
        }
    # linear in M: ms / M flat across M (a fixed per-step overhead makes it fall; a quadratic term makes it rise)
    out["ms_per_step_per_modality"] = {
        a: {f: {str(n): round(ms[n, f, a] / n, 3) for n in modalities} for f in families} for a in aggregators
    }
    lo, hi = min(modalities), max(modalities)
    out["per_modality_growth"] = {
        "what": f"(ms per step / M at M = {hi}) / (the same at M = {lo}); 1 = linear in M, {hi / lo:g} = quadratic",
        **{a: {f: round((ms[hi, f, a] / hi) / (ms[lo, f, a] / lo), 3) for f in families} for a in aggregators},
    }
    if non_finite:
        out["non_finite_loss_at_end"] = non_finite
    if memory_modalities:
        started = time.perf_counter()
        mem = {}
        for n in memory_modalities:
            for f in families:
                for a in aggregators:
                    mem[n, f, a] = peak_memory(f, a, n, memory_steps)
            print(
                f"[scaling] memory M = {n} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True
            )
        methods = sorted({m["method"] for m in mem.values()})
        out["peak_memory"] = {
            "what": (
                f"MiB by which {memory_steps} training steps (gradients, Adam state, activations) raise the peak RSS "
                "of a fresh process holding the model and batch (VmHWM reset to the RSS before the steps); "
                "params_mib = the float32 parameters"
            ),
            "method": methods,
            "modalities_measured": list(memory_modalities),
            "seconds": round(time.perf_counter() - started, 1),
            "peak_increase_mib": {
                str(n): {f: {a: round(mem[n, f, a]["peak_increase_mib"], 1) for a in aggregators} for f in families}
                for n in memory_modalities
            },
            "params_mib": {
                str(n): {f: round(mem[n, f, aggregators[0]]["params_mib"], 2) for f in families}
                for n in memory_modalities
            },
            "rss_before_mib": {
                str(n): round(
                    statistics.median(mem[n, f, a]["rss_before_mib"] for f in families for a in aggregators), 1
                )
                for n in memory_modalities
            },
        }
    return out


# --- matmul efficiency -----------------------------------------------------------------------------


class MatmulProbe:
    """torch.mm on float32 [m x k] @ [k x n]; `step()` times `calls` products (about `target_seconds`, so that it
    can take turns with the training steps in `round_robin`)."""

    def __init__(self, m: int, k: int, n: int, target_seconds: float = 0.05) -> None:
        self.a, self.b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(self.a, self.b)
        once = []
        for _ in range(3):
            started = time.perf_counter()
            torch.mm(self.a, self.b)
            once.append(time.perf_counter() - started)
        self.calls = max(1, int(target_seconds / max(min(once), 1e-7)))
        self.flops = 2.0 * m * k * n * self.calls  # per step

    def step(self) -> float:
        started = time.perf_counter()
        for _ in range(self.calls):
            torch.mm(self.a, self.b)
        return time.perf_counter() - started


def linear_flops(model: nn.Module, run) -> float:
    """Forward FLOPs of every nn.Linear call while `run()` executes: 2 * in * out per row it runs on."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        rows = inputs[0].numel() // module.in_features
        total += 2.0 * module.in_features * module.out_features * rows

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return total


def training_step_flops(model, data, mask, passes: int = 4) -> float:
    """FLOPs of one training step's matmuls: the hooked forward (mean over `passes`, subsets being random) x 3
    (backward = twice the forward: gradients to the inputs and to the weights)."""
    forward = statistics.mean(linear_flops(model, lambda: model(data, mask).loss) for _ in range(passes))
    return 3.0 * forward


def matmul_efficiency(rounds: int, steps_per_round: int, square: int) -> dict:
    """torch.mm's rate on three shapes and the default model's training steps, measured in the same rounds."""
    started = time.perf_counter()
    shapes = {
        f"{BATCH}x{HIDDEN[0]} @ {HIDDEN[0]}x{HIDDEN[1]}": (BATCH, HIDDEN[0], HIDDEN[1]),
        f"{MNIST_BATCH}x784 @ 784x{MNIST_HIDDEN[0]}": (MNIST_BATCH, 784, MNIST_HIDDEN[0]),
        f"{square}x{square} @ {square}x{square}": (square, square, square),
    }
    mlp_shape, mnist_shape, square_shape = shapes
    probes = {name: MatmulProbe(*shape) for name, shape in shapes.items()}
    mods_mnist, mods_tab = mnist(), tabular(3)
    (d1, m1), (d3, m3) = batch_for(mods_mnist, MNIST_BATCH), batch_for(mods_tab, BATCH)
    trainers = {
        "mnist_1_modality": Trainer(
            make(mods_mnist, DEFAULT_LATENT, DEFAULT_AGGREGATOR, MNIST_HIDDEN, size=MNIST_SIZE), d1, m1
        ),
        "tabular_3_modalities": Trainer(make(mods_tab, DEFAULT_LATENT, DEFAULT_AGGREGATOR, HIDDEN, size=SIZE), d3, m3),
    }
    seconds, samples, _ = round_robin(
        {**probes, **trainers}, rounds * steps_per_round, rounds, math.inf, label="matmul_efficiency"
    )
    rates = {name: probe.flops / seconds[name] / 1e9 for name, probe in probes.items()}  # median of the repeats
    models = {}
    for name, trainer in trainers.items():
        flops = training_step_flops(trainer.model, trainer.data, trainer.mask)
        achieved = flops / seconds[name] / 1e9
        models[name] = {
            "batch": trainer.mask.shape[0],
            "gflop_per_step": round(flops / 1e9, 4),
            "ms_per_step": round(1000 * seconds[name], 2),
            "achieved_gflops": round(achieved, 2),
            "fraction_of_mlp_shaped_mm": round(achieved / rates[mlp_shape], 3),
            "fraction_of_square_mm": round(achieved / rates[square_shape], 3),
        }
    models["mnist_1_modality"]["fraction_of_mnist_shaped_mm"] = round(
        models["mnist_1_modality"]["achieved_gflops"] / rates[mnist_shape], 3
    )
    return {
        "mm_gflops": {name: round(rate, 2) for name, rate in rates.items()},
        "mm_gflops_best": {
            name: round(probe.flops / min(map(min, samples[name])) / 1e9, 2) for name, probe in probes.items()
        },
        "repeats": sum(map(len, samples[square_shape])),
        "model": {
            "latent": DEFAULT_LATENT,
            "aggregator": DEFAULT_AGGREGATOR,
            "flop_count": "forward hook on every nn.Linear: 2 * in * out * rows; training step = 3 x forward "
            "(elementwise work, KLs, fusion and Adam are not counted)",
        },
        **models,
        "seconds": round(time.perf_counter() - started, 1),
    }


# --- importance-sampled log-likelihood ---------------------------------------------------------------


class LikelihoodProbe:
    """`step()` times one importance-sampled log-likelihood of the batch."""

    def __init__(self, model, data, mask, n_samples: int) -> None:
        self.model, self.data, self.mask, self.n_samples = model, data, mask, n_samples
        self.finite = True

    def step(self) -> float:
        started = time.perf_counter()
        value = self.model.log_likelihood(self.data, self.mask, n_samples=self.n_samples)
        elapsed = time.perf_counter() - started
        self.finite = self.finite and bool(torch.isfinite(value).all())
        return elapsed


def iwae(families, rows: int, n_samples: int, repeats: int) -> dict:
    """log_likelihood(n_samples) on `rows` MNIST-shaped rows, the families taking turns (`repeats` calls each)."""
    started = time.perf_counter()
    mods = mnist()
    data, mask = batch_for(mods, rows)
    probes = {
        family: LikelihoodProbe(make(mods, family, "poe", MNIST_HIDDEN, size=MNIST_SIZE).eval(), data, mask, n_samples)
        for family in families
    }
    # the hooked call, one per family, is also the warm-up
    flops = {
        family: linear_flops(p.model, lambda p=p: p.model.log_likelihood(data, mask, n_samples=n_samples))
        for family, p in probes.items()
    }
    seconds, _, _ = round_robin(probes, repeats, repeats, math.inf, label="iwae", warm_up=False)
    out: dict = {
        "rows": rows,
        "n_samples": n_samples,
        "aggregator": "poe",
        "hidden": MNIST_HIDDEN,
        "size": MNIST_SIZE,
        "repeats": repeats,
    }
    for family, probe in probes.items():
        per_second = rows / seconds[family]
        out[family] = {
            "seconds_per_batch": round(seconds[family], 3),
            "rows_per_second": round(per_second, 2),
            "minutes_for_10000_rows": round(10_000 / per_second / 60, 2),
            "gflop_per_batch": round(flops[family] / 1e9, 2),
            "achieved_gflops": round(flops[family] / seconds[family] / 1e9, 2),
            "finite": probe.finite,
        }
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


# --- main --------------------------------------------------------------------------------------------


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: M in 2, 3, two families, few steps, smaller sizes"
    )
    parser.add_argument(
        "--modalities", type=int, nargs="+", help=f"numbers of modalities (default {' '.join(map(str, MODALITIES))})"
    )
    parser.add_argument("--families", nargs="+", choices=list(LATENT_FAMILIES), help="default: every family")
    parser.add_argument(
        "--aggregators",
        nargs="+",
        choices=list(AGGREGATORS) + list(AGGREGATOR_VARIANTS),
        help="default: every aggregator, and mopoe-sampled (mopoe with --mopoe-kl sampled)",
    )
    parser.add_argument("--steps", type=int, help="timed steps per configuration (default 12; quick 3)")
    parser.add_argument("--rounds", type=int, help="round-robin passes (default 4; quick 1)")
    parser.add_argument(
        "--seconds-per-configuration",
        type=float,
        default=4.0,
        help="cap on a configuration's timed steps (fewer steps, at least one per round, beyond it)",
    )
    parser.add_argument(
        "--memory-modalities",
        type=int,
        nargs="*",
        help=f"M whose configurations get a fresh-process memory measurement (default {' '.join(map(str, MEMORY_MODALITIES))}; quick 3)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--square", type=int, help="side of the square matmul (default 2048; quick 1024)")
    parser.add_argument(
        "--matmul-rounds",
        type=int,
        help="rounds of the matmul / default-model comparison, two steps each (default 6; quick 2)",
    )
    parser.add_argument("--iwae-rows", type=int, help="test rows per log_likelihood call (default 100; quick 10)")
    parser.add_argument("--iwae-samples", type=int, default=1000)
    parser.add_argument("--iwae-repeats", type=int, help="timed calls (default 3; quick 1)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.modalities is None:
        args.modalities = list(QUICK_MODALITIES if quick else MODALITIES)
    if args.families is None:
        args.families = (
            list(dict.fromkeys(["gaussian", DEFAULT_LATENT if DEFAULT_LATENT != "gaussian" else "beta"]))
            if quick
            else list(LATENT_FAMILIES)
        )
    if args.aggregators is None:
        args.aggregators = list(AGGREGATORS) + list(AGGREGATOR_VARIANTS)
    args.steps = args.steps or (3 if quick else 12)
    args.rounds = args.rounds or (1 if quick else 4)
    if args.memory_modalities is None:
        args.memory_modalities = [3] if quick else list(MEMORY_MODALITIES)
    if args.no_memory:
        args.memory_modalities = []
    args.square = args.square or (1024 if quick else 2048)
    args.matmul_rounds = args.matmul_rounds or (2 if quick else 6)
    args.iwae_rows = args.iwae_rows or (10 if quick else 100)
    args.iwae_repeats = args.iwae_repeats or (1 if quick else 3)
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # a caller (the tests) keeps its own setting


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    torch.manual_seed(0)
    result: dict = {
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "defaults": {"latent": DEFAULT_LATENT, "aggregator": DEFAULT_AGGREGATOR},
        "optimiser": "Adam, lr 1e-3" + (", fused" if FUSED_ADAM else ""),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    result["by_modalities"] = by_modalities(
        args.modalities,
        args.families,
        args.aggregators,
        args.steps,
        args.rounds,
        args.memory_modalities,
        seconds_per_configuration=args.seconds_per_configuration,
    )
    result["matmul_efficiency"] = matmul_efficiency(args.matmul_rounds, 2, args.square)
    iwae_families = list(dict.fromkeys([DEFAULT_LATENT, "gaussian"]))
    result["iwae"] = iwae(iwae_families, args.iwae_rows, args.iwae_samples, args.iwae_repeats)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
