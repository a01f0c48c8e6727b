"""Read the header of one DICOM file and check it can be decoded, before any decoding.

:func:`read_header` parses the bytes with pydicom and runs the structural checks in a
fixed order; the first failing check raises :class:`~mammo.errors.MammoInputError` with
its quarantine reason. Only the attributes named in ``mammo.contract.DICOM_WHITELIST``
(and Pixel Data) are ever decoded from their raw bytes: patient, study and institution
attributes are skipped over by the parser and never leave it. Error details are built
from whitelisted values and byte offsets only, because they are written to
quarantine.parquet.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from mammo.contract import DICOM_LUT_ATTRIBUTES, DICOM_WHITELIST, QuarantineReason
from mammo.errors import MammoInputError
from mammo.lut import InvalidLutError, Lut, read_modality_lut, read_voi_luts

# Transfer syntaxes both registered decoders (dicomsdl, pydicom + pylibjpeg) can decode.
SUPPORTED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        ImplicitVRLittleEndian,  # 1.2.840.10008.1.2
        ExplicitVRLittleEndian,  # 1.2.840.10008.1.2.1
        JPEGLossless,  # 1.2.840.10008.1.2.4.57
        JPEGLosslessSV1,  # 1.2.840.10008.1.2.4.70
        JPEGLSLossless,  # 1.2.840.10008.1.2.4.80
        JPEGLSNearLossless,  # 1.2.840.10008.1.2.4.81
        JPEG2000Lossless,  # 1.2.840.10008.1.2.4.90
        JPEG2000,  # 1.2.840.10008.1.2.4.91
        RLELossless,  # 1.2.840.10008.1.2.5
    }
)
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")

_PREAMBLE_LEN = 128
_PIXEL_DATA_TAG_BYTES = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
_ITEM_TAG_BYTES = b"\xfe\xff\x00\xe0"  # (FFFE,E000)
_DELIMITER_LEN = 8  # (FFFE,E0DD) + 4 zero bytes, not part of pydicom's value
_UNDEFINED_LENGTH = 0xFFFFFFFF
_VALUE_ERRORS = (ValueError, TypeError, OverflowError)
_REQUIRED = (  # Image Pixel module, type 1
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
)


@dataclass(frozen=True)
class DicomHeader:
    """The whitelisted header attributes that decoding and windowing need.

    Tags: TransferSyntaxUID (0002,0010), PhotometricInterpretation (0028,0004),
    Rows (0028,0010), Columns (0028,0011), SamplesPerPixel (0028,0002),
    NumberOfFrames (0028,0008, absent = 1), BitsAllocated (0028,0100),
    BitsStored (0028,0101), HighBit (0028,0102), PixelRepresentation (0028,0103),
    RescaleSlope (0028,1053, absent = 1), RescaleIntercept (0028,1052, absent = 0),
    WindowCenter (0028,1050), WindowWidth (0028,1051), VOILUTFunction (0028,1056),
    Modality LUT Sequence (0028,3000), VOI LUT Sequence (0028,3010), Presentation LUT
    Shape (2050,0020). ``voi_malformed``: Window Center/Width not numbers or not pairs, or
    a VOI LUT Sequence that cannot be used; both are then left out (min-max fallback).
    """

    transfer_syntax: str
    photometric: str
    rows: int
    cols: int
    samples_per_pixel: int
    number_of_frames: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    rescale_slope: float
    rescale_intercept: float
    window_centers: tuple[float, ...]
    window_widths: tuple[float, ...]
    voi_lut_function: str | None
    modality_lut: Lut | None = None
    voi_luts: tuple[Lut, ...] = ()
    presentation_lut_shape: str | None = None
    voi_malformed: bool = False


def read_header(data: bytes, max_pixels: int) -> tuple[DicomHeader, Dataset]:
    """Parse ``data`` and check, in this order, that its pixels can be decoded.

    1. empty bytes -> EMPTY_FILE;
    2. pydicom cannot parse: no "DICM" at offset 128 -> NOT_DICOM, else UNREADABLE;
    3. no Pixel Data (7FE0,0010): its tag is in the bytes (the file was cut inside the
       element; pydicom then drops it with a mere warning) -> TRUNCATED; the parse ended
       inside a data element -> UNREADABLE; otherwise -> NO_PIXEL_DATA;
    4. a required Image Pixel attribute missing or not a number, Rows or Columns 0,
       RescaleSlope 0 or not finite, or a Modality LUT Sequence that cannot be used
       -> UNREADABLE (a malformed window or VOI LUT Sequence is not refused: it sets
       ``voi_malformed``);
    5. Pixel Data incomplete: encapsulated items that do not add up, or native data
       shorter than Rows * Columns * frames * samples * BitsAllocated / 8 -> TRUNCATED;
    6. TransferSyntaxUID (0002,0010) not in SUPPORTED_TRANSFER_SYNTAXES -> UNSUPPORTED_SYNTAX;
    7. Rows * Columns * frames > ``max_pixels`` -> TOO_LARGE (nothing is decoded yet);
    8. NumberOfFrames > 1 -> MULTI_FRAME;
    9. SamplesPerPixel != 1 or not MONOCHROME1/2 -> UNSUPPORTED_PHOTOMETRIC;
    10. BitsAllocated not 8 or 16, BitsStored outside 1..BitsAllocated, HighBit not
        BitsStored - 1 (the only value PS3.5 8.1.1 allows today), or signed pixels
        (PixelRepresentation 1) -> INVALID_BITS.

    Returns the header and a new Dataset holding only the whitelisted attributes, Pixel
    Data and a file meta with the transfer syntax: enough for pydicom's ``pixel_array``.
    """
    if not data:
        raise MammoInputError(QuarantineReason.EMPTY_FILE, "0 bytes")
    ds = _parse(data)
    if "PixelData" not in ds:
        raise _missing_pixel_data(ds, data)
    header = _header(ds)
    _check_pixel_data_complete(ds, header)
    _check_decodable(header, max_pixels)
    return header, _whitelisted_copy(ds, header)


def _parse(data: bytes) -> Dataset:
    has_preamble = data[_PREAMBLE_LEN : _PREAMBLE_LEN + 4] == b"DICM"
    try:
        with warnings.catch_warnings():
            # pydicom warns (and goes on) on truncation; step 3 classifies it instead.
            warnings.simplefilter("ignore")
            return dcmread(io.BytesIO(data), force=False)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt bytes
        if not has_preamble:
            raise MammoInputError(
                QuarantineReason.NOT_DICOM, f"no DICM prefix at offset 128 ({len(data)} bytes)"
            ) from None
        raise MammoInputError(
            QuarantineReason.UNREADABLE, f"header parse failed: {type(exc).__name__}"
        ) from None


def _missing_pixel_data(ds: Dataset, data: bytes) -> MammoInputError:
    offset = data.rfind(_PIXEL_DATA_TAG_BYTES)
    if offset >= 0:
        return MammoInputError(
            QuarantineReason.TRUNCATED,
            f"file ends inside Pixel Data (7FE0,0010), which starts at byte {offset} "
            f"of {len(data)}",
        )
    end = _parsed_end(ds)
    if end is not None and end != len(data):
        return MammoInputError(
            QuarantineReason.UNREADABLE,
            f"file ends inside a data element: the last element ends at byte {end}, "
            f"the file at {len(data)}",
        )
    return MammoInputError(QuarantineReason.NO_PIXEL_DATA, "no Pixel Data (7FE0,0010)")


def _parsed_end(ds: Dataset) -> int | None:
    """Byte offset where the last top-level element ends, None when it cannot be told.

    pydicom silently keeps a value shorter than its declared length and silently
    stops at a partial element header, so a cut header shows as an end != file size.
    """
    if len(ds) == 0:
        # preamble + "DICM" + the (0002,0000) UL element (12 bytes) + the rest of the group
        group_length = ds.file_meta.get("FileMetaInformationGroupLength")
        if isinstance(group_length, int):
            return _PREAMBLE_LEN + 4 + 12 + group_length
        return _PREAMBLE_LEN + 4 if len(ds.file_meta) == 0 else None
    last = ds.get_item(max(ds.keys()), keep_deferred=True)  # never convert a bad VR here
    if not isinstance(last, RawDataElement) or last.value_tell is None:
        return None  # a parsed sequence: its end is not tracked
    if last.length == _UNDEFINED_LENGTH:
        return last.value_tell + len(last.value or b"") + _DELIMITER_LEN
    return int(last.value_tell + last.length)


def _header(ds: Dataset) -> DicomHeader:
    for keyword in _REQUIRED:
        if _value(ds, keyword, None) is None:
            raise MammoInputError(
                QuarantineReason.UNREADABLE, f"required attribute {keyword} is missing"
            )
    window = _window_pairs(ds)
    voi_luts = read_voi_luts(ds)
    try:
        modality_lut = read_modality_lut(ds)
    except InvalidLutError as exc:
        raise MammoInputError(QuarantineReason.UNREADABLE, str(exc)) from None
    try:
        bits_stored = _int(ds, "BitsStored")
        header = DicomHeader(
            transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")).strip(),
            photometric=str(ds.PhotometricInterpretation).strip(),
            rows=_int(ds, "Rows"),
            cols=_int(ds, "Columns"),
            samples_per_pixel=_int(ds, "SamplesPerPixel"),
            number_of_frames=max(1, _int(ds, "NumberOfFrames", default=1)),
            bits_allocated=_int(ds, "BitsAllocated"),
            bits_stored=bits_stored,
            high_bit=_int(ds, "HighBit", default=bits_stored - 1),
            pixel_representation=_int(ds, "PixelRepresentation"),
            rescale_slope=float(_value(ds, "RescaleSlope", 1.0)),
            rescale_intercept=float(_value(ds, "RescaleIntercept", 0.0)),
            window_centers=window[0] if window else (),
            window_widths=window[1] if window else (),
            voi_lut_function=_optional_str(_value(ds, "VOILUTFunction", None)),
            modality_lut=modality_lut,
            voi_luts=voi_luts or (),
            presentation_lut_shape=_optional_str(_value(ds, "PresentationLUTShape", None)),
            voi_malformed=window is None or voi_luts is None,
        )
    except _VALUE_ERRORS as exc:
        raise MammoInputError(
            QuarantineReason.UNREADABLE, f"whitelisted attribute not numeric: {type(exc).__name__}"
        ) from None
    if header.rows < 1 or header.cols < 1:
        raise MammoInputError(
            QuarantineReason.UNREADABLE, f"Rows x Columns is {header.rows} x {header.cols}"
        )
    slope, intercept = header.rescale_slope, header.rescale_intercept
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise MammoInputError(
            QuarantineReason.UNREADABLE, f"RescaleSlope {slope}, RescaleIntercept {intercept}"
        )
    return header


def _value(ds: Dataset, keyword: str, default: Any) -> Any:
    if keyword not in DICOM_WHITELIST and keyword not in DICOM_LUT_ATTRIBUTES:
        raise LookupError(f"{keyword} is not whitelisted")  # a programming error, not input
    value = ds.get(keyword)  # a keyword gives the value, None when absent
    if value is None or value == "":
        return default
    return value


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    return int(_value(ds, keyword, default))


def _floats(value: Any) -> tuple[float, ...]:
    if value is None:
        return ()
    if isinstance(value, MultiValue | list | tuple):
        return tuple(float(v) for v in value)
    return (float(value),)


def _window_pairs(ds: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Window Center (0028,1050) and Width (0028,1051); None when they are not numbers or
    their counts differ (e.g. "abc", or 2 centers and 1 width)."""
    try:
        centers = _floats(_value(ds, "WindowCenter", None))
        widths = _floats(_value(ds, "WindowWidth", None))
    except _VALUE_ERRORS:
        return None
    return (centers, widths) if len(centers) == len(widths) else None


