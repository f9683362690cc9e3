"""Autoregressive rollout: the one place where a model is called in a loop to denoise.

Per chunk (Self-Forcing / Causal-Forcing style):
  1. denoise the chunk from pure noise over the step list, attending to the KV cache of earlier chunks;
  2. re-run the clean chunk at `context_noise` with `commit=True` to write its keys/values into the cache;
  3. yield the clean chunk (streaming), go on with the next.
Without a cache (`use_cache=False`) every step recomputes the whole prefix with the block-causal mask;
it gives the same video and exists as the reference the cache is tested and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..config import SampleConfig
from ..diffusion.guidance import guidance_batch, is_guided
from ..diffusion.schedule import FlowSchedule
from ..diffusion.solvers import solver_step
from ..models.attention import KVCache, cache_dtype
from ..rng import randn
from .guided import guided_velocity

Velocity = Callable[[Tensor, float], Tensor]  # (x, t) -> v


def frame_times(x: Tensor, t: float) -> Tensor:
    """The same noise level t for every frame of x (B, T, ...): (B, T)."""
    return torch.full(x.shape[:2], float(t), device=x.device)


def denoise(velocity: Velocity, schedule: FlowSchedule, x: Tensor, ts: list[float], solver: str,
            generator: torch.Generator | None) -> list[Tensor]:
    """Integrate x from noise level ts[0] down to ts[-1] with `solver`: the states at every level of ts."""
    states = [x]
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = solver_step(schedule, solver, x, velocity(x, t), t, t_next, generator)
        states.append(x)
    return states


def context_input(schedule: FlowSchedule, x0: Tensor, context_noise: float,
                  generator: torch.Generator | None) -> Tensor:
    """The clean chunk as it is written into the cache: noised to `context_noise`."""
    if context_noise <= 0:
        return x0
    return schedule.add_noise(x0, randn(x0.shape, generator, x0.device, x0.dtype), context_noise)


def commit_chunk(model: nn.Module, cache: KVCache, x_ctx: Tensor, context_noise: float, prompt: Tensor | None,
                 cfg_scale: float, uncond: Tensor | None = None) -> None:
    """Write the keys/values of one chunk (at noise level `context_noise`) into the cache."""
    inputs = guidance_batch(x_ctx, frame_times(x_ctx, context_noise), prompt, cfg_scale, uncond)
    model(*inputs, kv_cache=cache, commit=True)


def cache_batch(prompt: Tensor | None, cfg_scale: float, batch: int) -> int:
    """Rows of the KV cache: guidance runs [cond; uncond] as one doubled batch."""
    return 2 * batch if is_guided(prompt, cfg_scale) else batch


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
    uncond: Tensor | None = None,
) -> Iterator[Tensor] | Iterator[tuple[Tensor, list[Tensor]]]:
    """Yield clean chunks (B, frames_per_chunk, C, H, W) one at a time.

    noise: (B, T, C, H, W) initial noise of the frames to generate (T a multiple of frames_per_chunk);
    context: optional (B, Tc, C, H, W) clean frames to continue from (prefilled into the cache);
    grid: explicit descending noise levels ending at 0 (overrides sample.steps/timesteps);
    return_states: yield (chunk, [state at grid[0], grid[1], ...]) (the ODE trajectory of the chunk);
    uncond: guidance's unconditional prompt for caption embeddings (the empty or a negative prompt's, (L, D)).
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
        cache = KVCache.allocate(model.cfg, cache_batch(prompt, sample.cfg_scale, B), total,
                                 sample.sink_chunks, sample.window_chunks, device=noise.device,
                                 dtype=cache_dtype(sample.kv_cache_dtype, noise.device))
    elif sample.window_chunks > 0:
        raise ValueError("a rolling window needs the KV cache (use_cache=True)")
    history: list[Tensor] = []  # uncached reference: the chunks as written to the cache

    def write(x0: Tensor) -> None:
        x_ctx = context_input(schedule, x0, sample.context_noise, generator)
        if use_cache:
            cache.make_room()
            commit_chunk(model, cache, x_ctx, sample.context_noise, prompt, sample.cfg_scale, uncond)
        else:
            history.append(x_ctx)

    def velocity(x: Tensor, t: float) -> Tensor:
        if use_cache:
            return guided_velocity(model, x, frame_times(x, t), prompt, sample.cfg_scale, uncond, kv_cache=cache)
        # Recompute the prefix: [context chunks at context_noise][this chunk at t], block-causal.
        seq = torch.cat(history + [x], dim=1)
        n_ctx = seq.shape[1] - x.shape[1]
        t_frames = frame_times(seq, t)
        t_frames[:, :n_ctx] = sample.context_noise
        return guided_velocity(model, seq, t_frames, prompt, sample.cfg_scale, uncond)[:, n_ctx:]

    for chunk in context_chunks:
        write(chunk)
    for i in range(num_chunks):
        if use_cache:
            cache.make_room()
        states = denoise(velocity, schedule, noise[:, i * fpc : (i + 1) * fpc], ts, sample.solver, generator)
        x = states[-1]
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
    cache = KVCache.allocate(model.cfg, B, num_chunks, sample.sink_chunks, sample.window_chunks, device=noise.device,
                             dtype=cache_dtype(sample.kv_cache_dtype, noise.device))
    chunks, hiddens = [], []

    def velocity(x: Tensor, t: float) -> Tensor:
        return guided_velocity(model, x, frame_times(x, t), prompt, 1.0, kv_cache=cache)

    for i in range(num_chunks):
        cache.make_room()
        with torch.no_grad():  # the steps before the exit step: no gradient (renoise, as at inference)
            x = denoise(velocity, schedule, noise[:, i * fpc : (i + 1) * fpc], ts[: exit_step + 1], "renoise",
                        generator)[-1]
        t = ts[exit_step]
        out = model(x, frame_times(x, t), prompt, kv_cache=cache, return_hidden=return_hidden)
        v, hidden = out if return_hidden is not None else (out, None)
        x0 = schedule.x0_from_velocity(x, v, t)
        chunks.append(x0)
        hiddens.append(hidden)
        if i < num_chunks - 1:
            with torch.no_grad():
                cache.make_room()
                commit_chunk(model, cache, context_input(schedule, x0.detach(), sample.context_noise, generator),
                             sample.context_noise, prompt, 1.0)
    video = torch.cat(chunks, dim=1)
    return video, (torch.cat(hiddens, dim=1) if return_hidden is not None else None)


@torch.no_grad()
def sample_whole(model: nn.Module, schedule: FlowSchedule, noise: Tensor, prompt: Tensor | None = None, *,
                 sample: SampleConfig | None = None, generator: torch.Generator | None = None,
                 uncond: Tensor | None = None) -> Tensor:
    """All frames at once with the model's own mask (the bidirectional teacher): (B, T, C, H, W)."""
    sample = sample or SampleConfig()
    ts = schedule.inference_steps(sample.steps, sample.timesteps).tolist()

    def velocity(x: Tensor, t: float) -> Tensor:
        return guided_velocity(model, x, frame_times(x, t), prompt, sample.cfg_scale, uncond)

    return denoise(velocity, schedule, noise, ts, sample.solver, generator)[-1]
