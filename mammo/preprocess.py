"""From the bytes of one DICOM file to a normalized, cropped, oriented, fixed-size PNG.

Two layers (the ingest adapter adds the third, the loop over a shard):

- :func:`normalize`, the pure per-image function, in this fixed order:
  VOI LUT (one table: clamp, Modality LUT (sequence or rescale), window, VOI LUT
  Sequence or min-max, MONOCHROME1 / INVERSE inversion, quantization) -> crop to the
  breast -> flip so the chest wall is on ``cfg.breast_side`` -> resize keeping the aspect
  ratio and pad to (out_rows, out_cols).
- :func:`decode_and_preprocess`, the per-record function: read_header (structural
  checks, before any decoding) -> decode (a JPEG 2000 image only as finely as the output
  needs, :mod:`mammo.reduction`; else decode_pixels) -> normalize -> encode_png.

Every refusal is a :class:`~mammo.errors.MammoInputError` carrying a quarantine reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast

import cv2
import numpy as np

from mammo.contract import ModalityPath, QuarantineReason, VoiPath
from mammo.decoders import StoredPixels, decode_pixels, fast_order, list_decoders
from mammo.dicom import DicomHeader, read_header
from mammo.errors import MammoInputError
from mammo.geometry import (
    Box,
    Image,
    box_from_preview,
    faces_right,
    preview_step,
    resize_and_pad,
)
from mammo.png import encode_png
from mammo.reduction import FAST_DECODER, JPEG2000_SYNTAXES, decode_for_output
from mammo.window import Window, build_lut


@dataclass(frozen=True)
class PreprocessConfig:
    """What to compute for every image; saved with every output (preprocess.json).

    crop_threshold is a fraction of full scale of the windowed image; crop_min_fraction
    the smallest share of the frame a breast may cover; crop_margin a fraction of the
    image height/width added around the breast box. window_index picks the Window
    Center/Width pair (None: always min-max); a window whose output spans less than
    window_min_spread of full scale over the image falls back to min-max. max_pixels
    refuses declared Rows * Columns * frames above it, before decoding. decode "exact" (the
    default) decodes every image at full resolution; "fast" decodes a JPEG 2000 image only as
    finely as the output needs (:mod:`mammo.reduction`, about 4x faster, not within the
    fidelity bound of docs/decoding.md). An exact config is saved as before the choice
    existed, so old outputs keep their hash.
    """

    out_rows: int = 1024
    out_cols: int = 512
    bit_depth: Literal[8, 16] = 8
    window_index: int | None = 0
    window_min_spread: float = 0.05
    crop_threshold: float = 0.04
    crop_min_fraction: float = 0.01
    crop_margin: float = 0.01
    breast_side: Literal["left", "right"] = "left"
    png_compression: int = 1
    decoders: tuple[str, ...] = ("dicomsdl", "pydicom")
    max_pixels: int = 50_000_000
    decode: Literal["fast", "exact"] = "exact"

    def __post_init__(self) -> None:
        problems = []
        if self.out_rows < 1 or self.out_cols < 1:
            problems.append(f"output size {self.out_rows} x {self.out_cols}")
        if self.bit_depth not in (8, 16):
            problems.append(f"bit_depth {self.bit_depth} (8 or 16)")
        if self.window_index is not None and self.window_index < 0:
            problems.append(f"window_index {self.window_index}")
        for name in ("window_min_spread", "crop_threshold", "crop_min_fraction", "crop_margin"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} {getattr(self, name)} (0 <= x < 1)")
        if self.breast_side not in ("left", "right"):
            problems.append(f"breast_side {self.breast_side!r} (left or right)")
        if not 0 <= self.png_compression <= 9:
            problems.append(f"png_compression {self.png_compression} (0..9)")
        unknown = [name for name in self.decoders if name not in list_decoders()]
        if not self.decoders or unknown:
            problems.append(f"decoders {self.decoders} (known: {list_decoders()})")
        if self.max_pixels < 1:
            problems.append(f"max_pixels {self.max_pixels}")
        if self.decode not in ("fast", "exact"):
            problems.append(f"decode {self.decode!r} (fast or exact)")
        if problems:
            raise ValueError("invalid PreprocessConfig: " + "; ".join(problems))

    @property
    def out_max(self) -> int:
        return (1 << self.bit_depth) - 1

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces; the input of :meth:`config_hash`. An exact
        decode is written as before the choice existed, so old outputs keep their hash."""
        values = asdict(self)
        if values["decode"] == "exact":
            del values["decode"]
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PreprocessConfig:
        values: dict[str, Any] = json.loads(text)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown PreprocessConfig fields: {sorted(unknown)}")
        if "decoders" in values:
            values["decoders"] = tuple(values["decoders"])
        return cls(**values)

    def config_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NormalizedImage:
    """The output of :func:`normalize`: pixels plus what was decided on the way."""

    pixels: Image  # (out_rows, out_cols) uint8 or uint16
    window: Window | None  # the window applied; None for a VOI LUT or min-max scaling
    window_fallback: bool
    modality_path: ModalityPath
    voi_path: VoiPath
    inverted: bool  # MONOCHROME1 or Presentation LUT Shape INVERSE
    crop_box: Box  # (y0, x0, y1, x1) in source pixels
    crop_fallback: bool
    flipped: bool
    pixel_mean: float  # of the output, in [0, 1] units (padding included)
    pixel_std: float


