"""CausalVideoDiT: a video diffusion transformer that runs block-causal (the generator) or bidirectional
(the teacher, critic and foresight encoder) with the same weights layout.

Frames (B, T, C, H, W) are patchified into (B, T * N, D) tokens. Each block is an adaLN-Zero DiT block
whose modulation comes from the noise level of the token's own frame (so every chunk carries its own
timestep, diffusion-forcing style) plus an optional prompt embedding. Positions are 3-D rotary
(time, height, width). Conditioned on captions (`cfg.text_conditioned`: caption embeddings (B, L, text_dim)
of a prepared cache), each block also cross-attends to the embedded caption after its self-attention, as
Wan's blocks do: x += CrossAttn(LN_affine(x), text), the caption projected to the model's width by two
layers (PixArt's / Wan's text embedder); the cross-attention's output starts at zero, so every block is
still the identity at initialisation. The model never loops: the sampler owns the rollout and the training objectives
own the sequences they build.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import (Attention, ChunkMask, CrossAttention, KVCache, attention_inputs, default_mask, flex_mask,
                        rope_angles, token_positions)
from ..config import ModelConfig


def sincos_2d(dim: int, grid: int) -> Tensor:
    """(grid * grid, dim) fixed sin-cos embedding of (row, column), half the channels each."""
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for pos in (rows.flatten(), cols.flatten()):
        angles = pos[:, None].double() * freqs[None]
        parts += [angles.sin(), angles.cos()]
    emb = torch.cat(parts, dim=1).float()
    return torch.nn.functional.pad(emb, (0, dim - emb.shape[1]))


def edm_scalings(t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    """EDM preconditioning (Karras et al. 2022) in rectified-flow time, x_t = (1 - t) x0 + t eps.

    c_skip minimises the variance of the network's target (x0 - c_skip x_t) / c_out, c_out makes that
    target unit-variance, c_in makes the input unit-variance. t = 1 gives plain x0 prediction (c_skip = 0),
    t -> 0 the identity plus a vanishing correction. t: any shape; returns three tensors of that shape.
    """
    t = t.float()
    var = ((1 - t) * sigma_data) ** 2 + t**2  # Var(x_t) for data of std sigma_data
    c_skip = (1 - t) * sigma_data**2 / var
    c_out = t * sigma_data / var.sqrt()
    return c_skip, c_out, var.rsqrt()


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (B, T, N, D); shift, scale (B, T, 1, D)."""
    return x * (1 + scale) + shift


def timestep_features(t: Tensor, freq_dim: int) -> Tensor:
    """Sinusoidal features [cos, sin] (..., freq_dim) of t in [0, 1] on a 0..1000 scale (DiT; Wan's flipped
    sin-cos `Timesteps` with no frequency shift is the same)."""
    half = freq_dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoidal features -> MLP (as DiT, on a 0..1000 scale)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_features(t, self.freq_dim))


class PromptEmbedder(nn.Module):
    """A structured prompt (B, P) of small integers -> (B, D): one embedding table per field, summed.

    Index 0 of every field means "absent"; a dropped prompt (classifier-free guidance) is all zeros.
    """

    def __init__(self, vocab: list[int], dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(v, dim) for v in vocab)

    def forward(self, prompt: Tensor) -> Tensor:
        return sum(table(prompt[:, i]) for i, table in enumerate(self.tables))


