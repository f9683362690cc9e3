"""Evaluation of generated rollouts: VBench-style dimensions, ground-truth probes of the synthetic world and
distribution distances, at several multiples of the training length, per seed.

`evaluate_run` generates (or reads) rollouts of a run for every seed and writes `eval.json` + `eval.csv`;
`summarize` gives mean and a 95% confidence interval over seeds. A run trained on a prepared cache
(`data.source: cache`) rolls out for the cache's captions in turn, and its rollouts, like the cache's real
clips it is compared with, are decoded through the cache's autoencoder before anything is measured (lengths
are then counted in decoded frames); the world's ground-truth probes are left out (no ground truth).

Substitute extractors are labelled in every metric name (e.g. `subject_consistency@effnet_lite0`): these are
never VBench numbers. So are metrics with VBench's formula but not its protocol (`temporal_flickering@raw`) and
the aggregate built from them (`quality_score_partial@<tags>`); eval.json's `protocols` says what each label
means.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import checkpoint as ckpt, rng
from ..config import Config, WorldConfig
from ..data.cache import LatentDataset
from ..data.datasets import get_batch
from ..data.frames import to_model_range, to_uint8
from ..data.prompt import PROMPT
from ..data.world import make_clip
from ..models.autoencoder import video_frames
from ..sampling.pipeline import Pipeline
from . import metrics
from .extractors import load_extractor
from .motion import block_motion
from .probes import train_probe

# --------------------------------------------------------------------------------------------------
# Generation


def generate(run: str | Path, num: int, frames: int, seed: int, device: str = "cpu",
             overrides: list[str] | None = None, world: WorldConfig | None = None,
             chunk_seconds: list[float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Roll out `num` videos of `frames` frames from a run: uint8 (B, T, H, W, 3) and their structured prompts
    (prompts of unseen scenes of the world: the run's own, or `world`, e.g. a harder one it was not trained in). A
    run on a cache: videos for the cache's captions in turn, decoded through its autoencoder (T decoded frames),
    and no structured prompts (None). A bidirectional model (the teacher) denoises all `frames` at once; a causal
    one rolls out chunk by chunk (each chunk's wall time appended to `chunk_seconds`, when given). A run of the world:
    the same videos as `mirai sample --seed` (`sampling.pipeline`)."""
    pipe = Pipeline.load(run, device, overrides)
    return pipe.video(pipe.evaluation_inputs(num, frames, seed, world), chunk_seconds)


def real_cache_clips(data: LatentDataset, num: int) -> np.ndarray:
    """`num` clips of a prepared cache (its windows in turn), decoded through its autoencoder: uint8 (B, T, H, W, 3)."""
    video = get_batch(data, [i % len(data) for i in range(num)])["video"]
    return to_uint8(data.decode(video))


