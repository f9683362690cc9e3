"""What a rollout starts from when a user asks for `num` videos with a seed (`mirai sample`, `mirai eval`):
prompts of scenes never used in training, per-chunk initial noise and the solver's generator, all derived
from the one seed (see `mirai.rng`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .. import rng
from ..config import ConfigError, WorldConfig
from ..data.prompt import PROMPT
from ..data.world import make_clip


def unseen_prompts(world: WorldConfig, num: int, seed: int) -> np.ndarray:
    """(num, P) prompts of scenes of the world from a scene space no training run uses."""
    scenes = rng.derive_seed(seed, "unseen-scenes")
    return np.stack([PROMPT.encode(make_clip(world, scenes, i, 1).scene) for i in range(num)])


@dataclass
class RolloutInputs:
    noise: Tensor  # (num, frames, C, H, W) on the model's device; chunk k of video v from seed (seed, v, k)
    prompt: Tensor | None  # (num, P) for a conditional model, else None
    prompts: np.ndarray  # (num, P) the prompts asked for (recorded with the videos)
    generator: torch.Generator  # the solver's own draws (renoise steps, context noise)


def rollout_inputs(model: nn.Module, world: WorldConfig, num: int, frames: int, seed: int, device) -> RolloutInputs:
    """Inputs of `num` rollouts of `frames` frames (a multiple of the model's chunk) for `seed`."""
    fpc, c = model.cfg.frames_per_chunk, model.cfg
    if c.frame_shape != (3, world.image_size, world.image_size):
        raise ConfigError(f"this model makes {c.frame_shape} frames (channels, height, width), not the world's RGB "
                          f"{world.image_size}x{world.image_size} frames: decoding latents comes with the VAE issue")
    prompts = unseen_prompts(world, num, seed)
    noise = rng.chunk_noise(seed, num, frames // fpc, (fpc, *c.frame_shape)).to(device)
    prompt = torch.from_numpy(prompts).to(device) if model.prompt_embed is not None else None
    return RolloutInputs(noise, prompt, prompts, rng.generator(seed, "sampler"))
