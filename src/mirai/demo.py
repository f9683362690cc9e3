"""`mirai demo`: does foresight help? The paper's claim in miniature, as one resumable command.

1. The shared stages once: bidirectional teacher, teacher forcing (the AR teacher), causal ODE distillation.
2. The DMD stage from the same ODE student for every training seed, once per arm: the Causal-Forcing baseline
   (`foresight.enabled: false`), Video-Mirai (`true`), and with `--ablation` the paper's target windows {0},
   {1}, {0, 1, 2} and the causal-encoder ablation.
3. Every arm evaluated by `mirai eval` over several sampling seeds on one rollout of 8x the training length
   (a rolling KV cache of sink 1 + 4x the clip's chunks, so 8x runs past the cache), scored at 1x, 4x and 8x.
4. Paired contrasts against the baseline over training seeds (each seed's value is its mean over sampling
   seeds): mean difference, 95% t-interval, p; `results.json`, `report.html` and a verdict on the primary
   endpoint, declared here before any result: `PRIMARY_ENDPOINT`.

Every stage is a `mirai train` run in its own folder, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from . import checkpoint as ckpt
from .config import ConfigError, load_config
from .data.videos import source_sha256
from .data.frames import to_model_range
from .eval.evaluate import Evaluator, evaluate_run, generate
from .eval.probes import train_probe
from .eval.report import write_report
from .video import upscale
from .training.loop import TrainingInterrupted, train

# Declared before any demo result was seen (README, "Does foresight help?"): the ground-truth identity of the
# objects at 4x the training length; consistency and the other probes are secondary endpoints.
PRIMARY_ENDPOINT = "probe_identity@4x"
SECONDARY_ENDPOINTS = ("subject_consistency@effnet_lite0@4x", "probe_coherence@4x", "probe_count@4x",
                       "probe_continuity@4x", "probe_identity@8x", "probe_identity@1x")
ARMS = {"baseline": [], "foresight": ["foresight.enabled=true"]}
ABLATIONS = {
    "window_0": ["foresight.enabled=true", "foresight.window=[0]"],
    "window_1": ["foresight.enabled=true", "foresight.window=[1]"],
    "window_012": ["foresight.enabled=true", "foresight.window=[0,1,2]"],
    "causal_encoder": ["foresight.enabled=true", "foresight.encoder_mask=causal"],
}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Where a shipped base lives (`mirai demo --save-base checkpoints/world`, then commit it): the demo starts from it
# when it exists, unless --from-scratch or --base says otherwise. None is shipped yet (see the README).
SHIPPED_BASE = CONFIGS.parent / "checkpoints" / "world"
# --quick: toy sizes and a few steps, to check in minutes that every piece runs (its numbers mean nothing)
QUICK = ["world.image_size=16", "world.sprite_sizes=[5]", "model.dim=32", "model.depth=2", "model.heads=2",
         "model.patch_size=4", "model.image_size=16", "data.clip_frames=4", "train.batch_size=2",
         "train.sample_every=0", "train.log_every=1", "train.warmup_steps=2"]
# The recipe of the shared stages outside --quick (the shipped base was made with it): per stage, overrides of its
# config above. A demo run with another recipe (--recipe) records it in its base's provenance.json.
BASE_RECIPE = CONFIGS / "demo_base.yaml"
TEACHER_SAMPLING = ["sample.steps=32", "sample.solver=euler", "sample.cfg_scale=3.0"]  # how the base's teacher is probed
QUICK_CYCLE = ["train.steps=4", "train.ckpt_every=4", "train.lr=1e-4"]  # --quick's one more teacher cycle
QUICK_STEPS = {"teacher": ["train.steps=20", "train.ckpt_every=20"], "ar": ["train.steps=20", "train.ckpt_every=20"],
               "ode": ["train.steps=6", "train.ckpt_every=6", "distill.num_videos=4", "distill.shard_size=4",
                       "distill.teacher_steps=4"],
               "dmd": ["train.steps=4", "train.ckpt_every=4", "dmd.critic_updates_per_gen=2"]}


@dataclass
class DemoPlan:
    out: Path
    seeds: list[int] = field(default_factory=lambda: [0])  # training seeds of the DMD arms (3+ for an interval)
    sampling_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    samples: int = 16  # videos per sampling seed
    quick: bool = False
    ablation: bool = False
    device: str = "auto"
    weights: list[float] = field(default_factory=list)  # dose: one more foresight arm per foresight.weight
    dmd_steps: int = 0  # 0 = the DMD config's own; more measures a longer DMD stage
    base: Path | None = None  # shipped shared stages (teacher, ar, ode model files) instead of training them
    save_base: Path | None = None  # after the shared stages, write them here as a shippable base
    recipe: Path = BASE_RECIPE  # the shared stages' overrides and the model size (not used with --quick)
    workers: int = 0  # data.num_workers of the shared stages (batch-building processes; results are the same)
    shared_only: bool = False  # stop after the shared stages (and --save-base): make a base, e.g. on a GPU
    jobs: int = 1  # DMD arms and evaluations side by side in this many processes (results are the same)

    def arms(self) -> dict[str, list[str]]:
        dose = {f"foresight_w{w:g}": ["foresight.enabled=true", f"foresight.weight={w}"] for w in self.weights}
        return {**ARMS, **(ABLATIONS if self.ablation else {}), **dose}


# --------------------------------------------------------------------------------------------------
# Steps


def read_recipe(path: Path, _extended: tuple[Path, ...] = ()) -> dict[str, list]:
    """A recipe file: per shared stage, a list of `key=value` overrides of its config; optionally `model`, a list
    of `model.*` overrides (the model size) that every stage takes, the DMD arms included, since each stage starts
    from the one before and must have its shape; optionally `world`, a list of `world.*` overrides (e.g. a harder
    world) that every stage, the DMD arms, their evaluation and the base's probes take; and optionally
    `teacher_cycles`, more warm-up + cosine cycles of the bidirectional teacher after its stage, each a list of
    overrides of the teacher's (see `teacher_cycles`). `extends: FILE` (relative to this file) starts from that
    recipe: each list this file gives replaces the one of the same key there, e.g. the same recipe in a harder
    world."""
    import yaml

    if not Path(path).is_file():
        raise ConfigError(f"no demo recipe at {path}")
    recipe = yaml.safe_load(Path(path).read_text()) or {}
    parent = {name: [] for name in SHARED}
    if isinstance(recipe, dict) and "extends" in recipe:
        chain = _extended + (Path(path).resolve(),)
        base = Path(path).parent / str(recipe.pop("extends"))
        if base.resolve() in chain:
            raise ConfigError(f"{path}: the demo recipe extends itself through {base}")
        parent = read_recipe(base, chain)
    return parent | recipe_lists(recipe, path)


def recipe_lists(recipe, path: Path) -> dict[str, list]:
    """The lists a parsed recipe file gives (`extends` taken out), checked."""
    keys = SHARED + ("model", "world", "teacher_cycles")
    lists = {k: v for k, v in recipe.items() if k != "teacher_cycles"} if isinstance(recipe, dict) else {}
    cycles = recipe.get("teacher_cycles") or [] if isinstance(recipe, dict) else []
    if not isinstance(recipe, dict) or set(recipe) - set(keys) or not isinstance(cycles, list) or \
            not all(overrides_list(v) for v in list(lists.values()) + cycles):
        raise ConfigError(f"{path}: a demo recipe maps {', '.join(keys)} to lists of 'key=value' overrides "
                          f"(teacher_cycles: a list of such lists)")
    for shared in ("model", "world"):
        if not all(o.startswith(f"{shared}.") for o in recipe.get(shared) or []):
            raise ConfigError(f"{path}: the demo recipe's `{shared}` list holds only {shared}.* overrides")
    out: dict[str, list] = {name: list(recipe.get(name) or []) for name in SHARED if name in recipe}
    return out | {k: list(recipe[k]) for k in ("model", "world") if recipe.get(k)} | \
        ({"teacher_cycles": [list(c) for c in cycles]} if cycles else {})


def overrides_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(o, str) and "=" in o for o in value)


def recipe_overrides(recipe: dict[str, list[str]], name: str) -> list[str]:
    """One stage's overrides from a recipe: the model size and world every stage shares, then the stage's own."""
    return recipe.get("model", []) + recipe.get("world", []) + recipe.get(name, [])


def plan_recipe(plan: DemoPlan) -> dict[str, list[str]]:
    """The recipe of this demo's shared stages: the base's own (its provenance.json) when it starts from one, so the
    DMD arms take the size of the ODE student they start from; else the plan's recipe file."""
    if plan.base is not None:
        prov = Path(plan.base) / "provenance.json"
        return (json.loads(prov.read_text()).get("recipe") or {}) if prov.is_file() else {}
    return read_recipe(plan.recipe)


