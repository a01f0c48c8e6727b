"""Encode a 2-D array of stored values as a mammography DICOM file (bytes).

Two lossless syntaxes, as in the RSNA set (one per machine):
- JPEG 2000 lossless (1.2.840.10008.1.2.4.90), encoded by pydicom through pylibjpeg-openjpeg;
- JPEG Lossless, first-order prediction (1.2.840.10008.1.2.4.70, "SV1"), encoded with
  imagecodecs' lossless JPEG encoder (predictor 1) and encapsulated by pydicom.
Explicit VR Little Endian (uncompressed) is also available for tests.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import imagecodecs
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
)

from mammo.lut import Lut

DIGITAL_MAMMOGRAPHY_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
SUPPORTED_ENCODINGS = (JPEG2000Lossless, JPEGLosslessSV1, ExplicitVRLittleEndian)


@dataclass(frozen=True)
class PlantedPhi:
    """Fake protected health information written into every synthetic DICOM.

    These values must never appear in any output of the pipeline; tests scan for them.
    """

    patient_name: str
    patient_birth_date: str  # DA, YYYYMMDD
    institution_name: str
    accession_number: str
    referring_physician_name: str

    def values(self) -> tuple[str, ...]:
        return (
            self.patient_name,
            self.patient_birth_date,
            self.institution_name,
            self.accession_number,
            self.referring_physician_name,
        )


@dataclass(frozen=True)
class DicomSpec:
    """Header attributes of one synthetic image."""

    transfer_syntax: str
    photometric: str  # MONOCHROME1 or MONOCHROME2
    bits_stored: int  # 12..16; BitsAllocated is always 16
    window_centers: tuple[float, ...] = ()
    window_widths: tuple[float, ...] = ()
    voi_lut_function: str | None = None  # (0028,1056): LINEAR, LINEAR_EXACT, SIGMOID or absent
    # Not in the RSNA files (docs: DATA_FACTS), written for tests of the LUT paths:
    modality_lut: Lut | None = None  # (0028,3000), one item
    voi_luts: tuple[Lut, ...] = ()  # (0028,3010), one item per VOI view
    lut_data_vr: Literal["US", "OW"] = "US"  # LUT Data (0028,3006) as numbers or bytes
    presentation_lut_shape: str | None = None  # (2050,0020): IDENTITY or INVERSE
    patient_id: int = 0
    image_laterality: str = "L"
    view_position: str = "CC"
    phi: PlantedPhi | None = None
    uid_seed: int = 0  # makes SOP/Study/Series UIDs deterministic


def _uid(seed: int, kind: int) -> UID:
    # 2.25 root: a UUID-derived UID; deterministic for (seed, kind).
    return UID(f"2.25.{(seed * 1_000_003 + kind) % (10**36) + 10**20}")


def _lut_item(lut: Lut, vr: Literal["US", "OW"]) -> Dataset:
    """One LUT item: LUT Descriptor (0028,3002) (entries, 65536 written as 0, first mapped
    value, bits) and LUT Data (0028,3006)."""
    item = Dataset()
    item.add_new(0x00283002, "US", [len(lut.data) % (1 << 16), lut.first_mapped, lut.bits])
    words = np.asarray(lut.data, dtype="<u2")
    item.add_new(0x00283006, vr, words.tobytes() if vr == "OW" else [int(v) for v in words])
    return item


def encode_dicom(pixels: npt.NDArray[np.uint16], spec: DicomSpec) -> bytes:
    """Return the bytes of a DICOM Part 10 file holding ``pixels`` (H, W) as stored values."""
    if pixels.ndim != 2 or pixels.dtype != np.uint16:
        raise ValueError(f"expected a (H, W) uint16 array, got {pixels.shape} {pixels.dtype}")
    if spec.transfer_syntax not in SUPPORTED_ENCODINGS:
        raise ValueError(f"cannot encode transfer syntax {spec.transfer_syntax}")
    rows, cols = pixels.shape

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DIGITAL_MAMMOGRAPHY_PRESENTATION
    ds.file_meta.MediaStorageSOPInstanceUID = _uid(spec.uid_seed, 1)
    ds.file_meta.TransferSyntaxUID = UID(spec.transfer_syntax)
    ds.SOPClassUID = DIGITAL_MAMMOGRAPHY_PRESENTATION
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(spec.uid_seed, 2)
    ds.SeriesInstanceUID = _uid(spec.uid_seed, 3)
    ds.Modality = "MG"
    ds.PatientID = str(spec.patient_id)
    ds.ImageLaterality = spec.image_laterality
    ds.ViewPosition = spec.view_position
    if spec.phi is not None:
        ds.PatientName = spec.phi.patient_name
        ds.PatientBirthDate = spec.phi.patient_birth_date
        ds.InstitutionName = spec.phi.institution_name
        ds.AccessionNumber = spec.phi.accession_number
        ds.ReferringPhysicianName = spec.phi.referring_physician_name

    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.BitsAllocated = 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    if spec.window_centers:  # (0028,1050) / (0028,1051): multi-valued when several pairs
        centers, widths = list(spec.window_centers), list(spec.window_widths)
        ds.WindowCenter = centers if len(centers) > 1 else centers[0]
        ds.WindowWidth = widths if len(widths) > 1 else widths[0]
    if spec.voi_lut_function is not None:
        ds.VOILUTFunction = spec.voi_lut_function
    if spec.modality_lut is not None:
        ds.ModalityLUTSequence = [_lut_item(spec.modality_lut, spec.lut_data_vr)]
    if spec.voi_luts:
        ds.VOILUTSequence = [_lut_item(lut, spec.lut_data_vr) for lut in spec.voi_luts]
    if spec.presentation_lut_shape is not None:
        ds.PresentationLUTShape = spec.presentation_lut_shape

    if spec.transfer_syntax == JPEGLosslessSV1:
        frame = imagecodecs.jpeg8_encode(
            pixels, lossless=True, predictor=1, bitspersample=spec.bits_stored
        )
        ds.PixelData = encapsulate([bytes(frame)])
        ds["PixelData"].VR = "OB"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds["PixelData"].VR = "OW"
        if spec.transfer_syntax == JPEG2000Lossless:
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
