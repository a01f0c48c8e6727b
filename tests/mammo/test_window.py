"""VOI LUT formulas (DICOM PS3.3 C.11.2.1.2) and the one-table LUT (mammo.window)."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_presentation_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian

from mammo.contract import ModalityPath, VoiPath
from mammo.dicom import DicomHeader, read_header
from mammo.lut import Lut
from mammo.synth.dicom_writer import DicomSpec, encode_dicom
from mammo.synth.faults import base_image
from mammo.window import (
    InvalidWindowError,
    VoiFunction,
    Window,
    apply_voi,
    build_lut,
    modality,
    select_window,
)

HEADER = DicomHeader(
    transfer_syntax="1.2.840.10008.1.2.4.90",
    photometric="MONOCHROME2",
    rows=64,
    cols=48,
    samples_per_pixel=1,
    number_of_frames=1,
    bits_allocated=16,
    bits_stored=12,
    high_bit=11,
    pixel_representation=0,
    rescale_slope=1.0,
    rescale_intercept=0.0,
    window_centers=(),
    window_widths=(),
    voi_lut_function=None,
)
EVERY_STORED_VALUE = np.arange(1 << 16, dtype=np.uint16)


def _sigmoid(x: float, c: float, w: float) -> float:
    return 1.0 / (1.0 + math.exp(-4.0 * (x - c) / w))


# Expected values worked out by hand from the PS3.3 formulas.
# LINEAR, c=100, w=21: breakpoints at c - 0.5 -/+ (w-1)/2 = 89.5 and 109.5, slope 1/20.
# LINEAR_EXACT, c=100, w=20: breakpoints at c -/+ w/2 = 90 and 110, slope 1/20.
@pytest.mark.parametrize(
    ("function", "center", "width", "x", "expected"),
    [
        ("LINEAR", 100, 21, 0.0, 0.0),
        ("LINEAR", 100, 21, 89.5, 0.0),  # x <= lower breakpoint: y_min
        ("LINEAR", 100, 21, 89.75, 0.0125),  # just above: on the ramp
        ("LINEAR", 100, 21, 99.5, 0.5),  # c - 0.5 is the middle of the ramp
        ("LINEAR", 100, 21, 104.5, 0.75),
        ("LINEAR", 100, 21, 109.5, 1.0),  # x == upper breakpoint is still on the ramp
        ("LINEAR", 100, 21, 109.75, 1.0),  # x > upper breakpoint: y_max
        ("LINEAR", 100, 1, 99.5, 0.0),  # width 1: a step at c - 0.5
        ("LINEAR", 100, 1, 99.75, 1.0),
        ("LINEAR_EXACT", 100, 20, 90.0, 0.0),  # x <= c - w/2: y_min
        ("LINEAR_EXACT", 100, 20, 95.0, 0.25),
        ("LINEAR_EXACT", 100, 20, 100.0, 0.5),
        ("LINEAR_EXACT", 100, 20, 110.0, 1.0),  # x == c + w/2 is on the ramp
        ("LINEAR_EXACT", 100, 20, 110.5, 1.0),
        ("LINEAR_EXACT", 100, 0.5, 100.25, 1.0),  # widths below 1 are allowed here
        ("SIGMOID", 100, 40, 100.0, 0.5),
        ("SIGMOID", 100, 40, 110.0, 0.7310585786300049),  # 1 / (1 + e^-1)
        ("SIGMOID", 100, 40, 90.0, 0.2689414213699951),  # 1 / (1 + e^1)
        ("SIGMOID", 2048, 1000, 0.0, _sigmoid(0.0, 2048, 1000)),
    ],
    ids=lambda v: str(v),
)
def test_apply_voi_matches_the_dicom_formulas(
    function: str, center: float, width: float, x: float, expected: float
) -> None:
    assert apply_voi(x, center, width, function) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("function", "width"),
    [("LINEAR", 20), ("LINEAR_EXACT", 20), ("SIGMOID", 20)],
    ids=["linear", "linear-exact", "sigmoid"],
)
def test_apply_voi_scales_to_the_output_range(function: str, width: float) -> None:
    x = np.linspace(50, 150, 41)
    unit = apply_voi(x, 100, width, function)
    scaled = apply_voi(x, 100, width, function, y_min=10.0, y_max=255.0)
    np.testing.assert_allclose(scaled, unit * 245.0 + 10.0, atol=1e-9)


@pytest.mark.parametrize(
    ("function", "center", "width"),
    [
        ("LINEAR", 100, 0.99),
        ("LINEAR", 100, float("nan")),
        ("LINEAR_EXACT", 100, 0),
        ("SIGMOID", 100, -5),
        ("SIGMOID", float("nan"), 50),
        ("GAMMA", 100, 50),
    ],
    ids=[
        "linear-width-below-1",
        "linear-width-nan",
        "linear-exact-width-0",
        "sigmoid-negative-width",
        "center-nan",
        "unknown-function",
    ],
)
def test_apply_voi_refuses_windows_outside_the_formulas(
    function: str, center: float, width: float
) -> None:
    with pytest.raises(InvalidWindowError):
        apply_voi(np.arange(5.0), center, width, function)


def _float_pipeline(
    header: DicomHeader, window: Window | None, value_range: tuple[int, int], out_max: int
) -> npt.NDArray[np.float64]:
    """The chain written out per pixel with float formulas, independently of build_lut."""
    top = (1 << header.bits_stored) - 1
    x = np.minimum(EVERY_STORED_VALUE.astype(np.float64), top)
    x = x * header.rescale_slope + header.rescale_intercept
    if window is None:
        ends = [min(v, top) * header.rescale_slope + header.rescale_intercept for v in value_range]
        y = (x - min(ends)) / (max(ends) - min(ends))
    else:
        y = apply_voi(x, window.center, window.width, window.function)
    if header.photometric == "MONOCHROME1":
        y = 1.0 - y
    return np.clip(np.floor(y * out_max + 0.5), 0, out_max)


@pytest.mark.parametrize("out_max", [255, 65535], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize(
    ("function", "centers", "widths"),
    [
        (None, (1800.0,), (2000.0,)),  # absent function means LINEAR
        ("LINEAR", (1800.0, 900.0), (2001.0, 300.0)),
        ("LINEAR_EXACT", (2047.5,), (1500.0,)),
        ("SIGMOID", (2100.0, 1500.0, 2500.0), (1300.0, 800.0, 900.0)),
        (None, (), ()),  # no window: min-max
    ],
    ids=["absent", "linear", "linear-exact", "sigmoid", "no-window"],
)
def test_lut_equals_the_float_formulas_on_every_stored_value(
    function: str | None,
    centers: tuple[float, ...],
    widths: tuple[float, ...],
    photometric: str,
    out_max: int,
) -> None:
    header = replace(
        HEADER,
        photometric=photometric,
        rescale_slope=1.5,
        rescale_intercept=-100.0,
        window_centers=centers,
        window_widths=widths,
        voi_lut_function=function,
    )
    value_range = (37, 60000)  # values above BitsStored (4095) are clamped
    lut = build_lut(
        header, window_index=0, out_max=out_max, value_range=value_range, min_spread=0.05
    )
    expected_window = (
        Window(centers[0], widths[0], VoiFunction(function or "LINEAR")) if centers else None
    )
    assert lut.window == expected_window and not lut.fallback
    assert lut.table.dtype == (np.uint8 if out_max == 255 else np.uint16)
    assert lut.table.shape == (1 << 16,)
    expected = _float_pipeline(header, expected_window, value_range, out_max)
    np.testing.assert_array_equal(lut.table[EVERY_STORED_VALUE], expected)


def test_min_max_spans_the_full_output_range_and_clamps_above_bits_stored() -> None:
    lut = build_lut(HEADER, window_index=0, out_max=255, value_range=(95, 9000), min_spread=0.05)
    assert lut.window is None and not lut.fallback
    assert (lut.table[95], lut.table[4095], lut.table[9000], lut.table[65535]) == (0, 255, 255, 255)
    assert lut.table[2095] == 128  # (2095 - 95) / (4095 - 95) * 255 = 127.5 rounds half up


def test_multi_valued_window_uses_the_first_pair_unless_told_otherwise() -> None:
    header = replace(HEADER, window_centers=(1000.0, 3000.0), window_widths=(500.0, 500.0))
    assert select_window(header, 0) == Window(1000.0, 500.0, VoiFunction.LINEAR)
    assert select_window(header, 1) == Window(3000.0, 500.0, VoiFunction.LINEAR)
    assert select_window(header, 2) is None
    assert select_window(header, None) is None
    first = build_lut(header, window_index=0, out_max=255, value_range=(0, 4095), min_spread=0.05)
    assert first.table[1000] == 128 and first.table[3000] == 255


@pytest.mark.parametrize(
    ("centers", "widths", "function"),
    [
        ((3000.0,), (1000.0,), None),  # an 8-bit image with a window meant for 12 bits
        ((100.0,), (0.5,), "LINEAR"),  # invalid width
        ((100.0,), (50.0,), "GAMMA"),  # unknown function
    ],
    ids=["window-misses-the-image", "invalid-width", "unknown-function"],
)
def test_unusable_window_falls_back_to_min_max(
    centers: tuple[float, ...], widths: tuple[float, ...], function: str | None
) -> None:
    header = replace(
        HEADER, window_centers=centers, window_widths=widths, voi_lut_function=function
    )
    lut = build_lut(header, window_index=0, out_max=255, value_range=(3, 250), min_spread=0.05)
    assert lut.fallback and lut.window is None
    assert (lut.table[3], lut.table[250]) == (0, 255)


@pytest.mark.parametrize(
    ("min_spread", "fallback"), [(0.05, True), (0.02, False)], ids=["below", "above"]
)
def test_near_constant_means_a_spread_below_min_spread(min_spread: float, fallback: bool) -> None:
    # LINEAR_EXACT c=2048, w=4096 over stored 0..100 spans 100 / 4096 = 0.024 of full scale
    header = replace(
        HEADER,
        window_centers=(2048.0,),
        window_widths=(4096.0,),
        voi_lut_function="LINEAR_EXACT",
    )
    lut = build_lut(
        header, window_index=0, out_max=255, value_range=(0, 100), min_spread=min_spread
    )
    assert lut.fallback is fallback
    assert lut.table[100] == (255 if fallback else 6)  # ((100 - 2048) / 4096 + 0.5) * 255 = 6.2


def test_window_index_none_always_uses_min_max_without_fallback() -> None:
    header = replace(HEADER, window_centers=(2000.0,), window_widths=(1000.0,))
    lut = build_lut(header, window_index=None, out_max=255, value_range=(0, 4095), min_spread=0.05)
    assert lut.window is None and not lut.fallback
    assert (lut.table[0], lut.table[4095]) == (0, 255)


def test_constant_value_range_is_refused() -> None:
    with pytest.raises(ValueError, match="constant"):
        build_lut(HEADER, window_index=0, out_max=255, value_range=(5000, 6000), min_spread=0.05)


# --- LUT sequences and Presentation LUT Shape, against pydicom on the same dataset ------------

STORED_12 = np.arange(1 << 12)  # every 12-bit stored value


def _curve(first: int, entries: int, bits: int, power: float = 0.6) -> Lut:
    """A monotone LUT from 0 up to 2**bits - 1 over ``entries`` inputs from ``first``."""
    ramp = np.linspace(0.0, 1.0, entries) ** power * ((1 << bits) - 1)
    return Lut(first_mapped=first, bits=bits, data=tuple(int(v) for v in np.round(ramp)))


def _lut_file(edit: dict[str, Any] | None = None, **spec: Any) -> tuple[DicomHeader, Dataset]:
    """A 12-bit synthetic file, its attributes ``edit`` set after encoding: our header from
    read_header, and pydicom's Dataset of the same bytes."""
    spec.setdefault("photometric", "MONOCHROME2")
    data = encode_dicom(base_image(), DicomSpec(ExplicitVRLittleEndian, bits_stored=12, **spec))
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in (edit or {}).items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    header, _ = read_header(buffer.getvalue(), 10**9)
    return header, pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _pydicom_levels(ds: Dataset, out_max: int, bits: int, index: int = 0) -> Any:
    """pydicom's Modality LUT -> VOI LUT -> Presentation LUT (Shape) on every stored value,
    scaled by the VOI LUT's 2**bits - 1 and quantized like build_lut. pydicom ignores the
    Photometric Interpretation: MONOCHROME1 inverts here unless INVERSE already did."""
    values = np.asarray(apply_modality_lut(STORED_12, ds)).astype(np.int64)  # integral here
    voi = apply_voi_lut(values, ds, index=index)
    y = apply_presentation_lut(voi, ds) / ((1 << bits) - 1)
    if (
        ds.PhotometricInterpretation == "MONOCHROME1"
        and ds.get("PresentationLUTShape") != "INVERSE"
    ):
        y = 1.0 - y
    return np.clip(np.floor(y * out_max + 0.5), 0, out_max)


