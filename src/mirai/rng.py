"""Random numbers in one place: independent seeds for every purpose, per-chunk rollout noise, and draws on
a generator's device.

Every seed the library uses beyond `train.seed` is `derive_seed(seed, purpose, *index)`: a hash, so that
streams for different purposes (held-out scenes, ODE trajectories, rollout noise of video v, chunk k, ...)
never overlap, whatever the seeds. Noise is drawn on the generator's device (CPU generators keep runs
reproducible on any accelerator), then moved to where it is used.

Several processes (or micro-batches) share one global batch through `BatchGenerator`: a per-sample draw
(`randn`, `rand`, `randint`, whose first dimension is the batch) is made for the whole global batch and each
holder keeps its rows, so every sample gets the numbers it would get in one process, and the generator's
state stays the same everywhere. Draws shared by the whole batch (an exit step, a replay index) are plain
`torch` draws from the same generator: equal on every rank.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

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


class BatchGenerator(torch.Generator):
    """A CPU generator that knows which rows of the global batch its holder trains on.

    Inside `rows(first, total)`, the per-sample draws of this module (`randn`, `rand`, `randint`) of shape
    (n, ...) are rows first..first + n of the same draw for all `total` rows: rank r of W, micro-batch m, gets
    exactly the numbers of its samples in a single process with the whole batch. Outside, it is a plain
    generator (and a single process never slices)."""

    def __new__(cls, seed: int = 0):
        return super().__new__(cls, "cpu")

    def __init__(self, seed: int = 0):
        self.manual_seed(seed)
        self.first_row, self.total_rows = 0, 0

    @contextlib.contextmanager
    def rows(self, first: int, total: int) -> Iterator["BatchGenerator"]:
        saved = self.first_row, self.total_rows
        self.first_row, self.total_rows = first, total
        try:
            yield self
        finally:
            self.first_row, self.total_rows = saved


def _draw(fn, shape, generator: torch.Generator | None, **kw) -> Tensor:
    """fn(shape) on the generator's device, or this holder's rows of the global draw (see BatchGenerator)."""
    gen_device = generator.device if generator is not None else "cpu"
    total = getattr(generator, "total_rows", 0)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not total or total == shape[0]:
        return fn(shape, generator=generator, device=gen_device, **kw)
    first = generator.first_row
    if first + shape[0] > total:
        raise ValueError(f"rows {first}..{first + shape[0]} are outside the global batch of {total}")
    return fn((total, *shape[1:]), generator=generator, device=gen_device, **kw)[first : first + shape[0]]


def randn(shape, generator: torch.Generator | None, device=None, dtype=torch.float32) -> Tensor:
    """Standard normal noise of `shape` from `generator` (or torch's global generator)."""
    return _draw(torch.randn, shape, generator).to(device=device, dtype=dtype)


def rand(shape, generator: torch.Generator | None, device=None) -> Tensor:
    """Uniform [0, 1) numbers of `shape` from `generator`."""
    return _draw(torch.rand, shape, generator).to(device)


def randint(high: int, shape, generator: torch.Generator | None, device=None) -> Tensor:
    """Per-sample integers in [0, high) of `shape` (batch first) from `generator`."""
    return _draw(lambda s, **kw: torch.randint(0, high, s, **kw), shape, generator).to(device)
