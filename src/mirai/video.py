"""Writing videos people can look at: mp4, gif and PNG contact sheets (frames in a grid)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from torch import Tensor

from .data.frames import to_uint8
from .data.prompt import PROMPT

VIDEO_FORMATS = (".mp4", ".gif", ".png")  # what save_video writes (.png: a contact sheet)


class OutputError(ValueError):
    """An output path has an unknown format or cannot be written; the message names it."""


def check_output(path: str | Path, formats: tuple[str, ...] | None = None, folder: bool = False) -> Path:
    """Refuse an output of an unknown format, or in a place that cannot be written, before any work is done.

    Creates the folder (the path itself when `folder`, else its parent) and writes a temporary file there, which
    is what writing the output will need: permission bits alone are not the answer on read-only mounts or as root.
    """
    path = Path(path)
    if formats is not None and path.suffix not in formats:
        raise OutputError(f"{path}: unknown output format '{path.suffix}' (use {', '.join(formats)})")
    if not folder and path.is_dir():
        raise OutputError(f"{path} is a folder; an output file is needed here")
    target = path if folder else path.parent
    blocker = next((p for p in (target, *target.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"cannot write {path}: {blocker} is a file, not a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=target).close()
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _frames_uint8(video: Tensor | np.ndarray) -> np.ndarray:
    """(B, T, C, H, W) or (T, C, H, W) tensor in [-1, 1], or uint8 (..., T, H, W, 3) -> uint8 array."""
    if isinstance(video, np.ndarray):
        return video
    return to_uint8(video)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, 3) so tiny frames stay crisp."""
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else frames


def tile_batch(frames: np.ndarray, pad: int = 2) -> np.ndarray:
    """(B, T, H, W, 3) -> (T, H', W', 3): the videos of a batch side by side."""
    B, T, H, W, C = frames.shape
    out = np.full((T, H, B * (W + pad) - pad, C), 255, dtype=np.uint8)
    for b in range(B):
        out[:, :, b * (W + pad) : b * (W + pad) + W] = frames[b]
    return out


def contact_sheet(video: Tensor | np.ndarray, scale: int = 4, pad: int = 2, max_frames: int = 32) -> np.ndarray:
    """(B, T, ...) -> one image: a row per video, a column per frame (at most max_frames, evenly spaced)."""
    frames = _frames_uint8(video)
    if frames.ndim == 4:
        frames = frames[None]
    B, T = frames.shape[:2]
    keep = np.unique(np.linspace(0, T - 1, min(T, max_frames)).round().astype(int))
    frames = upscale(frames[:, keep], scale)
    H, W = frames.shape[2:4]
    sheet = np.full((B * (H + pad) - pad, len(keep) * (W + pad) - pad, 3), 255, dtype=np.uint8)
    for b in range(B):
        for j in range(len(keep)):
            sheet[b * (H + pad) : b * (H + pad) + H, j * (W + pad) : j * (W + pad) + W] = frames[b, j]
    return sheet


def save_npz(video: Tensor, prompt: Tensor | None, path: str | Path) -> Path:
    """Generated videos for evaluation: frames uint8 (B, T, H, W, 3) and prompts (B, P) (zeros if none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = _frames_uint8(video)
    prompts = prompt.cpu().numpy() if prompt is not None else PROMPT.empty(frames.shape[0])
    np.savez_compressed(path, frames=frames, prompts=prompts)
    return path


def save_video(video: Tensor | np.ndarray, path: str | Path, fps: int = 8, scale: int = 4) -> Path:
    """Write a batch of videos side by side as .mp4, .gif, or a .png contact sheet (chosen by suffix)."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = _frames_uint8(video)
    if path.suffix == ".png":
        iio.imwrite(path, contact_sheet(frames, scale))
        return path
    if frames.ndim == 5:
        frames = tile_batch(frames)
    frames = upscale(frames, scale)
    if path.suffix == ".gif":
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
    elif path.suffix == ".mp4":
        H, W = frames.shape[1:3]  # yuv420p needs even sizes
        frames = frames[:, : H - H % 2, : W - W % 2]
        iio.imwrite(path, frames, fps=fps, codec="libx264", plugin="FFMPEG", macro_block_size=1)
    else:
        raise OutputError(f"unknown video format '{path.suffix}' (use {', '.join(VIDEO_FORMATS)})")
    return path
