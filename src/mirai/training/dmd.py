"""Stage 3: self-rollout distribution matching distillation (Self-Forcing / Causal-Forcing, after DMD2).

The causal generator rolls a whole video out with its KV cache exactly as at inference; one exit step is
drawn per rollout and shared by all chunks, and gradients flow only through that step of each chunk.
The video is then judged by two bidirectional score models at a random noise level t:
- the real score: the frozen bidirectional teacher (with classifier-free guidance for prompts);
- the fake score: a critic initialised from the teacher (or from `dmd.critic`, e.g. a 1.3B model beside a 14B
  teacher) and trained by flow matching on the generator's detached samples, `critic_updates_per_gen` times per
  generator update.
Both score models share the generator's tokens (`ckpt.check_same_tokens`), not its width or depth. The frozen
teacher may be held in bf16 (`dist.frozen_dtype`). With `dist.grad_accum` > 1, each update (the generator's and
the critic's) is the sum of micro-batches that replay the step's draws and keep their own rows of them, so it is
the update of the whole batch at once.
DMD's gradient on the sample is (fake_x0 - real_x0) / mean|x - real_x0| (DMD2 eq. 7 normalisation).

Other generator losses are composed onto the stage as `GeneratorTerm`s (Video-Mirai's foresight alignment
is one, see `mirai.training.foresight`): the stage adds their losses to the DMD loss and gives them a turn
after each generator update and on critic-only steps, without knowing what they are.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .. import checkpoint as ckpt, distributed as dist
from ..config import Config, ConfigError, DistConfig
from ..data.datasets import build_dataset
from ..device import autocast_context, weights_autocast
from ..diffusion.schedule import FlowSchedule
from ..models.build import to_dtype
from ..references import load_reference
from ..rng import rand, randn
from ..sampling.guided import guided_velocity
from ..sampling.rollout import rollout_with_exit
from .losses import bidirectional_loss
from .offload import offload
from .optim import check_finite, clip_and_step, part_grad_norms
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
    with weights_autocast(model, x_t.device):  # a bf16 frozen teacher (dist.frozen_dtype)
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

    def begin_generator_update(self) -> None:
        """Called before the first micro-batch of a generator update (`loss` is then called once per micro-batch,
        each loss's backward adding to the term's gradients)."""

    def gradient_sync(self, sync: bool):
        """A context in which a micro-batch's backward reduces the term's gradients across ranks (sync, the last
        micro-batch) or only accumulates them (`dist.gradient_sync` on its wrapped modules)."""
        return contextlib.nullcontext()

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


FROZEN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def frozen_dtype(d: DistConfig) -> torch.dtype:
    return FROZEN_DTYPES[d.frozen_dtype]


def shards_frozen(d: DistConfig) -> bool:
    """Whether `distribute` shards the frozen models (dist.teacher=fsdp under torchrun): they wait on the CPU."""
    return dist.is_distributed() and d.teacher == "fsdp"


def freeze(model: nn.Module, d: DistConfig, device) -> nn.Module:
    """A frozen model: eval, no gradient, cast to dist.frozen_dtype on the CPU (a 14B teacher never reaches the
    device in fp32), then moved to the device, or kept in host memory and streamed block by block
    (dist.teacher=offload), or left on the CPU for `distribute` to shard (`place_frozen`)."""
    model = to_dtype(model.eval().requires_grad_(False), frozen_dtype(d))
    if d.teacher == "offload":
        return offload(model, device)
    return model if shards_frozen(d) else model.to(device)


def place_frozen(model: nn.Module, d: DistConfig, device) -> None:
    """In `distribute`: shard a frozen model kept on the CPU by `freeze`. FSDP2 moves each block to the device as
    it shards it, so the unsharded model is never on one GPU whole."""
    if shards_frozen(d):
        dist.shard(model, d, device)


def micro_batches(accum: int, gen: torch.Generator, rows: int):
    """For m in range(accum): (m, the rows of micro-batch m in this process's batch, a context in which gen's
    per-sample draws are micro-batch m's rows of the whole batch's). The generator's state is replayed at each
    micro-batch, so every micro-batch makes the step's draws (the same exit step); accum 1 changes nothing."""
    first, total = getattr(gen, "first_row", 0), getattr(gen, "total_rows", 0) or rows * accum
    start = gen.get_state()
    for m in range(accum):
        if accum == 1:
            yield m, slice(None), contextlib.nullcontext()
            continue
        gen.set_state(start)
        yield m, slice(m * rows, (m + 1) * rows), gen.rows(first + m * rows, total)


