"""Planted lesions and how conspicuous they are: the signal a model has to find.

A :class:`Conspicuity` holds the distributions one image's lesions are drawn from: how often
a positive carries a mass and/or a calcification cluster, the mass's contrast, size and
spicule count, the cluster's speck count and brightness, how much dense tissue (BI-RADS
density C, D) dims the signal, and how often a positive breast's lesion shows in only one of
its views. ``DIFFICULTIES`` names the presets of ``mammo synth --difficulty``: ``easy`` (the
conspicuous lesions every quick test uses; the draws are exactly those of earlier versions,
so easy sets are byte-identical to them) and ``realistic`` (calibrated so that the oracle of
``mammo/oracle.py`` reaches a breast-level AUC of about 0.85-0.90).

``draw_lesions`` returns each lesion as its template (an additive intensity patch, before
visibility and masking) with its place in the frame; the phantom adds ``visibility`` times it
to a positive's image, and the oracle correlates the final image with it (``matched_filter``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mammo.synth import DIFFICULTY_NAMES

FloatImage = npt.NDArray[np.float32]
Range = tuple[float, float]


@dataclass(frozen=True)
class Conspicuity:
    """Distributions of one image's lesions; ranges are uniform [low, high)."""

    mass_rate: float = 0.9  # P(a mass); a positive without one always has calcifications
    calc_rate: float = 0.45  # P(calcifications) besides a mass
    mass_contrast: Range = (0.4, 0.55)  # peak intensity added, display units in [0, 1]
    mass_radius: Range = (0.05, 0.09)  # fraction of the breast's depth
    spicules: tuple[int, int] = (5, 12)  # [low, high) integer count
    calc_count: tuple[int, int] = (6, 16)
    calc_brightness: Range = (0.4, 0.6)
    # contrast factor by BI-RADS density letter: dense tissue hides lesions
    dense_masking: Mapping[str, float] = field(default_factory=dict)
    one_view_rate: float = 0.0  # P(a positive breast's lesion is occult in one of its views)
    occult_visibility: float = 0.0  # the occult view's share of the contrast

    def visibility(self, density: str | None, occult: bool) -> float:
        """The share of a template's contrast that reaches the image."""
        factor = self.dense_masking.get(density or "", 1.0)
        return factor * (self.occult_visibility if occult else 1.0)


EASY = Conspicuity()
REALISTIC = Conspicuity(
    mass_rate=0.75,
    calc_rate=0.3,
    mass_contrast=(0.05, 0.22),
    mass_radius=(0.03, 0.07),
    spicules=(3, 10),
    calc_count=(3, 10),
    calc_brightness=(0.12, 0.42),
    dense_masking={"A": 1.0, "B": 0.9, "C": 0.7, "D": 0.55},
    one_view_rate=0.2,
    occult_visibility=0.15,
)
DIFFICULTIES: Mapping[str, Conspicuity] = dict(
    zip(DIFFICULTY_NAMES, (EASY, REALISTIC), strict=True)
)


class DifficultyError(ValueError):
    """A difficulty name that is not a preset."""


def conspicuity(difficulty: str) -> Conspicuity:
    try:
        return DIFFICULTIES[difficulty]
    except KeyError:
        raise DifficultyError(
            f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}"
        ) from None


@dataclass(frozen=True)
class Lesion:
    """One planted lesion: its template and where it goes in the frame."""

    kind: str  # "mass" or "calcifications"
    rows: slice
    cols: slice
    template: FloatImage  # (rows, cols) additive intensities at full contrast


