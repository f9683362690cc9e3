"""A demo base: the shared stages (teacher, AR teacher, ODE student) as fp16 model files with `provenance.json`
(the command, the demo's settings, the machine, each file's sha256, the probes of each stage at 1x), and beside
them `reference.json`, the demo's answer from that base (a powered run's results.json: every arm per training
seed), which `mirai demo` shows next to a user's own run and checks the run against."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import ConfigError
from ..data.frames import to_model_range
from ..data.videos import source_sha256
from ..eval.evaluate import generate
from ..eval.probes import train_probe
from .plan import SHARED, Plan, teacher_sample_overrides

PROVENANCE, REFERENCE = "provenance.json", "reference.json"


def load_base(folder: Path, shared: dict | None = None) -> dict[str, Path]:
    """A base folder's model file per shared stage, checked against its provenance: every sha256, and the keys
    every stage shared when it was made (`demo.shared`: the model size and world), which the DMD arms must share."""
    prov_path = Path(folder) / PROVENANCE
    if not prov_path.is_file():
        raise ConfigError(f"{folder} is not a demo base: no {PROVENANCE} (make one with --set demo.save_base=DIR)")
    prov = json.loads(prov_path.read_text())
    made_with = prov.get("shared") or {}
    if shared is not None and made_with != shared:
        raise ConfigError(f"the demo base {folder} was made with demo.shared={made_with}; this demo has "
                          f"demo.shared={shared} (the model sizes or worlds differ)")
    runs = {}
    for name in SHARED:
        path = Path(folder) / f"{name}.safetensors"
        if not path.is_file():
            raise ConfigError(f"the demo base {folder} has no {path.name}")
        if source_sha256(path) != prov["files"][path.name]["sha256"]:
            raise ConfigError(f"{path} does not match the sha256 in {prov_path}: the base was changed")
        runs[name] = path
    return runs


def save_base(runs: dict[str, Path], folder: Path, plan: Plan, probes: dict | None = None) -> None:
    """The shared stages as a shippable base: fp16 model files (half the size; the stages load them into fp32)
    and provenance.json."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in SHARED:
        path = folder / f"{name}.safetensors"
        meta = ckpt.save_half(runs[name], path)
        files[path.name] = {"sha256": source_sha256(path), "bytes": path.stat().st_size, "step": meta.get("step"),
                            "objective": meta.get("objective"), "source": str(runs[name])}
    prov = {"command": " ".join(sys.argv), "shared": plan.demo.shared, "demo": asdict(plan.demo),
            **machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "files": files, "probes_1x": probes}
    (folder / PROVENANCE).write_text(json.dumps(prov, indent=1))


def machine() -> dict[str, str | None]:
    """What made a file: the commit, the CPU (with its vector width: bf16 autocast runs only where it is native),
    the GPU, torch."""
    return {"commit": git_commit(), "cpu": cpu_name(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "torch": torch.__version__}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent)
    except OSError:
        return None
    return out.stdout.strip() or None  # None outside a git checkout (a wheel install)


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    kind = " (AVX-512, native bf16)" if "avx512_bf16" in text else " (AVX-512)" if "avx512f" in text else \
        " (AVX2)" if "avx2" in text else ""
    return (names[0] if names else platform.processor() or platform.machine() or "unknown") + kind


# --------------------------------------------------------------------------------------------------
# The base's probes at 1x


def base_probes(runs: dict[str, Path], plan: Plan, samples: int = 64) -> dict[str, dict[str, float]]:
    """The ground-truth probes of each shared stage's samples at 1x (the clip length), as each is sampled in the
    pipeline (teacher: whole clip with `demo.teacher_sampling`, as DMD's real score guides; AR teacher and ODE
    student: chunk by chunk with their configs' solvers), mean over the first two sampling seeds. A base is good
    enough when teacher and AR teacher score identity and coherence >= 0.8 (real clips: about 0.97 and 0.99)."""
    cfg = plan.stage("teacher", plan.out)
    probe = train_probe(cfg.world)  # the demo's world; the probe alone: no feature extractor is needed here
    teacher = teacher_sample_overrides(plan.demo)
    return {name: stage_probes(run, probe, cfg.data.clip_frames, plan.demo.sampling_seeds[:2], plan.demo.device,
                               samples, teacher if name == "teacher" else [])
            for name, run in runs.items()}


def stage_probes(run: str | Path, probe, clip_frames: int, seeds: list[int], device: str = "cpu", samples: int = 64,
                 overrides: list[str] | None = None) -> dict[str, float]:
    """One stage's probes at 1x: the mean over `seeds` of `samples` videos each, for prompts of the probe's world
    (not those of the world its file was trained in, if another)."""
    scores = []
    for seed in seeds:
        videos, prompts = generate(run, samples, clip_frames, seed, device, overrides or [], world=probe.world)
        scores.append(probe.score(to_model_range(videos), prompts).summary())
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


# --------------------------------------------------------------------------------------------------
# The reference answer shipped with a base


def read_reference(base: Path | None) -> dict | None:
    """The base's reference.json: the `results.json` of a powered demo run from it (`mirai demo --seeds 0 1 2`,
    copied beside the base), which records its machine and time."""
    path = None if base is None else Path(base) / REFERENCE
    return json.loads(path.read_text()) if path is not None and path.is_file() else None
