"""Optimisation pieces shared by every stage: the LR schedule, EMA, one guarded optimiser step."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def ema_decay_at(update: int, tc: TrainConfig) -> float:
    """EMA decay with a warm-up, min(decay, (1 + s) / (10 + s)): early averages are not dragged to the init."""
    if update < tc.ema_start:
        return 0.0
    s = update - tc.ema_start
    return min(tc.ema_decay, (1 + s) / (10 + s))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_p, p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, p, 1 - decay)


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the learning rate or check the data")


def optimize(opt: torch.optim.Optimizer, model: nn.Module, loss: torch.Tensor, clip: float) -> float:
    """Backward, clip, step. Returns the gradient norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return grad_norm.item()
