"""Attention over video tokens: 3-D rotary positions, chunk masks and the KV cache.

Token layout everywhere: a video (B, T, C, H, W) becomes (B, T * N, D) tokens, frame-major, with
N = (H / p) * (W / p) tokens per frame. Chunks are groups of `frames_per_chunk` consecutive frames.

Attention runs through `attend`: SDPA (with a boolean mask, the CPU path) or, on CUDA, FlexAttention with a
block mask built once per forward (`flex_mask`); both compute the same thing. The structured masks (block-causal,
teacher forcing) are a `ChunkMask` description: dense for SDPA, and a block mask computed block by block for
FlexAttention, so that no (L, L) tensor exists on the GPU (at Wan's 32,760 tokens one is 1 GB).

The KV cache stores keys *after* the rotary rotation. A rolling cache (sink chunks + a window of recent
chunks) evicts the oldest window chunk and re-indexes the remaining window one chunk earlier in time by
rotating its keys by -frames_per_chunk (rotations compose), so that positions seen at inference never
grow past (sink + window + 1) chunks, however long the rollout. With `reindex=False` (`sample.positions:
absolute`) nothing is re-rotated and each chunk keeps its index in the rollout: rotary attention depends only on
the distance between a query and a key, so this changes only the distance to the sinks (which grows without
bound) and, through rounding, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

# --------------------------------------------------------------------------------------------------
# 3-D rotary positions (time, height, width)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """How many of a head's dims rotate with time, height and width (each even)."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def rope_angles(pos_t: Tensor, pos_h: Tensor, pos_w: Tensor, head_dim: int, theta: float,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """Angles (N, head_dim / 2) for tokens at integer positions (N,) each (computed in float64, returned in
    `dtype`; Wan keeps float64 so that cos/sin round once, as diffusers' precomputed tables do)."""
    parts = []
    for pos, dims in zip((pos_t, pos_h, pos_w), rope_split(head_dim)):
        inv_freq = theta ** (-torch.arange(0, dims, 2, dtype=torch.float64, device=pos.device) / dims)
        parts.append(pos.double()[:, None] * inv_freq[None, :])
    return torch.cat(parts, dim=-1).to(dtype)


