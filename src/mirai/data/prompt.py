"""The structured prompt of the synthetic world: the one place that knows its layout.

A prompt is a vector of small integers, 0 meaning absent (or dropped, for classifier-free guidance):

    [background + 1,  shape + 1, colour + 1, pattern + 1  (sprite slot 1),  ... (slots 2, 3)]

so 1 + 3 * 3 = 10 fields. Every reader and writer of prompts goes through `PROMPT`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import WorldConfig
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
            out[self._slot(i)] = [s.shape + 1, s.color + 1, s.pattern + 1]
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
            fields = [int(v) for v in prompt[self._slot(i)]]
            if any(fields):
                out.append(tuple((v - 1) if v > 0 else None for v in fields))
        return out

    @staticmethod
    def _slot(i: int) -> slice:
        return slice(1 + len(SPRITE_FIELDS) * i, 1 + len(SPRITE_FIELDS) * (i + 1))


PROMPT = PromptLayout()
