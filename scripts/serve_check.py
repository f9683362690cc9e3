"""What `mirai serve` must show, measured on this machine, as one JSON object (issue 31):

- the sampler alone: `mirai bench sampling`'s frames per second at batch 1, and the first-chunk latency of the
  served request rolled out directly (inputs made, first chunk decoded), best of 3;
- one viewer on the socket: first-chunk latency and sustained frames per second (after the first chunk);
- the page in headless Chromium: the first chunk's latency on screen (click to first frame drawn), a prompt switch,
  and a screenshot (`--shot`);
- the load test: `--viewers` viewers on loopback for `--seconds`, errors, frames each, and the server process's
  memory over time (flat after the first seconds, beyond the per-viewer bound).

    python scripts/serve_check.py --shot docs/figures/serve.png > serve_check.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.harness, from a checkout

import torch  # noqa: E402

from mirai.bench import bench_sampling  # noqa: E402
from mirai.serve.server import load_models, shipped_student  # noqa: E402
from tests.harness.serving import drive_page, load_test, running_server, watch  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def sampler_first_chunk(pipe, frames: int, repeats: int = 3) -> float:
    """Inputs made, rollout started, first chunk decoded: best of `repeats` (after one warm-up)."""
    best = float("inf")
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        next(iter(pipe.stream(pipe.inputs(1, frames, seed=r))))
        if r:
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=str(shipped_student()))
    p.add_argument("--viewers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--frames", type=int, default=512, help="frames per stream")
    p.add_argument("--shot", type=Path, default=Path("serve.png"))
    args = p.parse_args()

    models = load_models([f"model={args.ckpt}", f"again={args.ckpt}"], "cpu", [])
    pipe = models["model"]
    result = {"machine": cpu_name(), "threads": torch.get_num_threads(),
              "ckpt": args.ckpt, "sample": {k: getattr(pipe.cfg.sample, k) for k in
                                            ("steps", "sink_chunks", "window_chunks", "positions")}}
    result["bench_sampling_batch1_fps"] = bench_sampling(pipe.model, batch=1)["frames_per_s"]
    result["sampler_first_chunk_s"] = sampler_first_chunk(pipe, args.frames)
    with running_server(models) as (url, server):
        one = asyncio.run(watch(url, {"frames": args.frames}, seconds=120, restart=False))
        result["socket"] = {k: one[k] for k in ("first_chunk_s", "fps", "frames", "errors")}
        result["browser"] = drive_page(url, args.shot, frames=args.frames)
        result["load"] = load_test(url, args.viewers, args.seconds, {"frames": args.frames})
    rss = [mb for t, mb in result["load"]["rss_mb"] if t >= 10]
    result["load"]["rss_growth_after_10s_mb"] = max(rss) - min(rss) if rss else None
    result["stream_fps_over_bench"] = result["socket"]["fps"] / result["bench_sampling_batch1_fps"]
    result["first_chunk_on_screen_over_sampler"] = (result["browser"]["first_chunk_on_screen_s"]
                                                    / result["sampler_first_chunk_s"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
