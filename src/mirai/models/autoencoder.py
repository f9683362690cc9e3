"""What the diffusion model sees instead of pixels: the autoencoder interface, and the identity (pixels).

An autoencoder kind implements `Autoencoder`: `encode` (B, T, 3, H, W) pictures in [-1, 1] -> (B, T', C, h, w)
latents, `decode` back (one full decode), and `stream()`, a `DecodeStream` fed the latent frames of a rollout
chunk by chunk as they come (its frames must equal one full decode of the whole latent video). `channels`,
`spatial` and `temporal` say what a latent frame is: C channels, 1 / spatial of the height and width, and
1 + (T - 1) / temporal latent frames for T frames (temporal = 1: one latent frame per frame).

Kinds: `IdentityAutoencoder` here (the synthetic world's default), the Wan VAE in `models.wan_vae`;
`models.build.load_autoencoder` picks one from what a cache's manifest names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from torch import Tensor

IDENTITY = "identity"


class DecodeStream(Protocol):
    def decode(self, latents: Tensor) -> Tensor:
        """The next latent frames (B, k, C, h, w) of a video -> their frames (B, t, 3, H, W) in [-1, 1]."""


class Autoencoder(Protocol):
    name: str  # what a manifest records (a folder, or "identity")
    channels: int
    spatial: int
    temporal: int

    def encode(self, video: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...

    def stream(self) -> DecodeStream: ...


def latent_frames(frames: int, temporal: int) -> int:
    """Latent frames of a clip of `frames` frames: 1 + (frames - 1) / temporal (the first frame alone)."""
    return 1 + (frames - 1) // temporal if temporal > 1 else frames


def video_frames(latents: int, temporal: int) -> int:
    """Frames decoded from `latents` latent frames (the inverse of `latent_frames`): 1 + temporal (latents - 1)."""
    return 1 + temporal * (latents - 1) if temporal > 1 else latents


class IdentityAutoencoder:
    """Pixels are the latents."""

    name = IDENTITY
    channels, spatial, temporal = 3, 1, 1

    def encode(self, video: Tensor) -> Tensor:
        return video

    def decode(self, latents: Tensor) -> Tensor:
        return latents

    def stream(self) -> IdentityStream:
        return IdentityStream()


class IdentityStream:
    def decode(self, latents: Tensor) -> Tensor:
        return latents


def folder_id(folder: str | Path) -> str:
    """What a manifest records of a model folder: its path and its config's hash (a changed model is seen)."""
    if not folder:
        return IDENTITY
    config = Path(folder) / "config.json"
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else "no config.json"
    return f"{Path(folder).name} (config sha256 {digest})"
