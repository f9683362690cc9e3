"""`mirai prepare DATA --out CACHE`: a folder of captioned videos -> latents and caption embeddings, once.

One streaming pass over the folder (`data.captions` layout): every video is read, resampled and cut into clips
(`prepare.*`), the clips are encoded in batches by the autoencoder (identity or the Wan VAE), their captions
by the text encoder, and every `shard_size` clips are written as one safetensors shard. Memory holds one video
and one shard. The manifest (`manifest.json`) lists each shard's clips (source file, sha256, frames, fps,
caption) and the model ids; it is rewritten atomically after each shard, so a killed run resumes after the
last written shard and writes the same shards a run without the kill writes. Unusable videos (unreadable,
too short, no caption) are reported by name and skipped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import PrepareConfig, to_dict
from .data.cache import EMPTY_PROMPT, MANIFEST, shard_name
from .data.captions import VideoEntry, scan_folder
from .data.videos import DataError, read_source, resize_crop, sample_clips, source_fps, source_sha256
from .models.autoencoder import folder_id
from .models.build import load_autoencoder
from .models.text import TextEncoder

LATENT_DTYPE = torch.float16  # half the disk; far below the models' error (as the ODE pairs)


def settings(p: PrepareConfig) -> dict[str, Any]:
    """What the shards depend on: a cache is only resumed with the same settings and models."""
    keep = {k: v for k, v in to_dict(p).items() if k not in ("batch_size", "vae", "text_encoder")}
    return {**keep, "vae": folder_id(p.vae), "text_encoder": folder_id(p.text_encoder) if p.text_encoder else ""}


def write_json(data: dict, path: Path) -> None:
    """Atomically: a kill never leaves half a manifest."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_manifest(out: Path, want: dict[str, Any]) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.is_file():
        return {"settings": want, "shards": [], "refused": {}}
    manifest = json.loads(path.read_text())
    if manifest["settings"] != want:
        changed = sorted(k for k in want if manifest["settings"].get(k) != want[k])
        raise DataError(f"{out} was prepared with other settings ({', '.join(changed)}); use another --out")
    return manifest


class ShardWriter:
    """Encodes clips in batches and writes a shard every `shard_size` clips."""

    def __init__(self, out: Path, p: PrepareConfig, manifest: dict, ae, text: TextEncoder | None):
        self.out, self.p, self.manifest, self.ae, self.text = out, p, manifest, ae, text
        self.pending: list[tuple[dict, Tensor]] = []  # clips waiting for the encoders
        self.encoded: list[tuple[dict, dict[str, Tensor]]] = []  # clips of the shard being filled

    def add(self, meta: dict, clip: Tensor) -> None:
        self.pending.append((meta, clip))
        if len(self.pending) == self.p.batch_size:
            self.encode()

    def encode(self) -> None:
        if not self.pending:
            return
        metas, clips = zip(*self.pending)
        self.pending = []
        tensors = {"latents": self.ae.encode(torch.stack(clips)).to(LATENT_DTYPE)}
        if self.text is not None:
            emb, mask = self.text.encode([m["caption"] or "" for m in metas])
            tensors.update(prompt=emb.to(LATENT_DTYPE), prompt_mask=mask)
        for i, meta in enumerate(metas):
            self.encoded.append((meta, {k: v[i] for k, v in tensors.items()}))
            if len(self.encoded) == self.p.shard_size:
                self.write()

    def write(self) -> None:
        if not self.encoded:
            return
        name = shard_name(len(self.manifest["shards"]))
        metas, items = zip(*self.encoded)
        tensors = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        ckpt.atomic_save(tensors, self.out / name, {"kind": "latent_cache", "clips": len(metas)})
        self.manifest["shards"].append({"file": name, "clips": list(metas)})
        write_json(self.manifest, self.out / MANIFEST)
        self.encoded = []

    def finish(self) -> None:
        self.encode()
        self.write()
        write_json(self.manifest, self.out / MANIFEST)


def entry_clips(entry: VideoEntry, p: PrepareConfig) -> tuple[float, list]:
    """(source fps, the clips of a video as uint8 arrays); DataError when unusable."""
    if entry.caption is None and p.missing_caption == "skip":
        raise DataError(f"{entry.name} has no caption ({entry.path.with_suffix('.txt').name} or a captions.jsonl line)")
    fps = source_fps(entry.path, p.folder_fps)
    frames = read_source(entry.path)
    clips = sample_clips(frames, fps, p.fps, p.frames, p.clips_per_video)
    if not clips:
        raise DataError(f"{entry.name} has {len(frames)} frames, fewer than the {p.frames} of a clip (prepare.fps={p.fps})")
    return fps, clips


def prepare(root: str | Path, out: str | Path, p: PrepareConfig, device="cpu", quiet: bool = False) -> dict:
    """Prepare (or resume preparing) the cache `out` from the video folder `root`; returns the manifest."""
    entries, out = scan_folder(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.remove_stale_temporaries(out)
    manifest = read_manifest(out, settings(p))
    manifest["models"] = {"vae": str(Path(p.vae).resolve()) if p.vae else "", "text_encoder": p.text_encoder and
                          str(Path(p.text_encoder).resolve())}  # where `mirai sample` finds them again
    ae = load_autoencoder(p.vae, device)
    if (p.frames - 1) % ae.temporal:
        raise DataError(f"prepare.frames={p.frames}: the autoencoder takes 1 + {ae.temporal}k frames")
    if (p.height % ae.spatial) or ((p.width or p.height) % ae.spatial):
        raise DataError(f"prepare.height/width must be multiples of the autoencoder's {ae.spatial}x compression")
    text = TextEncoder(p.text_encoder, p.text_len, device) if p.text_encoder else None
    if text is not None and not (out / EMPTY_PROMPT).is_file():  # the unconditional / negative default
        emb, mask = text.encode([""])
        ckpt.atomic_save({"prompt": emb[0].to(LATENT_DTYPE), "prompt_mask": mask[0]}, out / EMPTY_PROMPT,
                         {"kind": "empty_prompt"})
    done = {(c["source"], c["sha256"], c["clip"]) for s in manifest["shards"] for c in s["clips"]}
    writer = ShardWriter(out, p, manifest, ae, text)
    start, clips_done = time.monotonic(), 0
    bar = tqdm(entries, desc="prepare", unit="video", disable=quiet)
    for entry in bar:
        sha = source_sha256(entry.path)
        try:
            fps, clips = entry_clips(entry, p)
        except DataError as e:
            manifest["refused"][entry.name] = str(e)
            bar.write(f"refused {entry.name}: {e}") if not quiet else None
            continue
        manifest["refused"].pop(entry.name, None)
        for j, clip in enumerate(clips):
            if (entry.name, sha, j) in done:
                continue
            meta = {"source": entry.name, "sha256": sha, "clip": j, "frames": len(clip), "fps": fps,
                    "caption": entry.caption}
            writer.add(meta, resize_crop(clip, p.height, p.width or p.height))
            clips_done += 1
        bar.set_postfix(clips_per_s=f"{clips_done / max(time.monotonic() - start, 1e-9):.2f}")
    writer.finish()
    return manifest

