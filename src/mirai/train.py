"""The training loop: one model, one objective, AdamW + warm-up/cosine, grad clipping, EMA, autocast,
a progress bar, a JSONL metrics log, periodic sample sheets and atomic checkpoints with exact resume.

Exact resume: the batch at step s is a pure function of s (`data.batch_indices`), and every random draw
of the objective comes from one `torch.Generator` whose state is checkpointed with the weights, the EMA
and the optimiser. A run restarted from its checkpoint therefore retraces the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import Config, ConfigError, save_config, to_dict
from .data import batch_indices, build_dataset, get_batch, to_device
from .losses import bidirectional_loss, drop_prompt, ode_regression_loss, teacher_forcing_loss
from .model import CausalVideoDiT, count_parameters
from .sampler import rollout
from .schedule import FlowSchedule
from .video import save_video
from .world import prompt_vocab


# --------------------------------------------------------------------------------------------------
# Pieces


def bf16_native() -> bool:
    """True where bf16 matmuls run natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_context(precision: str, device="cpu"):
    """bf16 autocast, or nothing. "auto" only uses bf16 where it is fast: emulated bf16 is ~100x slower."""
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_native())
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, cfg) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ema_decay_at(step: int, tc) -> float:
    """EMA decay with a warm-up, min(decay, (1 + s) / (10 + s)): early averages are not dragged to the init."""
    if step < tc.ema_start:
        return 0.0
    s = step - tc.ema_start
    return min(tc.ema_decay, (1 + s) / (10 + s))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_p, p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, p, 1 - decay)


def resolve_model_config(cfg: Config) -> Config:
    """Fill derived model fields (the prompt vocabulary of the world) so the saved config is complete."""
    cfg = copy.deepcopy(cfg)
    if cfg.model.conditional and not cfg.model.prompt_vocab:
        if cfg.data.source != "synthetic":
            raise ConfigError("model.conditional needs a dataset with prompts (data.source=synthetic); set model.conditional=false")
        cfg.model.prompt_vocab = prompt_vocab(cfg.world)
    if not cfg.model.conditional:
        cfg.model.prompt_vocab = []
    if cfg.train.objective == "bidirectional":
        cfg.model.attention = "bidirectional"
    return cfg


def compute_loss(model, schedule, batch, cfg: Config, gen: torch.Generator, timesteps=None) -> torch.Tensor:
    prompt = batch["prompt"] if model.prompt_embed is not None else None
    if cfg.train.objective == "ode":  # the student learns the teacher's conditional trajectories: keep prompts
        return ode_regression_loss(model, batch["states"], batch["clean"], timesteps, prompt, gen)
    prompt = drop_prompt(prompt, cfg.train.prompt_dropout, gen)
    if cfg.train.objective == "teacher_forcing":
        return teacher_forcing_loss(model, schedule, batch["video"], prompt, gen, cfg.train.per_chunk_t,
                                    cfg.train.context_noise_max, cfg.train.loss_t_floor)
    return bidirectional_loss(model, schedule, batch["video"], prompt, gen, cfg.train.per_chunk_t,
                              cfg.train.loss_t_floor)


@torch.no_grad()
def write_samples(model, schedule, dataset, cfg: Config, path: Path, num: int = 4, chunks: int | None = None) -> Path:
    """Roll out `num` videos (prompts of held-out clips) and save a contact sheet: samples over real clips."""
    from .config import SampleConfig

    frames = cfg.data.clip_frames if chunks is None else chunks * cfg.model.frames_per_chunk
    device = next(model.parameters()).device
    held_out = get_batch(dataset, [10**9 + i for i in range(num)]) if hasattr(dataset, "clip") else get_batch(dataset, list(range(num)))
    prompt = held_out["prompt"].to(device) if model.prompt_embed is not None else None
    gen = torch.Generator().manual_seed(1234)
    noise = torch.randn(num, frames, *held_out["video"].shape[2:], generator=gen).to(device)
    sample = cfg.sample  # few-step students sample as at inference; stage-1 models with many Euler steps
    if cfg.train.objective in ("teacher_forcing", "bidirectional"):
        sample = SampleConfig(**{**to_dict(cfg.sample), "steps": cfg.train.sample_steps, "timesteps": [], "solver": "euler"})
    if model.cfg.attention == "bidirectional":  # the teacher samples the whole clip at once
        from .sampler import _step
        ts = schedule.inference_steps(sample.steps).tolist()
        x = noise
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = _step(schedule, "euler", x, model(x, torch.full(x.shape[:2], t, device=device), prompt), t, t_next, gen)
        video = x
    else:
        video = rollout(model, schedule, noise, prompt, sample=sample, generator=gen)
    video = video.cpu()
    real = held_out["video"][:, : min(frames, held_out["video"].shape[1])]
    both = torch.cat([video[:, : real.shape[1]], real]) if real.shape[1] == video.shape[1] else video
    return save_video(both, path)


# --------------------------------------------------------------------------------------------------
# Checkpoints


