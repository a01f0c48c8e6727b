"""A configuration file (docs/configuration.md) written from plain mappings, for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mammo.config import dump_config


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> str:
    """Write ``sections`` as TOML (mammo.config.dump_config), unchecked: a test may want a
    file the project refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(sections))
    return str(path)
