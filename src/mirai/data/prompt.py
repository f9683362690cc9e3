"""What a prompt is: the one place that knows the prompts' layouts and what stands for "no prompt".

Two kinds of prompt reach a model:
- the synthetic world's structured prompt, a vector (P,) of small integers, 0 meaning absent (or dropped):

      [background + 1,  shape + 1, colour + 1, pattern + 1  (sprite slot 1),  ... (slots 2, 3)]

  so 1 + 3 * 3 = 10 fields. Every reader and writer of structured prompts goes through `PROMPT`;
- caption embeddings (L, D) float, a text encoder's output for a caption (`mirai prepare`), read through
  cross-attention.

"No prompt" (caption dropout in training, the unconditional branch of classifier-free guidance) is
`unconditional(prompt, uncond)`: all fields absent for the structured prompt; for captions the embedding of the
empty caption (what the encoder gives for "", not zeros), or of a negative prompt at sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import ConfigError, WorldConfig
from .world import MAX_SPRITES, Scene

SPRITE_FIELDS = ("shape", "color", "pattern")


@dataclass(frozen=True)
class PromptLayout:
    sprite_slots: int = MAX_SPRITES

    @property
    def size(self) -> int:
        """Number of fields: the background, then SPRITE_FIELDS per slot."""
        return 1 + len(SPRITE_FIELDS) * self.sprite_slots

    def vocab(self, world: WorldConfig) -> list[int]:
        """Vocabulary size of each field (index 0 included, for "absent")."""
        per_sprite = [world.num_shapes + 1, world.num_colors + 1, world.num_patterns + 1]
        return [world.num_backgrounds + 1] + per_sprite * self.sprite_slots

    def encode(self, scene: Scene) -> np.ndarray:
        """(size,) int64 prompt of a scene; empty sprite slots are 0."""
        out = np.zeros(self.size, dtype=np.int64)
        out[0] = scene.background + 1
        for i, s in enumerate(scene.sprites):
            out[self.slot(i)] = [s.shape + 1, s.color + 1, s.pattern + 1]
        return out

    def empty(self, batch: int) -> np.ndarray:
        """(batch, size) prompts with every field absent (data without prompts)."""
        return np.zeros((batch, self.size), dtype=np.int64)

    def background(self, prompt: np.ndarray) -> int | None:
        """The background id a prompt asks for, or None where the field is absent."""
        return int(prompt[0]) - 1 if int(prompt[0]) > 0 else None

    def sprites(self, prompt: np.ndarray) -> list[tuple[int | None, int | None, int | None]]:
        """(shape, colour, pattern) of each non-empty sprite slot; None marks an absent field."""
        out = []
        for i in range(self.sprite_slots):
            fields = [int(v) for v in prompt[self.slot(i)]]
            if any(fields):
                out.append(tuple((v - 1) if v > 0 else None for v in fields))
        return out

    def edit(self, prompt: np.ndarray, edit: str, vocab: list[int]) -> np.ndarray:
        """A copy of `prompt` (P,) with the fields `edit` names set: "background=2,sprite1.color=0" (ids as the
        world numbers them, from 0; sprite slots from 1; "none" for absent), each checked against `vocab` (a
        model's field sizes). A prompt switch of the world (`mirai sample --switch`)."""
        names = ["background"] + [f"sprite{i + 1}.{f}" for i in range(self.sprite_slots) for f in SPRITE_FIELDS]
        out = prompt.copy()
        for part in filter(None, (p.strip() for p in edit.split(","))):
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or name not in names:
                raise ConfigError(f"prompt edit {part!r}: expected FIELD=ID with FIELD one of {', '.join(names)}")
            field_index = names.index(name)
            if value == "none":
                out[field_index] = 0
                continue
            if not value.isdigit() or int(value) + 1 >= vocab[field_index]:
                raise ConfigError(f"prompt edit {part!r}: {name} takes an id 0..{vocab[field_index] - 2} or 'none'")
            out[field_index] = int(value) + 1
        return out

    @staticmethod
    def slot(i: int) -> slice:
        """The fields of sprite slot i (from 0) in a prompt vector."""
        return slice(1 + len(SPRITE_FIELDS) * i, 1 + len(SPRITE_FIELDS) * (i + 1))


PROMPT = PromptLayout()


# --------------------------------------------------------------------------------------------------
# Caption embeddings and "no prompt"


def is_caption(prompt: Tensor) -> bool:
    """Caption embeddings (B, L, D) float, rather than structured prompts (B, P) of integers."""
    return prompt.is_floating_point()


def unconditional(prompt: Tensor, uncond: Tensor | None = None) -> Tensor:
    """What stands for "no prompt" in a batch shaped like `prompt`: all zeros for structured prompts (every field
    absent); for caption embeddings (B, L, D), `uncond` broadcast to the batch: the empty caption's embedding (L, D)
    (dropout, guidance) or a negative prompt's ((L, D) or (B, L, D)). Captions without `uncond` are an error, not
    zeros: a zero embedding is not what the text encoder makes of the empty caption, so a model trained with the
    empty caption would be guided away from something it never saw."""
    if not is_caption(prompt):
        return torch.zeros_like(prompt)
    if uncond is None:
        raise ValueError("caption embeddings need an unconditional prompt: the empty caption's embedding (the "
                         "cache's empty_prompt) or a negative prompt's")
    return uncond.to(prompt.device, prompt.dtype).expand_as(prompt)
