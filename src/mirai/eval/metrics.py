"""Evaluation formulas: VBench's quality dimensions (as VBench's code computes them), Frechet distance and KID.

Independent of any feature extractor: functions take features or uint8 frames. Results are `MetricResult`s
that record which extractor and weights produced them and whether the number is exactly VBench's
(`exact_vbench`). Proxies carry an `@` label, e.g. `subject_consistency@effnet_lite0`,
`motion_smoothness@linear`, `dynamic_degree@farneback`; never report them as VBench numbers. A number whose
formula is VBench's but whose protocol is not (which videos, which frames) says so in its label and in
`MetricResult.protocol`, e.g. `temporal_flickering@raw` (raw frames of every video, no static filter).

Frames are uint8 arrays (T, H, W, 3) per video (what `mirai.data.frames.to_uint8` gives); a batch is either an
array (B, T, H, W, 3) or a list of per-video arrays (videos may differ in length).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import linalg

from ..data.frames import to_uint8

# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class MetricResult:
    """One metric over a set of videos: the dataset value, per-video values and provenance."""

    name: str  # e.g. "subject_consistency" (exact) or "subject_consistency@effnet_lite0" (proxy)
    value: float  # the dataset aggregate, computed as VBench aggregates this dimension
    per_video: list[float] = field(default_factory=list)
    extractor: str | None = None  # None: computed on pixels
    weights_sha256: str | None = None
    exact_vbench: bool = False
    protocol: str | None = None  # how the inputs differ from VBench's protocol, when they do
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _videos(frames) -> list[np.ndarray]:
    """A batch (B, T, H, W, C) array or a list of (T, H, W, C) arrays -> list of uint8 arrays."""
    out = [np.asarray(v) for v in frames]
    for v in out:
        if v.dtype != np.uint8 or v.ndim != 4:
            raise ValueError(f"expected uint8 frames (T, H, W, C) per video, got {v.dtype} {v.shape}")
    return out


# --------------------------------------------------------------------------------------------------
# subject_consistency / background_consistency


def consistency_pairs(features: np.ndarray) -> np.ndarray:
    """VBench's per-frame term for frames 1..T-1: (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2.

    features: (T, D) one video's frame features (any scale; they are L2-normalised here). Returns (T-1,).
    """
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
    sim_prev = np.maximum(0.0, np.sum(f[1:] * f[:-1], axis=-1))
    sim_first = np.maximum(0.0, f[1:] @ f[0])
    return (sim_prev + sim_first) / 2


@dataclass
class ConsistencyScores:
    aggregate: float  # Σ over all frame pairs / number of pairs (VBench's `sim / cnt`)
    per_video: list[float]  # Σ pairs / (T-1) per video
    num_pairs: int


def consistency_scores(features: Sequence[np.ndarray] | np.ndarray) -> ConsistencyScores:
    """Subject/background consistency for a set of videos.

    features: (B, T, D) or a list of (T_i, D) per-video frame features (each T_i >= 2).
    The dataset aggregate weights every frame pair equally (longer videos count more), as VBench does.
    """
    pairs = [consistency_pairs(f) for f in features]
    if not pairs or any(len(p) == 0 for p in pairs):
        raise ValueError("consistency needs at least one video and >= 2 frames per video")
    total, count = sum(float(p.sum()) for p in pairs), sum(len(p) for p in pairs)
    return ConsistencyScores(total / count, [float(p.mean()) for p in pairs], count)


def consistency_metric(dimension: str, features, extractor) -> MetricResult:
    """`consistency_scores` wrapped as a result labelled by the extractor (see `FeatureExtractor.label`)."""
    s = consistency_scores(features)
    return MetricResult(extractor.label(dimension), s.aggregate, s.per_video, extractor.name,
                        extractor.weights_sha256, exact_vbench=dimension in extractor.reference_for,
                        extra={"num_pairs": s.num_pairs})


# --------------------------------------------------------------------------------------------------
# temporal_flickering, motion_smoothness@linear (pixel metrics)


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cv2.absdiff on uint8: |a - b| exactly, as float32."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.float32)


def flickering_per_video(video: np.ndarray) -> float:
    """(T, H, W, 3) uint8 -> (255 - mean_i MAE(frame_i, frame_{i+1})) / 255. Exact VBench."""
    if len(video) < 2:
        raise ValueError("temporal flickering needs >= 2 frames")
    maes = [_abs_diff(a, b).mean() for a, b in zip(video[:-1], video[1:])]
    return float((255.0 - np.mean(maes)) / 255.0)


FLICKERING_LABEL = "temporal_flickering@raw"
FLICKERING_PROTOCOL = (
    "VBench temporal_flickering formula, (255 - mean MAE of consecutive frames) / 255 averaged over videos, "
    "computed on the raw uint8 frames of every video given. Not VBench's protocol: VBench scores frames decoded "
    "from the saved .mp4 (lossy) and only the videos that pass its static filter (vbench/cli/static_filter.py, "
    "RAFT), so this number is not comparable with published VBench temporal_flickering.")


def temporal_flickering(frames) -> MetricResult:
    """VBench's temporal_flickering formula (mean over videos) on raw uint8 frames of all videos given.

    Labelled `temporal_flickering@raw` with `exact_vbench=False`: VBench decodes the .mp4 and keeps only
    static-filtered videos (see `FLICKERING_PROTOCOL`); the per-video formula itself is VBench's.
    """
    per = [flickering_per_video(v) for v in _videos(frames)]
    return MetricResult(FLICKERING_LABEL, float(np.mean(per)), per, exact_vbench=False,
                        protocol=FLICKERING_PROTOCOL)


def motion_smoothness_per_video(video: np.ndarray) -> float:
    """Linear-interpolation proxy of VBench's AMT protocol on one (T, H, W, 3) uint8 video.

    The even frames predict each odd frame i as round((f_{i-1} + f_{i+1}) / 2) (uint8, like AMT's output);
    the score is (255 - mean absdiff) / 255 over odd frames with both neighbours (an even T drops the last).
    """
    even = video[0::2].astype(np.float32)
    mids = np.clip(np.round((even[:-1] + even[1:]) / 2), 0, 255).astype(np.uint8)
    odd = video[1::2][: len(mids)]
    if len(odd) == 0:
        raise ValueError("motion smoothness needs >= 3 frames")
    diffs = [_abs_diff(o, m).mean() for o, m in zip(odd, mids)]
    return float((255.0 - np.mean(diffs)) / 255.0)


def motion_smoothness_linear(frames) -> MetricResult:
    """`motion_smoothness@linear`: a proxy (it penalises real motion more than AMT does)."""
    per = [motion_smoothness_per_video(v) for v in _videos(frames)]
    return MetricResult("motion_smoothness@linear", float(np.mean(per)), per, exact_vbench=False)


# --------------------------------------------------------------------------------------------------
# dynamic_degree@farneback (OpenCV optical flow instead of RAFT)


def _flow_magnitude(a: np.ndarray, b: np.ndarray, method: str) -> np.ndarray:
    """(H, W) optical-flow magnitude from RGB uint8 frame a to b."""
    import cv2  # opencv-python-headless; imported here so the rest of the module needs no OpenCV

    ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    if method == "farneback":
        levels = max(1, int(np.log2(min(a.shape[:2]) / 8)))  # keep the coarsest level >= 8 px
        flow = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, levels, 9, 3, 5, 1.1, 0)
    elif method == "dis":
        flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(ga, gb, None)
    else:
        raise ValueError(f"unknown flow method {method!r} (farneback or dis)")
    return np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)


def top5_flow_score(magnitude: np.ndarray) -> float:
    """VBench `get_score`: mean of the top 5% flow magnitudes (int(h*w*0.05) of them, at least 1)."""
    flat = np.sort(magnitude.ravel())[::-1]
    return float(flat[: max(1, int(magnitude.size * 0.05))].mean())


def dynamic_params(height: int, width: int, num_sampled: int) -> tuple[float, int]:
    """VBench `DynamicDegree.set_params`: thres = 6 * min(H, W) / 256, count_num = round(4 * T_sampled / 16).

    No fps term: VBench scaled thres by max(1, 8/fps) only from 11abda9 to fc4620b (3-13 July 2024); at HEAD
    fps only sets the sampling interval, max(1, round(fps / 8)) (see `is_dynamic`).
    """
    return 6.0 * min(height, width) / 256.0, round(4 * num_sampled / 16.0)


def is_dynamic(video: np.ndarray, fps: float = 8.0, method: str = "farneback") -> tuple[bool, list[float]]:
    """One (T, H, W, 3) uint8 video: sampled at ~8 fps (interval max(1, round(fps/8))), dynamic once count_num
    consecutive-pair scores exceed thres (VBench `check_move`). Returns (dynamic, per-pair scores)."""
    frames = video[:: max(1, round(fps / 8))]
    thres, count_num = dynamic_params(*video.shape[1:3], len(frames))
    scores = [top5_flow_score(_flow_magnitude(a, b, method)) for a, b in zip(frames[:-1], frames[1:])]
    # VBench returns True as soon as count >= count_num, which a count_num of 0 satisfies at the first pair.
    count = np.cumsum(np.array(scores) > thres)
    return bool(np.any(count >= count_num)), scores


def dynamic_degree_flow(frames, fps: float = 8.0, method: str = "farneback") -> MetricResult:
    """`dynamic_degree@<method>`: fraction of videos judged dynamic, RAFT replaced by OpenCV flow (a proxy)."""
    results = [is_dynamic(v, fps, method) for v in _videos(frames)]
    per = [float(d) for d, _ in results]
    return MetricResult(f"dynamic_degree@{method}", float(np.mean(per)), per, exact_vbench=False,
                        extra={"fps": fps, "pair_scores": [s for _, s in results]})


# --------------------------------------------------------------------------------------------------
# VBench normalisation and aggregate scores (scripts/constant.py)

NORMALIZE: dict[str, tuple[float, float]] = {  # dimension -> (Min, Max)
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
    "object_class": (0.0, 1.0),
    "multiple_objects": (0.0, 1.0),
    "human_action": (0.0, 1.0),
    "color": (0.0, 1.0),
    "spatial_relationship": (0.0, 1.0),
    "scene": (0.0, 0.8222),
    "appearance_style": (0.0009, 0.2855),
    "temporal_style": (0.0, 0.364),
    "overall_consistency": (0.0, 0.364),
}
DIM_WEIGHT: dict[str, float] = {d: 1.0 for d in NORMALIZE} | {"dynamic_degree": 0.5}
QUALITY_DIMS = ("subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
                "aesthetic_quality", "imaging_quality", "dynamic_degree")
SEMANTIC_DIMS = ("object_class", "multiple_objects", "human_action", "color", "spatial_relationship", "scene",
                 "appearance_style", "temporal_style", "overall_consistency")
QUALITY_WEIGHT, SEMANTIC_WEIGHT = 4, 1


def _dimension(key: str) -> tuple[str, bool]:
    """'subject_consistency@effnet_lite0' -> ('subject_consistency', proxy=True); spaces allowed as in VBench."""
    base, _, tag = key.partition("@")
    return base.strip().replace(" ", "_"), bool(tag)


def _tag(key: str) -> str:
    """'subject_consistency@effnet_lite0' -> 'effnet_lite0'; '' for an exact key."""
    return key.partition("@")[2].strip()


def normalized(dimension: str, score: float) -> float:
    """(s - Min) / (Max - Min) * w, VBench's per-dimension normalisation."""
    lo, hi = NORMALIZE[dimension]
    return (score - lo) / (hi - lo) * DIM_WEIGHT[dimension]


@dataclass
class AggregateScore:
    # "quality_score" when all 7 dims are present and exact; "_partial" when some are missing; any `@tag` of the
    # keys used is appended, so a proxy aggregate says so: "quality_score_partial@effnet_lite0+farneback+linear+raw"
    name: str
    value: float
    dimensions: list[str]  # the keys used
    weight_sum: float  # the denominator (6.5 for the full Quality score)
    partial: bool  # some dimensions of the group are missing
    exact_vbench: bool  # every dimension used is VBench-exact (no `@proxy` key)
    proxies: list[str] = field(default_factory=list)  # the sorted `@` tags of the keys used


# Dimensions that differ only by their model: the same features (one `@extractor` tag) must not score both.
SAME_FEATURE_DIMS = ("subject_consistency", "background_consistency")


def _aggregate(scores: Mapping[str, float], dims: tuple[str, ...], name: str) -> AggregateScore:
    used, total, wsum = [], 0.0, 0.0
    seen: set[str] = set()
    for key, s in scores.items():
        dim, _ = _dimension(key)
        if dim not in dims:
            continue
        if dim in seen:
            raise ValueError(f"dimension {dim} given twice (e.g. exact and proxy); pass one")
        seen.add(dim)
        used.append(key)
        total += normalized(dim, float(s))
        wsum += DIM_WEIGHT[dim]
    if not used:
        raise ValueError(f"no {name} dimension among {sorted(scores)}")
    tags = [_tag(k) for k in used if _dimension(k)[0] in SAME_FEATURE_DIMS]
    if len(tags) == 2 and tags[0] and tags[0] == tags[1]:
        raise ValueError(f"{' and '.join(SAME_FEATURE_DIMS)} both come from extractor {tags[0]!r}: the same "
                         "features would count twice; pass one of them")
    partial = seen != set(dims)
    proxies = sorted({_tag(k) for k in used if _tag(k)})
    exact = not proxies
    label = f"{name}_partial" if partial or not exact else name
    if proxies:
        label += "@" + "+".join(proxies)
    return AggregateScore(label, total / wsum, used, wsum, partial, exact, proxies)


def quality_score_partial(scores: Mapping[str, float]) -> AggregateScore:
    """VBench Quality over the quality dimensions present: Σ norm_d / Σ w_d (6.5 when all 7 are present).

    Keys are dimension names, optionally with an `@extractor` proxy tag; other keys are ignored. The result is
    named `quality_score_partial` unless all 7 dimensions are present and exact, and carries the proxy tags of
    the keys it used (`quality_score_partial@effnet_lite0+linear`). VBench's Min/Max constants were fitted to its
    reference models, so a value built from proxies is only comparable within Mirai. subject and background
    consistency with the same `@extractor` tag are refused: one set of features would count twice.
    """
    return _aggregate(scores, QUALITY_DIMS, "quality_score")


def semantic_score(scores: Mapping[str, float]) -> AggregateScore:
    """VBench Semantic: Σ norm_d / 9 over the semantic dimensions (Mirai computes none of them itself)."""
    return _aggregate(scores, SEMANTIC_DIMS, "semantic_score")


def total_score(quality: float, semantic: float) -> float:
    """VBench Total = (4 Quality + 1 Semantic) / 5."""
    return (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)


# --------------------------------------------------------------------------------------------------
# Distribution distances on features: Frechet distance and KID


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                                eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}); the real part of sqrtm, as pytorch-fid does."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise both, as pytorch-fid
        offset = np.eye(len(s1)) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,), covariance (D, D) with ddof=1."""
    f = np.asarray(features, dtype=np.float64)
    if len(f) < 2:
        raise ValueError("need >= 2 feature vectors for a covariance")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to (N, D) and (M, D) features (FID/FVD formula).

    With fewer samples than dimensions (e.g. 64 clips of 3840-d temporal features) the D x D sqrtm is slow and
    its input singular; then tr((S1 S2)^{1/2}) is computed exactly as the nuclear norm of X1 X2^T / sqrt((N-1)(M-1))
    (X centred): the non-zero eigenvalues of S1 S2 are the squared singular values of that N x M matrix.
    """
    x1, x2 = np.asarray(features1, dtype=np.float64), np.asarray(features2, dtype=np.float64)
    if x1.shape[1] <= min(len(x1), len(x2)):  # full-rank covariances: the plain formula
        return frechet_distance_from_stats(*feature_stats(x1), *feature_stats(x2))
    if min(len(x1), len(x2)) < 2:
        raise ValueError("need >= 2 feature vectors for a covariance")
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    n1, n2 = len(x1) - 1, len(x2) - 1
    tr_covmean = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    diff = x1.mean(0) - x2.mean(0)
    return float(diff @ diff + (c1 * c1).sum() / n1 + (c2 * c2).sum() / n2 - 2 * tr_covmean)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(a, b) = (a.b / d + 1)^3 (KID's kernel)."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: mean and std of unbiased MMD^2 over random subsets (without replacement within a subset).

    features: (N, D), (M, D); the subset size is capped at min(N, M). Seeded, so deterministic.
    """
    x, y = np.asarray(features1, dtype=np.float64), np.asarray(features2, dtype=np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs >= 2 samples per set")
    rng = np.random.default_rng(seed)
    vals = [_mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
            for _ in range(num_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def temporal_features(frame_features: np.ndarray) -> np.ndarray:
    """Clip-level features for an FVD-like proxy: [mean_t f, std_t f, mean_t |f_{t+1} - f_t|].

    frame_features: (B, T, D) with T >= 2 -> (B, 3D). std is the population std over time.
    """
    f = np.asarray(frame_features, dtype=np.float64)
    if f.ndim != 3 or f.shape[1] < 2:
        raise ValueError(f"expected (B, T>=2, D) frame features, got {f.shape}")
    return np.concatenate([f.mean(1), f.std(1), np.abs(np.diff(f, axis=1)).mean(1)], axis=-1)


def distribution_metrics(real: np.ndarray, fake: np.ndarray, name: str, extractor=None, kid_subsets: int = 100,
                         seed: int = 0) -> list[MetricResult]:
    """FD and KID between (N, D) real and (M, D) generated features, labelled e.g. `fd@effnet_lite0-temporal`."""
    kid, kid_std = kernel_inception_distance(real, fake, kid_subsets, seed=seed)
    prov = {"extractor": getattr(extractor, "name", None), "weights_sha256": getattr(extractor, "weights_sha256", None)}
    n = {"num_real": len(real), "num_fake": len(fake), "dim": int(np.shape(real)[1])}
    return [MetricResult(f"fd@{name}", frechet_distance(real, fake), **prov, extra=n),
            MetricResult(f"kid@{name}", kid, **prov, extra=n | {"kid_std": kid_std})]


# --------------------------------------------------------------------------------------------------
# Convenience: the VBench-style quality dimensions of a batch of videos with one or two extractors


def same_features(a, b) -> bool:
    """Two extractors give the same features: the same object, or the same name and weights file hash."""
    return a is b or (a.name == b.name and a.weights_sha256 == b.weights_sha256)


def consistency_roles(subject_extractor, background_extractor=None) -> list[tuple[str, object]]:
    """Which consistency dimensions to report, each with the extractor whose features score it.

    Two different extractors (e.g. DINO and CLIP B/32, as VBench): both dimensions. One extractor (none given for
    background, or the same model): ONE number, since subject and background consistency would be the same
    formula on the same features. It is reported as the dimension the extractor is VBench's model for
    (`background_consistency` for clip_vitb32), otherwise as `subject_consistency@<extractor>`.
    """
    if background_extractor is not None and not same_features(subject_extractor, background_extractor):
        return [("subject_consistency", subject_extractor), ("background_consistency", background_extractor)]
    ref = getattr(subject_extractor, "reference_for", ())
    only_background = "background_consistency" in ref and "subject_consistency" not in ref
    return [("background_consistency" if only_background else "subject_consistency", subject_extractor)]


def quality_metrics(video, subject_extractor, background_extractor=None, fps: float = 8.0,
                    flow: str = "farneback") -> dict[str, MetricResult]:
    """All quality dimensions Mirai computes for one set of videos, keyed by their (labelled) names.

    video: (B, T, C, H, W) float in [-1, 1] (quantised to uint8 as when saved) or uint8 (B, T, H, W, 3).
    subject_extractor / background_extractor: loaded `FeatureExtractor`s; without a distinct background
    extractor only one consistency number is reported (`consistency_roles`). Names come out as e.g.
    `subject_consistency@effnet_lite0` unless the extractor is VBench's own.
    """
    frames = _as_uint8_frames(video)
    results = [consistency_metric(dim, ext.frames_batch(frames), ext)
               for dim, ext in consistency_roles(subject_extractor, background_extractor)]
    results += [
        temporal_flickering(frames),
        motion_smoothness_linear(frames),
        dynamic_degree_flow(frames, fps, flow),
    ]
    return {r.name: r for r in results}


def _as_uint8_frames(video) -> np.ndarray:
    """(B, T, C, H, W) float tensor in [-1, 1] -> (B, T, H, W, 3) uint8; uint8 arrays pass through."""
    if isinstance(video, np.ndarray) and video.dtype == np.uint8:
        return video
    return to_uint8(video)