def stage_overrides(plan: DemoPlan, name: str, folder: Path, extra: list[str]) -> list[str]:
    preset = QUICK + QUICK_STEPS[name] if plan.quick else recipe_overrides(plan_recipe(plan), name)
    workers = [f"data.num_workers={plan.workers}"] if name in SHARED else []
    return preset + workers + [f"train.out_dir={folder}", f"train.device={plan.device}"] + extra


def stage_config(plan: DemoPlan, config: str, name: str, folder: Path, extra: list[str]):
    return load_config(CONFIGS / config, stage_overrides(plan, name, folder, extra))


def run_stage(cfg) -> Path:
    """One `mirai train` run (resumes if its folder holds a checkpoint; a finished run returns at once)."""
    return train(cfg, quiet=True)


def stage_done(cfg) -> bool:
    """Whether the run's folder already holds its last step's checkpoint (an earlier invocation finished it)."""
    path = Path(cfg.train.out_dir) / "ckpt.safetensors"
    return path.is_file() and ckpt.verify(path).get("step", 0) >= cfg.train.steps


EVAL_LENGTH = 8  # every arm is rolled out to 8x its clip and scored at 1x, 4x and 8x


def eval_overrides(clip_frames: int, frames_per_chunk: int) -> list[str]:
    """The rolling cache of the evaluation: sink 1 + a window of 4x the clip (8x rolls past it; 1x and 4x fit)."""
    return ["sample.sink_chunks=1", f"sample.window_chunks={4 * clip_frames // frames_per_chunk}"]


