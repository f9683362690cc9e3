#!/usr/bin/env bash
# The Causal-Forcing baseline pipeline at the tiny preset, stage by stage, with each stage's wall time:
#   bidirectional teacher -> causal AR teacher (teacher forcing) -> ODE pairs + 4-step student -> self-rollout DMD.
# Every stage resumes if interrupted (run the script again). Extra arguments go to every `mirai train`,
# e.g. scripts/baseline_pipeline.sh --set train.threads=2
set -euo pipefail
mkdir -p runs
for stage in tiny_teacher tiny_ar tiny_ode tiny_dmd; do
  start=$(date +%s)
  mirai train --config "configs/$stage.yaml" "$@"
  echo "$stage $(( $(date +%s) - start ))s" | tee -a runs/pipeline_times.txt
done
