"""Header checks, decoders and the table of bad inputs (mammo.dicom, mammo.decoders)."""

from __future__ import annotations

import io
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)

from mammo import decoders
from mammo.contract import DICOM_LUT_ATTRIBUTES, DICOM_WHITELIST, QuarantineReason, VoiPath
from mammo.decoders import decode_pixels, get_decoder, list_decoders, register_decoder
from mammo.dicom import DicomHeader, read_header
from mammo.errors import MammoInputError
from mammo.lut import Lut
from mammo.preprocess import PreprocessConfig, decode_and_preprocess
from mammo.synth.dicom_writer import DicomSpec, PlantedPhi, encode_dicom
from mammo.synth.faults import FAULT_PHI, FAULTS, base_image

PHI = PlantedPhi("Testcase^Tamsin", "19520229", "St Leakless Clinic", "ACC77001", "Dr^Nobody")
BIG = 10**9


def _random_stored(bits: int, rows: int = 48, cols: int = 40, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 1 << bits, size=(rows, cols), dtype=np.uint16)
    pixels[0, 0], pixels[-1, -1] = 0, (1 << bits) - 1  # both ends of the range
    return pixels


def _dicom(
    pixels: npt.NDArray[np.uint16], transfer_syntax: str = JPEG2000Lossless, **spec: Any
) -> bytes:
    spec.setdefault("photometric", "MONOCHROME2")
    spec.setdefault("bits_stored", 12)
    return encode_dicom(pixels, DicomSpec(transfer_syntax=transfer_syntax, phi=PHI, **spec))


def _edited(data: bytes, **attributes: Any) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _reason(data: bytes, max_pixels: int = BIG) -> QuarantineReason | None:
    try:
        read_header(data, max_pixels)
    except MammoInputError as err:
        return err.reason
    return None


# --- read_header ------------------------------------------------------------------------


def test_read_header_returns_the_whitelisted_attributes() -> None:
    data = _dicom(
        base_image(),
        JPEGLosslessSV1,
        photometric="MONOCHROME1",
        bits_stored=14,
        window_centers=(2000.0, 2100.5),
        window_widths=(800.0, 900.0),
        voi_lut_function="SIGMOID",
    )
    header, _ = read_header(data, BIG)
    assert header == DicomHeader(
        transfer_syntax=JPEGLosslessSV1,
        photometric="MONOCHROME1",
        rows=96,
        cols=64,
        samples_per_pixel=1,
        number_of_frames=1,
        bits_allocated=16,
        bits_stored=14,
        high_bit=13,
        pixel_representation=0,
        rescale_slope=1.0,
        rescale_intercept=0.0,
        window_centers=(2000.0, 2100.5),
        window_widths=(800.0, 900.0),
        voi_lut_function="SIGMOID",
    )


def test_read_header_dataset_holds_only_whitelisted_attributes_and_no_phi() -> None:
    _, ds = read_header(_dicom(base_image()), BIG)
    keywords = {element.keyword for element in ds}
    assert keywords <= {*DICOM_WHITELIST, "PixelData"}
    assert "PixelData" in keywords and "PatientName" not in keywords
    text = str(ds) + str(ds.file_meta)
    assert not [value for value in PHI.values() if value in text]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"NumberOfFrames": 3}, QuarantineReason.TRUNCATED),  # native data for 1 frame only
        ({"BitsAllocated": 12}, QuarantineReason.INVALID_BITS),
        ({"BitsStored": 0}, QuarantineReason.INVALID_BITS),
        ({"PhotometricInterpretation": "PALETTE COLOR"}, QuarantineReason.UNSUPPORTED_PHOTOMETRIC),
        ({"RescaleSlope": 0}, QuarantineReason.UNREADABLE),
        ({"Rows": 0}, QuarantineReason.UNREADABLE),
        ({"HighBit": 15}, QuarantineReason.INVALID_BITS),  # BitsStored 12
        ({"HighBit": 12}, QuarantineReason.INVALID_BITS),
    ],
    ids=[
        "frames-declared-beyond-native-data",
        "twelve-bits-allocated",
        "zero-bits-stored",
        "palette-color",
        "zero-rescale-slope",
        "zero-rows",
        "high-bit-15-of-12-bits",
        "high-bit-12-of-12-bits",
    ],
)
def test_read_header_edited_native_files(
    edit: dict[str, Any], reason: QuarantineReason | None
) -> None:
    data = _edited(_dicom(base_image(), ExplicitVRLittleEndian), **edit)
    assert _reason(data) == reason