def eval_done(plan: DemoPlan, run: Path, clip_frames: int) -> dict | None:
    """The run's eval.json if one with this plan's length, samples and seeds exists."""
    path = run / "eval.json"
    if path.is_file():
        done = json.loads(path.read_text())
        if (done.get("frames"), done.get("samples"), done.get("seeds")) == \
                (EVAL_LENGTH * clip_frames, plan.samples, plan.sampling_seeds):
            return done
    return None


_EVALUATORS: dict[str, Evaluator] = {}  # per process: extractors and the probe are built once per world


def evaluate(plan: DemoPlan, run: Path, clip_frames: int, frames_per_chunk: int, world) -> dict:
    """eval.json of a run at 8x its clip length (skipped when one with the same plan exists)."""
    done = eval_done(plan, run, clip_frames)
    if done is not None:
        return done
    evaluator = _EVALUATORS.setdefault(repr(world), Evaluator(world))
    return evaluate_run(run, EVAL_LENGTH * clip_frames, plan.samples, plan.sampling_seeds, run, evaluator=evaluator,
                        device=plan.device, overrides=eval_overrides(clip_frames, frames_per_chunk))


# --------------------------------------------------------------------------------------------------
# Statistics


def length_keys(per_seed: dict, clip_frames: int) -> dict[str, str]:
    """'probe_identity@32f' -> 'probe_identity@4x' (for a clip of 8 frames): lengths named as multiples."""
    out = {}
    for key in per_seed:
        base, _, tail = key.rpartition("@")
        if tail.endswith("f") and tail[:-1].isdigit() and int(tail[:-1]) % clip_frames == 0:
            out[key] = f"{base}@{int(tail[:-1]) // clip_frames}x"
    return out


def seed_means(result: dict, clip_frames: int) -> dict[str, float]:
    """Every metric of one eval.json as its mean over sampling seeds, with lengths named as multiples."""
    per = result["per_seed"]
    keys = length_keys(next(iter(per.values())), clip_frames)
    return {name: float(np.mean([per[s][key] for s in per])) for key, name in keys.items()}


def lower_is_better(metric: str) -> bool:
    return metric.startswith(("fd@", "kid@"))


