"""The feature extractors' networks, with the key names of their public weights files so those load strictly:
EfficientNet-Lite0 (the shipped default) and DINO ViT-B/16. `extractors` builds them from a weights file and
wraps them with VBench's preprocessing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
