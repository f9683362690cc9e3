"""Datasets of video clips: the synthetic world (default) and folders of real videos.

Every dataset returns clips as float tensors (T, C, H, W) in [-1, 1] plus a prompt (P,) of ints
(all zeros when the data has no prompt). Batches are a pure function of the step number
(`batch_indices`), so the data position of a resumed run is just its step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .. import rng
from ..config import Config, DataConfig, ModelConfig, WorldConfig
from .cache import LatentDataset, read_empty_prompt
from .frames import to_model_range
from .prompt import PROMPT
from .videos import VIDEO_SUFFIXES, DataError, read_source, resize_crop
from .world import make_clip

__all__ = ["DataError", "VIDEO_SUFFIXES"]  # DataError lives in `videos`; most callers import it from here


class SyntheticVideoDataset:
    """Clip i of the synthetic world is a pure function of (seed, i); the dataset is unbounded."""

    def __init__(self, world: WorldConfig, seed: int, clip_frames: int):
        self.world, self.seed, self.clip_frames = world, seed, clip_frames

    def __len__(self) -> int:
        return 2**62

    def clip(self, index: int, num_frames: int | None = None):
        return make_clip(self.world, self.seed, index, num_frames or self.clip_frames)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.clip(index)
        return {"video": to_model_range(clip.frames), "prompt": torch.from_numpy(PROMPT.encode(clip.scene))}


class RandomVideoDataset:
    """Gaussian clips (T, C, H, W) and, for a caption model, Gaussian caption embeddings (L, text_dim): item i is a
    pure function of (seed, i). Shapes at real size without data, for GPU checks and speed tests."""

    def __init__(self, frame_shape: tuple[int, int, int], clip_frames: int, seed: int, text: tuple[int, int] | None):
        self.frame_shape, self.clip_frames, self.seed, self.text = frame_shape, clip_frames, seed, text

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        gen = rng.generator(self.seed, "random-clip", index)
        item = {"video": torch.randn(self.clip_frames, *self.frame_shape, generator=gen).clamp(-1, 1)}
        item["prompt"] = torch.randn(*self.text, generator=gen) if self.text else torch.zeros(0, dtype=torch.long)
        return item


class VideoFolderDataset:
    """Clips cut from a folder of videos (mp4, gif, ...) and/or sub-folders of frames (png, jpg)."""

    def __init__(self, path: str | Path, clip_frames: int, image_size: int, frame_stride: int = 1):
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"video folder not found: {root}")
        sources = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES or p.is_dir())
        if not sources:
            raise DataError(f"video folder {root} is empty: no {', '.join(VIDEO_SUFFIXES)} files or frame folders")
        self.clip_frames = clip_frames
        self.clips: list[Tensor] = []
        for src in sources:
            frames = read_source(src)[::frame_stride]
            if len(frames) < clip_frames:
                raise DataError(f"{src} has {len(frames)} frames (stride {frame_stride}), fewer than the {clip_frames} a clip needs")
            video = resize_crop(frames, image_size, image_size)
            for start in range(0, len(video) - clip_frames + 1, clip_frames):
                self.clips.append(video[start : start + clip_frames].contiguous())

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"video": self.clips[index], "prompt": torch.from_numpy(PROMPT.empty(1)[0])}


def build_dataset(cfg: Config):
    d: DataConfig = cfg.data
    m = cfg.model
    if d.source == "cache":
        data = LatentDataset(d.path, d.clip_frames)
        if data.frame_shape != m.frame_shape:
            raise DataError(f"{d.path} holds latent frames of shape {data.frame_shape} (channels, height, width), "
                            f"the model takes {m.frame_shape}: set model.channels / image_size / image_width")
        if m.text_conditioned and data.text_dim != m.text_dim:
            raise DataError(f"{d.path} holds caption embeddings of width {data.text_dim}, the model reads "
                            f"model.text_dim={m.text_dim}")
        return data
    if d.source == "random":
        text = (cfg.prepare.text_len, m.text_dim) if m.text_conditioned else None
        return RandomVideoDataset(m.frame_shape, d.clip_frames, d.seed, text)
    if m.frame_shape != (3, m.image_size, m.image_size):  # both sources give square RGB frames
        raise DataError(f"data.source={d.source} gives square RGB frames, but the model takes {m.frame_shape} "
                        "(channels, height, width): set model.channels=3 and model.image_width=0 (for latents, "
                        "`mirai prepare` the folder and train with data.source=cache)")
    if d.source == "synthetic":
        return SyntheticVideoDataset(cfg.world, d.seed, d.clip_frames)
    return VideoFolderDataset(d.path, d.clip_frames, cfg.model.image_size, d.frame_stride)


def unconditional_prompt(data: DataConfig, model: ModelConfig, text_len: int = 0) -> Tensor | None:
    """The "no prompt" of a caption model trained on the cache `data.path`: the empty caption's embedding (L, D)
    that `mirai prepare` wrote (caption dropout, guidance's unconditional branch); None for every other model
    (the structured prompt's "no prompt" is all zeros, see `data.prompt.unconditional`)."""
    if data.source == "random" and model.text_conditioned:  # random captions: the zero embedding stands for none
        return torch.zeros(text_len, model.text_dim)
    if data.source != "cache" or not model.text_conditioned:
        return None
    empty = read_empty_prompt(data.path)
    if empty is None:
        raise DataError(f"{data.path} has no empty_prompt.safetensors: prepare it again with --text-encoder")
    return empty


def batch_indices(step: int, batch_size: int, size: int, seed: int) -> list[int]:
    """Indices of the batch at `step`: consecutive for the unbounded world, a per-epoch shuffle otherwise."""
    if size >= 2**62:
        return list(range(step * batch_size, (step + 1) * batch_size))
    out = []
    for j in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(j, size)
        perm = torch.randperm(size, generator=rng.generator(seed, "epoch-shuffle", epoch))
        out.append(int(perm[pos]))
    return out


class StepBatches(torch.utils.data.Dataset):
    """Item k is the batch of step `start + k` (this process's rows of it), so worker processes can build the
    next batches while the model trains on this one, and a resumed run still sees exactly the batches of its steps."""

    def __init__(self, dataset, batch_size: int, seed: int, start: int, end: int, rows: slice):
        self.dataset, self.batch_size, self.seed, self.start, self.end, self.rows = dataset, batch_size, seed, start, end, rows

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        return get_batch(self.dataset, batch_indices(self.start + k, self.batch_size, len(self.dataset), self.seed)[self.rows])


def step_batches(dataset, data: DataConfig, batch_size: int, start: int, end: int, rows: slice,
                 pin_memory: bool = False):
    """The batches of steps start..end-1 in order: built in this process (`data.num_workers == 0`) or by that
    many spawned workers, each a few steps ahead (spawned, not forked: a forked child of a process that has run
    torch ops can hang)."""
    steps = StepBatches(dataset, batch_size, data.seed, start, end, rows)
    workers = dict(num_workers=data.num_workers, prefetch_factor=4, multiprocessing_context="spawn",
                   persistent_workers=False) if data.num_workers else {}
    # its own generator: a loader draws a worker seed when iterated, which must not move the global torch RNG
    # (a checkpoint holds that state, and batches do not need the seed: they are pure functions of the step)
    return torch.utils.data.DataLoader(steps, batch_size=None, shuffle=False, pin_memory=pin_memory,
                                       generator=torch.Generator(), **workers)


def to_device(batch: dict[str, Tensor], device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def get_batch(dataset, indices: list[int]) -> dict[str, Tensor]:
    items = [dataset[i] for i in indices]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
