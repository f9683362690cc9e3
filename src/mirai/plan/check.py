"""The plan against a real step: the same stage, built the same way with random weights and real tensors on a
device, one step timed and its peak memory read from the device (`torch.cuda.max_memory_allocated` on a GPU; on
the CPU, which keeps no such count, the plan's own tracker over the real tensors). What `scripts/gpu_check.sh`
runs on the day a GPU is lent."""

from __future__ import annotations

import contextlib
import time

import torch

from .. import references
from ..config import Config
from ..device import pick_device
from ..training.optim import ema_update
from .simulate import (PlanTracker, ScalarStandIns, host_kinds, mark_kinds, one_micro_batch, persistent,
                       plan_run, planning_config, warmed_stage)


def real_step(cfg: Config, device: str = "auto", repeats: int = 2) -> dict:
    """One process: the plan's peak and FLOPs for `cfg`, and the same step run for real on `device`: its peak
    measured with the plan's stand-ins for random branches (the same exit step), its time without them (their
    Python dispatch would slow every operator), best of `repeats`."""
    dev = pick_device(device)
    planned = plan_run(cfg, 1, fused=dev.type == "cuda", rollout=False)
    run_cfg = one_micro_batch(planning_config(cfg), 1)  # as the plan measures it
    run_cfg.train.device, run_cfg.train.flex_attention = str(dev), True
    rows = run_cfg.train.batch_size
    with references.random_weights(everything=True):
        stage, batch, gen, k = warmed_stage(run_cfg, rows, dev)
        measured = []
        for name, step in [("generator step" if k > 1 else "step", k)] + ([("critic-only step", k + 1)] if k > 1 else []):
            with ScalarStandIns():  # the plan's branches (DMD's exit step), for its memory
                peak, _ = timed_step(stage, batch, gen, step, dev, host_kinds(run_cfg))
            times = [timed_step(stage, batch, gen, step + r * k, dev)[1] for r in range(1, repeats + 1)]
            measured.append({"name": name, "peak_bytes": peak, "step_s": min(times)})
    out = {"device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
           "peak_source": "torch.cuda.max_memory_allocated" if dev.type == "cuda" else "the plan's tracker, real tensors",
           "steps": []}
    for plan, real in zip(planned.steps, measured):
        out["steps"].append({**real, "planned_peak_bytes": plan.peak["total"], "planned_flops": plan.flops,
                             "peak_ratio": real["peak_bytes"] / plan.peak["total"]})
    return out


def timed_step(stage, batch, gen, step: int, dev: torch.device, host=()) -> tuple[int, float]:
    """(peak bytes, seconds) of one stage step and its EMA update; host: the tracker's host kinds (on the CPU)."""
    tracker = None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        tracker = PlanTracker(host)
        tracker.track_external(*persistent(stage))
        tracker.track_trained(*stage.modules.values())
        mark_kinds(tracker, stage)
    t0 = time.perf_counter()
    with tracker or contextlib.nullcontext():
        result = stage.step(batch, step, gen)
        if result.generator_update is not None:
            ema_update(stage.ema, stage.model, 0.99)
    if tracker is not None:
        return tracker.peak()["total"], time.perf_counter() - t0
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev), time.perf_counter() - t0
