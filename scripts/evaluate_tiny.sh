#!/usr/bin/env bash
# After scripts/baseline_pipeline.sh: train the Video-Mirai arm from the same ODE checkpoint and seed,
# then evaluate. (1) the distillation table at 1x the training length, (2) baseline vs foresight on
# 4x-length rollouts over 3 sampling seeds, with the HTML report.
set -euo pipefail
start=$(date +%s)
mirai train --config configs/tiny_dmd.yaml --set foresight.enabled=true --set train.out_dir=runs/tiny_mirai
echo "tiny_mirai $(( $(date +%s) - start ))s" | tee -a runs/pipeline_times.txt
E="mirai eval --device cpu"
$E --ckpt runs/tiny_ar --frames 8 --samples 128 --seeds 0 --out runs/eval/ar_euler16
$E --ckpt runs/tiny_ar --frames 8 --samples 128 --seeds 0 --set sample.steps=4 --out runs/eval/ar_euler4
$E --ckpt runs/tiny_ode --frames 8 --samples 128 --seeds 0 --out runs/eval/ode
$E --ckpt runs/tiny_dmd --frames 8 --samples 128 --seeds 0 --out runs/eval/dmd
$E --ckpt runs/tiny_dmd --frames 32 --samples 32 --seeds 0 1 2
$E --ckpt runs/tiny_mirai --frames 32 --samples 32 --seeds 0 1 2
mirai compare runs/tiny_dmd runs/tiny_mirai --out runs/report_tiny.html