def test_high_bit_other_than_bits_stored_minus_1_is_refused_with_its_reason() -> None:
    data = _edited(_dicom(base_image(), ExplicitVRLittleEndian), HighBit=15)
    with pytest.raises(MammoInputError) as caught:
        read_header(data, BIG)
    assert caught.value.reason == QuarantineReason.INVALID_BITS
    assert caught.value.detail == "HighBit 15 with BitsStored 12: HighBit must be BitsStored - 1"


def _raw_window(data: bytes, center: bytes, width: bytes) -> bytes:
    """Window Center/Width written as raw DS bytes, as pydicom refuses to write bad ones."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for tag, value in ((0x00281050, center), (0x00281051, width)):
        ds[tag] = RawDataElement(Tag(tag), "DS", len(value), value, 0, False, True)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("center", "width"),
    [
        (b"abc ", b"1000"),
        (b"100\\abc", b"1000\\900 "),
        (b"100\\200 ", b"1000"),
        (b"2000", b""),
    ],
    ids=["center-not-a-number", "second-center-not-a-number", "two-centers-one-width", "no-width"],
)
def test_malformed_window_falls_back_to_min_max_with_the_flag(center: bytes, width: bytes) -> None:
    cfg = PreprocessConfig(out_rows=128, out_cols=64)
    good = _dicom(base_image(), window_centers=(2000.0,), window_widths=(1000.0,))
    data = _raw_window(good, center, width)
    header, _ = read_header(data, BIG)
    assert header.voi_malformed and header.window_centers == header.window_widths == ()
    processed = decode_and_preprocess(data, cfg)
    assert processed.voi_path == VoiPath.MIN_MAX_FALLBACK and processed.window_fallback
    assert processed.window is None
    min_max = decode_and_preprocess(_dicom(base_image()), cfg)
    assert min_max.voi_path == VoiPath.MIN_MAX and not min_max.window_fallback
    np.testing.assert_array_equal(processed.pixels, min_max.pixels)


def _with_luts(**spec: Any) -> bytes:
    """A file with both LUT sequences and Presentation LUT Shape; LUT Explanation (free text,
    never read) holds planted PHI."""
    ramp = tuple(range(0, 4096 * 16, 16))
    spec = {
        "modality_lut": Lut(0, 16, ramp),
        "voi_luts": (Lut(0, 16, ramp), Lut(100, 16, ramp[:3000])),
        "presentation_lut_shape": "INVERSE",
        **spec,
    }
    ds = pydicom.dcmread(io.BytesIO(_dicom(base_image(), ExplicitVRLittleEndian, **spec)))
    for sequence in ("ModalityLUTSequence", "VOILUTSequence"):
        for item in ds.get(sequence, []):
            item.LUTExplanation = PHI.patient_name
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_lut_attributes_are_read_for_the_mapping_but_never_copied() -> None:
    header, ds = read_header(_with_luts(), BIG)
    ramp = tuple(range(0, 4096 * 16, 16))
    assert header.modality_lut == Lut(0, 16, ramp)
    assert header.voi_luts == (Lut(0, 16, ramp), Lut(100, 16, ramp[:3000]))
    assert header.presentation_lut_shape == "INVERSE" and not header.voi_malformed
    keywords = {element.keyword for element in ds}
    assert keywords <= {*DICOM_WHITELIST, "PixelData"}
    assert not keywords & set(DICOM_LUT_ATTRIBUTES)
    assert PHI.patient_name not in str(ds) + repr(header)


@pytest.mark.parametrize(
    ("edit", "descriptor"),
    [
        ("ModalityLUTSequence", [4096, 0]),  # two values, not three
        ("ModalityLUTSequence", [4096, 0, 20]),  # 20 bits per entry
        ("ModalityLUTSequence", [0, 0, 16]),  # 65536 entries declared, 4096 given
        ("VOILUTSequence", [4096, 0]),
        ("VOILUTSequence", [0, 0, 16]),
    ],
    ids=[
        "modality-two-values",
        "modality-20-bits",
        "modality-data-short",
        "voi-two-values",
        "voi-data-short",
    ],
)
def test_unusable_lut_sequences(edit: str, descriptor: list[int]) -> None:
    ds = pydicom.dcmread(io.BytesIO(_with_luts()))
    ds[edit][0].add_new(0x00283002, "US", descriptor)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    if edit == "ModalityLUTSequence":  # no way to tell the modality values: refused
        with pytest.raises(MammoInputError) as caught:
            read_header(buffer.getvalue(), BIG)
        assert caught.value.reason == QuarantineReason.UNREADABLE
        assert caught.value.detail.startswith("ModalityLUTSequence: ")
        return
    header, _ = read_header(buffer.getvalue(), BIG)  # a VOI only: min-max, flagged
    assert header.voi_malformed and header.voi_luts == ()
    processed = decode_and_preprocess(buffer.getvalue(), PreprocessConfig(128, 64))
    assert processed.voi_path == VoiPath.MIN_MAX_FALLBACK and processed.window_fallback


def test_too_large_is_refused_from_the_header_alone() -> None:
    data = _dicom(base_image())  # 96 x 64 = 6144 pixels
    assert _reason(data, max_pixels=6144) is None
    with pytest.raises(MammoInputError) as caught:
        read_header(data, max_pixels=6143)
    assert caught.value.reason == QuarantineReason.TOO_LARGE
    assert "6144 pixels > 6143" in caught.value.detail


@pytest.mark.parametrize(
    "transfer_syntax", [JPEG2000Lossless, ExplicitVRLittleEndian], ids=["jpeg2000", "native"]
)
def test_every_cut_of_a_file_is_classified_by_where_it_falls(transfer_syntax: str) -> None:
    data = _dicom(base_image(32, 32), transfer_syntax)
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    reasons = {cut: _reason(data[:cut]) for cut in range(1, len(data) - 8)}

    def seen(start: int, stop: int) -> set[QuarantineReason | None]:
        return {reasons[cut] for cut in range(start, stop)}

    assert seen(1, 132) == {QuarantineReason.NOT_DICOM}  # inside the preamble
    # in the header: NO_PIXEL_DATA only where a cut falls exactly between two elements
    assert seen(132, pixel_tag + 1) == {
        QuarantineReason.UNREADABLE,
        QuarantineReason.NO_PIXEL_DATA,
    }
    # inside the 12-byte Pixel Data element header a cut can break the parse itself
    assert seen(pixel_tag + 1, pixel_tag + 12) <= {
        QuarantineReason.UNREADABLE,
        QuarantineReason.TRUNCATED,
    }
    # anywhere in the value (the last 8 bytes of J2K are the (FFFE,E0DD) delimiter)
    assert seen(pixel_tag + 12, len(data) - 8) == {QuarantineReason.TRUNCATED}


def test_header_cut_between_elements_is_no_pixel_data_and_mid_element_unreadable() -> None:
    data = _dicom(base_image())
    name = data.find(PHI.patient_name.encode())
    element_start = name - 8  # (0010,0010) PN: tag, VR, 2-byte length, then the value
    assert _reason(data[:element_start]) == QuarantineReason.NO_PIXEL_DATA
    assert _reason(data[: element_start + 3]) == QuarantineReason.UNREADABLE
    assert _reason(data[: name + 2]) == QuarantineReason.UNREADABLE


# --- decoders ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [12, 14, 16], ids=["12-bit", "14-bit", "16-bit"])
@pytest.mark.parametrize(
    "transfer_syntax",
    [JPEG2000Lossless, JPEGLosslessSV1, ExplicitVRLittleEndian],
    ids=["jpeg2000-lossless", "jpeg-lossless-sv1", "uncompressed"],
)
@pytest.mark.parametrize("decoder", ["dicomsdl", "pydicom"])
def test_decoders_return_the_exact_stored_values(
    decoder: str, transfer_syntax: str, bits: int
) -> None:
    stored = _random_stored(bits)
    data = _dicom(stored, transfer_syntax, bits_stored=bits)
    header, ds = read_header(data, BIG)
    pixels, name = decode_pixels(data, ds, header, (decoder,))
    assert name == decoder
    assert pixels.dtype == np.uint16 and pixels.flags.c_contiguous
    np.testing.assert_array_equal(pixels, stored)


def _jpeg_lossless(stored: npt.NDArray[np.uint16], predictor: int, bits: int) -> bytes:
    """A process-14 JPEG Lossless file (1.2.840.10008.1.2.4.57) with another predictor than
    SV1's first one: the SV1 file with its frame encoded again."""
    ds = pydicom.dcmread(io.BytesIO(_dicom(stored, JPEGLosslessSV1, bits_stored=bits)))
    frame = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=predictor, bitspersample=bits)
    ds.PixelData = encapsulate([bytes(frame)])
    ds.file_meta.TransferSyntaxUID = JPEGLossless
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("bits", [12, 14, 16], ids=["12-bit", "14-bit", "16-bit"])
def test_imagecodecs_reads_jpeg_lossless_sv1_exactly_as_dicomsdl_and_pydicom(bits: int) -> None:
    stored = _random_stored(bits, rows=96, cols=64)
    data = _dicom(stored, JPEGLosslessSV1, bits_stored=bits, photometric="MONOCHROME1")
    header, ds = read_header(data, BIG)
    pixels, name = decode_pixels(data, ds, header, ("imagecodecs",))
    assert name == "imagecodecs"
    assert pixels.dtype == np.uint16 and pixels.flags.c_contiguous
    np.testing.assert_array_equal(pixels, stored)
    for other in ("dicomsdl", "pydicom"):
        np.testing.assert_array_equal(decode_pixels(data, ds, header, (other,))[0], pixels)


