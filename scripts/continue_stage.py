"""Does a shared stage of the demo's base reach the probe target (identity and coherence >= 0.8 at 1x) with more
training? Continue it from a model file (its EMA weights; a fresh AdamW and a second warm-up + cosine cycle of
STEPS steps at peak LR), and probe the EMA every EVERY steps as `mirai.demo.base_probes` does (64 videos x
sampling seeds 0 and 1; the teacher sampled whole with 32 Euler steps and CFG 3). Probes go to OUT/probes.json,
each probed EMA to OUT/ema_STEP.safetensors. Resumable: rerun the same command.
Usage: python scripts/continue_stage.py {teacher,ar} MODEL_FILE OUT STEPS LR EVERY [KEY=VALUE ...]
  e.g. python scripts/continue_stage.py teacher checkpoints/world/teacher.safetensors runs/teacher_more 2000 5e-4 500
  Trailing KEY=VALUE pairs are config overrides, e.g. train.threads=1 to run two continuations side by side, or
  train.device=cuda data.num_workers=14 on a GPU (the probes run on train.device too).
  RECIPE=FILE (default configs/demo_base.yaml) takes the stage's overrides and world from that recipe, e.g.
  RECIPE=configs/demo_base_hard.yaml continues a stage in the harder world (its probes too).
"""
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from mirai.config import load_config, save_config
from mirai.demo import BASE_RECIPE, CONFIGS, STAGE_CONFIGS, read_recipe, recipe_overrides, stage_probes
from mirai.eval.probes import train_probe
from mirai.training.loop import TrainingInterrupted, train


def main() -> None:  # a function: the data loader's workers are spawned and re-import this file
    stage, init, out, steps, lr, every = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5], \
        int(sys.argv[6])
    recipe = read_recipe(Path(os.environ.get("RECIPE", BASE_RECIPE)))
    cfg = load_config(CONFIGS / STAGE_CONFIGS[stage], recipe_overrides(recipe, stage) + [
        f"train.steps={steps}", f"train.lr={lr}", "train.warmup_steps=100", f"train.init_from={init}",
        f"train.out_dir={out}", "train.sample_every=0", "train.ckpt_every=250"] + sys.argv[7:])
    probe = train_probe(cfg.world)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)  # the probes too, not only the training steps
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    log = out / "probes.json"
    done = json.loads(log.read_text()) if log.exists() else {}

    def record(step: int, model_file: Path) -> None:
        if str(step) in done:
            return
        t0 = time.time()
        scores = stage_probes(model_file, stage, probe, cfg.data.clip_frames, [0, 1], cfg.train.device)
        done[str(step)] = scores | {"probe_s": time.time() - t0}
        log.write_text(json.dumps(done, indent=1))
        print(step, {k: round(done[str(step)][k], 3) for k in ("identity", "coherence", "count", "continuity")},
              flush=True)

    if not (out / "ema_0.safetensors").exists():
        shutil.copy(init, out / "ema_0.safetensors")
    record(0, out / "ema_0.safetensors")
    for stop in range(every, steps + 1, every):
        if str(stop) not in done:
            try:
                train(cfg, stop_at=stop)
            except TrainingInterrupted as e:  # SIGINT/SIGTERM: its message says where the checkpoint is
                sys.exit(f"stopped: {e}")
            shutil.copy(out / "model.safetensors", out / f"ema_{stop}.safetensors")
            record(stop, out / f"ema_{stop}.safetensors")


if __name__ == "__main__":
    main()
