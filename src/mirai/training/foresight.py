"""Video-Mirai foresight training (Yu et al. 2026), added to the self-rollout DMD stage.

1. A frozen foresight encoder reads the *completed* clean rollout non-causally (it sees the future) and
   returns per-token features (B, T, N, D_enc). Default: the bidirectional teacher (the DMD real score),
   one no-grad pass at t = 0 with the prompt, stopped after `encoder_block` blocks. A separate encoder
   (`foresight.encoder`) shares the generator's tokens, not its width or depth (the paper's 14B beside a 1.3B).
2. Targets: for chunk i, the mean of the encoder's tokens of chunks i + d, d in `window` (default {0, 1};
   offsets past the end are left out, the last chunk keeps what exists), matched by frame-in-chunk and
   spatial index, with stop-gradient.
3. The predictor (mirai.predictor) maps the generator's hidden state after `student_block` blocks, taken
   at the shared exit step with gradient, onto those targets: loss = -cos(phi(h_i), sg(target_i)), mean
   over tokens and chunks, weight lambda, added to the DMD generator loss.
The predictor and the encoder are training-only: the generator file, its FLOPs and KV cache are unchanged.

`ForesightTerm` is what the DMD stage is given (a `GeneratorTerm`): encoder, predictor with its own AdamW,
and a replay buffer that trains the predictor on critic-only steps.
"""

from __future__ import annotations

import collections

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checkpoint as ckpt, distributed as dist
from ..config import Config, ConfigError, ForesightConfig
from ..device import weights_autocast
from ..models.attention import ChunkMask
from ..models.predictor import Predictor
from ..references import load_reference
from .dmd import GeneratorRollout, GeneratorTerm, freeze, frozen_dtype, place_frozen

# --------------------------------------------------------------------------------------------------
# Encoders