class Block(nn.Module):
    """adaLN-Zero DiT block: attention and MLP gated by the conditioning, identity at initialisation; with
    `cross`, a cross-attention to the text between them (its output projection zero at initialisation)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        # Created last, and only for a caption model: the structured-prompt model's modules and initial draws
        # are the same as without cross-attention.
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if cross else None  # affine, as Wan's norm2
        self.cross_attn = CrossAttention(dim, heads) if cross else None

    def forward(self, x: Tensor, c: Tensor, frames: int, angles: Tensor, mask: Tensor | None,
                cache: KVCache | None, layer: int, commit: bool, context: Tensor | None = None) -> Tensor:
        """x (B, T*N, D), c (B, T, D) per-frame conditioning, context (B, S, D) the embedded text (cross only)."""
        B, L, D = x.shape
        mods = self.ada(c)[:, :, None]  # (B, T, 1, 6D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods.chunk(6, dim=-1)
        h = modulate(self.norm1(x).view(B, frames, -1, D), shift1, scale1).view(B, L, D)
        h = self.attn(h, angles, mask, cache, layer, commit)
        x = x + (gate1 * h.view(B, frames, -1, D)).view(B, L, D)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context)
        h = modulate(self.norm2(x).view(B, frames, -1, D), shift2, scale2).view(B, L, D)
        return x + (gate2 * self.mlp(h).view(B, frames, -1, D)).view(B, L, D)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_dim)

    def forward(self, x: Tensor, c: Tensor, frames: int) -> Tensor:
        B, L, D = x.shape
        shift, scale = self.ada(c)[:, :, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x).view(B, frames, -1, D), shift, scale).view(B, L, D))


class CausalVideoDiT(nn.Module):
    """Flow-matching velocity model over videos; block-causal or bidirectional per `cfg.attention`."""

    checkpoint_blocks = False  # activation checkpointing per block (set by `mirai.distributed.checkpoint_blocks`)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.grid = cfg.image_size // cfg.patch_size  # square frames
        self.tokens_per_frame = self.grid * self.grid
        patch_dim = cfg.channels * cfg.patch_size**2
        self.patch_embed = nn.Linear(patch_dim, cfg.dim)
        # Absolute 2-D sin-cos positions inside a frame (as DiT): rotary attention alone only tells a token
        # where it is relative to others, and a token of pure noise must know where it is to draw the layout.
        # Time stays purely rotary (relative), so rollouts can run past the training length.
        self.register_buffer("spatial_pos", sincos_2d(cfg.dim, self.grid), persistent=False)
        self.t_embed = TimestepEmbedder(cfg.dim)
        self.prompt_embed = PromptEmbedder(cfg.prompt_vocab, cfg.dim) if cfg.prompt_vocab else None
        text = cfg.text_conditioned
        self.text_embed = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                        nn.Linear(cfg.dim, cfg.dim)) if text else None  # Wan's / PixArt's projection
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cross=text) for _ in range(cfg.depth))
        self.final = FinalLayer(cfg.dim, patch_dim)
        self.initialize()

    def initialize(self) -> None:
        """DiT's init: xavier linears, then zero every adaLN gate and the output layer (adaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        if self.prompt_embed is not None:
            for table in self.prompt_embed.tables:
                nn.init.normal_(table.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
            if block.cross_attn is not None:  # PixArt-alpha: a zero cross-attention output keeps the block the identity
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    @property
    def tokens_per_chunk(self) -> int:
        return self.tokens_per_frame * self.cfg.frames_per_chunk

    # ------------------------------------------------------------------ tokens <-> frames
    def patchify(self, x: Tensor) -> Tensor:
        p = self.cfg.patch_size
        return rearrange(x, "b t c (gh p1) (gw p2) -> b (t gh gw) (c p1 p2)", p1=p, p2=p)

    def unpatchify(self, x: Tensor, frames: int) -> Tensor:
        p, g = self.cfg.patch_size, self.grid
        return rearrange(x, "b (t gh gw) (c p1 p2) -> b t c (gh p1) (gw p2)", t=frames, gh=g, gw=g, p1=p, p2=p)

    def default_mask(self, frames: int, device) -> Tensor | None:
        """Block-causal mask over chunks of `frames_per_chunk` frames, or None (bidirectional)."""
        return default_mask(self.cfg, frames, self.tokens_per_frame, device)

    def text_context(self, prompt: Tensor | None, batch: int, device) -> Tensor:
        """Caption embeddings (B, L, text_dim) -> the context (B, L, D) every block's cross-attention reads. No
        prompt (None) reads one zero token, as the Wan model; a caption model is trained and guided with the
        empty caption's embedding instead (`data.prompt.unconditional`)."""
        if prompt is None:
            prompt = torch.zeros(batch, 1, self.cfg.text_dim, device=device)
        return self.text_embed(prompt)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor,
        t: Tensor,
        prompt: Tensor | None = None,
        *,
        mask: Tensor | ChunkMask | None | str = "default",
        frame_pos: Tensor | None = None,
        kv_cache: KVCache | None = None,
        commit: bool = False,
        return_hidden: int | None = None,
        stop_after: int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Velocity prediction (from an x0 or velocity output, per cfg.prediction).

        x: (B, T, C, H, W) noisy frames; t: (B, T) per-frame noise level in [0, 1];
        prompt: (B, P) ints (the structured prompt), (B, L, text_dim) caption embeddings (a caption model) or None
        (= dropped); mask: "default" (from cfg.attention), None (full), a bool (L, L) tensor or an
        `attention.ChunkMask` (a structured mask, never made (L, L) on CUDA);
        frame_pos: (T,) temporal positions (default 0..T-1, or after the cache);
        kv_cache: attend to cached chunks too (x is then one chunk); commit: also write this chunk's keys;
        return_hidden=k: also return the tokens after block k as (B, T, N, D);
        stop_after=k: return only those tokens, without running the blocks after k.
        """
        B, T = x.shape[:2]
        mask, frame_pos = attention_inputs(self.cfg, self.tokens_per_frame, T, x.device, mask, frame_pos, kv_cache, commit)
        mask = flex_mask(mask, x.device)
        angles = rope_angles(*token_positions(frame_pos, self.grid), self.cfg.dim // self.cfg.heads, self.cfg.rope_theta)

        c = self.t_embed(t)  # (B, T, D)
        if self.prompt_embed is not None:
            if prompt is None:
                prompt = torch.zeros(B, len(self.cfg.prompt_vocab), dtype=torch.long, device=x.device)
            c = c + self.prompt_embed(prompt)[:, None]
        context = self.text_context(prompt, B, x.device) if self.text_embed is not None else None
        x_in = x
        if self.cfg.prediction == "edm":
            c_skip, c_out, c_in = (s[..., None, None, None] for s in edm_scalings(t, self.cfg.sigma_data))
            x_in = x * c_in.to(x.dtype)
        h = (self.patch_embed(self.patchify(x_in)).view(B, T, self.tokens_per_frame, -1) + self.spatial_pos).flatten(1, 2)
        recompute, kv_cache = checkpointed_cache(self.checkpoint_blocks, kv_cache, commit)
        h, hidden = run_blocks(self.blocks, h,
                               lambda block, i, h: block(h, c, T, angles, mask, kv_cache, i, commit, context),
                               T, return_hidden, stop_after, recompute)
        if h is None:
            return hidden
        if commit:
            kv_cache.advance()
        out = self.unpatchify(self.final(h, c, T), T)
        if self.cfg.prediction == "edm":
            out = c_skip.to(out.dtype) * x + c_out.to(out.dtype) * out  # the clean estimate x0
        if self.cfg.prediction in ("x0", "edm"):  # v = (x_t - x0) / t; exact for t > 0 (t = 0 only writes the cache)
            out = (x - out) / t.clamp_min(1e-3).to(out.dtype)[..., None, None, None]
        return (out, hidden) if return_hidden is not None else out


def checkpointed_cache(on: bool, kv_cache: KVCache | None, commit: bool) -> tuple[bool, KVCache | None]:
    """Whether a forward recomputes its blocks in backward (`checkpoint_blocks` on, with gradient), and the
    cache its blocks then read: a snapshot, since the cache grows before backward (the exit-step forwards of
    `rollout_with_exit`). A committing forward is never recomputed: it would write its chunk a second time."""
    if not on or commit or not torch.is_grad_enabled():
        return False, kv_cache
    return True, (kv_cache.snapshot() if kv_cache is not None else None)


def run_blocks(blocks: nn.ModuleList, h: Tensor, step, frames: int, return_hidden: int | None,
               stop_after: int | None, recompute: bool = False) -> tuple[Tensor | None, Tensor | None]:
    """h (B, T * N, D) through the blocks, step(block, i, h) -> h. Returns (h, hidden): hidden = the tokens after
    block `return_hidden` or `stop_after` as (B, T, N, D); at `stop_after`, h is None and no later block runs.
    recompute: activation checkpointing, each block's activations recomputed in backward (with gradients on)."""
    hidden = None
    recompute = recompute and torch.is_grad_enabled()
    for i, block in enumerate(blocks):
        h = checkpoint(step, block, i, h, use_reentrant=False) if recompute else step(block, i, h)
        if i + 1 in (return_hidden, stop_after):
            hidden = h.view(h.shape[0], frames, -1, h.shape[-1])
            if stop_after is not None:
                return None, hidden
    return h, hidden


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
