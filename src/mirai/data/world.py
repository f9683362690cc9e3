"""The built-in synthetic video world: the embedded default dataset, generated from a seed.

A scene is a textured background (the "layout", optionally with a pillar that occludes sprites and a slow
camera pan) and 1-3 sprites. Each sprite has an identity (shape, colour, pattern, size) and moves with
momentum, bouncing off the frame's walls. Every clip carries per-frame ground truth (background id,
camera offset, sprite identities, positions, visible fraction) and a structured prompt: the scene's
parameters as integers, usable as conditioning; `caption` says the same in words (and how each sprite
moves), for the text path (`mirai world export`, then `mirai prepare`). Clips of any length can be rendered,
so long rollouts can be compared with real long clips of the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import WorldConfig

SHAPES = ("square", "circle", "triangle", "diamond")
# Well separated, saturated colours (RGB in 0..1) so that identity is unambiguous.
COLORS = np.array(
    [
        [0.95, 0.15, 0.15],  # red
        [0.15, 0.80, 0.20],  # green
        [0.20, 0.35, 0.95],  # blue
        [0.98, 0.85, 0.10],  # yellow
        [0.85, 0.20, 0.85],  # magenta
        [0.10, 0.85, 0.90],  # cyan
    ],
    dtype=np.float32,
)
COLOR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")  # of COLORS, in order
PATTERNS = ("solid", "striped")
MAX_SPRITES = 3  # sprite slots of a scene (and of its prompt)
# Backgrounds are muted so sprites stand out: two low-saturation colours and a texture.
BG_TEXTURES = ("hstripes", "vstripes", "checker", "diagonal")
TEXTURE_WORDS = {"hstripes": "horizontally striped", "vstripes": "vertically striped", "checker": "checkered",
                 "diagonal": "diagonally striped"}


@dataclass(frozen=True)
class Sprite:
    shape: int
    color: int
    pattern: int
    size: int


@dataclass(frozen=True)
class Scene:
    """Everything needed to render a clip of any length."""

    background: int
    sprites: tuple[Sprite, ...]
    seed: int  # drives the motion (positions and velocities) of this scene


@dataclass
class Clip:
    """A rendered clip: frames (T, H, W, 3) float32 in [0, 1] plus per-frame ground truth."""

    frames: np.ndarray
    scene: Scene
    positions: np.ndarray  # (T, S, 2) sprite centre (x, y) in pixels, S = number of sprites
    visible: np.ndarray  # (T, S) fraction of each sprite's pixels that are visible
    camera: np.ndarray  # (T,) horizontal camera offset in pixels


# --------------------------------------------------------------------------------------------------
# Textures and masks


def background_image(world: WorldConfig, bg_id: int, width: int) -> np.ndarray:
    """(H, width, 3) texture for layout `bg_id`; deterministic in the id alone."""
    rng = np.random.default_rng([7919, bg_id])
    hue = rng.uniform(0, 1, size=2)
    base = 0.25 + 0.15 * np.stack([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)], axis=-1)  # (2, 3)
    texture = BG_TEXTURES[bg_id % len(BG_TEXTURES)]
    period = 4 + 2 * ((bg_id // len(BG_TEXTURES)) % 3)
    y, x = np.mgrid[0 : world.image_size, 0:width]
    if texture == "hstripes":
        sel = (y // (period // 2)) % 2
    elif texture == "vstripes":
        sel = (x // (period // 2)) % 2
    elif texture == "checker":
        sel = ((y // period) + (x // period)) % 2
    else:
        sel = ((x + y) // (period // 2)) % 2
    return base[sel].astype(np.float32)


def has_occluder(world: WorldConfig, bg_id: int) -> bool:
    rng = np.random.default_rng([104729, bg_id])
    return bool(rng.uniform() < world.occluder_prob)


def occluder_mask(world: WorldConfig, bg_id: int) -> np.ndarray:
    """(H, W) bool: a vertical pillar in front of the sprites (fixed in screen space)."""
    mask = np.zeros((world.image_size, world.image_size), dtype=bool)
    if has_occluder(world, bg_id):
        rng = np.random.default_rng([104729, bg_id])
        rng.uniform()
        w = max(3, world.image_size // 8)
        x0 = int(rng.integers(world.image_size // 4, 3 * world.image_size // 4 - w))
        mask[:, x0 : x0 + w] = True
    return mask


def sprite_mask(shape: int, size: int) -> np.ndarray:
    """(size, size) bool mask of a shape."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    name = SHAPES[shape]
    if name == "square":
        return np.ones((size, size), dtype=bool)
    if name == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= (size / 2) ** 2
    if name == "diamond":
        return np.abs(x - c) + np.abs(y - c) <= size / 2
    # triangle pointing up
    return (y >= 0) & (np.abs(x - c) <= (y + 1) / 2)


