"""Decode a JPEG 2000 mammogram only as finely as its output needs.

A 3328 x 2560 12-bit mammogram resized to 1024 x 512 throws away most of what a full
decode computes. JPEG 2000 stores the image as wavelet levels, and OpenJPEG can stop
``r`` levels early (:mod:`mammo.j2k`), returning the image at 1 / 2**r per side for a
fraction of the cost. :func:`decode_for_output` picks the largest ``r`` after which the
breast's crop still fills the output without upsampling, in two decodes:

1. a thumbnail at the largest safe reduction (a few milliseconds), windowed with the same
   LUT the image will get, gives the breast box exactly as :func:`mammo.preprocess.normalize`
   would find it, on a coarser grid;
2. the image at ``r`` = :func:`mammo.j2k.choose_reduction` for that box and the output size.

Anything this path cannot do (another transfer syntax, a JP2-wrapped or malformed
codestream, a size other than the header's, a reduction OpenJPEG refuses) raises, and the
caller decodes the full frame instead (``decode = "exact"`` in the configuration always
does), as it does when the output needs the full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from mammo.dicom import DicomHeader
from mammo.geometry import box_from_preview
from mammo.j2k import (
    CodestreamError,
    choose_reduction,
    decode_reduced,
    read_info,
    safe_reductions,
)
from mammo.window import build_lut

if TYPE_CHECKING:  # mammo.preprocess imports this module
    from mammo.decoders import StoredPixels
    from mammo.preprocess import PreprocessConfig

FAST_DECODER = "pillow-openjpeg"
JPEG2000_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})


@dataclass(frozen=True)
class ReducedPixels:
    stored: StoredPixels  # (ceil(Rows / 2**r), ceil(Columns / 2**r)) stored values
    reduction: int  # r: each output pixel covers 2**r x 2**r source pixels


def decode_for_output(
    ds: Dataset, header: DicomHeader, cfg: PreprocessConfig
) -> ReducedPixels | None:
    """The stored values of a one-frame JPEG 2000 image at the coarsest resolution that
    still fills ``cfg``'s output; None when that is the full resolution (decode it as
    usual). Raises (CodestreamError, ValueError, OSError from Pillow) when the image must
    be decoded in full instead."""
    if header.transfer_syntax not in JPEG2000_SYNTAXES or header.number_of_frames != 1:
        raise CodestreamError(f"transfer syntax {header.transfer_syntax} is not JPEG 2000")
    codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
    info = read_info(codestream)
    if (info.rows, info.cols) != (header.rows, header.cols):
        raise CodestreamError(
            f"codestream is {info.rows} x {info.cols}, header says {header.rows} x {header.cols}"
        )
    limit = choose_reduction(info, info.rows, info.cols, cfg.out_rows, cfg.out_cols, info.levels)
    if limit == 0:  # the full frame is no larger than the output: nothing to save
        return None
    coarse = max(safe_reductions(info))
    thumbnail = decode_reduced(codestream, coarse)
    lut = build_lut(
        header,
        window_index=cfg.window_index,
        out_max=cfg.out_max,
        value_range=(int(thumbnail.min()), int(thumbnail.max())),
        min_spread=cfg.window_min_spread,
    )
    step = 1 << coarse
    (y0, x0, y1, x1), _ = box_from_preview(
        lut.table[thumbnail],
        step,
        (info.rows, info.cols),
        cfg.crop_threshold,
        cfg.crop_min_fraction,
        cfg.crop_margin,
    )
    # the breast's edge is known to one thumbnail pixel: count its box one step smaller on
    # each side, so that the crop found at the finer level still fills the output
    rows, cols = max(1, y1 - y0 - 2 * step), max(1, x1 - x0 - 2 * step)
    reduction = choose_reduction(info, rows, cols, cfg.out_rows, cfg.out_cols, limit)
    if reduction == 0:
        return None
    if reduction == coarse:
        return ReducedPixels(thumbnail, coarse)
    return ReducedPixels(decode_reduced(codestream, reduction), reduction)
