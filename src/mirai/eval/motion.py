"""Is the scene still moving? The tracked motion of the world's sprites.

The probes locate every sprite the prompt asks for (`WorldProbe.frame_objects`: its colour's main blob, judged an
object). Two measures follow from the tracked centres:

- `tracked_speed`: |centre(t+1) - centre(t)| per frame pair. A generated sprite's detected centre jitters by a
  pixel or so from frame to frame, and the jitter counts as speed here.
- `block_motion`: the net displacement of each sprite over a block of frames (a training clip's length), divided
  by the frames between its first and last sighting in the block. A jitter averages out over the block and a
  motion adds up, so a frozen video (sprites stopped, or merged into a static block) scores about 0 however much
  it flickers, which the mean absolute frame difference and flow-based dynamic degree count as motion. This is
  the motion measure of the long-video evaluation.

Real clips of the world move at the world's sprite speeds (`world.min_speed`..`max_speed`, bounces and occlusion
aside): their curve is the reference.
"""

from __future__ import annotations

import numpy as np

from .probes import WorldProbe, expected_background, identities_from_prompt


def tracked_centres(probe: WorldProbe, frames: np.ndarray, prompt: np.ndarray) -> list[dict[int, np.ndarray]]:
    """One video (T, H, W, 3) in [0, 1] and its prompt -> per frame, {colour: centre (2,)} of the prompt's sprites
    found as objects there."""
    bg = expected_background(prompt)
    if bg is None or bg >= probe.world.num_backgrounds:
        bg = int(probe.background_probs(frames[:1])[0].argmax())
    colours = [i.color for i in identities_from_prompt(prompt) if i.color is not None]
    centres = []
    for frame in frames:
        found = probe.frame_objects(frame, bg)
        centres.append({c: found[c].centre for c in colours if probe.is_object(found.get(c))})
    return centres


def tracked_speed(probe: WorldProbe, frames: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """One video (T, H, W, 3) in [0, 1] and its prompt -> (T - 1,) mean speed in pixels per frame of the prompt's
    sprites found as objects in both frames of each pair (NaN where none is)."""
    centres = tracked_centres(probe, frames, prompt)
    speeds = np.full(len(frames) - 1, np.nan)
    for t in range(len(frames) - 1):
        moved = [np.linalg.norm(centres[t + 1][c] - centres[t][c]) for c in centres[t] if c in centres[t + 1]]
        if moved:
            speeds[t] = float(np.mean(moved))
    return speeds


def net_motion(centres: list[dict[int, np.ndarray]], min_span: int) -> float:
    """Mean over sprites of |last centre - first centre| / frames between them, for sprites seen at least
    `min_span` frames apart (NaN if none is)."""
    rates = []
    for colour in set().union(*centres):
        seen = [t for t, c in enumerate(centres) if colour in c]
        if seen and seen[-1] - seen[0] >= min_span:
            rates.append(np.linalg.norm(centres[seen[-1]][colour] - centres[seen[0]][colour]) / (seen[-1] - seen[0]))
    return float(np.mean(rates)) if rates else float("nan")


def block_motion(probe: WorldProbe, frames: np.ndarray, prompt: np.ndarray, block: int) -> np.ndarray:
    """One video (T, H, W, 3) in [0, 1] -> (T // block,) net motion in pixels per frame in each block of `block`
    frames (see the module docstring; NaN for a block where no sprite is tracked over half of it)."""
    centres = tracked_centres(probe, frames, prompt)
    return np.array([net_motion(centres[b * block : (b + 1) * block], max(1, block // 2))
                     for b in range(len(frames) // block)])


def speed_curve(probe: WorldProbe, videos: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """Videos (B, T, H, W, 3) in [0, 1] -> (T - 1,) the tracked speed averaged over the videos tracked there."""
    per = np.stack([tracked_speed(probe, v, p) for v, p in zip(videos, prompts)])
    counts = np.isfinite(per).sum(0)
    return np.where(counts > 0, np.nansum(per, 0) / np.maximum(counts, 1), np.nan)
