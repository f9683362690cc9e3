"""docs/figures/dips_by_cache.png: per-frame probe continuity under each cache setting (experiments/dips.py's JSON),
with real clips of the world as the control."""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mirai.config import WorldConfig
from mirai.data.frames import to_model_range
from mirai.eval.evaluate import real_clips
from mirai.eval.probes import train_probe

runs = {"shipped ODE student (sampling seed 0)": "/tmp/dips/ode_s0.json",
        "demo baseline DMD, training seed 0 (sampling seed 1)": "/tmp/dips/dmdbase_s1.json"}
world = WorldConfig()
frames, prompts = real_clips(world, 16, 64, 0)
real = train_probe(world).score(to_model_range(frames), prompts).curves()["continuity"]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
for ax, (title, path) in zip(axes, runs.items()):
    d = json.load(open(path))
    ax.plot(real, color="black", lw=1.5, label="real clips")
    for name, curves in d.items():
        ax.plot(curves["continuity"], lw=1.0, label=name)
    for f in (26, 52):
        ax.axvline(f, color="gray", ls=":", lw=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("frame (the clip is 8 frames; 26 = 3.25x, 52 = 6.5x)", fontsize=8)
axes[0].set_ylabel("probe continuity (16 videos)")
axes[1].legend(fontsize=7, loc="lower left")
fig.tight_layout()
fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "docs/figures/dips_by_cache.png", dpi=110)
