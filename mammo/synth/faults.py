"""A table of bad (and oddly good) DICOM inputs, each with the quarantine reason it must get.

Every entry of :data:`FAULTS` builds its bytes on demand with ``make()``; ``expected``
is the QuarantineReason that ``decode_and_preprocess`` must raise, or None when the file
must decode fine (an oddity of the real data the pipeline absorbs). All DICOM-based
faults carry :data:`FAULT_PHI`, so tests can check that no error detail leaks it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1

from mammo.contract import QuarantineReason
from mammo.synth.dicom_writer import DicomSpec, PlantedPhi, encode_dicom

FAULT_PHI = PlantedPhi(
    patient_name="Faultline^Philippa^Q",
    patient_birth_date="19470312",
    institution_name="Quarantine Memorial Hospital",
    accession_number="ACCFLT90210",
    referring_physician_name="Leakwell^Doctor",
)
MPEG2_MAIN_PROFILE = UID("1.2.840.10008.1.2.4.100")  # neither decoder reads video


@dataclass(frozen=True)
class Fault:
    name: str
    make: Callable[[], bytes]
    expected: QuarantineReason | None  # None: must decode fine


def base_image(rows: int = 96, cols: int = 64, bits_stored: int = 12) -> npt.NDArray[np.uint16]:
    """A breast-like (H, W) uint16 image: a bright half-ellipse on the left, dark elsewhere.

    Deterministic; tissue fills about half the frame, the background is near zero.
    J2K encoding needs both sides >= 32 pixels.
    """
    full = (1 << bits_stored) - 1
    yy, xx = np.mgrid[0:rows, 0:cols]
    radius = ((yy - rows / 2) / (rows * 0.45)) ** 2 + (xx / (cols * 0.75)) ** 2
    tissue = np.clip(1.0 - radius, 0.0, 1.0)
    texture = 0.1 * np.sin(yy / 3.0) * np.cos(xx / 5.0)
    values = np.where(radius < 1.0, (0.35 + 0.5 * tissue + texture) * full, 0.01 * full)
    return np.clip(values, 0, full).astype(np.uint16)


def _spec(transfer_syntax: str = JPEG2000Lossless, bits_stored: int = 12) -> DicomSpec:
    return DicomSpec(
        transfer_syntax=transfer_syntax,
        photometric="MONOCHROME2",
        bits_stored=bits_stored,
        phi=FAULT_PHI,
        uid_seed=7,
    )


def _good(transfer_syntax: str = JPEG2000Lossless) -> bytes:
    return encode_dicom(base_image(), _spec(transfer_syntax))


def _edited(data: bytes, edit: Callable[[Dataset], None]) -> bytes:
    """Re-save ``data`` after ``edit`` changed its Dataset in place."""
    ds = dcmread(io.BytesIO(data))
    edit(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _cut_in_pixel_data(transfer_syntax: str) -> bytes:
    data = _good(transfer_syntax)
    start = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010)
    return data[: start + (len(data) - start) // 2]


def _cut_header() -> bytes:
    data = _good()
    name = data.find(FAULT_PHI.patient_name.encode())
    return data[: name + 4]  # inside the value of Patient's Name (0010,0010)


def _without_pixel_data(ds: Dataset) -> None:
    del ds.PixelData


def _mpeg2(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = MPEG2_MAIN_PROFILE


def _two_frames(ds: Dataset) -> None:
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2


def _rgb(ds: Dataset) -> None:
    rgb = np.repeat((base_image() >> 4).astype(np.uint8)[:, :, None], 3, axis=2)  # (H, W, 3)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    ds["PixelData"].VR = "OB"


def _bits_stored_17(ds: Dataset) -> None:
    ds.BitsStored, ds.HighBit = 17, 16


def _signed(ds: Dataset) -> None:
    ds.PixelRepresentation = 1


def _declared_12_bits(ds: Dataset) -> None:
    ds.BitsStored, ds.HighBit = 12, 11


def _high_bit_15_of_12(ds: Dataset) -> None:
    ds.HighBit = 15  # BitsStored 12: only HighBit = BitsStored - 1 is allowed


def _window_center_not_a_number(ds: Dataset) -> None:
    # Window Center "abc": not a DS, which pydicom refuses to write; hence raw bytes
    for tag, value in ((0x00281050, b"abc "), (0x00281051, b"1000")):
        ds[tag] = RawDataElement(Tag(tag), "DS", len(value), value, 0, False, True)


def _bomb(ds: Dataset) -> None:
    ds.Rows, ds.Columns = 30_000, 30_000  # 900 M pixels declared, a few kB of data


def _above_bits_stored() -> bytes:
    # A JPEG 2000 stream with 16-bit samples declared as 12 bits, with a bright stripe
    # of values above 4095: decoders return them as they are, the LUT clamps them.
    pixels = base_image(bits_stored=12)
    pixels[40:44, :] = 6000
    return _edited(encode_dicom(pixels, _spec(bits_stored=16)), _declared_12_bits)


def _eight_bit_range_with_12_bit_window() -> bytes:
    spec = DicomSpec(
        transfer_syntax=JPEGLosslessSV1,
        photometric="MONOCHROME2",
        bits_stored=12,
        window_centers=(3000.0,),
        window_widths=(1000.0,),
        phi=FAULT_PHI,
    )
    return encode_dicom(base_image(bits_stored=8), spec)


def _text() -> bytes:
    return f"Report for {FAULT_PHI.patient_name}, born {FAULT_PHI.patient_birth_date}\n".encode()


def _table(*faults: Fault) -> dict[str, Fault]:
    return {fault.name: fault for fault in faults}


R = QuarantineReason
FAULTS: dict[str, Fault] = _table(
    Fault("zero_byte_file", lambda: b"", R.EMPTY_FILE),
    Fault("text_named_dcm", _text, R.NOT_DICOM),
    Fault("header_cut_mid_element", _cut_header, R.UNREADABLE),
    Fault("cut_in_jpeg2000_pixel_data", lambda: _cut_in_pixel_data(JPEG2000Lossless), R.TRUNCATED),
    Fault("cut_in_jpeg_sv1_pixel_data", lambda: _cut_in_pixel_data(JPEGLosslessSV1), R.TRUNCATED),
    Fault(
        "cut_in_native_pixel_data",
        lambda: _cut_in_pixel_data(ExplicitVRLittleEndian),
        R.TRUNCATED,
    ),
    Fault("no_pixel_data", lambda: _edited(_good(), _without_pixel_data), R.NO_PIXEL_DATA),
    Fault("mpeg2_transfer_syntax", lambda: _edited(_good(), _mpeg2), R.UNSUPPORTED_SYNTAX),
    Fault(
        "decompression_bomb_30000x30000",
        lambda: _edited(_good(), _bomb),
        R.TOO_LARGE,
    ),
    Fault(
        "two_frames",
        lambda: _edited(_good(ExplicitVRLittleEndian), _two_frames),
        R.MULTI_FRAME,
    ),
    Fault(
        "rgb_three_samples",
        lambda: _edited(_good(ExplicitVRLittleEndian), _rgb),
        R.UNSUPPORTED_PHOTOMETRIC,
    ),
    Fault(
        "bits_stored_above_allocated",
        lambda: _edited(_good(ExplicitVRLittleEndian), _bits_stored_17),
        R.INVALID_BITS,
    ),
    Fault(
        "signed_pixels",
        lambda: _edited(_good(ExplicitVRLittleEndian), _signed),
        R.INVALID_BITS,
    ),
    Fault(
        "all_zero_image",
        lambda: encode_dicom(np.zeros((96, 64), np.uint16), _spec(JPEGLosslessSV1)),
        R.BLANK_IMAGE,
    ),
    Fault(
        "high_bit_not_bits_stored_minus_1",
        lambda: _edited(_good(ExplicitVRLittleEndian), _high_bit_15_of_12),
        R.INVALID_BITS,
    ),
    Fault("pixels_above_bits_stored", _above_bits_stored, None),
    Fault(
        "window_center_not_a_number", lambda: _edited(_good(), _window_center_not_a_number), None
    ),
    Fault("eight_bit_range_with_12_bit_window", _eight_bit_range_with_12_bit_window, None),
)
