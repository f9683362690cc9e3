"""Several processes under torchrun: PyTorch's own engine (process groups, DDP, FSDP2, distributed state dicts).

`init()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): gloo on CPU, NCCL for CUDA tensors (with
gloo beside it for the small CPU reductions). Without that environment nothing is initialised, and every
helper here is the identity of a single process: no wrapper, no collective, the same numbers as before.

What a multi-process run changes, and where:
- data: `train.batch_size` is the global batch; rank r of W trains on rows r*B/W..(r+1)*B/W of the batch of
  the step (`batch_share`), and every per-sample random draw is that slice of the global draw
  (`rng.BatchGenerator`), so W processes compute what one process computes on the whole batch;
- modules: trained ones are wrapped by `parallelize` (DDP, or FSDP2 `fully_shard` per block with a mixed
  precision policy); the stages call the wrapper and keep the bare module for state dicts and EMA;
- checkpoints and the exported model: gathered full state dicts (`full_state`, `full_optimizer_state`),
  written by rank 0 in the single-process format, so they resume on any world size;
- logging: scalars of a step are averaged over ranks (`mean_values`); rank 0 alone logs, draws the progress
  bar, writes samples and files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard
from torch.nn.parallel import DistributedDataParallel

from .config import ConfigError, DistConfig
from .models.build import build_model

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on rank 0's CPU

# --------------------------------------------------------------------------------------------------
# The process group


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: str = "auto") -> None:
    """Join torchrun's process group (once); nothing in a plain single process."""
    if not launched() or is_distributed():
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # "cuda" then means this process's GPU
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()
        forget_mesh()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one process that logs and writes files."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


# --------------------------------------------------------------------------------------------------
# Data and scalars


def batch_share(global_batch: int, grad_accum: int = 1) -> tuple[int, int]:
    """(first row, rows) of this process in a global batch; every process runs grad_accum micro-batches."""
    parts = world() * grad_accum
    if global_batch % parts:
        raise ConfigError(f"train.batch_size={global_batch} (the global batch) must be divisible by the world size "
                          f"{world()} x dist.grad_accum {grad_accum} = {parts}")
    rows = global_batch // world()
    return rank() * rows, rows


def mean(value: Tensor) -> Tensor:
    """The mean over ranks of a scalar tensor (a NaN anywhere is a NaN everywhere): decisions taken on it, such
    as skipping a non-finite step, are the same on every rank."""
    if not is_distributed():
        return value
    out = value.detach().float().cpu().clone()
    dist.all_reduce(out)
    return out / world()


def mean_values(values: dict[str, float], flag: bool = False) -> tuple[dict[str, float], bool]:
    """Scalars of a step averaged over ranks (same keys everywhere), and whether any rank raised `flag`
    (a stop request: every rank must checkpoint and stop at the same step)."""
    if not is_distributed():
        return values, flag
    keys = list(values)  # the same order on every rank (the same code made them)
    packed = torch.tensor([float(values[k]) for k in keys] + [float(flag)], dtype=torch.float64)
    dist.all_reduce(packed)
    return {k: packed[i].item() / world() for i, k in enumerate(keys)}, bool(packed[-1] > 0)


def gather_objects(obj) -> list:
    """Every rank's picklable `obj`, in rank order (small things: lists, plans); [obj] in one process."""
    if not is_distributed():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def own_rows(t: Tensor) -> Tensor:
    """This rank's rows of a global batch's tensor, for any world size."""
    if not is_distributed():
        return t
    rows = t.shape[0] // world()
    return t[rank() * rows : (rank() + 1) * rows]


# --------------------------------------------------------------------------------------------------
# Wrapping modules