@pytest.mark.parametrize("predictor", range(2, 8))
def test_imagecodecs_reads_every_process_14_predictor(predictor: int) -> None:
    stored = _random_stored(14, rows=96, cols=64)
    data = _jpeg_lossless(stored, predictor, 14)
    header, ds = read_header(data, BIG)
    assert header.transfer_syntax == JPEGLossless
    np.testing.assert_array_equal(decode_pixels(data, ds, header, ("imagecodecs",))[0], stored)
    np.testing.assert_array_equal(decode_pixels(data, ds, header, ("pydicom",))[0], stored)


@pytest.mark.parametrize(
    "transfer_syntax", [JPEG2000Lossless, ExplicitVRLittleEndian], ids=["jpeg2000", "native"]
)
def test_imagecodecs_leaves_other_syntaxes_to_the_next_decoder(transfer_syntax: str) -> None:
    stored = _random_stored(12)
    data = _dicom(stored, transfer_syntax)
    header, ds = read_header(data, BIG)
    pixels, name = decode_pixels(data, ds, header, ("imagecodecs", "pydicom"))
    assert name == "pydicom"  # a refusal of the syntax is not a failure
    np.testing.assert_array_equal(pixels, stored)
    with pytest.raises(MammoInputError) as caught:
        decode_pixels(data, ds, header, ("imagecodecs",))
    assert caught.value.reason == QuarantineReason.DECODE_FAILED
    assert caught.value.detail == f"no decoder of ('imagecodecs',) takes {transfer_syntax}"


