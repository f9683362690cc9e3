"""Golden tests for the VBench formulas, FD and KID (pure numpy; milliseconds)."""

import numpy as np
import pytest

from mirai.eval import metrics as M


def _static_video(T=8, H=32, W=32, seed=0):
    frame = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    return np.repeat(frame[None], T, axis=0)


def _rotating_features(T, theta):
    """Unit 2-d features rotating by theta per frame (then scaled: the formula must normalise)."""
    ang = np.arange(T) * theta
    scale = np.arange(1, T + 1)[:, None]
    return np.stack([np.cos(ang), np.sin(ang)], -1) * scale


# --------------------------------------------------------------------------------------------------
# consistency


def test_static_video_consistency_is_one():
    feats = np.repeat(np.random.default_rng(0).normal(size=(1, 16)), 8, axis=0)
    s = M.consistency_scores([feats])
    assert s.aggregate == pytest.approx(1.0) and s.per_video == [pytest.approx(1.0)] and s.num_pairs == 7


def test_constant_rotation_matches_hand_computed_value():
    # theta = 30 deg: sim_prev = cos30 every pair; sim_first = cos30, cos60, max(0, cos90), max(0, cos120)
    c30, c60 = np.cos(np.pi / 6), 0.5
    hand = ((c30 + c30) / 2 + (c30 + c60) / 2 + (c30 + 0) / 2 + (c30 + 0) / 2) / 4
    s = M.consistency_scores([_rotating_features(5, np.pi / 6)])
    assert s.per_video[0] == pytest.approx(hand, abs=1e-12)
    assert hand == pytest.approx(0.6037659, abs=1e-7)  # written out, in case both sides shared a bug


def test_negative_cosines_are_clipped_at_zero():
    feats = np.array([[1.0, 0.0], [-1.0, 0.0]])  # cos = -1 to both previous and first
    assert M.consistency_scores([feats]).aggregate == 0.0


def test_dataset_aggregate_weights_frame_pairs_not_videos():
    same = np.ones((2, 4))  # 1 pair scoring 1
    orthogonal = np.eye(5)  # 4 pairs scoring 0
    s = M.consistency_scores([same, orthogonal])
    assert s.per_video == [pytest.approx(1.0), pytest.approx(0.0)]
    assert s.num_pairs == 5
    assert s.aggregate == pytest.approx(1 / 5)  # not the video mean 0.5


def test_consistency_metric_labels_proxy_and_reference():
    class Stub:
        name, weights_sha256 = "effnet_lite0", "ab" * 32
        reference_for = ()

        def label(self, dim):
            return f"{dim}@{self.name}"

    r = M.consistency_metric("subject_consistency", [np.ones((3, 2))], Stub())
    assert r.name == "subject_consistency@effnet_lite0" and not r.exact_vbench
    assert r.extractor == "effnet_lite0" and r.weights_sha256 == "ab" * 32 and r.value == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# pixel metrics


def test_static_video_flickering_and_smoothness_are_one():
    v = _static_video()
    assert M.temporal_flickering([v]).value == 1.0
    assert M.motion_smoothness_linear([v]).value == 1.0
    assert M.dynamic_degree_flow([v]).value == 0.0


def test_constant_brightness_ramp():
    base = np.random.default_rng(1).integers(0, 100, (16, 16, 3))
    v = np.stack([base + 3 * t for t in range(6)]).astype(np.uint8)  # every pixel +3 per frame
    r = M.temporal_flickering(v[None])
    assert r.value == pytest.approx((255 - 3) / 255) and r.name == "temporal_flickering@raw"
    assert M.motion_smoothness_linear([v]).value == pytest.approx(1.0)  # a linear ramp is perfectly predicted


def test_alternating_frames_hand_values():
    v = np.stack([np.full((8, 8, 3), 10 * (t % 2), np.uint8) for t in range(7)])  # 0,10,0,10,...
    assert M.flickering_per_video(v) == pytest.approx(245 / 255)
    assert M.motion_smoothness_per_video(v) == pytest.approx(245 / 255)
    # Even T: the last odd frame has no right neighbour and is ignored, as in VBench.
    assert M.motion_smoothness_per_video(v[:6]) == pytest.approx(245 / 255)


def test_flickering_is_mean_over_videos():
    a, b = _static_video(T=4), np.stack([np.full((8, 8, 3), 51 * (t % 2), np.uint8) for t in range(9)])
    r = M.temporal_flickering([a, b])
    assert r.per_video == [1.0, pytest.approx(204 / 255)]
    assert r.value == pytest.approx((1 + 204 / 255) / 2)


