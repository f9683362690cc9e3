"""Stage 3: self-rollout distribution matching distillation (Self-Forcing / Causal-Forcing, after DMD2).

The causal generator rolls a whole video out with its KV cache exactly as at inference; one exit step is
drawn per rollout and shared by all chunks, and gradients flow only through that step of each chunk.
The video is then judged by two bidirectional score models at a random noise level t:
- the real score: the frozen bidirectional teacher (with classifier-free guidance for prompts);
- the fake score: a critic initialised from the teacher and trained by flow matching on the generator's
  detached samples, `critic_updates_per_gen` times per generator update.
DMD's gradient on the sample is (fake_x0 - real_x0) / mean|x - real_x0| (DMD2 eq. 7 normalisation).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import Config
from .data import batch_indices, build_dataset, get_batch, to_device
from .losses import bidirectional_loss
from .sampler import rollout_with_exit
from .schedule import FlowSchedule, rand, randn

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
               cfg_scale: float = 1.0) -> Tensor:
    """Clean estimate of a score model at per-frame noise t (B, T), with optional classifier-free guidance."""
    if prompt is not None and cfg_scale != 1.0:
        v_cond = model(x_t, t, prompt)
        v = v_cond + (cfg_scale - 1.0) * (v_cond - model(x_t, t, torch.zeros_like(prompt)))
    else:
        v = model(x_t, t, prompt)
    return schedule.x0_from_velocity(x_t, v.float(), t)


def sample_dmd_t(B: int, T: int, cfg, generator: torch.Generator | None, device=None) -> Tensor:
    """One DMD noise level per video, broadcast to its frames: (B, T)."""
    t = cfg.t_min + (cfg.t_max - cfg.t_min) * rand((B, 1), generator, device)
    return t.expand(B, T)


def generator_dmd_loss(video: Tensor, teacher, critic, schedule, prompt, cfg, generator) -> tuple[Tensor, Tensor]:
    """DMD loss of a generated video (B, T, C, H, W) that carries the exit-step gradient."""
    B, T = video.shape[:2]
    t = sample_dmd_t(B, T, cfg.dmd, generator, video.device)
    noise = randn(video.shape, generator, video.device)
    x_t = schedule.add_noise(video.detach(), noise, t)
    real = predict_x0(teacher, schedule, x_t, t, prompt, cfg.dmd.real_cfg_scale)
    fake = predict_x0(critic, schedule, x_t, t, prompt)
    return dmd_loss(video, real, fake)


# --------------------------------------------------------------------------------------------------
# The stage-3 loop


class DMDRun:
    """Everything the stage-3 loop owns; extended by foresight training (mirai.foresight)."""

    def __init__(self, cfg: Config):
        from .train import init_generator, pick_device

        if not cfg.train.init_from:
            raise ckpt.CheckpointError("train.init_from is empty: DMD starts from the stage-2 (ODE) causal student")
        if not cfg.dmd.teacher:
            raise ckpt.CheckpointError("dmd.teacher is empty: name the bidirectional teacher run (the real score)")
        self.cfg = cfg
        self.device = pick_device(cfg.train.device)
        self.schedule = FlowSchedule.from_config(cfg.schedule)
        self.model = init_generator(cfg).to(self.device)
        self.teacher = ckpt.load_model(cfg.dmd.teacher, expect_attention="bidirectional").eval().requires_grad_(False)
        self.teacher.to(self.device)
        from .distill import check_same_family

        check_same_family(self.teacher.cfg, self.model.cfg, cfg.dmd.teacher, "the generator")
        self.critic = copy.deepcopy(self.teacher).train().requires_grad_(True)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        tc = cfg.train
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, betas=(0.0, 0.999), weight_decay=tc.weight_decay)
        self.opt_critic = torch.optim.AdamW(self.critic.parameters(), lr=cfg.dmd.critic_lr, betas=(0.0, 0.999),
                                            weight_decay=tc.weight_decay)
        self.modules = {"model": self.model, "ema": self.ema, "critic": self.critic}
        self.optimizers = {"model": self.opt, "critic": self.opt_critic}

    def generator_loss(self, video: Tensor, hidden: Tensor | None, prompt, gen, t_exit: float = 0.0,
                       real: Tensor | None = None) -> tuple[Tensor, dict]:
        loss, grad_norm = generator_dmd_loss(video, self.teacher, self.critic, self.schedule, prompt, self.cfg, gen)
        return loss, {"dmd_loss": loss.item(), "dmd_grad_norm": grad_norm.item()}

    # Hooks that foresight training (mirai.foresight.ForesightDMDRun) fills in.
    def student_block(self) -> int | None:
        return None  # no hidden state is needed by plain DMD

    def after_generator_step(self) -> None:
        pass

    def critic_only_step(self, gen: torch.Generator) -> dict:
        return {}

    def extra_state(self) -> dict[str, Tensor]:
        return {}

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        pass


def _step_inputs(run: DMDRun, dataset, step: int, gen: torch.Generator) -> tuple[Tensor, Tensor | None, Tensor]:
    """Noise (B, T, C, H, W), the prompts of this step's clips (or None), and the real clips."""
    cfg = run.cfg
    B = cfg.train.batch_size
    batch = to_device(get_batch(dataset, batch_indices(step, B, len(dataset), cfg.data.seed)), run.device)
    shape = (cfg.model.channels, cfg.model.image_size, cfg.model.image_size)
    noise = randn((B, cfg.data.clip_frames, *shape), gen, run.device)
    return noise, batch["prompt"] if run.model.prompt_embed is not None else None, batch["video"]


