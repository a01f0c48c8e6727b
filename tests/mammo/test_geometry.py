"""Crop box, chest-wall side and output size (mammo.geometry)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from mammo.geometry import faces_right, find_breast_box, resize_and_pad


def _breast(
    rows: int = 1200, cols: int = 900, side: str = "left", dtype: type = np.uint8
) -> npt.NDArray[np.uint8]:
    """A bright half-ellipse against one edge, rows 200..1000, 0..600 from that edge."""
    full = np.iinfo(dtype).max
    img = np.full((rows, cols), full // 100, dtype=dtype)  # dark, not black, background
    yy, xx = np.mgrid[0:rows, 0:cols]
    inside = ((yy - 600) / 400.0) ** 2 + (xx / 600.0) ** 2 < 1.0
    img[inside] = full // 2
    return img if side == "left" else img[:, ::-1].copy()


def test_breast_on_a_dark_background_is_cropped_to_it() -> None:
    (y0, x0, y1, x1), fallback = find_breast_box(_breast(), 0.04, 0.01, margin=0.0)
    assert not fallback
    step = 900 // 256  # the preview stride: the box may be one step wider on each side
    assert 200 - 2 * step <= y0 <= 201 and 999 <= y1 <= 1000 + 2 * step
    assert x0 == 0 and 600 <= x1 <= 600 + 2 * step


def test_margin_widens_the_box_within_the_frame() -> None:
    tight, _ = find_breast_box(_breast(), 0.04, 0.01, margin=0.0)
    wide, _ = find_breast_box(_breast(), 0.04, 0.01, margin=0.05)
    assert wide == (tight[0] - 60, 0, tight[2] + 60, tight[3] + 45)  # 5% of 1200 and 900


def test_largest_component_wins_over_a_bright_label() -> None:
    img = _breast(side="right")
    img[20:60, 20:120] = 255  # a burnt-in marker in the far corner
    (y0, x0, y1, x1), fallback = find_breast_box(img, 0.04, 0.01, margin=0.0)
    assert not fallback and y0 > 150 and y1 < 1010 and x0 >= 290 and x1 == 900


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.zeros((600, 400), np.uint8),
        lambda: np.full((600, 400), 200, np.uint8),
        lambda: np.pad(np.full((4, 4), 200, np.uint8), ((300, 296), (200, 196))),
    ],
    ids=["empty-mask", "bright-background-whole-frame", "tiny-speck"],
)
def test_degenerate_mask_falls_back_to_the_full_frame(
    make: Callable[[], npt.NDArray[np.uint8]],
) -> None:
    box, fallback = find_breast_box(make(), 0.04, 0.01, margin=0.02)
    assert fallback and box == (0, 0, 600, 400)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_faces_right_reads_the_pixels(dtype: type) -> None:
    assert not faces_right(_breast(side="left", dtype=dtype))
    assert faces_right(_breast(side="right", dtype=dtype))


def test_faces_right_on_a_crop_and_ties() -> None:
    img = _breast(side="right")
    assert faces_right(img[200:1000, 300:900])
    assert not faces_right(np.zeros((50, 40), np.uint8))  # a tie counts as left


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize(
    ("shape", "content"),
    [((2000, 1000), (1024, 512)), ((3000, 2000), (768, 512)), ((500, 100), (1024, 205))],
    ids=["same-aspect", "wider-than-output", "taller-than-output"],
)
def test_resize_and_pad_keeps_aspect_and_pads_away_from_the_chest_wall(
    shape: tuple[int, int], content: tuple[int, int], dtype: type
) -> None:
    img = np.full(shape, 7, dtype=dtype)
    out = resize_and_pad(img, 1024, 512)
    assert out.shape == (1024, 512) and out.dtype == dtype
    rows, cols = content
    assert (out[:rows, :cols] == 7).all()
    assert (out[rows:, :] == 0).all() and (out[:, cols:] == 0).all()


def test_resize_and_pad_on_the_right_pads_on_the_left() -> None:
    out = resize_and_pad(np.full((500, 100), 9, np.uint8), 1024, 512, chest_wall="right")
    assert (out[:, 512 - 205 :] == 9).all() and (out[:, : 512 - 205] == 0).all()


def test_resize_averages_areas() -> None:
    img = np.zeros((200, 100), np.uint16)
    img[:, 1::2] = 1000  # a fine stripe pattern: area averaging gives its mean
    out = resize_and_pad(img, 100, 50)
    assert (out == 500).all()


@pytest.mark.parametrize(
    ("shape", "max_mean_diff"),
    [((3072, 1536), 0.0), ((3077, 1827), 0.5)],
    ids=["integer-factor-is-exact", "two-step-close-to-one-step"],
)
def test_two_step_reduction_matches_a_single_inter_area(
    shape: tuple[int, int], max_mean_diff: float
) -> None:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(shape[0] // 256, shape[1] // 256)).astype(np.uint8)
    img = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    out = resize_and_pad(img, 1024, 512)
    rows = round(shape[0] * min(1024 / shape[0], 512 / shape[1]))
    single = cv2.resize(img, (512, rows), interpolation=cv2.INTER_AREA)
    diff = np.abs(out[:rows].astype(np.int16) - single.astype(np.int16))
    assert diff.mean() <= max_mean_diff
    assert (out[rows:] == 0).all()
