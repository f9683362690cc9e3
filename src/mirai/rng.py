"""Random numbers in one place: draws on a generator's device.

Noise is drawn on the generator's device (CPU generators keep runs reproducible on any accelerator), then
moved to where it is used.
"""

from __future__ import annotations

import torch
from torch import Tensor


def randn(shape, generator: torch.Generator | None, device=None, dtype=torch.float32) -> Tensor:
    """Standard normal noise of `shape` from `generator` (or torch's global generator)."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, device=gen_device).to(device=device, dtype=dtype)


def rand(shape, generator: torch.Generator | None, device=None) -> Tensor:
    """Uniform [0, 1) numbers of `shape` from `generator`."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=gen_device).to(device)
