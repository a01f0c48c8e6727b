"""decode = "fast": JPEG 2000 read only as finely as the output needs, against the exact path.

The fidelity bounds here are what this path measures on the phantom (docs/decoding.md), a few
dB under them; the issue's target (45 dB, 99.9% within 3/255) is not met, so "exact" stays
the default.
"""

from __future__ import annotations

import io
from dataclasses import replace

import imagecodecs
import numpy as np
import numpy.typing as npt
import pandas as pd
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLosslessSV1

from mammo import contract as c
from mammo.errors import MammoInputError
from mammo.inventory import ITEM_COLUMNS
from mammo.j2k import read_info
from mammo.preprocess import PreprocessConfig, ProcessedImage, decode_and_preprocess
from mammo.reduction import FAST_DECODER
from mammo.shards import process_shard
from mammo.synth.dicom_writer import DicomSpec, encode_dicom
from mammo.synth.phantom import display_window, render_breast, to_stored

FAST = PreprocessConfig(out_rows=512, out_cols=256, decode="fast")
EXACT = replace(FAST, decode="exact")


def mammogram(
    rows: int, cols: int, photometric: str = "MONOCHROME2", syntax: str = JPEG2000Lossless
) -> bytes:
    """A phantom breast as the synthetic archive writes it, 12-bit, with a window."""
    rng = np.random.default_rng(3)
    breast = render_breast(rng, rows, cols, view="CC", density="B", cancer=True, faces_right=False)
    centers, widths = display_window(breast, 12, photometric)
    spec = DicomSpec(
        transfer_syntax=syntax,
        photometric=photometric,
        bits_stored=12,
        window_centers=centers,
        window_widths=widths,
        voi_lut_function="LINEAR",
    )
    return encode_dicom(to_stored(breast, 12, photometric, rng), spec)


