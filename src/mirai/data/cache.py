"""The cache `mirai prepare` writes, read back as a training dataset (`data.source: cache`, `data.path`).

    CACHE/manifest.json            settings, model ids, each shard's clips (source, sha256, frames, fps, caption)
    CACHE/shard_00000.safetensors  latents (N, T', C, h, w); with a text encoder also prompt (N, L, D) and
                                   prompt_mask (N, L)
    CACHE/empty_prompt.safetensors the empty caption's embedding (with a text encoder)

Items are {"video": (clip_frames, C, h, w) latents, "prompt": (L, D) caption embedding} (the prompt is the
structured prompt's zeros when the cache has no embeddings), cut as consecutive windows of each clip.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from .. import checkpoint as ckpt
from ..models.autoencoder import load_autoencoder
from .prompt import PROMPT
from .videos import DataError

MANIFEST = "manifest.json"
EMPTY_PROMPT = "empty_prompt.safetensors"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def read_cache_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder} is not a prepared cache (no {MANIFEST}; run `mirai prepare DATA --out {folder}`)")
    return json.loads(path.read_text())


class LatentDataset:
    """All shards of a cache in memory (float16 on disk, float32 items)."""

    def __init__(self, folder: str | Path, clip_frames: int):
        folder = Path(folder)
        self.manifest = read_cache_manifest(folder)
        parts = [ckpt.load(folder / s["file"])[0] for s in self.manifest["shards"]]
        if not parts:
            raise DataError(f"{folder} holds no prepared clips (see 'refused' in its {MANIFEST})")
        tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        self.captions = [c["caption"] for s in self.manifest["shards"] for c in s["clips"]]
        frames = tensors["latents"].shape[1]
        if frames < clip_frames:
            raise DataError(f"{folder} holds clips of {frames} latent frames, fewer than data.clip_frames={clip_frames}")
        self.latents, self.prompts = tensors["latents"], tensors.get("prompt")
        self.windows = [(i, s) for i in range(len(self.latents)) for s in range(0, frames - clip_frames + 1, clip_frames)]
        self.clip_frames = clip_frames
        empty = folder / EMPTY_PROMPT
        self.empty_prompt = ckpt.load(empty)[0]["prompt"].float() if empty.is_file() else None

    def decode(self, latents: Tensor) -> Tensor:
        """Latent videos (B, T', C, h, w) of this cache -> pictures (B, T, 3, H, W) in [-1, 1], through the
        autoencoder the cache was prepared with (loaded on first use)."""
        if not hasattr(self, "autoencoder"):
            self.autoencoder = load_autoencoder(self.manifest["models"]["vae"])
        return self.autoencoder.decode(latents)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[2:])

    @property
    def text_dim(self) -> int:
        """Width of the caption embeddings (0: the cache has none)."""
        return 0 if self.prompts is None else self.prompts.shape[-1]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        i, start = self.windows[index]
        video = self.latents[i, start : start + self.clip_frames].float()
        prompt = self.prompts[i].float() if self.prompts is not None else torch.from_numpy(PROMPT.empty(1)[0])
        return {"video": video, "prompt": prompt}
