"""The demo's statistics: each arm's metrics per training seed (the mean over its sampling seeds), and paired
contrasts against the baseline over training seeds (mean difference, 95% t-interval, two-sided p).

With one training seed there is a difference and no interval: `ci95` and `p` are None, never NaN."""

from __future__ import annotations

import math

import numpy as np


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
    """Paired over training seeds: arm - baseline. Mean, 95% t-interval and two-sided p (None with fewer than two
    seeds, or the same difference on every seed), and the seeds where the arm is better."""
    from scipy import stats  # here, not at import: `mirai --help` stays fast

    seeds = [s for s in base if s in arm and metric in base[s] and metric in arm[s]]
    d = np.array([arm[s][metric] - base[s][metric] for s in seeds], dtype=float)
    better = int(np.sum(d < 0 if lower_is_better(metric) else d > 0))
    out = {"n": len(d), "mean_diff": float(d.mean()) if len(d) else None, "ci95": None, "p": None,
           "seeds_better": better, "per_seed": dict(zip(map(str, seeds), d.tolist()))}
    if len(d) >= 2 and d.std(ddof=1) > 0:
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
        out["ci95"] = [out["mean_diff"] - half, out["mean_diff"] + half]
        out["p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    return out


def verdict(c: dict, metric: str) -> str:
    """One sentence on the primary endpoint: whether the 95% interval excludes zero, or why there is none."""
    if c["ci95"] is None:
        why = (f"{c['n']} training seed" if c["n"] == 1 else f"the same difference on all {c['n']} seeds")
        return f"{metric}: difference {c['mean_diff']:+.4f} with {why}: no interval, no conclusion"
    lo, hi = c["ci95"]
    sign = -1 if lower_is_better(metric) else 1
    if lo > 0 or hi < 0:
        better = sign * c["mean_diff"] > 0
        return (f"{metric}: the 95% CI [{lo:+.4f}, {hi:+.4f}] excludes zero: foresight is "
                f"{'better' if better else 'worse'} than the baseline")
    return f"{metric}: the 95% CI [{lo:+.4f}, {hi:+.4f}] includes zero: no effect detected at n={c['n']}"
