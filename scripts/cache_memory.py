"""Peak memory of training reads from a prepared cache: streaming (`LatentDataset`, shards read lazily) against
reading every shard into memory (what it replaced). Writes a synthetic cache of `--shards` x `--clips` clips of
Wan-sized latents, then, in a fresh process per mode, draws `--steps` batches as training does and prints one
JSON line per mode: peak RSS (MB), cache size on disk (MB) and seconds per batch.

    python scripts/cache_memory.py --shards 40 --clips 32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mirai import checkpoint as ckpt
from mirai.data.cache import MANIFEST, LatentDataset, shard_name
from mirai.data.datasets import batch_indices, get_batch


def write_cache(folder: Path, shards: int, clips: int, shape=(21, 16, 16, 16), text=(64, 32)) -> None:
    manifest = {"settings": {"text_encoder": "x"}, "models": {"vae": "", "text_encoder": ""}, "shards": [], "refused": {}}
    for s in range(shards):
        g = torch.Generator().manual_seed(s)
        tensors = {"latents": torch.randn(clips, *shape, generator=g).half(),
                   "prompt": torch.randn(clips, *text, generator=g).half()}
        ckpt.atomic_save(tensors, folder / shard_name(s), {"kind": "latent_cache"})
        manifest["shards"].append({"file": shard_name(s), "clips": [{"caption": f"{s}.{c}"} for c in range(clips)]})
    (folder / MANIFEST).write_text(json.dumps(manifest))


class WholeCache:
    """Every shard in memory, concatenated (the reading `LatentDataset` replaced)."""

    def __init__(self, folder: Path, clip_frames: int):
        manifest = json.loads((folder / MANIFEST).read_text())
        parts = [ckpt.load(folder / s["file"])[0] for s in manifest["shards"]]
        self.latents, self.prompts = (torch.cat([p[k] for p in parts]) for k in ("latents", "prompt"))
        self.clip_frames, frames = clip_frames, self.latents.shape[1]
        self.windows = [(i, s) for i in range(len(self.latents)) for s in range(0, frames - clip_frames + 1, clip_frames)]

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, index):
        i, s = self.windows[index]
        return {"video": self.latents[i, s : s + self.clip_frames].float(), "prompt": self.prompts[i].float()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(folder: Path, mode: str, steps: int) -> dict:
    """Peak RSS after imports, then after `steps` batches of 8 (the first epoch verifies every shard once when
    streaming; `s_per_batch_later` is the second half of the steps)."""
    before = peak_rss_mb()
    data = LatentDataset(folder, 21) if mode == "streaming" else WholeCache(folder, 21)
    times = []
    for step in range(steps):
        start = time.perf_counter()
        get_batch(data, batch_indices(step, 8, len(data), seed=0))
        times.append(time.perf_counter() - start)
    disk = sum(f.stat().st_size for f in folder.glob("shard_*")) / 2**20
    return {"mode": mode, "cache_mb": round(disk), "peak_rss_after_imports_mb": round(before),
            "peak_rss_mb": round(peak_rss_mb()), "s_per_batch": round(sum(times) / steps, 4),
            "s_per_batch_later": round(sum(times[steps // 2 :]) / (steps - steps // 2), 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=40)
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--measure", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1], args.steps)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write_cache(Path(tmp), args.shards, args.clips)
        for mode in ("streaming", "whole"):
            subprocess.run([sys.executable, __file__, "--measure", tmp, mode, "--steps", str(args.steps)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
