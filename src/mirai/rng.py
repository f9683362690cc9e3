"""Random numbers in one place: independent seeds for every purpose, per-chunk rollout noise, and draws on
a generator's device.

Every seed the library uses beyond `train.seed` is `derive_seed(seed, purpose, *index)`: a hash, so that
streams for different purposes (held-out scenes, ODE trajectories, rollout noise of video v, chunk k, ...)
never overlap, whatever the seeds. Noise is drawn on the generator's device (CPU generators keep runs
reproducible on any accelerator), then moved to where it is used.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def derive_seed(seed: int, purpose: str, *index: int) -> int:
    """An independent 63-bit seed for (seed, purpose, index...): the first 8 bytes of their sha256."""
    key = ":".join([str(int(seed)), purpose, *(str(int(i)) for i in index)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def generator(seed: int, purpose: str, *index: int) -> torch.Generator:
    """A CPU generator seeded with `derive_seed(seed, purpose, *index)`."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *index))


def chunk_noise(seed: int, num_videos: int, num_chunks: int, chunk_shape: tuple[int, ...]) -> Tensor:
    """Initial noise of a rollout, (num_videos, num_chunks * F, C, H, W) for chunk_shape (F, C, H, W).

    Chunk k of video v is drawn from its own seed (seed, v, k): a longer rollout with the same seed starts
    with exactly the shorter one, and video v does not depend on how many videos are drawn with it.
    """
    videos = [torch.cat([torch.randn(chunk_shape, generator=generator(seed, "rollout-noise", v, k))
                         for k in range(num_chunks)]) for v in range(num_videos)]
    return torch.stack(videos)


def randn(shape, generator: torch.Generator | None, device=None, dtype=torch.float32) -> Tensor:
    """Standard normal noise of `shape` from `generator` (or torch's global generator)."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, device=gen_device).to(device=device, dtype=dtype)


def rand(shape, generator: torch.Generator | None, device=None) -> Tensor:
    """Uniform [0, 1) numbers of `shape` from `generator`."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=gen_device).to(device)
