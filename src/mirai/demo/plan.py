"""What a demo runs: its settings (`configs/demo.yaml` and the files merged over it, then `--set`) and every stage's
run config, resolved before anything trains, so a bad key fails at once and `mirai demo --dry-run` can print them.

A stage's config is, merged in this order: the train config its entry names (`demo.stages.NAME.config`), the keys
every stage shares (`demo.shared`), the stage's own keys, then what the demo sets itself (the run folder, the
device, where the stage starts from) and, last, the teacher cycle's or the DMD arm's keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import (Config, ConfigError, config_file, config_from_dict, load_settings, load_yaml, merge,
                      shipped_configs)

# Declared before any demo result was seen: the ground-truth identity of the objects at 4x the training length;
# consistency and the other probes are secondary endpoints.
PRIMARY_ENDPOINT = "probe_identity@4x"
SECONDARY_ENDPOINTS = ("subject_consistency@effnet_lite0@4x", "probe_coherence@4x", "probe_count@4x",
                       "probe_continuity@4x", "probe_identity@8x", "probe_identity@1x")
ENDPOINTS = (PRIMARY_ENDPOINT,) + SECONDARY_ENDPOINTS
SHARED = ("teacher", "ar", "ode")  # bidirectional teacher, AR teacher (teacher forcing), ODE student
STAGES = SHARED + ("dmd",)
DEMO_CONFIG = "demo.yaml"  # the default demo; `--config` files merge over it
QUICK_CONFIG = "demo_quick.yaml"  # `--quick`


@dataclass
class DemoConfig:
    """The `demo:` section of a demo config (configs/demo.yaml says what each key does)."""

    seeds: list[int] = field(default_factory=lambda: [0])
    sampling_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    samples: int = 16
    eval_length: int = 8
    horizons: list[int] = field(default_factory=lambda: [1, 4, 8, 32, 128])
    drift_samples: int = 8
    drift_sampling_seed: int = 0
    base: str | None = "shipped"
    save_base: str | None = None
    shared_only: bool = False
    device: str = "auto"
    workers: int = 0
    jobs: int = 1
    shared: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher_cycles: list[dict[str, Any]] = field(default_factory=list)
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher_sampling: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoFile:
    demo: DemoConfig = field(default_factory=DemoConfig)


def load_demo(configs: list[str] | None = None, overrides: list[str] | None = None) -> DemoConfig:
    """The demo's settings: configs/demo.yaml, each of `configs` merged over it in order, then `overrides`."""
    demo = load_settings(DemoFile, [config_file(shipped_configs() / DEMO_CONFIG), *(configs or [])], overrides).demo
    check_demo(demo)
    return demo


def check_demo(demo: DemoConfig) -> None:
    for key in ("seeds", "sampling_seeds"):
        values = getattr(demo, key)
        if not values or any(v < 0 for v in values) or len(set(values)) < len(values):
            raise ConfigError(f"demo.{key} must be a list of distinct seeds >= 0, got {values}")
    for key in ("samples", "eval_length", "jobs"):
        if getattr(demo, key) < 1:
            raise ConfigError(f"demo.{key} must be >= 1, got {getattr(demo, key)}")
    if demo.workers < 0:
        raise ConfigError(f"demo.workers must be >= 0, got {demo.workers}")
    if sorted(set(demo.horizons)) != demo.horizons or demo.horizons[0] != 1 or len(demo.horizons) < 2:
        raise ConfigError(f"demo.horizons must be increasing multiples of the clip starting at 1, got {demo.horizons}")
    if demo.drift_samples < 1 or demo.drift_sampling_seed < 0:
        raise ConfigError(f"demo.drift_samples must be >= 1 and demo.drift_sampling_seed >= 0, got "
                          f"{demo.drift_samples} and {demo.drift_sampling_seed}")
    if demo.eval_length < 4:
        raise ConfigError(f"demo.eval_length must be >= 4 (the primary endpoint is at 4x), got {demo.eval_length}")
    missing = [s for s in STAGES if "config" not in demo.stages.get(s, {})]
    unknown = sorted(set(demo.stages) - set(STAGES))
    if missing or unknown:
        what = f"missing: {', '.join(missing)}" if missing else f"unknown: {', '.join(unknown)}"
        raise ConfigError(f"demo.stages maps each of {', '.join(STAGES)} to a train config and its keys "
                          f"({{config: FILE, ...}}); {what}")
    if not {"baseline", "foresight"} <= set(demo.arms):
        raise ConfigError(f"demo.arms must hold 'baseline' and 'foresight' (the contrast), got {sorted(demo.arms)}")


# --------------------------------------------------------------------------------------------------
# Stage configs


