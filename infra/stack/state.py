"""The state directory's own files: its folders, the Ray token and env.sh, all private to
their owner (0700 folders, 0600 files)."""

from __future__ import annotations

import os
import secrets
import shlex
from pathlib import Path

from infra.stack.config import StackConfig


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def prepare(cfg: StackConfig) -> None:
    """Create ``STATE``, ``STATE/logs`` and ``STATE/ray``, and the Ray token if missing."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (cfg.state_dir / "logs").mkdir(exist_ok=True)
    cfg.ray_token_path.parent.mkdir(exist_ok=True, mode=0o700)
    if not cfg.ray_token_path.exists() or not cfg.ray_token_path.read_text().strip():
        _write_private(cfg.ray_token_path, secrets.token_hex(32))  # 256 bits, as Ray's own


def write_env_file(cfg: StackConfig) -> None:
    """``STATE/env.sh``: one ``export`` per client variable."""
    lines = ["# The local stack (`mammo up`). Local-only credentials: never real ones."]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in cfg.client_env().items()]
    _write_private(cfg.env_file, "\n".join(lines) + "\n")
