"""Wan2.1 transformers in diffusers' folder format <-> Mirai model files. Reads and writes local files only.

A diffusers folder (as `WanTransformer3DModel.save_pretrained` writes it) holds `config.json` and
`diffusion_pytorch_model.safetensors` (or shards named by `diffusion_pytorch_model.safetensors.index.json`).
Mirai's Wan model uses diffusers' tensor names, so weights map one to one; the architecture comes from
`config.json`, and what diffusers does not store (frame size, chunking, mask, prompt fields) from the run's
model config. The structured-prompt tables (Mirai's stand-in for a text encoder) are not diffusers tensors:
an export writes them beside the transformer, in `mirai_prompt_embed.safetensors`, which diffusers ignores
and an import reads back when present. Every missing or mismatched file is a `CheckpointError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from . import checkpoint as ckpt
from .config import Config, ConfigError, ModelConfig, save_config, validate_model
from .models.build import build_model

CLASS_NAME = "WanTransformer3DModel"
CONFIG = "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
INDEX = WEIGHTS + ".index.json"
PROMPT_FILE = "mirai_prompt_embed.safetensors"
PROMPT_PREFIX = "prompt_embed."
DIFFUSERS_VERSION = "0.42.1"  # the version whose WanTransformer3DModel this module matches


def is_diffusers_folder(path: str | Path) -> bool:
    """A folder with a diffusers `config.json` and no Mirai `model.safetensors`."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and not (path / "model.safetensors").is_file()


def read_config(folder: str | Path) -> dict[str, Any]:
    """The folder's `config.json`, checked to describe a text-to-video Wan2.1 transformer Mirai can run."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise ckpt.CheckpointError(f"{path} not found: a diffusers Wan transformer folder holds config.json and "
                                   f"{WEIGHTS} (nothing is downloaded)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ckpt.CheckpointError(f"{path} is not valid JSON: {e}") from None
    if config.get("_class_name") != CLASS_NAME:
        raise ckpt.CheckpointError(f"{path} describes a {config.get('_class_name')!r}, not a {CLASS_NAME}")
    patch = config.get("patch_size", [1, 2, 2])
    unsupported = {
        "patch_size": (patch[0] != 1 or patch[1] != patch[2], "a (1, p, p) patch"),
        "out_channels": (config.get("out_channels") not in (None, config.get("in_channels")), "out = in channels"),
        "cross_attn_norm": (config.get("cross_attn_norm", True) is not True, "true"),
        "qk_norm": (config.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads", "rms_norm_across_heads"),
        "image_dim": (config.get("image_dim") is not None, "null (text-to-video only)"),
        "added_kv_proj_dim": (config.get("added_kv_proj_dim") is not None, "null (text-to-video only)"),
    }
    bad = [f"{k}={config.get(k)!r} (supported: {want})" for k, (wrong, want) in unsupported.items() if wrong]
    if bad:
        raise ckpt.CheckpointError(f"{path}: unsupported Wan options: " + "; ".join(bad))
    return config


def wan_model_config(folder: str | Path, base: ModelConfig) -> ModelConfig:
    """`base` with the architecture of the folder's config.json (frame size, chunking, mask, prompt: from base)."""
    c = read_config(folder)
    try:
        arch = dict(arch="wan", prediction="velocity", dim=c["num_attention_heads"] * c["attention_head_dim"],
                    heads=c["num_attention_heads"], depth=c["num_layers"], ffn_dim=c["ffn_dim"], text_dim=c["text_dim"],
                    freq_dim=c.get("freq_dim", 256), eps=float(c.get("eps", 1e-6)), channels=c["in_channels"],
                    patch_size=c.get("patch_size", [1, 2, 2])[1], rope_max_seq_len=c.get("rope_max_seq_len", 1024))
    except KeyError as e:
        raise ckpt.CheckpointError(f"{Path(folder) / CONFIG} lacks the key {e}") from None
    cfg = dataclasses.replace(base, **arch)
    try:
        validate_model(cfg)
    except ConfigError as e:
        raise ckpt.CheckpointError(f"{Path(folder) / CONFIG} does not fit the run's model settings: {e}") from None
    return cfg


