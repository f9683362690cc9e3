"""Training objectives as pure functions of (model, clean video, prompt, generator).

- `teacher_forcing_loss`: stage 1 of the causal generator (Causal-Forcing's AR diffusion with teacher
  forcing): one sequence [clean chunks 0..K-2][noisy chunks 0..K-1] and one parallel forward; noisy
  chunk i sees the clean chunks < i and itself. Flow-matching loss on the noisy half.
- `ode_regression_loss`: stage 2, regress the few-step student onto the AR teacher's ODE trajectories.
- `bidirectional_loss`: plain full-sequence flow matching for the bidirectional teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.prompt import unconditional
from ..diffusion.schedule import FlowSchedule
from ..models.attention import ChunkMask
from ..rng import rand, randint, randn


def flow_matching_loss(v: Tensor, x_t: Tensor, x0: Tensor, t: Tensor, t_floor: float = 0.05) -> Tensor:
    """Velocity MSE, computed as ((x0_hat - x0) / max(t, t_floor))^2 with x0_hat = x_t - t v.

    For t >= t_floor this is exactly |v - (eps - x0)|^2; the floor keeps x0-predicting models from an
    unbounded weight at t -> 0 (as in Li & He 2025).
    """
    t = t[..., None, None, None]
    x0_hat = x_t.float() - t * v.float()
    return (((x0_hat - x0.float()) / t.clamp_min(t_floor)) ** 2).mean()


def drop_prompt(prompt: Tensor | None, p: float, generator: torch.Generator | None,
                uncond: Tensor | None = None) -> Tensor | None:
    """Replace the prompt of a random fraction p of the batch by "no prompt" (classifier-free guidance training):
    zeros for structured prompts (B, P), the empty caption's embedding `uncond` (L, D) for captions (B, L, D)."""
    if prompt is None or p <= 0:
        return prompt
    keep = rand(prompt.shape[0], generator, prompt.device) >= p
    return torch.where(keep.view(-1, *[1] * (prompt.dim() - 1)), prompt, unconditional(prompt, uncond))


def _chunk_t(schedule: FlowSchedule, B: int, K: int, fpc: int, per_chunk: bool, generator, device=None) -> Tensor:
    """Per-frame noise levels (B, K * fpc): one draw per chunk (diffusion forcing) or one per video."""
    t = schedule.sample_t((B, K if per_chunk else 1), generator=generator, device=device)
    return t.expand(B, K).repeat_interleave(fpc, dim=1)


def teacher_forcing_forward(model: nn.Module, ctx: Tensor, t_ctx: Tensor, x_noisy: Tensor, t_noisy: Tensor,
                            prompt: Tensor | None) -> Tensor:
    """One parallel forward over [clean ctx chunks 0..K-2][noisy chunks 0..K-1]; velocity of the noisy half.

    ctx: (B, T - fpc, C, H, W) context (clean or lightly noised), t_ctx (B, T - fpc);
    x_noisy: (B, T, C, H, W), t_noisy (B, T). Returns (B, T, C, H, W).
    """
    T, fpc = x_noisy.shape[1], model.cfg.frames_per_chunk
    seq = torch.cat([ctx, x_noisy], dim=1)
    frame_pos = torch.cat([torch.arange(T - fpc), torch.arange(T)]).to(x_noisy.device)
    mask = ChunkMask("teacher_forcing", model.tokens_per_chunk, T // fpc)  # described: no (L, L) tensor on CUDA
    return model(seq, torch.cat([t_ctx, t_noisy], dim=1), prompt, mask=mask, frame_pos=frame_pos)[:, T - fpc :]


def teacher_forcing_loss(model: nn.Module, schedule: FlowSchedule, x0: Tensor, prompt: Tensor | None,
                         generator: torch.Generator | None = None, per_chunk_t: bool = True,
                         context_noise_max: float = 0.0, t_floor: float = 0.05) -> Tensor:
    """Stage 1. x0: (B, T, C, H, W) clean clip; returns the scalar flow-matching loss."""
    B, T = x0.shape[:2]
    fpc = model.cfg.frames_per_chunk
    K = T // fpc
    noise = randn(x0.shape, generator, x0.device)
    t = _chunk_t(schedule, B, K, fpc, per_chunk_t, generator, x0.device)
    ctx = x0[:, : T - fpc]  # the last clean chunk is never attended to: leave it out
    t_ctx = torch.zeros(B, T - fpc, device=x0.device)
    if context_noise_max > 0:  # noise augmentation of the context (robustness to imperfect rollouts)
        t_ctx = (rand((B, K - 1), generator, x0.device) * context_noise_max).repeat_interleave(fpc, dim=1)
        ctx = schedule.add_noise(ctx, randn(ctx.shape, generator, x0.device), t_ctx)
    x_t = schedule.add_noise(x0, noise, t)
    v = teacher_forcing_forward(model, ctx, t_ctx, x_t, t, prompt)
    return flow_matching_loss(v, x_t, x0, t, t_floor)


def ode_regression_loss(model: nn.Module, states: Tensor, clean: Tensor, timesteps: Tensor, prompt: Tensor | None,
                        generator: torch.Generator | None = None) -> Tensor:
    """Stage 2 (causal ODE distillation): map a stored ODE state of each chunk to the teacher's clean chunk.

    states: (B, S, T, C, H, W) the teacher's trajectory at the student's S timesteps (t = timesteps (S,));
    clean: (B, T, C, H, W) the teacher's result, also the clean context (the teacher's own past).
    Every chunk draws its own step, as in stage 1; the loss is on the clean estimate x0 = x_t - t v.
    """
    B, S, T = states.shape[:3]
    fpc = model.cfg.frames_per_chunk
    k = randint(S, (B, T // fpc), generator).repeat_interleave(fpc, dim=1).to(states.device)
    x_t = torch.gather(states, 1, k[:, None, :, None, None, None].expand(B, 1, *states.shape[2:]))[:, 0]
    t = timesteps.to(states.device)[k]
    v = teacher_forcing_forward(model, clean[:, : T - fpc], torch.zeros(B, T - fpc, device=states.device), x_t, t, prompt)
    x0 = x_t - t[..., None, None, None] * v.float()
    return F.mse_loss(x0, clean.float())


def bidirectional_loss(model: nn.Module, schedule: FlowSchedule, x0: Tensor, prompt: Tensor | None,
                       generator: torch.Generator | None = None, per_chunk_t: bool = False,
                       t_floor: float = 0.05) -> Tensor:
    """Full-sequence flow matching (the model's own mask, normally bidirectional)."""
    B, T = x0.shape[:2]
    fpc = model.cfg.frames_per_chunk
    noise = randn(x0.shape, generator, x0.device)
    t = _chunk_t(schedule, B, T // fpc, fpc, per_chunk_t, generator, x0.device)
    x_t = schedule.add_noise(x0, noise, t)
    return flow_matching_loss(model(x_t, t, prompt), x_t, x0, t, t_floor)
