"""The factories: a `ModelConfig` -> the network of its `arch`, with the interface every stage uses
(`.cfg`, `.prompt_embed`, `.grid`, `.tokens_per_frame`, `.tokens_per_chunk` and `forward(x, t, prompt, ...)`);
and what a cache names as its autoencoder -> an `Autoencoder` of that kind."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..data.videos import DataError
from .autoencoder import IDENTITY, Autoencoder, IdentityAutoencoder
from .dit import CausalVideoDiT
from .wan import WanVideoModel
from .wan_vae import CLASS_NAME as WAN_VAE, WanAutoencoder

ARCHS = {"dit": CausalVideoDiT, "wan": WanVideoModel}


def is_conditional(model: nn.Module) -> bool:
    """Whether the model reads a prompt: the world's structured prompt or caption embeddings."""
    return model.prompt_embed is not None or model.cfg.text_conditioned


def build_model(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A freshly initialised model of `cfg.arch` (validated by the config), its tensors of `dtype`. A bf16 model is
    built in bf16 (torch's default dtype set while it is built): a 14B model never exists in fp32 on the way."""
    if dtype == torch.float32:
        return ARCHS[cfg.arch](cfg)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = ARCHS[cfg.arch](cfg)
    finally:
        torch.set_default_dtype(before)
    return to_dtype(model, dtype)


NORMS = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


def to_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The model's tensors as `dtype` (in place), but its norm layers' gains: they stay fp32, because the models
    normalise in fp32 (`norm(x.float())`) and a CPU layer norm refuses fp32 inputs with bf16 gains."""
    model.to(dtype)
    if dtype != torch.float32:
        for module in model.modules():
            if isinstance(module, NORMS):
                module.float()
    return model


def load_autoencoder(spec: str, device="cpu") -> Autoencoder:
    """"" or "identity" -> pixels; a folder -> the autoencoder its config.json names (`_class_name`). Another
    kind plugs in here: a module implementing `models.autoencoder.Autoencoder`, and a line below."""
    if spec in ("", IDENTITY):
        return IdentityAutoencoder()
    config = Path(spec) / "config.json"
    if not config.is_file():
        raise DataError(f"{spec} is not an autoencoder folder (no config.json)")
    kind = json.loads(config.read_text()).get("_class_name")
    if kind == WAN_VAE:
        return WanAutoencoder(spec, device)
    raise DataError(f"{spec} holds a {kind!r} autoencoder; the kinds Mirai reads: {IDENTITY}, {WAN_VAE}")