@dataclass
class Plan:
    """A demo to run: where (`out`), with what settings, from which base folder (None: the shared stages are
    trained in `out/shared`)."""

    out: Path
    demo: DemoConfig
    base: Path | None

    @classmethod
    def make(cls, out: str | Path, demo: DemoConfig) -> "Plan":
        return cls(Path(out), demo, base_folder(demo.base))

    def stage(self, name: str, folder: Path, *layers: dict[str, Any]) -> Config:
        """The run config of stage `name` in `folder`, with `layers` (a cycle's or an arm's keys) merged last."""
        spec = dict(self.demo.stages[name])
        file = load_yaml(spec.pop("config"))
        own = {"train": {"out_dir": str(folder), "device": self.demo.device}}
        if name in SHARED:
            own["data"] = {"num_workers": self.demo.workers}
        try:
            return config_from_dict(merge(file, self.demo.shared, spec, own, *layers))
        except ConfigError as e:
            raise ConfigError(f"demo stage '{name}' ({folder}): {e}") from None

    def shared_stages(self) -> list[tuple[str, str, Config]]:
        """(title, stage, config) of each shared stage in order, each starting from the one before: the teacher,
        its cycles, the AR teacher, the ODE student."""
        root = self.out / "shared"
        teacher = self.stage("teacher", root / "teacher")
        out = [("bidirectional teacher", "teacher", teacher)]
        for n, cycle in enumerate(self.demo.teacher_cycles, start=2):  # each from the last one's EMA, fresh AdamW
            cfg = self.stage("teacher", root / f"teacher_c{n}", cycle, init_from(out[-1][2]))
            out.append((f"bidirectional teacher, cycle {n} ({cfg.train.steps} steps at peak LR {cfg.train.lr:g})",
                        "teacher", cfg))
        ar = self.stage("ar", root / "ar", init_from(out[-1][2]))
        out.append(("AR teacher (teacher forcing from the bidirectional teacher)", "ar", ar))
        ode = self.stage("ode", root / "ode", init_from(ar), {"distill": {"teacher": ar.train.out_dir}})
        out.append(("ODE distillation", "ode", ode))
        return out

    def dmd_stages(self, runs: dict[str, Path]) -> dict[tuple[str, int], Config]:
        """The DMD stage per (arm, training seed), each from the same ODE student with the teacher as real score."""
        start = {"train": {"init_from": str(runs["ode"])}, "dmd": {"teacher": str(runs["teacher"])}}
        return {(arm, seed): self.stage("dmd", self.out / arm / f"seed_{seed}", start, {"train": {"seed": seed}}, keys)
                for seed in self.demo.seeds for arm, keys in self.demo.arms.items()}

    def check(self) -> None:
        """Build every stage's config now, so a bad key or value is one error before anything trains."""
        self.describe()

    def describe(self) -> list[str]:
        """`mirai demo --dry-run`: the resolved settings and each stage it would run, with its folder and length."""
        lines = ["demo settings (configs/demo.yaml, the --config files, --set):",
                 yaml.safe_dump({"demo": asdict(self.demo)}, sort_keys=False).rstrip(), "stages:"]
        if self.base is None:
            stages = self.shared_stages()
            lines += [f"  shared stage: {title}: {cfg.train.out_dir} ({cfg.train.steps} steps)"
                      for title, _, cfg in stages]
            runs = {name: Path(cfg.train.out_dir) for _, name, cfg in stages}
        else:
            lines += [f"  shared stages: the base in {self.base}"]
            runs = {name: self.base / f"{name}.safetensors" for name in SHARED}
        lines += [f"  DMD {arm}, training seed {seed}: {cfg.train.out_dir} ({cfg.train.steps} steps)"
                  for (arm, seed), cfg in self.dmd_stages(runs).items()]
        shape = self.dmd_shape()
        return lines + [f"  evaluate each arm: {self.demo.eval_length}x the {shape.data.clip_frames}-frame clip, "
                        f"{self.demo.samples} videos x sampling seeds {self.demo.sampling_seeds}",
                        f"  drift of each arm: {self.demo.horizons[-1]}x the clip, {self.demo.drift_samples} videos, "
                        f"blocks at {', '.join(f'{h}x' for h in self.demo.horizons)}, beside real clips"]

    def dmd_shape(self) -> Config:
        """The DMD stage's config without a run (its world, clip length and chunk size, for the evaluation)."""
        return self.stage("dmd", self.out)


def init_from(cfg: Config) -> dict[str, Any]:
    """Start from the run folder of `cfg` (its model.safetensors)."""
    return {"train": {"init_from": cfg.train.out_dir}}


def shipped_base() -> Path:
    """Where the shipped base lives: `mirai/bases/world/` inside the package."""
    return shipped_configs().parent / "bases" / "world"


def base_folder(base: str | None) -> Path | None:
    """`demo.base`: "shipped" (the shipped base), a folder, or None (train the shared stages)."""
    if base is None or base.lower() in ("null", "none", ""):
        return None
    return shipped_base() if base == "shipped" else Path(base)


def eval_overrides(clip_frames: int, frames_per_chunk: int) -> list[str]:
    """The rolling cache of the evaluation: sink 1 + a window of 4x the clip (8x rolls past it; 1x and 4x fit)."""
    return ["sample.sink_chunks=1", f"sample.window_chunks={4 * clip_frames // frames_per_chunk}"]


def teacher_sample_overrides(demo: DemoConfig) -> list[str]:
    """`demo.teacher_sampling` as the sample.* overrides the probes' generation takes."""
    return [f"sample.{k}={v}" for k, v in demo.teacher_sampling.items()]
