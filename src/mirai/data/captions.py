"""A dataset a person can make by hand: a folder of videos, each with a caption.

    my_videos/
      beach.mp4        beach.txt        <- the caption of beach.mp4, beside it
      dog.webm         dog.txt
      cat.gif                           <- or a line {"file": "cat.gif", "caption": "..."} in captions.jsonl
      street/ 0001.png 0002.png ...     <- a folder of frames is one video (its caption: street.txt)
      captions.jsonl                    (optional; a .txt beside a video wins over it)

`scan_folder` lists the videos with their captions (None where missing), `check_folder` reads every video once
and reports what the folder holds before anyone trains on it (`mirai prepare --check`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PrepareConfig
from .videos import VIDEO_SUFFIXES, DataError, frame_files, read_source, sample_clips, source_fps

CAPTIONS_FILE = "captions.jsonl"


@dataclass
class VideoEntry:
    """One video of a folder: a file or a frame folder, and its caption (None when it has none)."""

    path: Path
    caption: str | None

    @property
    def name(self) -> str:
        return self.path.name


def read_captions_jsonl(path: Path) -> dict[str, str]:
    """{file name: caption} from captions.jsonl; a bad line is a DataError naming the file and line."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["file"])] = str(row["caption"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f'{path} line {n} is not {{"file": ..., "caption": ...}}: {line[:80]!r}') from None
    return out


def scan_folder(root: str | Path) -> list[VideoEntry]:
    """The videos of `root` (files of a video suffix and folders holding images), sorted by name, with captions."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"video folder not found: {root}")
    jsonl = root / CAPTIONS_FILE
    from_jsonl = read_captions_jsonl(jsonl) if jsonl.is_file() else {}
    entries = []
    for path in sorted(root.iterdir()):
        if not (path.suffix.lower() in VIDEO_SUFFIXES or (path.is_dir() and frame_files(path))):
            continue
        txt = path.with_suffix(".txt") if path.is_file() else path.parent / f"{path.name}.txt"
        caption = txt.read_text().strip() if txt.is_file() else from_jsonl.get(path.name)
        entries.append(VideoEntry(path, caption))
    if not entries:
        raise DataError(f"video folder {root} holds no videos ({', '.join(VIDEO_SUFFIXES)} files or frame folders)")
    return entries


@dataclass
class FolderReport:
    """What `mirai prepare --check` prints."""

    videos: int = 0
    clips: int = 0  # clips `mirai prepare` would cut with these settings
    frames: int = 0  # total frames of the readable videos
    resolutions: Counter = field(default_factory=Counter)  # "WxH" -> videos
    missing_captions: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # name -> why

    def lines(self) -> list[str]:
        res = ", ".join(f"{r} ({n})" for r, n in self.resolutions.most_common())
        out = [f"videos: {self.videos} ({len(self.refused)} refused)", f"clips: {self.clips}",
               f"frames: {self.frames}", f"resolutions: {res or '-'}",
               f"captions missing: {len(self.missing_captions)}" + (f" ({', '.join(self.missing_captions)})"
                                                                   if self.missing_captions else "")]
        out += [f"refused {name}: {why}" for name, why in self.refused.items()]
        return out


def check_folder(root: str | Path, p: PrepareConfig) -> FolderReport:
    """Read every video once (one at a time: memory is one video) and count what `mirai prepare` would get."""
    report = FolderReport()
    for entry in scan_folder(root):
        report.videos += 1
        if entry.caption is None:
            report.missing_captions.append(entry.name)
        try:
            frames = read_source(entry.path)
        except DataError as e:
            report.refused[entry.name] = str(e)
            continue
        report.frames += len(frames)
        report.resolutions[f"{frames.shape[2]}x{frames.shape[1]}"] += 1
        clips = sample_clips(frames, source_fps(entry.path, p.folder_fps), p.fps, p.frames, p.clips_per_video)
        if not clips:
            report.refused[entry.name] = f"{len(frames)} frames, fewer than the {p.frames} of a clip (at fps {p.fps or 'own'})"
        report.clips += len(clips)
    return report
