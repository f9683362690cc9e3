"""Classifier-free guidance (Ho & Salimans 2022), the one formula of the library.

A conditional model sees a prompt; a dropped prompt (all zeros) is the unconditional branch. Guided velocity:

    v = v_uncond + s (v_cond - v_uncond)            (s = 1: no guidance, one forward)

Both branches run as one forward on a doubled batch [cond; uncond], so a KV cache written under guidance
holds 2B rows (see `guidance_batch`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def is_guided(prompt: Tensor | None, scale: float) -> bool:
    """Guidance needs a prompt to drop and a scale other than 1."""
    return prompt is not None and scale != 1.0


def guidance_batch(x: Tensor, t: Tensor, prompt: Tensor | None, scale: float) -> tuple[Tensor, Tensor, Tensor | None]:
    """The model inputs of a guided forward: [x; x], [t; t], [prompt; no prompt] (unchanged when unguided)."""
    if not is_guided(prompt, scale):
        return x, t, prompt
    return torch.cat([x, x]), torch.cat([t, t]), torch.cat([prompt, torch.zeros_like(prompt)])


def combine(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """The CFG formula: v_uncond + scale * (v_cond - v_uncond)."""
    return v_uncond + scale * (v_cond - v_uncond)


def guided_velocity(model: nn.Module, x: Tensor, t: Tensor, prompt: Tensor | None, scale: float, **kw) -> Tensor:
    """Velocity of `model` at x (B, T, C, H, W), per-frame t (B, T), with guidance `scale`; `kw` go to the model."""
    if not is_guided(prompt, scale):
        return model(x, t, prompt, **kw)
    v_cond, v_uncond = model(*guidance_batch(x, t, prompt, scale), **kw).chunk(2)
    return combine(v_cond, v_uncond, scale)
