"""What a rollout starts from when a user asks for `num` videos with a seed (`mirai sample`, `mirai eval`):
prompts of scenes never used in training, per-chunk initial noise and the solver's generator, all derived
from the one seed (see `mirai.rng`). For a model trained on a prepared cache (`mirai prepare`): a caption
encoded on the fly and a context image or clip encoded, both with the cache's own encoders, and the
autoencoder that decodes the latents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .. import rng
from ..config import Config, ConfigError, WorldConfig
from ..data.cache import read_cache_manifest
from ..data.datasets import unconditional_prompt
from ..data.prompt import PROMPT
from ..data.videos import read_source, resize_crop
from ..data.world import make_clip
from ..models.build import load_autoencoder
from ..models.text import TextEncoder


def unseen_prompts(world: WorldConfig, num: int, seed: int) -> np.ndarray:
    """(num, P) prompts of scenes of the world from a scene space no training run uses."""
    scenes = rng.derive_seed(seed, "unseen-scenes")
    return np.stack([PROMPT.encode(make_clip(world, scenes, i, 1).scene) for i in range(num)])


@dataclass
class RolloutInputs:
    noise: Tensor  # (num, frames, C, H, W) on the model's device; chunk k of video v from seed (seed, v, k)
    prompt: Tensor | None  # (num, P) for a conditional model, (num, L, D) caption embeddings, else None
    prompts: np.ndarray  # (num, P) the prompts asked for (recorded with the videos)
    generator: torch.Generator  # the solver's own draws (renoise steps, context noise)
    uncond: Tensor | None = None  # guidance's unconditional prompt of a caption model: the empty or a negative
    #                               prompt's embedding (L, D); None for structured prompts (zeros)


SAME_WORLD = ("sample it with the world settings it was trained on (a model file written by `mirai train` carries "
              "them; an older one reads the config.yaml of its run folder)")


def rollout_inputs(model: nn.Module, world: WorldConfig, num: int, frames: int, seed: int, device) -> RolloutInputs:
    """Inputs of `num` rollouts of `frames` frames (a multiple of the model's chunk) for `seed`."""
    fpc, c = model.cfg.frames_per_chunk, model.cfg
    if c.frame_shape != (3, world.image_size, world.image_size):
        raise ConfigError(f"this model makes {c.frame_shape} frames (channels, height, width), not this world's RGB "
                          f"{world.image_size}x{world.image_size} frames: {SAME_WORLD}")
    if model.prompt_embed is not None and list(c.prompt_vocab) != PROMPT.vocab(world):
        raise ConfigError(f"this model reads the structured prompts of another world (field sizes {list(c.prompt_vocab)}, "
                          f"this world's {PROMPT.vocab(world)}): {SAME_WORLD}")
    prompts = unseen_prompts(world, num, seed)
    noise = rng.chunk_noise(seed, num, frames // fpc, (fpc, *c.frame_shape)).to(device)
    prompt = torch.from_numpy(prompts).to(device) if model.prompt_embed is not None else None  # structured only
    return RolloutInputs(noise, prompt, prompts, rng.generator(seed, "sampler"))


# --------------------------------------------------------------------------------------------------
# Models trained on a prepared cache: captions, context clips and decoding through the cache's encoders


@dataclass
class CacheInputs:
    inputs: RolloutInputs
    context: Tensor | None  # (num, Tc, C, h, w) latents of the context image / clip, or None
    autoencoder: object  # decodes the latents (`models.autoencoder`)


def cache_autoencoder(cfg: Config, device):
    """The autoencoder of the cache `cfg.data.path` (the one its manifest names): it encodes contexts and decodes."""
    return load_autoencoder(read_cache_manifest(cfg.data.path)["models"]["vae"], device)


def caption_encoder(cfg: Config, device) -> TextEncoder:
    """The text encoder of the cache `cfg.data.path`, at the caption length its embeddings have."""
    manifest = read_cache_manifest(cfg.data.path)
    return TextEncoder(manifest["models"]["text_encoder"], manifest["settings"]["text_len"], device)


Context = str | Path | np.ndarray  # an image or clip file, or its decoded (T, H, W, 3) uint8 frames (an upload)


def context_pictures(context: Context) -> tuple[np.ndarray, str]:
    """(T, H, W, 3) uint8 frames of a context, and how an error names it."""
    if isinstance(context, np.ndarray):
        return context, f"the context clip of {len(context)} frames"
    return read_source(Path(context)), f"--context {context}"


def world_context(model: nn.Module, context: Context, num: int, device) -> Tensor:
    """A world model's context: (num, Tc, 3, H, W) pixels scaled and centre-cropped to its frames, cut to whole
    chunks; an image (or a clip shorter than a chunk) held still for one chunk."""
    pictures, _ = context_pictures(context)
    fpc, (_, height, width) = model.cfg.frames_per_chunk, model.cfg.frame_shape
    clip = resize_crop(pictures, height, width)
    if len(clip) < fpc:
        clip = torch.cat([clip, clip[-1:].expand(fpc - len(clip), -1, -1, -1)])
    return clip[: len(clip) // fpc * fpc][None].expand(num, -1, -1, -1, -1).to(device)


def cache_inputs(model: nn.Module, cfg: Config, num: int, frames: int, seed: int, device, caption: str | None,
                 context: Context | None, negative: str | None = None, autoencoder=None,
                 text_encoder: TextEncoder | None = None) -> CacheInputs:
    """Inputs of `num` rollouts of a model trained on the cache `cfg.data.path`: the caption encoded by the cache's
    text encoder (None: the empty caption, unconditional), guidance's unconditional branch (the negative caption
    encoded the same way, or the empty caption's embedding the model was trained with), the context file (an image
    or a clip) scaled, cropped and encoded as the cache's clips were. `autoencoder`, `text_encoder`: the cache's,
    when already loaded (None: load the ones its manifest names)."""
    settings = read_cache_manifest(cfg.data.path)["settings"]
    ae = autoencoder if autoencoder is not None else cache_autoencoder(cfg, device)
    fpc, c = model.cfg.frames_per_chunk, model.cfg
    prompt = uncond = None
    if c.text_conditioned:
        uncond = unconditional_prompt(cfg.data, c).to(device)[None]  # (1, L, D)
        asked = caption is not None or negative is not None
        encoder = (text_encoder or caption_encoder(cfg, device)) if asked else None
        prompt = (encoder.encode([caption])[0] if caption is not None else uncond).expand(num, -1, -1)
        uncond = encoder.encode([negative])[0] if negative is not None else uncond
    elif caption is not None or negative is not None:
        raise ConfigError("--prompt and --negative-prompt need a caption-conditioned model (trained on a cache with "
                          "a text encoder)")
    latents = None
    if context is not None:
        pictures, name = context_pictures(context)
        keep = 1 + (len(pictures) - 1) // ae.temporal * ae.temporal  # the autoencoder takes 1 + 4k frames
        clip = resize_crop(pictures[:keep], settings["height"], settings["width"] or settings["height"])
        latents = ae.encode(clip[None].to(device))
        latents = latents[:, : latents.shape[1] // fpc * fpc]
        if latents.shape[1] == 0:
            raise ConfigError(f"{name} gives {keep} frames: fewer than one chunk of {fpc} latent frames")
        latents = latents.expand(num, -1, -1, -1, -1)
    noise = rng.chunk_noise(seed, num, frames // fpc, (fpc, *c.frame_shape)).to(device)
    inputs = RolloutInputs(noise, prompt, PROMPT.empty(num), rng.generator(seed, "sampler"), uncond)
    return CacheInputs(inputs, latents, ae)
