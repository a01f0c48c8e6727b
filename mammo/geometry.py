"""Where the breast is in a normalized image: crop box, chest-wall side, output size.

Decisions (mask, connected components, left/right mass) are made on a strided preview
of about 256 pixels on the short side, so they cost well under a millisecond on a
full-size mammogram; only the final crop and resize touch every pixel.
"""

from __future__ import annotations

from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open, in source pixels
PREVIEW_SHORT_SIDE = 256


def preview_step(shape: tuple[int, ...]) -> int:
    """Stride that brings the short side of ``shape`` down to about PREVIEW_SHORT_SIDE."""
    return max(1, min(shape[0], shape[1]) // PREVIEW_SHORT_SIDE)


def find_breast_box(
    img: Image, threshold: float, min_fraction: float, margin: float
) -> tuple[Box, bool]:
    """The box of the largest bright connected region, and whether it fell back.

    On the preview, pixels above ``threshold`` (a fraction of the dtype's full scale)
    form a mask; the largest 8-connected component (cv2.connectedComponentsWithStats)
    is the breast. Its box is scaled back to source pixels, widened by one preview step
    (sampling uncertainty) and by ``margin`` (a fraction of the image height/width) on
    each side, and clipped to the image. Falls back to the full frame (True) when the
    mask is empty, the component covers less than ``min_fraction`` of the preview, or
    its box spans the whole preview (a bright background, not a breast).
    """
    step = preview_step(img.shape)
    preview = img[::step, ::step]  # (H, W) -> (ceil(H/step), ceil(W/step)), a view
    return box_from_preview(preview, step, img.shape, threshold, min_fraction, margin)


def box_from_preview(
    preview: Image,
    step: int,
    shape: tuple[int, ...],
    threshold: float,
    min_fraction: float,
    margin: float,
) -> tuple[Box, bool]:
    """:func:`find_breast_box` on ``preview`` = image[::step, ::step] of an image of ``shape``.

    Lets a caller window only the preview, then only the crop, of a stored image.
    """
    rows, cols = shape[0], shape[1]
    full_frame: Box = (0, 0, rows, cols)
    level = threshold * np.iinfo(preview.dtype).max
    mask = (preview > level).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:  # label 0 is the background
        return full_frame, True
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    x, y, w, h, area = (int(v) for v in stats[best])
    if area < min_fraction * mask.size or (w, h) == (mask.shape[1], mask.shape[0]):
        return full_frame, True
    pad_y = step + round(margin * rows)
    pad_x = step + round(margin * cols)
    box = (
        max(0, y * step - pad_y),
        max(0, x * step - pad_x),
        min(rows, (y + h - 1) * step + 1 + pad_y),
        min(cols, (x + w - 1) * step + 1 + pad_x),
    )
    return box, False


def faces_right(img: Image) -> bool:
    """True when most of the pixel mass lies in the right half (chest wall on the right).

    Decided from the pixels only, never from Image Laterality (0020,0062), which is not
    reliable in the RSNA data. A tie counts as facing left.
    """
    step = preview_step(img.shape)
    preview = img[::step, ::step]
    half = preview.shape[1] // 2
    column_mass = preview.sum(axis=0, dtype=np.float64)  # (W',) column sums
    left = float(column_mass[:half].sum())
    right = float(column_mass[preview.shape[1] - half :].sum())
    return right > left


def resize_and_pad(
    img: Image, rows: int, cols: int, chest_wall: Literal["left", "right"] = "left"
) -> Image:
    """Fit ``img`` into exactly (rows, cols), keeping its aspect ratio.

    Resized with cv2.INTER_AREA so that the longer relative side fills the output, then
    padded with zeros at the bottom and on the side away from the chest wall (right
    when ``chest_wall`` is "left").

    A reduction by k >= 2 runs in two INTER_AREA steps, twice as fast as one: k x k
    block means (cv2's integer-factor path), then the remaining factor (< 2). The
    up to k - 1 rows and columns that do not fill a block are dropped at the bottom and
    away from the chest wall (background margin) and the rest fills the same output size.
    """
    height, width = img.shape
    scale = min(rows / height, cols / width)
    new_rows = min(rows, max(1, round(height * scale)))
    new_cols = min(cols, max(1, round(width * scale)))
    k = min(height // new_rows, width // new_cols)
    if k >= 2:
        kept_rows, kept_cols = height - height % k, width - width % k
        x0 = 0 if chest_wall == "left" else width - kept_cols
        # (k*h, k*w) -> (h, w): the mean of each k x k block
        img = _area(img[:kept_rows, x0 : x0 + kept_cols], kept_rows // k, kept_cols // k)
    if img.shape != (new_rows, new_cols):
        img = _area(img, new_rows, new_cols)
    out = np.zeros((rows, cols), dtype=img.dtype)
    if chest_wall == "left":
        out[:new_rows, :new_cols] = img
    else:
        out[:new_rows, cols - new_cols :] = img
    return out


def _area(img: Image, rows: int, cols: int) -> Image:
    return cast(Image, cv2.resize(img, (cols, rows), interpolation=cv2.INTER_AREA))
