"""Batch augmentation in torch, so it runs where the batch is (CPU or GPU).

For training rows only (the caller decides). Order of operations, per image:
1. vertical flip (top <-> bottom) with probability ``vflip_prob``. There is deliberately no
   horizontal flip: preprocessing turned every breast to face the same side;
2. one affine warp: rotation of up to ``rotation_degrees``, isotropic scale in
   ``scale_range``, translation of up to ``translate_fraction`` of the height/width;
   bilinear sampling, zeros (background) outside the image;
3. contrast then brightness: ``(x - mean) * c + mean + b`` with the image's own mean,
   c in [1 - contrast, 1 + contrast], b in [-brightness, +brightness];
4. clamp to [0, 1].

Random parameters are drawn with the given ``torch.Generator`` on its own device (a CPU
generator works for a GPU batch), so one seed gives the same batch on every device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class AugmentError(ValueError):
    """Bad augmentation config or input batch."""


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    vflip_prob: float = 0.5
    rotation_degrees: float = 5.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    translate_fraction: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0.0 < low <= high:
            raise AugmentError(f"scale_range must satisfy 0 < low <= high: {self.scale_range}")
        if not 0.0 <= self.vflip_prob <= 1.0:
            raise AugmentError(f"vflip_prob must be in [0, 1]: {self.vflip_prob}")
        for name in ("rotation_degrees", "translate_fraction", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise AugmentError(f"{name} must be >= 0: {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scale_range"] = list(self.scale_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        low, high = data.get("scale_range", (0.9, 1.1))
        return cls(**{**data, "scale_range": (float(low), float(high))})


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """(n,) float32 uniform in [low, high), drawn on the generator's device."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return low + (high - low) * u


def affine_matrices(
    angle_rad: Tensor, scale: Tensor, shift_x: Tensor, shift_y: Tensor, height: int, width: int
) -> Tensor:
    """(N,) parameters -> (N, 2, 3) ``F.affine_grid`` matrices (output -> input coordinates).

    Rotation is in pixel space: normalized coordinates scale x by 2/W and y by 2/H, so the
    off-diagonal terms carry the aspect ratio H/W. Zooming in by ``scale`` samples a region
    1/scale as large. Shifts are in normalized units (1.0 = half the width or height).
    """
    cos, sin = torch.cos(angle_rad) / scale, torch.sin(angle_rad) / scale
    aspect = height / width
    row_x = torch.stack([cos, -sin * aspect, shift_x], dim=1)  # (N, 3)
    row_y = torch.stack([sin / aspect, cos, shift_y], dim=1)  # (N, 3)
    return torch.stack([row_x, row_y], dim=1)  # (N, 2, 3)


def augment_batch(images: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Augment a (N, C, H, W) float batch in [0, 1]; returns a new tensor of the same shape."""
    if images.ndim != 4 or not images.is_floating_point():
        raise AugmentError(
            f"images must be a float (N, C, H, W) batch, got {images.dtype} {tuple(images.shape)}"
        )
    if not cfg.enabled or images.shape[0] == 0:
        return images.clone()
    n, _, height, width = images.shape
    device, dtype = images.device, images.dtype

    flip = _uniform(n, 0.0, 1.0, generator) < cfg.vflip_prob
    flip = flip.to(device).view(n, 1, 1, 1)
    out = torch.where(flip, images.flip(dims=(2,)), images)  # flip rows: top <-> bottom

    max_angle = math.radians(cfg.rotation_degrees)
    angle = _uniform(n, -max_angle, max_angle, generator)
    scale = _uniform(n, cfg.scale_range[0], cfg.scale_range[1], generator)
    t = 2.0 * cfg.translate_fraction
    shift_x, shift_y = _uniform(n, -t, t, generator), _uniform(n, -t, t, generator)
    theta = affine_matrices(angle, scale, shift_x, shift_y, height, width)
    grid = F.affine_grid(theta.to(device, dtype), list(out.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    c = _uniform(n, 1.0 - cfg.contrast, 1.0 + cfg.contrast, generator)
    b = _uniform(n, -cfg.brightness, cfg.brightness, generator)
    c, b = c.to(device, dtype).view(n, 1, 1, 1), b.to(device, dtype).view(n, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)  # (N, C, H, W) -> (N, 1, 1, 1)
    out = (out - mean) * c + mean + b
    return out.clamp(0.0, 1.0)