def test_decoders_agree_on_rle() -> None:
    stored = _random_stored(12)
    ds = pydicom.dcmread(io.BytesIO(_dicom(stored, ExplicitVRLittleEndian)))
    ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    data = buffer.getvalue()
    header, ds = read_header(data, BIG)
    for decoder in ("dicomsdl", "pydicom"):
        np.testing.assert_array_equal(decode_pixels(data, ds, header, (decoder,))[0], stored)


def test_eight_bit_allocated_native_pixels_are_widened_to_uint16() -> None:
    stored8 = _random_stored(8).astype(np.uint8)
    base = _dicom(np.zeros((48, 40), np.uint16), ExplicitVRLittleEndian)
    ds = pydicom.dcmread(io.BytesIO(base))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = stored8.tobytes()
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    header, reduced = read_header(data, BIG)
    for decoder in ("dicomsdl", "pydicom"):
        pixels, _ = decode_pixels(data, reduced, header, (decoder,))
        assert pixels.dtype == np.uint16
        np.testing.assert_array_equal(pixels, stored8)


def test_native_bits_above_bits_stored_are_masked_by_both_decoders() -> None:
    stored = _random_stored(16)
    data = _edited(
        _dicom(stored, ExplicitVRLittleEndian, bits_stored=16), BitsStored=12, HighBit=11
    )
    header, ds = read_header(data, BIG)
    for decoder in ("dicomsdl", "pydicom"):
        np.testing.assert_array_equal(
            decode_pixels(data, ds, header, (decoder,))[0], stored & 0xFFF
        )


