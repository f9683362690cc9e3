"""The cache `mirai prepare` writes, read back as a training dataset (`data.source: cache`, `data.path`).

    CACHE/manifest.json            settings, model ids, each shard's clips (source, sha256, frames, fps, caption)
    CACHE/shard_00000.safetensors  latents (N, T', C, h, w); with a text encoder also prompt (N, L, D) and
                                   prompt_mask (N, L)
    CACHE/empty_prompt.safetensors the empty caption's embedding (with a text encoder)

Items are {"video": (clip_frames, C, h, w) latents, "prompt": (L, D) caption embedding} (the prompt is the
structured prompt's zeros when the cache has no embeddings), cut as consecutive windows of each clip.
"""

from __future__ import annotations

import collections
import functools
import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from .. import checkpoint as ckpt
from ..models.autoencoder import Autoencoder
from ..models.build import load_autoencoder
from .prompt import PROMPT
from .videos import DataError

MANIFEST = "manifest.json"
EMPTY_PROMPT = "empty_prompt.safetensors"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def read_cache_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder} is not a prepared cache (no {MANIFEST}; run `mirai prepare DATA --out {folder}`)")
    return json.loads(path.read_text())


OPEN_SHARDS = 4  # shards a dataset keeps open (memory-mapped) at once; the least recently used closes first


class ShardReader:
    """Rows of a cache's shards, read lazily: a row costs the bytes of that row, whatever the cache's size.

    At most `max_open` shards are open at once (`safe_open` maps a file; nothing is read until a row is asked
    for). A shard's checksum is verified the first time it is opened, one tensor at a time (so a bit flip is
    still named, as `checkpoint.load` names it), and not again when it is reopened."""

    def __init__(self, files: list[Path], max_open: int = OPEN_SHARDS):
        self.files, self.max_open = files, max_open
        self.open: collections.OrderedDict[int, object] = collections.OrderedDict()  # shard -> safe_open handle
        self.verified: set[int] = set()

    def handle(self, shard: int):
        if shard in self.open:
            self.open.move_to_end(shard)
            return self.open[shard]
        if shard not in self.verified:
            ckpt.verify(self.files[shard])
            self.verified.add(shard)
        self.open[shard] = safe_open(self.files[shard], "pt")
        while len(self.open) > self.max_open:
            self.open.popitem(last=False)  # dropping the handle unmaps the file
        return self.open[shard]

    def __getstate__(self) -> dict:
        """Pickled for a batch worker without its open handles (a mapped file does not travel; it reopens)."""
        return {**self.__dict__, "open": collections.OrderedDict()}

    def shape(self, shard: int, key: str) -> tuple[int, ...] | None:
        """Shape of tensor `key` of a shard read from its header (None when the shard has no such tensor)."""
        with safe_open(self.files[shard], "pt") as f:
            return tuple(f.get_slice(key).get_shape()) if key in f.keys() else None

    def read(self, shard: int, key: str, row: int, frames: slice = slice(None)) -> Tensor:
        """Row `row` of tensor `key` of a shard (frames `frames` of it), as stored (float16 latents)."""
        return self.handle(shard).get_slice(key)[row, frames]


class LatentDataset:
    """The clips of a cache, read from its shards on demand (float16 on disk, float32 items): memory holds the
    manifest, an index of (shard, row, first frame) windows and at most `max_open` open shards."""

    def __init__(self, folder: str | Path, clip_frames: int, max_open: int = OPEN_SHARDS):
        folder = Path(folder)
        self.manifest = read_cache_manifest(folder)
        shards = self.manifest["shards"]
        if not shards:
            raise DataError(f"{folder} holds no prepared clips (see 'refused' in its {MANIFEST})")
        self.reader = ShardReader([folder / s["file"] for s in shards], max_open)
        self.clips = [(k, row) for k, s in enumerate(shards) for row in range(len(s["clips"]))]  # clip -> (shard, row)
        self.captions = [c["caption"] for s in shards for c in s["clips"]]
        shape = self.reader.shape(0, "latents")  # (rows, T', C, h, w): every shard holds clips of one shape
        frames = shape[1]
        if frames < clip_frames:
            raise DataError(f"{folder} holds clips of {frames} latent frames, fewer than data.clip_frames={clip_frames}")
        self.frame_shape: tuple[int, ...] = tuple(shape[2:])
        prompt_shape = self.reader.shape(0, "prompt")  # (rows, L, D) or None (no text encoder)
        self.text_dim = prompt_shape[-1] if prompt_shape else 0  # width of the caption embeddings (0: none)
        self.windows = [(c, s) for c in range(len(self.clips)) for s in range(0, frames - clip_frames + 1, clip_frames)]
        self.clip_frames = clip_frames
        self.empty_prompt = read_empty_prompt(folder)

    @functools.cached_property
    def autoencoder(self) -> Autoencoder:
        """The autoencoder the cache was prepared with (loaded on first use)."""
        return load_autoencoder(self.manifest["models"]["vae"])

    def decode(self, latents: Tensor) -> Tensor:
        """Latent videos (B, T', C, h, w) of this cache -> pictures (B, T, 3, H, W) in [-1, 1], through the
        autoencoder the cache was prepared with."""
        return self.autoencoder.decode(latents)

    def clip_prompt(self, clip: int) -> Tensor:
        """The caption embedding (L, D) of clip `clip` (in manifest order), float32."""
        shard, row = self.clips[clip]
        return self.reader.read(shard, "prompt", row).float()

    @property
    def num_clips(self) -> int:
        return len(self.clips)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip, start = self.windows[index]
        shard, row = self.clips[clip]
        video = self.reader.read(shard, "latents", row, slice(start, start + self.clip_frames)).float()
        prompt = self.clip_prompt(clip) if self.text_dim else torch.from_numpy(PROMPT.empty(1)[0])
        return {"video": video, "prompt": prompt}


def read_empty_prompt(folder: str | Path) -> Tensor | None:
    """The empty caption's embedding (L, D) float32 that `mirai prepare` wrote, or None (no text encoder)."""
    path = Path(folder) / EMPTY_PROMPT
    return ckpt.load(path)[0]["prompt"].float() if path.is_file() else None
