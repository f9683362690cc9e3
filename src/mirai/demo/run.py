"""Running a demo: the shared stages (or a base), the DMD arms per training seed, their evaluation at
`eval_length` x the clip, the contrasts, and everything written to the demo's folder.

Every stage is a `mirai train` run in its own folder and every evaluation an `eval.json` beside it, so an
interrupted demo resumes where it stopped and a finished one returns at once."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import Config
from ..eval.evaluate import Evaluator, evaluate_run
from ..eval.report import write_report
from ..sampling.rollout import long_rollout_overrides
from ..training.loop import train
from .base import base_probes, load_base, machine, read_reference, save_base
from .figures import write_curves_figure, write_drift_figure, write_strip
from .long_horizon import long_horizon
from .plan import PRIMARY_ENDPOINT, SECONDARY_ENDPOINTS, SHARED, Plan, eval_overrides
from .report import arms_table, contrast_table, long_horizon_table, markdown_table, reproduction
from .stats import contrast, seed_means, verdict
from .tasks import Progress, Task, run_tasks


def run_stage(cfg: Config) -> Path:
    """One `mirai train` run (resumes if its folder holds a checkpoint; a finished run returns at once)."""
    return train(cfg, quiet=True)


def stage_done(cfg: Config) -> bool:
    """Whether the run's folder already holds its last step's checkpoint (an earlier invocation finished it)."""
    path = Path(cfg.train.out_dir) / "ckpt.safetensors"
    return path.is_file() and ckpt.verify(path).get("step", 0) >= cfg.train.steps


def eval_done(plan: Plan, run: Path, clip_frames: int) -> dict | None:
    """The run's eval.json if one with this plan's length, samples and seeds exists."""
    path = run / "eval.json"
    if path.is_file():
        done = json.loads(path.read_text())
        if (done.get("frames"), done.get("samples"), done.get("seeds")) == \
                (plan.demo.eval_length * clip_frames, plan.demo.samples, plan.demo.sampling_seeds):
            return done
    return None


_EVALUATORS: dict[str, Evaluator] = {}  # per process: extractors and the probe are built once per world


def evaluate(plan: Plan, run: Path, clip_frames: int, frames_per_chunk: int, world) -> dict:
    """eval.json of a run at `eval_length` x its clip (skipped when one with the same plan exists)."""
    done = eval_done(plan, run, clip_frames)
    if done is not None:
        return done
    evaluator = _EVALUATORS.setdefault(repr(world), Evaluator(world))
    return evaluate_run(run, plan.demo.eval_length * clip_frames, plan.demo.samples, plan.demo.sampling_seeds, run,
                        evaluator=evaluator, device=plan.demo.device,
                        overrides=eval_overrides(clip_frames, frames_per_chunk))


def drift_done(plan: Plan, run: Path, clip_frames: int) -> dict | None:
    """The run's drift/eval.json if one with this plan's horizons, videos and seed exists."""
    path = run / "drift" / "eval.json"
    if path.is_file():
        done = json.loads(path.read_text())
        d = plan.demo
        if (done.get("frames"), done.get("samples"), done.get("seeds"), done.get("horizons")) == \
                (d.horizons[-1] * clip_frames, d.drift_samples, [d.drift_sampling_seed], d.horizons):
            return done
    return None


def evaluate_drift(plan: Plan, run: Path, clip_frames: int, frames_per_chunk: int, world) -> dict:
    """drift/eval.json of a run: rolled out to the last horizon and scored per block beside real clips."""
    done = drift_done(plan, run, clip_frames)
    if done is not None:
        return done
    d = plan.demo
    evaluator = _EVALUATORS.setdefault(repr(world), Evaluator(world))
    return evaluate_run(run, d.horizons[-1] * clip_frames, d.drift_samples, [d.drift_sampling_seed], run / "drift",
                        evaluator=evaluator, device=d.device, overrides=long_rollout_overrides(clip_frames, frames_per_chunk),
                        horizons=d.horizons)


def shared_costs(plan: Plan) -> list[float]:
    """Rough relative costs of the shared stages (for the time estimate): a teacher cycle in proportion to its steps
    against the teacher stage's."""
    if plan.base is not None:
        return [0.0] * len(SHARED)
    stages = plan.shared_stages()
    teacher = stages[0][2].train.steps
    return [3.0] + [3.0 * cfg.train.steps / teacher for _, _, cfg in stages[1:-2]] + [2.0, 1.5]


def shared_stages(plan: Plan, progress: Progress) -> dict[str, Path]:
    """Model files (or run folders) of the shared stages: the base's, or trained in `out/shared` one after another."""
    if plan.base is not None:
        progress.start(f"shared stages: the base in {plan.base}")
        runs = load_base(plan.base, plan.demo.shared)
        for _ in SHARED:
            progress.finish(0.0, already_done=True)
        return runs
    runs: dict[str, Path] = {}
    for title, name, cfg in plan.shared_stages():
        runs[name] = run_tasks([Task(f"shared stage: {title}", run_stage, (cfg,), stage_done(cfg))], 1, progress)[0]
    if plan.demo.save_base is not None:
        print("the base's probes at 1x (teacher, AR teacher, ODE student)", flush=True)
        save_base(runs, Path(plan.demo.save_base), plan, base_probes(runs, plan))
    return runs


