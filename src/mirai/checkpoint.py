"""Checkpoints in safetensors, written atomically (write to a temporary file, then rename).

Two kinds of file:
- `model.safetensors`: a generator alone (EMA weights) plus, in the metadata, its model config and the run
  settings sampling needs (world, data, sample, schedule), so the file samples alike wherever it is copied.
  This is what users sample from; it knows nothing about training.
- `ckpt.safetensors`: the full training state for exact resume (model, EMA, optimiser tensors and RNG
  states as tensors; step, optimiser hyper-parameters and the run config as JSON metadata).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import Config, ConfigError, ModelConfig, load_yaml, model_config_from_dict, settings_config, to_dict
from .models.build import build_model

FORMAT = "mirai/1"


# Named points of a checkpoint write: "checkpoint-before-rename" (a file written and flushed, not yet renamed
# into place) and "checkpoint-between-files" (the training state committed, the exported model not yet written).
# `reached(site)` calls every observer in `observers` with the site's name, in order; none is registered by the
# package, so it does nothing. Tests and the kill harness (tests/harness/kill.py) register one to act there.
observers: list[Callable[[str], None]] = []


def reached(site: str) -> None:
    """Tell every registered observer that a named point of a checkpoint write was reached."""
    for observe in observers:
        observe(site)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or of the wrong kind; the message names the file."""


def tensors_sha256(tensors) -> str:
    """A checksum of names, dtypes, shapes and bytes, stored with the file: a bit flip on disk is caught on load.
    `tensors`: a dict, or any mapping that yields its names and reads a tensor by name (one at a time)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_save(tensors: dict[str, Tensor], path: str | Path, meta: dict[str, Any]) -> None:
    """Write tensors + JSON metadata to `path` so that a crash never leaves a half-written file there: write a
    temporary file beside it, flush it to disk, then rename it over `path` (atomic on POSIX). A failed write
    (a full disk, no permission) raises a CheckpointError and leaves the previous file as it was."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        save_file(tensors, tmp, metadata={"format": FORMAT, "meta": json.dumps(meta), "sha256": tensors_sha256(tensors)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        reached("checkpoint-before-rename")
        os.replace(tmp, path)
    except OSError as e:
        reason = e.strerror or str(e)
        raise CheckpointError(f"could not write {path}: {reason}; the previous {path.name} (if any) is unchanged") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed `atomic_save` left in `folder`; returns them."""
    stale = sorted(Path(folder).glob("*.safetensors*.tmp"))
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def load(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a Mirai safetensors file: (tensors, metadata), its checksum verified."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(path)
        with safe_open(path, "pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (corrupt or truncated?): {e}") from None
    return tensors, checked_meta(path, raw, tensors)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata alone, from the file's header: no tensor is read and the checksum is not verified."""
    path = Path(path)
    try:
        with safe_open(path, "pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (corrupt or truncated?): {e}") from None
    return parsed_meta(path, raw)


