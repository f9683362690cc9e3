"""Reading videos people have: mp4/webm/gif files and folders of frames, at any size and frame rate.

`read_source` gives (T, H, W, 3) uint8 frames, `source_fps` the frame rate a file declares, `sample_clips`
resamples to a target rate and cuts clips of a fixed length, `resize_crop` scales and centre-crops to the
frame size a model takes. Every unusable file is a `DataError` that names it.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .frames import to_model_range

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class DataError(ValueError):
    """A data file (a video, a frame folder, an eval.json) cannot be used; the message names it."""


def first_line(error: Exception) -> str:
    """Decoders put whole ffmpeg logs in their messages; one line of it is enough."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def to_rgb(frame: np.ndarray, where: Path) -> np.ndarray:
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


def stack_frames(frames: list[np.ndarray], where: Path, names: list[str] | None = None) -> np.ndarray:
    """(T, H, W, 3) from same-sized frames, else a DataError naming the first frame of another size."""
    if not frames:
        raise DataError(f"{where} holds no frames")
    for i, f in enumerate(frames):
        if f.shape != frames[0].shape:
            which = f"{names[i]} is" if names else f"frame {i} is"
            raise DataError(f"frames in {where} differ in size: {which} {f.shape[1]}x{f.shape[0]}, "
                            f"the first {frames[0].shape[1]}x{frames[0].shape[0]}")
    return np.stack(frames)


def read_video_file(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of an mp4/gif/... file, via imageio (ffmpeg or pillow); gray and RGBA converted."""
    import imageio.v3 as iio

    if path.stat().st_size == 0:
        raise DataError(f"video file {path} is empty (0 bytes)")
    try:
        decoded = list(iio.imiter(path))  # frame by frame: (H, W) is a gray frame, never a video of H frames
    except Exception as e:  # decoders raise many types for a corrupt file; the file is named in one clear error
        raise DataError(f"cannot read video file {path} (corrupt, or not a video?): {first_line(e)}") from None
    return stack_frames([to_rgb(np.asarray(f), path) for f in decoded], path)


def frame_files(path: Path) -> list[Path]:
    """The images of a frame folder, in file-name order."""
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_frame_folder(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 from the images of a folder, in file-name order."""
    import imageio.v3 as iio

    files = frame_files(path)
    if not files:
        raise DataError(f"frame folder {path} holds no {', '.join(IMAGE_SUFFIXES)} images")
    frames = []
    for f in files:
        try:
            picture = np.asarray(iio.imread(f))
        except Exception as e:  # as above: one clear error naming the image
            raise DataError(f"cannot read image {f}: {first_line(e)}") from None
        frames.append(to_rgb(picture, f))
    return stack_frames(frames, path, [f.name for f in files])


def read_source(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 of a video file or a frame folder."""
    return read_frame_folder(path) if path.is_dir() else read_video_file(path)


# The first bytes of each picture and video container the readers take, as a file names its kind (an upload has no
# trusted name): PNG, JPEG, GIF, BMP, WebM/Matroska, and ISO media (mp4/mov: "ftyp" at byte 4).
MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
         (b"\x1a\x45\xdf\xa3", ".webm"))


def upload_suffix(data: bytes) -> str | None:
    """The file suffix of an uploaded picture or video, read from its first bytes (None: not one the readers take)."""
    if data[4:8] == b"ftyp":
        return ".mp4"
    return next((suffix for magic, suffix in MAGIC if data.startswith(magic)), None)


def read_upload(data: bytes, limit_bytes: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of an uploaded image or video (`mirai serve`), decoded by `read_video_file` from a
    private temporary file; a DataError names what is wrong (too large, empty, not a picture or video, corrupt)."""
    if not data:
        raise DataError("the upload is empty")
    if len(data) > limit_bytes:
        raise DataError(f"the upload is {len(data) / 2**20:.1f} MiB, over the limit of {limit_bytes / 2**20:.0f} MiB")
    suffix = upload_suffix(data)
    if suffix is None:
        raise DataError("the upload is not a picture or a video this reader takes (PNG, JPEG, GIF, BMP, MP4, MOV, "
                        "WebM)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return read_video_file(path)
        except DataError as e:
            raise DataError(str(e).replace(f"video file {path}", "the upload").replace(str(path), "the upload")) from None


def source_fps(path: Path, default: float) -> float:
    """The frame rate a video file declares (ffmpeg's `fps`, a GIF's frame `duration`); `default` for frame
    folders and files that declare none."""
    import imageio.v3 as iio

    if path.is_dir():
        return default
    try:
        meta = iio.immeta(path)
    except Exception:  # a file without readable metadata keeps the default rate; reading its frames decides
        return default
    if meta.get("fps"):
        return float(meta["fps"])
    if meta.get("duration"):  # GIF: milliseconds per frame
        return 1000.0 / float(meta["duration"])
    return default


def source_sha256(path: Path) -> str:
    """sha256 of a video file's bytes, or of a frame folder's image names and bytes (in order)."""
    h = hashlib.sha256()
    for f in frame_files(path) if path.is_dir() else [path]:
        if path.is_dir():
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def sample_clips(frames: np.ndarray, fps: float, target_fps: float, length: int, max_clips: int) -> list[np.ndarray]:
    """Resample (T, ...) frames from `fps` to `target_fps` (0 = keep; nearest earlier frame) and cut up to
    `max_clips` consecutive clips of `length` frames (0 = as many as fit). Empty when the video is too short."""
    if target_fps > 0 and abs(target_fps - fps) > 1e-6:
        count = int(np.floor((len(frames) - 1) * target_fps / fps)) + 1
        index = np.minimum(np.floor(np.arange(count) * fps / target_fps + 1e-6).astype(int), len(frames) - 1)
        frames = frames[index]
    clips = [frames[s : s + length] for s in range(0, len(frames) - length + 1, length)]
    return clips[:max_clips] if max_clips > 0 else clips


def resize_crop(frames: np.ndarray, height: int, width: int) -> Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, height, width) in [-1, 1]: centre crop to the target's aspect ratio, then
    area resize (pixel averaging: no aliasing when shrinking)."""
    x = to_model_range(frames)
    H, W = x.shape[-2:]
    h, w = (H, H * width // height) if H * width <= W * height else (W * height // width, W)
    x = x[..., (H - h) // 2 : (H - h) // 2 + h, (W - w) // 2 : (W - w) // 2 + w]
    return torch.nn.functional.interpolate(x, size=(height, width), mode="area") if (h, w) != (height, width) else x