def _wrong_shape(data: bytes, ds: Dataset, header: DicomHeader) -> npt.NDArray[Any]:
    return np.zeros((header.cols, header.rows), np.uint16)


def _raises(data: bytes, ds: Dataset, header: DicomHeader) -> npt.NDArray[Any]:
    raise RuntimeError("codec exploded")


def test_decode_pixels_skips_failing_decoders_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(decoders._DECODERS, "wrong_shape", _wrong_shape)
    monkeypatch.setitem(decoders._DECODERS, "raises", _raises)
    stored = _random_stored(12)
    data = _dicom(stored)
    header, ds = read_header(data, BIG)
    pixels, name = decode_pixels(data, ds, header, ("wrong_shape", "raises", "pydicom"))
    assert name == "pydicom"
    np.testing.assert_array_equal(pixels, stored)
    with pytest.raises(MammoInputError) as caught:
        decode_pixels(data, ds, header, ("wrong_shape", "raises"))
    assert caught.value.reason == QuarantineReason.DECODE_FAILED
    assert (
        caught.value.detail
        == "wrong_shape: shape (40, 48), expected (48, 40); raises: RuntimeError"
    )


def test_a_corrupt_codestream_fails_every_decoder_silently(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Only a clean, early failure: dicomsdl can crash the process on some corrupt streams.
    data = bytearray(_dicom(_random_stored(12)))
    start = data.rfind(b"\xff\x4f\xff\x51")  # J2K codestream: SOC + SIZ markers
    data[start : start + 4] = bytes(4)  # no longer a JPEG 2000 codestream
    header, ds = read_header(bytes(data), BIG)
    with pytest.raises(MammoInputError) as caught:
        decode_pixels(bytes(data), ds, header, ("dicomsdl", "pydicom"))
    assert caught.value.reason == QuarantineReason.DECODE_FAILED
    assert caught.value.detail.startswith("dicomsdl: ")
    assert "; pydicom: " in caught.value.detail
    assert capfd.readouterr().err == ""  # dicomsdl's own "error: ..." lines are silenced


def test_decoder_registry() -> None:
    assert {"dicomsdl", "pydicom"} <= set(list_decoders())
    assert get_decoder("pydicom") is decoders.decode_with_pydicom
    with pytest.raises(KeyError, match="unknown decoder 'nope'"):
        get_decoder("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_decoder("dicomsdl")(_raises)


# --- the table of bad inputs --------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS.values(), ids=list(FAULTS))
def test_every_fault_gets_its_reason_and_leaks_no_phi(fault: Any) -> None:
    cfg = PreprocessConfig(out_rows=128, out_cols=64)
    data = fault.make()
    if fault.expected is None:
        processed = decode_and_preprocess(data, cfg)
        assert processed.pixels.shape == (128, 64)
        assert processed.pixels.max() > 0
        return
    with pytest.raises(MammoInputError) as caught:
        decode_and_preprocess(data, cfg)
    assert caught.value.reason == fault.expected
    assert str(caught.value) == f"{fault.expected}: {caught.value.detail}"
    assert not [value for value in FAULT_PHI.values() if value in str(caught.value)]


def test_faults_that_are_dicoms_carry_the_planted_phi() -> None:
    not_dicom = (QuarantineReason.EMPTY_FILE, QuarantineReason.NOT_DICOM)
    dicoms = [fault.make() for fault in FAULTS.values() if fault.expected not in not_dicom]
    assert len(dicoms) >= 12
    # (the header cut keeps the group 0008 values, but only part of Patient's Name)
    assert all(FAULT_PHI.accession_number.encode() in data for data in dicoms)


def test_the_fault_table_covers_every_decode_reason() -> None:
    covered = {fault.expected for fault in FAULTS.values()}
    decode_reasons = {
        QuarantineReason.EMPTY_FILE,
        QuarantineReason.NOT_DICOM,
        QuarantineReason.TRUNCATED,
        QuarantineReason.UNREADABLE,
        QuarantineReason.NO_PIXEL_DATA,
        QuarantineReason.UNSUPPORTED_SYNTAX,
        QuarantineReason.MULTI_FRAME,
        QuarantineReason.UNSUPPORTED_PHOTOMETRIC,
        QuarantineReason.INVALID_BITS,
        QuarantineReason.TOO_LARGE,
        QuarantineReason.BLANK_IMAGE,
    }
    assert decode_reasons <= covered
    assert None in covered
