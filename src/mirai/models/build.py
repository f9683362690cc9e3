"""The one model factory: a `ModelConfig` -> the network of its `arch`, with the interface every stage uses
(`.cfg`, `.prompt_embed`, `.grid`, `.tokens_per_frame`, `.tokens_per_chunk` and `forward(x, t, prompt, ...)`)."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .dit import CausalVideoDiT
from .wan import WanVideoModel

ARCHS = {"dit": CausalVideoDiT, "wan": WanVideoModel}


def is_conditional(model: nn.Module) -> bool:
    """Whether the model reads a prompt: the world's structured prompt or caption embeddings."""
    return model.prompt_embed is not None or model.cfg.text_conditioned


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model of `cfg.arch` (validated by the config)."""
    return ARCHS[cfg.arch](cfg)
