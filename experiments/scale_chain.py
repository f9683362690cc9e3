"""Before/after of the scale changes, per stage at 8 GPUs: the shipped config with the changes reverted, then each
added back cumulatively, each planned; prints one JSON line per plan."""
import json, sys, time
from mirai.config import load_config
from mirai.plan.report import peak_step
from mirai.plan.simulate import plan_run

name = sys.argv[1]
dmd = name.startswith("dmd")
before = ["dist.generator=ddp", "dist.activation_checkpointing=false"]
changes = [("FSDP2 for the generator", ["dist.generator=fsdp"]),
           ("activation checkpointing", ["dist.activation_checkpointing=true"])]
if dmd:
    before = ["dist.frozen_dtype=fp32", "dist.teacher=replicate", "dist.generator=ddp", "dist.critic=ddp",
              "dist.predictor=ddp", "dist.activation_checkpointing=false", "sample.kv_cache_dtype=fp32",
              "foresight.replay_device=device"]
    changes = [("frozen models in bf16", ["dist.frozen_dtype=bf16"]),
               ("FSDP2 for the frozen real score/encoder", ["dist.teacher=fsdp"]),
               ("FSDP2 for generator, critic, predictor", ["dist.generator=fsdp", "dist.critic=fsdp", "dist.predictor=fsdp"]),
               ("activation checkpointing (cached rollout forwards too)", ["dist.activation_checkpointing=true"]),
               ("bf16 KV cache", ["sample.kv_cache_dtype=bf16"]),
               ("replay buffer in host memory", ["foresight.replay_device=cpu"])]
sets = list(before)
for label, extra in [("before", [])] + changes:
    sets += extra
    cfg = load_config(f"configs/wan/{name}.yaml", sets)
    t0 = time.time()
    run = plan_run(cfg, 8, rollout=False)
    step = peak_step(run)
    print(json.dumps({"stage": name, "change": label, "sets": sets, "peak_bytes": step.peak["total"],
                      "by_kind": step.peak, "plan_s": round(time.time() - t0)}), flush=True)
    if extra and extra == changes[-1][1]:
        break
