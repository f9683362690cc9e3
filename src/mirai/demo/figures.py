"""The demo's figures: drift to the last horizon per training-clip block (each probe and the motion, one line per
arm and one for real clips), the per-frame curves to 8x, and a strip of frames of the same prompts and noise rolled
out by both arms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..eval.evaluate import generate
from ..video import upscale
from .plan import Plan, eval_overrides


DRIFT_PANELS = (("probe_identity", "identity"), ("probe_count", "count"), ("probe_coherence", "coherence"),
                ("probe_continuity", "continuity"), ("probe_motion", "motion (px/frame)"))


def write_drift_figure(drift: dict[str, dict[int, dict]], path: Path) -> None:
    """drift.png: per training-clip block out to the last horizon, each probe and the tracked motion, one line per
    arm (mean over its training seeds; band: min..max over them) and the real clips as long (black): a dip the
    real clips share is the world's, one they do not is the model's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = next(iter(drift["baseline"].values()))["real"]["curves"]
    fig, axes = plt.subplots(1, len(DRIFT_PANELS), figsize=(3.2 * len(DRIFT_PANELS), 3.0), sharex=True)
    for ax, (key, title) in zip(axes, DRIFT_PANELS):
        curve = f"block_{key}"
        x = np.arange(1, len(real[curve]) + 1)
        ax.plot(x, real[curve], color="black", lw=1.2, label="real clips")
        for arm, seeds in drift.items():
            per = np.array([np.mean([c[curve] for c in r["curves"].values()], axis=0) for r in seeds.values()])
            ax.plot(x, per.mean(0), lw=1.2, label=arm)
            ax.fill_between(x, per.min(0), per.max(0), alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("block (multiples of the training clip)", fontsize=8)
        if key != "probe_motion":
            ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_curves_figure(evals: dict[str, list[dict]], clip_frames: int, path: Path) -> None:
    """drift_8x.png: each probe's score against the frame, out to the evaluated length, one line per arm (mean over
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


def write_strip(runs: dict[str, Path], plan: Plan, clip: int, fpc: int, path: Path, videos: int = 3) -> None:
    """strip.png: the same prompts and noise rolled out by each arm to 8x the clip (rolling cache, as evaluated);
    per video one row per arm, columns at 0, 1x, 2x, 4x, 6x (those shorter than the rollout) and the last frame."""
    import imageio.v3 as iio

    frames = plan.demo.eval_length * clip
    rolled = {arm: generate(run, videos, frames, plan.demo.sampling_seeds[0], plan.demo.device,
                               eval_overrides(clip, fpc))[0]
              for arm, run in runs.items()}
    lengths = [k for k in (1, 2, 4, 6) if k < plan.demo.eval_length]
    columns = [0] + [k * clip - 1 for k in lengths] + [frames - 1]
    rows = [np.concatenate([np.pad(v[i, t], ((1, 1), (1, 1), (0, 0)), constant_values=255) for t in columns], axis=1)
            for i in range(videos) for v in rolled.values()]
    iio.imwrite(path, upscale(np.concatenate(rows, axis=0), 3))
