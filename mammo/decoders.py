"""Pixel decoders: a small registry of alternatives for the same job.

Each decoder turns the bytes of one DICOM file (already checked by
:func:`mammo.dicom.read_header`) into its (Rows, Columns) array of stored values,
before any Modality or VOI LUT. :func:`decode_pixels` tries them in the configured
order and checks every output against the header.

- ``dicomsdl``: the fast path, ``dicomsdl.open_memory(data).pixelData(storedvalue=True)``.
  Without ``storedvalue=True`` dicomsdl returns float32 with Rescale Slope/Intercept
  already applied.
- ``pydicom``: ``Dataset.pixel_array`` with the pylibjpeg plugins (openjpeg, libjpeg).
- ``imagecodecs``: JPEG Lossless (process 14, SV1 or any other predictor) through
  libjpeg-turbo 3 (``imagecodecs.jpeg8_decode``): the same stored values as dicomsdl, about
  1.6x faster (docs/benchmarks.md). It refuses every other transfer syntax, so the next
  decoder in the order takes those. ``decode = "fast"`` puts it first
  (:func:`fast_order`); the default order leaves it out, so that an exact config keeps its
  hash.

Never hand a decoder a file that read_header has not accepted: dicomsdl returns an empty
array for empty input and crashes the process on truncated native Pixel Data. Even then,
dicomsdl 0.109.4 aborted or segfaulted on about 1 in 200 randomly corrupted JPEG 2000 and
JPEG Lossless streams here (pydicom raised cleanly on all of them): a caller that runs
it in a worker must treat a dead worker as a failed decode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import dicomsdl
import imagecodecs
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGLossless, JPEGLosslessSV1

from mammo.contract import QuarantineReason
from mammo.dicom import DicomHeader
from mammo.errors import MammoInputError

StoredPixels = npt.NDArray[np.uint16]
Decoder = Callable[[bytes, Dataset, DicomHeader], npt.NDArray[Any]]

_DECODERS: dict[str, Decoder] = {}


class UnsupportedSyntax(ValueError):
    """A decoder asked for a transfer syntax it does not decode: the next one in the order
    takes the file, and the refusal is not counted as a failure."""


def register_decoder(name: str) -> Callable[[Decoder], Decoder]:
    """Decorator: register ``decoder(data, ds, header) -> (Rows, Columns) array``."""

    def register(decoder: Decoder) -> Decoder:
        if name in _DECODERS:
            raise ValueError(f"decoder {name!r} is already registered")
        _DECODERS[name] = decoder
        return decoder

    return register


def get_decoder(name: str) -> Decoder:
    """The decoder registered as ``name``; KeyError naming the known ones otherwise."""
    try:
        return _DECODERS[name]
    except KeyError:
        raise KeyError(f"unknown decoder {name!r}; known: {list_decoders()}") from None


def list_decoders() -> tuple[str, ...]:
    return tuple(_DECODERS)


def decode_pixels(
    data: bytes, ds: Dataset, header: DicomHeader, order: tuple[str, ...]
) -> tuple[StoredPixels, str]:
    """Decode with the first decoder in ``order`` that succeeds.

    A decoder succeeds when it returns an unsigned integer array of shape
    (Rows, Columns) whose item size matches BitsAllocated (0028,0100). 8-bit stored
    values are widened to uint16 so that every caller sees one dtype.
    Returns the (H, W) uint16 stored values and the decoder's name; raises
    MammoInputError(DECODE_FAILED) naming each decoder's failure when none succeeds.
    """
    failures = []
    for name in order:
        decoder = get_decoder(name)
        try:
            pixels = decoder(data, ds, header)
        except UnsupportedSyntax:
            continue
        except Exception as exc:  # noqa: BLE001 - codecs raise many types on corrupt data
            failures.append(f"{name}: {type(exc).__name__}")
            continue
        problem = _output_problem(pixels, header)
        if problem is not None:
            failures.append(f"{name}: {problem}")
            continue
        # (H, W) uint8 or uint16 -> (H, W) uint16, C-contiguous
        return np.ascontiguousarray(pixels, dtype=np.uint16), name
    raise MammoInputError(
        QuarantineReason.DECODE_FAILED,
        "; ".join(failures) or f"no decoder of {order} takes {header.transfer_syntax}",
    )


def _output_problem(pixels: npt.NDArray[Any], header: DicomHeader) -> str | None:
    expected_shape = (header.rows, header.cols)
    if pixels.shape != expected_shape:
        return f"shape {pixels.shape}, expected {expected_shape}"
    if pixels.dtype.kind != "u" or pixels.dtype.itemsize * 8 != header.bits_allocated:
        return f"dtype {pixels.dtype}, expected {header.bits_allocated}-bit unsigned"
    return None


@functools.cache
def _silence_dicomsdl() -> None:
    # dicomsdl prints "error: ..." lines to stderr for every failure it then raises.
    dicomsdl.set_loglevel(dicomsdl.LogLevel.DISABLE)


@register_decoder("dicomsdl")
def decode_with_dicomsdl(data: bytes, ds: Dataset, header: DicomHeader) -> npt.NDArray[Any]:
    """dicomsdl stored values; native data is masked to BitsStored like pydicom does.

    Bits above BitsStored (0028,0101) in native (uncompressed) Pixel Data are not part of
    the value (PS3.5 8.1.1); pydicom masks them, dicomsdl does not. Compressed streams are
    returned as decoded by both (values above BitsStored are clamped later, in the LUT).
    """
    _silence_dicomsdl()
    _check_jpeg2000_size(ds, header)
    pixels: npt.NDArray[Any] = dicomsdl.open_memory(data).pixelData(storedvalue=True)
    native = not ds.file_meta.TransferSyntaxUID.is_compressed
    if native and header.bits_stored < header.bits_allocated:
        np.bitwise_and(pixels, (1 << header.bits_stored) - 1, out=pixels)
    return pixels


_J2K_SIZ = b"\xff\x4f\xff\x51"  # SOC then SIZ (ISO 15444-1 A.5.1)


class CodestreamMismatch(ValueError):
    """A JPEG 2000 codestream declares another image size than its DICOM header."""


def _check_jpeg2000_size(ds: Dataset, header: DicomHeader) -> None:
    """Refuse, before dicomsdl sees it, a JPEG 2000 codestream whose SIZ image size is not the
    header's Rows x Columns: dicomsdl 0.109.4 crashes the process on such files (a larger
    codestream overruns its buffer), while pydicom raises cleanly on them.

    SIZ after its marker: Lsiz, Rsiz (2 bytes each), then Xsiz, Ysiz, XOsiz, YOsiz (4 bytes
    each, big-endian); the image is (Xsiz - XOsiz) x (Ysiz - YOsiz).
    """
    if not str(header.transfer_syntax).startswith("1.2.840.10008.1.2.4.9"):
        return
    pixel_data = bytes(ds.PixelData[:4096])
    start = pixel_data.find(_J2K_SIZ)
    if start < 0 or len(pixel_data) < start + 24:
        raise CodestreamMismatch("no JPEG 2000 SIZ marker at the start of the pixel data")
    fields = np.frombuffer(pixel_data, dtype=">u4", count=4, offset=start + 8)
    cols, rows = int(fields[0] - fields[2]), int(fields[1] - fields[3])
    if (rows, cols) != (header.rows, header.cols):
        raise CodestreamMismatch(
            f"codestream is {rows} x {cols}, header says {header.rows} x {header.cols}"
        )


@register_decoder("pydicom")
def decode_with_pydicom(data: bytes, ds: Dataset, header: DicomHeader) -> npt.NDArray[Any]:
    """pydicom's ``pixel_array`` on the whitelisted Dataset returned by read_header."""
    return ds.pixel_array


FAST_LOSSLESS_DECODER = "imagecodecs"
JPEG_LOSSLESS_SYNTAXES = frozenset({JPEGLossless, JPEGLosslessSV1})


def fast_order(order: tuple[str, ...]) -> tuple[str, ...]:
    """``order`` with the fastest bit-exact JPEG Lossless decoder first (``decode = "fast"``)."""
    return tuple(dict.fromkeys((FAST_LOSSLESS_DECODER, *order)))


@register_decoder(FAST_LOSSLESS_DECODER)
def decode_with_imagecodecs(data: bytes, ds: Dataset, header: DicomHeader) -> npt.NDArray[Any]:
    """One JPEG Lossless frame through libjpeg-turbo; UnsupportedSyntax for anything else."""
    if header.transfer_syntax not in JPEG_LOSSLESS_SYNTAXES or header.number_of_frames != 1:
        raise UnsupportedSyntax(f"{header.transfer_syntax} is not one-frame JPEG Lossless")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    pixels: npt.NDArray[Any] = imagecodecs.jpeg8_decode(frame)
    return pixels