class DataParallel(DistributedDataParallel):
    """DDP that also reads the wrapped model's plain attributes (`cfg`, `grid`, ...), as rollouts do."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def checkpoint_blocks(module: nn.Module, on: bool) -> None:
    """Per-block activation checkpointing of a video model (`models.dit.run_blocks`): forwards with gradient
    (full-sequence ones and those reading the KV cache without committing) recompute each block's activations
    in backward instead of keeping them."""
    module.checkpoint_blocks = on


_MESHES: dict[str, object] = {}


def mesh(device_type: str):
    """The one 1-D device mesh over every rank of this process group (made once: it reads the ranks' values, which
    a plan on fake tensors makes before it fakes anything)."""
    if device_type not in _MESHES:
        _MESHES[device_type] = init_device_mesh(device_type, (world(),))
    return _MESHES[device_type]


def forget_mesh() -> None:
    """After the process group is destroyed (a plan's fake one): the meshes made over it are gone too."""
    _MESHES.clear()


def shard(module: nn.Module, cfg: DistConfig, device: torch.device) -> nn.Module:
    """FSDP2 in place: each block its own unit, then the rest; returns the module (now an FSDPModule)."""
    mesh_ = mesh(device.type)
    dtype = torch.bfloat16 if cfg.param_dtype == "bf16" else None
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
    for block in getattr(module, "blocks", ()):
        fully_shard(block, mesh=mesh_, mp_policy=policy)
    fully_shard(module, mesh=mesh_, mp_policy=policy)
    return module


def parallelize(module: nn.Module, strategy: str, cfg: DistConfig, device: torch.device,
                optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
    """The module to call for forward passes in a multi-process run: a DDP wrapper, or the module itself sharded
    by FSDP2 (its optimiser, built before, is pointed at the sharded parameters). Identity in one process."""
    if not is_distributed():
        return module
    if strategy == "ddp":
        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        return DataParallel(module, device_ids=ids, forward_sync_buffers=False)  # buffers are constants here
    before = dict(module.named_parameters())
    shard(module, cfg, device)
    if optimizer is not None:
        after = dict(module.named_parameters())
        new = {id(p): after[name] for name, p in before.items()}
        for group in optimizer.param_groups:
            group["params"] = [new[id(p)] for p in group["params"]]
    return module


@contextlib.contextmanager
def gradient_sync(module: nn.Module, sync: bool) -> Iterator[None]:
    """Reduce gradients in this backward (sync) or only accumulate them locally (the first micro-batches)."""
    bare = getattr(module, "_orig_mod", module)  # under torch.compile
    if sync or not is_distributed():
        yield
    elif isinstance(bare, DistributedDataParallel):
        with bare.no_sync():
            yield
    elif isinstance(bare, FSDPModule):
        bare.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            bare.set_requires_gradient_sync(True)
    else:
        yield


def local(t: Tensor) -> Tensor:
    """The tensor this rank holds (its shard of a DTensor)."""
    return t.to_local() if isinstance(t, DTensor) else t


def full(t: Tensor) -> Tensor:
    """A whole tensor from a DTensor (e.g. FSDP's gradient norm), the tensor itself otherwise."""
    return t.full_tensor() if isinstance(t, DTensor) else t


# --------------------------------------------------------------------------------------------------
# Full state dicts (collectives for sharded modules: every rank calls them; rank 0 gets the tensors)


def is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def full_state(module: nn.Module) -> dict[str, Tensor]:
    """The module's whole state dict, as a single process would have it (empty on ranks > 0 when sharded)."""
    return get_model_state_dict(module, options=FULL) if is_sharded(module) else module.state_dict()


def own_slice(t: Tensor) -> tuple[int, int] | None:
    """(first, end) of the rows of dimension 0 this rank holds of a DTensor sharded by FSDP2 (torch.chunk's
    split: ceil(n / W) rows per rank, the last ranks fewer or none); None for a whole tensor."""
    if not isinstance(t, DTensor):
        return None
    if t.device_mesh.ndim != 1 or t.placements[0] != Shard(0):
        raise NotImplementedError(f"reading a {t.placements} tensor from a whole one: only FSDP2's Shard(0) is supported")
    n, parts, me = t.shape[0], t.device_mesh.size(), t.device_mesh.get_local_rank()
    step = -(-n // parts)
    first = min(n, me * step)
    return first, min(n, first + step)


def like_shard(rows: Tensor, t: Tensor) -> Tensor:
    """This rank's rows (`own_slice`) as a DTensor placed like `t`, on t's device (a whole tensor: `rows`)."""
    if not isinstance(t, DTensor):
        return rows
    return DTensor.from_local(rows.to(t.device), t.device_mesh, t.placements, shape=t.shape, stride=t.stride())


def _parameter_names(module: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The names of the optimiser's parameters, in the order of its state dict's integer ids."""
    names = {id(p): n for n, p in module.named_parameters()}
    return [names[id(p)] for group in opt.param_groups for p in group["params"]]


def full_optimizer_state(module: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """`opt.state_dict()` as a single process has it (integer ids, whole tensors), for a sharded module too."""
    own = opt.state_dict()
    if not is_sharded(module):
        return own
    gathered = get_optimizer_state_dict(module, opt, options=FULL)
    names = _parameter_names(module, opt)
    state = {i: gathered["state"][n] for i, n in enumerate(names) if n in gathered.get("state", {})}
    return {"state": state, "param_groups": own["param_groups"]}


def gathered_model(module: nn.Module) -> nn.Module | None:
    """A video model to run on rank 0 alone (samples): the module itself, or, when sharded, a whole copy
    built from its gathered state (every rank must call; ranks > 0 get None)."""
    if not is_sharded(module):
        return module
    state = full_state(module)
    if not is_main():
        return None
    copy = build_model(module.cfg).to(next(iter(state.values())).device)
    copy.load_state_dict(state)
    return copy.to(local(next(module.parameters())).device)
