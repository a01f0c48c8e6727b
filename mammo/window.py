"""Grey-level transforms of one image: Modality LUT, VOI LUT, inversion, quantization.

Reference float formulas follow DICOM PS3.3 C.11.2.1.2 for Window Center (0028,1050),
Window Width (0028,1051) and VOI LUT Function (0028,1056); the Modality LUT Sequence
(0028,3000) and VOI LUT Sequence (0028,3010) tables map as in pydicom (mammo.lut).
:func:`build_lut` folds the whole chain into one table indexed by stored value, so an
image is normalized in a single pass (``cv2.LUT``), and the table equals the float
formulas entry for entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from mammo.contract import ModalityPath, QuarantineReason, VoiPath
from mammo.dicom import DicomHeader
from mammo.errors import MammoInputError

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

    ``window`` is the window applied, None otherwise; ``fallback`` is True when the file's
    VOI was unusable (malformed, invalid, or mapping the image to a near-constant) and
    min-max scaling was used instead (``voi_path`` MIN_MAX_FALLBACK). ``inverted``: the
    output was inverted (MONOCHROME1 or Presentation LUT Shape INVERSE).
    """

    table: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
    window: Window | None
    fallback: bool
    modality_path: ModalityPath = ModalityPath.RESCALE
    voi_path: VoiPath = VoiPath.MIN_MAX
    inverted: bool = False


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
    """Modality LUT: clamp to [0, 2**BitsStored - 1], then the Modality LUT Sequence
    (0028,3000) when the file has one, else slope * value + intercept.

    Values above BitsStored (0028,0101) occur in real files; they are clamped to the
    largest representable value. RescaleSlope (0028,1053), RescaleIntercept (0028,1052).
    """
    top = (1 << header.bits_stored) - 1
    clamped = np.minimum(np.asarray(stored, dtype=np.float64), top)
    if header.modality_lut is not None:
        return header.modality_lut.apply(clamped)
    return clamped * header.rescale_slope + header.rescale_intercept


def inverts(header: DicomHeader) -> bool:
    """MONOCHROME1 (0028,0004) or Presentation LUT Shape (2050,0020) INVERSE: one inversion.

    PS3.3 (DX Image module) pairs INVERSE with MONOCHROME1, so the two do not cancel;
    other shapes (IDENTITY, LIN OD) change nothing here.
    """
    return header.photometric == "MONOCHROME1" or header.presentation_lut_shape == "INVERSE"


def quantize(y: npt.ArrayLike, inverted: bool, out_max: int) -> FloatArray:
    """[0, 1] -> 0..out_max, inverting when told (y -> 1 - y), rounding half up."""
    values = np.asarray(y, dtype=np.float64)
    if inverted:
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

    clamp to BitsStored -> Modality LUT (the Modality LUT Sequence, else slope and
    intercept) -> VOI: the ``window_index``-th window pair with the file's function; else
    the ``window_index``-th VOI LUT Sequence item, scaled by its 2**bits - 1; else min-max
    over the modality values of ``value_range`` (the image's smallest and largest stored
    value) -> inversion (MONOCHROME1 or Presentation LUT Shape INVERSE) -> quantization to
    0..out_max (255 -> uint8 table, 65535 -> uint16 table). ``window_index`` None means
    min-max always.

    Falls back to min-max (``fallback=True``) when the file's window or VOI LUT Sequence is
    malformed or invalid, or its output over ``value_range`` spans less than ``min_spread``
    of full scale (e.g. an 8-bit image carrying a window meant for 12 bits). ``value_range``
    must not be constant after clamping (a blank image has no min-max scaling); a Modality
    LUT that maps it to one value raises MammoInputError (BLANK_IMAGE).
    """
    if out_max not in (255, 65535):
        raise ValueError(f"out_max must be 255 or 65535, got {out_max}")
    top = (1 << header.bits_stored) - 1
    low, high = (min(v, top) for v in value_range)
    if low >= high:
        raise ValueError(f"value range {value_range} is constant after clamping to {top}")
    x = modality(np.arange(top + 1), header)  # (top + 1,) modality values
    x_low, x_high = float(x[low : high + 1].min()), float(x[low : high + 1].max())
    if x_low == x_high:
        detail = f"the Modality LUT maps stored values {low}..{high} to {x_low:g}"
        raise MammoInputError(QuarantineReason.BLANK_IMAGE, detail)
    window, path, voi = _voi(header, x, window_index, (low, high), min_spread)
    y = apply_min_max(x, x_low, x_high) if voi is None else voi
    inverted = inverts(header)
    levels = quantize(y, inverted, out_max)  # (top + 1,) float64
    # (top + 1,) -> (LUT_SIZE,): values above BitsStored take the level of `top`
    levels = np.concatenate([levels, np.full(LUT_SIZE - top - 1, levels[top])])
    table = levels.astype(np.uint8) if out_max == 255 else levels.astype(np.uint16)
    return VoiLut(
        table=table,
        window=window,
        fallback=path == VoiPath.MIN_MAX_FALLBACK,
        modality_path=(
            ModalityPath.RESCALE
            if header.modality_lut is None
            else ModalityPath.MODALITY_LUT_SEQUENCE
        ),
        voi_path=path,
        inverted=inverted,
    )


def _voi(
    header: DicomHeader,
    x: FloatArray,
    window_index: int | None,
    value_range: tuple[int, int],
    min_spread: float,
) -> tuple[Window | None, VoiPath, FloatArray | None]:
    """The VOI stage of :func:`build_lut`: (window, path, [0, 1] output or None: min-max)."""
    if window_index is None:
        return None, VoiPath.MIN_MAX, None
    if header.voi_malformed:
        return None, VoiPath.MIN_MAX_FALLBACK, None
    try:
        window = select_window(header, window_index)
        if window is not None:
            y, path = apply_voi(x, window.center, window.width, window.function), VoiPath.WINDOW
        elif window_index < len(header.voi_luts):
            lut = header.voi_luts[window_index]
            y, path = lut.apply(x) / lut.out_max, VoiPath.VOI_LUT_SEQUENCE
        else:
            return None, VoiPath.MIN_MAX, None
    except InvalidWindowError:
        return None, VoiPath.MIN_MAX_FALLBACK, None
    low, high = value_range
    seen = y[low : high + 1]  # the output over the image's stored values
    if float(seen.max() - seen.min()) < min_spread:
        return None, VoiPath.MIN_MAX_FALLBACK, None
    return window, path, y
