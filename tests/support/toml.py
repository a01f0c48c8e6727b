"""A configuration file (docs/configuration.md) written from plain mappings, for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> str:
    """Write ``sections`` as TOML (numbers, strings, booleans and lists of them)."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            item = list(value) if isinstance(value, tuple) else value
            lines.append(f"{key} = {json.dumps(item)}")  # JSON scalars and lists are TOML
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return str(path)