def test_flickering_says_it_is_not_vbench_protocol():
    # VBench's formula, but on raw frames of every video: VBench decodes the .mp4 and static-filters first.
    r = M.temporal_flickering([_static_video(T=3)])
    assert not r.exact_vbench and r.name == M.FLICKERING_LABEL == "temporal_flickering@raw"
    assert "raw uint8 frames" in r.protocol and "static filter" in r.protocol and ".mp4" in r.protocol
    assert r.to_dict()["protocol"] == M.FLICKERING_PROTOCOL
    q = M.quality_score_partial({r.name: r.value})
    assert not q.exact_vbench and q.name == "quality_score_partial@raw"  # the aggregate inherits the label


def test_rejects_float_frames():
    with pytest.raises(ValueError, match="uint8"):
        M.temporal_flickering([np.zeros((4, 8, 8, 3), np.float32)])


# --------------------------------------------------------------------------------------------------
# dynamic degree


def test_dynamic_params_match_vbench():
    # vbench/dynamic_degree.py @45e79ec, set_params: thres = 6 * min(H, W) / 256, count_num = round(4 * T / 16)
    assert M.dynamic_params(32, 32, 16) == (pytest.approx(0.75), 4)
    assert M.dynamic_params(256, 480, 8) == (pytest.approx(6.0), 2)
    assert M.dynamic_params(480, 320, 10) == (pytest.approx(7.5), 2)  # round(2.5) = 2, as Python's round


def test_dynamic_threshold_does_not_depend_on_fps(monkeypatch):
    # Every pair scores 1.0 px: above 6 * 32 / 256 = 0.75, so dynamic at any fps. The July-2024 VBench factor
    # max(1, 8 / fps) made the threshold 1.5 at fps=4 and this video static.
    monkeypatch.setattr(M, "_flow_magnitude", lambda a, b, method: np.ones(a.shape[:2]))
    video = _static_video(T=16)
    for fps in (4.0, 8.0, 16.0):
        dynamic, scores = M.is_dynamic(video, fps=fps)
        assert dynamic and scores[0] == 1.0
    assert len(M.is_dynamic(video, fps=16.0)[1]) == 7  # 16 fps: every 2nd frame (interval round(16 / 8))
    assert len(M.is_dynamic(video, fps=4.0)[1]) == 15  # interval max(1, round(0.5)) = 1


def test_top5_flow_score():
    mag = np.zeros((10, 10))
    mag.flat[:5] = [9, 8, 7, 6, 5]  # int(100 * 0.05) = 5 largest
    assert M.top5_flow_score(mag) == pytest.approx(7.0)


def _moving_square(T=16, speed=2):
    v = np.full((T, 32, 32, 3), 60, np.uint8)
    for t in range(T):
        x = 2 + speed * t % 20
        v[t, 10:20, x : x + 8] = 230
    return v


def test_moving_square_is_dynamic_static_is_not():
    r = M.dynamic_degree_flow([_moving_square(), _static_video(T=16)])
    assert r.per_video == [1.0, 0.0] and r.value == 0.5 and r.name == "dynamic_degree@farneback"
    assert not r.exact_vbench


# --------------------------------------------------------------------------------------------------
# aggregates


SCORES = {"subject_consistency": 0.95, "background_consistency": 0.96, "temporal_flickering": 0.97,
          "motion_smoothness": 0.98, "aesthetic_quality": 0.6, "imaging_quality": 0.65, "dynamic_degree": 0.4}


def test_quality_score_matches_vbench_constants():
    q = M.quality_score_partial(SCORES)
    hand = ((0.95 - 0.1462) / 0.8538 + (0.96 - 0.2615) / 0.7385 + (0.97 - 0.6293) / 0.3707
            + (0.98 - 0.706) / 0.2915 + 0.6 + 0.65 + 0.5 * 0.4) / 6.5
    assert q.value == pytest.approx(hand) and q.value == pytest.approx(0.7994326386)
    assert q.weight_sum == 6.5 and q.name == "quality_score" and not q.partial and q.exact_vbench


