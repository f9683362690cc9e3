#!/usr/bin/env bash
# The long-video sampler options on the drift curves: the demo's baseline DMD arm (training seed 0) rolled out to
# 128x the clip, 4 unseen scenes, sampling seed 0, each option through `mirai eval`; JSONs in $OUT/NAME/eval.json.
set -euo pipefail
RUN=${1:?run folder}; OUT=${2:?output folder}
declare -A OPTS=(
  [win3]="--set sample.window_chunks=3"
  [win3_recache4]="--set sample.window_chunks=3 --set sample.recache_every=4"
  [win16]="--set sample.window_chunks=16"
  [win16_absolute]="--set sample.window_chunks=16 --set sample.positions=absolute"
  [win16_recache4]="--set sample.window_chunks=16 --set sample.recache_every=4"
  [sink0_win4]="--set sample.sink_chunks=0 --set sample.window_chunks=4"
)
for name in win3 win3_recache4 win16 win16_absolute win16_recache4 sink0_win4; do
  [ -f "$OUT/$name/eval.json" ] && continue
  start=$(date +%s)
  mirai eval --ckpt "$RUN" --frames 1024 --samples 4 --seeds 0 --out "$OUT/$name" ${OPTS[$name]} > "$OUT/$name.log" 2>&1
  echo "$name $(( $(date +%s) - start )) s"
done
