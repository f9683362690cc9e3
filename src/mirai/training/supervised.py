"""The stages that regress the generator on data with one loss per step:

- `TeacherStage` (objective "bidirectional"): the bidirectional teacher, full-sequence flow matching;
- `TeacherForcingStage` ("teacher_forcing"): stage 1 of the causal generator (Causal-Forcing's AR diffusion);
- `ODEStage` ("ode"): stage 2, causal ODE distillation on the AR teacher's trajectories (written first,
  resumably, by `mirai.training.distill`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from .. import distributed as dist
from ..config import Config
from ..data.datasets import build_dataset
from ..device import autocast_context
from .distill import ODEPairDataset, generate_pairs
from .losses import bidirectional_loss, drop_prompt, ode_regression_loss, teacher_forcing_loss
from .optim import check_finite, clip_and_step, optimize
from .stage import Stage, StepOutput, init_generator


class SupervisedStage(Stage):
    """One generator, one AdamW, one loss per step (`loss`, defined by the subclasses)."""

    def __init__(self, cfg: Config, dataset=None):
        super().__init__(cfg)
        tc = cfg.train
        self.dataset = dataset if dataset is not None else build_dataset(cfg)
        self.sample_dataset = self.dataset
        self.model = init_generator(cfg).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
        self.modules = {"model": self.model, "ema": self.ema}
        self.optimizers = {"model": self.opt}
        self.forward_model = torch.compile(self.model) if tc.compile else self.model

    def loss(self, batch: dict[str, Tensor], gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def step(self, batch: dict[str, Tensor], step: int, gen: torch.Generator) -> StepOutput:
        tc = self.cfg.train
        self.model.train()
        accum = self.cfg.dist.grad_accum
        if accum == 1:
            with autocast_context(tc.precision, self.device):
                loss = self.loss(batch, gen)
            if not check_finite({"loss": dist.mean(loss)}, step, self.name, tc.on_nonfinite):
                return StepOutput({"skipped_nonfinite": 1.0}, log=True)
            grad_norm = optimize(self.opt, self.model, loss, tc.grad_clip, step=step, stage=self.name,
                                 policy=tc.on_nonfinite)
        else:
            loss, grad_norm = self.accumulated_step(batch, step, gen, accum)
            if loss is None:
                return StepOutput({"skipped_nonfinite": 1.0}, log=True)
        if grad_norm is None:
            return StepOutput({"loss": loss.item(), "skipped_nonfinite": 1.0}, log=True)
        return StepOutput({"loss": loss.item(), "grad_norm": grad_norm}, generator_update=step)

    def accumulated_step(self, batch: dict[str, Tensor], step: int, gen: torch.Generator,
                         accum: int) -> tuple[Tensor | None, float | None]:
        """One update from `accum` micro-batches: each backward adds loss / accum to the gradients (reduced
        across ranks at the last one). Micro-batch m replays the step's draws from the same generator state and
        keeps its own rows of them, so the update is that of the whole batch at once. Returns (the mean loss,
        the gradient norm), or (None, None) when a non-finite loss made the step be skipped."""
        tc = self.cfg.train
        rows = next(iter(batch.values())).shape[0] // accum
        first, total = getattr(gen, "first_row", 0), getattr(gen, "total_rows", 0) or rows * accum
        start = gen.get_state()
        self.opt.zero_grad(set_to_none=True)
        losses = []
        for m in range(accum):
            micro = {k: v[m * rows : (m + 1) * rows] for k, v in batch.items()}
            gen.set_state(start)
            with gen.rows(first + m * rows, total), dist.gradient_sync(self.forward_model, m == accum - 1):
                with autocast_context(tc.precision, self.device):
                    loss = self.loss(micro, gen)
                if not check_finite({"loss": dist.mean(loss)}, step, self.name, tc.on_nonfinite):
                    self.opt.zero_grad(set_to_none=True)
                    return None, None
                (loss / accum).backward()
            losses.append(loss.detach())
        grad_norm = clip_and_step(self.opt, self.model, tc.grad_clip, step=step, stage=self.name,
                                  policy=tc.on_nonfinite)
        return torch.stack(losses).mean(), grad_norm

    def dropped_prompt(self, batch: dict[str, Tensor], gen: torch.Generator) -> Tensor | None:
        """The batch's prompts, a random `train.prompt_dropout` fraction replaced by "no prompt" (classifier-free
        guidance): zeros for the structured prompt, the empty caption's embedding for captions."""
        return drop_prompt(self.prompt_of(batch), self.cfg.train.prompt_dropout, gen, self.uncond)


class TeacherStage(SupervisedStage):
    name = "bidirectional"

    def loss(self, batch, gen):
        tc = self.cfg.train
        prompt = self.dropped_prompt(batch, gen)
        return bidirectional_loss(self.forward_model, self.schedule, batch["video"], prompt, gen, tc.per_chunk_t,
                                  tc.loss_t_floor)


class TeacherForcingStage(SupervisedStage):
    name = "teacher_forcing"

    def loss(self, batch, gen):
        tc = self.cfg.train
        prompt = self.dropped_prompt(batch, gen)
        return teacher_forcing_loss(self.forward_model, self.schedule, batch["video"], prompt, gen, tc.per_chunk_t,
                                    tc.context_noise_max, tc.loss_t_floor)


class ODEStage(SupervisedStage):
    """The student learns the teacher's conditional trajectories: prompts are kept (no dropout)."""

    name = "ode"

    def __init__(self, cfg: Config, quiet: bool = False, pairs=None):
        """pairs: a dataset of ODE pairs (with `.timesteps`); None = the teacher's, generated first (resumable)."""
        if pairs is None:
            pairs = ODEPairDataset(generate_pairs(cfg, quiet))  # before the model: resumable, and the longest part
        super().__init__(cfg, dataset=pairs)
        self.sample_dataset = build_dataset(cfg)

    def loss(self, batch, gen):
        return ode_regression_loss(self.forward_model, batch["states"], batch["clean"], self.dataset.timesteps,
                                   self.prompt_of(batch), gen)
