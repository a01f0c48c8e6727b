"""Resampling units (breasts or patients) with replacement, for bootstrap intervals.

A unit is a code 0..G-1 given to each row (for example the patient of each breast); a draw
picks G units with replacement and returns the row indices of all their rows, so a patient
drawn twice contributes both breasts twice. Resample patients, never images or breasts of
one patient separately: the breasts of a patient are correlated.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class UnitSampler:
    """Draws units (codes 0..G-1 over the rows) with replacement and returns their rows."""

    def __init__(self, codes: npt.NDArray[np.intp]) -> None:
        self.order = np.argsort(codes, kind="stable")  # rows grouped by unit
        self.counts = np.bincount(codes)  # (G,) rows per unit
        self.starts = np.cumsum(self.counts) - self.counts  # (G,) first position in order
        self.n_units = len(self.counts)

    def draw(self, rng: np.random.Generator) -> npt.NDArray[np.intp]:
        picked = rng.integers(0, self.n_units, size=self.n_units)
        lengths = self.counts[picked]
        # position j of the output belongs to picked unit k: start[k] + (j - first j of k)
        offset_in_unit = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows: npt.NDArray[np.intp] = self.order[
            np.repeat(self.starts[picked], lengths) + offset_in_unit
        ]
        return rows