def test_partial_quality_with_proxies_is_labelled():
    q = M.quality_score_partial({"subject_consistency@effnet_lite0": 0.9, "dynamic_degree@farneback": 1.0,
                                 "fd@effnet_lite0-temporal": 12.0})
    assert q.name == "quality_score_partial@effnet_lite0+farneback" and q.partial and not q.exact_vbench
    assert q.proxies == ["effnet_lite0", "farneback"] and q.weight_sum == 1.5
    assert q.value == pytest.approx(((0.9 - 0.1462) / 0.8538 + 0.5) / 1.5)
    with pytest.raises(ValueError, match="twice"):
        M.quality_score_partial({"subject_consistency": 0.9, "subject_consistency@effnet_lite0": 0.9})


def test_aggregate_refuses_the_same_features_twice():
    # One extractor's features scored as both subject and background consistency would count twice.
    with pytest.raises(ValueError, match="count twice"):
        M.quality_score_partial({"subject_consistency@effnet_lite0": 0.9, "background_consistency@effnet_lite0": 0.9})
    # Different models (VBench: DINO and CLIP) are two dimensions.
    q = M.quality_score_partial({"subject_consistency": 0.9, "background_consistency": 0.9})
    assert q.weight_sum == 2.0 and q.exact_vbench and q.name == "quality_score_partial"
    q = M.quality_score_partial({"subject_consistency@effnet_lite0": 0.9, "background_consistency": 0.9})
    assert q.weight_sum == 2.0 and q.name == "quality_score_partial@effnet_lite0"


def test_consistency_roles_one_number_per_distinct_extractor():
    class Ext:
        def __init__(self, name, sha="00", reference_for=()):
            self.name, self.weights_sha256, self.reference_for = name, sha, reference_for

    effnet, dino = Ext("effnet_lite0"), Ext("dino_vitb16", "11", ("subject_consistency",))
    clip = Ext("clip_vitb32", "22", ("background_consistency",))
    assert M.consistency_roles(effnet) == [("subject_consistency", effnet)]
    assert M.consistency_roles(effnet, effnet) == [("subject_consistency", effnet)]
    assert M.consistency_roles(effnet, Ext("effnet_lite0")) == [("subject_consistency", effnet)]  # same file
    assert M.consistency_roles(clip) == [("background_consistency", clip)]  # CLIP B/32 is background's model
    assert M.consistency_roles(dino, clip) == [("subject_consistency", dino), ("background_consistency", clip)]


def test_semantic_and_total():
    sem = {"object class": 0.8, "multiple objects": 0.5, "human action": 0.9, "color": 0.85,
           "spatial relationship": 0.6, "scene": 0.4, "appearance style": 0.2, "temporal style": 0.2,
           "overall consistency": 0.25}
    s = M.semantic_score(sem)
    assert s.value == pytest.approx(0.6747046363) and s.weight_sum == 9
    assert M.total_score(0.8, 0.6) == pytest.approx((4 * 0.8 + 0.6) / 5)


# --------------------------------------------------------------------------------------------------
# FD / KID / temporal features


def test_fd_identical_sets_is_zero():
    f = np.random.default_rng(0).normal(size=(200, 8))
    assert M.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)


def test_fd_closed_form():
    # 1-d: (m1 - m2)^2 + (s1 - s2)^2
    assert M.frechet_distance_from_stats(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) \
        == pytest.approx(4 + 1)
    # Sigma2 = c^2 Sigma1 (non-diagonal): |dmu|^2 + (1 - c)^2 tr(Sigma1)
    A = np.random.default_rng(1).normal(size=(5, 5))
    S = A @ A.T + np.eye(5)
    mu1, mu2, c = np.zeros(5), np.full(5, 0.5), 3.0
    expect = 5 * 0.25 + (1 - c) ** 2 * np.trace(S)
    assert M.frechet_distance_from_stats(mu1, S, mu2, c * c * S) == pytest.approx(expect, rel=1e-8)


def test_fd_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, size=(20000, 3))
    y = rng.normal(1.0, 2.0, size=(20000, 3))
    assert M.frechet_distance(x, y) == pytest.approx(3 * 1.0 + 3 * (2 - 1) ** 2, rel=0.03)


def test_fd_low_sample_path_equals_sqrtm():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 40)), rng.normal(0.3, 1.5, size=(9, 40))  # D > N: singular covariances
    direct = M.frechet_distance_from_stats(*M.feature_stats(x), *M.feature_stats(y))
    assert M.frechet_distance(x, y) == pytest.approx(direct, rel=1e-6)


