#!/usr/bin/env bash
# The hard base (issue 11, item 4): the shipped base fine-tuned in the harder world of configs/demo_base_hard.yaml
# (up to 3 sprites, a panning camera, a pillar in every layout), so that the demo can ask whether foresight helps
# where the baseline drifts more. The steps, on 2 CPU cores:
#   1. the teacher: one more warm-up + cosine cycle in the hard world, 2,000 steps at peak LR 3e-4, from the base's
#      teacher (its EMA, a fresh AdamW), probed at 0, 1,000 and 2,000 steps;
#   2. the AR teacher: 750 steps at peak LR 3e-4 from the base's AR teacher, in the hard world;
#   3. the ODE student distilled afresh from that AR teacher with the recipe's ODE stage; all three probed at 1x in
#      the hard world and written as a base whose provenance.json holds each file's lineage
#      (scripts/continued_base.py).
# The candidate of each run is its LAST checkpoint, fixed before it ran (not its best probe).
# Resumable: rerun the same command; finished runs are skipped, a stopped one resumes from its checkpoint.
# Usage: scripts/hard_base.sh BASE OUT [KEY=VALUE ...], e.g. scripts/hard_base.sh checkpoints/world runs/hard
#   then `mirai demo --base OUT/base_run/base` (the base's recipe carries the hard world to the arms and evaluation).
# Time: about 1.2 hours on a 2-core AVX-512 EPYC (a teacher step 0.9 s, an AR step 1.35 s).
set -euo pipefail
base=${1:?usage: scripts/hard_base.sh BASE OUT [KEY=VALUE ...]}
out=${2:?usage: scripts/hard_base.sh BASE OUT [KEY=VALUE ...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
export RECIPE="$here/../configs/demo_base_hard.yaml"
stage() { python "$here/continue_stage.py" "$@"; }

stage teacher "$base/teacher.safetensors" "$out/teacher" 2000 3e-4 1000 "$@"
stage ar "$base/ar.safetensors" "$out/ar" 750 3e-4 375 "$@"
python "$here/continued_base.py" "$out/teacher/ema_2000.safetensors" "$out/ar/ema_750.safetensors" "$out/base_run" \
    --recipe "$RECIPE"
echo "the hard base: $out/base_run/base (its probes at 1x are in its provenance.json)"
