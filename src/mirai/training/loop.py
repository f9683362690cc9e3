"""The training loop, one for every stage: batches, LR schedule, EMA, a progress bar, a JSONL metrics log,
periodic sample sheets and atomic checkpoints with exact resume. What a step does is the stage's
(`mirai.training.stages`).

Exact resume: the batch at step s is a pure function of s (`data.datasets.batch_indices`), and every random
draw of a stage comes from one `torch.Generator` whose state is checkpointed with the weights, the EMA and
the optimisers. A run restarted from its checkpoint therefore retraces the uninterrupted run.

Under torchrun the same loop runs in every process (`mirai.distributed`): each trains on its rows of the global
batch, the scalars of a step are averaged over ranks, and rank 0 alone logs, shows progress and writes files.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import checkpoint as ckpt, distributed as dist
from ..rng import BatchGenerator
from ..config import Config, run_settings, save_config
from ..data.datasets import step_batches, to_device
from ..models.dit import count_parameters
from .optim import ema_decay_at, ema_update, lr_at, set_lr
from .samples import write_samples
from .stage import Stage, resolve_model_config
from .stages import build_stage
from .state import load_training_state, save_training_state


class MetricsLog:
    """Append-only JSONL log of training metrics (one object per logged step).

    Opened at the step a run starts from, it first drops what a killed run logged after its last checkpoint
    (and a half-written last line), so that a resumed run never logs a step twice."""

    def __init__(self, path: Path, start_step: int = 0):
        if path.exists():
            steps = [(line, _logged_step(line)) for line in path.read_text().splitlines()]
            kept = [line for line, step in steps if step is not None and step <= start_step]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        self.file = path.open("a")

    def write(self, **record) -> None:
        self.file.write(json.dumps({**record, "time": time.time()}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _logged_step(line: str) -> int | None:
    """The step of one JSONL line, or None for a line a kill cut short."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: the current step finished, a checkpoint was written; the message says how to resume."""


class StopRequest:
    """Turns SIGINT / SIGTERM into a request to stop after the current step (a second Ctrl-C stops at once)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the second Ctrl-C interrupts right away

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def start_run(cfg: Config) -> tuple[Config, Path, BatchGenerator]:
    """Resolve the config, create the run folder, save the config next to it, seed everything (the same seed on
    every rank: the same initial weights, the same generator state)."""
    cfg = resolve_model_config(cfg)
    out = Path(cfg.train.out_dir)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(out)  # what a killed checkpoint write left
        save_config(cfg, out / "config.yaml")
    dist.barrier()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    return cfg, out, BatchGenerator(cfg.train.seed)


def resume(stage: Stage, out: Path, gen: torch.Generator, cfg: Config) -> int:
    """Load the training state into the stage (and gen) and re-export its model; returns its step.

    The state file is the commit point of a checkpoint. Re-exporting the EMA generator from it means a kill
    between the two files of a checkpoint can never leave a model.safetensors of another step behind."""
    step, extra = load_training_state(out / "ckpt.safetensors", stage.modules, stage.optimizers, gen,
                                      cfg.train.objective)
    stage.load_extra_state(extra)
    export(stage, out, step, cfg)
    return step


def export(stage: Stage, out: Path, step: int, cfg: Config) -> None:
    """The EMA generator alone, which is what `mirai sample` reads (whole, from rank 0)."""
    state = dist.full_state(stage.ema)
    if dist.is_main():
        ckpt.save_model(stage.ema, out / "model.safetensors",
                        {"step": step, "objective": cfg.train.objective, "settings": run_settings(cfg)}, state)


def save(stage: Stage, out: Path, gen: torch.Generator, step: int, cfg: Config) -> None:
    """The full training state (the commit point), then the exported model."""
    save_training_state(out / "ckpt.safetensors", stage.modules, stage.optimizers, gen, step, cfg, stage.extra_state())
    ckpt.reached("checkpoint-between-files")
    export(stage, out, step, cfg)


def train(cfg: Config, stop_at: int | None = None, init_from: str | None = None, quiet: bool = False) -> Path:
    """Train per `cfg`; resumes from `out_dir/ckpt.safetensors` when present. Returns the run folder.

    stop_at: stop (with a checkpoint) after this step, as an interruption would; the schedule still
    follows `cfg.train.steps`.
    """
    if init_from:
        cfg = copy.deepcopy(cfg)
        cfg.train.init_from = init_from
    dist.init(cfg.train.device)
    quiet = quiet or not dist.is_main()
    tc = cfg.train
    first, rows = dist.batch_share(tc.batch_size, cfg.dist.grad_accum)  # this rank's rows of every batch
    cfg, out, gen = start_run(cfg)
    stage = build_stage(cfg, quiet)
    stage.distribute()
    step = 0
    if (out / "ckpt.safetensors").exists():
        step = resume(stage, out, gen, cfg)
        if not quiet:
            print(f"resumed {out / 'ckpt.safetensors'} at step {step}")
    end = min(tc.steps, stop_at) if stop_at is not None else tc.steps
    if not quiet:
        print(f"model: {count_parameters(stage.model) / 1e6:.2f}M parameters, {cfg.model.attention}; "
              f"objective {tc.objective}; steps {step}->{end}; out {out}"
              + (f"; {dist.world()} processes x {rows} clips" if dist.is_distributed() else ""))

    log = MetricsLog(out / "metrics.jsonl", start_step=step) if dist.is_main() else None
    bar = tqdm(total=end, initial=step, disable=quiet, dynamic_ncols=True, desc=tc.objective)
    batches = iter(step_batches(stage.dataset, cfg.data, tc.batch_size, step, end, slice(first, first + rows),
                                pin_memory=stage.device.type == "cuda"))
    with StopRequest() as stop:
        while step < end:
            t0 = time.perf_counter()
            batch = to_device(next(batches), stage.device)
            set_lr(stage.opt, lr_at(step, tc))
            with gen.rows(first, tc.batch_size if dist.world() > 1 else 0):  # 0: one process draws as it always has
                result = stage.step(batch, step, gen)
            if result.generator_update is not None:
                ema_update(stage.ema, stage.model, ema_decay_at(result.generator_update, tc))
            record, stopping = dist.mean_values(result.record, stop.signal is not None)  # every rank stops alike
            step += 1
            dt = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix({k: f"{record[k]:.4f}" for k in stage.progress_keys if k in record}
                            | {"clips_s": f"{tc.batch_size / dt:.1f}"})
            if log is not None and (step % tc.log_every == 0 or step == end or result.log or stopping):
                log.write(step=step, **record, lr=stage.opt.param_groups[0]["lr"], step_s=dt,
                          clips_per_s=tc.batch_size / dt)
            if tc.sample_every and (step % tc.sample_every == 0 or step == tc.steps):
                model = dist.gathered_model(stage.ema)  # the EMA itself unless it is sharded
                if dist.is_main():
                    write_samples(model.eval(), stage.schedule, stage.sample_dataset, cfg,
                                  out / "samples" / f"step_{step:06d}.png")
            if step % tc.ckpt_every == 0 or step == end or stopping:
                save(stage, out, gen, step, cfg)
            if stopping:
                bar.close()
                if log is not None:
                    log.close()
                name = signal.Signals(stop.signal).name if stop.signal else "a stop request (another rank)"
                raise TrainingInterrupted(f"{name} at step {step}/{end}: checkpoint written to {out / 'ckpt.safetensors'}; "
                                          "run the same command again to resume")
    bar.close()
    if log is not None:
        log.close()
    return out