def apply_rope(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x (B, H, N, Dh) by angles (N, Dh/2)."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


def token_positions(frame_pos: Tensor, grid: int | tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """(t, h, w) integer positions of every token of frames at temporal positions frame_pos (T,);
    grid: patches per side, or (rows, columns) for non-square frames."""
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    hh, ww = torch.meshgrid(torch.arange(gh, device=frame_pos.device), torch.arange(gw, device=frame_pos.device),
                            indexing="ij")
    T = frame_pos.shape[0]
    pos_t = frame_pos.to(torch.long).repeat_interleave(gh * gw)
    return pos_t, hh.flatten().repeat(T).to(frame_pos.device), ww.flatten().repeat(T).to(frame_pos.device)


# --------------------------------------------------------------------------------------------------
# Masks (True = may attend)


def chunk_causal_mask(chunk_ids: Tensor) -> Tensor:
    """Block-causal mask (L, L) for tokens with chunk index chunk_ids (L,): a chunk sees itself and earlier."""
    return chunk_ids[:, None] >= chunk_ids[None, :]


def teacher_forcing_mask(num_chunks: int, tokens_per_chunk: int) -> Tensor:
    """Mask for the stage-1 sequence [clean chunks 0..K-2][noisy chunks 0..K-1] (K = num_chunks).

    Clean chunk j sees clean chunks <= j; noisy chunk i sees clean chunks < i and itself. (The last clean
    chunk is left out of the sequence: no noisy chunk may see it.)
    """
    clean = torch.arange(num_chunks - 1).repeat_interleave(tokens_per_chunk)
    noisy = torch.arange(num_chunks).repeat_interleave(tokens_per_chunk)
    top = torch.cat([clean[:, None] >= clean[None, :], torch.zeros(len(clean), len(noisy), dtype=torch.bool)], 1)
    bottom = torch.cat([noisy[:, None] > clean[None, :], noisy[:, None] == noisy[None, :]], 1)
    return torch.cat([top, bottom], dim=0)


FLEX_BLOCK = 128  # FlexAttention's sparse block size (tokens per q and kv block)


@dataclass(frozen=True)
class ChunkMask:
    """A structured chunk mask as a description, so that no (L, L) tensor is needed to build a block mask.

    kind "causal": block-causal over `num_chunks` chunks (a chunk sees itself and earlier);
    kind "teacher_forcing": [clean chunks 0..K-2][noisy chunks 0..K-1] as `teacher_forcing_mask` (K = num_chunks).
    Both are piecewise constant over runs of `tokens_per_chunk` tokens ("segments"): the mask between two tokens
    depends only on their segments, which is what `block_mask` uses.
    """

    kind: str  # "causal" or "teacher_forcing"
    tokens_per_chunk: int
    num_chunks: int  # chunks of the sequence ("causal") or K, the noisy chunks ("teacher_forcing")
    length: int = 0  # tokens (0 = all chunks full); "causal" with a partial last chunk: the full mask's corner

    def __post_init__(self):
        if self.kind not in ("causal", "teacher_forcing"):
            raise ValueError(f"ChunkMask kind must be 'causal' or 'teacher_forcing', got '{self.kind}'")

    @property
    def segments(self) -> int:
        """Runs of tokens_per_chunk tokens: the chunks, clean and noisy ones for teacher forcing."""
        return self.num_chunks if self.kind == "causal" else 2 * self.num_chunks - 1

    @property
    def L(self) -> int:
        return self.length or self.segments * self.tokens_per_chunk

    def mask_mod(self, b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        """FlexAttention's mask_mod: may token q attend to token kv (index tensors, elementwise ops only)."""
        n = self.tokens_per_chunk
        if self.kind == "causal":
            return q // n >= kv // n
        n_clean = (self.num_chunks - 1) * n
        clean_q, clean_k = q < n_clean, kv < n_clean
        qc = torch.where(clean_q, q, q - n_clean) // n  # the chunk index within its half
        kc = torch.where(clean_k, kv, kv - n_clean) // n
        noisy_sees = (clean_k & (kc < qc)) | (~clean_k & (kc == qc))
        return (clean_q & clean_k & (kc <= qc)) | (~clean_q & noisy_sees)

    def dense(self, device=None) -> Tensor:
        """The boolean (L, L) mask (the SDPA path), the very tensor the dense helpers build."""
        if self.kind == "causal":
            return chunk_causal_mask(torch.arange(self.L, device=device) // self.tokens_per_chunk)
        return teacher_forcing_mask(self.num_chunks, self.tokens_per_chunk).to(device)

    def block_counts(self, device=None, block: int = FLEX_BLOCK) -> Tensor:
        """(nq, nk) allowed (q, kv) pairs in each block x block tile, the padding past L counting as masked
        (as `create_block_mask` pads): O @ M @ O^T with O (n_blocks, segments) the tokens each segment has in
        each block and M the (segments, segments) mask. float64 counts are exact far beyond 2^31 tokens."""
        S, n, L = self.segments, self.tokens_per_chunk, self.L
        seg_mask = ChunkMask(self.kind, 1, self.num_chunks).dense(device).double()
        blocks = -(-L // block)
        b0 = torch.arange(blocks, device=device, dtype=torch.float64)[:, None] * block
        s0 = torch.arange(S, device=device, dtype=torch.float64)[None] * n
        overlap = (torch.minimum(b0 + block, (s0 + n).clamp(max=L)) - torch.maximum(b0, s0)).clamp(min=0)
        return overlap @ seg_mask @ overlap.T

    def block_mask(self, device=None) -> BlockMask:
        """The FlexAttention block mask, from block-level counts: no (L, L) tensor is ever made. Full tiles skip
        the mask_mod, partial ones evaluate it, empty ones are skipped."""
        counts = self.block_counts(device)
        area = FLEX_BLOCK * FLEX_BLOCK
        partial, full = ordered_blocks((counts > 0) & (counts < area)), ordered_blocks(counts == area)
        return BlockMask.from_kv_blocks(*partial, *full, BLOCK_SIZE=FLEX_BLOCK, mask_mod=self.mask_mod,
                                        seq_lengths=(self.L, self.L))


def ordered_blocks(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean (nq, nk) tiles -> (1, 1, nq) counts and (1, 1, nq, nk) kv indices, the marked ones first in
    ascending order (the layout `create_block_mask` makes)."""
    tiles = tiles.to(torch.int32)[None, None]
    return tiles.sum(-1, dtype=torch.int32), torch.argsort(tiles, dim=-1, descending=True, stable=True).to(torch.int32)


def default_chunk_mask(cfg, frames: int, tokens_per_frame: int) -> ChunkMask | None:
    """The model's own mask per `cfg.attention` as a description: block-causal over chunks, or None."""
    if cfg.attention == "bidirectional":
        return None
    fpc = cfg.frames_per_chunk
    return ChunkMask("causal", fpc * tokens_per_frame, -(-frames // fpc), frames * tokens_per_frame)


def default_mask(cfg, frames: int, tokens_per_frame: int, device) -> Tensor | None:
    """The model's own mask per `cfg.attention`: block-causal over chunks of `frames_per_chunk`, or None."""
    mask = default_chunk_mask(cfg, frames, tokens_per_frame)
    return None if mask is None else mask.dense(device)


def block_mask(mask: Tensor) -> BlockMask:
    """A boolean (L, L) mask as a FlexAttention block mask: fully masked 128-token blocks are skipped, which
    is where block-causal and teacher-forcing masks save compute. (A caller's own mask; the structured ones
    go through `ChunkMask.block_mask`, which needs no (L, L) tensor.)"""
    L = mask.shape[0]
    return create_block_mask(lambda b, h, q, k: mask[q, k], None, None, L, L, device=mask.device)


FLEX = {"enabled": True}  # `use_flex(False)`: SDPA with the boolean mask on CUDA too (train.flex_attention)


def use_flex(enabled: bool) -> None:
    FLEX["enabled"] = bool(enabled)


def flex_mask(mask: Tensor | ChunkMask | None, device=None) -> Tensor | BlockMask | None:
    """The mask attention runs with: a block mask on CUDA (FlexAttention), the boolean mask elsewhere (SDPA).
    A ChunkMask becomes one or the other on `device`; a boolean tensor stays where it is."""
    if isinstance(mask, ChunkMask):
        device = torch.device(device if device is not None else "cpu")
        return mask.block_mask(device) if device.type == "cuda" and FLEX["enabled"] else mask.dense(device)
    return block_mask(mask) if mask is not None and mask.is_cuda and FLEX["enabled"] else mask


_compiled_flex = None


def run_flex(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask) -> Tensor:
    """FlexAttention, compiled once per process on CUDA (the fused kernel); the eager reference elsewhere."""
    global _compiled_flex
    if not q.is_cuda:
        return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


def attention_inputs(cfg, tokens_per_frame: int, frames: int, device, mask, frame_pos: Tensor | None,
                     kv_cache: "KVCache | None", commit: bool) -> tuple[Tensor | ChunkMask | None, Tensor]:
    """The mask (a tensor or ChunkMask as given, the model's ChunkMask for "default") and the frames' temporal
    positions of a forward over `frames` frames (see the models' forward); `flex_mask` makes the mask runnable."""
    if kv_cache is not None:
        if frames != cfg.frames_per_chunk:
            raise ValueError(f"with a KV cache, x must be one chunk of {cfg.frames_per_chunk} frames, got {frames}")
        mask = None
        if commit and kv_cache.num_chunks >= kv_cache.capacity:
            raise RuntimeError("KV cache is full: call kv_cache.make_room() before generating the next chunk")
        if frame_pos is None:  # the chunk sits right after the cached ones
            start = kv_cache.next_frame_position()
            frame_pos = torch.arange(start, start + frames, device=device)
    elif isinstance(mask, str):  # "default": described, made dense or a block mask by `flex_mask`
        mask = default_chunk_mask(cfg, frames, tokens_per_frame)
    if frame_pos is None:
        frame_pos = torch.arange(frames, device=device)
    return mask, frame_pos


# --------------------------------------------------------------------------------------------------
# KV cache


@dataclass
class KVCache:
    """Preallocated keys/values of committed chunks for all layers.

    k, v: (L, B, heads, capacity * tokens_per_chunk, head_dim). Chunk slots 0..num_chunks-1 hold the
    sink chunks then the window, in temporal order; slot s is at temporal position s * frames_per_chunk.
    """

    k: Tensor
    v: Tensor
    tokens_per_chunk: int
    frames_per_chunk: int
    sink_chunks: int
    window_chunks: int  # 0 = never evict (capacity must cover the whole rollout)
    head_dim: int
    rope_theta: float
    reindex: bool = True  # at an eviction, move the window's positions one chunk earlier (False: absolute indices)
    num_chunks: int = 0  # slots in use
    total_chunks: int = 0  # chunks committed since reset (the absolute index of the next chunk)
    context: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # per layer: cross-attention (k, v) of
    #   the text (Wan), computed once per rollout: a cache serves one prompt batch, from allocate to reset

    @classmethod
    def allocate(cls, model_cfg, batch: int, max_chunks: int, sink_chunks: int = 0, window_chunks: int = 0,
                 device=None, dtype=torch.float32, reindex: bool = True) -> "KVCache":
        """Size the cache from the model config: `max_chunks` slots, or sink + window when rolling."""
        rows, cols = model_cfg.grid_shape
        tpc = rows * cols * model_cfg.frames_per_chunk
        head_dim = model_cfg.dim // model_cfg.heads
        if window_chunks > 0:
            capacity = sink_chunks + window_chunks
        else:
            capacity, sink_chunks = max_chunks, 0
        shape = (model_cfg.depth, batch, model_cfg.heads, capacity * tpc, head_dim)
        return cls(k=torch.zeros(shape, device=device, dtype=dtype), v=torch.zeros(shape, device=device, dtype=dtype),
                   tokens_per_chunk=tpc, frames_per_chunk=model_cfg.frames_per_chunk, sink_chunks=sink_chunks,
                   window_chunks=window_chunks, head_dim=head_dim, rope_theta=model_cfg.rope_theta, reindex=reindex)

    @property
    def capacity(self) -> int:
        return self.k.shape[3] // self.tokens_per_chunk

    @property
    def length(self) -> int:
        """Number of valid cached tokens."""
        return self.num_chunks * self.tokens_per_chunk

    def reset(self) -> None:
        self.num_chunks = 0
        self.total_chunks = 0
        self.context.clear()

    def layer(self, i: int) -> tuple[Tensor, Tensor]:
        """Valid (k, v) of layer i: (B, heads, length, head_dim) views."""
        return self.k[i, :, :, : self.length], self.v[i, :, :, : self.length]

    def snapshot(self) -> "KVCache":
        """A read-only cache of the chunks committed so far, for a forward recomputed later: activation
        checkpointing recomputes in backward, after later chunks were committed, and must read exactly the keys
        the forward read. The valid slots are views (commits only append past them, so they stay as they are),
        except in a rolling cache, whose window `make_room` moves in place: there they are cloned (as much memory
        as the keys an uncheckpointed forward keeps for backward). The snapshot is full, so it refuses commits;
        it is valid until the cache is reset and reused."""
        k, v = self.k[:, :, :, : self.length], self.v[:, :, :, : self.length]
        if self.window_chunks > 0:
            k, v = k.clone(), v.clone()
        return replace(self, k=k, v=v)  # the same text context list (written once, at the first forward)

    def next_frame_position(self) -> int:
        """Temporal position of the first frame of the next chunk: its slot's, or its index in the rollout."""
        return (self.num_chunks if self.reindex else self.total_chunks) * self.frames_per_chunk

    def make_room(self) -> None:
        """Before a commit: if full, evict the oldest window chunk and move the window one slot down (and, when
        re-indexing, one chunk earlier in time)."""
        if self.num_chunks < self.capacity:
            return
        if self.window_chunks <= 0:
            raise RuntimeError(
                f"KV cache is full ({self.capacity} chunks) and has no rolling window; "
                "allocate more chunks or set sample.window_chunks"
            )
        tpc, start = self.tokens_per_chunk, self.sink_chunks * self.tokens_per_chunk
        end = self.length
        for buf, rotate in ((self.k, True), (self.v, False)):
            moved = buf[:, :, :, start + tpc : end].clone()
            if rotate and self.reindex:  # re-index the window one chunk earlier: rotate keys by -fpc in time
                moved = self._shift_time(moved, -self.frames_per_chunk)
            buf[:, :, :, start : end - tpc] = moved
        self.num_chunks -= 1

    def _shift_time(self, keys: Tensor, delta: int) -> Tensor:
        n = keys.shape[3]
        zeros = torch.zeros(n, dtype=torch.long, device=keys.device)
        angles = rope_angles(torch.full((n,), delta, device=keys.device), zeros, zeros, self.head_dim, self.rope_theta)
        L, B, H, N, D = keys.shape
        return apply_rope(keys.reshape(L * B, H, N, D).float(), angles).reshape(L, B, H, N, D).to(keys.dtype)

    def write(self, i: int, k: Tensor, v: Tensor) -> None:
        """Write one chunk's (B, heads, tokens_per_chunk, head_dim) keys/values of layer i into the next slot."""
        s = self.length
        self.k[i, :, :, s : s + self.tokens_per_chunk] = k
        self.v[i, :, :, s : s + self.tokens_per_chunk] = v

    def advance(self) -> None:
        """After all layers wrote: the chunk is committed."""
        self.num_chunks += 1
        self.total_chunks += 1


def cache_dtype(name: str, device) -> torch.dtype:
    """The KV cache's dtype for `sample.kv_cache_dtype` on `device` ("auto": autocast's dtype when autocast
    is on there, fp32 otherwise)."""
    if name == "auto":
        kind = torch.device(device if device is not None else "cpu").type
        return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


# --------------------------------------------------------------------------------------------------
# Attention


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | BlockMask | None = None, cache: KVCache | None = None,
           layer: int = 0, commit: bool = False) -> Tensor:
    """Softmax attention of (B, heads, L, head_dim) q, k, v (k already rotated). With a cache, the chunk also
    attends to every cached token (and `commit` writes its k, v first); otherwise `mask` applies."""
    if cache is not None:
        if commit:
            cache.write(layer, k, v)
            ck, cv = cache.k[layer, :, :, : cache.length + k.shape[2]], cache.v[layer, :, :, : cache.length + k.shape[2]]
        else:
            past_k, past_v = cache.layer(layer)
            ck, cv = torch.cat([past_k.to(k.dtype), k], dim=2), torch.cat([past_v.to(v.dtype), v], dim=2)
        return F.scaled_dot_product_attention(q, ck.to(q.dtype), cv.to(q.dtype))
    if isinstance(mask, BlockMask):
        return run_flex(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# --------------------------------------------------------------------------------------------------
# Query/key normalisation


class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` that also takes bf16 activations with its fp32 gain, as under bf16 autocast.

    Autocast casts the inputs of matmuls, not this gain, so q/k arrive in bf16 while the weight stays fp32.
    `torch.rms_norm` then falls back from its fused kernel to an fp32 composite (and warns "Mismatch dtype
    between input and weight"). Here that case normalises in fp32 explicitly (input upcast, statistics and
    gain in fp32, as the models' LayerNorms compute under autocast) and returns the input's dtype: the same
    numbers as the fallback, forward and backward, without the warning. Equal dtypes (every fp32 run) take
    `nn.RMSNorm` unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        if self.weight is None or x.dtype == self.weight.dtype:
            return super().forward(x)
        return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).to(x.dtype)


# --------------------------------------------------------------------------------------------------
# Attention layers of the DiT


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions, an optional mask and an optional KV cache."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(dim // heads, eps=1e-6)  # QK-norm keeps logits tame in bf16
        self.k_norm = RMSNorm(dim // heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, angles: Tensor, mask: Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0, commit: bool = False) -> Tensor:
        """x (B, L, D) -> (B, L, D). With a cache, x is one chunk and also attends to every cached token."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        q, k = apply_rope(self.q_norm(q), angles), apply_rope(self.k_norm(k), angles)
        out = attend(q, k, v, mask, cache, layer, commit)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class CrossAttention(nn.Module):
    """Multi-head attention of video tokens (queries) to a text context (keys, values): no positions and no mask,
    every caption token is attended to, its zero padding included (as Wan attends to its zero-padded UMT5
    embeddings). Keys and values are computed from the context at every call (nothing is cached)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = RMSNorm(dim // heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x (B, L, D) video tokens, context (B, S, D) embedded text -> (B, L, D)."""
        q = rearrange(self.q(x), "b l (h d) -> b h l d", h=self.heads)
        k, v = rearrange(self.kv(context), "b s (two h d) -> two b h s d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k).to(q.dtype), v.to(q.dtype))
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))
