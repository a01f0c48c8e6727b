"""EfficientNet-B0 and -B2 backbones whose state dicts have timm's keys and shapes.

The layout is timm's ``efficientnet_b0`` / ``efficientnet_b2`` (Tan & Le, 2019): a 3x3/2
stem, seven stages of mobile inverted bottlenecks with squeeze-and-excitation, a 1x1 head
conv, then a global average pool. Module names follow timm (``conv_stem``, ``bn1``,
``blocks.{stage}.{i}.conv_pw`` ...), so an exported timm state dict loads by key
(mammo/pretrained.py). Convolutions pad symmetrically (k // 2) as timm's PyTorch-native
weights do, and BatchNorm keeps PyTorch's defaults (eps 1e-5).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from mammo.models import register_model

# (repeats, kernel, stride of the first block, expansion, output channels) per stage, at
# width and depth 1.0; the first stage (expansion 1) is made of depthwise-separable blocks.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
SE_RATIO = 0.25  # squeeze width as a fraction of the block's input channels


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, never more than 10% below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm2d then SiLU (or nothing): the keys of a plain BatchNorm2d."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels)
        self.act: nn.Module = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(super().forward(x))
        return out


class SqueezeExcite(nn.Module):
    """Channel gate: pool (N, C, H, W) -> (N, C, 1, 1), squeeze to ``reduced``, SiLU,
    expand back to C, sigmoid, and scale the input by it."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))  # (N, r, 1, 1)
        gate: Tensor = self.conv_expand(squeezed).sigmoid()  # (N, C, 1, 1)
        return x * gate


def _depthwise(channels: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(
        channels, channels, kernel, stride, padding=kernel // 2, groups=channels, bias=False
    )


def _pointwise(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=False)


class DepthwiseSeparable(nn.Module):
    """Depthwise conv, BN-SiLU, squeeze-excite, pointwise conv, BN; a residual when the
    shape is kept. (N, c_in, H, W) -> (N, c_out, H/stride, W/stride)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _depthwise(c_in, kernel, stride)
        self.bn1 = BatchNormAct(c_in)
        self.se = SqueezeExcite(c_in, round(c_in * SE_RATIO))
        self.conv_pw = _pointwise(c_in, c_out)
        self.bn2 = BatchNormAct(c_out, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.se(self.bn1(self.conv_dw(x)))
        out = self.bn2(self.conv_pw(out))
        return out + x if self.residual else out


class InvertedResidual(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion, BN-SiLU, depthwise conv, BN-SiLU,
    squeeze-excite, 1x1 projection, BN; a residual when the shape is kept.
    (N, c_in, H, W) -> (N, c_in * expansion, ...) -> (N, c_out, H/stride, W/stride)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = make_divisible(c_in * expansion)
        self.conv_pw = _pointwise(c_in, mid)
        self.bn1 = BatchNormAct(mid)
        self.conv_dw = _depthwise(mid, kernel, stride)
        self.bn2 = BatchNormAct(mid)
        self.se = SqueezeExcite(mid, round(c_in * SE_RATIO))
        self.conv_pwl = _pointwise(mid, c_out)
        self.bn3 = BatchNormAct(c_out, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(self.se(out)))
        return out + x if self.residual else out


class EfficientNet(nn.Module):
    """EfficientNet scaled by ``width`` (channels) and ``depth`` (blocks per stage, rounded
    up), global average pool -> (N, features). No ``classifier``: the Classifier's head
    replaces it."""

    def __init__(self, in_channels: int, width: float, depth: float) -> None:
        super().__init__()
        c_in = make_divisible(STEM_CHANNELS * width)
        self.conv_stem = nn.Conv2d(in_channels, c_in, 3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNormAct(c_in)
        stages: list[nn.Module] = []
        for repeats, kernel, stride, expansion, channels in STAGES:
            c_out = make_divisible(channels * width)
            blocks: list[nn.Module] = []
            for i in range(math.ceil(repeats * depth)):
                s = stride if i == 0 else 1
                if expansion == 1:
                    blocks.append(DepthwiseSeparable(c_in, c_out, kernel, s))
                else:
                    blocks.append(InvertedResidual(c_in, c_out, kernel, s, expansion))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.features = make_divisible(HEAD_CHANNELS * width)
        self.conv_head = _pointwise(c_in, self.features)
        self.bn2 = BatchNormAct(self.features)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # normal, std sqrt(2 / fan_out per group)
                kh, kw = module.kernel_size
                fan_out = kh * kw * module.out_channels // module.groups
                nn.init.normal_(module.weight, std=math.sqrt(2.0 / fan_out))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv_stem(x))  # (N, C, H, W) -> (N, 32, H/2, W/2)
        x = self.blocks(x)  # -> (N, 320 * width, H/32, W/32)
        x = self.bn2(self.conv_head(x))  # -> (N, features, H/32, W/32)
        return x.mean((2, 3))  # -> (N, features)


def _efficientnet(in_channels: int, width: float, depth: float) -> tuple[nn.Module, int]:
    backbone = EfficientNet(in_channels, width, depth)
    return backbone, backbone.features


@register_model("efficientnet_b0")
def efficientnet_b0(in_channels: int) -> tuple[nn.Module, int]:
    """EfficientNet-B0 (width 1.0, depth 1.0): 4.0 M parameters, 1280 features."""
    return _efficientnet(in_channels, 1.0, 1.0)


@register_model("efficientnet_b2")
def efficientnet_b2(in_channels: int) -> tuple[nn.Module, int]:
    """EfficientNet-B2 (width 1.1, depth 1.2): 7.7 M parameters, 1408 features."""
    return _efficientnet(in_channels, 1.1, 1.2)
