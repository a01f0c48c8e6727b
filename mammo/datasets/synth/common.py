"""What every synthetic layout shares: the planted truth, breast pixels with a lesion at a
known place, and DICOM bytes with the attributes a layout needs.

The breast is mammo.synth.phantom's, drawn without its own lesions; a planted lesion is a
soft disc (malignant: brighter, with spicules; benign: fainter, smooth) whose circle is
what the label files then describe, so a model can learn it and a test knows its box.
The chest wall is on the image's left for a left breast (L), as displayed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from mammo.synth.dicom_writer import DicomSpec, encode_dicom
from mammo.synth.phantom import render

FloatImage = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), pixels, top-left origin


@dataclass(frozen=True)
class PlantedImage:
    image_id: str  # namespaced, as the adapter must report it
    patient_id: str
    laterality: str
    view: str
    cancer: int | None
    cancer_source: str
    path: str  # relative to the root


@dataclass(frozen=True)
class PlantedFinding:
    image_id: str
    category: str
    box: Box | None  # None: the labels give no place
    mask_path: str = ""


@dataclass
class Planted:
    """The truth a writer planted: images, findings and bad inputs (source -> reason)."""

    dataset: str
    images: list[PlantedImage] = field(default_factory=list)
    findings: list[PlantedFinding] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float  # top-left origin
    r: float

    @property
    def box(self) -> Box:
        return (self.cx - self.r, self.cy - self.r, self.cx + self.r, self.cy + self.r)


def lesion_site(rng: np.random.Generator, rows: int, cols: int, laterality: str) -> Circle:
    """A circle well inside the breast: a fifth to a third of the width from the chest wall."""
    depth = rng.uniform(0.22, 0.34) * cols
    cx = depth if laterality == "L" else cols - 1 - depth
    return Circle(round(cx), round(rng.uniform(0.42, 0.58) * rows), round(0.07 * cols) + 2)


def breast(
    rng: np.random.Generator,
    rows: int,
    cols: int,
    *,
    laterality: str,
    view: str,
    lesions: tuple[tuple[Circle, bool], ...] = (),
    density: str | None = None,
) -> FloatImage:
    """(rows, cols) intensities in [0, 1]; each (circle, malignant) lesion stamped in."""
    img = render(
        rng,
        rows,
        cols,
        view=view if view in ("CC", "MLO", "ML") else "MLO",
        density=density,
        cancer=False,
        faces_right=laterality == "L",
        oddity_rate=0.0,
    ).image.copy()
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)  # (rows, cols) each
    for circle, malignant in lesions:
        dist = np.hypot(xx - circle.cx, yy - circle.cy)
        disc = np.clip(circle.r * 0.85 - dist + 0.5, 0, 1)
        if malignant:
            theta = np.arctan2(yy - circle.cy, xx - circle.cx)
            spikes = (np.cos(7 * theta) > 0.8) & (dist < circle.r)
            disc = np.maximum(disc, 0.7 * spikes)
        img += np.float32(0.45 if malignant else 0.2) * disc.astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def to_uint8(img: FloatImage) -> npt.NDArray[np.uint8]:
    return np.asarray(np.rint(img * 255.0), np.uint8)


def to_bits(img: FloatImage, bits: int, monochrome1: bool = False) -> npt.NDArray[np.uint16]:
    top = float(2**bits - 1)
    values = (1.0 - img) if monochrome1 else img
    return np.asarray(np.rint(values * top), np.uint16)


def circle_points(circle: Circle, n: int = 12) -> list[tuple[float, float]]:
    """``n`` points on the circle, as an annotation polygon."""
    return [
        (
            round(circle.cx + circle.r * math.cos(2 * math.pi * k / n), 2),
            round(circle.cy + circle.r * math.sin(2 * math.pi * k / n), 2),
        )
        for k in range(n)
    ]


def polygon_box(points: list[tuple[float, float]]) -> Box:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def dicom_bytes(
    pixels: npt.NDArray[np.uint16],
    *,
    bits: int,
    photometric: str = "MONOCHROME2",
    windows: tuple[tuple[float, ...], tuple[float, ...]] = ((), ()),
    uid_seed: int = 0,
    set_attrs: dict[str, object] | None = None,
    drop: tuple[str, ...] = (),
) -> bytes:
    """Uncompressed DICOM bytes (mammo.synth.dicom_writer), then ``set_attrs`` set and the
    ``drop`` keywords removed (a layout's own attributes: UIDs, Manufacturer, View Code
    Sequence, PixelPaddingValue...)."""
    spec = DicomSpec(
        transfer_syntax=ExplicitVRLittleEndian,
        photometric=photometric,
        bits_stored=bits,
        window_centers=windows[0],
        window_widths=windows[1],
        uid_seed=uid_seed,
    )
    ds = pydicom.dcmread(io.BytesIO(encode_dicom(pixels, spec)))
    for keyword, value in (set_attrs or {}).items():
        setattr(ds, keyword, value)
    if "PixelPaddingValue" in ds:  # US or SS: unsigned, as PixelRepresentation 0 says
        ds["PixelPaddingValue"].VR = "US"
    for keyword in drop:
        if keyword in ds:
            delattr(ds, keyword)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def view_code_item(view: str) -> Dataset:
    """One View Code Sequence (0054,0220) item: SNOMED CT 399162004 CC, 399368009 MLO."""
    item = Dataset()
    item.CodeValue = {"CC": "399162004", "MLO": "399368009"}[view]
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = {"CC": "cranio-caudal", "MLO": "medio-lateral oblique"}[view]
    return item


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def truncated(data: bytes, keep: int = 200) -> bytes:
    """The first ``keep`` bytes: a file cut inside its header."""
    return data[:keep]


def hex_id(rng: np.random.Generator, digits: int = 32) -> str:
    return "".join(f"{int(v):x}" for v in rng.integers(0, 16, digits))
