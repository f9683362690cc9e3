"""The factories: a `ModelConfig` -> the network of its `arch`, with the interface every stage uses
(`.cfg`, `.prompt_embed`, `.grid`, `.tokens_per_frame`, `.tokens_per_chunk` and `forward(x, t, prompt, ...)`);
and what a cache names as its autoencoder -> an `Autoencoder` of that kind."""

from __future__ import annotations

import json
from pathlib import Path

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


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model of `cfg.arch` (validated by the config)."""
    return ARCHS[cfg.arch](cfg)


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
