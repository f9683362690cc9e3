"""Did a prompt switch take, and did the rest of the scene stay? The world's probes on a switched video.

A switch (`Rollout.switch`, `mirai sample --switch`) changes some fields of the structured prompt at frame `at`:
the background, or a sprite slot's shape, colour or pattern. Per frame, scored with `WorldProbe.score_frames`:
- obeyed: the switched attribute as the new prompt asks it: the new background's probability (a background
  switch), else the identity of the switched sprites under the new prompt (their new colour found, with the
  shape and pattern asked);
- kept: the identity of the sprites no field of which was switched (under the background of the prompt in force,
  which sets the palette they are looked for in);
- count: the number of objects is what the prompt in force asks (a switch changes attributes, not how many);
- layout: the background's probability where it was not switched (it should stay).
`summary` gives the latency (frames from the switch until obeyed reaches 1/2) and the means after it.
"""

from __future__ import annotations

import numpy as np

from ..data.prompt import PROMPT
from .probes import WorldProbe


def switched_slots(before: np.ndarray, after: np.ndarray) -> tuple[bool, list[int]]:
    """(whether the background changed, the sprite slots any field of which changed)."""
    slots = [i for i in range(PROMPT.sprite_slots)
             if not np.array_equal(before[PROMPT.slot(i)], after[PROMPT.slot(i)])]
    return bool(before[0] != after[0]), slots


def only_slots(prompt: np.ndarray, slots: list[int]) -> np.ndarray:
    """`prompt` with every sprite slot but `slots` emptied (the background kept)."""
    out = prompt.copy()
    for i in range(PROMPT.sprite_slots):
        if i not in slots:
            out[PROMPT.slot(i)] = 0
    return out


def switch_scores(probe: WorldProbe, frames: np.ndarray, before: np.ndarray, after: np.ndarray, at: int) -> dict:
    """One video (T, H, W, 3) in [0, 1], the prompts before and after its switch at frame `at` -> (T,) curves."""
    background, slots = switched_slots(before, after)
    kept_slots = [i for i in range(len(PROMPT.sprites(after))) if i not in slots]

    def in_force(name: str, prompt_of) -> np.ndarray:  # the prompt before the switch, then the new one
        old, new = (probe.score_frames(frames, prompt_of(p))[name] for p in (before, after))
        return np.concatenate([old[:at], new[at:]])

    new = probe.score_frames(frames, after)
    out = {"count": in_force("count", lambda p: p), "layout": probe.score_frames(frames, before)["layout"]}
    if background:
        out["obeyed"] = new["layout"]
    else:
        out["obeyed"] = probe.score_frames(frames, only_slots(after, slots))["identity"]
    if kept_slots:
        out["kept"] = in_force("identity", lambda p: only_slots(p, kept_slots))
    if background:
        del out["layout"]  # it was switched: `obeyed` is its measure
    return out


def summary(curves: list[dict], at: int, within: int) -> dict:
    """Over videos switched at frame `at`: the median frames until obeyed >= 1/2 (the video's length after the
    switch where it never is), and per measure its mean before the switch and from `within` frames after it."""
    T = len(curves[0]["obeyed"])
    latency = [next((t - at for t in range(at, T) if c["obeyed"][t] >= 0.5), T - at) for c in curves]
    out = {"latency_frames_median": float(np.median(latency)), "videos": len(curves), "switch_frame": at,
           "within_frames": within}
    for name in dict.fromkeys(n for c in curves for n in c):
        stack = np.stack([c[name] for c in curves if name in c])
        if len(stack) < len(curves):
            out[f"{name}_videos"] = len(stack)
        out[f"{name}_before"] = float(stack[:, :at].mean())
        out[f"{name}_after"] = float(stack[:, at + within:].mean())
    return out
