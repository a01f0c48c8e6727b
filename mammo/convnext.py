"""ConvNeXt-Tiny and -Small backbones whose state dicts have timm's keys and shapes.

The layout is timm's ``convnext_tiny`` / ``convnext_small`` (Liu et al., 2022): a 4x4/4
patch stem, four stages of 7x7 depthwise + inverted-MLP blocks with layer scale (widths
96-192-384-768, a LayerNorm + 2x2/2 conv between stages), a global average pool and a final
LayerNorm. Module names follow timm (``stem.0``, ``stages.{i}.blocks.{j}.conv_dw``,
``head.norm`` ...), so an exported timm state dict loads by key (mammo/pretrained.py); only
timm's classifier ``head.fc`` is absent. Inputs of at least 32x32 pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammo.models import register_model

WIDTHS = (96, 192, 384, 768)
EPS = 1e-6
LAYER_SCALE = 1e-6  # initial per-channel scale of each block's residual branch


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W), at every pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=EPS)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # -> (N, C, H, W)


class Mlp(nn.Module):
    """Linear (C -> 4C), GELU, linear (4C -> C) on channels-last features (..., C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class ConvNeXtBlock(nn.Module):
    """x + gamma * MLP(LayerNorm(depthwise 7x7 conv(x))); (N, C, H, W) -> same shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=EPS)
        self.mlp = Mlp(channels)
        self.gamma = nn.Parameter(torch.full((channels,), LAYER_SCALE))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv_dw(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        out = self.mlp(self.norm(out)) * self.gamma
        return x + out.permute(0, 3, 1, 2)  # -> (N, C, H, W)


class ConvNeXtStage(nn.Module):
    """Downsample (LayerNorm + 2x2/2 conv, none when the width is kept), then blocks.
    (N, c_in, H, W) -> (N, c_out, H/2, W/2), or the same shape without a downsample."""

    def __init__(self, c_in: int, c_out: int, depth: int) -> None:
        super().__init__()
        self.downsample: nn.Module = nn.Identity()
        if c_in != c_out:
            self.downsample = nn.Sequential(LayerNorm2d(c_in), nn.Conv2d(c_in, c_out, 2, 2))
        self.blocks = nn.Sequential(*(ConvNeXtBlock(c_out) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.blocks(self.downsample(x))
        return out


class PooledNorm(nn.Module):
    """Global average pool then LayerNorm: (N, C, H, W) -> (N, C) (timm's head less fc)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=EPS)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(x.mean((2, 3)))
        return out


class ConvNeXt(nn.Module):
    """ConvNeXt with ``depths`` blocks per stage -> (N, 768). No ``head.fc``: the
    Classifier's head replaces it."""

    def __init__(self, in_channels: int, depths: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, WIDTHS[0], 4, stride=4), LayerNorm2d(WIDTHS[0])
        )
        c_in, stages = WIDTHS[0], []
        for depth, width in zip(depths, WIDTHS, strict=True):
            stages.append(ConvNeXtStage(c_in, width, depth))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.head = PooledNorm(c_in)
        self.features = c_in
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (N, C, H, W) -> (N, 96, H/4, W/4)
        x = self.stages(x)  # -> (N, 768, H/32, W/32)
        out: Tensor = self.head(x)  # -> (N, 768)
        return out


def _convnext(in_channels: int, depths: tuple[int, int, int, int]) -> tuple[nn.Module, int]:
    backbone = ConvNeXt(in_channels, depths)
    return backbone, backbone.features


@register_model("convnext_tiny")
def convnext_tiny(in_channels: int) -> tuple[nn.Module, int]:
    """ConvNeXt-T, depths (3, 3, 9, 3): 27.8 M parameters, 768 features."""
    return _convnext(in_channels, (3, 3, 9, 3))


@register_model("convnext_small")
def convnext_small(in_channels: int) -> tuple[nn.Module, int]:
    """ConvNeXt-S, depths (3, 3, 27, 3): 49.5 M parameters, 768 features."""
    return _convnext(in_channels, (3, 3, 27, 3))
