"""Where do the dips at 3.25x / 6.5x the clip (frames 26 and 52) come from? Per-frame probe curves of one model
under several cache settings, 16 unseen scenes x 64 frames, and the nearest rotary alias of each distance.
usage: python experiments/dips.py CKPT TAG [SEED]"""
import json, sys, time
import numpy as np
from mirai.data.frames import to_model_range
from mirai.eval.probes import train_probe
from mirai.sampling.pipeline import Pipeline

ckpt, tag = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
FRAMES, NUM = 64, 16
SETTINGS = {
    "full cache": ["sample.window_chunks=0"],
    "sink1 win16": ["sample.sink_chunks=1", "sample.window_chunks=16"],
    "sink0 win16": ["sample.sink_chunks=0", "sample.window_chunks=16"],
    "sink1 win8": ["sample.sink_chunks=1", "sample.window_chunks=8"],
    "sink1 win3": ["sample.sink_chunks=1", "sample.window_chunks=3"],
    "sink1 win16 absolute": ["sample.sink_chunks=1", "sample.window_chunks=16", "sample.positions=absolute"],
}
only = [s for s in sys.argv[4:]] or list(SETTINGS)
probe = None
out = {}
for name in only:
    t0 = time.time()
    pipe = Pipeline.load(ckpt, overrides=SETTINGS[name])
    probe = probe or train_probe(pipe.cfg.world)
    frames, prompts = pipe.video(pipe.inputs(NUM, FRAMES, seed))
    sc = probe.score(to_model_range(frames), prompts)
    out[name] = {k: v.tolist() for k, v in sc.curves().items()}
    c = np.array(out[name]["continuity"])
    print(f"{name:22s} {time.time() - t0:5.0f}s continuity min at", np.argsort(c)[:4].tolist(),
          " ".join(f"{x:.2f}" for x in c), flush=True)
json.dump(out, open(f"/tmp/dips/{tag}_s{seed}.json", "w"))
