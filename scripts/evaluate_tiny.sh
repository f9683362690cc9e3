#!/usr/bin/env bash
# After scripts/baseline_pipeline.sh:
#  (1) the distillation table at 1x the training length (8 frames): the AR teacher with 16 and 4 Euler steps,
#      the ODE student and the DMD student, 128 videos per sampling seed, sampling seeds 0 1 2;
#  (2) baseline vs Video-Mirai on 4x-length rollouts: for each training seed in $TRAIN_SEEDS (default "0 1")
#      both DMD arms start from the same ODE checkpoint with that seed; each is evaluated over sampling
#      seeds 0 1 2 (32 videos each), and the HTML report compares the seed-0 pair.
# Runs that already finished are not retrained (delete the folder to redo one).
set -euo pipefail
TRAIN_SEEDS=${TRAIN_SEEDS:-0 1}
E="mirai eval --device cpu"
$E --ckpt runs/tiny_ar --frames 8 --samples 128 --seeds 0 1 2 --out runs/eval/ar_euler16
$E --ckpt runs/tiny_ar --frames 8 --samples 128 --seeds 0 1 2 --set sample.steps=4 --out runs/eval/ar_euler4
$E --ckpt runs/tiny_ode --frames 8 --samples 128 --seeds 0 1 2 --out runs/eval/ode
$E --ckpt runs/tiny_dmd --frames 8 --samples 128 --seeds 0 1 2 --out runs/eval/dmd
for s in $TRAIN_SEEDS; do
  sfx=$([ "$s" = 0 ] && echo "" || echo "_s$s")  # seed 0's baseline is the pipeline's own runs/tiny_dmd
  for arm in dmd mirai; do
    run=runs/tiny_$arm$sfx
    if [ ! -f "$run/model.safetensors" ]; then
      start=$(date +%s)
      mirai train --config configs/tiny_dmd.yaml --set train.seed=$s --set train.out_dir=$run \
        --set foresight.enabled=$([ $arm = mirai ] && echo true || echo false)
      echo "tiny_$arm$sfx $(( $(date +%s) - start ))s" | tee -a runs/pipeline_times.txt
    fi
    $E --ckpt $run --frames 32 --samples 32 --seeds 0 1 2
  done
done
mirai compare runs/tiny_dmd runs/tiny_mirai --out runs/report_tiny.html