def run_demo(plan: Plan) -> dict:
    t0 = time.perf_counter()
    demo, out = plan.demo, plan.out
    out.mkdir(parents=True, exist_ok=True)
    seeds, arms = demo.seeds, demo.arms
    # rough relative costs: a stage's training steps and an evaluation's rollouts, for the time estimate
    progress = Progress(shared_costs(plan) + [2.0] * len(arms) * len(seeds) + [1.0] * len(arms) * len(seeds)
                        + [1.0] * len(arms) * len(seeds))
    runs = shared_stages(plan, progress)
    if demo.shared_only:
        return {"shared": {k: str(v) for k, v in runs.items()}}
    dmd = plan.dmd_stages(runs)
    trained = run_tasks([Task(f"DMD {arm}, training seed {seed}", run_stage, (cfg,), stage_done(cfg))
                         for (arm, seed), cfg in dmd.items()], demo.jobs, progress)
    dmd_runs: dict[str, dict[int, Path]] = {arm: {} for arm in arms}
    for (arm, seed), run in zip(dmd, trained):
        dmd_runs[arm][seed] = run
    shape = plan.dmd_shape()
    clip, fpc = shape.data.clip_frames, shape.model.frames_per_chunk
    evals = run_tasks([Task(f"evaluate {arm}, training seed {seed}", evaluate,
                            (plan, dmd_runs[arm][seed], clip, fpc, shape.world),
                            eval_done(plan, dmd_runs[arm][seed], clip) is not None) for arm, seed in dmd],
                      demo.jobs, progress)
    drifts = run_tasks([Task(f"drift of {arm}, training seed {seed} ({demo.horizons[-1]}x)", evaluate_drift,
                             (plan, dmd_runs[arm][seed], clip, fpc, shape.world),
                             drift_done(plan, dmd_runs[arm][seed], clip) is not None) for arm, seed in dmd],
                       demo.jobs, progress)
    drift: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for (arm, seed), result in zip(dmd, drifts):
        drift[arm][seed] = result
    means: dict[str, dict[int, dict[str, float]]] = {arm: {} for arm in arms}
    for (arm, seed), result in zip(dmd, evals):
        means[arm][seed] = seed_means(result, clip)
    metrics = sorted(means["baseline"][seeds[0]])
    contrasts = {arm: {m: contrast(means[arm], means["baseline"], m) for m in metrics}
                 for arm in arms if arm != "baseline"}
    results = {
        "plan": {"out": str(out), "base": None if plan.base is None else str(plan.base), "demo": asdict(demo)},
        "primary_endpoint": PRIMARY_ENDPOINT, "secondary_endpoints": list(SECONDARY_ENDPOINTS),
        "clip_frames": clip,
        "lengths": f"1x, 2x, 4x from one rollout of {demo.eval_length}x (rolling cache: sink 1 + 4x chunks)",
        "arms": {arm: {str(s): v for s, v in m.items()} for arm, m in means.items()},
        "contrasts": contrasts,
        "verdict": verdict(contrasts["foresight"][PRIMARY_ENDPOINT], PRIMARY_ENDPOINT)
        if PRIMARY_ENDPOINT in contrasts["foresight"] else f"{PRIMARY_ENDPOINT} was not measured",
        "long_horizon": long_horizon(drift, demo.horizons),
        "runs": {arm: {str(s): str(r) for s, r in seeds.items()} for arm, seeds in dmd_runs.items()},
        "command": " ".join(["mirai", *sys.argv[1:]]), **machine(), "minutes": minutes_of_work(out, progress, t0),
    }
    reference = read_reference(plan.base)
    if reference is not None:
        results["reproduction"] = reproduction(results, reference)
    write_outputs(results, plan, dmd_runs, drift, clip, fpc)
    return results


def minutes_of_work(out: Path, progress: Progress, t0: float) -> float:
    """This invocation's minutes; a demo that found everything done keeps the minutes of the one that did the work."""
    previous = out / "results.json"
    if not progress.worked_s and previous.is_file():
        return json.loads(previous.read_text()).get("minutes", 0.0)
    return (time.perf_counter() - t0) / 60


def write_outputs(results: dict, plan: Plan, dmd_runs: dict[str, dict[int, Path]], drift: dict[str, dict[int, dict]],
                  clip: int, fpc: int) -> None:
    """results.json, results.md, report.html, drift.png, drift_8x.png and strip.png in the demo's folder."""
    out, first = plan.out, plan.demo.seeds[0]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown_table(results) + arms_table(results)
                                    + long_horizon_table(results["long_horizon"]))
    write_report([str(seeds[first]) for seeds in dmd_runs.values()], out / "report.html",
                 title=f"mirai demo: {', '.join(dmd_runs)} (training seed {first})",
                 extra_html=contrast_table(results["contrasts"]))
    write_drift_figure(drift, out / "drift.png")
    write_curves_figure({arm: [json.loads((r / "eval.json").read_text()) for r in seeds.values()]
                         for arm, seeds in dmd_runs.items()}, clip, out / "drift_8x.png")
    write_strip({arm: dmd_runs[arm][first] for arm in ("baseline", "foresight")}, plan, clip, fpc, out / "strip.png")