def contrast(arm: dict[int, dict[str, float]], base: dict[int, dict[str, float]], metric: str) -> dict:
    """Paired over training seeds: arm - baseline. Mean, 95% t-interval, two-sided p, seeds where the arm is better."""
    seeds = [s for s in base if s in arm and metric in base[s] and metric in arm[s]]
    d = np.array([arm[s][metric] - base[s][metric] for s in seeds], dtype=float)
    better = int(np.sum(d < 0 if lower_is_better(metric) else d > 0))
    out = {"n": len(d), "mean_diff": float(d.mean()) if len(d) else math.nan, "ci95": [math.nan, math.nan],
           "p": math.nan, "seeds_better": better, "per_seed": dict(zip(map(str, seeds), d.tolist()))}
    if len(d) >= 2 and d.std(ddof=1) > 0:
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
        out["ci95"] = [out["mean_diff"] - half, out["mean_diff"] + half]
        out["p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    return out


def verdict(c: dict, metric: str) -> str:
    lo, hi = c["ci95"]
    if c["n"] < 2 or math.isnan(lo):
        return (f"{metric}: no interval ({c['n']} training seed(s), or the same difference on every seed): "
                "no conclusion")
    sign = -1 if lower_is_better(metric) else 1
    if lo > 0 or hi < 0:
        better = sign * c["mean_diff"] > 0
        return (f"{metric}: the 95% CI [{lo:+.4f}, {hi:+.4f}] excludes zero: foresight is "
                f"{'better' if better else 'worse'} than the baseline")
    return f"{metric}: the 95% CI [{lo:+.4f}, {hi:+.4f}] includes zero: no effect detected at n={c['n']}"


# --------------------------------------------------------------------------------------------------
# The demo


class Progress:
    """Prints each step with the time so far and an estimate of the time left. The estimate comes from the steps
    that did work in this invocation: a step already done on entry (a resumed demo) costs nothing and says so."""

    def __init__(self, costs: list[float]):
        self.costs, self.done, self.t0 = costs, 0, time.perf_counter()
        self.worked_cost, self.worked_s = 0.0, 0.0  # cost and wall time of the steps that did work
        self.held = 0  # steps that must still finish before an estimate is given

    def hold_estimate(self, steps: int) -> None:
        """Side by side: the first step to finish ran beside others that are part done, so the wall time per cost
        unit it gives is up to `steps` times too long; estimate only once that many have finished."""
        self.held = steps

    def eta(self) -> str:
        if not self.worked_cost or self.held > 0:
            return ""
        return f", ~{self.worked_s / self.worked_cost * sum(self.costs[self.done:]) / 60:.1f} min left"

    def start(self, name: str) -> None:
        print(f"[{self.done + 1}/{len(self.costs)}] {name} ({(time.perf_counter() - self.t0) / 60:.1f} min so far"
              f"{self.eta()})", flush=True)

    def finish(self, wall_s: float, already_done: bool = False, report: str | None = None) -> None:
        """One step ended; `wall_s` of the demo's wall time went to it (for steps side by side: since the previous
        one ended). `report`: a line to print (side by side, where `start` cannot say when a step starts)."""
        if already_done:
            self.costs[self.done] = 0.0
        else:
            self.worked_cost, self.worked_s = self.worked_cost + self.costs[self.done], self.worked_s + wall_s
            self.held -= 1
        self.done += 1
        if report is not None:
            print(f"[{self.done}/{len(self.costs)}] {report} ({(time.perf_counter() - self.t0) / 60:.1f} min so far"
                  f"{self.eta()})", flush=True)


# --------------------------------------------------------------------------------------------------
# Steps run one after another, or side by side in worker processes (--jobs)


@dataclass
class Task:
    name: str
    fn: Callable  # a module-level function (it is sent to a worker process by name)
    args: tuple
    already_done: bool  # finished by an earlier invocation: the call returns at once


def run_tasks(tasks: list[Task], jobs: int, progress: Progress) -> list:
    """Each task's result, in order. jobs > 1: side by side in that many spawned processes, each with its share of
    the CPU threads (a tiny model's step uses two threads poorly; on a GPU, one process leaves it mostly idle).
    Every task is a pure function of its arguments (seeded), so the results do not depend on `jobs`."""
    if jobs <= 1 or sum(not t.already_done for t in tasks) <= 1:
        results = []
        for t in tasks:
            progress.start(t.name)
            result, took = timed(t.fn, *t.args)
            results.append(result)
            progress.finish(took, t.already_done)
        return results
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"{len(tasks)} steps side by side in {jobs} processes of {threads} thread(s)", flush=True)
    progress.hold_estimate(min(jobs, sum(not t.already_done for t in tasks)))
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
                               initargs=(threads,))
    try:
        futures = {pool.submit(worker_step, t.fn, *t.args): t for t in tasks}
        last = time.perf_counter()
        for future in as_completed(futures):
            _, took = future.result()  # a failed or interrupted step stops the demo here
            t, now = futures[future], time.perf_counter()
            progress.finish(now - last, t.already_done,
                            f"{t.name}: {'already done' if t.already_done else f'{took / 60:.1f} min'}")
            last = last if t.already_done else now
        return [f.result()[0] for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def timed(fn: Callable, *args) -> tuple[object, float]:
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


_WORKER_INTERRUPTED = False  # in a worker process: one of its steps was interrupted (Ctrl-C, SIGTERM, a budget)


def worker_step(fn: Callable, *args) -> tuple[object, float]:
    """`timed` in a worker process. Once a step there was interrupted, no later step starts: the pool hands a free
    worker the next queued step before the main process can cancel it, so without this an interrupted demo went
    on training the queued arms."""
    global _WORKER_INTERRUPTED
    if _WORKER_INTERRUPTED:
        raise TrainingInterrupted("not started: the demo was interrupted; run the same command again to resume")
    try:
        return timed(fn, *args)
    except (KeyboardInterrupt, TrainingInterrupted):
        _WORKER_INTERRUPTED = True
        raise


# --------------------------------------------------------------------------------------------------
# The shared stages: trained here, or a shipped base


SHARED = ("teacher", "ar", "ode")  # bidirectional teacher, AR teacher (teacher forcing), ODE student
STAGE_CONFIGS = {"teacher": "tiny_teacher.yaml", "ar": "tiny_ar.yaml", "ode": "tiny_ode.yaml"}


def shared_stages(plan: DemoPlan, progress: Progress) -> dict[str, Path]:
    """Model files of the shared stages: the shipped base's (`plan.base`) or trained in `out/shared`."""
    if plan.base is not None:
        progress.start(f"shared stages: the base in {plan.base}")
        runs = load_base(plan.base, plan.quick)
        for _ in SHARED:
            progress.finish(0.0, already_done=True)
        return runs
    shared = plan.out / "shared"
    runs: dict[str, Path] = {}

    def stage(name: str, title: str, extra: list[str], folder: str = "") -> Path:  # each starts from the one before
        cfg = stage_config(plan, STAGE_CONFIGS[name], name, shared / (folder or name), extra)
        title = title.format(steps=cfg.train.steps, lr=cfg.train.lr)
        return run_tasks([Task(f"shared stage: {title}", run_stage, (cfg,), stage_done(cfg))], 1, progress)[0]

    runs["teacher"] = stage("teacher", "bidirectional teacher", [])
    for n, cycle in enumerate(teacher_cycles(plan), start=2):  # each from the last one's EMA, with a fresh AdamW
        runs["teacher"] = stage("teacher", f"bidirectional teacher, cycle {n} ({{steps}} steps at peak LR {{lr:g}})",
                                cycle + [f"train.init_from={runs['teacher']}"], folder=f"teacher_c{n}")
    runs["ar"] = stage("ar", "AR teacher (teacher forcing from the bidirectional teacher)",
                       [f"train.init_from={runs['teacher']}"])
    runs["ode"] = stage("ode", "ODE distillation",
                        [f"train.init_from={runs['ar']}", f"distill.teacher={runs['ar']}"])
    if plan.save_base is not None:
        print("the base's probes at 1x (teacher, AR teacher, ODE student)", flush=True)
        save_base(runs, plan.save_base, plan, base_probes(runs, plan))
    return runs


def teacher_cycles(plan: DemoPlan) -> list[list[str]]:
    """More cycles of the bidirectional teacher after its stage, in order: each a list of overrides of the teacher's
    stage (steps, peak LR, warm-up), trained from the last one's EMA weights with a fresh AdamW, the way the shipped
    base's teacher was continued (its provenance.json's lineage). The AR teacher starts from the last, and DMD
    takes it as real score and foresight encoder. --quick: one cycle of a few steps, so CI runs the path."""
    if plan.base is not None:
        return []
    return [QUICK_CYCLE] if plan.quick else read_recipe(plan.recipe).get("teacher_cycles", [])


def shared_costs(plan: DemoPlan) -> list[float]:
    """Rough relative costs of the shared stages' steps (for the time estimate): a teacher cycle in proportion to
    its steps against the teacher stage's."""
    if plan.base is not None:
        return [0.0] * len(SHARED)
    teacher = stage_config(plan, STAGE_CONFIGS["teacher"], "teacher", plan.out, []).train.steps
    cycles = [3.0 * stage_config(plan, STAGE_CONFIGS["teacher"], "teacher", plan.out, c).train.steps / teacher
              for c in teacher_cycles(plan)]
    return [3.0, *cycles, 2.0, 1.5]


def base_probes(runs: dict[str, Path], plan: DemoPlan, samples: int = 64) -> dict[str, dict[str, float]]:
    """The ground-truth probes of each shared stage's samples at 1x (the clip length), as each is sampled in the
    pipeline (teacher: whole clip, 32 Euler steps with CFG 3 as DMD's real score guides; AR teacher and ODE
    student: chunk by chunk with their configs' solvers), mean over the plan's first two sampling seeds. The base
    is good enough when teacher and AR teacher score identity and coherence >= 0.8 (real clips: about 0.97 and
    0.99)."""
    overrides = QUICK if plan.quick else recipe_overrides(plan_recipe(plan), "teacher")
    cfg = load_config(CONFIGS / "tiny_teacher.yaml", overrides)
    probe = train_probe(cfg.world)  # the recipe's world; the probe alone: no feature extractor is needed here
    return {name: stage_probes(run, name, probe, cfg.data.clip_frames, plan.sampling_seeds[:2], plan.device, samples)
            for name, run in runs.items()}


def stage_probes(run: str | Path, name: str, probe, clip_frames: int, seeds: list[int], device: str = "cpu",
                 samples: int = 64) -> dict[str, float]:
    """One shared stage's probes at 1x as `base_probes` takes them: the mean over `seeds` of `samples` videos each,
    the teacher sampled whole with `TEACHER_SAMPLING`, for prompts of the probe's world (which a model file
    continued from a base of another world was not trained in before its first step)."""
    overrides = TEACHER_SAMPLING if name == "teacher" else []
    scores = []
    for seed in seeds:
        videos, prompts = generate(run, samples, clip_frames, seed, device, overrides, world=probe.world)
        scores.append(probe.score(to_model_range(videos), prompts).summary())
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def load_base(folder: Path, quick: bool = False) -> dict[str, Path]:
    """A base folder (written by `save_base`): its model file per shared stage, checked against its provenance."""
    prov_path = Path(folder) / "provenance.json"
    if not prov_path.is_file():
        raise ConfigError(f"{folder} is not a demo base: no provenance.json (make one with `mirai demo --save-base`)")
    prov = json.loads(prov_path.read_text())
    if prov.get("quick") != quick:
        raise ConfigError(f"the demo base {folder} was made {'with' if prov.get('quick') else 'without'} --quick; "
                          f"this demo runs {'with' if quick else 'without'} it (the model sizes differ)")
    runs = {}
    for name in SHARED:
        path = Path(folder) / f"{name}.safetensors"
        if not path.is_file():
            raise ConfigError(f"the demo base {folder} has no {path.name}")
        if source_sha256(path) != prov["files"][path.name]["sha256"]:
            raise ConfigError(f"{path} does not match the sha256 in {prov_path}: the base was changed")
        runs[name] = path
    return runs


def save_base(runs: dict[str, Path], folder: Path, plan: DemoPlan, probes: dict | None = None) -> None:
    """The shared stages as a shippable base: fp16 model files (half the size; the stages load them into fp32)
    and provenance.json with the command, recipe, commit, machine, each file's steps and sha256, and the
    probes at 1x of each stage."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in SHARED:
        path = folder / f"{name}.safetensors"
        meta = ckpt.save_half(runs[name], path)
        files[path.name] = {"sha256": source_sha256(path), "bytes": path.stat().st_size, "step": meta.get("step"),
                            "objective": meta.get("objective"), "source": str(runs[name])}
    prov = {"command": " ".join(sys.argv), "quick": plan.quick,
            "commit": git_commit(), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpu": cpu_name(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "recipe": None if plan.quick else read_recipe(plan.recipe), "files": files, "probes_1x": probes}
    (folder / "provenance.json").write_text(json.dumps(prov, indent=1))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    kind = " (AVX-512)" if "avx512f" in text else " (AVX2)" if "avx2" in text else ""
    return names[0] + kind if names else platform.processor() or "unknown"


def default_base(base: str | None, from_scratch: bool, quick: bool) -> Path | None:
    """--base, else the shipped base when there is one (never for --quick or --from-scratch)."""
    if base:
        return Path(base)
    return SHIPPED_BASE if SHIPPED_BASE.is_dir() and not (from_scratch or quick) else None


def run_demo(plan: DemoPlan) -> dict:
    out = plan.out
    arms = plan.arms()
    # rough relative costs: a stage's training steps and an evaluation's rollouts, for the time estimate
    costs = shared_costs(plan) + [2.0] * len(arms) * len(plan.seeds) + [1.0] * len(arms) * len(plan.seeds)
    progress = Progress(costs)
    runs = shared_stages(plan, progress)
    if plan.shared_only:
        return {"shared": {k: str(v) for k, v in runs.items()}}
    dmd_cfgs = {(arm, seed): stage_config(plan, "tiny_dmd.yaml", "dmd", out / arm / f"seed_{seed}", [
        f"train.init_from={runs['ode']}", f"dmd.teacher={runs['teacher']}", f"train.seed={seed}",
        "foresight.enabled=false"] + ([f"train.steps={plan.dmd_steps}"] if plan.dmd_steps else []) + extra)
        for seed in plan.seeds for arm, extra in arms.items()}
    trained = run_tasks([Task(f"DMD {arm}, training seed {seed}", run_stage, (cfg,), stage_done(cfg))
                         for (arm, seed), cfg in dmd_cfgs.items()], plan.jobs, progress)
    dmd_runs: dict[str, dict[int, Path]] = {arm: {} for arm in arms}
    for (arm, seed), run in zip(dmd_cfgs, trained):
        dmd_runs[arm][seed] = run
    cfg = load_config(CONFIGS / "tiny_dmd.yaml", QUICK if plan.quick else recipe_overrides(plan_recipe(plan), "dmd"))
    clip, fpc = cfg.data.clip_frames, cfg.model.frames_per_chunk
    evals = run_tasks([Task(f"evaluate {arm}, training seed {seed}", evaluate, (plan, dmd_runs[arm][seed], clip, fpc,
                                                                                 cfg.world),
                            eval_done(plan, dmd_runs[arm][seed], clip) is not None) for arm, seed in dmd_cfgs],
                      plan.jobs, progress)
    means: dict[str, dict[int, dict[str, float]]] = {arm: {} for arm in arms}
    for (arm, seed), result in zip(dmd_cfgs, evals):
        means[arm][seed] = seed_means(result, clip)
    metrics = sorted(means["baseline"][plan.seeds[0]])
    contrasts = {arm: {m: contrast(means[arm], means["baseline"], m) for m in metrics} for arm in arms if arm != "baseline"}
    results = {
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
        "primary_endpoint": PRIMARY_ENDPOINT, "secondary_endpoints": list(SECONDARY_ENDPOINTS),
        "clip_frames": clip, "lengths": "1x, 2x, 4x from one rollout of 8x (rolling cache: sink 1 + 4x chunks)",
        "arms": {arm: {str(s): v for s, v in m.items()} for arm, m in means.items()},
        "contrasts": contrasts,
        "verdict": verdict(contrasts["foresight"][PRIMARY_ENDPOINT], PRIMARY_ENDPOINT)
        if PRIMARY_ENDPOINT in contrasts["foresight"] else f"{PRIMARY_ENDPOINT} was not measured",
        "runs": {arm: {str(s): str(r) for s, r in seeds.items()} for arm, seeds in dmd_runs.items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown_table(results) + arms_table(results))
    first = [str(dmd_runs[arm][plan.seeds[0]]) for arm in arms]
    write_report(first, out / "report.html", title=f"mirai demo: {', '.join(arms)} (training seed {plan.seeds[0]})",
                 extra_html=contrast_table(contrasts))
    write_drift_figure({arm: [json.loads((r / "eval.json").read_text()) for r in seeds.values()]
                        for arm, seeds in dmd_runs.items()}, clip, out / "drift.png")
    write_strip({arm: dmd_runs[arm][plan.seeds[0]] for arm in ("baseline", "foresight")}, plan, clip, fpc,
                out / "strip.png")
    return results


# --------------------------------------------------------------------------------------------------
# Figures for the README: drift curves and a side-by-side strip


def write_drift_figure(evals: dict[str, list[dict]], clip_frames: int, path: Path) -> None:
    """drift.png: each probe's score against the frame, out to the evaluated length, one line per arm (mean over
    its training seeds and their sampling seeds; band: min..max over training seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = ("identity", "coherence", "count", "continuity", "layout")
    fig, axes = plt.subplots(1, len(probes), figsize=(3.2 * len(probes), 3.0), sharex=True)
    for ax, probe in zip(axes, probes):
        for arm, runs in evals.items():
            per_run = np.array([np.mean([c[probe] for c in e["curves"].values()], axis=0) for e in runs])
            x = np.arange(per_run.shape[1]) / clip_frames
            ax.plot(x, per_run.mean(0), label=arm, lw=1.2)
            ax.fill_between(x, per_run.min(0), per_run.max(0), alpha=0.15)
        ax.axvline(1.0, color="gray", ls=":", lw=1)
        ax.set_title(f"probe {probe}", fontsize=9)
        ax.set_xlabel("time (multiples of the training clip)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_strip(runs: dict[str, Path], plan: DemoPlan, clip: int, fpc: int, path: Path, videos: int = 3) -> None:
    """strip.png: the same prompts and noise rolled out by each arm to 8x the clip (rolling cache, as evaluated);
    per video one row per arm, columns at 0, 1x, 2x, 4x, 6x and the last frame."""
    import imageio.v3 as iio

    frames = EVAL_LENGTH * clip
    rolled = {arm: generate(run, videos, frames, plan.sampling_seeds[0], plan.device, eval_overrides(clip, fpc))[0]
              for arm, run in runs.items()}
    columns = [0, clip - 1, 2 * clip - 1, 4 * clip - 1, 6 * clip - 1, frames - 1]
    rows = [np.concatenate([np.pad(v[i, t], ((1, 1), (1, 1), (0, 0)), constant_values=255) for t in columns], axis=1)
            for i in range(videos) for v in rolled.values()]
    iio.imwrite(path, upscale(np.concatenate(rows, axis=0), 3))


def contrast_table(contrasts: dict, endpoints: tuple[str, ...] = (PRIMARY_ENDPOINT,) + SECONDARY_ENDPOINTS) -> str:
    """The verdict table (HTML) of the endpoints, for the report."""
    rows = []
    for arm, by_metric in contrasts.items():
        for m in endpoints:
            c = by_metric.get(m)
            if c is None:
                continue
            lo, hi = c["ci95"]
            rows.append(f"<tr><td>{arm}</td><td>{m}</td><td>{c['mean_diff']:+.4f}</td><td>[{lo:+.4f}, {hi:+.4f}]</td>"
                        f"<td>{c['p']:.3g}</td><td>{c['seeds_better']} of {c['n']}</td></tr>")
    return ("<h2>Paired contrasts over training seeds (arm &minus; baseline)</h2><table><tr><th>arm</th><th>metric</th>"
            "<th>mean diff</th><th>95% CI</th><th>p</th><th>seeds better</th></tr>" + "".join(rows) + "</table>")


def markdown_table(results: dict, arm: str = "foresight") -> str:
    """results.md: the endpoints of one arm against the baseline as a Markdown table (means over training seeds,
    each the mean over its sampling seeds), for a README or an issue."""
    arms, rows = results["arms"], []
    for m in (PRIMARY_ENDPOINT,) + SECONDARY_ENDPOINTS:
        c = results["contrasts"].get(arm, {}).get(m)
        if c is None:
            continue
        base = np.mean([v[m] for v in arms["baseline"].values()])
        other = np.mean([v[m] for v in arms[arm].values()])
        lo, hi = c["ci95"]
        rows.append(f"| {m} | {base:.3f} | {other:.3f} | {c['mean_diff']:+.3f} ({lo:+.3f}, {hi:+.3f}) | {c['p']:.2g} "
                    f"| {c['seeds_better']} of {c['n']} |")
    head = (f"| metric | baseline | {arm} | difference (95% CI) | p | seeds better |\n"
            "|---|---|---|---|---|---|\n")
    return head + "\n".join(rows) + f"\n\n{results['verdict']}\n"


def arms_table(results: dict) -> str:
    """With arms beyond the two (--ablation, --weights): every arm's paired difference from the baseline on each
    endpoint, with its 95% CI when there are 2 or more training seeds (Markdown; empty for two arms)."""
    arms = [a for a in results["contrasts"] if a != "foresight"]
    if not arms:
        return ""
    endpoints = (PRIMARY_ENDPOINT,) + SECONDARY_ENDPOINTS
    rows = []
    for arm in ["foresight"] + arms:
        cells = []
        for m in endpoints:
            c = results["contrasts"][arm].get(m)
            lo, hi = c["ci95"] if c else (math.nan, math.nan)
            cells.append("" if c is None else f"{c['mean_diff']:+.3f}" + ("" if math.isnan(lo) else f" ({lo:+.3f}, {hi:+.3f})"))
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    n = results["contrasts"]["foresight"][PRIMARY_ENDPOINT]["n"]
    return (f"\nEvery arm minus the baseline, paired over {n} training seed(s)"
            f"{' (95% CI)' if n >= 2 else ' (one seed: no interval)'}:\n\n"
            f"| arm | {' | '.join(endpoints)} |\n|---|{'---|' * len(endpoints)}\n" + "\n".join(rows) + "\n")


def verdict_lines(results: dict) -> list[str]:
    """The table printed at the end of `mirai demo`."""
    lines = [f"{'arm':16s} {'metric':42s} {'mean diff':>10s} {'95% CI':>22s} {'p':>7s} {'better':>7s}"]
    for arm, by_metric in results["contrasts"].items():
        for m in (PRIMARY_ENDPOINT,) + SECONDARY_ENDPOINTS:
            c = by_metric.get(m)
            if c is not None:
                lo, hi = c["ci95"]
                lines.append(f"{arm:16s} {m:42s} {c['mean_diff']:+10.4f} [{lo:+9.4f}, {hi:+9.4f}] "
                             f"{c['p']:7.3g} {c['seeds_better']:>3d}/{c['n']:<3d}")
    return lines + ["verdict: " + results["verdict"]]
