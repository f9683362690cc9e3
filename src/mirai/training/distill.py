"""Stage 2: causal ODE distillation (Causal-Forcing).

The stage-1 AR teacher samples videos chunk by chunk with many Euler steps, its own clean past in the KV
cache (not the bidirectional teacher's). For every chunk we keep the ODE state at each of the student's
timesteps and the clean result. Pairs are stored in shards (safetensors, one file per `shard_size`
videos); the writer skips shards that already exist, so an interrupted generation resumes where it was.
Under torchrun, rank r of W writes shards r, r + W, ...; a shard depends only on its index, so the files are
those of a single process and a restart on any world size resumes them.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor
from tqdm import tqdm

from .. import checkpoint as ckpt, distributed as dist, rng
from ..config import Config, SampleConfig
from ..data.cache import LatentDataset
from ..data.prompt import PROMPT
from ..data.world import make_clip
from ..data.datasets import build_dataset, unconditional_prompt
from ..device import inference_autocast, pick_device
from ..models.build import is_conditional
from ..diffusion.schedule import FlowSchedule
from ..references import load_reference
from ..sampling.rollout import iter_rollout


def teacher_grid(student_ts: list[float], teacher_steps: int) -> tuple[list[float], list[int]]:
    """A fine Euler grid through every student timestep; returns (grid ending at 0, student indices in it)."""
    per = max(1, -(-teacher_steps // len(student_ts)))
    knots = list(student_ts) + [0.0]
    grid, where = [], []
    for a, b in zip(knots[:-1], knots[1:]):
        where.append(len(grid))
        grid.extend(torch.linspace(a, b, per + 1)[:-1].tolist())
    return grid + [0.0], where


@torch.no_grad()
def teacher_trajectories(teacher, schedule: FlowSchedule, noise: Tensor, prompt: Tensor | None,
                         student_ts: list[float], teacher_steps: int, cfg_scale: float = 1.0,
                         uncond: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """ODE states of the AR teacher at the student timesteps: (B, S, T, C, H, W), and the clean video (B, T, ...);
    guided away from `uncond` (captions: the empty caption's embedding) when cfg_scale != 1."""
    grid, where = teacher_grid(student_ts, teacher_steps)
    sample = SampleConfig(solver="euler", cfg_scale=cfg_scale)
    chunks, states = [], []
    for chunk, traj in iter_rollout(teacher, schedule, noise, prompt, sample=sample, grid=grid, return_states=True,
                                    uncond=uncond):
        chunks.append(chunk)
        states.append(torch.stack([traj[i] for i in where], dim=1))  # (B, S, fpc, C, H, W)
    return torch.cat(states, dim=2), torch.cat(chunks, dim=1)


def student_timesteps(cfg: Config, schedule: FlowSchedule) -> list[float]:
    return schedule.inference_steps(cfg.sample.steps, cfg.sample.timesteps).tolist()[:-1]


def pairs_dir(cfg: Config) -> Path:
    return Path(cfg.distill.pairs_dir or Path(cfg.train.out_dir) / "ode_pairs")


def generate_pairs(cfg: Config, quiet: bool = False) -> Path:
    """Write the ODE pairs of `cfg.distill` (resumable: existing shards are kept)."""
    d = cfg.distill
    if not d.teacher:
        raise ckpt.CheckpointError("distill.teacher is empty: name the stage-1 causal run to distil from")
    device = pick_device(cfg.train.device)
    teacher = load_reference(d.teacher, cfg.model, "causal", "distill.teacher").eval().to(device)
    ckpt.check_same_family(teacher.cfg, cfg.model, d.teacher, "the ODE student")
    schedule = FlowSchedule.from_config(cfg.schedule)
    ts = student_timesteps(cfg, schedule)
    out = pairs_dir(cfg)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(out)  # a shard a killed run was writing
    dist.barrier()
    shards = -(-d.num_videos // d.shard_size)
    shape = cfg.model.frame_shape
    captions = build_dataset(cfg) if cfg.model.text_conditioned else None  # a cache: caption embeddings
    uncond = unconditional_prompt(cfg.data, cfg.model, cfg.prepare.text_len)
    uncond = uncond.to(device) if uncond is not None else None
    for s in tqdm(range(dist.rank(), shards, dist.world()), desc="ode pairs", unit="shard", disable=quiet):
        path = out / f"shard_{s:05d}.safetensors"
        if path.exists():
            continue
        index = range(s * d.shard_size, min(d.num_videos, (s + 1) * d.shard_size))
        prompt = pair_prompts(cfg, index, captions)
        gen = rng.generator(cfg.train.seed, "ode-noise", s)
        noise = torch.randn(len(index), cfg.data.clip_frames, *shape, generator=gen).to(device)
        cond = prompt.to(device) if is_conditional(teacher) else None
        with inference_autocast(d.precision, device):  # bf16 on a GPU ("auto"); a CPU's pairs as before
            states, clean = teacher_trajectories(teacher, schedule, noise, cond, ts, d.teacher_steps,
                                                 d.teacher_cfg_scale, uncond)
        write_shard(path, states, clean, prompt, torch.tensor(ts))
    dist.barrier()  # every shard is written before any rank reads them
    return out


def pair_prompts(cfg: Config, index: range, captions: LatentDataset | None) -> Tensor:
    """Prompts of the trajectories `index`: the cache's caption embeddings in turn (a text model), else the
    structured prompts of world scenes the other stages never train on."""
    if captions is not None:
        return torch.stack([captions.clip_prompt(i % captions.num_clips) for i in index])
    scenes = rng.derive_seed(cfg.data.seed, "ode-scenes")
    return torch.stack([torch.from_numpy(PROMPT.encode(make_clip(cfg.world, scenes, i, 1).scene)) for i in index])


def write_shard(path: Path, states: Tensor, clean: Tensor, prompt: Tensor, timesteps: Tensor) -> None:
    """States and clean videos are stored in float16 (half the disk; far below the model's error)."""
    tensors = {"states": states.half(), "clean": clean.half(), "prompt": prompt, "timesteps": timesteps.float()}
    ckpt.atomic_save(tensors, path, {"kind": "ode_pairs", "videos": int(states.shape[0])})


class ODEPairDataset:
    """The pairs of a folder's shards, read from disk an item at a time: item = states (S, T, C, H, W), clean,
    prompt, timesteps. Items are numbered across the shards in file order (shard 0's videos, then shard 1's...).
    Memory holds one item, not the pairs (tens of GB for a real teacher); every shard's checksum is verified
    once, here, a tensor at a time."""

    KEYS = ("states", "clean", "prompt")

    def __init__(self, folder: str | Path):
        self.files = sorted(Path(folder).glob("shard_*.safetensors"))
        if not self.files:
            raise ckpt.CheckpointError(f"no ODE pair shards in {folder}")
        self.starts = [0]  # the first item of each shard, then the total
        for path in self.files:
            ckpt.verify(path)
            with safe_open(path, "pt") as f:
                self.starts.append(self.starts[-1] + f.get_slice("states").get_shape()[0])
        with safe_open(self.files[0], "pt") as f:
            self.timesteps = f.get_tensor("timesteps")

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        i = int(i)  # batch indices may be numpy or tensor integers
        if not 0 <= i < len(self):
            raise IndexError(f"ODE pair {i} of {len(self)}")
        shard = bisect.bisect_right(self.starts, i) - 1
        row = i - self.starts[shard]
        with safe_open(self.files[shard], "pt") as f:  # opened per item: the dataset stays picklable for workers
            item = {k: f.get_slice(k)[row : row + 1][0] for k in self.KEYS}
        return {"states": item["states"].float(), "clean": item["clean"].float(), "prompt": item["prompt"]}
