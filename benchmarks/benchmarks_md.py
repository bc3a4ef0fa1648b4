"""docs/benchmarks.md from the JSON that `make bench` writes (vs_multivae.json, vs_multivae_mfeat.json,
vs_multivae_mfeat_sticks.json, vs_multivae_mfeat_sampled.json, scaling.json, throughput.json, compile.json).

    python benchmarks/benchmarks_md.py runs/bench > docs/benchmarks.md

Every figure in the page comes from those files; a file that is missing leaves its section saying so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAIRS = (("poe", "MVAE"), ("moe", "MMVAE"), ("mopoe", "MoPoE"))
#: Our MoPoE's KL estimates (`--mopoe-kl`) in words.
KL_WORDS = {
    "all": "every subset",
    "sampled": "each row's sampled subset (--mopoe-kl sampled)",
    "sticks-sampled": "every subset's, but the gated family's sticks' at each row's drawn subset (--mopoe-kl "
    "sticks-sampled; the Gaussian's is every subset's)",
}
#: The six-view runs: the JSON file and our KL.
SIX_VIEW_RUNS = (
    ("vs_multivae_mfeat", "all"),
    ("vs_multivae_mfeat_sticks", "sticks-sampled"),
    ("vs_multivae_mfeat_sampled", "sampled"),
)


def read(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def data_description(result: dict) -> str:
    features = ", ".join(str(v) for v in result["features"].values())
    if result.get("data") == "mfeat":
        return (
            f"The six views of the UCI handwritten digits ({features} features, standardised), {result['rows']['train']:,} training rows, "
            "MoPoE over all 63 subsets on both sides"
        )
    return f"Synthetic data, three tabular modalities ({features} features), {result['rows']['train']:,} training rows"


def vs_multivae_section(
    result: dict | None,
    title: str = "Side by side with MultiVae",
    command: str = "python benchmarks/vs_multivae.py --out runs/bench/vs_multivae.json",
) -> list[str]:
    lines = [f"## {title}", ""]
    if result is None:
        return lines + [f"Not run (`{command}`).", ""]
    models = result["models"]
    stick = result["default_latent"]
    kl = result.get("mopoe_kl", "all")  # files written before the option existed: every subset
    lines += [
        f"{data_description(result)}, {result['epochs']} epochs, batch 128, latent 20, 2 x 256 MLPs, "
        f"fixed-scale Gaussian likelihood, {result['threads']} thread(s) each, interleaved in one invocation "
        f"(multivae {result['multivae']}, torch {result['torch']}); our MoPoE's KL: {KL_WORDS[kl]}. "
        "Samples per second count the training epochs only "
        "(validation excluded on both sides); memory is each model's own process, peak over its post-import size.",
        "",
    ]
    rows = []
    for aggregator, theirs in PAIRS:
        if f"multivae/{theirs}" not in models:
            continue
        mv = models[f"multivae/{theirs}"]
        for latent in ("gaussian", stick):
            ours = models[f"infinimodal/{latent}/{aggregator}"]
            rows.append(
                [
                    f"{latent}/{aggregator} vs {theirs}",
                    f"{ours['samples_per_second']:,.0f}",
                    f"{mv['samples_per_second']:,.0f}",
                    f"{ours['samples_per_second'] / mv['samples_per_second']:.2f}x",
                    f"{ours['peak_over_import_mib']:.0f} / {mv['peak_over_import_mib']:.0f}",
                    f"{ours['probe_accuracy']:.3f} / {mv['probe_accuracy']:.3f}",
                ]
            )
    lines += table(
        [
            "ours vs MultiVae",
            "ours samples/s",
            "MultiVae samples/s",
            "speed ratio",
            "MiB over import (ours / theirs)",
            "probe accuracy (ours / theirs)",
        ],
        rows,
    )
    lines += [
        "",
        f"The default stick model ({stick}) against our Gaussian, samples per second: "
        + ", ".join(f"{a} {v['samples_per_second']:.2f}x" for a, v in result["stick_over_our_gaussian"].items()),
        "",
    ]
    return lines


def scaling_section(result: dict | None) -> list[str]:
    lines = ["## Training step against the number of modalities", ""]
    if result is None:
        return lines + ["Not run (`python benchmarks/scaling.py --out runs/bench/scaling.json`).", ""]
    grid = result["by_modalities"]
    settings = grid["settings"]
    default = result["defaults"]["latent"]
    ms = grid["ms_per_step"]
    counts = list(ms)
    lines += [
        f"{settings['features']} features per modality, batch {settings['batch']}, MLP {settings['hidden']}, latent size "
        f"{settings['size']}, {result['threads']} thread(s); median ms per training step (forward, backward, Adam), "
        "every configuration timed round-robin in one process.",
        "",
    ]
    rows = [
        [f"{family}/{aggregator}"] + [f"{ms[m][family][aggregator]:.1f}" for m in counts]
        for family in ms[counts[0]]
        for aggregator in ms[counts[0]][family]
    ]
    lines += table(["model"] + [f"M = {m}" for m in counts], rows)
    lines += ["", "MoPoE's step over PoE's (both on the same M):", ""]
    lines += table(
        ["family"] + [f"M = {m}" for m in counts],
        [
            [family] + [f"{grid['mopoe_over_poe'][m][family]:.2f}" for m in counts]
            for family in grid["mopoe_over_poe"][counts[0]]
        ],
    )
    speedup = grid.get("mopoe_sampled_speedup")
    if speedup:
        lines += [
            "",
            "MoPoE with `--mopoe-kl sampled` (one subset fused and scored per row): its speed-up over MoPoE (same M):",
            "",
        ]
        lines += table(
            ["family"] + [f"M = {m}" for m in counts],
            [[family] + [f"{speedup[m][family]:.2f}x" for m in counts] for family in speedup[counts[0]]],
        )
    growth = grid["per_modality_growth"]
    lines += ["", f"Growth in M ({growth['what']}):", ""]
    lines += table(
        ["family"] + [a for a in growth if a != "what"],
        [[family] + [f"{growth[a][family]:.2f}" for a in growth if a != "what"] for family in growth["poe"]],
    )
    lines += ["", f"Each family's step over the Gaussian's, M = {counts[1] if len(counts) > 1 else counts[0]}:", ""]
    m = counts[1] if len(counts) > 1 else counts[0]
    ratio = grid["ratio_to_gaussian"][m]
    lines += table(
        ["aggregator"] + list(ratio[next(iter(ratio))]), [[a] + [f"{v:.2f}" for v in ratio[a].values()] for a in ratio]
    )
    memory = grid.get("peak_memory")
    if memory:
        lines += ["", f"Memory: {memory['what']}.", ""]
        peak = memory["peak_increase_mib"]
        lines += table(
            ["model"] + [f"M = {m} (MiB)" for m in peak],
            [
                [f"{family}/{a}"] + [f"{peak[m][family][a]:.0f}" for m in peak]
                for family in peak[next(iter(peak))]
                for a in peak[next(iter(peak))][family]
            ],
        )
    lines += [""]
    matmul = result["matmul_efficiency"]
    lines += [
        "## Share of the machine's matmul rate",
        "",
        "Dense float32 matmul measured in the same run: "
        + ", ".join(f"{k}: {v:.0f} GFLOP/s" for k, v in matmul["mm_gflops"].items())
        + f". Training FLOPs from the Linear layers' shapes ({matmul['model']['flop_count']}), default model {default}/"
        f"{matmul['model']['aggregator']}.",
        "",
    ]
    rows = []
    for name in ("mnist_1_modality", "tabular_3_modalities"):
        row = matmul[name]
        rows.append(
            [
                name,
                f"{row['ms_per_step']:.1f}",
                f"{row['achieved_gflops']:.1f}",
                f"{row.get('fraction_of_mlp_shaped_mm', float('nan')):.2f}",
                f"{row['fraction_of_square_mm']:.3f}",
            ]
        )
    lines += table(
        ["model", "ms per step", "GFLOP/s", "share of same-shaped matmul", "share of square matmul"], rows
    ) + [""]
    iwae = result["iwae"]
    lines += [
        "## Importance-sampled log-likelihood",
        "",
        f"log p(x) with S = {iwae['n_samples']} samples, MNIST-shaped (784 Bernoulli pixels, hidden {iwae['hidden']}, one modality), "
        f"{iwae['rows']} test rows a batch:",
        "",
    ]
    lines += table(
        ["family", "test rows per second", "minutes for 10,000 rows"],
        [
            [family, f"{v['rows_per_second']:.1f}", f"{v['minutes_for_10000_rows']:.2f}"]
            for family, v in iwae.items()
            if isinstance(v, dict)
        ],
    )
    return lines + [""]


def throughput_section(result: dict | None) -> list[str]:
    lines = ["## Families with MoPoE on three tabular modalities", ""]
    if result is None:
        return lines + ["Not run (`python benchmarks/throughput.py > runs/bench/throughput.json`).", ""]
    tab = result["mopoe_3_tabular"]
    lines += table(
        ["family", "ms per step", "over Gaussian"],
        [[f, f"{tab['ms_per_step'][f]:.1f}", f"{tab['ratio_to_gaussian'][f]:.2f}"] for f in tab["ms_per_step"]],
    )
    kuma, beta = tab["ms_per_step"].get("kumaraswamy"), tab["ms_per_step"].get("beta")
    if kuma and beta:
        lines += ["", f"Kumaraswamy MoPoE over Beta MoPoE: {kuma / beta:.1f}x."]
    lines += [
        "",
        f"bf16 autocast speed-up on this CPU: MNIST MLP {result['mnist_beta_bf16_autocast_speedup']}x, "
        f"PolyMNIST CNN {result['polymnist5_cnn_bf16_autocast_speedup']}x (below 1: slower).",
        "",
    ]
    return lines


def compile_section(result: dict | None) -> list[str]:
    lines = ["## torch.compile", ""]
    if result is None:
        return lines + ["Not run (`python benchmarks/compile.py > runs/bench/compile.json`).", ""]
    rows = [
        [
            f"{setting} {family}/{result['aggregator']}",
            f"{v['eager_ms']:.1f}",
            f"{v['compiled_ms']:.1f}",
            f"{v['speedup']:.2f}x",
            f"{v['first_compiled_step_seconds']:.0f}",
            v["graph_breaks"],
        ]
        for setting, families in result.items()
        if isinstance(families, dict)
        for family, v in families.items()
    ]
    lines += [f"{result['what']}, {result['threads']} thread(s), torch {result['torch']}:", ""]
    return (
        lines
        + table(["model", "eager ms", "compiled ms", "speed-up", "first compiled step (s)", "graph breaks"], rows)
        + [""]
    )


def main(argv: list[str] | None = None) -> str:
    folder = Path((argv or sys.argv[1:] or ["runs/bench"])[0])
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/benchmarks_md.py) from the JSON in runs/bench; machines here are "
        "small and shared, so compare ratios measured side by side in one run, not absolute figures.",
        "",
    ]
    lines += vs_multivae_section(read(folder, "vs_multivae"))
    for name, kl in SIX_VIEW_RUNS:
        result = read(folder, name)
        kl = result.get("mopoe_kl", "all") if result is not None else kl  # the file says what it measured
        lines += vs_multivae_section(
            result,
            f"Six views side by side with MultiVae's MoPoE (our KL: {kl})",
            f"python benchmarks/vs_multivae.py --data mfeat --aggregators mopoe --mopoe-kl {kl} --out runs/bench/{name}.json",
        )
    lines += scaling_section(read(folder, "scaling"))
    lines += throughput_section(read(folder, "throughput"))
    lines += compile_section(read(folder, "compile"))
    text = "\n".join(lines).rstrip() + "\n"
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
