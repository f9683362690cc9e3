"""The tracked speed: on real clips it is the sprites' true speed; a frozen video scores 0, a flickering frozen
video too (the failure the mean frame difference cannot see)."""

import numpy as np
import pytest

from mirai.config import WorldConfig
from mirai.data.prompt import PROMPT
from mirai.data.world import make_clip
from mirai.eval import probes as P
from mirai.eval.motion import block_motion, speed_curve, tracked_speed

WORLD = WorldConfig()


@pytest.fixture(scope="module")
def probe():
    return P.train_probe(WORLD)


def frozen_versions(clip, rng, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The clip's first frame held for its whole length, and the same with flicker (Gaussian noise of `sigma`)."""
    still = np.repeat(clip.frames[:1], len(clip.frames), axis=0)
    return still, np.clip(still + rng.normal(0, sigma, still.shape), 0, 1).astype(np.float32)


def test_real_clips_move_at_their_true_speed_and_a_frozen_one_does_not(probe):
    errors, frozen, flicker = [], [], []
    rng = np.random.default_rng(0)
    for i in range(6):
        clip = make_clip(WORLD, 7, i, 16)
        prompt = PROMPT.encode(clip.scene)
        seen = clip.visible.min(axis=1) > 0.9  # every sprite fully in view (no pillar, no overlap)
        true = np.linalg.norm(np.diff(clip.positions, axis=0), axis=-1).mean(1)  # (T - 1,)
        both = seen[:-1] & seen[1:]
        measured = tracked_speed(probe, clip.frames, prompt)
        errors += list(np.abs(measured - true)[both & np.isfinite(measured)])
        still, noisy = frozen_versions(clip, rng, 0.03)
        frozen.append(np.nanmean(tracked_speed(probe, still, prompt)))
        flicker.append(np.nanmean(tracked_speed(probe, noisy, prompt)))
    assert len(errors) > 30 and np.median(errors) < 0.3
    assert max(frozen) < 0.05 and max(flicker) < 0.5 * WORLD.min_speed


def test_the_curve_averages_the_videos_tracked_at_each_frame(probe):
    clips = [make_clip(WORLD, 7, i, 8) for i in range(3)]
    videos, prompts = np.stack([c.frames for c in clips]), np.stack([PROMPT.encode(c.scene) for c in clips])
    per = np.stack([tracked_speed(probe, v, p) for v, p in zip(videos, prompts)])
    curve = speed_curve(probe, videos, prompts)
    assert curve.shape == (7,)
    np.testing.assert_allclose(curve, np.nanmean(per, 0))


def test_block_motion_is_the_net_displacement_and_ignores_flicker(probe):
    errors, frozen, flicker = [], [], []
    rng = np.random.default_rng(1)
    for i in range(6):
        clip = make_clip(WORLD, 11, i, 24)
        prompt = PROMPT.encode(clip.scene)
        seen = clip.visible.min(axis=1) > 0.9  # every sprite fully in view: its tracked centre is its position
        measured = block_motion(probe, clip.frames, prompt, 8)
        assert measured.shape == (3,)
        for b in range(3):
            if seen[b * 8 : (b + 1) * 8].all():
                step = clip.positions[b * 8 + 7] - clip.positions[b * 8]  # (sprites, 2)
                errors.append(abs(measured[b] - np.linalg.norm(step, axis=-1).mean() / 7))
        still, noisy = frozen_versions(clip, rng, 0.05)
        frozen.append(np.nanmax(block_motion(probe, still, prompt, 8)))
        flicker.append(np.nanmax(block_motion(probe, noisy, prompt, 8)))
    assert len(errors) >= 4 and np.median(errors) < 0.1
    assert max(frozen) < 0.02 and max(flicker) < 0.2 * WORLD.min_speed
