"""Synthetic copies of each dataset layout, with every trap of the real distribution.

``write_layout(name, root, seed)`` writes the copy under ``root`` (deterministic for the
seed, a few patients, images of 80-128 pixels) and returns the :class:`Planted` truth:
the full images, the findings in top-left pixel coordinates, and the bad inputs with the
quarantine reason each must get ("" where any reason will do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from mammo.datasets.synth.cbis_ddsm import write_cbis_ddsm
from mammo.datasets.synth.cmmd import write_cmmd
from mammo.datasets.synth.common import Planted, PlantedFinding, PlantedImage
from mammo.datasets.synth.inbreast import write_inbreast
from mammo.datasets.synth.mias import write_mias
from mammo.datasets.synth.rsna import write_rsna
from mammo.datasets.synth.vindr import write_vindr

WRITERS: Mapping[str, Callable[[Path, int], Planted]] = {
    "rsna": write_rsna,
    "cbis-ddsm": write_cbis_ddsm,
    "vindr": write_vindr,
    "mias": write_mias,
    "inbreast": write_inbreast,
    "cmmd": write_cmmd,
}


class LayoutError(ValueError):
    """A layout name without a synthetic writer."""


def write_layout(name: str, root: Path, seed: int = 0) -> Planted:
    if name not in WRITERS:
        raise LayoutError(f"unknown layout {name!r}; known: {', '.join(sorted(WRITERS))}")
    return WRITERS[name](Path(root), seed)


__all__ = ["WRITERS", "LayoutError", "Planted", "PlantedFinding", "PlantedImage", "write_layout"]
