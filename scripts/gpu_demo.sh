#!/usr/bin/env bash
# The demo's DMD arms and their evaluations on one GPU, side by side (`mirai demo --jobs`), from the shipped base:
# by default the powered run with the ablation and the dose (3 training seeds x 9 arms). A time budget stops it
# cleanly (SIGINT to the whole process group: every running stage writes its checkpoint), so a second call on a
# warm machine resumes; whatever finished comes back in OUT: results.json/.md, report.html, drift.png, strip.png
# and every arm's eval.json, metrics.jsonl and config.yaml (OUT/demo.tgz, no model files).
# Usage: scripts/gpu_demo.sh OUT [SECONDS]
#   env: DEVICE=cuda, JOBS=8, SEEDS="0 1 2", ARGS="--ablation --weights 0.1 0.5 1.0", WORK=/tmp/mirai_demo,
#        SMOKE=1 (a CPU dry run: --quick with toy sizes)
set -uo pipefail
out=${1:?usage: scripts/gpu_demo.sh OUT [SECONDS]}; budget=${2:-480}
dev=${DEVICE:-cuda}; jobs=${JOBS:-8}; seeds=${SEEDS:-0 1 2}; args=${ARGS:---ablation --weights 0.1 0.5 1.0}
work=${WORK:-/tmp/mirai_demo}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$out" "$work"
t0=$(date +%s)
[ "$dev" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
smoke=(); [ -n "${SMOKE:-}" ] && smoke=(--quick --samples 2 --sampling-seeds 0)
# shellcheck disable=SC2086  # seeds and args are word lists
setsid python3 -m mirai.cli demo --seeds $seeds $args --jobs "$jobs" --device "$dev" --out "$work/demo" \
  "${smoke[@]}" > "$out/demo.log" 2>&1 &
pid=$!
( sleep "$budget"; echo "budget of $budget s spent: stopping (run again to resume)" >> "$out/demo.log"
  kill -INT -- -"$pid" 2>/dev/null ) &
watchdog=$!
wait "$pid"; rc=$?
kill "$watchdog" 2>/dev/null
grep -v "^\s*$" "$out/demo.log" | tail -60
(cd "$work" && find demo -maxdepth 1 -type f ! -name '*.safetensors' ; \
 find demo -mindepth 3 -maxdepth 3 \( -name eval.json -o -name eval.csv -o -name metrics.jsonl -o -name config.yaml \)) \
  | tar czf "$out/demo.tgz" -C "$work" -T - 2>/dev/null
echo "mirai demo: rc $rc, $(( $(date +%s) - t0 )) s in all; $(tar tzf "$out/demo.tgz" | grep -c eval.json) evaluated runs in $out/demo.tgz"
exit $rc
