"""Stage 3: self-rollout distribution matching distillation (Self-Forcing / Causal-Forcing, after DMD2).

The causal generator rolls a whole video out with its KV cache exactly as at inference; one exit step is
drawn per rollout and shared by all chunks, and gradients flow only through that step of each chunk.
The video is then judged by two bidirectional score models at a random noise level t:
- the real score: the frozen bidirectional teacher (with classifier-free guidance for prompts);
- the fake score: a critic initialised from the teacher and trained by flow matching on the generator's
  detached samples, `critic_updates_per_gen` times per generator update.
DMD's gradient on the sample is (fake_x0 - real_x0) / mean|x - real_x0| (DMD2 eq. 7 normalisation).

Other generator losses are composed onto the stage as `GeneratorTerm`s (Video-Mirai's foresight alignment
is one, see `mirai.training.foresight`): the stage adds their losses to the DMD loss and gives them a turn
after each generator update and on critic-only steps, without knowing what they are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .. import checkpoint as ckpt, distributed as dist
from ..config import Config, ConfigError
from ..data.datasets import build_dataset
from ..device import autocast_context
from ..diffusion.schedule import FlowSchedule
from ..references import load_reference
from ..rng import rand, randn
from ..sampling.guided import guided_velocity
from ..sampling.rollout import rollout_with_exit
from .losses import bidirectional_loss
from .optim import check_finite, optimize, part_grad_norms
from .stage import Stage, StepOutput, init_generator

# --------------------------------------------------------------------------------------------------
# Pure pieces (also used by the toy tests)


def dmd_gradient(x: Tensor, real_x0: Tensor, fake_x0: Tensor) -> Tensor:
    """The DMD direction for samples x (B, ...): descending it moves x from the fake towards the real."""
    dims = tuple(range(1, x.dim()))
    normalizer = (x - real_x0).abs().mean(dim=dims, keepdim=True).clamp_min(1e-6)
    return (fake_x0 - real_x0) / normalizer


def dmd_loss(x: Tensor, real_x0: Tensor, fake_x0: Tensor) -> tuple[Tensor, Tensor]:
    """A surrogate whose gradient w.r.t. x is the DMD gradient (up to the mean's 1/numel); and its norm."""
    grad = torch.nan_to_num(dmd_gradient(x.detach().float(), real_x0.float(), fake_x0.float()))
    loss = 0.5 * F.mse_loss(x.float(), (x.detach().float() - grad))
    return loss, grad.norm() / grad.shape[0] ** 0.5


@torch.no_grad()
def predict_x0(model: nn.Module, schedule: FlowSchedule, x_t: Tensor, t: Tensor, prompt: Tensor | None,
               cfg_scale: float = 1.0, uncond: Tensor | None = None) -> Tensor:
    """Clean estimate of a score model at per-frame noise t (B, T), with optional classifier-free guidance (away
    from `uncond`, the empty caption's embedding, for captions)."""
    v = guided_velocity(model, x_t, t, prompt, cfg_scale, uncond)
    return schedule.x0_from_velocity(x_t, v.float(), t)


def sample_dmd_t(B: int, T: int, cfg, generator: torch.Generator | None, device=None) -> Tensor:
    """One DMD noise level per video, broadcast to its frames: (B, T)."""
    t = cfg.t_min + (cfg.t_max - cfg.t_min) * rand((B, 1), generator, device)
    return t.expand(B, T)


def generator_dmd_loss(video: Tensor, teacher, critic, schedule, prompt, cfg, generator,
                       uncond: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """DMD loss of a generated video (B, T, C, H, W) that carries the exit-step gradient; the real score is guided
    away from `uncond` (captions: the empty caption's embedding)."""
    B, T = video.shape[:2]
    t = sample_dmd_t(B, T, cfg.dmd, generator, video.device)
    noise = randn(video.shape, generator, video.device)
    x_t = schedule.add_noise(video.detach(), noise, t)
    real = predict_x0(teacher, schedule, x_t, t, prompt, cfg.dmd.real_cfg_scale, uncond)
    fake = predict_x0(critic, schedule, x_t, t, prompt)
    return dmd_loss(video, real, fake)


# --------------------------------------------------------------------------------------------------
# Extra generator losses


@dataclass
class GeneratorRollout:
    """One self-rollout of a generator update, as the DMD stage hands it to its terms."""

    video: Tensor  # (B, T, C, H, W) clean estimates at the exit step, with gradient
    hidden: Tensor | None  # (B, T, N, D) generator tokens after the requested block at the exit step, or None
    prompt: Tensor | None  # (B, P)
    real: Tensor  # (B, T, C, H, W) the batch's real clips
    t_exit: float  # noise level of the exit step


class GeneratorTerm:
    """An extra loss on the generator, with optional modules and optimisers of its own.

    `student_block`: the generator block whose output the term needs in `GeneratorRollout.hidden` (None: none).
    Keys of `extra_state` must be unique across the terms of a stage.
    """

    name = "term"  # names the term in logs and error messages
    student_block: int | None = None
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def loss(self, rollout: GeneratorRollout, gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The weighted loss to add to the generator's DMD loss, and what to log."""
        raise NotImplementedError

    def distribute(self) -> None:
        """Wrap the term's trained modules for a multi-process run (called once by the stage's `distribute`)."""

    def after_generator_step(self) -> None:
        """Called after the generator's optimiser stepped (the backward pass has filled this term's grads)."""

    def critic_only_step(self, gen: torch.Generator) -> dict[str, float]:
        """Called on steps that update only the critic."""
        return {}

    def extra_state(self) -> dict[str, Tensor]:
        return {}

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# The stage


class DMDStage(Stage):
    """Stage 3. One step = one critic update; the generator is updated every `critic_updates_per_gen` steps."""

    name = "dmd"
    progress_keys = ("critic_loss", "dmd_grad_norm")

    def __init__(self, cfg: Config):
        if not cfg.train.init_from:
            raise ckpt.CheckpointError("train.init_from is empty: DMD starts from the stage-2 (ODE) causal student")
        if not cfg.dmd.teacher:
            raise ckpt.CheckpointError("dmd.teacher is empty: name the bidirectional teacher run (the real score)")
        super().__init__(cfg)
        tc = cfg.train
        self.model = init_generator(cfg).to(self.device)
        self.teacher = load_reference(cfg.dmd.teacher, cfg.model, "bidirectional", "dmd.teacher").eval().requires_grad_(False)
        self.teacher.to(self.device)
        ckpt.check_same_family(self.teacher.cfg, self.model.cfg, cfg.dmd.teacher, "the generator")
        self.critic = copy.deepcopy(self.teacher).train().requires_grad_(True)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        betas = tuple(cfg.dmd.betas)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, betas=betas, weight_decay=tc.weight_decay)
        self.opt_critic = torch.optim.AdamW(self.critic.parameters(), lr=cfg.dmd.critic_lr, betas=betas,
                                            weight_decay=tc.weight_decay)
        self.modules = {"model": self.model, "ema": self.ema, "critic": self.critic}
        self.optimizers = {"model": self.opt, "critic": self.opt_critic}
        self.terms: list[GeneratorTerm] = []
        self.critic_monitor = CriticMonitor()
        self.forward_model, self.forward_critic = self.model, self.critic  # DDP wrappers in a multi-process run
        self.quiet = False  # no warnings printed (ranks > 0)
        self.dataset = self.sample_dataset = build_dataset(cfg)
        self.step_ts = self.schedule.inference_steps(cfg.sample.steps, cfg.sample.timesteps).tolist()  # once

    def distribute(self) -> None:
        """The generator (and EMA) as every stage, then the critic, the frozen teacher and the terms' modules."""
        super().distribute()
        d = self.cfg.dist
        dist.checkpoint_blocks(self.critic, d.activation_checkpointing)
        if not dist.is_distributed():
            return
        if self.cfg.dmd.term_grad_every:  # each rank would see only its own rows' gradients (and FSDP only shards)
            raise ConfigError("dmd.term_grad_every is a single-process diagnostic: set it to 0 under torchrun")
        self.forward_critic = dist.parallelize(self.critic, d.critic, d, self.device, self.opt_critic)
        if d.teacher == "fsdp":
            dist.shard(self.teacher, d, self.device)
        for term in self.terms:
            term.distribute()

    def add_term(self, term: GeneratorTerm) -> None:
        """Compose an extra generator loss onto the stage; its modules and optimisers are checkpointed with it."""
        for own, theirs in ((self.modules, term.modules), (self.optimizers, term.optimizers)):
            clash = own.keys() & theirs.keys()
            if clash:
                raise ConfigError(f"generator term {type(term).__name__} reuses the names {sorted(clash)}")
            own.update(theirs)
        self.terms.append(term)

    @property
    def student_block(self) -> int | None:
        """The one generator block whose hidden state the terms read (a rollout returns one)."""
        blocks = {t.student_block for t in self.terms if t.student_block is not None}
        if len(blocks) > 1:
            raise ConfigError(f"the generator terms ask for hidden states of several blocks {sorted(blocks)}; one is supported")
        return blocks.pop() if blocks else None

    def extra_state(self) -> dict[str, Tensor]:
        m = self.critic_monitor
        out = {"critic_monitor": torch.tensor([m.average, float(m.count)], dtype=torch.float64)}
        for term in self.terms:
            out.update(term.extra_state())
        return out

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        if "critic_monitor" in tensors:
            average, count = tensors["critic_monitor"].tolist()
            self.critic_monitor = CriticMonitor(average=average, count=int(count))
        for term in self.terms:
            term.load_extra_state(tensors)

    def noise(self, batch_size: int, gen: torch.Generator) -> Tensor:
        """Initial noise of this step's self-rollouts: (B, T, C, H, W)."""
        m = self.cfg.model
        return randn((batch_size, self.cfg.data.clip_frames, *m.frame_shape), gen, self.device)

    def generator_step(self, noise: Tensor, prompt: Tensor | None, real: Tensor, step: int,
                       gen: torch.Generator) -> tuple[Tensor, dict[str, float], bool]:
        """Self-rollout with an exit-step gradient, DMD loss + the terms' losses, one generator update.
        Returns the generated video (detached, the critic's next sample), the record, and whether the generator
        was updated (False only when a non-finite value made the step be skipped, train.on_nonfinite=skip)."""
        policy = self.cfg.train.on_nonfinite
        exit_step = int(torch.randint(0, len(self.step_ts) - 1, (1,), generator=gen))
        self.model.train()
        video, hidden = rollout_with_exit(self.forward_model, self.schedule, noise, prompt, exit_step,
                                          sample=self.cfg.sample, generator=gen, return_hidden=self.student_block)
        loss, grad_norm = generator_dmd_loss(video, self.teacher, self.forward_critic, self.schedule, prompt, self.cfg,
                                             gen, self.uncond)
        parts = {"dmd_loss": loss}
        record = {"dmd_loss": loss.item(), "dmd_grad_norm": grad_norm.item()}
        rollout = GeneratorRollout(video, hidden, prompt, real, self.step_ts[exit_step])
        for term in self.terms:
            term_loss, term_record = term.loss(rollout, gen)
            parts[f"{term.name} term"] = term_loss
            loss = loss + term_loss
            record.update(term_record)
        if not check_finite({k: dist.mean(v) for k, v in parts.items()}, step, self.name, policy):
            return video.detach(), {**record, "skipped_nonfinite": 1.0}, False
        every = self.cfg.dmd.term_grad_every
        if every and (step // self.cfg.dmd.critic_updates_per_gen) % every == 0:
            record.update(part_grad_norms(self.model, parts))
        gen_grad_norm = optimize(self.opt, self.model, loss, self.cfg.train.grad_clip, step=step, stage=self.name,
                                 what="the generator loss", policy=policy)
        if gen_grad_norm is None:
            return video.detach(), {**record, "skipped_nonfinite": 1.0}, False
        record["gen_grad_norm"] = gen_grad_norm
        for term in self.terms:
            term.after_generator_step()
        return video.detach(), record, True

    def critic_step(self, fake: Tensor, prompt: Tensor | None, step: int, gen: torch.Generator) -> dict[str, float]:
        """One flow-matching update of the fake score on generated videos.

        The fake score learns with the loss the real score was trained with (train.loss_t_floor), so that
        fake - real measures the distributions, not two different weightings over t. A critic loss far above
        its running average is flagged (`critic_collapse` in the log and a warning): DMD's gradient is only as
        good as the fake score."""
        tc = self.cfg.train
        with autocast_context(tc.precision, self.device):
            critic_loss = bidirectional_loss(self.forward_critic, self.schedule, fake, prompt, gen, per_chunk_t=False,
                                             t_floor=tc.loss_t_floor)
        global_loss = dist.mean(critic_loss)  # the whole batch's: the monitor and the skip decision agree on all ranks
        if not check_finite({"critic_loss": global_loss}, step, self.name, tc.on_nonfinite):
            return {"skipped_nonfinite": 1.0}
        grad_norm = optimize(self.opt_critic, self.critic, critic_loss, tc.grad_clip, step=step, stage=self.name,
                             what="the critic loss", policy=tc.on_nonfinite)
        record = {"critic_loss": critic_loss.item()}
        if grad_norm is None:
            return {**record, "skipped_nonfinite": 1.0}
        record["critic_grad_norm"] = grad_norm
        if self.critic_monitor.update(global_loss.item()):
            record["critic_collapse"] = 1.0
            if not self.quiet:
                tqdm.write(f"warning: step {step}: the DMD critic's loss {global_loss.item():.4g} is over "
                           f"{CriticMonitor.factor:g}x its running average: the fake score may be collapsing")
        return record

    def step(self, batch: dict[str, Tensor], step: int, gen: torch.Generator) -> StepOutput:
        noise, prompt = self.noise(batch["video"].shape[0], gen), self.prompt_of(batch)
        k = self.cfg.dmd.critic_updates_per_gen
        updated = False
        with autocast_context(self.cfg.train.precision, self.device):
            if step % k == 0:
                fake, record, updated = self.generator_step(noise, prompt, batch["video"], step, gen)
            else:
                with torch.no_grad():
                    exit_step = int(torch.randint(0, len(self.step_ts) - 1, (1,), generator=gen))
                    fake, _ = rollout_with_exit(self.forward_model, self.schedule, noise, prompt, exit_step,
                                                sample=self.cfg.sample, generator=gen)
                record = {}
                for term in self.terms:
                    record.update(term.critic_only_step(gen))
        record.update(self.critic_step(fake, prompt, step, gen))
        return StepOutput(record, generator_update=step // k if updated else None,
                          log=step % k == 0 or "critic_collapse" in record or "skipped_nonfinite" in record)


@dataclass
class CriticMonitor:
    """Running average of the critic's loss; `update` says when a loss jumps far above it."""

    factor: float = 10.0  # a loss above factor x the average is flagged
    warmup: int = 10  # critic updates before anything is flagged
    average: float = 0.0
    count: int = 0

    def update(self, loss: float) -> bool:
        flagged = self.count >= self.warmup and loss > self.factor * self.average
        self.average = loss if self.count == 0 else 0.9 * self.average + 0.1 * loss
        self.count += 1
        return flagged
