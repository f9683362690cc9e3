"""A plan priced on GPUs: per-rank peak memory by kind, FLOPs, step time and rollout speed per GPU kind, a fits
verdict per kind, and, for a kind it does not fit, the cheapest change that makes it fit (each change planned
again, not guessed).

Time is priced two ways, both from the measured step: at a stated model-FLOPs utilisation (FLOPs / (peak x MFU)),
and the roofline bound (per operator the longer of its FLOPs at peak and its bytes at the memory bandwidth,
summed), which no kernel beats. Communication (FSDP gathers, gradient reductions) is not priced.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, ConfigError
from .gpus import GIB, GPU, GPUS, gpu as gpu_named
from .simulate import KIND_NAMES, RunMeasure, host_kinds, plan_run

DEFAULT_MFU = 0.4  # typical of large bf16 training steps; a GPU check measures the real one


@dataclass
class Fix:
    """A change that lowers peak memory, tried in this order (the cheapest, in speed and in code, first)."""

    name: str
    overrides: dict[str, Any]
    applies: Any = None  # cfg -> bool: whether the change changes anything for this config

    def apply(self, cfg: Config) -> Config:
        cfg = copy.deepcopy(cfg)
        for key, value in self.overrides.items():
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, value)
        return cfg


def _micro_batch_halved(cfg: Config, ranks: int) -> Config | None:
    rows = cfg.train.batch_size // (ranks * cfg.dist.grad_accum)
    if rows < 2 or rows % 2:
        return None
    cfg = copy.deepcopy(cfg)
    cfg.dist.grad_accum *= 2
    return cfg


FIXES = [
    Fix("frozen models in bf16 (dist.frozen_dtype=bf16)", {"dist.frozen_dtype": "bf16"},
        lambda c, n: c.train.objective == "dmd" and c.dist.frozen_dtype != "bf16"),
    Fix("FSDP for the frozen teacher (dist.teacher=fsdp)", {"dist.teacher": "fsdp"},
        lambda c, n: n > 1 and c.train.objective == "dmd" and c.dist.teacher != "fsdp"),
    Fix("FSDP for the generator, critic and predictor (dist.*=fsdp)",
        {"dist.generator": "fsdp", "dist.critic": "fsdp", "dist.predictor": "fsdp"},
        lambda c, n: n > 1 and "ddp" in (c.dist.generator, c.dist.critic, c.dist.predictor)),
    Fix("activation checkpointing (dist.activation_checkpointing=true)", {"dist.activation_checkpointing": True},
        lambda c, n: not c.dist.activation_checkpointing),
    Fix("bf16 KV cache (sample.kv_cache_dtype=bf16)", {"sample.kv_cache_dtype": "bf16"},
        lambda c, n: c.sample.kv_cache_dtype == "fp32"),
    Fix("replay buffer on the CPU (foresight.replay_device=cpu)", {"foresight.replay_device": "cpu"},
        lambda c, n: c.foresight.enabled and c.foresight.replay_device != "cpu"),
]
OFFLOAD = Fix("frozen models in host memory, streamed per block (dist.teacher=offload)", {"dist.teacher": "offload"},
              lambda c, n: c.train.objective == "dmd" and c.dist.teacher != "offload")  # after smaller micro-batches:
#                                                                 it costs the frozen weights over PCIe every forward


def peak_bytes(run: RunMeasure) -> int:
    return max(step.peak["total"] for step in run.steps)


def peak_step(run: RunMeasure):
    return max(run.steps, key=lambda s: s.peak["total"])


def step_seconds(run: RunMeasure, g: GPU, mfu: float, k: int) -> tuple[float, float]:
    """(time, roofline bound) of one optimiser step of the generator (DMD: a generator step and k - 1 critic-only
    steps). The time is the FLOPs at `mfu`, or the bound where the step is bandwidth-bound enough that the bound is
    longer: no utilisation beats the roofline. Offloaded frozen weights (dist.teacher=offload) add their copies over
    the host link to both, as if nothing overlapped them (the copies share the compute's stream)."""
    peak, bandwidth = g.bf16_tflops * 1e12, g.bandwidth_gbs * 1e9
    weights = [run.micro_batches * w for w in [1] + [k - 1] * (len(run.steps) - 1)]
    at_mfu = sum(w * s.flops / (peak * mfu) for w, s in zip(weights, run.steps))
    bound = sum(w * s.roofline.seconds(peak, bandwidth) for w, s in zip(weights, run.steps))
    link = sum(w * s.host_to_device_bytes for w, s in zip(weights, run.steps)) / (g.host_link_gbs * 1e9)
    return max(at_mfu, bound) + link, bound + link


def rollout_speed(run: RunMeasure, g: GPU, mfu: float) -> dict[str, float] | None:
    r = run.rollout
    if r is None:
        return None
    peak, bandwidth = g.bf16_tflops * 1e12, g.bandwidth_gbs * 1e9
    total = max(r.flops / (peak * mfu), r.roofline.seconds(peak, bandwidth))
    first = r.roofline.flops(*r.first_chunk)
    first_s = max(first / (peak * mfu), r.roofline.seconds(peak, bandwidth, *r.first_chunk))
    return {"fps": r.frames / total, "first_chunk_s": first_s, "rollout_s": total,
            "roofline_fps": r.frames / r.roofline.seconds(peak, bandwidth)}


@dataclass
class Plan:
    """A measured run and what it means on each GPU kind."""

    cfg: Config
    run: RunMeasure
    gpus: list[GPU]
    mfu: float
    fixes: dict[str, list[dict]] = field(default_factory=dict)  # GPU name -> the changes tried, each with its peak

    def fits(self, g: GPU, run: RunMeasure | None = None) -> bool:
        return peak_bytes(run or self.run) <= g.usable_bytes()

    def to_json(self) -> dict:
        run, k = self.run, self.cfg.dmd.critic_updates_per_gen if self.run.stage == "dmd" else 1
        out = {"stage": run.stage, "ranks": run.ranks, "clips_per_micro_batch": run.rows,
               "micro_batches": run.micro_batches, "mfu": self.mfu,
               "parameters": run.parameters,
               "steps": [{"name": s.name, "peak_bytes": s.peak, "flops": s.flops,
                          "bytes_moved": s.roofline.bytes(), "host_to_device_bytes": s.host_to_device_bytes}
                         for s in run.steps],
               "peak_bytes": peak_bytes(run), "peak_by_kind": peak_step(run).peak,
               "flops_per_update": run.micro_batches * sum(([1] + [k - 1] * (len(run.steps) - 1))[i] * s.flops
                                                           for i, s in enumerate(run.steps)),
               "gpus": {}}
        if run.rollout is not None:
            out["rollout"] = {"frames": run.rollout.frames, "peak_bytes": run.rollout.peak, "flops": run.rollout.flops,
                              "measures": "denoising only (VAE decode and text encoding excluded), batch 1, one GPU"}
        for g in self.gpus:
            at_mfu, bound = step_seconds(run, g, self.mfu, k)
            out["gpus"][g.name] = {"usable_bytes": g.usable_bytes(), "fits": self.fits(g), "step_s": at_mfu,
                                   "step_s_roofline_bound": bound, "rollout": rollout_speed(run, g, self.mfu),
                                   "fix": self.fixes.get(g.name)}
        return out

    def table(self) -> list[str]:
        run = self.run
        lines = [f"plan: {run.stage} step, {run.ranks} GPU(s) x {run.micro_batches} micro-batch(es) of {run.rows} "
                 "clip(s); per rank, on fake tensors (one micro-batch measured)"]
        lines.append("parameters: " + ", ".join(f"{k} {v / 1e9:.3f}B" for k, v in run.parameters.items()))
        kinds = [k for k in peak_step(run).peak if k not in ("total", "host")]
        host = [s.peak.get("host", 0) for s in run.steps]
        host_names = {KIND_NAMES[k] for k in host_kinds(self.cfg)}
        lines.append(f"{'memory at the peak (GiB)':28s}" + "".join(f"{s.name:>20s}" for s in run.steps)
                     + (f"{'rollout':>12s}" if run.rollout else ""))
        for kind in kinds + ["total"]:
            values = [s.peak[kind] for s in run.steps] + ([run.rollout.peak[kind]] if run.rollout else [])
            if kind != "total" and not any(values):
                continue
            if kind in host_names:
                kind += " (host memory)"
            lines.append(f"  {kind:26s}" + "".join(f"{v / GIB:20.2f}" for v in values[:len(run.steps)])
                         + (f"{values[-1] / GIB:12.2f}" if run.rollout else ""))
        if any(host):
            lines.append("  (total: GPU memory; what is kept in host memory is not in it)")
        lines.append("  " + "TFLOP".ljust(26) + "".join(f"{s.flops / 1e12:20.2f}" for s in run.steps)
                     + (f"{run.rollout.flops / 1e12:12.2f}" if run.rollout else ""))
        k = self.cfg.dmd.critic_updates_per_gen if run.stage == "dmd" else 1
        lines.append("")
        lines.append(f"{'GPU':10s}{'usable GiB':>11s}{'peak GiB':>10s}{'fits':>6s}{'step s':>9s}{'bound s':>9s}"
                     f"{'fps':>8s}{'1st chunk s':>12s}   (step: one generator update at MFU {self.mfu:.0%}, never under "
                     "the bound: the roofline)")
        for g in self.gpus:
            at_mfu, bound = step_seconds(run, g, self.mfu, k)
            speed = rollout_speed(run, g, self.mfu)
            fps = f"{speed['fps']:8.1f}{speed['first_chunk_s']:12.3f}" if speed else f"{'-':>8s}{'-':>12s}"
            lines.append(f"{g.name:10s}{g.usable_bytes() / GIB:11.1f}{peak_bytes(run) / GIB:10.2f}"
                         f"{'yes' if self.fits(g) else 'NO':>6s}{at_mfu:9.2f}{bound:9.2f}{fps}")
        for g in self.gpus:
            tried = self.fixes.get(g.name)
            if self.fits(g) or tried is None:
                continue
            steps = "; ".join(f"+ {t['change']}: {t['peak_bytes'] / GIB:.1f} GiB" for t in tried)
            verdict = "fits" if tried and tried[-1]["fits"] else "still does not fit"
            lines.append(f"{g.name}: does not fit; {steps} -> {verdict}")
        return lines


def make_plan(cfg: Config, ranks: int, gpu_names: list[str], mfu: float = DEFAULT_MFU, fix: bool = True,
              fused: bool = True) -> Plan:
    """Plan `cfg` on `ranks` GPUs; for each GPU kind it does not fit, plan it again with the changes of FIXES added
    one by one (cheapest first) until it fits."""
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu must be in (0, 1], got {mfu}")
    gpus = [gpu_named(n) for n in gpu_names] if gpu_names else list(GPUS.values())
    plan = Plan(cfg, plan_run(cfg, ranks, fused=fused), gpus, mfu)
    if fix:
        plan.fixes = fixes_for(plan, ranks, fused)
    return plan


def fixes_for(plan: Plan, ranks: int, fused: bool) -> dict[str, list[dict]]:
    """For the GPU kinds the plan does not fit: the changes added one by one, each with its planned peak."""
    failing = [g for g in plan.gpus if not plan.fits(g)]
    out: dict[str, list[dict]] = {g.name: [] for g in failing}
    cfg = plan.cfg
    candidates = [(f.name, lambda c, f=f: f.apply(c) if f.applies(c, ranks) else None) for f in FIXES]
    candidates += [("half the micro-batch (dist.grad_accum x2), repeatedly",
                    lambda c: _micro_batch_halved(c, ranks))]
    candidates += [(OFFLOAD.name, lambda c: OFFLOAD.apply(c) if OFFLOAD.applies(c, ranks) else None)]
    for name, change in candidates:
        if not failing:
            break
        changed = change(cfg)
        while changed is not None:
            cfg = changed
            run = plan_run(cfg, ranks, fused=fused, rollout=False)
            for g in failing:
                out[g.name].append({"change": name, "peak_bytes": peak_bytes(run), "fits": plan.fits(g, run)})
            failing = [g for g in failing if not plan.fits(g, run)]
            changed = change(cfg) if name.endswith("repeatedly") and failing else None
    return out
