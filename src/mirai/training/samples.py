"""Periodic sample sheets of a training run: generated videos over real clips, as a PNG contact sheet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from .. import rng
from ..data.datasets import SyntheticVideoDataset, get_batch, unconditional_prompt
from ..models.build import is_conditional
from ..diffusion.schedule import FlowSchedule
from ..sampling.rollout import rollout, sample_whole
from ..video import save_video


@torch.no_grad()
def write_samples(model: nn.Module, schedule: FlowSchedule, dataset, cfg: Config, path: Path, num: int = 4,
                  chunks: int | None = None) -> Path:
    """Roll out `num` videos (prompts of held-out clips) and save a contact sheet: samples over real clips."""
    frames = cfg.data.clip_frames if chunks is None else chunks * cfg.model.frames_per_chunk
    device = next(model.parameters()).device
    if isinstance(dataset, SyntheticVideoDataset):  # clips of a scene space the run never trains on
        dataset = SyntheticVideoDataset(cfg.world, rng.derive_seed(cfg.data.seed, "sample-sheet"), frames)
    held_out = get_batch(dataset, [i % len(dataset) for i in range(num)])  # a small cache may hold fewer clips
    prompt = held_out["prompt"].to(device) if is_conditional(model) else None
    # guidance of a caption model: away from the empty caption
    uncond = unconditional_prompt(cfg.data, model.cfg, cfg.prepare.text_len)
    fpc = cfg.model.frames_per_chunk
    noise = rng.chunk_noise(0, num, frames // fpc, (fpc, *held_out["video"].shape[2:])).to(device)
    gen = rng.generator(0, "sampler")
    sample = cfg.sample  # few-step students sample as at inference; stage-1 models with many Euler steps
    if cfg.train.objective in ("teacher_forcing", "bidirectional"):
        sample = dataclasses.replace(cfg.sample, steps=cfg.train.sample_steps, timesteps=[], solver="euler")
    if model.cfg.attention == "bidirectional":  # the teacher samples the whole clip at once
        video = sample_whole(model, schedule, noise, prompt, sample=sample, generator=gen, uncond=uncond)
    else:
        video = rollout(model, schedule, noise, prompt, sample=sample, generator=gen, uncond=uncond)
    video = video.cpu()
    real = held_out["video"][:, : min(frames, held_out["video"].shape[1])]
    both = torch.cat([video[:, : real.shape[1]], real]) if real.shape[1] == video.shape[1] else video
    if hasattr(dataset, "decode"):  # latents of a prepared cache: pictures through its autoencoder
        both = dataset.decode(both)
    return save_video(both, path)
