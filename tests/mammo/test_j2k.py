"""JPEG 2000 main-header reading and the reduced-resolution decode, against imagecodecs'
full decode of the same codestreams (OpenJPEG in both, so a full decode must be exact)."""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np
import numpy.typing as npt
import pytest

from mammo.j2k import (
    COD,
    SOT,
    CodestreamError,
    CodestreamInfo,
    choose_reduction,
    decode_reduced,
    read_info,
    reduced_size,
    safe_reductions,
)


def image(rows: int, cols: int, bits: int = 12, seed: int = 0) -> npt.NDArray[np.uint16]:
    """A smooth 'breast' with noise, within ``bits`` (uint8 up to 8 bits: imagecodecs writes
    a uint16 array as 16-bit samples whatever ``bitspersample`` says)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    smooth = (np.sin(x / 23.0) + np.cos(y / 17.0) + 2) / 4 * ((1 << bits) - 64)
    noisy = smooth + rng.integers(0, 50, (rows, cols))
    return np.clip(noisy, 0, (1 << bits) - 1).astype(np.uint8 if bits <= 8 else np.uint16)


def encode(pixels: npt.NDArray[np.integer], bits: int = 12, levels: int = 5) -> bytes:
    """Lossless J2K; OpenJPEG takes fewer levels than asked for on small images."""
    data: bytes = imagecodecs.jpeg2k_encode(
        pixels,
        level=0,
        codecformat="J2K",
        reversible=True,
        bitspersample=bits,
        resolutions=levels + 1,
        numthreads=1,
    )
    return data


def markers(codestream: bytes) -> list[tuple[int, int]]:
    """(marker, position) of each main-header segment."""
    found, pos = [], 2
    while True:
        marker, length = struct.unpack_from(">HH", codestream, pos)
        if marker == SOT:
            return found
        found.append((marker, pos))
        pos += 2 + length


@pytest.mark.parametrize(("bits", "levels"), [(12, 5), (16, 3), (8, 1)])
def test_the_header_gives_size_precision_and_levels(bits: int, levels: int) -> None:
    info = read_info(encode(image(320, 256, bits), bits, levels))
    assert info == CodestreamInfo(320, 256, 1, bits, False, levels)


def test_a_coc_of_component_zero_overrides_the_level_count() -> None:
    codestream = encode(image(64, 64))
    cod = dict(markers(codestream))[COD]
    length = struct.unpack_from(">H", codestream, cod + 2)[0]
    end = cod + 2 + length
    # COC: Lcoc = 9, Ccoc = 0, Scoc = 0, SPcoc = 2 levels, code block 4 x 4, style 0, 5/3
    coc = bytes.fromhex("FF53000900000202020001")
    assert read_info(codestream[:end] + coc + codestream[end:]).levels == 2


@pytest.mark.parametrize("bits", [12, 16, 8])
def test_no_reduction_is_the_exact_full_decode(bits: int) -> None:
    pixels = image(120, 88, bits, seed=bits)
    codestream = encode(pixels, bits)
    assert np.array_equal(decode_reduced(codestream, 0), imagecodecs.jpeg2k_decode(codestream))
    assert np.array_equal(decode_reduced(codestream, 0), pixels)


def test_a_reduction_of_one_is_the_half_size_image() -> None:
    pixels = image(256, 200)
    half = decode_reduced(encode(pixels), 1)
    assert half.shape == (128, 100) and half.dtype == np.uint16
    area = pixels.reshape(128, 2, 100, 2).mean(axis=(1, 3))  # the same image, area-resized
    difference = np.abs(half.astype(float) - area)
    assert difference.mean() < 0.01 * 4095, difference.mean()  # the wavelet's low-pass filter


@pytest.mark.parametrize(("rows", "cols"), [(509, 511), (513, 513), (510, 509), (512, 384)])
def test_every_safe_reduction_decodes_to_the_ceiling_size(rows: int, cols: int) -> None:
    codestream = encode(image(rows, cols))
    info = read_info(codestream)
    for r in safe_reductions(info):
        shape = decode_reduced(codestream, r).shape
        assert shape == (reduced_size(rows, r), reduced_size(cols, r))


def test_unsafe_reductions_are_refused_before_pillow_sees_them() -> None:
    codestream = encode(image(509, 511))
    # 509 mod 4 = 1: Pillow would make 128 rows of OpenJPEG's 127 at r = 2; r = 3 agrees again
    assert safe_reductions(read_info(codestream)) == [0, 1, 3, 4, 5]
    with pytest.raises(CodestreamError, match="not safe"):
        decode_reduced(codestream, 2)
    with pytest.raises(CodestreamError, match="not safe"):
        decode_reduced(encode(image(64, 64), levels=2), 3)  # above the level count


def test_the_reduction_never_makes_the_resize_an_upsampling() -> None:
    info = CodestreamInfo(3328, 2560, 1, 12, False, 5)
    assert choose_reduction(info, 2800, 1400, 1024, 512, limit=5) == 1  # 700 x 350 at r=2
    # a wide crop fills the output by its columns: 832 x 640 at r=2 reaches 512 columns
    assert choose_reduction(info, 3328, 2560, 1024, 512, limit=5) == 2
    assert choose_reduction(info, 3328, 2560, 512, 256, limit=5) == 3  # 416 x 320
    assert choose_reduction(info, 3328, 2560, 512, 256, limit=1) == 1
    assert choose_reduction(info, 1000, 500, 1024, 512, limit=5) == 0  # already too small
    for r in range(5):  # brute force: the chosen r is the largest with scale <= 1
        rows, cols = 2800 >> r, 1400 >> r
        scale = min(1024 / rows, 512 / cols)
        assert (scale <= 1) == (r <= choose_reduction(info, 2800, 1400, 1024, 512, limit=5))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not a codestream", "SOC"),
        (b"\xff\x4f\xff\x51\x00\x29\x00", "past the end"),
        (b"\xff\x4f\xff\x90\x00\x0a", "no rows or levels"),
    ],
)
def test_bytes_that_are_no_codestream_raise_one_clear_error(data: bytes, why: str) -> None:
    with pytest.raises(CodestreamError, match=why):
        read_info(data)


def test_the_codestream_of_a_synthetic_dicom_decodes_as_the_dicom_decoder_does() -> None:
    """Our JPEG 2000 DICOMs: the frame's codestream, unreduced, is the stored values."""
    import io

    from pydicom import dcmread
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEG2000Lossless

    from mammo.synth.dicom_writer import DicomSpec, encode_dicom

    pixels = image(384, 320)
    spec = DicomSpec(transfer_syntax=JPEG2000Lossless, photometric="MONOCHROME2", bits_stored=12)
    ds = dcmread(io.BytesIO(encode_dicom(pixels, spec)))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    info = read_info(frame)
    assert (info.rows, info.cols, info.precision) == (384, 320, 12)
    assert np.array_equal(decode_reduced(frame, 0), pixels)
    assert decode_reduced(frame, 1).shape == (192, 160)
