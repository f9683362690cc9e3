"""WanVideoModel: the Wan2.1 text-to-video transformer (Wan Team 2025) in Mirai's model interface.

The weights are named as diffusers' `WanTransformer3DModel` names them, so a diffusers folder loads as it
is (`mirai.wan_io`). The math follows diffusers 0.42's forward:

  patch_embedding   Conv3d, kernel = stride = (1, p, p): (B, C, T, H, W) -> (B, T * N, D) tokens, frame-major
  condition         t -> sin-cos(1000 t) -> time_embedder (Linear, SiLU, Linear) = temb (per frame here);
                    time_proj(SiLU(temb)) = the 6 modulations of every block; text -> text_embedder (2 layers)
  block             x += gate1 * SelfAttn(LN(x) (1 + scale1) + shift1)        [(scale_shift_table + mods)]
                    x += CrossAttn(LN_affine(x), text)
                    x += gate2 * FFN(LN(x) (1 + scale2) + shift2)             FFN: Linear, GELU(tanh), Linear
  attention         q, k RMS-normalised across all heads (norm_q, norm_k), 3-D RoPE on interleaved pairs with
                    the head split into frame / height / width bands (the DiT's `rope_split`)
  output            LN(x) (1 + scale) + shift, [shift, scale] = scale_shift_table + temb; proj_out; unpatchify

What Mirai adds: every frame carries its own timestep (diffusers' per-token timestep path with a value per
frame), the block-causal or a given mask, the KV cache (self-attention keys after RoPE at the chunk's
frame offset; the cross-attention keys/values of the text once per rollout), hidden states for foresight,
and the synthetic world's structured prompt as a short token sequence (one `text_dim` embedding per field)
standing in for text embeddings until real captions arrive. Wan predicts the flow velocity
v = eps - x0 with x_t = (1 - t) x0 + t eps, t = timestep / 1000: Mirai's convention, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..config import ModelConfig
from .attention import (ChunkMask, KVCache, RMSNorm, apply_rope, attend, attention_inputs, flex_mask, rope_angles,
                        token_positions)
from .dit import checkpointed_cache, run_blocks, timestep_features


class WanAttention(nn.Module):
    """Self- or cross-attention with q/k RMSNorm across heads (keys as diffusers' `WanAttention`)."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.norm_q, self.norm_k = RMSNorm(dim, eps=eps), RMSNorm(dim, eps=eps)

    def split(self, x: Tensor) -> Tensor:
        return rearrange(x, "b l (h d) -> b h l d", h=self.heads)

    def keys_values(self, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.split(self.norm_k(self.to_k(context))), self.split(self.to_v(context))

    def out(self, o: Tensor) -> Tensor:
        return self.to_out[0](rearrange(o, "b h l d -> b l (h d)"))

    def self_attention(self, x: Tensor, angles: Tensor, mask, cache: KVCache | None, layer: int,
                       commit: bool) -> Tensor:
        """x (B, L, D); with a cache, x is one chunk that also attends to the cached ones."""
        q = apply_rope(self.split(self.norm_q(self.to_q(x))), angles)
        k, v = self.keys_values(x)
        return self.out(attend(q, apply_rope(k, angles), v, mask, cache, layer, commit))

    def cross_attention(self, x: Tensor, context: Tensor, cache: KVCache | None, layer: int) -> Tensor:
        """x (B, L, D) attends to the text context (B, S, D). The text's keys/values are kept in the cache,
        computed without gradient; a forward that trains these projections recomputes them."""
        trains = torch.is_grad_enabled() and self.to_k.weight.requires_grad
        if cache is not None and layer < len(cache.context) and not trains:
            k, v = cache.context[layer]
        else:
            k, v = self.keys_values(context)
            if cache is not None and layer == len(cache.context):
                cache.context.append((k.detach(), v.detach()))
        q = self.split(self.norm_q(self.to_q(x)))
        return self.out(F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype)))


