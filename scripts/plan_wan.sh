#!/usr/bin/env bash
# `mirai plan` of every config in configs/wan/, on 8 GPUs (80 and 141 GB) and on 1 GPU (24, 48, 80 and 141 GB),
# one JSON per plan in OUT_DIR, then the README's table of them (scripts/plan_table.py). CPU only; about 45
# minutes on 2 cores (a DMD plan takes 4-6 minutes, and more where it plans the changes that make it fit).
#   scripts/plan_wan.sh OUT_DIR
set -euo pipefail
out="${1:?usage: scripts/plan_wan.sh OUT_DIR}"
mkdir -p "$out"
for ranks in 8 1; do
    if [ "$ranks" = 8 ]; then gpus=(--gpu h100 --gpu h200); else gpus=(--gpu rtx4090 --gpu l40s --gpu h100 --gpu h200); fi
    for stage in teacher_forcing ode dmd_foresight_1.3b dmd_foresight; do
        mirai plan --config "configs/wan/$stage.yaml" --gpus "$ranks" "${gpus[@]}" --json > "$out/$stage.$ranks.json"
    done
done
python "$(dirname "$0")/plan_table.py" "$out"