def test_kid_unbiased_near_zero_for_same_distribution_and_positive_otherwise():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    kid, std = M.kernel_inception_distance(x, y, num_subsets=10, subset_size=150)
    assert abs(kid) < 3 * std + 1e-3
    far, _ = M.kernel_inception_distance(x, y + 1.0, num_subsets=10, subset_size=150)
    assert far > 20 * max(abs(kid), std)
    assert M.kernel_inception_distance(x, y, 5, 100, seed=7) == M.kernel_inception_distance(x, y, 5, 100, seed=7)


def test_temporal_features():
    f = np.array([[[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]]])  # (B=1, T=3, D=2)
    out = M.temporal_features(f)
    assert out.shape == (1, 6)
    np.testing.assert_allclose(out[0], [2.0, 1.0, np.std([0, 2, 4]), 0.0, 2.0, 0.0])


def test_quality_metrics_on_a_video():
    class Stub:  # stands in for a FeatureExtractor: grey-level histogram features
        name, weights_sha256, reference_for = "stub", None, ()

        def label(self, dim):
            return f"{dim}@stub"

        def frames_batch(self, frames):
            return np.stack([[np.histogram(f, bins=8, range=(0, 256))[0] + 1.0 for f in v] for v in frames])

    video = np.stack([_moving_square(T=9), _static_video(T=9)])
    out = M.quality_metrics(video, Stub())
    # One extractor: one consistency number (background would be the same features again).
    assert set(out) == {"subject_consistency@stub", "temporal_flickering@raw", "motion_smoothness@linear",
                        "dynamic_degree@farneback"}
    assert out["temporal_flickering@raw"].per_video[1] == 1.0
    assert out["dynamic_degree@farneback"].per_video == [1.0, 0.0]
    q = M.quality_score_partial({k: r.value for k, r in out.items()})
    assert q.name == "quality_score_partial@farneback+linear+raw+stub" and q.weight_sum == 3.5

    class Other(Stub):
        name = "other"

        def label(self, dim):
            return f"{dim}@other"

    both = M.quality_metrics(video, Stub(), Other())
    assert {"subject_consistency@stub", "background_consistency@other"} <= set(both)


def _kid_by_definition(a, b):
    """Unbiased MMD^2 with KID's kernel (a.b / d + 1)^3, written out from the definition."""
    def mean_k(u, v, same):
        k = (u @ v.T / u.shape[1] + 1) ** 3
        return (k.sum() - np.trace(k)) / (len(u) * (len(u) - 1)) if same else k.mean()
    return mean_k(a, a, True) + mean_k(b, b, True) - 2 * mean_k(a, b, False)


def test_distribution_metrics_labels_and_values():
    rng = np.random.default_rng(4)
    fd, kid = M.distribution_metrics(rng.normal(size=(50, 4)), rng.normal(size=(40, 4)), "effnet_lite0-temporal",
                                     kid_subsets=5)
    assert fd.name == "fd@effnet_lite0-temporal" and kid.name == "kid@effnet_lite0-temporal"
    assert kid.extra["num_fake"] == 40 and "kid_std" in kid.extra

    # 4-d: full-rank covariances (the sqrtm formula); 60-d from 50 clips: the nuclear-norm path
    for d in (4, 60):
        x, other = rng.normal(size=(50, d)), rng.normal(size=(50, d))
        shift = np.resize([1.0, -2.0, 0.5, 3.0], d)
        spread = x.mean(0) + 2 * (x - x.mean(0))  # same mean, covariance 4 S

        def fd_kid(a, b):
            fd, kid = M.distribution_metrics(a, b, "t", kid_subsets=5)
            return fd.value, kid.value, kid.extra["kid_std"]

        assert fd_kid(x, x)[0] == pytest.approx(0.0, abs=1e-6)
        # the same cloud moved: equal covariances leave ||mu1 - mu2||^2
        assert fd_kid(x, x + shift)[0] == pytest.approx(shift @ shift, rel=1e-6)
        # equal means: tr(S) + tr(4 S) - 2 tr((4 S^2)^1/2) = tr(S)
        assert fd_kid(x, spread)[0] == pytest.approx(np.trace(np.cov(x, rowvar=False)), rel=1e-6)
        # KID: 50 and 50 vectors, so each subset is a whole set reordered: the definition's value, no spread
        for b in (x + shift, other, x):
            _, kid, kid_std = fd_kid(x, b)
            assert kid == pytest.approx(_kid_by_definition(x, b), rel=1e-9, abs=1e-12) and kid_std < 1e-9
        same, far = fd_kid(x, other)[1], fd_kid(x, x + shift)[1]
        assert abs(same) < 1e-2 * far  # two draws of one distribution: near 0 next to a shifted set
