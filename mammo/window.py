"""Grey-level transforms of one image: Modality LUT, VOI LUT, inversion, quantization.

Reference float formulas follow DICOM PS3.3 C.11.2.1.2 for Window Center (0028,1050),
Window Width (0028,1051) and VOI LUT Function (0028,1056). :func:`build_lut` folds the
whole chain into one table indexed by stored value, so an image is normalized in a
single pass (``cv2.LUT``), and the table equals the float formulas entry for entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from mammo.dicom import DicomHeader

FloatArray = npt.NDArray[np.float64]
LUT_SIZE = 1 << 16  # indexed by any uint16 stored value


class VoiFunction(StrEnum):
    """Defined terms of VOI LUT Function (0028,1056); absent means LINEAR."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


class InvalidWindowError(ValueError):
    """A window the formulas are not defined for (width out of range, unknown function)."""


@dataclass(frozen=True)
class Window:
    """One Window Center/Width pair and the function applied with it."""

    center: float
    width: float
    function: VoiFunction


@dataclass(frozen=True)
class VoiLut:
    """A table from stored value (0..65535) to output value (0..out_max).

    ``window`` is the window applied, None for min-max scaling; ``fallback`` is True when
    the file's window was unusable (invalid, or mapping the image to a near-constant) and
    min-max scaling was used instead.
    """

    table: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
    window: Window | None
    fallback: bool


def apply_voi(
    x: npt.ArrayLike,
    center: float,
    width: float,
    function: str,
    y_min: float = 0.0,
    y_max: float = 1.0,
) -> FloatArray:
    """Apply a VOI LUT Function (0028,1056) to modality values ``x``, as in PS3.3.

    - LINEAR (C.11.2.1.2.1), width >= 1:
      x <= c - 0.5 - (w-1)/2 -> y_min; x > c - 0.5 + (w-1)/2 -> y_max;
      else ((x - (c - 0.5)) / (w-1) + 0.5) * (y_max - y_min) + y_min.
    - LINEAR_EXACT (C.11.2.1.3.2), width > 0:
      x <= c - w/2 -> y_min; x > c + w/2 -> y_max;
      else ((x - c) / w + 0.5) * (y_max - y_min) + y_min.
    - SIGMOID (C.11.2.1.3.1), width > 0: (y_max - y_min) / (1 + exp(-4 (x - c) / w)) + y_min.
    """
    values = np.asarray(x, dtype=np.float64)
    span = y_max - y_min
    if not np.isfinite(center):
        raise InvalidWindowError(f"Window Center must be finite, got {center}")
    if function == VoiFunction.LINEAR:
        if not width >= 1:
            raise InvalidWindowError(f"LINEAR needs Window Width >= 1, got {width}")
        low = center - 0.5 - (width - 1) / 2
        high = center - 0.5 + (width - 1) / 2
        if width == 1:  # low == high: a step at c - 0.5, the ramp is empty
            return np.where(values <= low, y_min, y_max)
        ramp = ((values - (center - 0.5)) / (width - 1) + 0.5) * span + y_min
        return np.where(values <= low, y_min, np.where(values > high, y_max, ramp))
    if function == VoiFunction.LINEAR_EXACT:
        if not width > 0:
            raise InvalidWindowError(f"LINEAR_EXACT needs Window Width > 0, got {width}")
        ramp = ((values - center) / width + 0.5) * span + y_min
        low, high = center - width / 2, center + width / 2
        return np.where(values <= low, y_min, np.where(values > high, y_max, ramp))
    if function == VoiFunction.SIGMOID:
        if not width > 0:
            raise InvalidWindowError(f"SIGMOID needs Window Width > 0, got {width}")
        with np.errstate(over="ignore"):  # exp overflow -> inf -> y_min, as intended
            return span / (1.0 + np.exp(-4.0 * (values - center) / width)) + y_min
    raise InvalidWindowError(f"unknown VOI LUT Function {function[:32]!r}")


