#!/usr/bin/env bash
# The continued base, end to end: the CPU path from a teacher trained with the recipe (configs/demo_base.yaml; the
# first shipped base's, 4,000 steps on an H200, is kept in checkpoints/world_h200/) to the base now shipped in
# checkpoints/world/, whose provenance.json records this chain as each file's lineage. The steps:
#   1-3. three more warm-up + cosine cycles of the bidirectional teacher (2,000 steps at peak LR 5e-4, 1,500 at
#        3e-4, 800 at 1e-4; 8,300 steps in all), each started from the last cycle's EMA with a fresh AdamW;
#   4.   the AR teacher trained afresh from that teacher with the recipe's own AR stage (1,250 steps, 5e-4);
#   5.   the ODE student distilled from that AR teacher, all three probed at 1x and written as a base with each
#        file's lineage in its provenance.json (scripts/continued_base.py).
# The candidate of each run is its LAST checkpoint, fixed before it ran (not its best probe).
# Resumable: rerun the same command; finished runs are skipped, a stopped one resumes from its checkpoint.
# Usage: scripts/continued_chain.sh TEACHER OUT [KEY=VALUE ...]   (KEY=VALUE, e.g. train.threads=2, goes to every
#   training run), e.g. scripts/continued_chain.sh checkpoints/world_h200/teacher.safetensors runs/chain
#   then, if the probes clear 0.8: cp OUT/base_run/base/* checkpoints/world/
# Time: about 2 hours on a 2-core AVX-512 EPYC (a teacher step 0.84 to 0.9 s, an AR step 1.35 s).
set -euo pipefail
start=${1:?usage: scripts/continued_chain.sh TEACHER OUT [KEY=VALUE ...]}
out=${2:?usage: scripts/continued_chain.sh TEACHER OUT [KEY=VALUE ...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
stage() { python "$here/continue_stage.py" "$@"; }

stage teacher "$start" "$out/teacher_c2" 2000 5e-4 500 "$@"
stage teacher "$out/teacher_c2/ema_2000.safetensors" "$out/teacher_c3" 1500 3e-4 500 "$@"
stage teacher "$out/teacher_c3/ema_1500.safetensors" "$out/teacher_c4" 800 1e-4 400 "$@"
teacher="$out/teacher_c4/ema_800.safetensors"
stage ar "$teacher" "$out/ar" 1250 5e-4 250 "$@"
python "$here/continued_base.py" "$teacher" "$out/ar/ema_1250.safetensors" "$out/base_run"
echo "the base: $out/base_run/base (its probes at 1x are in its provenance.json)"
