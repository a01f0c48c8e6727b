"""A mammogram phantom: a breast drawn as display intensities, then mapped to stored values.

``render_breast`` returns intensities in [0, 1] as a MONOCHROME2 display would show them
(dense tissue bright, background dark). Order of operations:
1. geometry and smooth tissue at a working resolution (half the frame or less, longest
   side <= WORK_MAX_SIDE):
   a half-ellipse against the chest wall with a wobbly outline, skin line, fibroglandular
   texture (smoothed noise, more of it for denser breasts), pectoral muscle on MLO-like
   views, an optional implant, background;
2. upsampled to (rows, cols) with cv2.resize;
3. lesions at full resolution for positives (a spiculated mass and/or a calcification
   cluster, mammo/synth/lesion.py), then rare oddities (bright stripes);
4. clipped to [0, 1] and mirrored when the breast faces left.
``to_stored`` then turns intensities into noisy stored values; ``display_window`` picks
Window Center/Width pairs that show the tissue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from mammo.contract import DENSITIES, View
from mammo.synth.lesion import EASY, Conspicuity, draw_lesions, matched_filter, stamp

FloatImage = npt.NDArray[np.float32]

WORK_MAX_SIDE: Final = 512
ODDITY_RATE: Final = 0.015  # per oddity (bright background, stripes), per image
MIN_WINDOW_WIDTH: Final = 750.0  # real SIGMOID files never have narrower windows
# Stored value = (OFFSET + SCALE * intensity + noise * N(0, 1)) * (2**BitsStored - 1), with
# noise = NOISE at FULL_FRAME_PIXELS, shrinking with sqrt(pixels) as in a downsampled image.
OFFSET, SCALE, NOISE = 0.02, 0.95, 0.003
FULL_FRAME_PIXELS: Final = 3328 * 2560
_PECTORAL_VIEWS: Final = frozenset({View.MLO, View.ML, View.LMO})
# Normal quantiles that leave ~15/35/55/75% of the tissue fibroglandular for A/B/C/D.
_FIBRO_THRESHOLD: Final = {"A": 1.04, "B": 0.39, "C": -0.13, "D": -0.67}
_WINDOW_FACTORS: Final = (1.0, 1.3, 0.8)  # widths of the 1st, 2nd, 3rd window pair


class PhantomError(ValueError):
    """Parameters no phantom can be drawn or stored with."""


@dataclass(frozen=True)
class _Breast:
    """Geometry at working resolution; ``rho`` < 1 inside the breast outline."""

    rho: FloatImage  # (h, w) normalized elliptic radius
    pectoral: FloatImage  # (h, w) soft mask of the pectoral muscle
    depth: float  # chest wall to nipple, working pixels


def render_breast(
    rng: np.random.Generator,
    rows: int,
    cols: int,
    *,
    view: str,
    density: str | None,
    cancer: bool,
    faces_right: bool,
    implant: bool = False,
    oddity_rate: float = ODDITY_RATE,
) -> FloatImage:
    """A (rows, cols) float32 breast image in [0, 1], chest wall on the left if faces_right.

    ``density`` is the BI-RADS density letter (A..D, or None for a random one); positives
    (``cancer``) carry a mass (5-9 % of the breast depth, spiculated) and/or a
    microcalcification cluster inside the breast (the easy lesions of mammo/synth/lesion.py).
    """
    return render(
        rng,
        rows,
        cols,
        view=view,
        density=density,
        cancer=cancer,
        faces_right=faces_right,
        implant=implant,
        oddity_rate=oddity_rate,
    ).image


@dataclass(frozen=True)
class Rendering:
    image: FloatImage  # (rows, cols) in [0, 1]
    oracle: float  # the known-signal observer's statistic (mammo/synth/lesion.py)


def render(
    rng: np.random.Generator,
    rows: int,
    cols: int,
    *,
    view: str,
    density: str | None,
    cancer: bool,
    faces_right: bool,
    implant: bool = False,
    oddity_rate: float = ODDITY_RATE,
    spec: Conspicuity = EASY,
    occult: bool = False,
    decoy_rng: np.random.Generator | None = None,
) -> Rendering:
    """render_breast with lesions drawn from ``spec``, dimmed by dense tissue and in an
    ``occult`` view, and the oracle's statistic: at the planted lesions of a positive, at
    lesions drawn from ``decoy_rng`` (the same distribution, never added) for a negative."""
    if rows < 32 or cols < 32:
        raise PhantomError(f"frame {rows}x{cols} is smaller than 32x32")
    if density is not None and density not in DENSITIES:
        raise PhantomError(f"density must be one of {DENSITIES} or None, got {density!r}")
    if view not in View.__members__:
        raise PhantomError(f"view must be one of {list(View.__members__)}, got {view!r}")
    if density is None:
        density = DENSITIES[int(rng.integers(len(DENSITIES)))]
    factor = max(2.0, max(rows, cols) / WORK_MAX_SIDE)
    h, w = max(32, round(rows / factor)), max(32, round(cols / factor))

    breast = _geometry(rng, h, w, View(view))
    bright_background = rng.random() < oddity_rate
    background = rng.uniform(0.12, 0.22) if bright_background else rng.uniform(0.0, 0.03)
    img = _tissue(rng, breast, density, implant, background)
    if (h, w) != (rows, cols):
        # (h, w) -> (rows, cols), float32
        img = np.asarray(cv2.resize(img, (cols, rows), interpolation=cv2.INTER_LINEAR), np.float32)
    candidates = np.flatnonzero((breast.rho < 0.75) & (breast.pectoral < 0.1))
    if candidates.size == 0:
        candidates = np.flatnonzero(breast.rho < 1.0)
    depth = breast.depth * cols / w  # full-resolution pixels
    lesions = []
    if cancer:
        lesions = draw_lesions(rng, (rows, cols), candidates, (h, w), depth, spec)
        stamp(img, lesions, spec.visibility(density, occult))
    elif decoy_rng is not None:
        lesions = draw_lesions(decoy_rng, (rows, cols), candidates, (h, w), depth, spec)
    if rng.random() < oddity_rate:
        _add_stripes(rng, img)
    np.clip(img, 0.0, 1.0, out=img)
    oracle = matched_filter(img, lesions) if lesions else 0.0
    image = img if faces_right else np.ascontiguousarray(img[:, ::-1])
    return Rendering(image=image, oracle=oracle)


def to_stored(
    img: FloatImage, bits_stored: int, photometric: str, rng: np.random.Generator
) -> npt.NDArray[np.uint16]:
    """Map intensities in [0, 1] to stored values of (0028,0101) BitsStored bits, with noise.

    The noise is Gaussian, NOISE of the range on a full-size frame and smaller on smaller
    frames (by the square root of the pixel count, as if downsampled). MONOCHROME1
    (0028,0004) stores the inverted value: 2**BitsStored - 1 - v.
    """
    if not 8 <= bits_stored <= 16:
        raise PhantomError(f"BitsStored must be in 8..16, got {bits_stored}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PhantomError(f"photometric must be MONOCHROME1/2, got {photometric!r}")
    top = float(2**bits_stored - 1)
    values = rng.standard_normal(img.shape, dtype=np.float32)
    values *= np.float32(NOISE * min(1.0, math.sqrt(img.size / FULL_FRAME_PIXELS)))
    values += img * np.float32(SCALE)
    values += np.float32(OFFSET)
    values *= np.float32(top)
    if photometric == "MONOCHROME1":
        np.subtract(np.float32(top), values, out=values)
    np.clip(values, 0.0, top, out=values)
    return np.rint(values).astype(np.uint16)


def display_window(
    img: FloatImage, bits_stored: int, photometric: str, pairs: int = 1
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Window Center (0028,1050) and Width (0028,1051) pairs, in stored units, showing tissue.

    The first pair spans the 1st..99.5th percentile of the breast's intensities (plus 10%);
    further pairs are wider and narrower presets. Widths are at least MIN_WINDOW_WIDTH.
    The center is mirrored for MONOCHROME1, whose stored values are inverted.
    """
    if not 1 <= pairs <= len(_WINDOW_FACTORS):
        raise PhantomError(f"pairs must be in 1..{len(_WINDOW_FACTORS)}, got {pairs}")
    step = max(1, min(img.shape) // 256)
    sample = img[::step, ::step]
    tissue = sample[sample > 0.25]
    if tissue.size < 16:
        tissue = sample.ravel()
    lo, hi = np.percentile(tissue, [1.0, 99.5])
    top = float(2**bits_stored - 1)
    center = (OFFSET + SCALE * (lo + hi) / 2) * top
    if photometric == "MONOCHROME1":
        center = top - center
    width = SCALE * (hi - lo) * 1.1 * top
    widths = tuple(float(round(max(MIN_WINDOW_WIDTH, width * f))) for f in _WINDOW_FACTORS)
    return (float(round(center)),) * pairs, widths[:pairs]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> FloatImage:
    """Gaussian noise with a correlation length of about ``cell`` pixels, (h, w) float32."""
    grid = rng.standard_normal((math.ceil(h / cell) + 2, math.ceil(w / cell) + 2), dtype=np.float32)
    return np.asarray(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), np.float32)


