"""Autoregressive rollout: the one loop of inference (the model never loops).

Per chunk (Self-Forcing / Causal-Forcing style):
  1. denoise the chunk from pure noise over the step list, attending to the KV cache of earlier chunks;
  2. re-run the clean chunk at `context_noise` with `commit=True` to write its keys/values into the cache;
  3. yield the clean chunk (streaming), go on with the next.
Without a cache (`use_cache=False`) every step recomputes the whole prefix with the block-causal mask;
it gives the same video and exists as the reference the cache is tested and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .attention import KVCache
from .config import SampleConfig
from .schedule import FlowSchedule, randn


def _velocity(model: nn.Module, x: Tensor, t: float, prompt: Tensor | None, cfg_scale: float, **kw) -> Tensor:
    """Model velocity for a chunk at noise level t, with classifier-free guidance on a doubled batch."""
    B, T = x.shape[:2]
    guided = prompt is not None and cfg_scale != 1.0
    if guided:
        x = torch.cat([x, x])
        prompt = torch.cat([prompt, torch.zeros_like(prompt)])
    t_frames = torch.full((x.shape[0], T), float(t), device=x.device)
    v = model(x, t_frames, prompt, **kw)
    if guided:
        v_cond, v_uncond = v.chunk(2)
        v = v_uncond + cfg_scale * (v_cond - v_uncond)
    return v


def _step(schedule: FlowSchedule, solver: str, x: Tensor, v: Tensor, t: float, t_next: float,
          generator: torch.Generator | None) -> Tensor:
    """One solver step from t to t_next."""
    if solver == "euler":
        return x + (t_next - t) * v
    x0 = x - t * v  # "renoise": jump to the clean estimate, then re-noise to t_next with fresh noise
    if t_next <= 0:
        return x0
    return (1 - t_next) * x0 + t_next * randn(x0.shape, generator, x0.device, x0.dtype)


def _context_input(x0: Tensor, context_noise: float, generator: torch.Generator | None) -> Tensor:
    """The clean chunk as it is written into the cache: noised to `context_noise`."""
    if context_noise <= 0:
        return x0
    return (1 - context_noise) * x0 + context_noise * randn(x0.shape, generator, x0.device, x0.dtype)


def _cache_batch(prompt: Tensor | None, cfg_scale: float, batch: int) -> int:
    return 2 * batch if (prompt is not None and cfg_scale != 1.0) else batch


def _commit(model, cache, x_ctx, context_noise, prompt, cfg_scale) -> None:
    guided = prompt is not None and cfg_scale != 1.0
    if guided:
        x_ctx, prompt = torch.cat([x_ctx, x_ctx]), torch.cat([prompt, torch.zeros_like(prompt)])
    t = torch.full(x_ctx.shape[:2], float(context_noise), device=x_ctx.device)
    model(x_ctx, t, prompt, kv_cache=cache, commit=True)


@torch.no_grad()
def iter_rollout(
    model: nn.Module,
    schedule: FlowSchedule,
    noise: Tensor,
    prompt: Tensor | None = None,
    *,
    sample: SampleConfig | None = None,
    context: Tensor | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    grid: list[float] | None = None,
    return_states: bool = False,
) -> Iterator[Tensor] | Iterator[tuple[Tensor, list[Tensor]]]:
    """Yield clean chunks (B, frames_per_chunk, C, H, W) one at a time.

    noise: (B, T, C, H, W) initial noise of the frames to generate (T a multiple of frames_per_chunk);
    context: optional (B, Tc, C, H, W) clean frames to continue from (prefilled into the cache);
    grid: explicit descending noise levels ending at 0 (overrides sample.steps/timesteps);
    return_states: yield (chunk, [state at grid[0], grid[1], ...]) (the ODE trajectory of the chunk).
    """
    sample = sample or SampleConfig()
    fpc = model.cfg.frames_per_chunk
    B, T = noise.shape[:2]
    if T % fpc:
        raise ValueError(f"number of frames {T} is not a multiple of frames_per_chunk={fpc}")
    context_chunks = [] if context is None else list(context.split(fpc, dim=1))
    if context is not None and context.shape[1] % fpc:
        raise ValueError(f"context frames {context.shape[1]} is not a multiple of frames_per_chunk={fpc}")
    ts = list(grid) if grid is not None else schedule.inference_steps(sample.steps, sample.timesteps).tolist()
    num_chunks = T // fpc
    total = num_chunks + len(context_chunks)
    if use_cache:
        cache = KVCache.allocate(model.cfg, _cache_batch(prompt, sample.cfg_scale, B), total,
                                 sample.sink_chunks, sample.window_chunks, device=noise.device)
    elif sample.window_chunks > 0:
        raise ValueError("a rolling window needs the KV cache (use_cache=True)")
    history: list[Tensor] = []  # uncached reference: the chunks as written to the cache

    def write(x0: Tensor) -> None:
        x_ctx = _context_input(x0, sample.context_noise, generator)
        if use_cache:
            cache.make_room()
            _commit(model, cache, x_ctx, sample.context_noise, prompt, sample.cfg_scale)
        else:
            history.append(x_ctx)

    def velocity(x: Tensor, t: float) -> Tensor:
        if use_cache:
            return _velocity(model, x, t, prompt, sample.cfg_scale, kv_cache=cache)
        if not history:
            return _velocity(model, x, t, prompt, sample.cfg_scale)
        # Recompute the prefix: [context chunks at context_noise][this chunk at t], block-causal.
        seq = torch.cat(history + [x], dim=1)
        n_ctx = sum(h.shape[1] for h in history)
        t_frames = torch.full(seq.shape[:2], float(t), device=x.device)
        t_frames[:, :n_ctx] = sample.context_noise
        guided = prompt is not None and sample.cfg_scale != 1.0
        p = torch.cat([prompt, torch.zeros_like(prompt)]) if guided else prompt
        if guided:
            seq, t_frames = torch.cat([seq, seq]), torch.cat([t_frames, t_frames])
        v = model(seq, t_frames, p)[:, n_ctx:]
        if guided:
            v_cond, v_uncond = v.chunk(2)
            v = v_uncond + sample.cfg_scale * (v_cond - v_uncond)
        return v

    for chunk in context_chunks:
        write(chunk)
    for i in range(num_chunks):
        if use_cache:
            cache.make_room()
        x = noise[:, i * fpc : (i + 1) * fpc]
        states = [x]
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = _step(schedule, sample.solver, x, velocity(x, t), t, t_next, generator)
            states.append(x)
        if i < num_chunks - 1:  # the last chunk is never attended to: skip its commit
            write(x)
        yield (x, states) if return_states else x


def rollout(model: nn.Module, schedule: FlowSchedule, noise: Tensor, prompt: Tensor | None = None, **kw) -> Tensor:
    """Generate a whole video (B, T, C, H, W); see `iter_rollout` for the arguments."""
    return torch.cat(list(iter_rollout(model, schedule, noise, prompt, **kw)), dim=1)


# --------------------------------------------------------------------------------------------------
# Training-time rollout (self-forcing): gradient through one exit step of every chunk


def rollout_with_exit(
    model: nn.Module,
    schedule: FlowSchedule,
    noise: Tensor,
    prompt: Tensor | None,
    exit_step: int,
    *,
    sample: SampleConfig,
    generator: torch.Generator | None = None,
    return_hidden: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Roll out as at inference (KV cache, few-step "renoise" sampling), but return for every chunk the
    clean estimate at step `exit_step` *with gradient*; earlier steps and the cache writes run without it.

    Returns the video (B, T, C, H, W) and, with return_hidden=k, the generator's hidden states after
    block k at the exit step, (B, T, N, D) (the student features of foresight training).
    """
    fpc = model.cfg.frames_per_chunk
    B, T = noise.shape[:2]
    ts = schedule.inference_steps(sample.steps, sample.timesteps).tolist()
    if not 0 <= exit_step < len(ts) - 1:
        raise ValueError(f"exit_step {exit_step} is outside the {len(ts) - 1} denoising steps")
    num_chunks = T // fpc
    cache = KVCache.allocate(model.cfg, B, num_chunks, sample.sink_chunks, sample.window_chunks, device=noise.device)
    chunks, hiddens = [], []
    for i in range(num_chunks):
        cache.make_room()
        x = noise[:, i * fpc : (i + 1) * fpc]
        with torch.no_grad():
            for t, t_next in zip(ts[:exit_step], ts[1 : exit_step + 1]):
                v = _velocity(model, x, t, prompt, 1.0, kv_cache=cache)
                x = _step(schedule, "renoise", x, v, t, t_next, generator)
        t = ts[exit_step]
        t_frames = torch.full((B, fpc), float(t), device=noise.device)
        out = model(x, t_frames, prompt, kv_cache=cache, return_hidden=return_hidden)
        v, hidden = out if return_hidden is not None else (out, None)
        x0 = x - t * v
        chunks.append(x0)
        hiddens.append(hidden)
        if i < num_chunks - 1:
            with torch.no_grad():
                cache.make_room()
                _commit(model, cache, _context_input(x0.detach(), sample.context_noise, generator),
                        sample.context_noise, prompt, 1.0)
    video = torch.cat(chunks, dim=1)
    return video, (torch.cat(hiddens, dim=1) if return_hidden is not None else None)
