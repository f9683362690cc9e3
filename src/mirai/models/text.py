"""Caption embeddings from a local text encoder: transformers' `UMT5EncoderModel` (Wan2.1's) or
`T5EncoderModel`, with its tokenizer, read from a folder. Nothing is downloaded.

Captions become (B, L, D) embeddings of `max_len` tokens, zero past each caption's end (Wan's pipelines cut
the embeddings at the caption's length and pad them with zeros), and a (B, L) mask of the real tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from ..data.videos import DataError


def tokenizer_folder(folder: Path) -> Path:
    """The encoder's own folder when it holds tokenizer files, else a `tokenizer` folder beside it (the layout
    of a diffusers Wan folder: text_encoder/ and tokenizer/)."""
    beside = folder.parent / "tokenizer"
    has_files = any((folder / n).is_file() for n in ("tokenizer_config.json", "tokenizer.json", "spiece.model"))
    return folder if has_files or not beside.is_dir() else beside


def tokenizer_class(folder: Path):
    """The class a tokenizer folder's config names (ByT5's byte tokenizer has no files a fast one could be built
    from, so AutoTokenizer cannot load it), else AutoTokenizer."""
    import transformers

    config = folder / "tokenizer_config.json"
    name = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    return getattr(transformers, name or "", None) or transformers.AutoTokenizer


class TextEncoder:
    """A frozen T5-family encoder and its tokenizer from `folder`."""

    def __init__(self, folder: str | Path, max_len: int, device="cpu"):
        from transformers import AutoConfig, T5EncoderModel, UMT5EncoderModel

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise DataError(f"{folder} is not a transformers text encoder folder (no config.json)")
        config = AutoConfig.from_pretrained(folder)
        if config.model_type not in ("umt5", "t5"):
            raise DataError(f"{folder} holds a '{config.model_type}' model; the text encoder must be UMT5 or T5")
        cls = UMT5EncoderModel if config.model_type == "umt5" else T5EncoderModel
        self.name, self.max_len, self.device = str(folder), max_len, device
        self.tokenizer = tokenizer_class(tokenizer_folder(folder)).from_pretrained(tokenizer_folder(folder))
        self.model = cls.from_pretrained(folder).to(device).eval().requires_grad_(False)
        self.dim = config.d_model

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """captions -> embeddings (B, max_len, dim) float32, zero past each caption's tokens, and mask (B, max_len)."""
        tokens = self.tokenizer(captions, padding="max_length", max_length=self.max_len, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return hidden * mask[..., None], mask.bool()
