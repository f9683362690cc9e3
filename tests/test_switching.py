"""The switch measures on real clips of the world: a clip whose scene changes at frame `at` (the first part
rendered from scene P, the rest from P with one attribute switched: the same motion) obeys within a frame and
keeps the rest; the unswitched clip, scored against the same switch, never obeys."""

import dataclasses

import numpy as np
import pytest

from mirai.config import WorldConfig
from mirai.data.prompt import PROMPT
from mirai.data.world import make_clip, render
from mirai.eval import probes as P
from mirai.eval.switching import summary, switch_scores, switched_slots

WORLD = WorldConfig()
T, AT = 24, 12


@pytest.fixture(scope="module")
def probe():
    return P.train_probe(WORLD)


def switched_scene(scene, what: str):
    if what == "background":
        return dataclasses.replace(scene, background=(scene.background + 1) % WORLD.num_backgrounds)
    used = {s.color for s in scene.sprites}
    free = next(c for c in range(WORLD.num_colors) if c not in used)
    return dataclasses.replace(scene, sprites=(dataclasses.replace(scene.sprites[0], color=free), *scene.sprites[1:]))


def clips(what: str, n: int = 6):
    """(real switched clip, the unswitched clip, prompt before, prompt after) for n scenes with 2+ sprites."""
    out, index = [], 0
    while len(out) < n:
        clip = make_clip(WORLD, 5, index, T)
        index += 1
        if len(clip.scene.sprites) < 2:
            continue
        after = switched_scene(clip.scene, what)
        frames = np.concatenate([clip.frames[:AT], render(WORLD, after, T).frames[AT:]])
        out.append((frames, clip.frames, PROMPT.encode(clip.scene), PROMPT.encode(after)))
    return out


@pytest.mark.parametrize("what", ["background", "colour"])
def test_a_real_switch_is_obeyed_at_once_and_keeps_the_rest(probe, what):
    cases = clips(what)
    background, slots = switched_slots(cases[0][2], cases[0][3])
    assert (background, slots) == ((True, []) if what == "background" else (False, [0]))
    switched = summary([switch_scores(probe, f, b, a, AT) for f, _, b, a in cases], AT, within=1)
    held = summary([switch_scores(probe, u, b, a, AT) for _, u, b, a in cases], AT, within=1)
    assert switched["latency_frames_median"] <= 1 and switched["obeyed_after"] > 0.8
    assert held["obeyed_after"] < 0.3 and held["latency_frames_median"] == T - AT  # never obeyed
    assert min(switched[k] for k in ("count_before", "count_after", "kept_before", "kept_after")) > 0.8
    if what == "colour":
        assert switched["layout_after"] > 0.8  # the background, not switched, stays
