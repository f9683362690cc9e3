#!/usr/bin/env bash
# The demo's base on one GPU: measure the teacher's step time, size the recipe's step counts to a time budget,
# train the shared stages with `mirai demo --shared-only`, probe them at 1x and write the base to OUT/base
# (fp16 teacher / ar / ode files + provenance.json), the recipe it used to OUT/recipe.yaml and the runs' logs
# and sample sheets to OUT/runs.tgz. Ship it with: cp OUT/base/* checkpoints/world/ && cp OUT/recipe.yaml
# configs/demo_base.yaml.
# Usage: scripts/gpu_base.sh OUT [TRAIN_SECONDS]   (env: DEVICE=cuda, WORKERS=14, SMOKE=1 for a CPU dry run,
#   MODEL="model.dim=256 model.depth=8" for a base of another size: the recipe's `model` list, which every stage
#   takes, the demo's DMD arms included; the calibration measures the teacher's step at that size). The recipe's
#   teacher_cycles run after the teacher stage as they stand (12,300 teacher steps in all), outside the budget.
#   RECIPE=FILE starts from another recipe than configs/demo_base.yaml, e.g. one with a `world` list (a harder world).
set -euo pipefail
out=${1:?usage: scripts/gpu_base.sh OUT [TRAIN_SECONDS]}; budget=${2:-300}
dev=${DEVICE:-cuda}; workers=${WORKERS:-14}; work=${WORK:-/tmp/mirai_base}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$out" "$work"
t0=$(date +%s)
[ "$dev" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
calib_steps=$([ -n "${SMOKE:-}" ] && echo 6 || echo 60)
export RECIPE=${RECIPE:-configs/demo_base.yaml}
# the recipe through read_recipe, so that an `extends` is resolved
world=$(python3 -c "import os; from mirai.demo import read_recipe; print(' '.join(read_recipe(os.environ['RECIPE']).get('world', [])))")
model=$(MODEL="${MODEL:-}" python3 -c "
import os
from mirai.demo import read_recipe
given = read_recipe(os.environ['RECIPE']).get('model', []) + os.environ['MODEL'].split()
print(' '.join({o.split('=')[0]: o for o in given}.values()))")  # later values of a key win
python3 -m mirai.cli train --config configs/tiny_teacher.yaml --set train.out_dir=$work/calibrate \
  --set train.steps=$calib_steps --set train.batch_size=64 --set data.num_workers=$workers --set train.device=$dev \
  --set train.sample_every=0 --set train.log_every=1 --set train.ckpt_every=100000 --set train.flex_attention=false \
  $(for o in $model $world; do echo --set "$o"; done) 2>&1 | tail -1
python3 - "$work/calibrate/metrics.jsonl" "$budget" "$out/recipe.yaml" "${SMOKE:-}" "$model" <<'PY'
import json, os, statistics, sys
import yaml
from mirai.demo import read_recipe
log, budget, path, smoke, model = sys.argv[1], float(sys.argv[2]), sys.argv[3], bool(sys.argv[4]), sys.argv[5].split()
steps = [json.loads(l)["step_s"] for l in open(log)]
s = statistics.median(steps[len(steps) // 3:])
recipe = read_recipe(os.environ["RECIPE"])  # its `extends` resolved: the file written below stands alone
recipe.pop("model", None)
if model:
    recipe = {"model": model, **recipe}
def set_(stage, key, value):
    recipe[stage] = [o for o in recipe[stage] if not o.startswith(key + "=")] + [f"{key}={value}"]
if smoke:
    for stage, n in (("teacher", 12), ("ar", 6), ("ode", 4)):
        set_(stage, "train.steps", n); set_(stage, "train.ckpt_every", n); set_(stage, "train.sample_every", n)
    set_("ode", "distill.num_videos", 16); set_("ode", "distill.shard_size", 8)
    recipe["teacher_cycles"] = [[o for o in c if not o.startswith(("train.steps=", "train.ckpt_every="))]
                                + ["train.steps=4", "train.ckpt_every=4"] for c in recipe.get("teacher_cycles", [])]
else:  # 60% of the budget to the teacher, 30% to the AR teacher (its step ~1.6x), the rest to ODE pairs + steps
    teacher = max(2000, int(0.6 * budget / s) // 500 * 500)
    ar = max(1000, int(0.3 * budget / (1.6 * s)) // 250 * 250)
    set_("teacher", "train.steps", teacher); set_("teacher", "train.sample_every", teacher)
    set_("ar", "train.steps", ar); set_("ar", "train.sample_every", ar)
print(f"teacher step {s * 1000:.1f} ms at batch 64 -> recipe {recipe}", flush=True)
head = [l for l in open(os.environ["RECIPE"]) if l.startswith("#")]
with open(path, "w") as f:
    f.writelines(head)
    f.write(f"# measured teacher step: {s * 1000:.1f} ms at batch 64 (scripts/gpu_base.sh, budget {budget:.0f} s)\n")
    f.write(yaml.safe_dump(recipe, default_flow_style=None, sort_keys=False, width=10**6))  # a line per list
PY
echo "calibrated in $(( $(date +%s) - t0 )) s"
pack() { tar czf "$out/runs.tgz" -C "$work" --exclude='*.safetensors' --exclude='ode_pairs' --exclude='*.tmp' demo 2>/dev/null || true; }
set +e
python3 -m mirai.cli demo --shared-only --from-scratch --recipe "$out/recipe.yaml" --save-base "$out/base" \
  --device "$dev" --workers "$workers" --out "$work/demo" 2>&1 | grep -v "^\s*$"
rc=${PIPESTATUS[0]}
pack
echo "shared stages + probes: rc $rc, $(( $(date +%s) - t0 )) s in all"
[ -f "$out/base/provenance.json" ] && python3 -c "import json; p = json.load(open('$out/base/provenance.json'))['probes_1x']; [print(k, {m: round(v[m], 3) for m in ('identity', 'coherence', 'count', 'continuity', 'layout')}) for k, v in p.items()]"
exit $rc