def rows_of(x: Tensor | None, part: slice) -> Tensor | None:
    return None if x is None else x[part]


def combined(records: list[dict[str, float]]) -> dict[str, float]:
    """The micro-batches' records as one: means, and norms combined as the whole batch's (root mean square of
    equal-sized parts' per-sample-normalised norms)."""
    if len(records) == 1:
        return records[0]
    out = {}
    for key in records[0]:
        values = torch.tensor([r[key] for r in records], dtype=torch.float64)
        out[key] = float(values.square().mean().sqrt() if key.endswith("grad_norm") else values.mean())
    return out


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
        self.teacher, self.critic = self.score_models(cfg)
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

    def score_models(self, cfg: Config) -> tuple[nn.Module, nn.Module]:
        """The frozen real score (dist.frozen_dtype, see `freeze`) and the trained critic (fp32, on the device),
        both checked to share the generator's tokens. A critic copied from the teacher is copied before the
        teacher is cast, so it starts from the teacher's own fp32 weights."""
        d = cfg.dmd
        teacher = load_reference(d.teacher, cfg.model, "bidirectional", "dmd.teacher",
                                 frozen_dtype(cfg.dist) if d.critic else torch.float32)
        ckpt.check_same_tokens(teacher.cfg, self.model.cfg, d.teacher, "the generator")
        if d.critic:
            critic = load_reference(d.critic, cfg.model, "bidirectional", "dmd.critic")
            ckpt.check_same_tokens(critic.cfg, self.model.cfg, d.critic, "the generator")
        else:
            critic = copy.deepcopy(teacher)
        return freeze(teacher, cfg.dist, self.device), critic.to(self.device).train().requires_grad_(True)

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
        place_frozen(self.teacher, d, self.device)
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

    def draw_exit_step(self, gen: torch.Generator) -> int:
        """The step of the rollout whose gradient is kept: one for the whole batch (a plain, not per-sample, draw)."""
        return int(torch.randint(0, len(self.step_ts) - 1, (1,), generator=gen))

    def generator_loss(self, prompt: Tensor | None, real: Tensor, gen: torch.Generator
                       ) -> tuple[Tensor, dict[str, Tensor], dict[str, float], Tensor]:
        """One (micro-)batch's self-rollout with an exit-step gradient, DMD loss + the terms' losses: (the loss,
        its parts, the record, the generated video (B, T, C, H, W) with gradient)."""
        noise = self.noise(real.shape[0], gen)
        exit_step = self.draw_exit_step(gen)
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
        return loss, parts, record, video

    def generator_step(self, prompt: Tensor | None, real: Tensor, step: int,
                       gen: torch.Generator) -> tuple[Tensor, dict[str, float], bool]:
        """One generator update from `dist.grad_accum` micro-batches (each backward adds loss / accum; gradients
        are reduced across ranks at the last one). Returns the generated video (detached, the critic's next
        sample), the record, and whether the generator was updated (False only when a non-finite value made the
        step be skipped, train.on_nonfinite=skip)."""
        policy, accum = self.cfg.train.on_nonfinite, self.cfg.dist.grad_accum
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        for term in self.terms:
            term.begin_generator_update()
        videos, records = [], []
        for m, part, rows in micro_batches(accum, gen, real.shape[0] // accum):
            last = m == accum - 1
            syncs = [dist.gradient_sync(self.forward_model, last), *(t.gradient_sync(last) for t in self.terms)]
            with rows, contextlib.ExitStack() as stack:
                for sync in syncs:
                    stack.enter_context(sync)
                loss, parts, record, video = self.generator_loss(rows_of(prompt, part), real[part], gen)
                videos.append(video.detach())
                records.append(record)
                if not check_finite({k: dist.mean(v) for k, v in parts.items()}, step, self.name, policy):
                    self.opt.zero_grad(set_to_none=True)
                    return torch.cat(videos), {**combined(records), "skipped_nonfinite": 1.0}, False
                every = self.cfg.dmd.term_grad_every  # (schema: only with grad_accum 1)
                if every and (step // self.cfg.dmd.critic_updates_per_gen) % every == 0:
                    record.update(part_grad_norms(self.model, parts))
                (loss / accum).backward()
        record, video = combined(records), torch.cat(videos)
        gen_grad_norm = clip_and_step(self.opt, self.model, self.cfg.train.grad_clip, step=step, stage=self.name,
                                      what="the generator loss", policy=policy)
        if gen_grad_norm is None:
            return video, {**record, "skipped_nonfinite": 1.0}, False
        record["gen_grad_norm"] = gen_grad_norm
        for term in self.terms:
            term.after_generator_step()
        return video, record, True

    @torch.no_grad()
    def critic_only_rollout(self, prompt: Tensor | None, batch_size: int, gen: torch.Generator) -> Tensor:
        """The critic's sample on steps without a generator update: (B, T, C, H, W), micro-batch by micro-batch
        (the draws of the whole batch's rollout)."""
        accum, videos = self.cfg.dist.grad_accum, []
        for _, part, rows in micro_batches(accum, gen, batch_size // accum):
            with rows:
                micro_prompt = rows_of(prompt, part)
                noise = self.noise(batch_size // accum, gen)
                video, _ = rollout_with_exit(self.forward_model, self.schedule, noise, micro_prompt,
                                             self.draw_exit_step(gen), sample=self.cfg.sample, generator=gen)
            videos.append(video)
        return torch.cat(videos)

    def critic_step(self, fake: Tensor, prompt: Tensor | None, step: int, gen: torch.Generator) -> dict[str, float]:
        """One flow-matching update of the fake score on generated videos, from `dist.grad_accum` micro-batches.

        The fake score learns with the loss the real score was trained with (train.loss_t_floor), so that
        fake - real measures the distributions, not two different weightings over t. A critic loss far above
        its running average is flagged (`critic_collapse` in the log and a warning): DMD's gradient is only as
        good as the fake score."""
        tc, accum = self.cfg.train, self.cfg.dist.grad_accum
        self.opt_critic.zero_grad(set_to_none=True)
        losses, global_losses = [], []
        for m, part, rows in micro_batches(accum, gen, fake.shape[0] // accum):
            with rows, dist.gradient_sync(self.forward_critic, m == accum - 1):
                with autocast_context(tc.precision, self.device):
                    critic_loss = bidirectional_loss(self.forward_critic, self.schedule, fake[part],
                                                     rows_of(prompt, part), gen, per_chunk_t=False,
                                                     t_floor=tc.loss_t_floor)
                global_loss = dist.mean(critic_loss)  # the whole batch's: the monitor and the skip decision agree
                if not check_finite({"critic_loss": global_loss}, step, self.name, tc.on_nonfinite):
                    self.opt_critic.zero_grad(set_to_none=True)
                    return {"skipped_nonfinite": 1.0}
                (critic_loss / accum).backward()
            losses.append(critic_loss.detach())
            global_losses.append(global_loss)
        critic_loss, global_loss = torch.stack(losses).mean(), torch.stack(global_losses).mean()
        grad_norm = clip_and_step(self.opt_critic, self.critic, tc.grad_clip, step=step, stage=self.name,
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
        prompt, real = self.prompt_of(batch), batch["video"]
        k = self.cfg.dmd.critic_updates_per_gen
        updated = False
        with autocast_context(self.cfg.train.precision, self.device):
            if step % k == 0:
                fake, record, updated = self.generator_step(prompt, real, step, gen)
            else:
                fake = self.critic_only_rollout(prompt, real.shape[0], gen)
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
