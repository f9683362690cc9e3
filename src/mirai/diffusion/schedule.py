"""Rectified-flow noise schedule (Liu et al. 2022; Esser et al. 2024 for the shift and logit-normal t).

x_t = (1 - t) x_0 + t eps, t in [0, 1] (t = 1 is pure noise). The model predicts the velocity
v = dx_t/dt = eps - x_0, so x_0 = x_t - t v. The schedule never calls the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ScheduleConfig
from ..rng import rand, randn


def _expand(t: Tensor | float, x: Tensor) -> Tensor | float:
    """Per-frame t (B, T) -> (B, T, 1, 1, 1) to broadcast against x (B, T, C, H, W); a number stays a number."""
    if not isinstance(t, Tensor):
        return t
    return t.reshape(*t.shape, *([1] * (x.dim() - t.dim())))


@dataclass
class FlowSchedule:
    shift: float = 1.0
    train_t: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    @classmethod
    def from_config(cls, cfg: ScheduleConfig) -> "FlowSchedule":
        return cls(shift=cfg.shift, train_t=cfg.train_t, logit_mean=cfg.logit_mean, logit_std=cfg.logit_std)

    # ------------------------------------------------------------------ noising
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | float) -> Tensor:
        """The path x_t = (1 - t) x0 + t eps; t per frame (B, T) or one number."""
        t = _expand(t, x0)
        return (1 - t) * x0 + t * noise

    @staticmethod
    def velocity(x0: Tensor, noise: Tensor) -> Tensor:
        """Flow-matching regression target."""
        return noise - x0

    def x0_from_velocity(self, x_t: Tensor, v: Tensor, t: Tensor | float) -> Tensor:
        """The clean estimate x0 = x_t - t v; t per frame (B, T) or one number."""
        return x_t - _expand(t, x_t) * v

    def shift_t(self, t: Tensor) -> Tensor:
        """Timestep shift (SD3 eq. 23): t' = s t / (1 + (s - 1) t)."""
        s = self.shift
        return s * t / (1 + (s - 1) * t)

    def sample_t(self, shape: tuple[int, ...], generator: torch.Generator | None = None, device=None) -> Tensor:
        """Training noise levels, logit-normal or uniform, then shifted."""
        if self.train_t == "logit_normal":
            t = torch.sigmoid(randn(shape, generator, device) * self.logit_std + self.logit_mean)
        else:
            t = rand(shape, generator, device)
        return self.shift_t(t)

    # ------------------------------------------------------------------ inference steps
    def inference_steps(self, steps: int = 4, timesteps: list[float] | None = None) -> Tensor:
        """Descending noise levels t_0 = 1 > ... > t_{n-1}, then a final 0, shifted: (n + 1,).

        `timesteps` on a 0..1000 scale (e.g. [1000, 750, 500, 250]) overrides `steps`.
        """
        if timesteps:
            t = torch.tensor([float(x) / 1000 for x in timesteps], dtype=torch.float32)
            if not torch.all(t[1:] < t[:-1]) or t.max() > 1 or t.min() <= 0:
                raise ValueError(f"timesteps must be strictly decreasing within (0, 1000], got {timesteps}")
        else:
            if steps < 1:
                raise ValueError(f"steps must be >= 1, got {steps}")
            t = torch.linspace(1, 0, steps + 1)[:-1]
        return torch.cat([self.shift_t(t), torch.zeros(1)])
