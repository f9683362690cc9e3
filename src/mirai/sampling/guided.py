"""The guided velocity: a model called under classifier-free guidance. The formula and the doubled batch come
from `mirai.diffusion.guidance` (which never calls a model); this is the one place they meet the model."""

from __future__ import annotations

from torch import Tensor, nn

from ..diffusion.guidance import combine, guidance_batch, is_guided


def guided_velocity(model: nn.Module, x: Tensor, t: Tensor, prompt: Tensor | None, scale: float,
                    uncond: Tensor | None = None, **kw) -> Tensor:
    """Velocity of `model` at x (B, T, C, H, W), per-frame t (B, T), with guidance `scale` away from `uncond`
    (captions: the empty or a negative prompt's embedding); `kw` go to the model. Unguided: one forward."""
    if not is_guided(prompt, scale):
        return model(x, t, prompt, **kw)
    v_cond, v_uncond = model(*guidance_batch(x, t, prompt, scale, uncond), **kw).chunk(2)  # one doubled batch
    return combine(v_cond, v_uncond, scale)
