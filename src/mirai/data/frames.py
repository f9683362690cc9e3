"""The one pair of converters between pictures and the model's range.

Pictures are (..., T, H, W, 3) arrays, uint8 or floats in [0, 1]; the model sees (..., T, 3, H, W) floats
in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_model_range(frames: np.ndarray | Tensor) -> Tensor:
    """(..., T, H, W, 3) uint8, or floats in [0, 1] -> (..., T, 3, H, W) float32 in [-1, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    x = x.movedim(-1, -3)
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1
    return x.float() * 2 - 1


def to_uint8(video: Tensor) -> np.ndarray:
    """(..., T, C, H, W) in [-1, 1] -> (..., T, H, W, C) uint8 (clamped, rounded)."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
