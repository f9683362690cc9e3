#!/usr/bin/env bash
# The continued base, one more cycle, on one GPU: the path of scripts/continued_chain.sh (more teacher, then the AR
# teacher afresh from it, then the ODE student and the probes) from a base's teacher, sized for a GPU lease:
#   1. one more warm-up + cosine cycle of the bidirectional teacher: TEACHER_STEPS (4,000) at peak LR TEACHER_LR
#      (3e-4), from the given teacher's weights with a fresh AdamW;
#   2. the AR teacher afresh from that teacher with the recipe's AR stage (AR_STEPS, 1,250, at 5e-4);
#   3. the ODE student distilled from that AR teacher, all three probed at 1x and written as a base with each
#      file's lineage (scripts/continued_base.py).
# The candidate of each run is its LAST checkpoint, fixed before it ran (not its best probe).
# What comes back (OUT, small enough for the device tool): each candidate as fp16 as soon as it exists (OUT/teacher,
# OUT/ar: the CPU can finish the chain from them), the base in OUT/base when the chain ends (the fp16 candidates are
# then removed), and OUT/runs.tgz (every run's config, metrics and probes, no weights) on any exit.
# Usage: scripts/gpu_continued.sh TEACHER WORK OUT   (env: DEVICE=cuda, WORKERS=14, TEACHER_STEPS, TEACHER_LR,
#   AR_STEPS; each run is probed at its start, half-way and end)
#   e.g. scripts/gpu_continued.sh checkpoints/world/teacher.safetensors runs/gpu_chain $OUT
#   then, if the probes clear 0.8: cp OUT/base/* checkpoints/world/
# Time: about 7.5 minutes on one H200 (a teacher step about 53 ms at batch 64, bf16 autocast).
set -euo pipefail
start=${1:?usage: scripts/gpu_continued.sh TEACHER WORK OUT}
work=${2:?usage: scripts/gpu_continued.sh TEACHER WORK OUT}
out=${3:?usage: scripts/gpu_continued.sh TEACHER WORK OUT}
dev=${DEVICE:-cuda}; workers=${WORKERS:-14}; steps=${TEACHER_STEPS:-4000}; lr=${TEACHER_LR:-3e-4}; ar=${AR_STEPS:-1250}
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH=$here/../src PYTHONUNBUFFERED=1
mkdir -p "$work" "$out"
on=(train.device="$dev" data.num_workers="$workers")
stage() { python3 "$here/continue_stage.py" "$@" "${on[@]}"; }
half() { python3 -c "import sys; from mirai.checkpoint import save_half; save_half(*sys.argv[1:])" "$1" "$2"; }
pack() { tar czf "$out/runs.tgz" -C "$work" --exclude='*.safetensors' --exclude='ode_pairs' --exclude='*.tmp' . \
  2>/dev/null || true; }
trap pack EXIT
t0=$(date +%s)
since() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

stage teacher "$start" "$work/teacher" "$steps" "$lr" $(( steps / 2 ))
teacher="$work/teacher/ema_$steps.safetensors"
half "$teacher" "$out/teacher.safetensors"; since "teacher done"
stage ar "$teacher" "$work/ar" "$ar" 5e-4 $(( ar / 2 ))
half "$work/ar/ema_$ar.safetensors" "$out/ar.safetensors"; since "AR teacher done"
python3 "$here/continued_base.py" "$teacher" "$work/ar/ema_$ar.safetensors" "$work/base_run" \
  --device "$dev" --workers "$workers"
mkdir -p "$out/base" && cp "$work/base_run/base/"* "$out/base/" && rm "$out/teacher.safetensors" "$out/ar.safetensors"
since "the base: $out/base"
