"""Drift to 128x the clip (8 frames -> 1024): the shipped ODE student with a rolling cache (sink 1, window 16) vs
real clips of the world; per 1x block: tracked sprite speed, probe identity, count, coherence."""
import json, sys, time
import numpy as np, torch
from mirai.data.prompt import PROMPT
from mirai.data.world import make_clip
from mirai.eval.motion import tracked_speed
from mirai.eval.probes import train_probe
from mirai.sampling.pipeline import Pipeline

ckpt, tag = sys.argv[1], sys.argv[2]
extra = sys.argv[3:]
FRAMES, NUM, CLIP = 1024, 4, 8
pipe = Pipeline.load(ckpt, overrides=["sample.window_chunks=16", *extra])
world = pipe.cfg.world
probe = train_probe(world)
t0 = time.time()
req = pipe.inputs(NUM, FRAMES, 0)
frames, prompts = pipe.video(req)
gen_s = time.time() - t0
fake = frames.astype(np.float32) / 255
reals = [make_clip(world, 4242, i, FRAMES) for i in range(NUM)]
real = np.stack([c.frames for c in reals]); real_prompts = np.stack([PROMPT.encode(c.scene) for c in reals])

def blocks(videos, prompts):
    sp = np.stack([tracked_speed(probe, v, p) for v, p in zip(videos, prompts)])  # (B, T-1)
    sc = probe.score(torch.from_numpy(videos).permute(0, 1, 4, 2, 3) * 2 - 1, prompts)
    out = {}
    nb = FRAMES // CLIP
    for name, arr in (("speed", np.concatenate([sp, sp[:, -1:]], 1)), ("identity", sc.identity),
                      ("count", sc.count), ("coherence", sc.coherence)):
        b = arr.reshape(arr.shape[0], nb, CLIP)
        with np.errstate(invalid="ignore"):
            out[name] = np.nanmean(b, axis=(0, 2)).tolist()
    return out

res = {"ckpt": ckpt, "tag": tag, "overrides": ["sample.window_chunks=16", *extra], "frames": FRAMES, "num": NUM,
       "clip": CLIP, "generate_s": round(gen_s), "model": blocks(fake, prompts), "real": blocks(real, real_prompts)}
json.dump(res, open(f"/tmp/long/{tag}.json", "w"))
H = [0, 3, 7, 31, 127]
for who in ("real", "model"):
    print(who, {k: [round(v[h], 3) for h in H] for k, v in res[who].items()})
print("generate", round(gen_s), "s")
