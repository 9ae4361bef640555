#!/usr/bin/env bash
# Reproduce the shipped surrogates in pretrained/: one training run per circuit, then copy surrogate.pt.
# Usage: scripts/train_all.sh [circuit ...]   (default: every circuit that has a <name>_pretrained experiment)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
circuits=("$@")
if [ ${#circuits[@]} -eq 0 ]; then
  for f in configs/experiment/*_pretrained.yaml; do circuits+=("$(basename "$f" _pretrained.yaml)"); done
fi
for c in "${circuits[@]}"; do
  run="outputs/pretrained/$c"
  envs=()
  # the shipped amp.pt and feram.pt were trained with one torch thread: float rounding changes the
  # L-BFGS path (with two threads feram's seed 0 stalls at 10 ns; docs/surrogate_ablation.md)
  if [ "$c" = feram ] || [ "$c" = amp ]; then envs=(OMP_NUM_THREADS=1); fi
  env ${envs[@]+"${envs[@]}"} "$PY" scripts/train.py "experiment=${c}_pretrained" seed=0 "hydra.run.dir=$run"
  cp "$run/surrogate.pt" "pretrained/$c.pt.tmp" && mv "pretrained/$c.pt.tmp" "pretrained/$c.pt"
  echo "pretrained/$c.pt <- $run"
done