def train_dmd(cfg: Config, stop_at: int | None = None, quiet: bool = False) -> Path:
    """Stage 3. One step = one critic update; the generator is updated every `critic_updates_per_gen` steps."""
    import time

    from .train import (MetricsLog, autocast_context, check_finite, ema_decay_at, ema_update, to_device, load_training_state, lr_at, optimize,
                        save_training_state, set_lr, start_run, write_samples)

    from .foresight import run_class

    cfg, out, gen = start_run(cfg, quiet)
    run = run_class(cfg)(cfg)
    tc = cfg.train
    dataset = build_dataset(cfg)
    step, state_path = 0, out / "ckpt.safetensors"
    if state_path.exists():
        step = load_training_state(state_path, run.modules, run.optimizers, gen, run.load_extra_state)
    end = min(tc.steps, stop_at) if stop_at is not None else tc.steps
    log, bar = MetricsLog(out / "metrics.jsonl"), tqdm(total=end, initial=step, disable=quiet, desc="dmd", dynamic_ncols=True)
    step_ts = run.schedule.inference_steps(cfg.sample.steps, cfg.sample.timesteps).tolist()  # once, not per step
    num_steps = len(step_ts) - 1
    while step < end:
        t0 = time.perf_counter()
        noise, prompt, real = _step_inputs(run, dataset, step, gen)
        record: dict = {}
        with autocast_context(tc.precision, run.device):
            if step % cfg.dmd.critic_updates_per_gen == 0:  # generator update (self-rollout, exit-step gradient)
                exit_step = int(torch.randint(0, num_steps, (1,), generator=gen))
                run.model.train()
                video, hidden = rollout_with_exit(run.model, run.schedule, noise, prompt, exit_step, sample=cfg.sample,
                                                  generator=gen, return_hidden=run.student_block())
                t_exit = step_ts[exit_step]
                loss, record = run.generator_loss(video, hidden, prompt, gen, t_exit=t_exit, real=real)
                check_finite(loss, step)
                set_lr(run.opt, lr_at(step, tc))
                record["gen_grad_norm"] = optimize(run.opt, run.model, loss, tc.grad_clip)
                run.after_generator_step()
                ema_update(run.ema, run.model, ema_decay_at(step // cfg.dmd.critic_updates_per_gen, tc))
                fake = video.detach()
            else:
                with torch.no_grad():
                    exit_step = int(torch.randint(0, num_steps, (1,), generator=gen))
                    fake, _ = rollout_with_exit(run.model, run.schedule, noise, prompt, exit_step, sample=cfg.sample,
                                                generator=gen)
                record.update(run.critic_only_step(gen))
            # The fake score learns with the loss the real score was trained with (train.loss_t_floor), so that
            # fake - real measures the distributions, not two different weightings over t.
            critic_loss = bidirectional_loss(run.critic, run.schedule, fake, prompt, gen, per_chunk_t=False,
                                             t_floor=tc.loss_t_floor)
        check_finite(critic_loss, step)
        record["critic_grad_norm"] = optimize(run.opt_critic, run.critic, critic_loss, tc.grad_clip)
        record["critic_loss"] = critic_loss.item()
        step += 1
        bar.update(1)
        bar.set_postfix(critic=f"{critic_loss.item():.4f}", **({"dmd": f"{record['dmd_grad_norm']:.3f}"} if "dmd_grad_norm" in record else {}))
        if step % tc.log_every == 0 or step == end or "dmd_loss" in record:
            log.write(step=step, step_s=time.perf_counter() - t0, **record)
        if tc.sample_every and (step % tc.sample_every == 0 or step == tc.steps):
            write_samples(run.ema.eval(), run.schedule, dataset, cfg, out / "samples" / f"step_{step:06d}.png")
        if step % tc.ckpt_every == 0 or step == end:
            save_training_state(state_path, run.modules, run.optimizers, gen, step, cfg, run.extra_state())
            ckpt.save_model(run.ema, out / "model.safetensors", {"step": step, "objective": "dmd"})
    bar.close()
    log.close()
    return out