def apply_min_max(x: npt.ArrayLike, x_min: float, x_max: float) -> FloatArray:
    """Scale modality values linearly so that [x_min, x_max] becomes [0, 1]."""
    return (np.asarray(x, dtype=np.float64) - x_min) / (x_max - x_min)


def modality(stored: npt.ArrayLike, header: DicomHeader) -> FloatArray:
    """Modality LUT: clamp to [0, 2**BitsStored - 1], then slope * value + intercept.

    Values above BitsStored (0028,0101) occur in real files; they are clamped to the
    largest representable value. RescaleSlope (0028,1053), RescaleIntercept (0028,1052).
    """
    top = (1 << header.bits_stored) - 1
    clamped = np.minimum(np.asarray(stored, dtype=np.float64), top)
    return clamped * header.rescale_slope + header.rescale_intercept


def quantize(y: npt.ArrayLike, photometric: str, out_max: int) -> FloatArray:
    """[0, 1] -> 0..out_max, inverting MONOCHROME1 (y -> 1 - y), rounding half up."""
    values = np.asarray(y, dtype=np.float64)
    if photometric == "MONOCHROME1":
        values = 1.0 - values
    return np.clip(np.floor(values * out_max + 0.5), 0, out_max)


def select_window(header: DicomHeader, index: int | None) -> Window | None:
    """The ``index``-th Window Center/Width pair with the file's function, if any.

    Absent VOI LUT Function means LINEAR. Returns None when ``index`` is None or the
    file has fewer pairs; raises InvalidWindowError for an unknown function.
    """
    pairs = min(len(header.window_centers), len(header.window_widths))
    if index is None or index >= pairs:
        return None
    name = header.voi_lut_function or VoiFunction.LINEAR
    if name not in VoiFunction.__members__:
        raise InvalidWindowError(f"unknown VOI LUT Function {name[:32]!r}")
    return Window(header.window_centers[index], header.window_widths[index], VoiFunction(name))


def build_lut(
    header: DicomHeader,
    *,
    window_index: int | None,
    out_max: int,
    value_range: tuple[int, int],
    min_spread: float,
) -> VoiLut:
    """One table for the whole grey-level chain, in this order:

    clamp to BitsStored -> Modality LUT (slope, intercept) -> VOI: the ``window_index``-th
    window pair with the file's function, or min-max over ``value_range`` (the image's
    smallest and largest stored value) when there is none -> MONOCHROME1 inversion ->
    quantization to 0..out_max (255 -> uint8 table, 65535 -> uint16 table).

    Falls back to min-max (``fallback=True``) when the window is invalid or its output
    over ``value_range`` spans less than ``min_spread`` of full scale (e.g. an 8-bit
    image carrying a window meant for 12 bits). ``value_range`` must not be constant
    after clamping (a blank image has no min-max scaling).
    """
    if out_max not in (255, 65535):
        raise ValueError(f"out_max must be 255 or 65535, got {out_max}")
    top = (1 << header.bits_stored) - 1
    low, high = (min(v, top) for v in value_range)
    if low >= high:
        raise ValueError(f"value range {value_range} is constant after clamping to {top}")
    x = modality(np.arange(top + 1), header)  # (top + 1,) modality values
    window: Window | None = None
    fallback = False
    try:
        window = select_window(header, window_index)
        if window is not None:
            y = apply_voi(x, window.center, window.width, window.function)
            if abs(y[high] - y[low]) < min_spread:
                window, fallback = None, True
    except InvalidWindowError:
        window, fallback = None, True
    if window is None:
        x_low, x_high = sorted((x[low], x[high]))
        y = apply_min_max(x, x_low, x_high)
    levels = quantize(y, header.photometric, out_max)  # (top + 1,) float64
    # (top + 1,) -> (LUT_SIZE,): values above BitsStored take the level of `top`
    levels = np.concatenate([levels, np.full(LUT_SIZE - top - 1, levels[top])])
    table = levels.astype(np.uint8) if out_max == 255 else levels.astype(np.uint16)
    return VoiLut(table=table, window=window, fallback=fallback)
