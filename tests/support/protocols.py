"""Promotion protocols for the tests' small synthetic holdouts.

The integration tests train on 40 synthetic patients, so their holdout has about 16 breasts:
the shipped protocol rightly answers "insufficient evidence" there (a test checks it). To
exercise the rest of the protocol, the tests write a protocol with evidence minimums that
such a holdout clears, and say in each test which other rule they loosen and why. Never a
protocol for a real decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SMALL_HOLDOUT: dict[str, Any] = {
    "name": "tests-small-holdout",
    "version": 1,
    "primary": {"resamples": 200},
    "evidence": {"min_breasts": 8, "min_positive_breasts": 2},
    "first_model": {"auc": 0.6},
    "subgroups": {"min_breasts": 1000, "min_positive_breasts": 1000},  # none judged
    "calibration": {"max_ece": 1.0},
}


def protocol_file(directory: Path, name: str = "protocol.yaml", **sections: Any) -> str:
    """SMALL_HOLDOUT with ``sections`` replacing whole sections, written as YAML."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump({**SMALL_HOLDOUT, **sections}, sort_keys=False))
    return str(path)