def draw_lesions(
    rng: np.random.Generator,
    shape: tuple[int, int],
    candidates: npt.NDArray[np.int64],
    work_shape: tuple[int, int],
    depth: float,
    spec: Conspicuity,
) -> list[Lesion]:
    """A mass and/or a calcification cluster for a frame of ``shape``.

    ``candidates`` are flat indices, at working resolution ``work_shape``, where a lesion may
    be centred; ``depth`` is the breast's depth in full-resolution pixels. Draw order: the
    mass coin, the calcification coin, then per lesion its centre and its template.
    """
    mass = rng.random() < spec.mass_rate
    calcs = rng.random() < spec.calc_rate or not mass
    sy, sx = shape[0] / work_shape[0], shape[1] / work_shape[1]
    lesions = []
    for kind_is_mass in (True, False):
        if (kind_is_mass and not mass) or (not kind_is_mass and not calcs):
            continue
        y, x = np.unravel_index(int(rng.choice(candidates)), work_shape)
        cy, cx = (y + rng.random()) * sy, (x + rng.random()) * sx
        if kind_is_mass:
            radius = max(2.5, rng.uniform(*spec.mass_radius) * depth)
            lesions.append(_mass(rng, shape, cy, cx, radius, spec))
        else:
            lesions.append(_calcifications(rng, shape, cy, cx, depth, spec))
    return lesions


def stamp(img: FloatImage, lesions: Sequence[Lesion], visibility: float = 1.0) -> None:
    """Add each lesion's template, times ``visibility``, to ``img`` in place."""
    for lesion in lesions:  # times 1.0 is exact: easy sets keep their bytes
        img[lesion.rows, lesion.cols] += np.float32(visibility) * lesion.template


def matched_filter(img: FloatImage, lesions: Sequence[Lesion]) -> float:
    """The known-signal observer's statistic: the image's inner product with the zero-mean
    templates over their patches, divided by the templates' norm. A lesion of contrast a
    adds a times the norm; the tissue around it adds its own correlation with the shape."""
    num, norm2 = 0.0, 0.0
    for lesion in lesions:
        t = lesion.template.astype(np.float64)
        t -= t.mean()
        num += float(np.sum(img[lesion.rows, lesion.cols] * t))
        norm2 += float(np.sum(t * t))
    return num / math.sqrt(norm2) if norm2 > 0 else 0.0


def _patch(shape: tuple[int, int], cy: float, cx: float, half: int) -> tuple[slice, slice]:
    rows, cols = shape
    y0, x0 = max(0, int(cy) - half), max(0, int(cx) - half)
    return slice(y0, min(rows, int(cy) + half + 1)), slice(x0, min(cols, int(cx) + half + 1))


def _mass(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cy: float,
    cx: float,
    r0: float,
    spec: Conspicuity,
) -> Lesion:
    """A bright mass of radius ~r0 with an irregular outline and spicules."""
    ys, xs = _patch(shape, cy, cx, math.ceil(2.6 * r0) + 2)
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
    for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(*spec.spicules))):
        length = r0 * rng.uniform(1.4, 2.5)
        along = dx * np.float32(np.cos(angle)) + dy * np.float32(np.sin(angle))
        across = dy * np.float32(np.cos(angle)) - dx * np.float32(np.sin(angle))
        line = np.exp(-np.square(across / np.float32(width))) * np.clip(1 - along / length, 0, 1)
        np.maximum(spicules, line * (along > 0), out=spicules)
    contrast = np.float32(rng.uniform(*spec.mass_contrast))
    template = (contrast * np.maximum(body, 0.6 * spicules)).astype(np.float32)
    return Lesion("mass", ys, xs, template)


def _calcifications(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cy: float,
    cx: float,
    depth: float,
    spec: Conspicuity,
) -> Lesion:
    """Bright specks within a disc of a few % of the breast depth."""
    radius = max(3.0, rng.uniform(0.02, 0.035) * depth)
    sigma = max(0.55, 0.0025 * depth)
    ys, xs = _patch(shape, cy, cx, math.ceil(radius + 4 * sigma))
    yy = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None]  # (ph, 1)
    xx = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :]  # (1, pw)
    specks = np.zeros((yy.shape[0], xx.shape[1]), dtype=np.float32)
    for _ in range(int(rng.integers(*spec.calc_count))):
        r, a = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        py, px = np.float32(cy + r * math.sin(a)), np.float32(cx + r * math.cos(a))
        d2 = np.square(yy - py) + np.square(xx - px)
        specks += np.float32(rng.uniform(*spec.calc_brightness)) * np.exp(
            d2 / np.float32(-2 * sigma**2)
        )
    return Lesion("calcifications", ys, xs, specks)
