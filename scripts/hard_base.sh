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
#   KEY=VALUE pairs go to the teacher and AR runs. TEACHER_STEPS and AR_STEPS (default 2,000 and 750) set the two
#   runs' lengths (each probed at its middle and end); DEVICE=cuda WORKERS=14 runs every stage and probe on a GPU,
#   e.g. TEACHER_STEPS=6000 AR_STEPS=1250 DEVICE=cuda WORKERS=14 scripts/hard_base.sh checkpoints/world runs/hard
# Time: 1.2 hours on a 2-core AVX-512 EPYC with the default lengths (a teacher step 0.9 s, an AR step 1.4 s, the
# ODE stage 20 minutes).
set -euo pipefail
base=${1:?usage: scripts/hard_base.sh BASE OUT [KEY=VALUE ...]}
out=${2:?usage: scripts/hard_base.sh BASE OUT [KEY=VALUE ...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
export RECIPE="$here/../configs/demo_base_hard.yaml"
stage() { python "$here/continue_stage.py" "$@"; }

teacher_steps=${TEACHER_STEPS:-2000}
ar_steps=${AR_STEPS:-750}
on=()  # where the teacher and AR runs train: their configs' own device unless DEVICE is set
if [ -n "${DEVICE:-}" ]; then on=(train.device="$DEVICE" data.num_workers="${WORKERS:-0}"); fi

stage teacher "$base/teacher.safetensors" "$out/teacher" "$teacher_steps" 3e-4 $((teacher_steps / 2)) "${on[@]}" "$@"
stage ar "$base/ar.safetensors" "$out/ar" "$ar_steps" 3e-4 $((ar_steps / 2)) "${on[@]}" "$@"
python "$here/continued_base.py" "$out/teacher/ema_$teacher_steps.safetensors" "$out/ar/ema_$ar_steps.safetensors" \
    "$out/base_run" --recipe "$RECIPE" --device "${DEVICE:-cpu}" --workers "${WORKERS:-0}"
echo "the hard base: $out/base_run/base (its probes at 1x are in its provenance.json)"
