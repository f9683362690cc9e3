"""Ground-truth probes for the synthetic world: does a generated video keep its layout and its objects?

Two probes, both fitted to or derived from real clips of the world (`mirai.world`):
- a small CNN that classifies a frame's background (layout) id, trained here in seconds on real frames;
- an analytic object probe: for every sprite the prompt (or the first frame) asks for, segment the pixels of
  its colour (nearest entry of the world's palette), take connected blobs (`scipy.ndimage.label`), and judge
  the main blob as an *object*: is there one blob of about the sprite's size, what fraction of the colour is
  in it, which canonical shape (`world.sprite_mask`) it matches best (IoU), is it striped, and where is it.
  Colour alone is not enough: a sprite shattered into fragments of the right colour is not an object.

`WorldProbe.score(video, prompts)` turns a batch of videos into per-frame scores (drift curves over time):
  identity   - fraction of expected sprites present with the expected shape and pattern;
  layout     - probability of the expected background;
  coherence  - per sprite: (fraction of its colour in the main blob) x (best shape IoU); 0 when absent;
  count      - 1 when the number of objects (blobs >= 30% of a sprite with shape IoU >= 0.4) is as expected;
  continuity - per sprite: 1 while the frame-to-frame jump is within max_speed + slack, decaying beyond.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from torch import Tensor, nn

from ..config import WorldConfig
from ..rng import derive_seed
from ..data.frames import to_uint8
from ..data.prompt import PROMPT
from ..data.world import COLORS, SHAPES, background_image, make_clip, occluder_mask, sprite_mask

DARK = 0.45  # striped sprites darken every other pair of rows by this factor (world.sprite_texture)
OCCLUDER_RGB = np.array([0.08, 0.08, 0.08], dtype=np.float32)
PROBE_TRAIN_SEED = derive_seed(0, "probe-train")  # scenes (and init) of the background classifier
PROBE_CHECK_SEED = derive_seed(0, "probe-check")  # held-out scenes to measure its accuracy
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: a diagonal touch is still one object

# --------------------------------------------------------------------------------------------------
# What the prompt asks for


@dataclass(frozen=True)
class Identity:
    """A sprite identity; None marks a field the prompt dropped (not checked)."""

    shape: int | None
    color: int | None
    pattern: int | None


def identities_from_prompt(prompt: np.ndarray) -> list[Identity]:
    """A prompt (see mirai.data.prompt) -> identities of its non-empty sprite slots."""
    return [Identity(*fields) for fields in PROMPT.sprites(prompt)]


def expected_background(prompt: np.ndarray) -> int | None:
    return PROMPT.background(prompt)


# --------------------------------------------------------------------------------------------------
# Background (layout) classifier


class BackgroundNet(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, num_backgrounds) logits; pooled stats make it size-agnostic."""

    def __init__(self, num_backgrounds: int, width: int = 32):
        super().__init__()
        self.convs = nn.Sequential(  # two strided convs: textures have 4-8 px periods, frames are tiny
            nn.Conv2d(3, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
        )
        self.head = nn.Linear(4 * width, num_backgrounds)  # mean and max of 2*width channels

    def forward(self, x: Tensor) -> Tensor:
        h = self.convs(x - 0.5)
        return self.head(torch.cat([h.mean((-2, -1)), h.amax((-2, -1))], dim=-1))


def real_frames(world: WorldConfig, seed: int, num_clips: int, frames_per_clip: int = 8):
    """Frames of real clips with ground truth: (frames (N, H, W, 3) in [0, 1], clips, clip index per frame)."""
    clips = [make_clip(world, seed, i, frames_per_clip) for i in range(num_clips)]
    frames = np.concatenate([c.frames for c in clips])
    owner = np.repeat(np.arange(num_clips), frames_per_clip)
    return frames, clips, owner


def _augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Generated frames are noisier and blurrier than rendered ones; train the classifier to ignore that."""
    blur = torch.rand(x.shape[0], 1, 1, 1, generator=g) < 0.5
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(blur, 0.5 * x + 0.5 * soft, x)
    sigma = torch.rand(x.shape[0], 1, 1, 1, generator=g) * 0.06
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def train_background_classifier(world: WorldConfig, seed: int = PROBE_TRAIN_SEED, num_clips: int = 240,
                                frames_per_clip: int = 4, steps: int = 300, batch_size: int = 32,
                                lr: float = 3e-3) -> BackgroundNet:
    """Fit a BackgroundNet on real frames of `world` (a few seconds on one CPU thread); deterministic in seed."""
    frames, clips, owner = real_frames(world, seed, num_clips, frames_per_clip)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([clips[i].scene.background for i in owner])
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the initial weights
    net = BackgroundNet(world.num_backgrounds)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # such tiny convs only lose to thread overhead (2-10x on a busy machine)
    try:
        for _ in range(steps):
            idx = torch.randint(len(x), (batch_size,), generator=g)
            loss = F.cross_entropy(net(_augment(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


# --------------------------------------------------------------------------------------------------
# Colour segmentation and object detection


def palette(world: WorldConfig, bg: int) -> tuple[np.ndarray, np.ndarray]:
    """Every colour a frame of layout `bg` can hold: (K, 3) RGB and (K,) labels.

    Labels: c in 0..5 for sprite colour c, 6 + c for its striped (dark) rows, -1 background, -2 pillar.
    Putting the layout's own background colours in the palette is what separates dark sprite rows from
    muted backgrounds of a similar hue.
    """
    bg_rgb = np.unique(background_image(world, bg, world.image_size).reshape(-1, 3), axis=0)
    rgb = np.concatenate([COLORS, COLORS * DARK, bg_rgb, OCCLUDER_RGB[None]])
    labels = np.concatenate([np.arange(6), 6 + np.arange(6), -np.ones(len(bg_rgb), int), [-2]])
    return rgb.astype(np.float32), labels


def colour_labels(frame: np.ndarray, rgb: np.ndarray, labels: np.ndarray, tau: float = 0.25):
    """(H, W, 3) in [0, 1] and a `palette` -> (sprite colour per pixel (H, W) in 0..5 or -1, dark-row flag).

    A sprite-coloured pixel with fewer than 2 of its 8 neighbours in the same colour is speckle (noise in a
    generated frame pushing a background pixel towards a dark sprite colour) and is dropped; every pixel of a
    real sprite, corners and the triangle's tip included, has at least 2.
    """
    dist = np.linalg.norm(frame[:, :, None, :] - rgb[None, None], axis=-1)
    lab = labels[dist.argmin(-1)]
    is_sprite = (lab >= 0) & (dist.min(-1) < tau)
    colour = np.where(is_sprite, lab % 6, -1)
    for c in np.unique(colour[colour >= 0]):
        m = colour == c
        neighbours = ndimage.convolve(m.astype(np.int16), EIGHT.astype(np.int16), mode="constant") - m
        colour[m & (neighbours < 2)] = -1
    return colour, (colour >= 0) & (lab >= 6)


def shape_templates(world: WorldConfig) -> dict[int, np.ndarray]:
    """Canonical sprite masks per size: size -> (num_shapes, size, size) float32."""
    shapes = range(min(world.num_shapes, len(SHAPES)))
    return {size: np.stack([sprite_mask(sh, size) for sh in shapes]).astype(np.float32)
            for size in sorted(set(world.sprite_sizes))}


def best_placements(blob: np.ndarray, unknown: np.ndarray, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max IoU of `blob` (H, W) with each template (n, s, s) over all placements inside the frame.

    Template pixels on `unknown` (pillar, other sprites) are left out of the union: they may hide part of the
    object. The union is |blob| + |template on known pixels| - |blob on them|, so an IoU is at most 1 even where
    a generated blob lies on the pillar. Returns (n,) IoUs and (n, 2) centres (x, y) of the best placements.
    """
    n, s, _ = templates.shape
    H, W = blob.shape
    if H < s or W < s:
        return np.zeros(n), np.zeros((n, 2))
    flat = templates.reshape(n, s * s).T  # (s*s, n)

    def overlap(pixels: np.ndarray) -> np.ndarray:  # (P, n): pixels under each template at each placement
        return sliding_window_view(pixels.astype(np.float32), (s, s)).reshape(-1, s * s) @ flat

    inter, known = overlap(blob), overlap(~unknown)
    iou = inter / np.maximum(blob.sum() + known - overlap(blob & ~unknown), 1e-6)
    best = iou.argmax(0)
    y, x = np.divmod(best, W - s + 1)
    return iou[best, np.arange(n)], np.stack([x + (s - 1) / 2, y + (s - 1) / 2], -1).astype(np.float32)


@dataclass
class Detection:
    """The main blob of one sprite colour in one frame."""

    area: int  # pixels of the main blob
    fraction: float  # share of all pixels of this colour that are in the main blob (1 = one object)
    shape_iou: np.ndarray  # (num shapes,) best IoU of the main blob with each canonical shape (over sizes)
    shape: int  # argmax of shape_iou
    striped: bool
    centre: np.ndarray  # (2,) (x, y) centre of the best-matching template placement

    @property
    def coherence(self) -> float:
        return self.fraction * float(self.shape_iou.max())


def detect(labels: np.ndarray, dark: np.ndarray, color: int, occluder: np.ndarray,
           templates: dict[int, np.ndarray]) -> Detection | None:
    """The object of colour `color` in a labelled frame (see `colour_labels`), or None when no pixel has it."""
    mask = labels == color
    if not mask.any():
        return None
    # Pixels that may hide this sprite (the pillar, other sprites) bridge its visible pieces into one blob.
    unknown = occluder | ((labels >= 0) & ~mask)
    comp, _ = ndimage.label(mask | unknown, structure=EIGHT)
    blob = mask & (comp == np.bincount(comp[mask]).argmax())
    fraction = int(blob.sum()) / int(mask.sum())
    blob = ndimage.binary_fill_holes(blob)  # pixels lost to noise inside a sprite do not change its shape
    per_size = [best_placements(blob, unknown, t) for t in templates.values()]
    ious = np.stack([iou for iou, _ in per_size])  # (sizes, shapes)
    size_idx, shape = np.unravel_index(int(ious.argmax()), ious.shape)
    # Striped rows are pairs of dark rows: ~40% of a striped sprite, 0 of a solid one. Only the interior is
    # looked at: a blurred edge of a solid sprite on a dark background looks like a dark row.
    interior = ndimage.binary_erosion(blob)
    striped = bool(dark[interior if interior.sum() >= 4 else blob].mean() > 0.2)
    return Detection(int(blob.sum()), fraction, ious.max(0), int(shape), striped, per_size[size_idx][1][shape])


def min_object_area(world: WorldConfig) -> float:
    """A blob smaller than 30% of the smallest sprite is noise, not an object."""
    return 0.3 * min(float(t.sum((-2, -1)).min()) for t in shape_templates(world).values())


# --------------------------------------------------------------------------------------------------
# Scores


@dataclass
class ProbeScores:
    """Per-frame scores (B, T) in [0, 1]; see the module docstring for each."""

    identity: np.ndarray
    layout: np.ndarray
    coherence: np.ndarray
    count: np.ndarray
    continuity: np.ndarray

    NAMES = ("identity", "layout", "coherence", "count", "continuity")

    def curves(self) -> dict[str, np.ndarray]:
        """Drift curves: each score averaged over the batch, (T,) per name."""
        return {n: getattr(self, n).mean(0) for n in self.NAMES}

    def summary(self) -> dict[str, float]:
        """Per name: mean over all frames, over the first and last quarter of frames, and drift = last - first."""
        out = {}
        for n in self.NAMES:
            curve = getattr(self, n).mean(0)
            q = max(1, len(curve) // 4)
            first, last = float(curve[:q].mean()), float(curve[-q:].mean())
            out |= {n: float(curve.mean()), f"{n}_first": first, f"{n}_last": last, f"{n}_drift": last - first}
        return out

    def to_dict(self) -> dict:
        """JSON-ready: the summary and the drift curves as lists."""
        return {"summary": self.summary(), "curves": {n: c.tolist() for n, c in self.curves().items()}}


def _continuity(prev: Detection | None, cur: Detection | None, limit: float) -> float:
    if prev is None or cur is None:
        return 0.0
    jump = float(np.linalg.norm(cur.centre - prev.centre))
    return 1.0 if jump <= limit else limit / jump


class WorldProbe:
    """Probes for one world configuration: a trained background classifier plus the analytic object probe."""

    def __init__(self, world: WorldConfig, background_net: BackgroundNet, tau: float = 0.25, meta: dict | None = None):
        self.world, self.net, self.tau, self.meta = world, background_net.eval(), tau, dict(meta or {})
        self.min_area = min_object_area(world)
        self.min_iou = 0.4  # a sprite half hidden behind another still scores ~1 (hidden pixels are not counted)
        self.templates = shape_templates(world)
        self.palettes = [palette(world, bg) for bg in range(world.num_backgrounds)]
        self.occluders = [occluder_mask(world, bg) for bg in range(world.num_backgrounds)]
        # A real sprite moves <= max_speed; rounding of positions and template placement add ~2.5 px.
        self.jump_limit = world.max_speed + 2.5

    def provenance(self) -> dict:
        """What every probe result should record: how the probe was made and a hash of its trained weights."""
        h = hashlib.sha256()
        for k, v in sorted(self.net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return {"probe": "mirai.probes.WorldProbe", "background_net_sha256": h.hexdigest(), "tau": self.tau} | self.meta

    @torch.no_grad()
    def background_probs(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) in [0, 1] -> (N, num_backgrounds) probabilities."""
        x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).permute(0, 3, 1, 2)
        return self.net(x).softmax(-1).numpy()

    def frame_objects(self, frame: np.ndarray, bg: int) -> dict[int, Detection]:
        """All sprite-colour objects in one (H, W, 3) frame: colour -> Detection (area >= min_area or not)."""
        labels, dark = colour_labels(frame, *self.palettes[bg], self.tau)
        return {c: d for c in np.unique(labels[labels >= 0]).tolist()
                if (d := detect(labels, dark, int(c), self.occluders[bg], self.templates)) is not None}

    def is_object(self, d: Detection | None) -> bool:
        """A sprite-like object: big enough and shaped like some sprite (a cloud of noise is neither)."""
        return d is not None and d.area >= self.min_area and float(d.shape_iou.max()) >= self.min_iou

    def _objects(self, found: dict[int, Detection]) -> dict[int, Detection]:
        return {c: d for c, d in found.items() if self.is_object(d)}

    def identities_from_frame(self, frame: np.ndarray, bg: int) -> list[Identity]:
        """What a frame shows: one identity per sprite-like object (for prompts without sprite fields)."""
        objects = self._objects(self.frame_objects(frame, bg))
        return [Identity(d.shape, c, int(d.striped)) for c, d in sorted(objects.items())]

    def _matches(self, ident: Identity, det: Detection | None) -> float:
        if not self.is_object(det):
            return 0.0
        shape_ok = ident.shape is None or det.shape == ident.shape
        pattern_ok = ident.pattern is None or int(det.striped) == ident.pattern
        return float(shape_ok and pattern_ok)

    def score_frames(self, frames: np.ndarray, prompt: np.ndarray) -> dict[str, np.ndarray]:
        """One video (T, H, W, 3) in [0, 1] and its (10,) prompt -> (T,) arrays per score name."""
        probs = self.background_probs(frames)
        bg = expected_background(prompt)
        bg = int(probs[0].argmax()) if bg is None or bg >= self.world.num_backgrounds else bg
        idents = identities_from_prompt(prompt)
        if not idents:  # unconditional: the first frame defines who should stay
            idents = self.identities_from_frame(frames[0], bg)
        idents = [i for i in idents if i.color is not None]  # a sprite without its colour cannot be located
        T = len(frames)
        out = {n: np.zeros(T) for n in ProbeScores.NAMES}
        out["layout"] = probs[:, bg]
        prev: dict[int, Detection] = {}
        for t in range(T):
            found = self.frame_objects(frames[t], bg)
            raw = [found.get(i.color) for i in idents]
            dets = [d if self.is_object(d) else None for d in raw]
            out["count"][t] = float(len(self._objects(found)) == len(identities_from_prompt(prompt) or idents))
            if idents:
                out["identity"][t] = np.mean([self._matches(i, d) for i, d in zip(idents, dets)])
                out["coherence"][t] = np.mean([d.coherence if d else 0.0 for d in raw])
                out["continuity"][t] = np.mean([
                    (1.0 if d is not None else 0.0) if t == 0 else _continuity(prev.get(i.color), d, self.jump_limit)
                    for i, d in zip(idents, dets)])
            else:  # nothing expected: vacuously consistent
                out["identity"][t] = out["coherence"][t] = out["continuity"][t] = 1.0
            prev = {i.color: d for i, d in zip(idents, dets)}
        return out

    def score(self, video: Tensor | np.ndarray, prompts: Tensor | np.ndarray) -> ProbeScores:
        """video (B, T, C, H, W) in [-1, 1] (quantised to uint8 as when saved), prompts (B, 10) -> ProbeScores."""
        frames = to_uint8(torch.as_tensor(video)).astype(np.float32) / 255.0  # (B, T, H, W, 3)
        prompts = np.asarray(torch.as_tensor(prompts).cpu())
        per = [self.score_frames(f, p) for f, p in zip(frames, prompts)]
        return ProbeScores(**{n: np.stack([p[n] for p in per]) for n in ProbeScores.NAMES})


# --------------------------------------------------------------------------------------------------
# Building and checking probes

_CACHE: dict[str, WorldProbe] = {}


def train_probe(world: WorldConfig, seed: int = PROBE_TRAIN_SEED, **kw) -> WorldProbe:
    """A WorldProbe for `world` (cached per world config and seed: training takes a few seconds once)."""
    key = json.dumps([asdict(world), seed, kw], sort_keys=True)
    if key not in _CACHE:
        net = train_background_classifier(world, seed=seed, **kw)
        _CACHE[key] = WorldProbe(world, net, meta={"train_seed": seed, **kw})
    return _CACHE[key]


def probe_accuracy(probe: WorldProbe, seed: int = PROBE_CHECK_SEED, num_clips: int = 40, frames_per_clip: int = 8,
                   min_visible: float = 0.5) -> dict[str, float]:
    """Accuracy on held-out real frames (a seed the probe never saw).

    background: argmax == true layout; identity: a sprite with >= min_visible of its pixels visible is found
    with the right shape and pattern; count: detected objects == sprites in the scene (what `score` expects;
    it fails only when a sprite is almost hidden); position_error_px: mean distance of found centres to the
    true centres.
    """
    frames, clips, owner = real_frames(probe.world, seed, num_clips, frames_per_clip)
    probs = probe.background_probs(frames)
    bg_true = np.array([clips[i].scene.background for i in owner])
    ident_ok, count_ok, errors = [], [], []
    for n, (frame, ci) in enumerate(zip(frames, owner)):
        clip, t = clips[ci], n % frames_per_clip
        objs = probe._objects(probe.frame_objects(frame, clip.scene.background))
        count_ok.append(len(objs) == len(clip.scene.sprites))
        for k, sprite in enumerate(clip.scene.sprites):
            if clip.visible[t, k] < min_visible:
                continue
            ident = Identity(sprite.shape, sprite.color, sprite.pattern)
            det = objs.get(sprite.color)
            ident_ok.append(probe._matches(ident, det))
            if det is not None:
                errors.append(float(np.linalg.norm(det.centre - clip.positions[t, k])))
    return {"background": float((probs.argmax(-1) == bg_true).mean()), "identity": float(np.mean(ident_ok)),
            "count": float(np.mean(count_ok)), "position_error_px": float(np.mean(errors)),
            "num_frames": len(frames), "num_sprites": len(ident_ok)}


def real_prompts(clips) -> np.ndarray:
    """(B, 10) prompts of real clips (convenience for tests and for `mirai eval` on real data)."""
    return np.stack([PROMPT.encode(c.scene) for c in clips])
