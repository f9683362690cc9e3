"""Classifier-free guidance (Ho & Salimans 2022), the one formula of the library.

A conditional model sees a prompt; the unconditional branch sees "no prompt" as `data.prompt.unconditional`
defines it (all zeros for the structured prompt; for captions the empty caption's embedding, or a negative
prompt's, given as `uncond`). Guided velocity:

    v = v_uncond + s (v_cond - v_uncond)            (s = 1: no guidance, one forward)

With a negative prompt, v_uncond is the velocity under the negative prompt (guidance away from it).

Both branches run as one forward on a doubled batch [cond; uncond], so a KV cache written under guidance
holds 2B rows (see `guidance_batch`).

Only the formula lives here: the model is called under guidance in `mirai.sampling.guided` (`guided_velocity`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.prompt import unconditional


def is_guided(prompt: Tensor | None, scale: float) -> bool:
    """Guidance needs a prompt to drop and a scale other than 1."""
    return prompt is not None and scale != 1.0


def guidance_batch(x: Tensor, t: Tensor, prompt: Tensor | None, scale: float,
                   uncond: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """The model inputs of a guided forward: [x; x], [t; t], [prompt; no prompt] (unchanged when unguided);
    `uncond`: the unconditional prompt of caption embeddings (see `data.prompt.unconditional`)."""
    if not is_guided(prompt, scale):
        return x, t, prompt
    return torch.cat([x, x]), torch.cat([t, t]), torch.cat([prompt, unconditional(prompt, uncond)])


def combine(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """The CFG formula: v_uncond + scale * (v_cond - v_uncond)."""
    return v_uncond + scale * (v_cond - v_uncond)