class TeacherEncoder(nn.Module):
    """A frozen DiT read at t = 0 up to `block`; `causal=True` masks the future (the ablation)."""

    def __init__(self, model: nn.Module, block: int, causal: bool = False):
        super().__init__()
        self.model, self.block, self.causal = model.eval().requires_grad_(False), block, causal
        self.dim = model.cfg.dim

    @torch.no_grad()
    def forward(self, video: Tensor, prompt: Tensor | None) -> Tensor:
        """video (B, T, C, H, W) clean -> (B, T, N, D_enc)."""
        B, T = video.shape[:2]
        mask = None
        if self.causal:
            fpc, n = self.model.cfg.frames_per_chunk, self.model.tokens_per_frame
            mask = ChunkMask("causal", fpc * n, -(-T // fpc), T * n)
        t = torch.zeros(B, T, device=video.device)
        with weights_autocast(self.model, video.device):  # a bf16 encoder (dist.frozen_dtype)
            return self.model(video, t, prompt, mask=mask, stop_after=self.block).float()


def build_encoder(cfg: Config, teacher: nn.Module, generator: nn.Module, device) -> TeacherEncoder:
    """The teacher as it is (the stage placed it), or a separate frozen bidirectional model with the generator's
    tokens (its own width and depth), cast and placed as the teacher is (`dmd.freeze`)."""
    f = cfg.foresight
    model = teacher
    if f.encoder != "teacher":
        model = load_reference(f.encoder, cfg.model, "bidirectional", "foresight.encoder", frozen_dtype(cfg.dist))
        ckpt.check_same_tokens(model.cfg, generator.cfg, f.encoder, "the generator")
        model = freeze(model, cfg.dist, device)
    block = f.encoder_block or model.cfg.depth // 2
    if block > model.cfg.depth:
        raise ConfigError(f"foresight.encoder_block={block} must be within 0..{model.cfg.depth}, the depth of the "
                          f"encoder ({f.encoder})")
    return TeacherEncoder(model, block, causal=f.encoder_mask == "causal")


# --------------------------------------------------------------------------------------------------
# Targets and loss


def foresight_targets(features: Tensor, frames_per_chunk: int, window: list[int]) -> Tensor:
    """Future-conditioned targets (B, T, N, D): chunk i <- mean over d in window of chunk i + d (that exist).

    If no offset of the window exists for a chunk (e.g. window {1} at the last chunk), it keeps its own.
    """
    B, T, N, D = features.shape
    K = T // frames_per_chunk
    chunks = features.view(B, K, frames_per_chunk, N, D)
    out = torch.empty_like(chunks)
    for i in range(K):
        picked = [chunks[:, i + d] for d in window if i + d < K] or [chunks[:, i]]
        out[:, i] = torch.stack(picked).mean(0)
    return out.view(B, T, N, D).detach()


def target_window(f: ForesightConfig) -> list[int]:
    """The causal-encoder ablation must carry no future at all: its features of chunk i + d (d > 0) would
    still have read chunk i + d's frames, so only d = 0 is kept there."""
    return [0] if f.encoder_mask == "causal" else list(f.window)


def foresight_loss(pred: Tensor, target: Tensor) -> Tensor:
    """-cos(phi(h), sg(target)) per token, mean over tokens, frames and batch."""
    return -F.cosine_similarity(pred.float(), target.detach().float(), dim=-1).mean()


# --------------------------------------------------------------------------------------------------
# The DMD stage with foresight


def build_predictor(cfg: Config, generator: nn.Module, encoder_dim: int) -> Predictor:
    m = cfg.model
    return Predictor(m.dim, encoder_dim, cfg.foresight.predictor_depth, m.heads, m.frames_per_chunk,
                     generator.grid, m.mlp_ratio)


class ForesightTerm(GeneratorTerm):
    """DMD + foresight alignment. The predictor has its own AdamW and replays recent pairs on critic-only steps.

    teacher: the DMD real score (the default encoder); generator: the causal generator being trained.
    """

    name = "foresight"

    def __init__(self, cfg: Config, teacher: nn.Module, generator: nn.Module, device):
        f: ForesightConfig = cfg.foresight
        self.cfg = cfg
        self.device = device
        self.encoder = build_encoder(cfg, teacher, generator, device)
        self.separate_encoder = self.encoder.model is not teacher  # the term places it (else the stage does)
        self.predictor = build_predictor(cfg, generator, self.encoder.dim).to(device)
        self.opt_predictor = torch.optim.AdamW(self.predictor.parameters(), lr=f.predictor_lr, betas=(0.9, 0.999))
        self.modules = {"predictor": self.predictor}
        self.optimizers = {"predictor": self.opt_predictor}
        self.forward_predictor = self.predictor  # its DDP wrapper in a multi-process run
        self.replay: collections.deque = collections.deque(maxlen=f.replay_size)  # one entry per generator update
        self.new_update = True  # the next `loss` starts a replay entry (later micro-batches join it)
        self.student_block = f.student_block or cfg.model.depth // 2

    def distribute(self) -> None:
        d = self.cfg.dist
        self.forward_predictor = dist.parallelize(self.predictor, d.predictor, d, self.device, self.opt_predictor)
        if self.separate_encoder:
            place_frozen(self.encoder.model, d, self.device)

    def begin_generator_update(self) -> None:
        self.opt_predictor.zero_grad(set_to_none=True)  # the predictor steps with the generator, on all micro-batches
        self.new_update = True

    def gradient_sync(self, sync: bool):
        return dist.gradient_sync(self.forward_predictor, sync)

    def extra_state(self) -> dict[str, Tensor]:
        """The replay buffer travels with the checkpoint, so a resumed run replays the same pairs. Each rank
        replays its own rows of the batches and saves them as such (`rows.`: see `training.rank_rows`)."""
        out = {}
        for i, pair in enumerate(self.replay):
            out.update({f"rows.replay.{i}.{k}": x for k, x in zip(("hidden", "target", "t"), pair)})
        return out

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        """tensors: this rank's rows under `rows.replay.`; a file written before rows had their own keys holds
        the joined rows under `replay.` (split by rank here)."""
        self.replay.clear()
        prefix, split = ("rows.replay", lambda x: x) if "rows.replay.0.hidden" in tensors else ("replay", dist.own_rows)
        i = 0
        while f"{prefix}.{i}.hidden" in tensors:
            keys = ("hidden", "target", "t")
            self.replay.append(tuple(self.stored(split(tensors[f"{prefix}.{i}.{k}"])) for k in keys))
            i += 1

    def stored(self, x: Tensor) -> Tensor:
        """x as the replay buffer keeps it (`foresight.replay_device`): on the device, or copied to host memory
        (pinned where CUDA is, so that the copy back when replayed is a fast DMA). The values are the same."""
        if self.cfg.foresight.replay_device == "device":
            return x.detach().to(next(self.predictor.parameters()).device)
        host = torch.empty(x.shape, dtype=x.dtype, device="cpu", pin_memory=torch.cuda.is_available())
        return host.copy_(x.detach())  # blocking: a saved checkpoint may read it on the host right after

    def targets(self, video: Tensor, prompt: Tensor | None, real: Tensor | None) -> Tensor:
        source = real if self.cfg.foresight.target_source == "real" else video.detach()
        features = self.encoder(source, prompt)
        return foresight_targets(features, self.cfg.model.frames_per_chunk, target_window(self.cfg.foresight))

    def loss(self, rollout: GeneratorRollout, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        video = rollout.video
        target = self.targets(video, rollout.prompt, rollout.real)
        t = torch.full((video.shape[0],), float(rollout.t_exit), device=video.device)
        align = foresight_loss(self.forward_predictor(rollout.hidden, t), target)
        self.remember(tuple(self.stored(x) for x in (rollout.hidden.detach(), target, t)))
        return self.cfg.foresight.weight * align, {"foresight_loss": align.item()}

    def remember(self, pair: tuple[Tensor, Tensor, Tensor]) -> None:
        """Keep a micro-batch's (hidden, target, t) rows: the micro-batches of one update are joined into one
        entry, so a replayed entry is the whole batch's, as without accumulation."""
        if self.new_update or not self.replay:
            self.replay.append(pair)
            self.new_update = False
        else:
            self.replay[-1] = tuple(torch.cat([a, b]) for a, b in zip(self.replay[-1], pair))

    def after_generator_step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.predictor.parameters(), self.cfg.train.grad_clip)
        self.opt_predictor.step()

    def critic_only_step(self, gen: torch.Generator) -> dict[str, float]:
        """Train the predictor on a replayed (student feature, target) pair: keeps phi ahead of the generator."""
        if not self.replay:
            return {}
        pair = self.replay[int(torch.randint(len(self.replay), (1,), generator=gen))]
        hidden, target, t = (x.to(self.device, non_blocking=True) for x in pair)
        loss = foresight_loss(self.forward_predictor(hidden, t), target)
        self.opt_predictor.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.predictor.parameters(), self.cfg.train.grad_clip)
        self.opt_predictor.step()
        return {"predictor_replay_loss": loss.item()}
