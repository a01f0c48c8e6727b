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
   cluster), then rare oddities (bright stripes);
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
    microcalcification cluster inside the breast.
    """
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
    if cancer:
        _add_lesions(rng, img, breast, rows / h, cols / w)
    if rng.random() < oddity_rate:
        _add_stripes(rng, img)
    np.clip(img, 0.0, 1.0, out=img)
    return img if faces_right else np.ascontiguousarray(img[:, ::-1])


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


def _add_lesions(
    rng: np.random.Generator, img: FloatImage, breast: _Breast, sy: float, sx: float
) -> None:
    """Add a mass and/or a calcification cluster at full resolution, in place."""
    mass = rng.random() < 0.9  # a mass of 1-2 cm is the signal a small CNN learns first
    calcs = rng.random() < 0.45 or not mass
    candidates = np.flatnonzero((breast.rho < 0.75) & (breast.pectoral < 0.1))
    if candidates.size == 0:
        candidates = np.flatnonzero(breast.rho < 1.0)
    depth = breast.depth * sx  # full-resolution pixels
    for kind_is_mass in (True, False):
        if (kind_is_mass and not mass) or (not kind_is_mass and not calcs):
            continue
        y, x = np.unravel_index(int(rng.choice(candidates)), breast.rho.shape)
        cy, cx = (y + rng.random()) * sy, (x + rng.random()) * sx
        if kind_is_mass:
            _stamp_mass(rng, img, cy, cx, max(2.5, rng.uniform(0.05, 0.09) * depth))
        else:
            _stamp_calcifications(rng, img, cy, cx, depth)


def _patch(img: FloatImage, cy: float, cx: float, half: int) -> tuple[slice, slice]:
    rows, cols = img.shape
    y0, x0 = max(0, int(cy) - half), max(0, int(cx) - half)
    return slice(y0, min(rows, int(cy) + half + 1)), slice(x0, min(cols, int(cx) + half + 1))


def _stamp_mass(rng: np.random.Generator, img: FloatImage, cy: float, cx: float, r0: float) -> None:
    """A bright mass of radius ~r0 with an irregular outline and 5..11 spicules."""
    ys, xs = _patch(img, cy, cx, math.ceil(2.6 * r0) + 2)
    dy = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None] - np.float32(cy)  # (ph, 1)
    dx = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] - np.float32(cx)  # (1, pw)
    r, theta = np.hypot(dy, dx), np.arctan2(dy, dx)  # (ph, pw)
    outline = np.full_like(r, r0)
    for k in (2, 3, 4, 5):
        outline += np.float32(r0 * rng.uniform(0.0, 0.1)) * np.sin(k * theta + rng.uniform(0, 6.3))
    body = np.clip((outline - r) / np.float32(max(0.7, 0.12 * r0)) + 0.5, 0, 1)
    body *= 0.75 + 0.25 * np.sqrt(np.clip(1 - np.square(r / outline), 0, 1))
    spicules = np.zeros_like(r)
    width = max(0.6, 0.07 * r0)
    for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(5, 12))):
        length = r0 * rng.uniform(1.4, 2.5)
        along = dx * np.float32(np.cos(angle)) + dy * np.float32(np.sin(angle))
        across = dy * np.float32(np.cos(angle)) - dx * np.float32(np.sin(angle))
        line = np.exp(-np.square(across / np.float32(width))) * np.clip(1 - along / length, 0, 1)
        np.maximum(spicules, line * (along > 0), out=spicules)
    img[ys, xs] += np.float32(rng.uniform(0.4, 0.55)) * np.maximum(body, 0.6 * spicules)


def _stamp_calcifications(
    rng: np.random.Generator, img: FloatImage, cy: float, cx: float, depth: float
) -> None:
    """6..15 bright specks within a disc of a few % of the breast depth."""
    radius = max(3.0, rng.uniform(0.02, 0.035) * depth)
    sigma = max(0.55, 0.0025 * depth)
    ys, xs = _patch(img, cy, cx, math.ceil(radius + 4 * sigma))
    yy = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None]  # (ph, 1)
    xx = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :]  # (1, pw)
    specks = np.zeros((yy.shape[0], xx.shape[1]), dtype=np.float32)
    for _ in range(int(rng.integers(6, 16))):
        r, a = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        py, px = np.float32(cy + r * math.sin(a)), np.float32(cx + r * math.cos(a))
        d2 = np.square(yy - py) + np.square(xx - px)
        specks += np.float32(rng.uniform(0.4, 0.6)) * np.exp(d2 / np.float32(-2 * sigma**2))
    img[ys, xs] += specks


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
