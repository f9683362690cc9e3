"""The training state on disk: everything a run needs to continue exactly (weights, EMA, optimisers, RNG
states, step, and a stage's extra tensors), as one atomic safetensors file.

In a multi-process run every rank takes part in gathering whole tensors (sharded modules) and rank 0 writes
them: the file is the one a single process writes, and resumes on any number of processes. A resume reads it
lazily: one tensor at a time, and of a sharded module only the rows the rank holds."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from .. import checkpoint as ckpt, distributed as dist
from . import rank_rows
from ..config import Config, to_dict


def save_training_state(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        gen: torch.Generator, step: int, cfg: Config, extra: dict | None = None) -> None:
    """modules must hold "model" (the trained generator), and the module of each optimiser under its name;
    extra: a stage's own tensors (e.g. a replay buffer; those under `rows.`: this rank's rows, see `rank_rows`).
    Every rank calls this; rank 0 writes the state file, each rank of several its rows' file first."""
    extra = extra or {}
    if dist.world() > 1:
        rows, extra = rank_rows.split(extra)
        rank_rows.save(path, step, rows)
        dist.barrier()  # every rank's rows are on disk before the state file commits the step
    tensors = {"rng.torch": torch.get_rng_state(), "rng.gen": gen.get_state(), **ckpt.prefixed(extra, "extra")}
    optim_meta = {}
    for name, module in modules.items():
        tensors.update(ckpt.prefixed(dist.full_state(module), name))
    for name, opt in optimizers.items():
        opt_tensors, optim_meta[name] = ckpt.optimizer_tensors(dist.full_optimizer_state(modules[name], opt))
        tensors.update(ckpt.prefixed(opt_tensors, f"optim_{name}"))
    meta = {"kind": "train_state", "step": step, "config": to_dict(cfg), "model": to_dict(modules["model"].cfg),
            "optim": optim_meta, "rows_world": dist.world()}
    if dist.is_main():
        ckpt.atomic_save(tensors, path, meta)
        if dist.world() > 1:
            rank_rows.remove_other_steps(path, step)
    dist.barrier()  # the file exists for every rank once this returns


def load_training_state(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        gen: torch.Generator, objective: str) -> tuple[int, dict[str, torch.Tensor]]:
    """Restore modules, optimisers and RNG states in place; returns (step, the stage's extra tensors).

    The file is read lazily, one tensor at a time, and a rank of a sharded (FSDP) module reads only its rows of
    each tensor (`get_slice`): a rank holds 1/W of the state, not the whole file (8 ranks x 119 GB for the Wan
    recipe). Reading rows beats rank 0 reading and broadcasting (`broadcast_from_rank0`): that still holds
    whole tensors on rank 0 and sends every byte through one process; rows need no collective at all."""
    meta = verified_meta(path)
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
        check_meta(path, meta, keys, modules, objective)
        for name, module in modules.items():
            load_module(f, keys, name, module, path)
        for name, opt in optimizers.items():
            load_optimizer(f, keys, f"optim_{name}", opt, meta["optim"][name])
        torch.set_rng_state(f.get_tensor("rng.torch"))
        gen.set_state(f.get_tensor("rng.gen"))
        extra = {k[len("extra."):]: f.get_tensor(k) for k in keys if k.startswith("extra.")}
    return int(meta["step"]), own_rows(path, meta, extra)


def own_rows(path: Path, meta: dict, extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The extra state with this rank's rows: from the ranks' files when several wrote the step, else from the
    state file, where one process left them whole (split by rank here: any world size resumes it)."""
    saved_world = int(meta.get("rows_world", 1))
    if saved_world == 1:
        rows, rest = rank_rows.split(extra)
        return {**rest, **{k: dist.own_rows(v) for k, v in rows.items()}}
    return {**extra, **rank_rows.load(path, int(meta["step"]), saved_world)}


def verified_meta(path: Path) -> dict:
    """The file's metadata. Rank 0 alone verifies the checksum (a pass over the file, one tensor at a time: the
    other ranks would only read the same bytes again); a failure there is an error on every rank, not a hang."""
    error = None
    if dist.is_main():
        try:
            ckpt.verify(path)
        except ckpt.CheckpointError as e:
            error = e
    _, failed = dist.mean_values({}, error is not None)
    if error is not None:
        raise error
    if failed:
        raise ckpt.CheckpointError(f"{path} failed rank 0's checks (rank 0's error says why)")
    return ckpt.read_meta(path)


def check_meta(path: Path, meta: dict, keys: list[str], modules: dict[str, nn.Module], objective: str) -> None:
    """That the file is a training state of this stage, its modules and its model config (before any tensor is read)."""
    if meta.get("kind") != "train_state":
        raise ckpt.CheckpointError(f"{path} is a '{meta.get('kind')}' file, not a training state")
    saved = meta.get("config", {}).get("train", {}).get("objective")
    if saved != objective:
        raise ckpt.CheckpointError(f"{path} is the training state of a '{saved}' stage, not of this '{objective}' "
                                   "stage; use another train.out_dir")
    names = {k.split(".", 1)[0] for k in keys if not k.startswith(("rng.", "extra.", "optim_"))}
    if names != set(modules):
        raise ckpt.CheckpointError(f"{path} holds the modules {sorted(names)}, this run trains {sorted(modules)} "
                                   "(another foresight setting?); use another train.out_dir")
    if meta["model"] != to_dict(modules["model"].cfg):
        raise ckpt.CheckpointError(f"{path} was trained with another model config; start a new out_dir or use the same model")


def read(f, key: str, like: torch.Tensor) -> torch.Tensor:
    """One tensor of the open file; only this rank's rows of it when `like` (its target) is sharded."""
    rows = dist.own_slice(like)
    return f.get_tensor(key) if rows is None else f.get_slice(key)[rows[0] : rows[1]]


def load_module(f, keys: list[str], prefix: str, module: nn.Module, path: Path) -> None:
    """Copy the file's tensors under `prefix.` into the module's, one at a time (a rank's shard: its rows)."""
    own = module.state_dict()  # references to the parameters (a sharded module's: DTensors of this rank's rows)
    n = len(prefix) + 1
    saved = {k[n:]: f.get_slice(k).get_shape() for k in keys if k.startswith(prefix + ".")}
    ckpt.check_fits({k: v.shape for k, v in own.items()}, saved, path)
    with torch.no_grad():
        for key, target in own.items():
            dist.local(target).copy_(read(f, f"{prefix}.{key}", target))


def load_optimizer(f, keys: list[str], prefix: str, opt: torch.optim.Optimizer, meta: dict) -> None:
    """The optimiser's state from the file's flat tensors; a sharded parameter's state: this rank's rows."""
    params = [p for group in opt.param_groups for p in group["params"]]
    n = len(prefix) + 1
    tensors = {}
    for key in (k for k in keys if k.startswith(prefix + ".")):
        p = params[int(key[n:].split(".", 1)[0])]
        shaped = list(f.get_slice(key).get_shape()) == list(p.shape)  # a moment of p (not a scalar such as step)
        tensors[key[n:]] = dist.like_shard(read(f, key, p), p) if shaped else f.get_tensor(key)
    opt.load_state_dict(ckpt.optimizer_state(tensors, meta))