@dataclass(frozen=True)
class ProcessedImage:
    """One decoded, normalized image and its PNG; what ingest stores per record."""

    pixels: Image
    png: bytes
    header: DicomHeader
    decoder: str
    reduction: int  # JPEG 2000 levels not decoded: the image was read at 1 / 2**reduction
    window: Window | None
    window_fallback: bool
    modality_path: ModalityPath
    voi_path: VoiPath
    inverted: bool
    crop_box: Box
    crop_fallback: bool
    flipped: bool
    pixel_mean: float
    pixel_std: float


def normalize(
    stored: StoredPixels, header: DicomHeader, cfg: PreprocessConfig, reduction: int = 0
) -> NormalizedImage:
    """(H, W) uint16 stored values -> (out_rows, out_cols) image of cfg.bit_depth bits.

    Order: VOI LUT -> crop -> flip -> resize/pad (see the module docstring). The crop
    box and the flip are decided on the windowed image. Two shortcuts give the same
    result for less work: the LUT is applied to a strided preview (to find the box) and
    then to the crop's rows only, as it acts pixel by pixel; the flip is applied to the small
    resized image, as area resampling is mirror-symmetric. ``stored`` may be the image at
    1 / 2**reduction (:mod:`mammo.reduction`): the box is then found on the grid and with the
    margins of the full image, and returned in ``stored``'s pixels. Raises MammoInputError
    (BLANK_IMAGE) when the stored values are constant after clamping to BitsStored.
    """
    top = (1 << header.bits_stored) - 1
    low, high, _, _ = cv2.minMaxLoc(stored)
    if min(int(low), top) >= min(int(high), top):
        raise MammoInputError(
            QuarantineReason.BLANK_IMAGE, f"every stored value is {min(int(low), top)}"
        )
    lut = build_lut(
        header,
        window_index=cfg.window_index,
        out_max=cfg.out_max,
        value_range=(int(low), int(high)),
        min_spread=cfg.window_min_spread,
    )
    # the breast box in source pixels, on the exact path's preview grid and margins
    scale = 1 << reduction
    source = (header.rows, header.cols) if reduction else stored.shape
    step = preview_step(source)
    if reduction:  # the exact path's samples, at their place in the reduced image
        at = np.ix_(np.arange(0, source[0], step) // scale, np.arange(0, source[1], step) // scale)
        preview = lut.table[stored[at]]
    else:
        preview = lut.table[stored[::step, ::step]]  # (H/step, W/step) windowed
    found, crop_fallback = box_from_preview(
        preview,
        step,
        source,
        cfg.crop_threshold,
        cfg.crop_min_fraction,
        cfg.crop_margin,
    )
    # in ``stored``'s pixels, each edge to the nearest: the crop keeps the exact path's size
    y0, x0, y1, x1 = ((edge + scale // 2) // scale for edge in found)
    box = (y0, x0, min(y1, stored.shape[0]), min(x1, stored.shape[1]))
    # whole rows are contiguous: cv2.LUT is much faster on them than on a column range
    rows = cast(Image, cv2.LUT(stored[y0:y1], lut.table))  # uint16 -> uint8/uint16
    crop = rows[:, x0:x1]
    chest_wall: Literal["left", "right"] = "right" if faces_right(crop) else "left"
    pixels = resize_and_pad(crop, cfg.out_rows, cfg.out_cols, chest_wall=chest_wall)
    flipped = chest_wall != cfg.breast_side
    if flipped:
        pixels = cast(Image, cv2.flip(pixels, 1))  # mirror left-right
    mean, std = cv2.meanStdDev(pixels)
    return NormalizedImage(
        pixels=pixels,
        window=lut.window,
        window_fallback=lut.fallback,
        modality_path=lut.modality_path,
        voi_path=lut.voi_path,
        inverted=lut.inverted,
        crop_box=box,
        crop_fallback=crop_fallback,
        flipped=flipped,
        pixel_mean=float(mean[0, 0]) / cfg.out_max,
        pixel_std=float(std[0, 0]) / cfg.out_max,
    )


def decode_and_preprocess(data: bytes, cfg: PreprocessConfig) -> ProcessedImage:
    """The bytes of one DICOM file -> its normalized image and PNG.

    read_header (every structural check, before decoding) -> with decode "fast", a JPEG 2000
    image at the coarsest resolution its output allows (:func:`decode_for_output`), else and
    whenever that fails, decode_pixels (decoders in cfg.decoders order, with "fast" the
    bit-exact JPEG Lossless decoder first: :func:`mammo.decoders.fast_order`) -> normalize ->
    encode_png. Raises MammoInputError with the quarantine reason when the file cannot be used.
    """
    header, ds = read_header(data, cfg.max_pixels)
    reduced = None
    if cfg.decode == "fast" and header.transfer_syntax in JPEG2000_SYNTAXES:
        try:
            reduced = decode_for_output(ds, header, cfg)
        except Exception:  # noqa: BLE001 - any failure here is retried by the full decode
            reduced = None
    image = None
    if reduced is not None:
        stored, decoder, reduction = reduced.stored, FAST_DECODER, reduced.reduction
        image = normalize(stored, header, cfg, reduction)
        if not _fills_output(image.crop_box, cfg):  # the thumbnail misjudged the breast
            image = None
    if image is None:
        order = fast_order(cfg.decoders) if cfg.decode == "fast" else cfg.decoders
        stored, decoder = decode_pixels(data, ds, header, order)
        reduction = 0
        image = normalize(stored, header, cfg)
    return ProcessedImage(
        pixels=image.pixels,
        png=encode_png(image.pixels, cfg.png_compression),
        header=header,
        decoder=decoder,
        reduction=reduction,
        window=image.window,
        window_fallback=image.window_fallback,
        modality_path=image.modality_path,
        voi_path=image.voi_path,
        inverted=image.inverted,
        crop_box=_source_box(image.crop_box, reduction, header),
        crop_fallback=image.crop_fallback,
        flipped=image.flipped,
        pixel_mean=image.pixel_mean,
        pixel_std=image.pixel_std,
    )


def _fills_output(box: Box, cfg: PreprocessConfig) -> bool:
    """Whether a crop fills the output without upsampling (by its rows or its columns)."""
    y0, x0, y1, x1 = box
    return y1 - y0 >= cfg.out_rows or x1 - x0 >= cfg.out_cols


def _source_box(box: Box, reduction: int, header: DicomHeader) -> Box:
    """A crop box found at 1 / 2**reduction, in source pixels."""
    scale = 1 << reduction
    y0, x0, y1, x1 = box
    return (y0 * scale, x0 * scale, min(header.rows, y1 * scale), min(header.cols, x1 * scale))
