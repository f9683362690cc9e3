"""The foresight predictor phi: maps the generator's causal hidden states onto the foresight encoder's
features. A few DiT-style layers at the generator's width with full attention *inside a chunk*, adaLN
gates zero-initialised (each layer is the identity at initialisation), then a linear map to the encoder's
width (initialised to the identity when the widths match). It exists only during training.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from .attention import rope_angles, token_positions
from .dit import Block, TimestepEmbedder


class Predictor(nn.Module):
    def __init__(self, dim: int, encoder_dim: int, depth: int, heads: int, frames_per_chunk: int, grid: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.fpc, self.grid, self.heads = frames_per_chunk, grid, heads
        self.t_embed = TimestepEmbedder(dim)  # conditioned on the exit step's noise level
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.out = nn.Linear(dim, encoder_dim)
        for block in self.blocks:  # adaLN-Zero: gates (and shifts/scales) start at 0 -> identity layers
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.out.bias)
        if dim == encoder_dim:
            with torch.no_grad():
                self.out.weight.copy_(torch.eye(dim))

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        """h: (B, T, N, D) student features; t: (B,) noise level of the exit step. Returns (B, T, N, D_enc)."""
        B, T, N, D = h.shape
        x = rearrange(h, "b (k f) n d -> (b k) (f n) d", f=self.fpc)  # one sequence per chunk
        c = self.t_embed(t).repeat_interleave(T // self.fpc, dim=0)[:, None].expand(-1, self.fpc, -1)
        angles = rope_angles(*token_positions(torch.arange(self.fpc, device=h.device), self.grid), D // self.heads, 10000.0)
        for block in self.blocks:
            x = block(x, c, self.fpc, angles, None, None, 0, False)
        return rearrange(self.out(x), "(b k) (f n) e -> b (k f) n e", b=B, f=self.fpc)