def save_training_state(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        gen: torch.Generator, step: int, cfg: Config, extra: dict | None = None) -> None:
    """Everything a run needs to continue exactly: weights, EMA, optimisers, RNG states, step (+ extra tensors)."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.gen": gen.get_state(), **ckpt.prefixed(extra or {}, "extra")}
    optim_meta = {}
    for name, module in modules.items():
        tensors.update(ckpt.prefixed(module.state_dict(), name))
    for name, opt in optimizers.items():
        opt_tensors, optim_meta[name] = ckpt.optimizer_tensors(opt)
        tensors.update(ckpt.prefixed(opt_tensors, f"optim_{name}"))
    meta = {"kind": "train_state", "step": step, "config": to_dict(cfg), "model": to_dict(modules["model"].cfg),
            "optim": optim_meta}
    ckpt.atomic_save(tensors, path, meta)


def load_training_state(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        gen: torch.Generator, load_extra=None) -> int:
    tensors, meta = ckpt.load(path)
    if meta.get("kind") != "train_state":
        raise ckpt.CheckpointError(f"{path} is a '{meta.get('kind')}' file, not a training state")
    if meta["model"] != to_dict(modules["model"].cfg):
        raise ckpt.CheckpointError(f"{path} was trained with another model config; start a new out_dir or use the same model")
    for name, module in modules.items():
        ckpt.load_state(module, ckpt.strip(tensors, name), path)
    for name, opt in optimizers.items():
        opt.load_state_dict(ckpt.optimizer_state(ckpt.strip(tensors, f"optim_{name}"), meta["optim"][name]))
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.gen"])
    if load_extra is not None:
        load_extra(ckpt.strip(tensors, "extra"))
    return int(meta["step"])


def init_generator(cfg: Config) -> CausalVideoDiT:
    """A fresh model, or the previous stage's weights (`train.init_from`), checked to be the same kind and size."""
    model = CausalVideoDiT(cfg.model)
    if cfg.train.init_from:
        from .distill import check_same_family

        # Stage 1 may start from the bidirectional base model (as Causal-Forcing starts from Wan): same weights
        # layout, only the mask differs. Later stages must start from a causal model.
        kind = None if cfg.train.objective == "teacher_forcing" else cfg.model.attention
        previous = ckpt.load_model(cfg.train.init_from, expect_attention=kind)
        check_same_family(previous.cfg, cfg.model, cfg.train.init_from, f"this {cfg.train.objective} stage's model")
        ckpt.load_state(model, previous.state_dict(), cfg.train.init_from)
    return model


def start_run(cfg: Config, quiet: bool) -> tuple[Config, Path, torch.Generator]:
    """Resolve the config, create the run folder, save the config next to it, seed everything."""
    cfg = resolve_model_config(cfg)
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    return cfg, out, torch.Generator().manual_seed(cfg.train.seed)


# --------------------------------------------------------------------------------------------------
# The loop


def train(cfg: Config, stop_at: int | None = None, init_from: str | None = None, quiet: bool = False) -> Path:
    """Train per `cfg`; resumes from `out_dir/ckpt.safetensors` when present. Returns the run folder.

    stop_at: stop (with a checkpoint) after this step, as an interruption would; the schedule still
    follows `cfg.train.steps`.
    """
    if init_from:
        cfg = copy.deepcopy(cfg)
        cfg.train.init_from = init_from
    if cfg.train.objective == "dmd":
        from .dmd import train_dmd

        return train_dmd(cfg, stop_at, quiet)
    cfg, out, gen = start_run(cfg, quiet)
    tc = cfg.train
    if tc.objective == "ode":
        from .distill import ODEPairDataset, generate_pairs

        dataset = ODEPairDataset(generate_pairs(cfg, quiet))
    else:
        dataset = build_dataset(cfg)
    schedule = FlowSchedule.from_config(cfg.schedule)
    device = pick_device(tc.device)
    model = init_generator(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    modules, optimizers = {"model": model, "ema": ema}, {"model": opt}
    step = 0
    state_path = out / "ckpt.safetensors"
    if state_path.exists():
        step = load_training_state(state_path, modules, optimizers, gen)
        if not quiet:
            print(f"resumed {state_path} at step {step}")
    forward_model = torch.compile(model) if tc.compile else model
    end = min(tc.steps, stop_at) if stop_at is not None else tc.steps
    if not quiet:
        print(f"model: {count_parameters(model) / 1e6:.2f}M parameters, {cfg.model.attention}; objective {tc.objective}; "
              f"steps {step}->{end}; out {out}")

    log = MetricsLog(out / "metrics.jsonl")
    bar = tqdm(total=end, initial=step, disable=quiet, dynamic_ncols=True, desc=tc.objective)
    model.train()
    while step < end:
        t0 = time.perf_counter()
        batch = to_device(get_batch(dataset, batch_indices(step, tc.batch_size, len(dataset), cfg.data.seed)), device)
        set_lr(opt, lr_at(step, tc))
        with autocast_context(tc.precision, device):
            loss = compute_loss(forward_model, schedule, batch, cfg, gen, getattr(dataset, "timesteps", None))
        check_finite(loss, step)
        grad_norm = optimize(opt, model, loss, tc.grad_clip)
        ema_update(ema, model, ema_decay_at(step, tc))
        step += 1
        dt = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", clips_s=f"{tc.batch_size / dt:.1f}")
        if step % tc.log_every == 0 or step == end:
            log.write(step=step, loss=loss.item(), grad_norm=grad_norm, lr=opt.param_groups[0]["lr"], step_s=dt,
                      clips_per_s=tc.batch_size / dt)
        if tc.sample_every and (step % tc.sample_every == 0 or step == tc.steps):
            write_samples(ema.eval(), schedule, build_dataset(cfg) if tc.objective == "ode" else dataset, cfg,
                          out / "samples" / f"step_{step:06d}.png")
        if step % tc.ckpt_every == 0 or step == end:
            save_training_state(state_path, modules, optimizers, gen, step, cfg)
            ckpt.save_model(ema, out / "model.safetensors", {"step": step, "objective": tc.objective})
    bar.close()
    log.close()
    return out


class MetricsLog:
    """Append-only JSONL log of training metrics (one object per logged step)."""

    def __init__(self, path: Path):
        self.file = path.open("a")

    def write(self, **record) -> None:
        self.file.write(json.dumps({**record, "time": time.time()}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


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
