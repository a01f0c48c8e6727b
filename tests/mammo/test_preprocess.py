"""The per-image and per-record preprocessing (mammo.preprocess, mammo.png)."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1

from mammo.contract import QuarantineReason
from mammo.dicom import read_header
from mammo.errors import MammoInputError
from mammo.png import PngError, decode_png, encode_png
from mammo.preprocess import PreprocessConfig, decode_and_preprocess, normalize
from mammo.synth.dicom_writer import DicomSpec, encode_dicom
from mammo.synth.faults import FAULTS, base_image

SMALL = PreprocessConfig(out_rows=128, out_cols=64)


def _dicom(
    pixels: npt.NDArray[np.uint16], transfer_syntax: str = JPEG2000Lossless, **kw: Any
) -> bytes:
    kw.setdefault("photometric", "MONOCHROME2")
    kw.setdefault("bits_stored", 12)
    return encode_dicom(pixels, DicomSpec(transfer_syntax=transfer_syntax, **kw))


def _png_chunks(data: bytes) -> list[bytes]:
    names, offset = [], 8  # after the 8-byte signature
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        names.append(data[offset + 4 : offset + 8])
        offset += 12 + length  # length, type, data, CRC
    return names


def _chest_wall_mass(img: npt.NDArray[Any]) -> tuple[float, float]:
    half = img.shape[1] // 2
    return float(img[:, :half].sum()), float(img[:, half:].sum())


# --- PreprocessConfig -----------------------------------------------------------------------


def test_config_json_round_trip() -> None:
    cfg = PreprocessConfig(bit_depth=16, window_index=None, decoders=("pydicom",))
    text = cfg.to_json()
    assert PreprocessConfig.from_json(text) == cfg
    assert json.loads(text)["decoders"] == ["pydicom"]
    assert PreprocessConfig.from_json(text).config_hash() == cfg.config_hash()


def test_config_hash_is_stable_and_canonical() -> None:
    cfg = PreprocessConfig()
    assert cfg.config_hash() == PreprocessConfig().config_hash()
    assert len(cfg.config_hash()) == 16 and int(cfg.config_hash(), 16) >= 0
    reordered = json.dumps(dict(reversed(json.loads(cfg.to_json()).items())), indent=2)
    assert PreprocessConfig.from_json(reordered).config_hash() == cfg.config_hash()
    assert cfg.config_hash() == hashlib.sha256(cfg.to_json().encode()).hexdigest()[:16]


CHANGED = {
    "out_rows": 2048,
    "out_cols": 1024,
    "bit_depth": 16,
    "window_index": 1,
    "window_min_spread": 0.1,
    "crop_threshold": 0.1,
    "crop_min_fraction": 0.05,
    "crop_margin": 0.02,
    "breast_side": "right",
    "png_compression": 6,
    "decoders": ("pydicom", "dicomsdl"),
    "max_pixels": 1000,
    "decode": "fast",
}


def test_every_field_has_a_changed_value_below() -> None:
    assert set(CHANGED) == {f.name for f in fields(PreprocessConfig)}


@pytest.mark.parametrize(("name", "value"), CHANGED.items(), ids=list(CHANGED))
def test_config_hash_changes_with_every_field(name: str, value: Any) -> None:
    cfg = PreprocessConfig()
    changed = replace(cfg, **{name: value})
    assert changed.config_hash() != cfg.config_hash()
    assert PreprocessConfig.from_json(changed.to_json()) == changed


@pytest.mark.parametrize(
    "change",
    [
        {"bit_depth": 12},
        {"out_rows": 0},
        {"window_index": -1},
        {"crop_threshold": 1.5},
        {"breast_side": "top"},
        {"png_compression": 10},
        {"decoders": ()},
        {"decoders": ("gdcm",)},
        {"max_pixels": 0},
        {"decode": "half"},
    ],
    ids=[
        "12-bit-output",
        "zero-rows",
        "negative-window-index",
        "threshold-above-1",
        "breast-side-top",
        "png-level-10",
        "no-decoder",
        "unknown-decoder",
        "zero-max-pixels",
        "unknown-decode",
    ],
)
def test_invalid_config_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid PreprocessConfig"):
        PreprocessConfig(**change)


def test_an_exact_decode_config_is_saved_as_before_the_choice_existed() -> None:
    """Outputs built before ``decode`` existed keep their hash and read back as exact."""
    exact = PreprocessConfig()
    before = {f.name: getattr(exact, f.name) for f in fields(exact) if f.name != "decode"}
    old_json = json.dumps(
        {**before, "decoders": list(exact.decoders)}, sort_keys=True, separators=(",", ":")
    )
    assert exact.decode == "exact" and exact.to_json() == old_json
    assert PreprocessConfig.from_json(old_json) == exact
    fast = PreprocessConfig(decode="fast")
    assert '"decode":"fast"' in fast.to_json()
    assert PreprocessConfig.from_json(fast.to_json()) == fast


def test_from_json_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown PreprocessConfig fields: \\['gamma'\\]"):
        PreprocessConfig.from_json('{"gamma": 2.2}')


# --- decode_and_preprocess ------------------------------------------------------------------


@pytest.mark.parametrize("bits", [12, 16], ids=["12-bit", "16-bit"])
@pytest.mark.parametrize(
    "transfer_syntax",
    [JPEG2000Lossless, JPEGLosslessSV1, ExplicitVRLittleEndian],
    ids=["jpeg2000-lossless", "jpeg-lossless-sv1", "uncompressed"],
)
def test_output_is_the_same_whichever_decoder_goes_first(transfer_syntax: str, bits: int) -> None:
    data = _dicom(
        base_image(bits_stored=bits),
        transfer_syntax,
        bits_stored=bits,
        window_centers=(0.5 * (1 << bits), 0.6 * (1 << bits)),
        window_widths=(0.7 * (1 << bits), 0.5 * (1 << bits)),
        voi_lut_function="SIGMOID",
    )
    first = decode_and_preprocess(data, replace(SMALL, decoders=("dicomsdl", "pydicom")))
    second = decode_and_preprocess(data, replace(SMALL, decoders=("pydicom", "dicomsdl")))
    assert (first.decoder, second.decoder) == ("dicomsdl", "pydicom")
    np.testing.assert_array_equal(first.pixels, second.pixels)
    assert first.png == second.png
    assert replace(first, decoder="x") == replace(second, decoder="x", pixels=first.pixels)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_fast_decode_reads_sv1_with_imagecodecs_and_gives_the_exact_output(
    photometric: str,
) -> None:
    data = _dicom(
        base_image(bits_stored=14), JPEGLosslessSV1, bits_stored=14, photometric=photometric
    )
    fast = decode_and_preprocess(data, replace(SMALL, decode="fast"))
    exact = decode_and_preprocess(data, SMALL)
    safe = decode_and_preprocess(data, replace(SMALL, decoders=("pydicom",)))  # ingest safe mode
    assert (fast.decoder, exact.decoder, safe.decoder) == ("imagecodecs", "dicomsdl", "pydicom")
    assert fast.reduction == 0
    assert fast.png == exact.png
    assert replace(fast, decoder="x") == replace(exact, decoder="x", pixels=fast.pixels)


def test_monochrome1_and_monochrome2_of_the_same_anatomy_give_the_same_image() -> None:
    # min-max over 1000..3048: a range of 2048 keeps every division exact in float
    anatomy = np.clip(base_image(), 1000, 3048).astype(np.uint16)
    inverted = (4095 - anatomy).astype(np.uint16)
    mono2 = decode_and_preprocess(_dicom(anatomy, photometric="MONOCHROME2"), SMALL)
    mono1 = decode_and_preprocess(_dicom(inverted, photometric="MONOCHROME1"), SMALL)
    assert mono2.pixels.max() == 255 and mono2.pixels[0, -1] == 0  # dark background
    np.testing.assert_array_equal(mono1.pixels, mono2.pixels)
    assert (mono1.crop_box, mono1.flipped) == (mono2.crop_box, mono2.flipped)


@pytest.mark.parametrize("laterality", ["L", "R"])
@pytest.mark.parametrize("breast_on", ["left", "right"])
@pytest.mark.parametrize("breast_side", ["left", "right"])
def test_flip_follows_the_pixels_not_the_laterality_tag(
    laterality: str, breast_on: str, breast_side: str
) -> None:
    anatomy = base_image(128, 96)
    pixels = anatomy if breast_on == "left" else np.ascontiguousarray(anatomy[:, ::-1])
    data = _dicom(pixels, image_laterality=laterality)
    cfg = replace(SMALL, breast_side=breast_side)
    processed = decode_and_preprocess(data, cfg)
    assert processed.flipped is (breast_on != breast_side)
    left_mass, right_mass = _chest_wall_mass(processed.pixels)
    assert (left_mass > right_mass) is (breast_side == "left")


def test_breast_is_cropped_and_padded_away_from_the_chest_wall() -> None:
    anatomy = np.zeros((400, 300), np.uint16)
    anatomy[100:300, 0:100] = 3000  # a 200 x 100 "breast" in a mostly empty frame
    anatomy[150:250, 0:50] = 3500
    processed = decode_and_preprocess(_dicom(anatomy), replace(SMALL, crop_margin=0.0))
    y0, x0, y1, x1 = processed.crop_box
    assert not processed.crop_fallback and not processed.flipped
    assert 96 <= y0 <= 100 and x0 == 0 and 300 <= y1 <= 304 and 100 <= x1 <= 104
    # the ~208 x 104 crop fills the 128 x 64 output; uncropped, the breast would cover 1/6
    assert (processed.pixels > 0).mean() > 0.9
    assert processed.pixels[64, 10] == 255 and processed.pixels[64, 50] == 219  # 3500, 3000


@pytest.mark.parametrize("bit_depth", [8, 16], ids=["8-bit", "16-bit"])
def test_output_shape_dtype_png_and_statistics(bit_depth: int) -> None:
    cfg = replace(SMALL, bit_depth=bit_depth)
    data = _dicom(base_image(), JPEGLosslessSV1)
    processed = decode_and_preprocess(data, cfg)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    assert processed.pixels.shape == (128, 64) and processed.pixels.dtype == dtype
    assert processed.pixels.max() == (1 << bit_depth) - 1
    np.testing.assert_array_equal(decode_png(processed.png), processed.pixels)
    chunks = _png_chunks(processed.png)
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    assert set(chunks[1:-1]) == {b"IDAT"}  # no text, time or other metadata
    unit = processed.pixels / ((1 << bit_depth) - 1)
    assert processed.pixel_mean == pytest.approx(unit.mean(), abs=1e-9)
    assert processed.pixel_std == pytest.approx(unit.std(), abs=1e-9)
    assert processed.header == read_header(data, cfg.max_pixels)[0]


def test_eight_and_sixteen_bit_outputs_agree() -> None:
    data = _dicom(base_image())
    eight = decode_and_preprocess(data, SMALL).pixels.astype(np.float64) / 255
    sixteen = decode_and_preprocess(data, replace(SMALL, bit_depth=16)).pixels / 65535
    # 8-bit: quantized by the LUT, then averaged and rounded again by the resize
    assert np.abs(eight - sixteen).max() <= 1.5 / 255


def test_window_used_and_window_fallback_are_reported() -> None:
    data = _dicom(base_image(), window_centers=(2000.0,), window_widths=(3000.0,))
    windowed = decode_and_preprocess(data, SMALL)
    assert windowed.window is not None and windowed.window.center == 2000.0
    assert not windowed.window_fallback
    odd = decode_and_preprocess(FAULTS["eight_bit_range_with_12_bit_window"].make(), SMALL)
    assert odd.window is None and odd.window_fallback and odd.pixels.max() == 255


@pytest.mark.parametrize(
    "value", [0, 4095, 60000], ids=["all-zero", "all-max", "all-above-bits-stored"]
)
def test_constant_image_is_blank(value: int) -> None:
    data = _dicom(np.full((64, 48), value, np.uint16), ExplicitVRLittleEndian)
    header, _ = read_header(data, SMALL.max_pixels)
    stored = np.full((64, 48), value, np.uint16)
    with pytest.raises(MammoInputError) as caught:
        normalize(stored, header, SMALL)
    assert caught.value.reason == QuarantineReason.BLANK_IMAGE


def test_png_refuses_what_it_cannot_hold() -> None:
    with pytest.raises(PngError):
        encode_png(np.zeros((4, 4, 3), np.uint8), 1)
    with pytest.raises(PngError):
        encode_png(np.zeros((4, 4), np.float32), 1)
    with pytest.raises(PngError):
        decode_png(b"not a png")