def verify(path: str | Path) -> dict[str, Any]:
    """`load`'s checks (format, checksum) reading one tensor at a time, so memory holds the largest tensor, not the
    file; returns the metadata. For files read lazily afterwards (`safe_open`), e.g. the shards of a cache."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(path, "pt") as f:
            return checked_meta(path, f.metadata() or {}, LazyTensors(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (corrupt or truncated?): {e}") from None


class LazyTensors:
    """The tensors of an open safetensors file as a read-only mapping, each read when asked for."""

    def __init__(self, handle):
        self.handle = handle

    def __iter__(self):
        return iter(self.handle.keys())

    def __getitem__(self, key: str) -> Tensor:
        return self.handle.get_tensor(key)


def checked_meta(path: Path, raw: dict[str, str], tensors) -> dict[str, Any]:
    """The metadata of a Mirai file whose raw safetensors metadata is `raw`, after checking its format and the
    checksum of `tensors` (a dict or a `LazyTensors`)."""
    meta = parsed_meta(path, raw)
    if "sha256" in raw and raw["sha256"] != tensors_sha256(tensors):
        raise CheckpointError(f"{path} is corrupt: its tensors do not match the checksum written with them "
                              "(a flipped bit or a damaged copy)")
    return meta


def parsed_meta(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    """The JSON metadata of a Mirai file's raw safetensors metadata, its format checked."""
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a Mirai checkpoint (format {raw.get('format')!r}, expected {FORMAT!r})")
    try:
        return json.loads(raw["meta"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is corrupt: its metadata is not readable") from None


def prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def strip(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


# --------------------------------------------------------------------------------------------------
# Generator-only files


def save_model(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None,
               state: dict[str, Tensor] | None = None) -> None:
    """state: the model's weights when they are not `model.state_dict()` (gathered from shards)."""
    meta = {"kind": "model", "model": to_dict(model.cfg), **(extra or {})}
    atomic_save(model.state_dict() if state is None else state, path, meta)


def save_half(source: str | Path, path: str | Path) -> dict[str, Any]:
    """A model file (or run folder) written again as fp16: half the size, for shipping; the stages load it back into
    fp32. Returns the file's metadata."""
    tensors, meta = load(resolve_model_path(source))
    atomic_save({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, path,
                {**meta, "dtype": "float16"})
    return meta


def resolve_model_path(path: str | Path) -> Path:
    """A run folder means its `model.safetensors`."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    return path


def run_config(path: str | Path, overrides: list[str]) -> Config:
    """The world/data/sample/schedule settings a model (a model file or its run folder) was trained with, with
    `sample.*` overrides applied: those its file carries; for a file written before files carried them, the
    `config.yaml` of its run folder; defaults when there is neither."""
    path = Path(path)
    model = resolve_model_path(path)
    saved = read_meta(model).get("settings") if model.is_file() else None
    if saved is None:
        beside = (path if path.is_dir() else path.parent) / "config.yaml"
        saved = load_yaml(beside) if beside.is_file() else {}
    return settings_config(saved, overrides)


def load_model(path: str | Path, expect_attention: str | None = None) -> nn.Module:
    """Build the model of a model file (or a run folder) and load its weights."""
    path = resolve_model_path(path)
    tensors, meta = load(path)
    if "model" not in meta:
        raise CheckpointError(f"{path} holds no model config (kind {meta.get('kind')!r})")
    try:
        cfg = model_config_from_dict(meta["model"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its model config is invalid: {e}") from None
    if expect_attention and cfg.attention != expect_attention:
        raise CheckpointError(f"{path} is a {cfg.attention} model, but a {expect_attention} model is needed here")
    model = build_model(cfg)
    load_state(model, strip(tensors, "model") if any(k.startswith("model.") for k in tensors) else tensors, path)
    return model


def load_state(module: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """load_state_dict with an error that names the file and the mismatching tensors."""
    check_fits({k: v.shape for k, v in module.state_dict().items()}, {k: v.shape for k, v in state.items()}, path)
    module.load_state_dict(state)


def check_fits(own: dict[str, Any], saved: dict[str, Any], path: str | Path) -> None:
    """A CheckpointError naming the file and the mismatching tensors unless the names and shapes of `saved`
    (the file's) are those of `own` (the module's)."""
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [f"{k}: file {tuple(saved[k])} vs model {tuple(own[k])}"
              for k in own.keys() & saved.keys() if tuple(own[k]) != tuple(saved[k])]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(f"{path} does not fit this model: " + ", ".join(parts))


# What makes a token (and a frame of them): models that agree on these read and write the same sequences, whatever
# their width. Size: what else a weights file must share to load into another model.
TOKEN_KEYS = ("arch", "image_size", "image_width", "channels", "patch_size", "frames_per_chunk", "prompt_vocab",
              "text_dim")
SIZE_KEYS = ("dim", "depth", "heads", "ffn_dim")


def config_diff(a: ModelConfig, b: ModelConfig, keys: tuple[str, ...]) -> list[str]:
    """'key: a's value vs b's value' for each key where the two configs differ."""
    return [f"{k}: {getattr(a, k)} vs {getattr(b, k)}" for k in keys if getattr(a, k) != getattr(b, k)]


def check_same_tokens(a: ModelConfig, b: ModelConfig, name: str, role: str) -> None:
    """Two model configs must agree on what a token is (frames, patches, chunking, prompt); their widths, depths,
    heads and FFN may differ (a 14B real score judging a 1.3B generator's videos)."""
    diff = config_diff(a, b, TOKEN_KEYS)
    if diff:
        raise CheckpointError(f"{name} ({a.preset}) does not share the tokens of {role} ({b.preset}): " + "; ".join(diff))


def check_same_family(a: ModelConfig, b: ModelConfig, name: str, role: str) -> None:
    """Two model configs must agree on what a token is (frames, patches, chunking) and on size."""
    diff = config_diff(a, b, TOKEN_KEYS + SIZE_KEYS)
    if diff:
        raise CheckpointError(f"{name} ({a.preset}) does not match {role} ({b.preset}): " + "; ".join(diff))


# --------------------------------------------------------------------------------------------------
# Optimiser state <-> flat tensors


def optimizer_tensors(sd: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimiser's state dict (`opt.state_dict()`) as flat tensors and JSON metadata."""
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
