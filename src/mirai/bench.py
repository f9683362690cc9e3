"""Benchmarks that print one machine-readable JSON object. Speed targets live here, never in tests.

- `sampling`: cached rollout throughput, KV-cache speed-up against recomputing the prefix (same output,
  checked), and whether a rolling cache keeps the per-chunk cost flat over a long rollout.
- `train`: one training step's time, tokens/s and achieved GFLOP/s (counted by torch's FlopCounterMode)
  against a GEMM peak measured in the same run, for fp32 and bf16.
- `foresight`: the DMD stage's generator step with and without the foresight term, and the sampling
  speed of the two generators.
- `fps`: streaming generation speed of one model (default a random `wan-tiny`) on a chosen device, with
  what it counts stated in the result: denoising only (the cached chunk-by-chunk rollout, VAE decoding
  excluded), warm-up excluded, first-chunk latency, steps, resolution, precision and device.
- `ddp`: training throughput (clips/s, teacher forcing) of one process with two threads against two
  processes of one thread each under torchrun (DDP), the same global batch: `mirai train` itself, timed from
  the steps it logs (warm-up steps excluded), the two arms alternated.
The steps timed are the training stages' own (`mirai.training`), not copies.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import checkpoint as ckpt
from .config import SampleConfig, WorldConfig, config_from_dict
from .data.prompt import PROMPT
from .device import autocast_context, bf16_native, pick_device
from .diffusion.schedule import FlowSchedule
from .models.build import build_model
from .models.dit import count_parameters
from .models.wan_vae import WanAutoencoder
from .sampling.rollout import iter_rollout, rollout
from .training.stages import build_stage
from .training.supervised import TeacherForcingStage


def random_model(preset: str = "tiny", seed: int = 0, conditional: bool = False, **overrides) -> torch.nn.Module:
    """A model of the preset with random (not zero-initialised) weights, so outputs are not trivial
    (conditional: with the synthetic world's prompt fields)."""
    cfg = config_from_dict({"model": {"preset": preset, "conditional": False, **overrides}}, model_only=True).model
    if conditional:
        cfg.prompt_vocab = PROMPT.vocab(WorldConfig())
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _time(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_sampling(model: torch.nn.Module | None = None, batch: int = 4, repeats: int = 2) -> dict:
    model = model or random_model()
    schedule, fpc = FlowSchedule(), model.cfg.frames_per_chunk
    shape = model.cfg.frame_shape
    plain = SampleConfig()  # 4 steps, the default few-step sampler
    result: dict = {"model": model.cfg.preset, "batch": batch, "steps": plain.steps, "frames_per_chunk": fpc}

    noise = torch.randn(batch, 16 * fpc, *shape, generator=torch.Generator().manual_seed(0))
    rollout(model, schedule, noise[:, : 2 * fpc], sample=plain)  # warm-up
    t = _time(lambda: rollout(model, schedule, noise, sample=plain), repeats)
    result["frames_per_s"] = batch * noise.shape[1] / t

    for chunks in (8, 16, 32):
        noise = torch.randn(batch, chunks * fpc, *shape, generator=torch.Generator().manual_seed(chunks))
        cached = rollout(model, schedule, noise, sample=plain)
        uncached = rollout(model, schedule, noise, sample=plain, use_cache=False)
        t_cached = _time(lambda: rollout(model, schedule, noise, sample=plain), repeats)
        t_uncached = _time(lambda: rollout(model, schedule, noise, sample=plain, use_cache=False), 1)
        result[f"kv_speedup_{chunks}"] = t_uncached / t_cached
        result[f"kv_max_abs_diff_{chunks}"] = (cached - uncached).abs().max().item()

    # Rolling cache: 1 sink + 15 window chunks is full by chunk 16. Time every chunk of a 65-chunk rollout
    # (chunk 64 then includes its cache commit, as chunk 16 does) and compare chunk 64 with chunk 16.
    rolling = SampleConfig(sink_chunks=1, window_chunks=15)
    noise = torch.randn(batch, 65 * fpc, *shape, generator=torch.Generator().manual_seed(1))
    per_chunk: list[list[float]] = []
    for _ in range(3):
        times, t0 = [], time.perf_counter()
        for _chunk in iter_rollout(model, schedule, noise, sample=rolling):
            now = time.perf_counter()
            times.append(now - t0)
            t0 = now
        per_chunk.append(times)

    def chunk_time(i: int) -> float:  # median over repeats of the mean of chunks i-2..i+2 (1-based i)
        return statistics.median(statistics.mean(run[i - 3 : i + 2]) for run in per_chunk)

    result["rolling_chunk16_s"] = chunk_time(16)
    result["rolling_chunk64_s"] = chunk_time(64)
    result["rolling_chunk64_over_chunk16"] = chunk_time(64) / chunk_time(16)
    return result


def gemm_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = _time(lambda: a @ b, repeats)
    return 2 * n**3 / t / 1e9


def _train_step_stats(preset: str, batch: int, frames: int, precision: str, repeats: int) -> dict:
    """Time the teacher-forcing stage's own step on random clips (a model with random, non-zero weights)."""
    cfg = config_from_dict({"model": {"preset": preset, "conditional": False, "image_size": 32},
                            "data": {"clip_frames": frames},
                            "train": {"batch_size": batch, "lr": 1e-4, "precision": precision, "device": "cpu"}})
    stage = TeacherForcingStage(cfg)
    stage.model.load_state_dict(random_model(preset).state_dict())
    shape = cfg.model.frame_shape
    x0 = torch.randn(batch, frames, *shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    clips = {"video": x0, "prompt": torch.zeros(batch, 1, dtype=torch.long)}
    gen = torch.Generator().manual_seed(0)

    def step():
        stage.step(clips, 0, gen)

    step()  # warm-up (allocations, first-call overheads)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t = _time(step, repeats)
    K = frames // cfg.model.frames_per_chunk
    tokens = batch * (2 * K - 1) * stage.model.tokens_per_chunk  # [clean K-1][noisy K] chunks per clip
    return {"step_s": t, "tokens_per_s": tokens / t, "gflop_per_step": flops / 1e9, "achieved_gflops": flops / t / 1e9}


def bench_train(preset: str = "small", batch: int = 4, frames: int = 8, repeats: int = 3) -> dict:
    result: dict = {"model": preset, "batch": batch, "frames": frames, "threads": torch.get_num_threads()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype == torch.bfloat16 and not bf16_native():
            peak = gemm_peak_gflops(dtype, n=256, repeats=2)
            result[name] = {"skipped": "no native bf16 on this machine: bf16 matmuls are emulated",
                            "gemm_peak_gflops": peak}
            continue
        peak = gemm_peak_gflops(dtype)
        stats = _train_step_stats(preset, batch, frames, name, repeats)
        result[name] = {**stats, "gemm_peak_gflops": peak, "fraction_of_peak": stats["achieved_gflops"] / peak}
    for key in ("step_s", "tokens_per_s", "achieved_gflops", "gemm_peak_gflops", "fraction_of_peak"):
        result[key] = result["fp32"].get(key)  # top-level keys: the fp32 figures
    return result


def bench_foresight(baseline_ckpt: str | None = None, foresight_ckpt: str | None = None, batch: int = 4,
                    repeats: int = 5, sampling_repeats: int = 10) -> dict:
    """Cost of foresight training (the DMD stage's generator step with / without the foresight term) and of
    sampling its generator (the ratio must be 1)."""
    with tempfile.TemporaryDirectory() as tmp:
        teacher = random_model("tiny", seed=1, attention="bidirectional")
        student = random_model("tiny", seed=2)
        ckpt.save_model(teacher, f"{tmp}/teacher.safetensors")
        ckpt.save_model(student, f"{tmp}/student.safetensors")
        cfg = config_from_dict({"model": {"preset": "tiny", "conditional": False},
                                "train": {"objective": "dmd", "init_from": f"{tmp}/student.safetensors", "batch_size": batch},
                                "dmd": {"teacher": f"{tmp}/teacher.safetensors"},
                                "sample": {"timesteps": [1000, 750, 500, 250], "solver": "renoise"}})
        base = build_stage(cfg)
        cfg_mirai = copy.deepcopy(cfg)
        cfg_mirai.foresight.enabled = True
        mirai = build_stage(cfg_mirai)
    shape = cfg.model.frame_shape
    noise = torch.randn(batch, cfg.data.clip_frames, *shape, generator=torch.Generator().manual_seed(0))
    real = noise.clamp(-1, 1)
    times: dict[str, list[float]] = {"base": [], "mirai": []}
    for i in range(repeats + 1):  # alternate the two arms so drifts of the machine hit both alike
        for name, run in (("base", base), ("mirai", mirai)):
            gen = torch.Generator().manual_seed(i)
            t0 = time.perf_counter()
            run.generator_step(noise, None, real, i, gen)
            if i:  # the first round is a warm-up
                times[name].append(time.perf_counter() - t0)
    result = {"batch": batch, "repeats": repeats, "sampling_repeats": sampling_repeats,
              "dmd_step_s": statistics.median(times["base"]), "foresight_step_s": statistics.median(times["mirai"])}
    result["train_step_ratio"] = result["foresight_step_s"] / result["dmd_step_s"]

    # Sampling: the generator file of a foresight run has the same tensors, so the same work is expected.
    models = {"base": ckpt.load_model(baseline_ckpt).eval() if baseline_ckpt else base.model.eval(),
              "mirai": ckpt.load_model(foresight_ckpt).eval() if foresight_ckpt else mirai.model.eval()}
    n = torch.randn(batch, 16 * cfg.model.frames_per_chunk, *shape, generator=torch.Generator().manual_seed(0))
    sample = SampleConfig(timesteps=[1000, 750, 500, 250], solver="renoise")
    sampling: dict[str, list[float]] = {"base": [], "mirai": []}
    order = ["base", "mirai"]
    for i in range(sampling_repeats + 1):  # ABBA order, first round a warm-up: drifts of a noisy machine hit both
        for name in order if i % 2 == 0 else order[::-1]:
            t = _time(lambda: rollout(models[name], FlowSchedule(), n, sample=sample))
            if i:
                sampling[name].append(t)
    # Paired design: each round times both arms back to back, so the machine's slow drifts cancel in the
    # per-round ratio; the median of those ratios is robust to the odd stall of one run.
    ratios = [m / b for b, m in zip(sampling["base"], sampling["mirai"])]
    result["baseline_rollout_s"] = statistics.median(sampling["base"])
    result["foresight_rollout_s"] = statistics.median(sampling["mirai"])
    result["rollout_s_min"] = {k: min(v) for k, v in sampling.items()}
    result["sampling_ratio"] = statistics.median(ratios)
    result["sampling_ratio_range"] = [min(ratios), max(ratios)]
    result["same_generator_tensors"] = ({k: v.shape for k, v in models["base"].state_dict().items()}
                                        == {k: v.shape for k, v in models["mirai"].state_dict().items()})
    return result


# --------------------------------------------------------------------------------------------------
# Streaming speed


FPS_TIMESTEPS = [1000, 750, 500, 250]  # the 4-step few-step sampler of Self-Forcing / Causal-Forcing


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def random_wan_vae(folder: str | Path, tiny: bool = False):
    """A Wan2.1 VAE with random weights, saved to `folder` and loaded as Mirai loads one: the real architecture
    (diffusers' `AutoencoderKLWan` defaults are Wan2.1's), or a toy one for tests. Nothing is downloaded."""
    from diffusers import AutoencoderKLWan  # an optional dependency ([wan]): imported when asked for

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1) if tiny else AutoencoderKLWan()
    vae.save_pretrained(folder)
    return WanAutoencoder(folder)


def bench_fps(model: torch.nn.Module, batch: int = 1, frames: int | None = None, device: str = "auto",
              repeats: int = 3, vae=None) -> dict:
    """Frames per second of the cached chunk-by-chunk rollout, and the latency of its first chunk; with `vae` (a
    `WanAutoencoder`), also with each chunk decoded to pixels as it streams (the decoder's cache kept)."""
    dev = pick_device(device)
    model = model.eval().to(dev)
    m, fpc = model.cfg, model.cfg.frames_per_chunk
    frames = -(-(frames or 4 * fpc) // fpc) * fpc
    sample = SampleConfig(timesteps=FPS_TIMESTEPS, solver="renoise")
    noise = torch.randn(batch, frames, *m.frame_shape, generator=torch.Generator().manual_seed(0)).to(dev)
    prompt = torch.ones(batch, len(m.prompt_vocab), dtype=torch.long, device=dev) if model.prompt_embed is not None else None
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    bf16 = dev.type == "cuda" and bf16_native()
    if vae is not None:
        vae.vae.to(dev)
        vae.mean, vae.std = vae.mean.to(dev), vae.std.to(dev)

    def timed(decode: bool) -> tuple[list[float], list[float]]:
        firsts, totals = [], []
        for r in range(repeats + 1):  # the first is a warm-up: allocations, kernels, compilation
            stream = vae.stream() if decode else None
            sync()
            t0 = time.perf_counter()
            for i, chunk in enumerate(iter_rollout(model, FlowSchedule(), noise, prompt, sample=sample)):
                if stream is not None:
                    stream.decode(chunk)
                if i == 0:
                    sync()
                    first = time.perf_counter() - t0
            sync()
            if r:
                firsts.append(first)
                totals.append(time.perf_counter() - t0)
        return firsts, totals

    with autocast_context("bf16" if bf16 else "fp32", dev):
        firsts, totals = timed(False)
        decoded = timed(True) if vae is not None else None
    total = min(totals)
    with_vae = {}
    if decoded is not None:
        video_frames = batch * (1 + (frames - 1) * vae.temporal)  # latent frame 0 -> 1 frame, each later one -> 4
        with_vae = {"with_vae": {"measures": "the same rollout with every chunk decoded to pixels as it streams (the "
                                             "Wan VAE's causal decoder, its cache kept between chunks)",
                                 "vae": vae.name, "first_chunk_latency_s": min(decoded[0]),
                                 "rollout_s": min(decoded[1]),
                                 "video_frames": video_frames, "video_fps": video_frames / min(decoded[1])}}
    return {
        "measures": "denoising only: the generator's cached rollout (steps x chunks forwards, one KV-cache commit per "
                    "chunk but the last); VAE decoding excluded (the rollout ends at latents); text encoding excluded; "
                    "one warm-up rollout excluded; best of repeats",
        "model": m.preset, "arch": m.arch, "params_m": count_parameters(model) / 1e6, "device": device_name(dev),
        "precision": "bf16 autocast" if bf16 else "fp32", "batch": batch, "frames": frames, "frames_per_chunk": fpc,
        "steps": len(FPS_TIMESTEPS), "timesteps": FPS_TIMESTEPS,
        "resolution": {"channels": m.frame_shape[0], "height": m.frame_shape[1], "width": m.frame_shape[2],
                       "tokens_per_frame": model.tokens_per_frame},
        "repeats": repeats, "first_chunk_latency_s": min(firsts), "rollout_s": total,
        "fps": batch * frames / total,
        "fps_unit": "model frames per second over the batch (latent frames for a latent model: Wan's VAE decodes "
                    "latent frame k > 0 to 4 video frames)",
        **with_vae,
    }


# --------------------------------------------------------------------------------------------------
# One process against several


def _train_run(out: Path, processes: int, threads: int, preset: str, batch: int, steps: int) -> list[float]:
    """`mirai train` (teacher forcing, random data of the world) in `processes` processes of `threads` threads;
    returns the logged step times."""
    sets = [f"model.preset={preset}", "train.objective=teacher_forcing", f"train.batch_size={batch}",
            f"train.steps={steps}", "train.sample_every=0", f"train.ckpt_every={steps}", "train.log_every=1",
            "train.precision=fp32", f"train.threads={threads}", "train.device=cpu", f"train.out_dir={out}"]
    args = ["train"] + [a for item in sets for a in ("--set", item)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "mirai", *args]
    else:
        cmd = [sys.executable, "-m", "mirai", *args]
    src = str(Path(__file__).resolve().parents[1])  # this copy of mirai, in the child processes too
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return [json.loads(line)["step_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def bench_ddp(preset: str = "tiny", batch: int = 8, steps: int = 15, warmup: int = 3, rounds: int = 2) -> dict:
    """Clips/s of 1 process x 2 threads and of 2 processes x 1 thread (DDP, gloo), the same global batch."""
    arms = {"one_process_two_threads": (1, 2), "two_processes_one_thread": (2, 1)}
    times: dict[str, list[float]] = {name: [] for name in arms}
    load = os.getloadavg()[0]  # other work on the machine slows the two-thread arm most (threads wait on each other)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):  # alternated, so drifts of a shared machine hit both arms
            for name, (processes, threads) in arms.items():
                times[name] += _train_run(Path(tmp) / f"{name}_{r}", processes, threads, preset, batch, steps)[warmup:]
    result: dict = {"measures": "teacher-forcing training steps of `mirai train` (rank 0's logged step time, which "
                                "includes the gradient all-reduce); warm-up steps excluded; median over the rest",
                    "model": preset, "global_batch": batch, "steps_timed": len(times["one_process_two_threads"]),
                    "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
                    "precision": "fp32", "load_average_before": load}
    for name, values in times.items():
        step_s = statistics.median(values)
        result[name] = {"step_s": step_s, "clips_per_s": batch / step_s}
    result["ratio"] = result["two_processes_one_thread"]["clips_per_s"] / result["one_process_two_threads"]["clips_per_s"]
    return result