def _geometry(rng: np.random.Generator, h: int, w: int, view: View) -> _Breast:
    mlo = view in _PECTORAL_VIEWS
    depth = rng.uniform(0.55, 0.85) * w
    cy = rng.uniform(0.5, 0.6) * h if mlo else rng.uniform(0.45, 0.55) * h
    half_height = rng.uniform(0.5, 0.6) * h if mlo else rng.uniform(0.36, 0.46) * h
    yy = np.arange(h, dtype=np.float32)[:, None]  # (h, 1)
    xx = np.arange(w, dtype=np.float32)[None, :]  # (1, w)
    u, v = xx / np.float32(depth), (yy - np.float32(cy)) / np.float32(half_height)
    theta = np.arctan2(v, u)  # (h, w)
    wobble = np.ones_like(theta)
    for k in (2, 3, 5):
        wobble += np.float32(rng.uniform(0.0, 0.03)) * np.sin(k * theta + rng.uniform(0, 6.3))
    rho = np.hypot(u, v) / wobble

    pectoral = np.zeros((h, w), dtype=np.float32)
    if mlo:
        pec_w, pec_h = rng.uniform(0.18, 0.35) * w, rng.uniform(0.3, 0.55) * h
        bow = np.float32(rng.uniform(-0.08, 0.08)) * np.sin(np.pi * np.clip(yy / pec_h, 0, 1))
        reach = xx / np.float32(pec_w) + yy / np.float32(pec_h) + bow  # < 1 inside
        pectoral = np.clip((1 - reach) * np.float32(min(pec_w, pec_h)) + 0.5, 0, 1)
    return _Breast(rho=rho.astype(np.float32), pectoral=pectoral, depth=depth)


