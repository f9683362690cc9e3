#!/usr/bin/env bash
# The tiny baseline pipeline and the foresight comparison on one GPU, same configs as on the CPU.
# Usage: scripts/gpu_pipeline.sh OUT_DIR [SEEDS...]   (runs land in runs/gpu; a tarball of the light files in OUT_DIR)
set -uo pipefail
out=${1:-gpu_out}; shift || true
seeds=${*:-0 1}
mkdir -p "$out" ${RUNS:-runs/gpu}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
M="python3 -m mirai.cli"
R=${RUNS:-runs/gpu}
N1=${N1:-256}; N8=${N8:-96}; EXTRA=${EXTRA:-}  # sample counts; EXTRA: more --set flags for every stage (smoke tests)
pack() { tar czf "$out/runs.tgz" --exclude='*.safetensors' --exclude='ode_pairs' --exclude='*.tmp' $R 2>/dev/null; }
stage() { local name=$1; shift; local t0=$(date +%s); $M train "$@" $EXTRA 2>&1 | tail -3; echo "$name $(( $(date +%s) - t0 ))s" | tee -a $R/times.txt; pack; }
nvidia-smi --query-gpu=name,memory.total --format=csv | tee $R/gpu.txt
stage teacher --config configs/tiny_teacher.yaml --set train.out_dir=$R/teacher
stage ar --config configs/tiny_ar.yaml --set train.out_dir=$R/ar --set train.init_from=$R/teacher
stage ode --config configs/tiny_ode.yaml --set train.out_dir=$R/ode --set train.init_from=$R/ar --set distill.teacher=$R/ar
# 1x-length samples for the distribution-distance table (AR teacher with many / 4 Euler steps, ODE student)
$M sample --ckpt $R/ar --frames 8 --num $N1 --seed 100 --set sample.steps=16 --out $R/ar/x1_euler16.npz
$M sample --ckpt $R/ar --frames 8 --num $N1 --seed 100 --set sample.steps=4 --out $R/ar/x1_euler4.npz
$M sample --ckpt $R/ode --frames 8 --num $N1 --seed 100 --out $R/ode/x1.npz
pack
for s in $seeds; do
  for arm in false true; do
    stage "dmd_s${s}_foresight_${arm}" --config configs/tiny_dmd.yaml --set train.out_dir=$R/dmd_s${s}_f${arm} \
      --set train.init_from=$R/ode --set dmd.teacher=$R/teacher --set train.seed=$s --set foresight.enabled=$arm
    $M sample --ckpt $R/dmd_s${s}_f${arm} --frames 8 --num $N1 --seed 100 --out $R/dmd_s${s}_f${arm}/x1.npz
    $M sample --ckpt $R/dmd_s${s}_f${arm} --frames 64 --num $N8 --seed 200 --out $R/dmd_s${s}_f${arm}/x8.npz
    pack
  done
done
stage stage1_tiny --config configs/tiny.yaml --set train.out_dir=$R/stage1_tiny
pack
