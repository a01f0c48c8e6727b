"""Model architectures behind a name registry (the timm ``register_model`` pattern).

Every architecture is a *backbone* that turns an image batch ``(N, C, H, W)`` into pooled
features ``(N, D)``; :class:`Classifier` adds the optional metadata fusion branch and the
head, so all registered names share one forward signature::

    forward(image (N, C, H, W), metadata (N, F) | None = None) -> logits (N, num_outputs)

Backbones end in a global average pool, so any image size (e.g. 512x256) works.
Besides ``small_cnn`` and the ResNets, mammo/efficientnet.py (``efficientnet_b0``,
``efficientnet_b2``) and mammo/convnext.py (``convnext_tiny``, ``convnext_small``) register
backbones with timm's state-dict layout; importing this module registers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ModelError(ValueError):
    """A model cannot be built or called as asked (bad spec, unknown name, bad input)."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build: channels in, logits out, and the width of the metadata vector.

    ``num_outputs`` is 1 for a binary target (one logit) and K for a K-class target.
    ``metadata_features`` is 0 for an image-only model; with F > 0, a small MLP encodes the
    (N, F) metadata vector and its output is concatenated with the pooled image features
    before the head (late fusion).
    """

    in_channels: int = 1
    num_outputs: int = 1
    metadata_features: int = 0
    dropout: float = 0.0
    metadata_hidden: int = 32

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_outputs < 1 or self.metadata_hidden < 1:
            raise ModelError(f"in_channels, num_outputs, metadata_hidden must be >= 1: {self}")
        if self.metadata_features < 0:
            raise ModelError(f"metadata_features must be >= 0, got {self.metadata_features}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**data)


BackboneFactory = Callable[[int], tuple[nn.Module, int]]
"""Takes in_channels; returns a backbone (N, C, H, W) -> (N, D) and its feature width D."""

_REGISTRY: dict[str, BackboneFactory] = {}


def register_model(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register a backbone factory under ``name`` (names are unique)."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ModelError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, spec: ModelSpec) -> Classifier:
    """Build the registered backbone ``name`` with the fusion branch and head of ``spec``."""
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    backbone, feature_dim = _REGISTRY[name](spec.in_channels)
    return Classifier(backbone, feature_dim, spec)


class Classifier(nn.Module):
    """Backbone + optional metadata MLP + dropout + linear head, producing logits."""

    def __init__(self, backbone: nn.Module, feature_dim: int, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.metadata_mlp: nn.Module | None = None
        head_in = feature_dim
        if spec.metadata_features > 0:
            self.metadata_mlp = nn.Sequential(
                nn.Linear(spec.metadata_features, spec.metadata_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(spec.metadata_hidden, spec.metadata_hidden),
                nn.ReLU(inplace=True),
            )
            head_in += spec.metadata_hidden
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(head_in, spec.num_outputs))

    def forward(self, image: Tensor, metadata: Tensor | None = None) -> Tensor:
        if image.ndim != 4 or image.shape[1] != self.spec.in_channels:
            raise ModelError(
                f"image must be (N, {self.spec.in_channels}, H, W), got {tuple(image.shape)}"
            )
        features: Tensor = self.backbone(image)  # (N, C, H, W) -> (N, D)
        if self.metadata_mlp is not None:
            expected = (image.shape[0], self.spec.metadata_features)
            if metadata is None or tuple(metadata.shape) != expected:
                got = None if metadata is None else tuple(metadata.shape)
                raise ModelError(f"this model fuses metadata of shape {expected}, got {got}")
            encoded: Tensor = self.metadata_mlp(metadata.to(features.dtype))  # (N, F) -> (N, M)
            features = torch.cat([features, encoded], dim=1)  # (N, D + M)
        elif metadata is not None:
            raise ModelError("this model is image-only (metadata_features=0) but got metadata")
        logits: Tensor = self.head(features)  # (N, D[+M]) -> (N, num_outputs)
        return logits


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@register_model("small_cnn")
def small_cnn(in_channels: int) -> tuple[nn.Module, int]:
    """Five conv-BN-ReLU blocks, each halving H and W, then a global average pool.

    About 0.6 M parameters: trains on a CPU at 256x128 .. 512x256.
    """
    widths = (16, 32, 64, 128, 128)
    blocks: list[nn.Module] = []
    c_in = in_channels
    for width in widths:
        blocks.append(_conv_bn_relu(c_in, width, stride=2))
        blocks.append(_conv_bn_relu(width, width, stride=1))
        c_in = width
    # (N, C, H, W) -> (N, 128, H/32, W/32) -> (N, 128, 1, 1) -> (N, 128)
    blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    return nn.Sequential(*blocks), c_in


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a residual (1x1 projection when shapes change).

    Attribute names are torchvision's and timm's (conv1, bn1, conv2, bn2, downsample), so
    their exported weights load by key (mammo/pretrained.py).
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual: Tensor = self.downsample(x)
        return torch.relu(out + residual)


class ResNet(nn.Module):
    """ResNet with BasicBlocks: stem (7x7/2 conv, 3x3/2 max pool), four stages of widths
    64-128-256-512 (stages 2-4 stride 2), global average pool -> (N, 512). No ``fc``: the
    Classifier's head replaces it."""

    def __init__(self, in_channels: int, layers: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c_in, stages = 64, []
        for stage, (n_blocks, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            blocks = []
            for i in range(n_blocks):
                blocks.append(BasicBlock(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.features = c_in
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))  # (N, C, H, W) -> (N, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # -> (N, 512, H/32, W/32)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # -> (N, 512)


def _resnet(in_channels: int, layers: tuple[int, int, int, int]) -> tuple[nn.Module, int]:
    backbone = ResNet(in_channels, layers)
    return backbone, backbone.features


@register_model("resnet18")
def resnet18(in_channels: int) -> tuple[nn.Module, int]:
    """ResNet-18 layout [2, 2, 2, 2], 1-channel stem by default."""
    return _resnet(in_channels, (2, 2, 2, 2))


@register_model("resnet34")
def resnet34(in_channels: int) -> tuple[nn.Module, int]:
    """ResNet-34 layout [3, 4, 6, 3], 1-channel stem by default."""
    return _resnet(in_channels, (3, 4, 6, 3))


# The modules below register themselves through ``register_model``, defined above.
from mammo import convnext, efficientnet  # noqa: E402, F401
