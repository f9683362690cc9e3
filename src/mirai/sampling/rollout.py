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


def attended_span(sample: SampleConfig, frames_per_chunk: int, frames: int) -> int:
    """How many frames back the farthest key a denoised frame attends to lies, over a rollout of `frames` frames
    (context included): with a rolling window the last of sink + window slots (a full cache evicts before the next
    chunk), else the whole rollout. A model trained on clips of F frames has seen spans up to F - 1 only."""
    if sample.window_chunks > 0:
        return min(sample.sink_chunks + sample.window_chunks, frames // frames_per_chunk) * frames_per_chunk - 1
    return frames - 1


def trained_window(clip_frames: int, frames_per_chunk: int, sink_chunks: int = 1) -> int:
    """The rolling window (in chunks) that keeps every query-key distance inside a training clip of `clip_frames`
    beside `sink_chunks` sinks: a model trained on F-frame clips has seen distances 0..F-1 only, and farther keys
    alias onto near ones (docs/long_video.md)."""
    return max(1, clip_frames // frames_per_chunk - sink_chunks)


def long_rollout_overrides(clip_frames: int, frames_per_chunk: int) -> list[str]:
    """The sample.* settings of rollouts far past the training clip: 1 sink + the trained window (the demo's drift
    stage, `mirai serve`)."""
    return ["sample.sink_chunks=1", f"sample.window_chunks={trained_window(clip_frames, frames_per_chunk)}",
            "sample.positions=window"]


class Rollout:
    """One streaming rollout's state, advanced a chunk at a time: the KV cache, the chunks written to it, the
    prompt. `next_chunk` denoises the next chunk; `switch` changes the prompt from the next chunk on (LongLive's
    prompt switching); `recache` recomputes the cached keys and values from the frames generated so far.

    noise: (B, T, C, H, W) initial noise of the frames to generate (T a multiple of frames_per_chunk);
    context: optional (B, Tc, C, H, W) clean frames to continue from (prefilled into the cache);
    grid: explicit descending noise levels ending at 0 (overrides sample.steps/timesteps);
    uncond: guidance's unconditional prompt for caption embeddings (the empty or a negative prompt's, (L, D)).
    Without a cache (`use_cache=False`) every step recomputes the whole prefix with the block-causal mask under the
    current prompt: the reference the cache, and a switch with re-cache, are tested against.
    """

    def __init__(self, model: nn.Module, schedule: FlowSchedule, noise: Tensor, prompt: Tensor | None = None, *,
                 sample: SampleConfig | None = None, context: Tensor | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True, grid: list[float] | None = None,
                 uncond: Tensor | None = None):
        self.model, self.schedule, self.noise, self.prompt = model, schedule, noise, prompt
        self.sample, self.generator, self.use_cache, self.uncond = sample or SampleConfig(), generator, use_cache, uncond
        fpc = self.fpc = model.cfg.frames_per_chunk
        B, T = noise.shape[:2]
        if T % fpc:
            raise ValueError(f"number of frames {T} is not a multiple of frames_per_chunk={fpc}")
        if context is not None and context.shape[1] % fpc:
            raise ValueError(f"context frames {context.shape[1]} is not a multiple of frames_per_chunk={fpc}")
        context_chunks = [] if context is None else list(context.split(fpc, dim=1))
        s = self.sample
        self.ts = list(grid) if grid is not None else schedule.inference_steps(s.steps, s.timesteps).tolist()
        self.num_chunks, self.done = T // fpc, 0
        if use_cache:
            self.cache = KVCache.allocate(model.cfg, cache_batch(prompt, s.cfg_scale, B),
                                          self.num_chunks + len(context_chunks), s.sink_chunks, s.window_chunks,
                                          device=noise.device, dtype=cache_dtype(s.kv_cache_dtype, noise.device),
                                          reindex=s.positions == "window")
        elif s.window_chunks > 0:
            raise ValueError("a rolling window needs the KV cache (use_cache=True)")
        # The chunks as written to the cache (at context_noise) that the cache still holds: the sinks, then the
        # window (all of them without a window, and always all of them without a cache: the uncached prefix).
        self.sinks: list[Tensor] = []
        self.window: list[Tensor] = []
        for chunk in context_chunks:
            self._write(chunk)

    @property
    def remaining(self) -> int:
        return self.num_chunks - self.done

    def _held(self) -> list[Tensor]:
        return self.sinks + self.window

    def _keep(self, x_ctx: Tensor) -> None:
        """Mirror the cache's eviction (`KVCache.make_room`): sinks first, then a window of the latest chunks."""
        rolling = self.use_cache and self.cache.window_chunks > 0
        if rolling and len(self.sinks) < self.cache.sink_chunks:
            self.sinks.append(x_ctx)
            return
        self.window.append(x_ctx)
        if rolling and len(self.window) > self.cache.window_chunks:
            self.window.pop(0)

    def _commit(self, x_ctx: Tensor) -> None:
        self.cache.make_room()
        commit_chunk(self.model, self.cache, x_ctx, self.sample.context_noise, self.prompt, self.sample.cfg_scale,
                     self.uncond)

    def _write(self, x0: Tensor) -> None:
        x_ctx = context_input(self.schedule, x0, self.sample.context_noise, self.generator)
        if self.use_cache:
            self._commit(x_ctx)
        self._keep(x_ctx)

    def _velocity(self, x: Tensor, t: float) -> Tensor:
        s = self.sample
        if self.use_cache:
            return guided_velocity(self.model, x, frame_times(x, t), self.prompt, s.cfg_scale, self.uncond,
                                   kv_cache=self.cache)
        # Recompute the prefix: [context chunks at context_noise][this chunk at t], block-causal.
        seq = torch.cat(self._held() + [x], dim=1)
        n_ctx = seq.shape[1] - x.shape[1]
        t_frames = frame_times(seq, t)
        t_frames[:, :n_ctx] = s.context_noise
        return guided_velocity(self.model, seq, t_frames, self.prompt, s.cfg_scale, self.uncond)[:, n_ctx:]

    @torch.no_grad()
    def next_chunk(self) -> tuple[Tensor, list[Tensor]]:
        """Denoise the next chunk: (the clean chunk (B, frames_per_chunk, C, H, W), its states at every level of
        the step grid)."""
        if not self.remaining:
            raise RuntimeError(f"the rollout has made all its {self.num_chunks} chunks")
        i, fpc = self.done, self.fpc
        if self.use_cache:
            self.cache.make_room()
        states = denoise(self._velocity, self.schedule, self.noise[:, i * fpc : (i + 1) * fpc], self.ts,
                         self.sample.solver, self.generator)
        self.done += 1
        if self.remaining:  # the last chunk is never attended to: skip its commit
            self._write(states[-1])
            if self.sample.recache_every and self.done % self.sample.recache_every == 0:
                self.recache()
        return states[-1], states

    @torch.no_grad()
    def recache(self) -> None:
        """Recompute every cached chunk's keys and values, in order, from the frames as written (no new noise is
        drawn) under the current prompt: what the uncached rollout computes for its prefix at every step."""
        if not self.use_cache:
            return  # the uncached prefix is recomputed at every step anyway
        first_window = self.cache.total_chunks - len(self.window)  # the window's index in the rollout
        self.cache.reset()  # also drops a text model's cross-attention keys of the old prompt
        for x_ctx in self.sinks:
            self._commit(x_ctx)
        self.cache.total_chunks = first_window  # absolute positions: each window chunk back at its own index
        for x_ctx in self.window:
            self._commit(x_ctx)

    def switch(self, prompt: Tensor | None, recache: bool = True) -> None:
        """From the next chunk on, follow `prompt` (the same shape as the rollout's). recache=True recomputes the
        cache under it (the past frames read as if they had been made under the new prompt: it is obeyed at
        once); False keeps the keys the past was made with (only a text model's cross-attention keys are
        recomputed, they are the prompt's own), so the scene carries over and the new prompt acts through the new
        chunks alone."""
        if (prompt is None) != (self.prompt is None) or (prompt is not None and prompt.shape != self.prompt.shape):
            raise ValueError(f"a switched prompt must have the shape of the rollout's prompt "
                             f"{None if self.prompt is None else tuple(self.prompt.shape)}, got "
                             f"{None if prompt is None else tuple(prompt.shape)}")
        self.prompt = prompt
        if recache:
            self.recache()
        elif self.use_cache:
            self.cache.context.clear()


def iter_rollout(model: nn.Module, schedule: FlowSchedule, noise: Tensor, prompt: Tensor | None = None, *,
                 return_states: bool = False, **kw) -> Iterator[Tensor] | Iterator[tuple[Tensor, list[Tensor]]]:
    """Yield clean chunks (B, frames_per_chunk, C, H, W) one at a time (see `Rollout` for the arguments);
    return_states: yield (chunk, [state at grid[0], grid[1], ...]) (the ODE trajectory of the chunk)."""
    run = Rollout(model, schedule, noise, prompt, **kw)
    while run.remaining:
        x, states = run.next_chunk()
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
                             dtype=cache_dtype(sample.kv_cache_dtype, noise.device),
                             reindex=sample.positions == "window")
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
