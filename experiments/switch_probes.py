"""Prompt switching on the shipped base's ODE student: 8 unseen scenes x seeds, switched at frame 32 of 64,
sprite 1's colour (to a colour no sprite has) or the background; re-cache and keep; the probes' switch measures,
against the unswitched rollouts and against real switched clips."""
import dataclasses, json, sys, time
import numpy as np, torch
from mirai.data.frames import to_uint8
from mirai.data.prompt import PROMPT
from mirai.data.world import make_clip, render
from mirai.eval.probes import train_probe
from mirai.eval.switching import summary, switch_scores
from mirai.sampling.pipeline import Pipeline, Switch
from mirai.video import save_video

BASE = "/work/main/src/mirai/bases/world/ode.safetensors"
NUM, FRAMES, AT = 8, 64, 32
pipe = Pipeline.load(BASE)
world = pipe.cfg.world
probe = train_probe(world)
fpc = pipe.model.cfg.frames_per_chunk

def after_prompt(p, what):
    q = p.copy()
    if what == "background":
        q[0] = (p[0] - 1 + 1) % world.num_backgrounds + 1
    else:
        used = {c for _, c, _ in PROMPT.sprites(p)}
        q[PROMPT.slot(0)][1] = next(c for c in range(world.num_colors) if c not in used) + 1
    return q

out = {"ckpt": "mirai/bases/world/ode.safetensors", "num": NUM, "frames": FRAMES, "switch_frame": AT,
       "within": fpc, "seeds": [0, 1], "results": {}}
t0 = time.time()
for seed in out["seeds"]:
    plain = pipe.inputs(NUM, FRAMES, seed)
    before = plain.inputs.prompts
    unswitched = pipe.video(plain)[0].astype(np.float32) / 255
    for what in ("colour", "background"):
        after = np.stack([after_prompt(p, what) for p in before])
        key = f"{what}/unswitched (control)"
        out["results"].setdefault(key, []).append(summary(
            [switch_scores(probe, f, b, a, AT) for f, b, a in zip(unswitched, before, after)], AT, fpc))
        for mode in ("recache", "keep"):
            pipe.cfg.sample.switch = mode
            req = pipe.inputs(NUM, FRAMES, seed)
            req = dataclasses.replace(req, switches=[Switch(AT // fpc, torch.from_numpy(after), what)])
            frames = pipe.video(req)[0]
            if seed == 0:
                save_video(torch.from_numpy(frames[:4]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1,
                           f"/tmp/switch/strip_{what}_{mode}.png")
            f01 = frames.astype(np.float32) / 255
            out["results"].setdefault(f"{what}/{mode}", []).append(summary(
                [switch_scores(probe, f, b, a, AT) for f, b, a in zip(f01, before, after)], AT, fpc))
        # real clips switched the same way (the world's own answer)
        reals = []
        for i in range(NUM):
            clip = make_clip(world, 1000 + seed, i, FRAMES)
            scene_after = clip.scene
            a = after_prompt(PROMPT.encode(clip.scene), what)
            if what == "background":
                scene_after = dataclasses.replace(clip.scene, background=int(a[0]) - 1)
            elif clip.scene.sprites:
                s0 = dataclasses.replace(clip.scene.sprites[0], color=int(a[PROMPT.slot(0)][1]) - 1)
                scene_after = dataclasses.replace(clip.scene, sprites=(s0, *clip.scene.sprites[1:]))
            f = np.concatenate([clip.frames[:AT], render(world, scene_after, FRAMES).frames[AT:]])
            reals.append(switch_scores(probe, f, PROMPT.encode(clip.scene), a, AT))
        out["results"].setdefault(f"{what}/real clips switched", []).append(summary(reals, AT, fpc))
    print(f"seed {seed} done, {time.time() - t0:.0f} s", flush=True)
out["seconds"] = round(time.time() - t0)
json.dump(out, open("/tmp/switch/result.json", "w"), indent=1)
