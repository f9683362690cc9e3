"""The training state on disk: everything a run needs to continue exactly (weights, EMA, optimisers, RNG
states, step, and a stage's extra tensors), as one atomic safetensors file.

In a multi-process run every rank takes part in gathering whole tensors (sharded modules) and rank 0 writes
them: the file is the one a single process writes, and resumes on any number of processes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import checkpoint as ckpt, distributed as dist
from ..config import Config, to_dict


def save_training_state(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        gen: torch.Generator, step: int, cfg: Config, extra: dict | None = None) -> None:
    """modules must hold "model" (the trained generator), and the module of each optimiser under its name;
    extra: a stage's own tensors (e.g. a replay buffer). Every rank calls this; rank 0 writes."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.gen": gen.get_state(), **ckpt.prefixed(extra or {}, "extra")}
    optim_meta = {}
    for name, module in modules.items():
        tensors.update(ckpt.prefixed(dist.full_state(module), name))
    for name, opt in optimizers.items():
        opt_tensors, optim_meta[name] = ckpt.optimizer_tensors(dist.full_optimizer_state(modules[name], opt))
        tensors.update(ckpt.prefixed(opt_tensors, f"optim_{name}"))
    meta = {"kind": "train_state", "step": step, "config": to_dict(cfg), "model": to_dict(modules["model"].cfg),
            "optim": optim_meta}
    if dist.is_main():
        ckpt.atomic_save(tensors, path, meta)
    dist.barrier()  # the file exists for every rank once this returns


def load_training_state(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        gen: torch.Generator, objective: str) -> tuple[int, dict[str, torch.Tensor]]:
    """Restore modules, optimisers and RNG states in place; returns (step, the stage's extra tensors)."""
    tensors, meta = ckpt.load(path)
    if meta.get("kind") != "train_state":
        raise ckpt.CheckpointError(f"{path} is a '{meta.get('kind')}' file, not a training state")
    saved = meta.get("config", {}).get("train", {}).get("objective")
    if saved != objective:
        raise ckpt.CheckpointError(f"{path} is the training state of a '{saved}' stage, not of this '{objective}' "
                                   "stage; use another train.out_dir")
    names = {k.split(".", 1)[0] for k in tensors if not k.startswith(("rng.", "extra.", "optim_"))}
    if names != set(modules):
        raise ckpt.CheckpointError(f"{path} holds the modules {sorted(names)}, this run trains {sorted(modules)} "
                                   "(another foresight setting?); use another train.out_dir")
    if meta["model"] != to_dict(modules["model"].cfg):
        raise ckpt.CheckpointError(f"{path} was trained with another model config; start a new out_dir or use the same model")
    for name, module in modules.items():
        state = ckpt.strip(tensors, name)
        if dist.is_sharded(module):
            dist.load_full_state(module, state)
        else:
            ckpt.load_state(module, state, path)
    for name, opt in optimizers.items():
        state = ckpt.optimizer_state(ckpt.strip(tensors, f"optim_{name}"), meta["optim"][name])
        dist.load_full_optimizer_state(modules[name], opt, state)
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.gen"])
    return int(meta["step"]), ckpt.strip(tensors, "extra")