@pytest.mark.parametrize("out_max", [255, 65535], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize(
    ("spec", "index", "bits"),
    [
        ({"voi_luts": (_curve(500, 3000, 16),)}, 0, 16),
        ({"voi_luts": (_curve(0, 4096, 12, 0.5),), "lut_data_vr": "OW"}, 0, 12),
        ({"voi_luts": (_curve(500, 3000, 16),), "photometric": "MONOCHROME1"}, 0, 16),
        ({"voi_luts": (_curve(500, 3000, 16),), "presentation_lut_shape": "INVERSE"}, 0, 16),
        (
            {
                "voi_luts": (_curve(500, 3000, 16),),
                "photometric": "MONOCHROME1",
                "presentation_lut_shape": "INVERSE",
            },
            0,
            16,
        ),
        ({"voi_luts": (_curve(0, 4096, 16), _curve(1000, 2000, 16, 1.5))}, 1, 16),
        (
            {
                "modality_lut": Lut(100, 16, tuple(4 * i + 7 for i in range(3000))),
                "voi_luts": (_curve(1000, 8000, 16),),
            },
            0,
            16,
        ),
    ],
    ids=[
        "voi-lut-part-of-the-range",
        "voi-lut-ow-bytes-12-bit-entries",
        "voi-lut-monochrome1",
        "voi-lut-presentation-inverse",
        "voi-lut-monochrome1-and-inverse-invert-once",
        "second-voi-lut-item-by-window-index",
        "modality-lut-then-voi-lut",
    ],
)
def test_lut_sequences_match_pydicom_on_every_stored_value(
    spec: dict[str, Any], index: int, bits: int, out_max: int
) -> None:
    header, ds = _lut_file(**spec)
    lut = build_lut(
        header, window_index=index, out_max=out_max, value_range=(0, 4095), min_spread=0.05
    )
    assert lut.voi_path == VoiPath.VOI_LUT_SEQUENCE and lut.window is None and not lut.fallback
    has_modality_lut = "modality_lut" in spec
    assert lut.modality_path == (
        ModalityPath.MODALITY_LUT_SEQUENCE if has_modality_lut else ModalityPath.RESCALE
    )
    assert lut.inverted == (
        spec.get("photometric") == "MONOCHROME1" or "presentation_lut_shape" in spec
    )
    expected = _pydicom_levels(ds, out_max, bits, index)
    np.testing.assert_array_equal(lut.table[STORED_12], expected)


def test_modality_lut_sequence_replaces_the_rescale_as_in_pydicom() -> None:
    table = Lut(first_mapped=200, bits=16, data=tuple(3 * i + 50 for i in range(3500)))
    header, ds = _lut_file(
        {"RescaleSlope": 2, "RescaleIntercept": -10},  # present as well: the sequence wins
        modality_lut=table,
        window_centers=(4000.0,),
        window_widths=(6000.0,),
    )
    assert (header.rescale_slope, header.rescale_intercept) == (2.0, -10.0)
    reference = apply_modality_lut(STORED_12, ds)  # below 200 -> first, past 3699 -> last
    np.testing.assert_array_equal(modality(STORED_12, header), reference)
    assert (reference[0], reference[4095]) == (50, 3 * 3499 + 50)
    lut = build_lut(header, window_index=0, out_max=255, value_range=(0, 4095), min_spread=0.05)
    assert (lut.modality_path, lut.voi_path) == (ModalityPath.MODALITY_LUT_SEQUENCE, VoiPath.WINDOW)
    y = apply_voi(reference, 4000.0, 6000.0, VoiFunction.LINEAR)
    np.testing.assert_array_equal(lut.table[STORED_12], np.floor(y * 255 + 0.5))


def test_eight_bit_voi_lut_clamps_past_its_last_entry() -> None:
    # pydicom 3.0 indexes an 8-bit LUT with uint8 offsets, which wrap past 255 entries;
    # PS3.3 C.11.2.1.1 (and this pipeline) map every input past the last to the last entry.
    table = _curve(first=1000, entries=200, bits=8)
    header, _ = _lut_file(voi_luts=(table,))
    lut = build_lut(header, window_index=0, out_max=255, value_range=(0, 4095), min_spread=0.05)
    index = np.clip(STORED_12 - 1000, 0, 199)
    expected = np.floor(np.asarray(table.data)[index] / 255 * 255 + 0.5)
    np.testing.assert_array_equal(lut.table[STORED_12], expected)
    assert (lut.table[0], lut.table[999], lut.table[1199], lut.table[4095]) == (0, 0, 255, 255)


def test_a_window_takes_precedence_over_the_voi_lut_sequence() -> None:
    window = {"window_centers": (2000.0,), "window_widths": (3000.0,)}
    header, _ = _lut_file(voi_luts=(_curve(0, 4096, 16),), **window)
    plain, _ = _lut_file(**window)
    both = build_lut(header, window_index=0, out_max=255, value_range=(0, 4095), min_spread=0.05)
    only = build_lut(plain, window_index=0, out_max=255, value_range=(0, 4095), min_spread=0.05)
    assert both.voi_path == VoiPath.WINDOW and both.window == Window(
        2000.0, 3000.0, VoiFunction.LINEAR
    )
    np.testing.assert_array_equal(both.table, only.table)


@pytest.mark.parametrize(
    "spec",
    [
        {"voi_luts": (Lut(0, 16, tuple([0, 1] * 2048)),)},  # spans 1 / 65535 of full scale
        {"window_centers": (2000.0,), "window_widths": (0.5,), "voi_luts": (_curve(0, 4096, 16),)},
    ],
    ids=["voi-lut-near-constant", "invalid-window-does-not-fall-through-to-the-lut"],
)
def test_unusable_voi_falls_back_to_min_max(spec: dict[str, Any]) -> None:
    header, _ = _lut_file(**spec)
    lut = build_lut(header, window_index=0, out_max=255, value_range=(3, 250), min_spread=0.05)
    assert lut.voi_path == VoiPath.MIN_MAX_FALLBACK and lut.fallback and lut.window is None
    assert (lut.table[3], lut.table[250]) == (0, 255)


def test_malformed_voi_header_falls_back_and_window_index_none_stays_min_max() -> None:
    header = replace(HEADER, window_centers=(), window_widths=(), voi_malformed=True)
    lut = build_lut(header, window_index=0, out_max=255, value_range=(0, 4095), min_spread=0.05)
    assert (lut.voi_path, lut.fallback) == (VoiPath.MIN_MAX_FALLBACK, True)
    lut = build_lut(header, window_index=None, out_max=255, value_range=(0, 4095), min_spread=0.05)
    assert (lut.voi_path, lut.fallback) == (VoiPath.MIN_MAX, False)
    plain = build_lut(HEADER, window_index=0, out_max=255, value_range=(0, 4095), min_spread=0.05)
    assert (plain.voi_path, plain.modality_path, plain.inverted) == (
        VoiPath.MIN_MAX,
        ModalityPath.RESCALE,
        False,
    )