def _optional_str(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _check_pixel_data_complete(ds: Dataset, header: DicomHeader) -> None:
    raw = ds.get_item("PixelData")
    value = raw.value if raw is not None else None
    if value is None:
        raise MammoInputError(QuarantineReason.TRUNCATED, "Pixel Data (7FE0,0010) is empty")
    if _undefined_length(raw):
        _check_items(bytes(value))
        return
    expected = (
        header.rows
        * header.cols
        * header.number_of_frames
        * header.samples_per_pixel
        * header.bits_allocated
        + 7
    ) // 8
    if len(value) < expected:
        raise MammoInputError(
            QuarantineReason.TRUNCATED,
            f"native Pixel Data has {len(value)} bytes, {expected} expected",
        )


def _undefined_length(element: DataElement | RawDataElement | None) -> bool:
    if isinstance(element, RawDataElement):
        return element.length == _UNDEFINED_LENGTH
    return element is not None and element.is_undefined_length


def _check_items(value: bytes) -> None:
    """Encapsulated Pixel Data (PS3.5 A.4): items (FFFE,E000) + length that add up.

    The first item is the Basic Offset Table; at least one fragment must follow.
    """
    offset, items = 0, 0
    while offset < len(value):
        header_end = offset + 8
        if header_end > len(value) or value[offset : offset + 4] != _ITEM_TAG_BYTES:
            raise MammoInputError(
                QuarantineReason.TRUNCATED, f"encapsulated Pixel Data: no item at byte {offset}"
            )
        (length,) = struct.unpack("<I", value[offset + 4 : header_end])
        offset = header_end + length
        items += 1
    if offset != len(value):
        raise MammoInputError(
            QuarantineReason.TRUNCATED,
            f"encapsulated Pixel Data: item ends at byte {offset} of {len(value)}",
        )
    if items < 2:
        raise MammoInputError(QuarantineReason.TRUNCATED, "encapsulated Pixel Data has no fragment")


def _check_decodable(header: DicomHeader, max_pixels: int) -> None:
    if header.transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise MammoInputError(
            QuarantineReason.UNSUPPORTED_SYNTAX,
            f"transfer syntax {header.transfer_syntax[:64]!r}",
        )
    pixels = header.rows * header.cols * header.number_of_frames
    if pixels > max_pixels:
        raise MammoInputError(
            QuarantineReason.TOO_LARGE,
            f"{header.rows} x {header.cols} x {header.number_of_frames} frame(s) = "
            f"{pixels} pixels > {max_pixels}",
        )
    if header.number_of_frames > 1:
        raise MammoInputError(
            QuarantineReason.MULTI_FRAME, f"NumberOfFrames {header.number_of_frames}"
        )
    if header.samples_per_pixel != 1 or header.photometric not in MONOCHROME:
        raise MammoInputError(
            QuarantineReason.UNSUPPORTED_PHOTOMETRIC,
            f"PhotometricInterpretation {header.photometric[:16]!r}, "
            f"SamplesPerPixel {header.samples_per_pixel}",
        )
    if (
        header.bits_allocated not in (8, 16)
        or not 1 <= header.bits_stored <= header.bits_allocated
        or header.pixel_representation != 0
    ):
        raise MammoInputError(
            QuarantineReason.INVALID_BITS,
            f"BitsAllocated {header.bits_allocated}, BitsStored {header.bits_stored}, "
            f"PixelRepresentation {header.pixel_representation}",
        )
    if header.high_bit != header.bits_stored - 1:
        raise MammoInputError(
            QuarantineReason.INVALID_BITS,
            f"HighBit {header.high_bit} with BitsStored {header.bits_stored}: "
            "HighBit must be BitsStored - 1",
        )


def _whitelisted_copy(ds: Dataset, header: DicomHeader) -> Dataset:
    copy = Dataset()
    copy.file_meta = FileMetaDataset()
    copy.file_meta.TransferSyntaxUID = UID(header.transfer_syntax)
    for keyword in (*DICOM_WHITELIST, "PixelData"):
        if keyword != "TransferSyntaxUID" and keyword in ds:
            copy[keyword] = ds[keyword]
    return copy
