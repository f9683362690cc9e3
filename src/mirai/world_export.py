"""`mirai world export`: clips of the synthetic world as a captioned video folder, the layout `mirai prepare`
reads (`data.captions`): clip_00000.mp4 beside clip_00000.txt, whose caption is the clip's ground truth in words
(`data.world.caption`). Clip i is `make_clip(world, seed, i, frames)`, so the folder is a pure function of the
arguments, and the text path (captions -> text encoder -> cross-attention) is tested on the world end to end."""

from __future__ import annotations

from pathlib import Path

from .config import WorldConfig
from .data.frames import to_model_range
from .data.world import caption, make_clip
from .video import save_video


def export_world(world: WorldConfig, out: str | Path, clips: int, frames: int, seed: int = 0,
                 fps: int = 8) -> list[Path]:
    """Write `clips` clips of `frames` frames (mp4 at the world's size, `fps`) with a caption .txt each; returns
    the videos. mp4 is lossy (H.264): the prepared clips are close to, not equal to, the world's frames."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(clips):
        clip = make_clip(world, seed, i, frames)
        video = save_video(to_model_range(clip.frames), out / f"clip_{i:05d}.mp4", fps=fps, scale=1)
        video.with_suffix(".txt").write_text(caption(world, clip) + "\n")
        written.append(video)
    return written
