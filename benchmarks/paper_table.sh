#!/usr/bin/env bash
# The SB-VAE paper's MNIST comparison (Nalisnick & Smyth 2017, table of -log p(x) and kNN error):
# gaussian D=50 and kumaraswamy / beta / logitnormal K=50, alpha=5, same MLP (one hidden layer of 500 ReLUs),
# same epochs and seed, full MNIST, 1000 importance samples. Prints one JSON line per model.
# Usage: bash benchmarks/paper_table.sh [EPOCHS] [OUT] [SEED]
set -euo pipefail
EPOCHS=${1:-50}; OUT=${2:-runs/paper}; SEED=${3:-0}; PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
for latent in gaussian kumaraswamy beta logitnormal; do
  dir="$OUT/${latent}_s$SEED"
  if [ "$latent" = gaussian ]; then size=(--latent-dim 50); else size=(--truncation 50 --alpha 5); fi
  $PY -m infinimodal.cli train --data mnist --latent "$latent" "${size[@]}" --epochs "$EPOCHS" --seed "$SEED" --out "$dir" --quiet >/dev/null 2>"$dir.log" || { tail -5 "$dir.log"; exit 1; }
  $PY -m infinimodal.cli evaluate "$dir" --iw-samples 1000 --quiet >/dev/null 2>>"$dir.log" || { tail -5 "$dir.log"; exit 1; }
  $PY - "$dir" <<'PYEOF'
import json, sys
run = sys.argv[1]
e = json.load(open(f"{run}/eval.json")); c = json.load(open(f"{run}/config.json"))
keys = ("elbo", "log_likelihood", "iw_samples", "knn_error", "active_dims", "kl_active", "sticks_99", "eval_seconds")
print(json.dumps({"run": run, "latent": c["latent"], "epochs": c["epochs"], "seed": c["seed"],
                  "decoder_input": c["decoder_input"] if c["latent"] != "gaussian" else None,
                  "train_seconds": round(c["train_seconds"], 1)} | {k: e[k] for k in keys if k in e}))
PYEOF
done
