"""Optimisation pieces shared by every stage: the LR schedule, EMA, one guarded optimiser step."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import distributed as dist
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
    """In place; each rank averages the parameters it holds (its shards, when FSDP shards both alike)."""
    ema_p, p = [dist.local(t) for t in ema.parameters()], [dist.local(t) for t in model.parameters()]
    torch._foreach_lerp_(ema_p, p, 1 - decay)


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or infinite; the message names the step, the stage and the term."""


def check_finite(terms: dict[str, torch.Tensor | float], step: int, stage: str, policy: str = "stop") -> bool:
    """True when every term is finite. Otherwise raise NonFiniteError (policy "stop"; nothing is saved, so the
    last checkpoint stays the last good one) or return False (policy "skip": the caller skips the update)."""
    values = {name: torch.as_tensor(v).detach() for name, v in terms.items()}
    bad = {name: float(v) for name, v in values.items() if not bool(torch.isfinite(v).all())}
    if not bad:
        return True
    if policy == "skip":
        return False
    what = ", ".join(f"{name} = {value}" for name, value in bad.items())
    raise NonFiniteError(f"non-finite {what} at step {step} of stage {stage}; the last checkpoint is kept. Lower "
                         "train.lr, check the data, or set train.on_nonfinite=skip to skip such steps")


def optimize(opt: torch.optim.Optimizer, model: nn.Module, loss: torch.Tensor, clip: float, *, step: int = 0,
             stage: str = "", what: str = "loss", policy: str = "stop") -> float | None:
    """Backward, clip, step. Returns the gradient norm before clipping, or None when a non-finite gradient
    made the step be skipped (policy "skip"; "stop" raises NonFiniteError)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return clip_and_step(opt, model, clip, step=step, stage=stage, what=what, policy=policy)


def clip_and_step(opt: torch.optim.Optimizer, model: nn.Module, clip: float, *, step: int = 0, stage: str = "",
                  what: str = "loss", policy: str = "stop") -> float | None:
    """`optimize` after the backward pass(es): clip the accumulated gradients, step. Same return value."""
    grad_norm = dist.full(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))  # FSDP: the whole norm
    if not check_finite({f"gradient norm of {what}": grad_norm}, step, stage, policy):
        opt.zero_grad(set_to_none=True)
        return None
    opt.step()
    return grad_norm.item()


def part_grad_norms(model: nn.Module, parts: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each loss part's own gradient norm on `model`'s parameters, and the cosine between the first two parts'
    gradients (diagnostic: how much of the total gradient a term is, and whether it agrees with the main loss).
    The graph is kept, so the caller's backward pass of the summed loss is unchanged."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = {}
    for name, part in parts.items():
        grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
        flat[name] = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float()
                                for g, p in zip(grads, params)])
    out = {f"grad_norm[{name}]": float(v.norm()) for name, v in flat.items()}
    if len(flat) >= 2:
        a, b = list(flat.values())[:2]
        out["grad_cos"] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return out