def _tissue(
    rng: np.random.Generator, breast: _Breast, density: str, implant: bool, background: float
) -> FloatImage:
    """Display intensities at working resolution: fat, glands, skin, pectoral, background."""
    rho, (h, w) = breast.rho, breast.rho.shape
    inside_px = (1 - rho) * np.float32(breast.depth * 0.6)  # ~ distance to the skin, pixels
    edge = np.clip(inside_px + 0.5, 0, 1)
    thickness = np.sqrt(np.clip(1 - rho * rho, 0, 1))
    skin = np.exp(-np.square(inside_px / np.float32(max(0.8, 0.006 * w))))

    glands = _smooth_noise(rng, h, w, 0.09 * w) + 0.4 * _smooth_noise(rng, h, w, 0.025 * w)
    glands = (glands - glands.mean()) / (glands.std() + 1e-6)
    fibro = 1 / (1 + np.exp((_FIBRO_THRESHOLD[density] - glands) / 0.45))
    fibro *= np.clip(1.4 * thickness, 0, 1)
    fine = _smooth_noise(rng, h, w, max(1.5, 0.008 * w))
    tissue = 0.30 + 0.10 * thickness + 0.08 * skin + 0.28 * fibro + 0.025 * fine

    if implant:
        cy = float(np.argmin(rho[:, 0]))
        ax, ay = 0.35 * breast.depth, 0.3 * h
        yy = np.arange(h, dtype=np.float32)[:, None]  # (h, 1)
        xx = np.arange(w, dtype=np.float32)[None, :]  # (1, w)
        q = np.hypot((xx - np.float32(0.3 * breast.depth)) / ax, (yy - np.float32(cy)) / ay)
        shell = np.clip((1 - q) * np.float32(min(ax, ay) * 0.5), 0, 1)
        tissue = tissue * (1 - shell) + 0.93 * shell

    pectoral = breast.pectoral
    muscle = 0.52 + 0.08 * thickness + 0.03 * fine
    tissue = tissue * (1 - pectoral) + muscle * pectoral
    body = np.maximum(edge, pectoral)
    img: FloatImage = np.float32(background) + body * (tissue - np.float32(background))
    return img


def _add_stripes(rng: np.random.Generator, img: FloatImage) -> None:
    """1..3 bright full-length bands (a detector artefact seen in the real set), in place."""
    rows, cols = img.shape
    vertical = rng.random() < 0.5
    size = cols if vertical else rows
    for _ in range(int(rng.integers(1, 4))):
        width = max(1, round(rng.uniform(0.004, 0.015) * size))
        start = int(rng.integers(0, size - width))
        band = (slice(None), slice(start, start + width))
        if not vertical:
            band = (slice(start, start + width), slice(None))
        img[band] += np.float32(rng.uniform(0.15, 0.35))
