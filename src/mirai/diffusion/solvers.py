"""Solver steps from noise level t to t_next < t, given the model's velocity v at (x, t).

- "euler": the flow ODE dx/dt = v, one explicit Euler step x + (t_next - t) v (many-step sampling);
- "renoise": the few-step sampler of consistency models / DMD students (Self-Forcing): jump to the clean
  estimate x0 = x - t v, then put it back on the path at t_next with fresh noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..rng import randn
from .schedule import FlowSchedule

SOLVERS = ("euler", "renoise")


def euler_step(x: Tensor, v: Tensor, t: float, t_next: float) -> Tensor:
    return x + (t_next - t) * v


def renoise_step(schedule: FlowSchedule, x: Tensor, v: Tensor, t: float, t_next: float,
                 generator: torch.Generator | None) -> Tensor:
    x0 = schedule.x0_from_velocity(x, v, t)
    if t_next <= 0:
        return x0
    return schedule.add_noise(x0, randn(x0.shape, generator, x0.device, x0.dtype), t_next)


def solver_step(schedule: FlowSchedule, solver: str, x: Tensor, v: Tensor, t: float, t_next: float,
                generator: torch.Generator | None) -> Tensor:
    """One step of `solver` ("euler" or "renoise")."""
    if solver == "euler":
        return euler_step(x, v, t, t_next)
    if solver == "renoise":
        return renoise_step(schedule, x, v, t, t_next, generator)
    raise ValueError(f"unknown solver '{solver}'; choose one of {SOLVERS}")
