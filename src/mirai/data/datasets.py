"""Datasets of video clips: the synthetic world (default) and folders of real videos.

Every dataset returns clips as float tensors (T, C, H, W) in [-1, 1] plus a prompt (P,) of ints
(all zeros when the data has no prompt). Batches are a pure function of the step number
(`batch_indices`), so the data position of a resumed run is just its step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import rng
from ..config import Config, DataConfig, WorldConfig
from .frames import to_model_range
from .prompt import PROMPT
from .world import make_clip

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class DataError(ValueError):
    """A data file (a video, a frame folder, an eval.json) cannot be used; the message names it."""


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


def _first_line(error: Exception) -> str:
    """Decoders put whole ffmpeg logs in their messages; one line of it is enough."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _to_rgb(frame: np.ndarray, where: Path) -> np.ndarray:
    """A decoded (H, W) / (H, W, 1..4) picture of any bit depth -> (H, W, 3) uint8 (gray repeated, alpha dropped)."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 2, 3, 4) or 0 in frame.shape:
        raise DataError(f"{where} has a frame of shape {frame.shape}, expected (H, W, 3) pictures")
    if frame.dtype == np.uint16:  # 16-bit PNGs
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype == bool:  # 1-bit images
        frame = frame.astype(np.uint8) * 255
    elif frame.dtype != np.uint8:
        raise DataError(f"{where} has {frame.dtype} pixels; expected 8- or 16-bit pictures")
    channels = frame.shape[-1]
    return np.repeat(frame[..., :1], 3, axis=-1) if channels <= 2 else frame[..., :3]


def _stack(frames: list[np.ndarray], where: Path, names: list[str] | None = None) -> np.ndarray:
    """(T, H, W, 3) from same-sized frames, else a DataError naming the first frame of another size."""
    if not frames:
        raise DataError(f"{where} holds no frames")
    for i, f in enumerate(frames):
        if f.shape != frames[0].shape:
            which = f"{names[i]} is" if names else f"frame {i} is"
            raise DataError(f"frames in {where} differ in size: {which} {f.shape[1]}x{f.shape[0]}, "
                            f"the first {frames[0].shape[1]}x{frames[0].shape[0]}")
    return np.stack(frames)


def _read_video_file(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of an mp4/gif/... file, via imageio (ffmpeg or pillow); gray and RGBA converted."""
    import imageio.v3 as iio

    if path.stat().st_size == 0:
        raise DataError(f"video file {path} is empty (0 bytes)")
    try:
        decoded = list(iio.imiter(path))  # frame by frame: (H, W) is a gray frame, never a video of H frames
    except Exception as e:  # decoders raise many types for a corrupt file; the file is named in one clear error
        raise DataError(f"cannot read video file {path} (corrupt, or not a video?): {_first_line(e)}") from None
    return _stack([_to_rgb(np.asarray(f), path) for f in decoded], path)


def _read_frame_folder(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 from the images of a folder, in file-name order."""
    import imageio.v3 as iio

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"frame folder {path} holds no {', '.join(IMAGE_SUFFIXES)} images")
    frames = []
    for f in files:
        try:
            picture = np.asarray(iio.imread(f))
        except Exception as e:  # as above: one clear error naming the image
            raise DataError(f"cannot read image {f}: {_first_line(e)}") from None
        frames.append(_to_rgb(picture, f))
    return _stack(frames, path, [f.name for f in files])


def _resize(frames: np.ndarray, size: int) -> Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, size, size) in [-1, 1]: centre crop to square, then area resize."""
    x = to_model_range(frames)
    H, W = x.shape[-2:]
    s = min(H, W)
    x = x[..., (H - s) // 2 : (H - s) // 2 + s, (W - s) // 2 : (W - s) // 2 + s]
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area") if s != size else x


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
            frames = _read_frame_folder(src) if src.is_dir() else _read_video_file(src)
            frames = frames[::frame_stride]
            if len(frames) < clip_frames:
                raise DataError(f"{src} has {len(frames)} frames (stride {frame_stride}), fewer than the {clip_frames} a clip needs")
            video = _resize(frames, image_size)
            for start in range(0, len(video) - clip_frames + 1, clip_frames):
                self.clips.append(video[start : start + clip_frames].contiguous())

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"video": self.clips[index], "prompt": torch.from_numpy(PROMPT.empty(1)[0])}


def build_dataset(cfg: Config):
    d: DataConfig = cfg.data
    m = cfg.model
    if m.frame_shape != (3, m.image_size, m.image_size):  # both sources give square RGB frames
        raise DataError(f"data.source={d.source} gives square RGB frames, but the model takes {m.frame_shape} "
                        "(channels, height, width): set model.channels=3 and model.image_width=0 (latents and "
                        "captions come with the real-data issue)")
    if d.source == "synthetic":
        return SyntheticVideoDataset(cfg.world, d.seed, d.clip_frames)
    return VideoFolderDataset(d.path, d.clip_frames, cfg.model.image_size, d.frame_stride)


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


def to_device(batch: dict[str, Tensor], device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def get_batch(dataset, indices: list[int]) -> dict[str, Tensor]:
    items = [dataset[i] for i in indices]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
