"""JPEG 2000 codestreams: what the main header says, and a decode at reduced resolution.

JPEG 2000 is a wavelet code: OpenJPEG can stop the inverse transform ``r`` levels early and
return the image at ``ceil(N / 2**r)`` per side (the resolution reduction factor), at a
fraction of the cost of the full decode. Of the maintained Python bindings only Pillow (which
bundles OpenJPEG) exposes it for a codestream in memory (``Image.reduce``); imagecodecs,
pylibjpeg-openjpeg and dicomsdl decode full frames only.

Two facts of Pillow 13 the decode works around:

- 12-bit samples come back as mode ``I;16`` shifted left by ``16 - precision``: shifted back.
- At ``r >= 2`` Pillow rounds the output size half up where OpenJPEG takes the ceiling, and
  fails when ``N mod 2**r`` lies in ``(0, 2**(r-1))``: :func:`safe_reductions` leaves out
  those factors (``r = 1`` is always safe).

The level count comes from the main header: COD (FF52) holds it for every component, a COC
(FF53) of component 0 overrides it (ISO/IEC 15444-1 A.6). OpenJPEG refuses a reduction above
it; tile-part headers may lower it further, and then the decode raises and the caller falls
back to a full decode.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SOC, SIZ, COD, COC, SOT = 0xFF4F, 0xFF51, 0xFF52, 0xFF53, 0xFF90


class CodestreamError(ValueError):
    """Bytes that are not a JPEG 2000 codestream this module can read or reduce."""


@dataclass(frozen=True)
class CodestreamInfo:
    rows: int
    cols: int
    components: int
    precision: int  # bits per sample of component 0
    signed: bool
    levels: int  # wavelet decomposition levels of component 0 (main header)


def read_info(codestream: bytes) -> CodestreamInfo:
    """The image size, sample format and level count from the main header (SOC .. SOT)."""
    if codestream[:2] != SOC.to_bytes(2, "big"):
        raise CodestreamError("no JPEG 2000 codestream: it does not start with SOC (FF4F)")
    fields: dict[str, int] = {}
    coc_levels: int | None = None
    pos = 2
    while pos + 4 <= len(codestream):
        marker, length = struct.unpack_from(">HH", codestream, pos)
        if marker == SOT:
            break
        body = codestream[pos + 4 : pos + 2 + length]
        if len(body) != length - 2:
            raise CodestreamError(f"marker {marker:04X} at byte {pos} runs past the end")
        if marker == SIZ and len(body) >= 39:
            xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", body, 2)
            fields.update(
                cols=xsiz - xosiz,
                rows=ysiz - yosiz,
                components=struct.unpack_from(">H", body, 34)[0],
                ssiz=body[36],
            )
        elif marker == COD and len(body) >= 6:
            fields["levels"] = body[5]
        elif marker == COC and "components" in fields:
            wide = fields["components"] >= 257  # Ccoc is 2 bytes from 257 components on
            component = struct.unpack_from(">H", body)[0] if wide else body[0]
            if component == 0:
                coc_levels = body[3 if wide else 2]
        pos += 2 + length
    missing = [name for name in ("rows", "levels") if name not in fields]
    if missing:
        raise CodestreamError(f"the main header has no {' or '.join(missing)} marker (SIZ, COD)")
    ssiz = fields["ssiz"]
    return CodestreamInfo(
        rows=fields["rows"],
        cols=fields["cols"],
        components=fields["components"],
        precision=(ssiz & 0x7F) + 1,
        signed=bool(ssiz & 0x80),
        levels=fields["levels"] if coc_levels is None else coc_levels,
    )


def reduced_size(size: int, reduction: int) -> int:
    """The side of the image at ``reduction`` (OpenJPEG: the ceiling, for a zero offset)."""
    return -(-size // (1 << reduction))


def safe_reductions(info: CodestreamInfo) -> list[int]:
    """Reductions Pillow decodes for this image: at most the level count, and none whose
    size Pillow would round differently from OpenJPEG (see the module docstring)."""
    safe = [0]
    for r in range(1, info.levels + 1):
        half = 1 << (r - 1)
        if all(not 0 < side % (1 << r) < half for side in (info.rows, info.cols)):
            safe.append(r)
    return safe


def choose_reduction(
    info: CodestreamInfo,
    crop_rows: int,
    crop_cols: int,
    out_rows: int,
    out_cols: int,
    limit: int,
) -> int:
    """The largest safe reduction, at most ``limit``, after which a ``crop_rows x crop_cols``
    region of the full image still fills an ``out_rows x out_cols`` output without upsampling.

    The output keeps the aspect ratio and is filled by its relatively longer side (see
    :func:`mammo.geometry.resize_and_pad`): no upsampling means the reduced crop reaches the
    output's rows or its columns.
    """
    best = 0
    for r in safe_reductions(info):
        if r > limit:
            break
        scale = 1 << r
        if math.floor(crop_rows / scale) >= out_rows or math.floor(crop_cols / scale) >= out_cols:
            best = r
    return best


def decode_reduced(codestream: bytes, reduction: int) -> npt.NDArray[np.uint16]:
    """The (ceil(rows / 2**r), ceil(cols / 2**r)) stored values of a one-component unsigned
    codestream of up to 16 bits, decoded ``reduction`` levels early."""
    from PIL import Image

    info = read_info(codestream)
    if info.components != 1 or info.signed or info.precision > 16:
        raise CodestreamError(
            f"only one-component unsigned samples of up to 16 bits are reduced; this one has "
            f"{info.components} component(s), {'signed' if info.signed else 'unsigned'} "
            f"{info.precision}-bit"
        )
    if reduction not in safe_reductions(info):
        raise CodestreamError(
            f"reduction {reduction} is not safe for a {info.rows} x {info.cols} codestream of "
            f"{info.levels} levels (safe: {safe_reductions(info)})"
        )
    with Image.open(io.BytesIO(codestream)) as image:
        # Jpeg2KImageFile: a property that shadows Image.reduce(); decode r levels early
        image.reduce = reduction  # type: ignore[method-assign,assignment]
        image.load()
        pixels = np.asarray(image)
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 1:  # up to 8 bits: mode L
        values = pixels.astype(np.uint16)
    else:
        values = (pixels.astype(np.uint32) >> (16 - info.precision)).astype(np.uint16)
    expected = (reduced_size(info.rows, reduction), reduced_size(info.cols, reduction))
    if values.shape != expected:
        raise CodestreamError(f"decoded {values.shape}, expected {expected}")
    return values
