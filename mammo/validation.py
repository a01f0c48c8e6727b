"""The bands a data set must fall in: the settings of the Great Expectations suites.

Pure settings, so the configuration file can check them without importing Great
Expectations (tasks/validate_gx.py runs the suites).
"""

from __future__ import annotations

from dataclasses import dataclass


class InvalidValidationInput(ValueError):
    """A validation was asked for with an impossible configuration or impossible counts."""


@dataclass(frozen=True)
class ValidationConfig:
    """What the data must look like; saved with every validation report.

    ``expected_rows``/``expected_cols`` are PreprocessConfig's out_rows/out_cols.
    """

    positive_rate_band: tuple[float, float] = (0.001, 0.2)  # all-negative feeds fail
    max_quarantine_rate: float = 0.05
    expected_rows: int = 1024
    expected_cols: int = 512

    def __post_init__(self) -> None:
        low, high = self.positive_rate_band
        if not 0.0 <= low <= high <= 1.0:
            raise InvalidValidationInput(f"positive_rate_band {self.positive_rate_band}")
        if not 0.0 <= self.max_quarantine_rate <= 1.0:
            raise InvalidValidationInput(f"max_quarantine_rate {self.max_quarantine_rate}")
        if self.expected_rows < 1 or self.expected_cols < 1:
            raise InvalidValidationInput(f"image size {self.expected_rows}x{self.expected_cols}")