class GELUProj(nn.Module):
    """Linear then tanh-GELU (diffusers' `GELU` with approximate="tanh": key `proj`)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(GELUProj(dim, hidden), nn.Dropout(0.0), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def per_frame(x: Tensor, frames: int, m: Tensor) -> Tensor:
    """Broadcast per-frame m (B, T, 1, D) over the tokens of x (B, T * N, D) -> (B, T, N, D)."""
    return x.view(x.shape[0], frames, -1, x.shape[-1]) * m


def modulate(x: Tensor, frames: int, shift: Tensor, scale: Tensor) -> Tensor:
    """x (B, T * N, D) * (1 + scale) + shift, with per-frame shift, scale (B, T, 1, D)."""
    return (per_frame(x, frames, 1 + scale) + shift).flatten(1, 2)


class WanBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.attn1 = WanAttention(dim, cfg.heads, cfg.eps)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.eps)  # affine: diffusers' cross_attn_norm=True
        self.attn2 = WanAttention(dim, cfg.heads, cfg.eps)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = FeedForward(dim, cfg.ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: Tensor, mods: Tensor, context: Tensor, frames: int, angles: Tensor, mask,
                cache: KVCache | None, layer: int, commit: bool) -> Tensor:
        """x (B, T * N, D); mods (B, T, 6, D) per-frame modulations; context (B, S, D) the embedded text.
        Norms and residual gates in float32, as diffusers."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table[None] + mods.float()).chunk(6, dim=2)
        h = modulate(self.norm1(x.float()), frames, shift1, scale1).type_as(x)
        h = self.attn1.self_attention(h, angles, mask, cache, layer, commit)
        x = (x.float() + per_frame(h, frames, gate1).flatten(1, 2)).type_as(x)
        x = x + self.attn2.cross_attention(self.norm2(x.float()).type_as(x), context, cache, layer)
        h = modulate(self.norm3(x.float()), frames, shift2, scale2).type_as(x)
        return (x.float() + per_frame(self.ffn(h).float(), frames, gate2).flatten(1, 2)).type_as(x)


