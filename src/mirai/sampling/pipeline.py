"""One sampling pipeline, the diffusers way: the model never loops, the scheduler (`mirai.diffusion`) never calls
the model, and the pipeline owns the loop. It loads a model file or run folder once, makes the inputs of a
request (`sampling.inputs`) and rolls them out (`sampling.rollout`), decoded to frames: streamed chunk by chunk
(`stream`: `mirai sample`, a server) or whole (`video`: `mirai eval`, `mirai compare`, the demo).

    pipe = Pipeline.load("runs/tiny", device="auto")
    request = pipe.inputs(num=4, frames=32, seed=0)
    for chunk in pipe.stream(request): ...       # (4, frames_per_chunk, C, H, W) in [-1, 1], as they come
    frames, prompts = pipe.video(request)        # the same videos whole: uint8 (4, 32, H, W, 3), (4, P) prompts

Every draw comes from the request's seed (`mirai.rng`), so a request gives the same videos streamed or whole.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import load_model, run_config
from ..config import Config, ConfigError, WorldConfig
from ..data.cache import LatentDataset
from ..data.frames import to_uint8
from ..device import inference_autocast, pick_device
from ..diffusion.schedule import FlowSchedule
from ..models.autoencoder import Autoencoder, IdentityAutoencoder
from ..data.prompt import PROMPT
from .inputs import (Context, RolloutInputs, cache_autoencoder, cache_inputs, caption_encoder, rollout_inputs,
                     world_context)
from .rollout import Rollout, sample_whole


@dataclass
class Switch:
    """A prompt switch: from chunk `chunk` on, the rollout follows `prompt` (`Rollout.switch`)."""

    chunk: int
    prompt: Tensor  # the request's prompt's shape: (B, P) structured, (B, L, D) caption embeddings
    text: str  # as asked (recorded with the video)


@dataclass
class Request:
    """What one call rolls out: its inputs, the clip it continues (image-to-video) if any, and its prompt
    switches. Used once: the sampler advances its generator (make the same request again for the same videos)."""

    inputs: RolloutInputs  # noise (B, T, C, h, w), prompt, the solver's generator, guidance's uncond
    context: Tensor | None = None  # (B, Tc, C, h, w) clean latents to continue from, or None
    switches: list[Switch] = field(default_factory=list)  # in chunk order

    @property
    def frames(self) -> int:
        """T, the model frames to generate (a multiple of the model's chunk)."""
        return self.inputs.noise.shape[1]


@dataclass
class Pipeline:
    """A model ready to sample: its run's resolved config (world, sample, schedule, data), the noise schedule and
    the device it lives on. `autoencoder` turns its frames into pictures: the cache's for a model trained on a
    prepared cache (`data.source: cache`), the identity for the world's pixels."""

    model: nn.Module
    cfg: Config
    schedule: FlowSchedule
    device: torch.device

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", overrides: list[str] | None = None) -> Pipeline:
        """From a run folder or a model.safetensors file; device "auto" is CUDA when available; `overrides`: the
        run's sample.* settings changed, e.g. ["sample.steps=4"]."""
        dev = pick_device(device)
        model = load_model(path).eval().to(dev)
        cfg = run_config(path, overrides or [])
        return cls(model, cfg, FlowSchedule.from_config(cfg.schedule), dev)

    @property
    def on_cache(self) -> bool:
        """Trained on a prepared cache: latents and caption embeddings, through the cache's encoders."""
        return self.cfg.data.source == "cache"

    @property
    def causal(self) -> bool:
        """Rolls out chunk by chunk (a bidirectional model, the teacher, denoises the whole clip at once)."""
        return self.model.cfg.attention == "causal"

    @cached_property
    def autoencoder(self) -> Autoencoder:
        # loaded on first use: a command refused before any sampling does not read the cache
        return cache_autoencoder(self.cfg, self.device) if self.on_cache else IdentityAutoencoder()

    @cached_property
    def text_encoder(self):
        # loaded on first use, once: a server encodes every viewer's captions with it
        return caption_encoder(self.cfg, self.device)

    def round_frames(self, frames: int) -> int:
        """`frames` rounded up to a whole number of chunks."""
        fpc = self.model.cfg.frames_per_chunk
        return -(-frames // fpc) * fpc

    @torch.no_grad()  # encoders of captions and contexts: no graph
    def inputs(self, num: int, frames: int, seed: int, prompt: str | None = None, negative_prompt: str | None = None,
               context: Context | None = None, world: WorldConfig | None = None) -> Request:
        """The inputs of `num` videos of `frames` frames (rounded up to the chunk) for `seed`.

        A world model: prompts of unseen scenes of `world` (default: the run's own world), and a `context` image or
        clip (a file or decoded frames) as pixels (`sampling.inputs.world_context`). A model on a cache: `prompt`
        and `negative_prompt` captions (None: the empty caption) and a `context`, all encoded with the cache's
        encoders (see `sampling.inputs.cache_inputs`); `world` does not apply."""
        frames = self.round_frames(frames)
        if self.on_cache:
            captions = self.model.cfg.text_conditioned and (prompt is not None or negative_prompt is not None)
            real = cache_inputs(self.model, self.cfg, num, frames, seed, self.device, prompt, context, negative_prompt,
                                autoencoder=self.autoencoder, text_encoder=self.text_encoder if captions else None)
            return Request(real.inputs, real.context)
        if prompt is not None or negative_prompt is not None:
            raise ConfigError("--prompt and --negative-prompt need a model trained on a prepared cache with captions "
                              "(data.source=cache)")
        inputs = rollout_inputs(self.model, world or self.cfg.world, num, frames, seed, self.device)
        return Request(inputs, None if context is None else world_context(self.model, context, num, self.device))

    @torch.no_grad()
    def evaluation_inputs(self, num: int, frames: int, seed: int, world: WorldConfig | None = None) -> Request:
        """What evaluation rolls out: `inputs` with no caption asked, except that a caption model on a cache
        prompts video i with the caption of the cache's clip i (in turn), so its videos compare with those clips."""
        request = self.inputs(num, frames, seed, world=world)
        if not (self.on_cache and self.model.cfg.text_conditioned):
            return request
        data = LatentDataset(self.cfg.data.path, self.cfg.data.clip_frames)
        captions = torch.stack([data.clip_prompt(i % data.num_clips) for i in range(num)]).to(self.device)  # (B, L, D)
        return dataclasses.replace(request, inputs=dataclasses.replace(request.inputs, prompt=captions))

    @torch.no_grad()
    def switch_prompt(self, request: Request, text: str) -> Tensor:
        """The prompt of a switch to `text`, for every video of `request`: a caption, encoded as `--prompt` is (a
        caption model on a cache), or an edit of the world's prompt applied to each video's own ("background=2,
        sprite1.color=0": see `PromptLayout.edit`)."""
        prompt = request.inputs.prompt
        if prompt is None:
            raise ConfigError("this model takes no prompt: there is nothing to switch")
        if prompt.is_floating_point():  # caption embeddings
            return self.text_encoder.encode([text])[0].expand_as(prompt).to(prompt.dtype)
        vocab = list(self.model.cfg.prompt_vocab)
        edited = np.stack([PROMPT.edit(p, text, vocab) for p in prompt.cpu().numpy()])
        return torch.from_numpy(edited).to(prompt.device)

    def with_switch(self, request: Request, frame: int, text: str) -> Request:
        """`request` switching to `text` from model frame `frame` on (rounded up to the start of a chunk)."""
        chunk = self.round_frames(frame) // self.model.cfg.frames_per_chunk
        chunks = request.frames // self.model.cfg.frames_per_chunk
        if not 0 < chunk < chunks:
            raise ConfigError(f"a switch at frame {frame} is outside the rollout's {request.frames} frames (it must "
                              f"fall after the first chunk of {self.model.cfg.frames_per_chunk} and before the last)")
        switches = sorted(request.switches + [Switch(chunk, self.switch_prompt(request, text), text)],
                          key=lambda s: s.chunk)
        return dataclasses.replace(request, switches=switches)

    def stream_length(self, request: Request) -> int:
        """How many pieces `stream` yields: the context clip (when given), then one per chunk."""
        return (request.context is not None) + request.frames // self.model.cfg.frames_per_chunk

    @torch.no_grad()
    def stream(self, request: Request) -> Iterator[Tensor]:
        """Decoded frames (B, f, 3, H, W) in [-1, 1], on the pipeline's device, as the sampler makes them: the
        continued context clip first (when given), then each chunk. A causal model only."""
        if not self.causal:
            raise ValueError("a bidirectional model denoises the whole clip at once and cannot stream: use `video`")
        decoder = self.autoencoder.stream()  # a causal decoder keeps state from one chunk to the next
        if request.context is not None:
            yield decoder.decode(request.context)
        for chunk in self.latent_chunks(request):
            yield decoder.decode(chunk.float())

    def start(self, request: Request) -> Rollout:
        """The rollout of `request`, not yet advanced (a server steps it and switches its prompt live)."""
        inputs = request.inputs
        with self.autocast():  # the context clip is committed to the cache here
            return Rollout(self.model, self.schedule, inputs.noise, inputs.prompt, sample=self.cfg.sample,
                           context=request.context, generator=inputs.generator, uncond=inputs.uncond)

    def latent_chunks(self, request: Request) -> Iterator[Tensor]:
        """The model's clean chunks (B, frames_per_chunk, C, h, w) of `request`, its switches applied."""
        run, switches = self.start(request), {s.chunk: s.prompt for s in request.switches}
        while run.remaining:
            with self.autocast():  # around the sampler's step alone: not the caller's code between yields
                if run.done in switches:
                    run.switch(switches[run.done], recache=self.cfg.sample.switch == "recache")
                chunk, _ = run.next_chunk()
            yield chunk

    def autocast(self):
        """`sample.precision` on the pipeline's device: bf16 autocast on a GPU ("auto"), fp32 on a CPU."""
        return inference_autocast(self.cfg.sample.precision, self.device)

    @torch.no_grad()
    def video(self, request: Request, chunk_seconds: list[float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole videos, the context clip first (when given): uint8 (B, T', H, W, 3) (T' decoded frames), and
        their structured prompts (B, P) (None for a model on a cache: it has none). A causal model rolls out chunk
        by chunk (`chunk_seconds`, when given, gets each chunk's wall time); a bidirectional one (the teacher)
        denoises all frames at once."""
        inputs, sample = request.inputs, self.cfg.sample
        if not self.causal and (request.context is not None or request.switches):
            raise ConfigError("a bidirectional model denoises a whole clip: it continues no context and switches no "
                              "prompt")
        with self.autocast():
            if self.causal:
                latents = torch.cat(list(timed_chunks(self.latent_chunks(request), chunk_seconds)), dim=1)
            else:
                latents = sample_whole(self.model, self.schedule, inputs.noise, inputs.prompt, sample=sample,
                                       generator=inputs.generator, uncond=inputs.uncond)
        latents = latents.float()  # the decoder runs in fp32
        if request.context is not None:
            latents = torch.cat([request.context, latents], dim=1)
        frames = to_uint8(self.autoencoder.decode(latents).cpu())
        return frames, None if self.on_cache else inputs.prompts


def timed_chunks(chunks: Iterator[Tensor], seconds: list[float] | None) -> Iterator[Tensor]:
    """The chunks as they come; each one's wall time (synchronised on a GPU) appended to `seconds` when given."""
    start = time.perf_counter()
    for chunk in chunks:
        if seconds is not None:
            if chunk.is_cuda:
                torch.cuda.synchronize(chunk.device)
            seconds.append(time.perf_counter() - start)
        yield chunk
        start = time.perf_counter()