def real_clips(world: WorldConfig, num: int, frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real clips of the world from a held-out scene space, as uint8 (B, T, H, W, 3), with their prompts."""
    clips = [make_clip(world, rng.derive_seed(seed, "real-clips"), i, frames) for i in range(num)]
    frames_u8 = np.stack([to_uint8(to_model_range(c.frames)) for c in clips])
    return frames_u8, np.stack([PROMPT.encode(c.scene) for c in clips])


# --------------------------------------------------------------------------------------------------
# Metrics of one set of videos


@dataclass
class Evaluator:
    """Holds the extractors and the probe so they are built once per evaluation.

    `extractor_name` scores subject consistency (and the FD/KID features). Background consistency gets its own
    role only with a different `background_extractor_name` (VBench: dino_vitb16 and clip_vitb32); with one
    extractor a single consistency number is reported (`metrics.consistency_roles`), never the same features
    twice under two names.
    """

    world: WorldConfig
    extractor_name: str = "effnet_lite0"
    weights: str | None = None
    fps: float = 8.0
    background_extractor_name: str | None = None
    background_weights: str | None = None
    _extractor: object = field(default=None, repr=False)
    _background: object = field(default=None, repr=False)
    _probe: object = field(default=None, repr=False)
    _real: dict = field(default_factory=dict, repr=False)  # real-clip controls already scored, by their shape

    @property
    def extractor(self):
        if self._extractor is None:
            self._extractor = load_extractor(self.extractor_name, self.weights)
        return self._extractor

    @property
    def background_extractor(self):
        """The background-consistency extractor, or None when none was asked for."""
        if self._background is None and self.background_extractor_name is not None:
            self._background = load_extractor(self.background_extractor_name, self.background_weights)
        return self._background

    def consistency_roles(self) -> list[tuple[str, object]]:
        return metrics.consistency_roles(self.extractor, self.background_extractor)

    def metadata(self) -> dict:
        """What eval.json records beside the numbers: extractor roles and what each non-VBench label means."""
        roles = self.consistency_roles()
        bg = self.background_extractor
        protocols = {
            metrics.FLICKERING_LABEL: metrics.FLICKERING_PROTOCOL,
            "quality_score_partial": "VBench's Quality formula (sum of normalised dims / sum of weights) over the "
                                     "dimensions present; the `@` tags name the proxies it contains, so it is not "
                                     "a VBench Quality score.",
        }
        if [d for d, _ in roles] == ["subject_consistency"]:
            protocols["background_consistency"] = (
                "not reported: no separate background extractor, and the same features would repeat "
                "subject_consistency (and count twice in quality_score_partial)")
        return {"background_extractor": bg.provenance() if bg is not None else None,
                "consistency_extractors": {ext.label(d): ext.name for d, ext in roles},
                "protocols": protocols}

    @property
    def probe(self):
        if self._probe is None:
            self._probe = train_probe(self.world)
        return self._probe

    def features(self, frames: np.ndarray) -> np.ndarray:
        return self.extractor.frames_batch(frames)

    def score(self, frames: np.ndarray, prompts: np.ndarray | None, lengths: list[int],
              real_features: np.ndarray | None = None, block: int | None = None,
              horizons: list[int] = ()) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Metrics of videos uint8 (B, T, H, W, 3) over their first L frames for each L; drift curves over T.
        prompts: the videos' structured prompts, for the world's ground-truth probes (None: no probes).
        block, horizons: also the metrics of the `block`-frame block that ends at H x block frames for each H
        (`name@blockHx`, see `block_scores`), and per-block curves (`block_<name>`, T // block values)."""
        feats = self.features(frames)  # (B, T, D)
        role_feats = [(ext.label(dim), feats if ext is self.extractor else ext.frames_batch(frames))
                      for dim, ext in self.consistency_roles()]
        probe = self.probe.score(to_model_range(frames), prompts) if prompts is not None else None
        curves = {k: v.tolist() for k, v in probe.curves().items()} if probe else {}  # (T,) batch means
        out: dict[str, float] = {}
        if block is not None:
            blocks, block_curves = self.block_scores(frames, prompts, probe, role_feats, block, horizons)
            out |= blocks
            curves |= block_curves
        for L in lengths:
            v = frames[:, :L]
            sfx = f"@{L}f"
            for name, rf in role_feats:  # one entry per distinct extractor: no features counted twice
                out[name + sfx] = metrics.consistency_scores(rf[:, :L]).aggregate
            for r in (metrics.temporal_flickering(v), metrics.motion_smoothness_linear(v),
                      metrics.dynamic_degree_flow(v, self.fps)):
                out[r.name + sfx] = r.value
            sub = {k[: -len(sfx)]: val for k, val in out.items() if k.endswith(sfx)}
            q = metrics.quality_score_partial(sub)  # named with its proxy tags, e.g. `...partial@effnet_lite0+...`
            out[q.name + sfx] = q.value
            for name in probe.NAMES if probe else ():  # (B, T) per-frame scores
                out[f"probe_{name}" + sfx] = float(getattr(probe, name)[:, :L].mean())
        if real_features is not None:  # distribution distance, frame level, at the shortest length
            L = min(lengths)
            fake = feats[:, :L].reshape(-1, feats.shape[-1])
            real = real_features[:, :L].reshape(-1, real_features.shape[-1])
            out[f"fd@{self.extractor_name}@{L}f"] = metrics.frechet_distance(real, fake)
            kid, _ = metrics.kernel_inception_distance(real, fake, num_subsets=50, subset_size=min(len(real), len(fake), 500))
            out[f"kid@{self.extractor_name}@{L}f"] = kid
        return out, curves

    def block_scores(self, frames: np.ndarray, prompts: np.ndarray | None, probe, role_feats: list,
                     block: int, horizons: list[int]) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Drift per block of `block` frames (a training clip), out to any length. For each horizon H, the
        block of frames [(H - 1) * block, H * block): each probe's mean there, the tracked net motion of the
        sprites (`eval.motion.block_motion`, pixels per frame; a video in which no sprite of its prompt is tracked
        over half the block counts 0: nothing recognisable moves), VBench-style dynamic degree and consistency over
        those frames alone. Curves: the probes and the motion per block (T // block values)."""
        B, T = frames.shape[:2]
        n = T // block
        per_block: dict[str, np.ndarray] = {}
        if probe is not None:
            for name in probe.NAMES:
                per_block[f"probe_{name}"] = getattr(probe, name)[:, : n * block].reshape(B, n, block).mean((0, 2))
            motion = np.stack([block_motion(self.probe, v.astype(np.float32) / 255, p, block)
                               for v, p in zip(frames, prompts)])  # (B, n), NaN where no sprite is tracked
            per_block["probe_motion"] = np.nan_to_num(motion, nan=0.0).mean(0)  # nothing recognisable moves: 0
        out: dict[str, float] = {}
        for H in horizons:
            if H * block > T:
                raise ValueError(f"horizon {H}x needs {H * block} frames, the videos have {T}")
            sfx, span = f"@block{H}x", slice((H - 1) * block, H * block)
            out |= {name + sfx: float(curve[H - 1]) for name, curve in per_block.items()}
            for name, rf in role_feats:
                out[name + sfx] = metrics.consistency_scores(rf[:, span]).aggregate
            r = metrics.dynamic_degree_flow(frames[:, span], self.fps)
            out[r.name + sfx] = r.value
        return out, {f"block_{name}": curve.tolist() for name, curve in per_block.items()}


# --------------------------------------------------------------------------------------------------
# Runs, seeds, summaries


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95% t-interval over seeds (0 for one seed)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def summarize(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = sorted(set().union(*[set(v) for v in per_seed.values()]))
    out = {}
    for k in keys:
        vals = [per_seed[s][k] for s in per_seed if k in per_seed[s]]
        mean, half = ci95(vals)
        out[k] = {"mean": mean, "ci95": half, "n": len(vals)}
    return out


DEFAULT_HORIZONS = (1, 4, 8, 32, 128)  # multiples of the training clip the drift is read at (`--horizons`)


def default_horizons(frames: int, clip: int) -> list[int]:
    """DEFAULT_HORIZONS that fit in `frames`, and the last whole clip of the rollout."""
    return sorted({h for h in DEFAULT_HORIZONS if h * clip <= frames} | {max(1, frames // clip)})


def evaluate_run(run: str | Path, frames: int, samples: int, seeds: list[int], out: str | Path | None = None,
                 clip_frames: int | None = None, evaluator: Evaluator | None = None, device: str = "cpu",
                 overrides: list[str] | None = None, horizons: list[int] | None = None) -> dict:
    """Generate `samples` rollouts of `frames` frames per seed and score them at 1x and multiples of the
    training length (the first L frames), and per training-clip block at `horizons` (default: `default_horizons`);
    real clips of the same length are scored the same way (the control: a dip they share is the world's).
    Writes eval.json and eval.csv into `out` (default: the run folder)."""
    cfg: Config = ckpt.run_config(run, overrides or [])
    clip = clip_frames or cfg.data.clip_frames
    data = LatentDataset(cfg.data.path, clip) if cfg.data.source == "cache" else None
    decoded = (lambda L: video_frames(L, data.autoencoder.temporal)) if data else (lambda L: L)  # model -> frames
    lengths = sorted({decoded(L) for L in (clip, 2 * clip, 4 * clip, 8 * clip, frames) if L <= frames})
    block = decoded(clip)
    horizons = sorted(horizons or default_horizons(decoded(frames), block))
    ev = evaluator or Evaluator(cfg.world)
    real = real_cache_clips(data, samples) if data else real_clips(cfg.world, samples, clip)[0]
    real_feats = ev.features(real)
    per_seed, curves, seconds = {}, {}, {}
    for seed in tqdm(seeds, desc=f"eval {Path(run).name}", unit="seed"):
        chunk_s: list[float] = []
        videos, prompts = generate(run, samples, frames, seed, device, overrides, chunk_seconds=chunk_s)
        per_seed[seed], curves[seed] = ev.score(videos, prompts, lengths, real_feats, block, horizons)
        seconds[seed] = chunk_s
    result = {"run": str(run), "sample": dataclasses.asdict(cfg.sample), "frames": frames, "samples": samples,
              "seeds": seeds, "lengths": lengths, "horizons": horizons,
              "clip_frames": decoded(clip), "extractor": ev.extractor.provenance(), **ev.metadata(),
              "probe": ev.probe.provenance() if data is None else None,
              "decoded_by": data.autoencoder.name if data else None,  # the cache's autoencoder (frames measured)
              "per_seed": per_seed, "summary": summarize(per_seed), "curves": curves,
              "chunk_seconds": chunk_cost(seconds, clip // cfg.model.frames_per_chunk),
              "real": None if data else real_control(ev, cfg.world, samples, frames, block, horizons)}
    write_results(result, Path(out or run))
    return result


def chunk_cost(seconds: dict[int, list[float]], chunks_per_clip: int) -> dict | None:
    """Mean wall seconds per chunk (each rollout's batch of videos) in the first and the last clip of the
    rollouts: whether the cost stays flat with length. None for a bidirectional model (no chunks)."""
    runs = [s for s in seconds.values() if s]
    if not runs:
        return None
    first = [t for s in runs for t in s[:chunks_per_clip]]
    last = [t for s in runs for t in s[-chunks_per_clip:]]
    return {"first_clip": float(np.mean(first)), "last_clip": float(np.mean(last)), "chunks": len(runs[0])}


def real_control(ev: Evaluator, world: WorldConfig, samples: int, frames: int, block: int,
                 horizons: list[int]) -> dict:
    """The same block metrics and curves for real clips of the world as long as the rollouts (the clips are a pure
    function of these arguments: scored once per evaluator, e.g. once for all the arms of a demo process)."""
    key = (repr(world), samples, frames, block, tuple(horizons))
    if key not in ev._real:
        videos, prompts = real_clips(world, samples, frames)
        metrics_, curves = ev.score(videos, prompts, [], None, block, horizons)
        ev._real[key] = {"samples": samples, "metrics": metrics_, "curves": curves}
    return ev._real[key]


def write_results(result: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(result, indent=1))
    with (folder / "eval.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "mean", "ci95", "n"] + [f"seed_{s}" for s in result["seeds"]])
        for k, s in result["summary"].items():
            w.writerow([k, s["mean"], s["ci95"], s["n"]] + [result["per_seed"][seed].get(k, "") for seed in result["seeds"]])
