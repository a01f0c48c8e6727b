"""Binary PGM (Netpbm P5), the format of mini-MIAS: read and write, no third-party codec.

Layout: ``P5``, whitespace, width, whitespace, height, whitespace, maxval (1..65535),
exactly one whitespace byte, then height x width samples, one byte each when maxval < 256,
else two bytes big-endian. ``#`` starts a comment up to the end of the line in the header.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mammo.contract import QuarantineReason
from mammo.errors import MammoInputError

_WHITESPACE = b" \t\r\n\x0b\x0c"


def _header(data: bytes) -> tuple[list[int], int]:
    """(width, height, maxval) and the offset of the first sample."""
    if data[:2] != b"P5":
        raise MammoInputError(QuarantineReason.UNREADABLE, "not a binary PGM (no P5 magic)")
    values: list[int] = []
    pos = 2
    while len(values) < 3:
        while pos < len(data) and data[pos] in _WHITESPACE:
            pos += 1
        if pos < len(data) and data[pos : pos + 1] == b"#":
            while pos < len(data) and data[pos : pos + 1] != b"\n":
                pos += 1
            continue
        start = pos
        while pos < len(data) and data[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise MammoInputError(QuarantineReason.UNREADABLE, "PGM header is malformed")
        values.append(int(data[start:pos]))
    if pos >= len(data) or data[pos] not in _WHITESPACE:
        raise MammoInputError(QuarantineReason.TRUNCATED, "PGM header ends without samples")
    return values, pos + 1


def read_pgm(data: bytes) -> npt.NDArray[np.uint8] | npt.NDArray[np.uint16]:
    """The (height, width) samples of a P5 file: uint8 when maxval < 256, else uint16."""
    if not data:
        raise MammoInputError(QuarantineReason.EMPTY_FILE, "the file is empty")
    (width, height, maxval), offset = _header(data)
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise MammoInputError(
            QuarantineReason.UNREADABLE, f"PGM size {width}x{height} maxval {maxval}"
        )
    depth = 1 if maxval < 256 else 2
    need = width * height * depth
    if len(data) - offset < need:
        raise MammoInputError(
            QuarantineReason.TRUNCATED,
            f"PGM {width}x{height} needs {need} sample bytes, has {len(data) - offset}",
        )
    raster = data[offset : offset + need]
    if depth == 1:
        return np.frombuffer(raster, np.uint8).reshape(height, width).copy()
    return np.frombuffer(raster, ">u2").reshape(height, width).astype(np.uint16)


def pgm_bit_depth(maxval: int) -> int:
    return max(1, int(maxval).bit_length())


def encode_pgm(pixels: npt.NDArray[np.uint8]) -> bytes:
    """A P5 file of (H, W) uint8 samples, maxval 255."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 array, got {pixels.shape} {pixels.dtype}")
    rows, cols = pixels.shape
    return f"P5\n{cols} {rows}\n255\n".encode() + np.ascontiguousarray(pixels).tobytes()
