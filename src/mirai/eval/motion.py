"""Is the scene still moving? The tracked speed of the world's sprites, frame to frame.

The probes locate every sprite the prompt asks for (`WorldProbe.frame_objects`: its colour's main blob, judged an
object). A sprite seen as an object in two consecutive frames moved |centre(t+1) - centre(t)| pixels. A frozen
video (sprites stopped, merged into a static block) scores 0 however much it flickers, which the mean absolute
frame difference and flow-based dynamic degree count as motion. Real clips of the world move at the world's
sprite speeds (`world.min_speed`..`max_speed`, bounces and occlusion aside): their curve is the reference.
"""

from __future__ import annotations

import numpy as np

from .probes import WorldProbe, expected_background, identities_from_prompt


def tracked_speed(probe: WorldProbe, frames: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """One video (T, H, W, 3) in [0, 1] and its prompt -> (T - 1,) mean speed in pixels per frame of the prompt's
    sprites found as objects in both frames of each pair (NaN where none is)."""
    bg = expected_background(prompt)
    if bg is None or bg >= probe.world.num_backgrounds:
        bg = int(probe.background_probs(frames[:1])[0].argmax())
    colours = [i.color for i in identities_from_prompt(prompt) if i.color is not None]
    centres = []
    for frame in frames:
        found = probe.frame_objects(frame, bg)
        centres.append({c: found[c].centre for c in colours if probe.is_object(found.get(c))})
    speeds = np.full(len(frames) - 1, np.nan)
    for t in range(len(frames) - 1):
        moved = [np.linalg.norm(centres[t + 1][c] - centres[t][c]) for c in centres[t] if c in centres[t + 1]]
        if moved:
            speeds[t] = float(np.mean(moved))
    return speeds


def speed_curve(probe: WorldProbe, videos: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """Videos (B, T, H, W, 3) in [0, 1] -> (T - 1,) the tracked speed averaged over the videos tracked there."""
    per = np.stack([tracked_speed(probe, v, p) for v, p in zip(videos, prompts)])
    counts = np.isfinite(per).sum(0)
    return np.where(counts > 0, np.nansum(per, 0) / np.maximum(counts, 1), np.nan)
