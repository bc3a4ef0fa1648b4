"""Markdown rows for docs/results.md from run directories (config.json + eval.json), so no figure is copied by hand.

    python benchmarks/format_table.py runs/paper/*_s0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    config = json.loads((run / "config.json").read_text())
    result = json.loads((run / "eval.json").read_text())
    size = f"D={config['latent_dim']}" if config["latent"] == "gaussian" else f"K={config['truncation']}, alpha={config['alpha']:g}, {config['decoder_input']}"
    knn = " / ".join(f"{100 * result['knn_error'][k]:.2f}" for k in ("3", "5", "10"))
    knn_dec = result.get("knn_error_decoder_input")
    knn_dec = " / ".join(f"{100 * knn_dec[k]:.2f}" for k in ("3", "5", "10")) if knn_dec else "same"
    sticks = f"{result['sticks_99']:.1f}" if "sticks_99" in result else "-"
    return (
        f"| {config['latent']} ({size}) | {config['seed']} | {config['epochs']} | {-result['log_likelihood']:.2f} | {-result['elbo']:.2f} "
        f"| {knn} | {knn_dec} | {result['active_dims']} | {result['kl_active']} | {sticks} | {config['train_seconds'] / config['epochs']:.1f} |"
    )


def main() -> None:
    print("| model | seed | epochs | -log p(x) (S=1000) | -ELBO | kNN error % k=3/5/10 (paper protocol) | kNN error % in decoder space | active units | KL-active | sticks_99 | s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in sys.argv[1:]:
        run = Path(path)
        if (run / "eval.json").is_file():
            print(row(run))


if __name__ == "__main__":
    main()