def recoded(data: bytes, **encode: object) -> bytes:
    """The same DICOM with its pixels in another JPEG 2000 codestream (imagecodecs)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    lossless = encode.get("reversible", True)
    codestream = imagecodecs.jpeg2k_encode(
        ds.pixel_array, bitspersample=12, numthreads=1, **({"level": 0} | encode)
    )
    ds.PixelData = encapsulate([bytes(codestream)])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless if lossless else JPEG2000
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def within(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], levels: int) -> float:
    """The share of in-breast pixels (non-zero in ``b``) that differ by at most ``levels``."""
    inside = b > 0
    return float(np.mean(np.abs(a.astype(int) - b.astype(int))[inside] <= levels))


def assert_identical(
    fast: ProcessedImage, exact: ProcessedImage, fast_decoder: str = "dicomsdl"
) -> None:
    assert fast.reduction == 0 and (fast.decoder, exact.decoder) == (fast_decoder, "dicomsdl")
    assert fast.png == exact.png and fast.crop_box == exact.crop_box


@pytest.fixture(scope="module")
def large() -> bytes:
    return mammogram(2048, 1664)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("lossy", [False, True], ids=["lossless", "lossy"])
def test_fast_reads_a_reduced_level_and_stays_close_to_the_exact_output(
    large: bytes, photometric: str, lossy: bool
) -> None:
    data = large if photometric == "MONOCHROME2" else mammogram(2048, 1664, photometric)
    if lossy:
        data = recoded(data, level=40, reversible=False, codecformat="J2K", resolutions=6)
    fast, exact = decode_and_preprocess(data, FAST), decode_and_preprocess(data, EXACT)
    assert (fast.decoder, fast.reduction) == (FAST_DECODER, 1)
    assert (exact.decoder, exact.reduction) == ("dicomsdl", 0)
    assert fast.pixels.shape == exact.pixels.shape == (512, 256)
    assert (fast.inverted, fast.flipped, fast.voi_path) == (
        exact.inverted,
        exact.flipped,
        exact.voi_path,
    )
    assert fast.window == exact.window
    # the box: the exact path's grid and margins, each edge to the nearest reduced pixel
    assert np.abs(np.subtract(fast.crop_box, exact.crop_box)).max() <= 1
    assert psnr(fast.pixels, exact.pixels) >= 44.0  # measured 45.2 (lossless), 46.7 (lossy)
    assert within(fast.pixels, exact.pixels, 3) >= 0.96  # measured 0.973, 0.982
    assert within(fast.pixels, exact.pixels, 30) == 1.0  # no misplaced structure


@pytest.mark.parametrize("out", [(512, 256), (400, 400), (256, 128)])
def test_the_reduced_crop_still_fills_the_output_without_upsampling(
    large: bytes, out: tuple[int, int]
) -> None:
    cfg = replace(FAST, out_rows=out[0], out_cols=out[1])
    image = decode_and_preprocess(large, cfg)
    y0, x0, y1, x1 = image.crop_box
    scale = 1 << image.reduction
    assert image.reduction >= 1
    assert (y1 - y0) // scale >= out[0] or (x1 - x0) // scale >= out[1]


def test_an_image_no_larger_than_its_output_is_decoded_in_full() -> None:
    data = mammogram(512, 416)
    assert_identical(decode_and_preprocess(data, FAST), decode_and_preprocess(data, EXACT))


def test_a_codestream_without_wavelet_levels_is_decoded_in_full(large: bytes) -> None:
    data = recoded(large, reversible=True, codecformat="J2K", resolutions=1)
    codestream = next(generate_frames(pydicom.dcmread(io.BytesIO(data)).PixelData))
    assert read_info(codestream).levels == 0
    assert_identical(decode_and_preprocess(data, FAST), decode_and_preprocess(data, EXACT))


def test_a_jp2_wrapped_codestream_falls_back_to_the_full_decode(large: bytes) -> None:
    data = recoded(large, reversible=True, codecformat="JP2", resolutions=6)
    assert_identical(decode_and_preprocess(data, FAST), decode_and_preprocess(data, EXACT))


def test_sv1_is_decoded_in_full_by_its_fastest_exact_decoder() -> None:
    data = mammogram(1024, 832, syntax=JPEGLosslessSV1)
    cfg = replace(FAST, out_rows=256, out_cols=128)
    assert_identical(
        decode_and_preprocess(data, cfg),
        decode_and_preprocess(data, replace(cfg, decode="exact")),
        fast_decoder="imagecodecs",
    )


def test_a_truncated_codestream_is_quarantined_as_the_exact_path_does(large: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(large))
    codestream = next(generate_frames(ds.PixelData))
    ds.PixelData = encapsulate([codestream[: len(codestream) * 3 // 4]])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    reasons = []
    for cfg in (FAST, EXACT):
        with pytest.raises(MammoInputError) as caught:
            decode_and_preprocess(buffer.getvalue(), cfg)
        reasons.append(caught.value.reason)
    assert reasons == [c.QuarantineReason.DECODE_FAILED] * 2


def test_each_row_records_its_decoder_and_reduction_and_safe_mode_decodes_in_full(
    large: bytes,
) -> None:
    item = {
        **dict.fromkeys(ITEM_COLUMNS),
        c.PATIENT_ID: 10,
        c.IMAGE_ID: 20,
        c.SOURCE_PATH: c.image_relpath(c.Subset.TRAIN, 10, 20),
        c.FINGERPRINT: "fp20",
    }
    items = pd.DataFrame([item], columns=list(ITEM_COLUMNS))
    written: dict[str, bytes] = {}
    normal = process_shard(items, lambda _: large, written.__setitem__, FAST)
    safe = process_shard(items, lambda _: large, written.__setitem__, FAST, decoders=("pydicom",))
    rows = normal.images.to_pylist() + safe.images.to_pylist()
    assert [(r["decoder"], r[c.REDUCTION]) for r in rows] == [(FAST_DECODER, 1), ("pydicom", 0)]
    assert rows[0][c.CONFIG_HASH] == rows[1][c.CONFIG_HASH] == FAST.config_hash()
