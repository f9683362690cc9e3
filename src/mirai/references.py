"""Model references: what a config key such as `dmd.teacher` or `train.init_from` names, and the model it gives.

A reference is one of
- a Mirai model file, or a run folder (its `model.safetensors`);
- a local diffusers Wan folder (`config.json` + weights; the run's model config gives what diffusers lacks);
- `preset:NAME`, a size and no weights (e.g. `preset:wan14b`): the model of that preset with the run's frame size,
  chunking and prompt. It has no weights, so training refuses it; `mirai plan` (which runs on fake tensors) and
  the GPU check (random weights) read it inside `random_weights()`.

Inside `random_weights(everything=True)` (a plan) every reference is built with random weights, and one that
does not exist yet (the previous stage not trained) as the run's own model. `reference_config` reads only headers (a file's metadata, a folder's config.json): a plan of a 14B run never
reads 14B of weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import nn

from . import checkpoint as ckpt, wan_io
from .config import ModelConfig, config_from_dict, model_config_from_dict
from .models.build import build_model, to_dtype

PRESET = "preset:"
_RANDOM = {"allowed": False, "everything": False}


@contextlib.contextmanager
def random_weights(everything: bool = False) -> Iterator[None]:
    """Inside this context a `preset:NAME` reference builds a freshly initialised model (plans, GPU checks, tests);
    with `everything`, every reference does, of the architecture its header names: no weights are read (a plan)."""
    before = dict(_RANDOM)
    _RANDOM.update(allowed=True, everything=everything or before["everything"])
    try:
        yield
    finally:
        _RANDOM.update(before)


def is_preset(ref: str) -> bool:
    return str(ref).startswith(PRESET)


def preset_config(ref: str, like: ModelConfig) -> ModelConfig:
    """`like` (the run's model: frame size, chunking, prompt) with the sizes of the preset named by `ref`."""
    name = str(ref)[len(PRESET):]
    sized = config_from_dict({"model": {"preset": name}}, model_only=True).model  # unknown names: one ConfigError
    keys = ("arch", "prediction", "dim", "depth", "heads", "ffn_dim", "mlp_ratio", "text_dim")
    return dataclasses.replace(like, preset=name, **{k: getattr(sized, k) for k in keys})


def reference_config(ref: str, like: ModelConfig, attention: str | None = None) -> ModelConfig:
    """The model config a reference names, read from headers only; `attention` ("causal"/"bidirectional") is
    checked for a Mirai file and set for a diffusers folder or a preset (neither stores a mask)."""
    if is_preset(ref):
        cfg = preset_config(ref, like)
    elif wan_io.is_diffusers_folder(ref):
        cfg = wan_io.wan_model_config(ref, like)
    else:
        path = ckpt.resolve_model_path(ref)
        if not path.is_file():
            raise ckpt.CheckpointError(f"checkpoint not found: {path}")
        meta = ckpt.read_meta(path)
        if "model" not in meta:
            raise ckpt.CheckpointError(f"{path} holds no model config (kind {meta.get('kind')!r})")
        cfg = model_config_from_dict(meta["model"])
        if attention and cfg.attention != attention:
            raise ckpt.CheckpointError(f"{path} is a {cfg.attention} model, but a {attention} model is needed here")
        return cfg
    return dataclasses.replace(cfg, attention=attention) if attention else cfg


def load_reference(ref: str, like: ModelConfig, attention: str | None = None, role: str = "model",
                   dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model a reference names, with its weights as `dtype`, on the CPU. role names the key in errors.
    A diffusers folder (or a preset) is built and read as `dtype` directly; a Mirai file loads in fp32, then is cast."""
    if is_preset(ref) or _RANDOM["everything"]:
        if not _RANDOM["allowed"]:
            raise ckpt.CheckpointError(f"{role} = {ref!r} names a size, not weights: point it at a Mirai run, a model "
                                       "file or a diffusers folder (presets are for `mirai plan` and the GPU check)")
        if _RANDOM["everything"] and not exists(ref):  # a plan made before the stage it starts from was trained
            return build_model(dataclasses.replace(like, attention=attention) if attention else like, dtype)
        return build_model(reference_config(ref, like, attention), dtype)
    if wan_io.is_diffusers_folder(ref):
        model = wan_io.load_wan(ref, like, dtype)
        if attention:
            model.cfg = dataclasses.replace(model.cfg, attention=attention)
        return model
    return to_dtype(ckpt.load_model(ref, expect_attention=attention), dtype)


def exists(ref: str) -> bool:
    """Whether a reference names something readable: a preset, a diffusers folder or a model file / run folder."""
    return is_preset(ref) or wan_io.is_diffusers_folder(ref) or ckpt.resolve_model_path(ref).is_file()