def sprite_texture(sprite: Sprite) -> np.ndarray:
    """(size, size, 3) colours of a sprite (pattern applied)."""
    rgb = np.broadcast_to(COLORS[sprite.color], (sprite.size, sprite.size, 3)).copy()
    if PATTERNS[sprite.pattern] == "striped":
        rows = (np.arange(sprite.size) // 2) % 2 == 1
        rgb[rows] *= 0.45
    return rgb


# --------------------------------------------------------------------------------------------------
# Scenes, motion and rendering


def sample_scene(world: WorldConfig, rng: np.random.Generator) -> Scene:
    count = int(rng.integers(world.min_sprites, world.max_sprites + 1))
    colors = rng.choice(min(world.num_colors, len(COLORS)), size=count, replace=False)  # distinct colours
    sprites = tuple(
        Sprite(
            shape=int(rng.integers(min(world.num_shapes, len(SHAPES)))),
            color=int(colors[i]),
            pattern=int(rng.integers(min(world.num_patterns, len(PATTERNS)))),
            size=int(rng.choice(world.sprite_sizes)),
        )
        for i in range(count)
    )
    return Scene(background=int(rng.integers(world.num_backgrounds)), sprites=sprites, seed=int(rng.integers(2**31)))


def simulate(world: WorldConfig, scene: Scene, num_frames: int) -> np.ndarray:
    """(T, S, 2) top-left positions: momentum + random nudges, bouncing off the walls."""
    rng = np.random.default_rng([scene.seed, 1])
    S = len(scene.sprites)
    sizes = np.array([s.size for s in scene.sprites], dtype=np.float32)
    limit = world.image_size - sizes  # top-left may range over [0, limit]
    pos = rng.uniform(0, 1, size=(S, 2)).astype(np.float32) * limit[:, None]
    angle = rng.uniform(0, 2 * np.pi, size=S)
    speed = rng.uniform(world.min_speed, world.max_speed, size=S)
    vel = np.stack([np.cos(angle), np.sin(angle)], -1) * speed[:, None]
    out = np.zeros((num_frames, S, 2), dtype=np.float32)
    for t in range(num_frames):
        out[t] = pos
        nudge = rng.normal(0, 1, size=(S, 2)) * (1 - world.momentum) * world.max_speed
        vel = vel + nudge
        norm = np.linalg.norm(vel, axis=-1, keepdims=True) + 1e-6
        vel = vel / norm * np.clip(norm, world.min_speed, world.max_speed)
        pos = pos + vel
        for axis in range(2):  # bounce: reflect position and velocity at the walls
            low, high = pos[:, axis] < 0, pos[:, axis] > limit
            pos[:, axis] = np.where(low, -pos[:, axis], np.where(high, 2 * limit - pos[:, axis], pos[:, axis]))
            vel[:, axis] = np.where(low | high, -vel[:, axis], vel[:, axis])
    return out


def render(world: WorldConfig, scene: Scene, num_frames: int) -> Clip:
    """Render `num_frames` frames of `scene` with ground truth."""
    H = world.image_size
    pan = world.pan_speed
    width = H + int(np.ceil(abs(pan) * num_frames)) + 1
    bg = background_image(world, scene.background, width)
    occ = occluder_mask(world, scene.background)
    top_left = simulate(world, scene, num_frames)
    masks = [sprite_mask(s.shape, s.size) for s in scene.sprites]
    textures = [sprite_texture(s) for s in scene.sprites]
    frames = np.empty((num_frames, H, H, 3), dtype=np.float32)
    visible = np.zeros((num_frames, len(scene.sprites)), dtype=np.float32)
    camera = np.zeros(num_frames, dtype=np.float32)
    for t in range(num_frames):
        cam = int(round(abs(pan) * t))
        camera[t] = cam
        frame = bg[:, cam : cam + H].copy()
        for i, (mask, tex) in enumerate(zip(masks, textures)):  # later sprites are drawn in front
            x, y = np.round(top_left[t, i]).astype(int)
            s = mask.shape[0]
            region = frame[y : y + s, x : x + s]
            region[mask] = tex[mask]
            in_front = np.zeros((H, H), dtype=bool)
            in_front[y : y + s, x : x + s] = mask
            for j in range(i + 1, len(masks)):  # pixels covered by later sprites are not visible
                xj, yj = np.round(top_left[t, j]).astype(int)
                sj = masks[j].shape[0]
                cover = np.zeros((H, H), dtype=bool)
                cover[yj : yj + sj, xj : xj + sj] = masks[j]
                in_front &= ~cover
            visible[t, i] = (in_front & ~occ).sum() / mask.sum()
        frame[occ] = np.array([0.08, 0.08, 0.08], dtype=np.float32)
        frames[t] = frame
    sizes = np.array([s.size for s in scene.sprites], dtype=np.float32)
    centres = top_left + (sizes[None, :, None] - 1) / 2
    return Clip(frames=frames, scene=scene, positions=centres, visible=visible, camera=camera)


def make_clip(world: WorldConfig, seed: int, index: int, num_frames: int) -> Clip:
    """Clip `index` of the world with dataset seed `seed`: a pure function of its arguments."""
    rng = np.random.default_rng([seed, index])
    return render(world, sample_scene(world, rng), num_frames)


# --------------------------------------------------------------------------------------------------
# Captions: the ground truth in words


def direction(path: np.ndarray) -> str:
    """How a centre path (T, 2) of (x, y) pixels moves overall (y grows downwards): 'moves left', 'moves up and
    right', ... from its net displacement (an axis counts when it is at least half the larger one), or 'stays in
    place' when the displacement is under one pixel."""
    dx, dy = (path[-1] - path[0]).tolist()
    larger = max(abs(dx), abs(dy))
    if larger < 1.0:
        return "stays in place"
    axes = ((dy, "up" if dy < 0 else "down"), (dx, "left" if dx < 0 else "right"))
    words = [word for d, word in axes if abs(d) >= larger / 2]
    return "moves " + " and ".join(words)


def passes_behind_pillar(world: WorldConfig, clip: Clip, i: int) -> bool:
    """Whether a pixel of sprite i is ever in the pillar's columns (the pillar spans the frame's height and is
    drawn in front of the sprites)."""
    pillar = occluder_mask(world, clip.scene.background).any(0)  # (W,) columns of the pillar
    if not pillar.any():
        return False
    sprite = clip.scene.sprites[i]
    columns = np.flatnonzero(sprite_mask(sprite.shape, sprite.size).any(0))  # columns of the shape in its box
    left = np.round(clip.positions[:, i, 0] - (sprite.size - 1) / 2).astype(int)  # box's left column per frame
    covered = (left[:, None] + columns[None]).clip(0, len(pillar) - 1)
    return bool(pillar[covered].any())


def caption(world: WorldConfig, clip: Clip) -> str:
    """One sentence of a clip's ground truth: each sprite's colour, pattern (when striped), shape, direction of
    motion and whether it passes behind the pillar, then the background's texture, e.g.
    'a red striped square moves left behind a pillar on a checkered background'."""
    parts = []
    for i, s in enumerate(clip.scene.sprites):
        words = [COLOR_NAMES[s.color], *(["striped"] if PATTERNS[s.pattern] == "striped" else []), SHAPES[s.shape]]
        behind = " behind a pillar" if passes_behind_pillar(world, clip, i) else ""
        parts.append(f"a {' '.join(words)} {direction(clip.positions[:, i])}{behind}")
    texture = TEXTURE_WORDS[BG_TEXTURES[clip.scene.background % len(BG_TEXTURES)]]
    return f"{' and '.join(parts)} on a {texture} background"
