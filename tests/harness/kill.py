"""The kill harness: SIGKILL `mirai train` at random moments, rerun it until it finishes, and compare
everything the finished run leaves with an uninterrupted run, tensor by tensor.

    python scripts/kill_harness.py                       # every stage, 20 trials each
    python scripts/kill_harness.py --stages dmd --trials 5 --json

A developer tool, not part of the package: it sits on top of the CLI and the named points of a checkpoint
write (`mirai.checkpoint.reached`); tests/test_reliability.py imports it for a few targeted kills.

Stages (toy size): teacher (bidirectional), teacher_forcing, ode (pair writer + student), dmd, dmd_foresight.
A trial starts the stage's command in a fresh folder and kills it (SIGKILL, as a pre-emption) at a random
moment, or exactly inside a checkpoint write (after the temporary file is written, before its rename) or
between the two files of a checkpoint (sites of `mirai.checkpoint.reached`: the child registers
`kill_at(site, n)` before it runs the command); it reruns the same command, with further random kills at a
falling rate, until a run exits normally. Then it checks:
- every .safetensors file (training state, exported model, ODE pair shards) has the same tensors, bit for
  bit, as the uninterrupted run's;
- the exported model is the training state's EMA at the same step;
- metrics.jsonl logs every step at most once, in order; no temporary file is left behind.
Prints one line per stage, `stage=S trials=N kills=K mismatches=M errors=E` (E: runs that failed without
being killed), and with --json one JSON object.

Each run is a child process calling `mirai.cli.main(["train", ...])`, the command's own code path. Children
are forked from a fresh fork server that has imported Mirai but never run torch (forking a process whose
OpenMP threads have run can hang the child), which saves the interpreter's start-up per run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from mirai import checkpoint as ckpt
from mirai.cli import main as mirai

TOY = [
    "world.image_size=16", "world.sprite_sizes=[5]", "world.num_patterns=1",
    "model.dim=32", "model.depth=2", "model.heads=2", "model.patch_size=4", "model.image_size=16",
    "data.clip_frames=6", "sample.timesteps=[1000,500]", "sample.solver=renoise", "sample.context_noise=0.1",
    "train.batch_size=2", "train.sample_every=0", "train.log_every=1", "train.precision=fp32",
    "train.warmup_steps=2", "train.ema_decay=0.9", "train.threads=1", "train.device=cpu",
]
STAGES = ("teacher", "teacher_forcing", "ode", "dmd", "dmd_foresight")


def stage_args(name: str, root: Path, out: Path) -> list[str]:
    """The --set list of one stage; later stages read the prerequisite runs under root/prereq."""
    pre = root / "prereq"
    sets = {
        "teacher": ["train.objective=bidirectional", "train.steps=8", "train.ckpt_every=2"],
        "teacher_forcing": ["train.objective=teacher_forcing", "train.steps=8", "train.ckpt_every=2",
                            "train.context_noise_max=0.2"],
        "ode": ["train.objective=ode", "train.steps=6", "train.ckpt_every=2", f"train.init_from={pre / 'ar'}",
                f"distill.teacher={pre / 'ar'}", "distill.num_videos=8", "distill.shard_size=2",
                "distill.teacher_steps=4", "distill.teacher_cfg_scale=2.0"],
        "dmd": ["train.objective=dmd", "train.steps=8", "train.ckpt_every=2", f"train.init_from={pre / 'ode'}",
                f"dmd.teacher={pre / 'teacher'}", "dmd.critic_updates_per_gen=2", "dmd.real_cfg_scale=2.0",
                "train.loss_t_floor=1.0"],
    }
    sets["dmd_foresight"] = sets["dmd"] + ["foresight.enabled=true", "foresight.weight=0.5"]
    return ["train"] + [a for s in TOY + sets[name] + [f"train.out_dir={out}"] for a in ("--set", s)]


# --------------------------------------------------------------------------------------------------
# Running and killing


def kill_at(site: str, nth: int) -> Callable[[str], None]:
    """Register an observer of `mirai.checkpoint` that SIGKILLs this process (as a pre-emption would) the nth
    time the named site is reached; returns it."""
    hits = 0

    def observer(reached: str) -> None:
        nonlocal hits
        if reached == site:
            hits += 1
            if hits == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    ckpt.observers.append(observer)
    return observer


def _child(argv: list[str], fault: tuple[str, int] | None) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    if fault:
        kill_at(*fault)
    os._exit(mirai(argv))


def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.harness.kill"])
    return ctx


def run(argv: list[str], kill_after: float | None = None, fault: tuple[str, int] | None = None) -> tuple[int, float]:
    """Run the command in a child process; SIGKILL it after kill_after seconds, or (fault = (site, n)) at the
    nth time it reaches that site of a checkpoint write. Returns (exit code, seconds)."""
    proc = _context().Process(target=_child, args=(argv, fault))
    t0 = time.perf_counter()
    proc.start()
    proc.join(kill_after)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    return proc.exitcode, time.perf_counter() - t0


def killed(code: int) -> bool:
    return code == -signal.SIGKILL


# --------------------------------------------------------------------------------------------------
# Comparing


def tensor_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.safetensors"))}


def compare(folder: Path, reference: Path) -> list[str]:
    """Every difference between a finished run and the uninterrupted one, and every inconsistency inside it."""
    problems = []
    ours, theirs = tensor_files(folder), tensor_files(reference)
    if ours.keys() != theirs.keys():
        problems.append(f"files differ: {sorted(set(ours) ^ set(theirs))}")
    for name in ours.keys() & theirs.keys():
        a, b = ckpt.load(ours[name])[0], ckpt.load(theirs[name])[0]
        if a.keys() != b.keys():
            problems.append(f"{name}: tensor names differ")
        problems += [f"{name}: {k} differs" for k in a.keys() & b.keys() if not torch.equal(a[k], b[k])]
    state, meta = ckpt.load(folder / "ckpt.safetensors")
    model, model_meta = ckpt.load(folder / "model.safetensors")
    if model_meta.get("step") != meta["step"]:
        problems.append(f"model.safetensors is of step {model_meta.get('step')}, the training state of {meta['step']}")
    problems += [f"model.safetensors: {k} is not the EMA" for k in model if not torch.equal(model[k], state[f"ema.{k}"])]
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    if steps != sorted(set(steps)):
        problems.append(f"metrics.jsonl logs steps out of order or twice: {steps}")
    leftovers = [str(p.relative_to(folder)) for p in folder.rglob("*.tmp")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return problems


# --------------------------------------------------------------------------------------------------
# Trials


def trial(argv: list[str], out: Path, reference: Path, duration: float, saves: int, rng: random.Random) -> dict:
    """Kill the command once in a chosen way, then rerun it (with random kills at a falling rate) until it ends."""
    mode = rng.choice(["random", "random", "checkpoint-before-rename", "checkpoint-between-files"])
    kills, errors, runs = 0, 0, 0
    fault = (mode, rng.randint(1, saves)) if mode != "random" else None
    kill_after = rng.uniform(0.05, 1.1) * duration if mode == "random" else None
    while True:
        code, _ = run(argv, kill_after, fault)
        runs += 1
        if code == 0:
            break
        if killed(code):
            kills += 1
        else:
            errors += 1
            if errors >= 3:
                break
        fault = None  # later reruns: random kills, each less likely, so the trial ends
        kill_after = rng.uniform(0.05, 1.0) * duration if rng.random() < 0.5 ** runs else None
    problems = compare(out, reference) if code == 0 else [f"did not finish (exit {code})"]
    return {"mode": mode, "runs": runs, "kills": kills, "errors": errors, "problems": problems}


def prepare(root: Path) -> None:
    """The prerequisite runs of the later stages (teacher, AR teacher, ODE student), uninterrupted."""
    pre = root / "prereq"
    for name, folder in (("teacher", "teacher"), ("teacher_forcing", "ar"), ("ode", "ode")):
        code, _ = run(stage_args(name, root, pre / folder))
        if code != 0:
            raise SystemExit(f"prerequisite {name} failed (exit {code})")


def harness(stages: list[str], trials: int, seed: int, root: Path) -> dict:
    rng = random.Random(seed)
    prepare(root)
    summary = {}
    for name in stages:
        reference = root / name / "reference"
        code, duration = run(stage_args(name, root, reference))
        if code != 0:
            raise SystemExit(f"uninterrupted {name} failed (exit {code})")
        saves = len({json.loads(line)["step"] for line in (reference / "metrics.jsonl").read_text().splitlines()
                     if json.loads(line)["step"] % 2 == 0})  # ckpt_every is 2 in every toy stage
        results = []
        for i in range(trials):
            out = root / name / f"trial_{i:03d}"
            results.append(trial(stage_args(name, root, out), out, reference, duration, saves, rng))
            shutil.rmtree(out, ignore_errors=True)
        summary[name] = {
            "trials": trials, "kills": sum(r["kills"] for r in results),
            "mismatches": sum(bool(r["problems"]) for r in results), "errors": sum(r["errors"] for r in results),
            "kills_by_mode": {m: sum(r["kills"] for r in results if r["mode"] == m)
                              for m in sorted({r["mode"] for r in results})},
            "reference_run_s": round(duration, 2), "problems": [p for r in results for p in r["problems"]][:10],
        }
        s = summary[name]
        print(f"stage={name} trials={s['trials']} kills={s['kills']} mismatches={s['mismatches']} "
              f"errors={s['errors']}", file=sys.stderr, flush=True)
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        summary = harness(args.stages, args.trials, args.seed, Path(tmp))
    if args.json:
        print(json.dumps(summary))
    return 1 if any(s["mismatches"] or s["errors"] for s in summary.values()) else 0
