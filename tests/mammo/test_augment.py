"""Batch augmentation: vertical flips only, small affine warps, jitter, clamped, seeded."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from mammo.augment import AugmentConfig, AugmentError, affine_matrices, augment_batch

IDENTITY = AugmentConfig(
    vflip_prob=0.0,
    rotation_degrees=0.0,
    scale_range=(1.0, 1.0),
    translate_fraction=0.0,
    brightness=0.0,
    contrast=0.0,
)


def _breast_on_the_left(n: int = 4, height: int = 64, width: int = 32) -> torch.Tensor:
    """(N, 1, H, W): a bright blob against the left edge, in the upper half."""
    images = torch.zeros(n, 1, height, width)
    images[:, :, 8:28, 0:12] = 0.8
    return images


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identity_config_returns_the_batch_unchanged() -> None:
    images = torch.rand(3, 1, 64, 32)
    out = augment_batch(images, IDENTITY, _gen(0))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    assert out.data_ptr() != images.data_ptr()  # a new tensor, the input is untouched


def test_disabled_config_returns_a_copy() -> None:
    images = torch.rand(2, 1, 16, 8)
    out = augment_batch(images, AugmentConfig(enabled=False), _gen(0))
    assert torch.equal(out, images)


def test_flip_is_vertical_never_horizontal() -> None:
    images = _breast_on_the_left(n=64)
    cfg = replace(IDENTITY, vflip_prob=0.5)
    out = augment_batch(images, cfg, _gen(1))
    left, right = out[..., :16].sum(dim=(1, 2, 3)), out[..., 16:].sum(dim=(1, 2, 3))
    assert (right == 0).all() and (left > 0).all()  # still against the left edge
    top = out[:, :, :32].sum(dim=(1, 2, 3))
    flipped = top == 0  # the blob moved to the lower half
    assert 16 < int(flipped.sum()) < 48  # about half of 64
    torch.testing.assert_close(out[flipped], images[flipped].flip(dims=(2,)))


def test_full_augmentation_stays_in_range_and_keeps_shape() -> None:
    images = torch.rand(8, 1, 64, 32)
    cfg = AugmentConfig(brightness=0.5, contrast=0.5)
    out = augment_batch(images, cfg, _gen(2))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.allclose(out, images)


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    images = torch.rand(4, 1, 64, 32)
    cfg = AugmentConfig()
    a = augment_batch(images, cfg, _gen(3))
    b = augment_batch(images, cfg, _gen(3))
    c = augment_batch(images, cfg, _gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_brightness_shifts_the_mean_by_at_most_the_configured_amount() -> None:
    images = torch.full((32, 1, 16, 8), 0.5)
    cfg = replace(IDENTITY, brightness=0.2)
    shift = augment_batch(images, cfg, _gen(5)).mean(dim=(1, 2, 3)) - 0.5
    assert shift.abs().max() <= 0.2 + 1e-6
    assert shift.abs().max() > 0.1  # the range is actually used


def test_rotation_matrix_by_hand() -> None:
    # 90 degrees on a 2:1 (H:W) image, no scale, no shift: [[0, -2, 0], [0.5, 0, 0]]
    theta = affine_matrices(
        torch.tensor([math.pi / 2]), torch.tensor([1.0]), torch.zeros(1), torch.zeros(1), 64, 32
    )
    expected = torch.tensor([[[0.0, -2.0, 0.0], [0.5, 0.0, 0.0]]])
    torch.testing.assert_close(theta, expected, atol=1e-6, rtol=0)


def test_zoom_in_samples_a_smaller_region() -> None:
    theta = affine_matrices(
        torch.zeros(1), torch.tensor([2.0]), torch.zeros(1), torch.zeros(1), 8, 8
    )
    torch.testing.assert_close(theta[0, :, :2], torch.eye(2) / 2.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"scale_range": (1.1, 0.9)}, id="scale-reversed"),
        pytest.param({"scale_range": (0.0, 1.0)}, id="scale-zero"),
        pytest.param({"vflip_prob": 1.5}, id="probability-above-one"),
        pytest.param({"rotation_degrees": -1.0}, id="negative-rotation"),
    ],
)
def test_bad_config_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(AugmentError):
        AugmentConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "images",
    [
        pytest.param(torch.rand(1, 64, 32), id="three-dims"),
        pytest.param(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), id="integer-pixels"),
    ],
)
def test_bad_batches_raise(images: torch.Tensor) -> None:
    with pytest.raises(AugmentError):
        augment_batch(images, AugmentConfig(), _gen(0))


def test_config_round_trips_through_a_dict() -> None:
    cfg = AugmentConfig(rotation_degrees=3.0, scale_range=(0.95, 1.05))
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