def read_weights(folder: str | Path) -> tuple[dict[str, Tensor], Path]:
    """All transformer tensors of the folder (one file or shards), and the file to name in errors."""
    folder = Path(folder)
    index = folder / INDEX
    if (folder / WEIGHTS).is_file() or not index.is_file():
        files = [folder / WEIGHTS]
    else:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ckpt.CheckpointError(f"{index} is not a safetensors index (weight_map): {e}") from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
    tensors: dict[str, Tensor] = {}
    for path in files:
        if not path.is_file():
            raise ckpt.CheckpointError(f"{path} not found (nothing is downloaded)")
        try:
            tensors.update(load_file(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ckpt.CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    return tensors, files[0] if len(files) == 1 else index


def load_wan(folder: str | Path, base: ModelConfig, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A Mirai Wan model with the folder's weights, as `dtype` (bf16 for a frozen 14B: the model is built in bf16
    and each tensor read is cast alone, so no fp32 copy of the whole model is made). Prompt tables come from the
    folder's `mirai_prompt_embed.safetensors` when it has one that fits, else they keep their fresh initialisation."""
    cfg = wan_model_config(folder, base)
    model = build_model(cfg, dtype)
    tensors, source = read_weights(folder)
    own = model.state_dict()  # each tensor as the model holds it (norm gains stay fp32, see `to_dtype`)
    state = {k: tensors.pop(k).to(own[k].dtype if k in own else dtype) for k in list(tensors)}  # pop: one copy at a time
    own_prompt = {k: v for k, v in model.state_dict().items() if k.startswith(PROMPT_PREFIX)}
    prompt_path = Path(folder) / PROMPT_FILE
    if own_prompt and prompt_path.is_file():
        saved = {k: v.to(own[k].dtype) if k in own else v for k, v in ckpt.load(prompt_path)[0].items()}
        if {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in own_prompt.items()}:
            own_prompt = saved
    ckpt.load_state(model, {**state, **own_prompt}, source)
    return model


def import_wan(folder: str | Path, cfg: Config, out: str | Path) -> Path:
    """Write a Mirai run folder (model.safetensors + config.yaml) holding the folder's Wan transformer.
    cfg: the run's config (resolved: prompt fields filled); its model section gives what diffusers lacks."""
    model = load_wan(folder, cfg.model)
    cfg = dataclasses.replace(cfg, model=model.cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    ckpt.save_model(model, out / "model.safetensors", {"imported_from": str(Path(folder).resolve())})
    return out


def diffusers_config(m: ModelConfig) -> dict[str, Any]:
    """config.json of a Mirai Wan model, as `WanTransformer3DModel.save_pretrained` writes it."""
    return {"_class_name": CLASS_NAME, "_diffusers_version": DIFFUSERS_VERSION, "patch_size": [1, m.patch_size, m.patch_size],
            "num_attention_heads": m.heads, "attention_head_dim": m.dim // m.heads, "in_channels": m.channels,
            "out_channels": m.channels, "text_dim": m.text_dim, "freq_dim": m.freq_dim, "ffn_dim": m.ffn_dim,
            "num_layers": m.depth, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": m.eps,
            "image_dim": None, "added_kv_proj_dim": None, "rope_max_seq_len": m.rope_max_seq_len,
            "pos_embed_seq_len": None}


def export_wan(run: str | Path, out: str | Path) -> Path:
    """Write a Mirai Wan model (a run folder or model file) as a diffusers folder `from_pretrained` loads."""
    model = ckpt.load_model(run)
    if model.cfg.arch != "wan":
        raise ckpt.CheckpointError(f"{ckpt.resolve_model_path(run)} is a {model.cfg.arch!r} model; only 'wan' "
                                   "models export to diffusers")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    prompt = {k: v for k, v in state.items() if k.startswith(PROMPT_PREFIX)}
    save_file({k: v for k, v in state.items() if k not in prompt}, out / WEIGHTS, metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(diffusers_config(model.cfg), indent=2) + "\n")
    if prompt:
        ckpt.atomic_save(prompt, out / PROMPT_FILE, {"kind": "prompt_embed", "prompt_vocab": model.cfg.prompt_vocab})
    return out
