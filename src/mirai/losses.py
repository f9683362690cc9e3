"""Training objectives as pure functions of (model, clean video, prompt, generator).

- `teacher_forcing_loss`: stage 1 of the causal generator (Causal-Forcing's AR diffusion with teacher
  forcing): one sequence [clean chunks 0..K-2][noisy chunks 0..K-1] and one parallel forward; noisy
  chunk i sees the clean chunks < i and itself. Flow-matching loss on the noisy half.
- `bidirectional_loss`: plain full-sequence flow matching for the bidirectional teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import teacher_forcing_mask
from .schedule import FlowSchedule


def drop_prompt(prompt: Tensor | None, p: float, generator: torch.Generator | None) -> Tensor | None:
    """Zero the prompt of a random fraction p of the batch (classifier-free guidance training)."""
    if prompt is None or p <= 0:
        return prompt
    keep = torch.rand(prompt.shape[0], generator=generator, device=prompt.device) >= p
    return prompt * keep[:, None]


def _chunk_t(schedule: FlowSchedule, B: int, K: int, fpc: int, per_chunk: bool, generator) -> Tensor:
    """Per-frame noise levels (B, K * fpc): one draw per chunk (diffusion forcing) or one per video."""
    t = schedule.sample_t((B, K if per_chunk else 1), generator=generator)
    return t.expand(B, K).repeat_interleave(fpc, dim=1)


def teacher_forcing_loss(model: nn.Module, schedule: FlowSchedule, x0: Tensor, prompt: Tensor | None,
                         generator: torch.Generator | None = None, per_chunk_t: bool = True,
                         context_noise_max: float = 0.0) -> Tensor:
    """x0: (B, T, C, H, W) clean clip; returns the scalar flow-matching loss."""
    B, T = x0.shape[:2]
    fpc = model.cfg.frames_per_chunk
    K = T // fpc
    noise = torch.randn(x0.shape, generator=generator)
    t = _chunk_t(schedule, B, K, fpc, per_chunk_t, generator)
    x_t = schedule.add_noise(x0, noise, t)
    ctx = x0[:, : T - fpc]  # the last clean chunk is never attended to: leave it out
    t_ctx = torch.zeros(B, T - fpc)
    if context_noise_max > 0:  # noise augmentation of the context (robustness to imperfect rollouts)
        t_ctx = (torch.rand(B, K - 1, generator=generator) * context_noise_max).repeat_interleave(fpc, dim=1)
        ctx = schedule.add_noise(ctx, torch.randn(ctx.shape, generator=generator), t_ctx)
    seq = torch.cat([ctx, x_t], dim=1)
    frame_pos = torch.cat([torch.arange(T - fpc), torch.arange(T)])
    mask = teacher_forcing_mask(K, model.tokens_per_chunk)
    v = model(seq, torch.cat([t_ctx, t], dim=1), prompt, mask=mask, frame_pos=frame_pos)[:, T - fpc :]
    return F.mse_loss(v.float(), schedule.velocity(x0, noise))


def bidirectional_loss(model: nn.Module, schedule: FlowSchedule, x0: Tensor, prompt: Tensor | None,
                       generator: torch.Generator | None = None, per_chunk_t: bool = False) -> Tensor:
    """Full-sequence flow matching (the model's own mask, normally bidirectional)."""
    B, T = x0.shape[:2]
    fpc = model.cfg.frames_per_chunk
    noise = torch.randn(x0.shape, generator=generator)
    t = _chunk_t(schedule, B, T // fpc, fpc, per_chunk_t, generator)
    v = model(schedule.add_noise(x0, noise, t), t, prompt)
    return F.mse_loss(v.float(), schedule.velocity(x0, noise))
