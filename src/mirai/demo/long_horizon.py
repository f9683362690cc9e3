"""The demo's long-horizon question (issue 32): does foresight keep identity and motion where the baseline drifts?

Every DMD arm is rolled out to the last of `demo.horizons` x the clip (`drift_samples` unseen scenes, sampling seed
`drift_sampling_seed`) with a rolling cache that stays inside the trained range
(`sampling.rollout.long_rollout_overrides`), and scored per training-clip block at each horizon beside real clips as long (`eval.evaluate.evaluate_run`).

The endpoint, declared (here and in the README) before any DMD arm was evaluated past 8x the clip:
- H* is the first horizon past 1x at which the baseline (mean over its training seeds) has lost a clear amount
  against real clips: its identity gap to the real clips has widened by `IDENTITY_LOSS` or more since 1x, or its
  motion has fallen below `MOTION_LOSS` x the real clips' motion. If it never does, H* is the last horizon.
- At H*, two co-primary endpoints: identity kept (`probe_identity@blockH*x`) and motion kept (the arm's
  `probe_motion@blockH*x` over the real clips'), foresight - baseline paired per training seed with the 95%
  t-interval over training seeds.
"""

from __future__ import annotations

import numpy as np

from .stats import contrast

IDENTITY_LOSS = 0.05  # a widening of the identity gap to real clips, from 1x, that counts as lost
MOTION_LOSS = 0.5  # motion below this fraction of the real clips' counts as lost
IDENTITY, MOTION = "probe_identity", "probe_motion"


def block_value(result: dict, name: str, horizon: int) -> float:
    """An eval.json's block metric at a horizon, the mean over its sampling seeds."""
    key = f"{name}@block{horizon}x"
    return float(np.mean([s[key] for s in result["per_seed"].values()]))


def motion_kept(result: dict, horizon: int) -> float:
    return block_value(result, MOTION, horizon) / result["real"]["metrics"][f"{MOTION}@block{horizon}x"]


def arm_values(result: dict, horizons: list[int]) -> dict[str, float]:
    """Identity and motion kept of one (arm, training seed) at each horizon: `identity@Hx`, `motion_kept@Hx`."""
    out = {}
    for h in horizons:
        out[f"identity@{h}x"] = block_value(result, IDENTITY, h)
        out[f"motion_kept@{h}x"] = motion_kept(result, h)
    return out


def first_lost_horizon(baseline: list[dict], horizons: list[int]) -> tuple[int, str]:
    """H* and why (see the module docstring): from the baseline's drift evaluations (one per training seed)."""
    real = baseline[0]["real"]["metrics"]
    identity = {h: np.mean([block_value(r, IDENTITY, h) for r in baseline]) for h in horizons}
    motion = {h: np.mean([block_value(r, MOTION, h) for r in baseline]) for h in horizons}
    gap = {h: real[f"{IDENTITY}@block{h}x"] - identity[h] for h in horizons}
    first = horizons[0]
    for h in horizons[1:]:
        if gap[h] - gap[first] >= IDENTITY_LOSS:
            return h, f"identity gap to real clips {gap[first]:.3f} at {first}x -> {gap[h]:.3f} at {h}x"
        if motion[h] < MOTION_LOSS * real[f"{MOTION}@block{h}x"]:
            return h, f"motion {motion[h]:.3f} px/frame against the real clips' {real[f'{MOTION}@block{h}x']:.3f}"
    return horizons[-1], f"the baseline never lost a clear amount up to {horizons[-1]}x: the last horizon"


def long_horizon(drift: dict[str, dict[int, dict]], horizons: list[int]) -> dict:
    """The long-horizon answer from each (arm, training seed)'s drift eval.json."""
    horizon, why = first_lost_horizon(list(drift["baseline"].values()), horizons)
    values = {arm: {seed: arm_values(r, horizons) for seed, r in seeds.items()} for arm, seeds in drift.items()}
    real = next(iter(drift["baseline"].values()))["real"]["metrics"]
    metrics = sorted(next(iter(values["baseline"].values())))
    return {"horizon": horizon, "why": why, "endpoints": [f"identity@{horizon}x", f"motion_kept@{horizon}x"],
            "real": {f"identity@{h}x": real[f"{IDENTITY}@block{h}x"] for h in horizons}
                    | {f"motion@{h}x": real[f"{MOTION}@block{h}x"] for h in horizons},
            "arms": {arm: {str(s): v for s, v in seeds.items()} for arm, seeds in values.items()},
            "contrasts": {arm: {m: contrast(values[arm], values["baseline"], m) for m in metrics}
                          for arm in values if arm != "baseline"}}
