"""Per-rank rows of a training state: a stage's tensors whose first dimension is this rank's rows of the global
batch (the foresight replay buffer), under extra-state keys starting with `rows.`.

One process keeps them inside the state file, as they always were. W processes each write their own rows to
their own file, with no all-gather:

    out_dir/replay/step_00000004/rank_00003.safetensors     (meta: step, rank, world)

The state file stays the commit point. Rank files are written (atomically) before it, into a folder named by the
step, and the folders of other steps are removed only once the state file of the new step is in place: a kill
between the files leaves the previous state with its own rank files intact (the new step's folder is then an
orphan, removed at the next checkpoint). A rank file whose stamp (step, rank, world) is not the one the state
file expects is refused. A resume on another number of processes re-splits the rows: the global rows are the
ranks' rows in rank order, and each new rank reads the slices of the files that hold its share.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from .. import checkpoint as ckpt, distributed as dist

PREFIX = "rows."
FOLDER = "replay"


def split(extra: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(the per-rank rows, the rest) of a stage's extra state."""
    rows = {k: v for k, v in extra.items() if k.startswith(PREFIX)}
    return rows, {k: v for k, v in extra.items() if k not in rows}


def step_folder(state: Path, step: int) -> Path:
    return state.parent / FOLDER / f"step_{step:08d}"


def rank_file(state: Path, step: int, rank: int) -> Path:
    return step_folder(state, step) / f"rank_{rank:05d}.safetensors"


def save(state: Path, step: int, rows: dict[str, Tensor]) -> None:
    """This rank's rows, to its own file of the step (every rank; before the state file is written)."""
    ckpt.atomic_save(rows, rank_file(state, step, dist.rank()), {"kind": "rank_rows", "step": step,
                                                                 "rank": dist.rank(), "world": dist.world()})


def remove_other_steps(state: Path, step: int) -> None:
    """Rank files of the steps before (and of a killed checkpoint after) the committed one (rank 0, after the
    state file of `step` is in place)."""
    keep = step_folder(state, step)
    for folder in (state.parent / FOLDER).glob("step_*"):
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


def load(state: Path, step: int, saved_world: int) -> dict[str, Tensor]:
    """This rank's rows of the state of `step`, written by `saved_world` ranks, for the current world size."""
    files = [rank_file(state, step, r) for r in range(saved_world)]
    for r, path in enumerate(files):
        meta = ckpt.verify(path)  # a missing file is named; one tensor at a time
        stamp = {"step": meta.get("step"), "rank": meta.get("rank"), "world": meta.get("world")}
        if stamp != {"step": step, "rank": r, "world": saved_world}:
            raise ckpt.CheckpointError(f"{path} is stamped {stamp}, but {state} (the commit point) expects "
                                       f"step {step}, rank {r} of {saved_world}: a stale or foreign rank file")
    with safe_open(files[0], "pt") as f:
        keys = list(f.keys())
        per_file = {k: f.get_slice(k).get_shape()[0] for k in keys}
    return {k: own_share(files, k, per_file[k]) for k in keys}


def own_share(files: list[Path], key: str, per_file: int) -> Tensor:
    """This rank's rows of `key`, whose global rows are the files' rows in order (per_file each): on the world
    size that wrote them, the rank's own file alone; on another one, the slices of the files that overlap."""
    total = per_file * len(files)
    if total % dist.world():
        raise ckpt.CheckpointError(f"{files[0].parent} holds {total} rows of {key}, which do not split over "
                                   f"{dist.world()} processes; resume with {len(files)} processes")
    rows = total // dist.world()
    first, end = dist.rank() * rows, (dist.rank() + 1) * rows
    parts = []
    for r, path in enumerate(files):
        lo, hi = max(first, r * per_file), min(end, (r + 1) * per_file)
        if lo < hi:
            with safe_open(path, "pt") as f:
                parts.append(f.get_slice(key)[lo - r * per_file : hi - r * per_file])
    return parts[0] if len(parts) == 1 else torch.cat(parts)
