"""Fused attention as a GPU runs it, for plans on fake tensors.

On a GPU, attention runs in a fused kernel (FlashAttention through SDPA, or FlexAttention with a block mask): it
keeps the output and one log-sum-exp per query row for backward, never the L x S score matrix, and a block mask
skips the blocks it masks out. The CPU's SDPA with a boolean mask materialises the scores instead. A plan of a GPU
run therefore routes attention through `fused_attention`, an operator with exactly the kernel's memory (its fake
implementation allocates what the kernel allocates) and FLOPs (torch's SDPA formulas, times the fraction of
(query, key) blocks the mask keeps). Its real implementation is the SDPA math, for tests at toy size.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count


@torch.library.custom_op("mirai_plan::fused_attention", mutates_args=())
def fused_attention(q: Tensor, k: Tensor, v: Tensor, density: float) -> tuple[Tensor, Tensor]:
    """(B, H, L, D) q, k, v -> output (B, H, L, D) and log-sum-exp (B, H, L) in fp32 (unmasked math here)."""
    scores = (q.float() @ k.float().transpose(-1, -2)) / q.shape[-1] ** 0.5
    return (scores.softmax(-1) @ v.float()).to(q.dtype), scores.logsumexp(-1)


@fused_attention.register_fake
def _(q, k, v, density):
    return torch.empty_like(q), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("mirai_plan::fused_attention_backward", mutates_args=())
def fused_attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                             density: float) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax attention's gradients from the saved log-sum-exp, as the fused kernel recomputes them."""
    scale = q.shape[-1] ** -0.5
    p = ((q.float() @ k.float().transpose(-1, -2)) * scale - lse[..., None]).exp()  # the probabilities (B, H, L, S)
    g = grad.float()
    dv = p.transpose(-1, -2) @ g
    ds = p * (g @ v.float().transpose(-1, -2) - (g * out.float()).sum(-1, keepdim=True))
    dq, dk = (ds @ k.float()) * scale, (ds.transpose(-1, -2) @ q.float()) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@fused_attention_backward.register_fake
def _(grad, q, k, v, out, lse, density):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx, inputs, output):
    q, k, v, density = inputs
    ctx.save_for_backward(q, k, v, *output)  # what FlashAttention keeps: inputs, output, log-sum-exp
    ctx.density = density


def _backward(ctx, grad, _grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    return (*fused_attention_backward(grad, q, k, v, out, lse, ctx.density), None)


fused_attention.register_autograd(_backward, setup_context=_setup)


@register_flop_formula(torch.ops.mirai_plan.fused_attention)
def _forward_flops(q_shape, k_shape, v_shape, density, *args, **kwargs) -> int:
    return int(sdpa_flop_count(q_shape, k_shape, v_shape) * density)


@register_flop_formula(torch.ops.mirai_plan.fused_attention_backward)
def _backward_flops(grad_shape, q_shape, k_shape, v_shape, saved_out_shape, lse_shape, density, *args, **kwargs) -> int:
    return int(sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape) * density)


def planned_sdpa(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, density: float = 1.0, **kwargs) -> Tensor:
    """Drop-in for `F.scaled_dot_product_attention` in a GPU plan: the fused kernel's memory and FLOPs."""
    return fused_attention(q, k, v.to(q.dtype), float(density))[0]
