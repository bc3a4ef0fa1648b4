#!/usr/bin/env bash
# Which function of the sticks should the decoder read? Beta sticks, K=50, alpha=5, same budget and seed.
# Usage: bash benchmarks/decoder_input.sh [EPOCHS] [OUT]; prints one JSON line per setting.
set -euo pipefail
EPOCHS=${1:-10}; OUT=${2:-runs/decoder_input}; PY=${PY:-.venv/bin/python}
for input in pi logpi logitv; do
  for seed in 0 1; do
    dir="$OUT/beta_${input}_s$seed"
    $PY -m infinimodal.cli train --latent beta --decoder-input "$input" --epochs "$EPOCHS" --seed "$seed" --out "$dir" --quiet >/dev/null 2>"$dir.log" || { cat "$dir.log"; exit 1; }
    $PY -m infinimodal.cli evaluate "$dir" --iw-samples 100 --quiet >/dev/null 2>>"$dir.log"
    $PY -c "import json,sys; e=json.load(open('$dir/eval.json')); c=json.load(open('$dir/config.json')); print(json.dumps({'decoder_input':'$input','seed':$seed,'epochs':$EPOCHS,'elbo':e['elbo'],'log_likelihood_100':e['log_likelihood'],'knn_error':e['knn_error'],'kl_active':e['kl_active'],'sticks_99':e['sticks_99'],'train_seconds':c['train_seconds']}))"
  done
done
