"""`mirai prepare DATA --out CACHE`: a folder of captioned videos -> latents and caption embeddings, once.

One streaming pass over the folder (`data.captions` layout): every video is read, resampled and cut into clips
(`prepare.*`), the clips are encoded in batches by the autoencoder (identity or the Wan VAE), their captions
by the text encoder, and every `shard_size` clips are written as one safetensors shard. Memory holds one video
and one shard. The manifest (`manifest.json`) lists each shard's clips (source file, sha256, frames, fps,
caption) and the model ids; it is rewritten atomically after each shard, so a killed run resumes after the
last written shard and writes the same shards a run without the kill writes. Unusable videos (unreadable,
too short, no caption) are reported by name and skipped.

Under torchrun (`torchrun --nproc_per_node W -m mirai prepare ...`) the ranks write the same cache together:
shard s by rank s % W, like the ODE pairs; rank 0 writes the manifest once, after a barrier (`prepare_split`).
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

from . import checkpoint as ckpt, distributed as dist
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
    """Encodes clips in batches and writes a shard every `shard_size` clips. A batch never spans two shards, so a
    shard's numbers do not depend on its neighbours (ranks of a split run encode shards alone).

    name: the one shard to write, outside the manifest (a rank of a split run); None: shards in turn, each
    recorded in the manifest as it is written."""

    def __init__(self, out: Path, p: PrepareConfig, manifest: dict, ae, text: TextEncoder | None,
                 name: str | None = None):
        self.out, self.p, self.manifest, self.ae, self.text, self.name = out, p, manifest, ae, text, name
        self.pending: list[tuple[dict, Tensor]] = []  # clips waiting for the encoders
        self.encoded: list[tuple[dict, dict[str, Tensor]]] = []  # clips of the shard being filled

    def add(self, meta: dict, clip: Tensor) -> None:
        self.pending.append((meta, clip))
        if len(self.pending) == self.p.batch_size or len(self.encoded) + len(self.pending) == self.p.shard_size:
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
        name = self.name or shard_name(len(self.manifest["shards"]))
        metas, items = zip(*self.encoded)
        tensors = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        ckpt.atomic_save(tensors, self.out / name, {"kind": "latent_cache", "clips": len(metas), "ids": clip_ids(metas)})
        self.encoded = []
        if self.name is None:
            self.manifest["shards"].append({"file": name, "clips": list(metas)})
            write_json(self.manifest, self.out / MANIFEST)

    def finish(self) -> None:
        self.encode()
        self.write()
        if self.name is None:
            write_json(self.manifest, self.out / MANIFEST)


def clip_ids(metas) -> list[list]:
    """What a shard holds, stamped in its file: (source, sha256, clip) of each clip."""
    return [[m["source"], m["sha256"], m["clip"]] for m in metas]


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
    """Prepare (or resume preparing) the cache `out` from the video folder `root`; returns the manifest.
    Under torchrun the shards are split across the ranks (`prepare_split`): the same cache, W times faster."""
    entries, out = scan_folder(root), Path(out)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(out)
    dist.barrier()
    manifest = read_manifest(out, settings(p))
    manifest["models"] = {"vae": str(Path(p.vae).resolve()) if p.vae else "", "text_encoder": p.text_encoder and
                          str(Path(p.text_encoder).resolve())}  # where `mirai sample` finds them again
    ae = load_autoencoder(p.vae, device)
    if (p.frames - 1) % ae.temporal:
        raise DataError(f"prepare.frames={p.frames}: the autoencoder takes 1 + {ae.temporal}k frames")
    if (p.height % ae.spatial) or ((p.width or p.height) % ae.spatial):
        raise DataError(f"prepare.height/width must be multiples of the autoencoder's {ae.spatial}x compression")
    text = TextEncoder(p.text_encoder, p.text_len, device) if p.text_encoder else None
    if text is not None and not (out / EMPTY_PROMPT).is_file() and dist.is_main():  # the unconditional default
        emb, mask = text.encode([""])
        ckpt.atomic_save({"prompt": emb[0].to(LATENT_DTYPE), "prompt_mask": mask[0]}, out / EMPTY_PROMPT,
                         {"kind": "empty_prompt"})
    done = {(c["source"], c["sha256"], c["clip"]) for s in manifest["shards"] for c in s["clips"]}
    if dist.world() > 1:
        return prepare_split(entries, out, p, manifest, done, ae, text, quiet)
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



# --------------------------------------------------------------------------------------------------
# Several processes (torchrun): shard s by rank s % W


def survey(entry: VideoEntry, p: PrepareConfig) -> tuple[str, float, list[int]] | str:
    """(sha256, source fps, frames of each clip) of a video, or why it is refused."""
    try:
        fps, clips = entry_clips(entry, p)
    except DataError as e:
        return str(e)
    return source_sha256(entry.path), fps, [len(c) for c in clips]


def prepare_split(entries: list[VideoEntry], out: Path, p: PrepareConfig, manifest: dict, done: set, ae,
                  text: TextEncoder | None, quiet: bool) -> dict:
    """The one-process cache, written by W ranks. The ranks first survey the videos (i by rank i % W: a decode
    each) and share what they found, so every rank knows the clips in the one-process order; these, in groups
    of shard_size, are the shards one process writes, and rank r encodes shards r, r + W, ... (a video it needs
    is decoded again). Rank 0 writes the manifest once every shard is on disk. A killed run resumes: the plan
    depends only on the manifest, which is written at the end: a shard file stamped with its group's clips is kept."""
    mine = {i: survey(e, p) for i, e in enumerate(entries) if i % dist.world() == dist.rank()}
    found = {i: r for part in dist.gather_objects(mine) for i, r in part.items()}
    pending = []  # (entry, clip metadata) in the one-process order
    for i, entry in enumerate(entries):
        if isinstance(found[i], str):
            manifest["refused"][entry.name] = found[i]
            continue
        manifest["refused"].pop(entry.name, None)
        sha, fps, frames = found[i]
        pending += [(entry, {"source": entry.name, "sha256": sha, "clip": j, "frames": n, "fps": fps,
                             "caption": entry.caption}) for j, n in enumerate(frames) if (entry.name, sha, j) not in done]
    groups = [pending[k : k + p.shard_size] for k in range(0, len(pending), p.shard_size)]
    names = [shard_name(len(manifest["shards"]) + k) for k in range(len(groups))]
    for k in tqdm(range(dist.rank(), len(groups), dist.world()), desc="prepare", unit="shard", disable=quiet):
        if not written(out / names[k], groups[k]):
            write_group(out, p, groups[k], names[k], ae, text)
    dist.barrier()  # every shard is on disk before the manifest names it
    manifest["shards"] += [{"file": n, "clips": [meta for _, meta in g]} for n, g in zip(names, groups)]
    if dist.is_main():
        write_json(manifest, out / MANIFEST)
    dist.barrier()
    return manifest


def written(path: Path, group: list[tuple[VideoEntry, dict]]) -> bool:
    """Whether a killed run already wrote this group's shard (its stamp names the same clips)."""
    try:
        return path.is_file() and ckpt.read_meta(path).get("ids") == clip_ids([m for _, m in group])
    except ckpt.CheckpointError:
        return False


def write_group(out: Path, p: PrepareConfig, group: list[tuple[VideoEntry, dict]], name: str, ae,
                text: TextEncoder | None) -> None:
    """One shard: its clips, each cut from its video (decoded once per shard), encoded in batches."""
    writer, decoded = ShardWriter(out, p, {}, ae, text, name=name), {}
    for entry, meta in group:
        if entry.name not in decoded:
            decoded = {entry.name: entry_clips(entry, p)[1]}  # clips of a video are consecutive: keep one
        writer.add(meta, resize_crop(decoded[entry.name][meta["clip"]], p.height, p.width or p.height))
    writer.finish()