class TimestepMLP(nn.Module):
    """diffusers' `TimestepEmbedding`: linear_1, SiLU, linear_2."""

    def __init__(self, in_dim: int, dim: int, act: nn.Module):
        super().__init__()
        self.linear_1, self.act, self.linear_2 = nn.Linear(in_dim, dim), act, nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class ConditionEmbedder(nn.Module):
    """Timestep and text embeddings (keys as diffusers' `WanTimeTextImageEmbedding`, text-to-video only)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.freq_dim = cfg.freq_dim
        self.time_embedder = TimestepMLP(cfg.freq_dim, cfg.dim, nn.SiLU())
        self.time_proj = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.text_embedder = TimestepMLP(cfg.text_dim, cfg.dim, nn.GELU(approximate="tanh"))  # PixArt's projection

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """t (B, T) in [0, 1] -> temb (B, T, D), block modulations (B, T, 6, D)."""
        temb = self.time_embedder(timestep_features(t, self.freq_dim))
        return temb, self.time_proj(F.silu(temb)).unflatten(-1, (6, -1))


class PromptTokens(nn.Module):
    """The structured prompt (B, P) -> (B, P, text_dim): one embedding table per field, one token per field.
    Index 0 means "absent"; a dropped prompt (all zeros) is the unconditional branch."""

    def __init__(self, vocab: list[int], text_dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(v, text_dim) for v in vocab)

    def forward(self, prompt: Tensor) -> Tensor:
        return torch.stack([table(prompt[:, i]) for i, table in enumerate(self.tables)], dim=1)


class WanVideoModel(nn.Module):
    """Flow-matching velocity model with Wan2.1's architecture; block-causal or bidirectional per `cfg.attention`."""

    checkpoint_blocks = False  # activation checkpointing per block (set by `mirai.distributed.checkpoint_blocks`)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.grid = cfg.grid_shape  # (rows, columns) of patches
        self.tokens_per_frame = self.grid[0] * self.grid[1]
        p = cfg.patch_size
        self.patch_embedding = nn.Conv3d(cfg.channels, cfg.dim, kernel_size=(1, p, p), stride=(1, p, p))
        self.condition_embedder = ConditionEmbedder(cfg)
        self.prompt_embed = PromptTokens(cfg.prompt_vocab, cfg.text_dim) if cfg.prompt_vocab else None
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(cfg.dim, cfg.channels * p * p)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    @property
    def tokens_per_chunk(self) -> int:
        return self.tokens_per_frame * self.cfg.frames_per_chunk

    def text(self, prompt: Tensor | None, batch: int, device) -> Tensor:
        """Text embeddings (B, S, text_dim): the given float embeddings, or the structured prompt's tokens
        (None = dropped); an unconditional model reads one zero token."""
        if prompt is not None and prompt.is_floating_point():
            return prompt
        if self.prompt_embed is None:
            return torch.zeros(batch, 1, self.cfg.text_dim, device=device)
        if prompt is None:
            prompt = torch.zeros(batch, len(self.cfg.prompt_vocab), dtype=torch.long, device=device)
        return self.prompt_embed(prompt)

    def embed_patches(self, x: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, T * N, D): the (1, p, p) Conv3d as the linear map it is on patches (CPU's
        Conv3d falls back to a slow kernel)."""
        p, w = self.cfg.patch_size, self.patch_embedding.weight  # (D, C, 1, p, p)
        patches = rearrange(x, "b t c (gh p1) (gw p2) -> b (t gh gw) (c p1 p2)", p1=p, p2=p)
        return F.linear(patches, w.flatten(1), self.patch_embedding.bias)

    def unpatchify(self, x: Tensor, frames: int) -> Tensor:
        """(B, T * N, p * p * C) -> (B, T, C, H, W); the channel is the fastest index, as diffusers' proj_out."""
        (gh, gw), p = self.grid, self.cfg.patch_size
        return rearrange(x, "b (t gh gw) (p1 p2 c) -> b t c (gh p1) (gw p2)", t=frames, gh=gh, gw=gw, p1=p, p2=p)

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
        """Velocity (B, T, C, H, W); the arguments are `CausalVideoDiT.forward`'s. prompt: (B, P) ints of the
        structured prompt, (B, S, text_dim) float text embeddings, or None (dropped)."""
        B, T = x.shape[:2]
        mask, frame_pos = attention_inputs(self.cfg, self.tokens_per_frame, T, x.device, mask, frame_pos, kv_cache, commit)
        mask = flex_mask(mask, x.device)
        head_dim = self.cfg.dim // self.cfg.heads
        angles = rope_angles(*token_positions(frame_pos, self.grid), head_dim, self.cfg.rope_theta, torch.float64)

        temb, mods = self.condition_embedder(t)  # (B, T, D), (B, T, 6, D)
        context = self.condition_embedder.text_embedder(self.text(prompt, B, x.device))
        h = self.embed_patches(x)
        recompute, kv_cache = checkpointed_cache(self.checkpoint_blocks, kv_cache, commit)
        h, hidden = run_blocks(self.blocks, h, lambda block, i, h: block(h, mods, context, T, angles, mask, kv_cache, i,
                                                                         commit), T, return_hidden, stop_after,
                               recompute)
        if h is None:
            return hidden
        if commit:
            kv_cache.advance()
        shift, scale = (self.scale_shift_table[None] + temb.float()[:, :, None]).chunk(2, dim=2)  # (B, T, 1, D)
        out = self.proj_out(modulate(self.norm_out(h.float()), T, shift, scale).type_as(h))
        out = self.unpatchify(out, T)
        return (out, hidden) if return_hidden is not None else out
