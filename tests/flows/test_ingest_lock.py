"""A second `mammo ingest` into an OUT whose lock another owner holds is refused in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mammo import contract as c
from tasks.lock import acquire
from tasks.storage import open_store
from tests.support.data import make_raw

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def test_an_ingest_into_a_locked_out_is_refused_naming_the_owner(
    prefect_server: str, tmp_path: Path
) -> None:
    raw = make_raw(tmp_path / "raw", patients=1, seed=5)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTEST_CURRENT_TEST")}
    env.update(
        PREFECT_API_URL=prefect_server,
        MAMMO_HOME=str(tmp_path / "home"),
        MAMMO_RAY_DASHBOARD="0",
        MAMMO_INGEST_LOCK_WAIT_S="1",
    )
    holder = acquire(open_store(str(out)), expiry_s=120, wait_s=0)  # this process owns OUT
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", "ingest", "--raw", str(raw), "--out", str(out)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        holder.release()
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith("mammo ingest failed:")]
    assert f"held by pid {os.getpid()} on {socket.gethostname()}" in line
    assert "taken at " in line and "expires at " in line and "waited 1 s" in line
    assert not (out / c.PREPROCESS_CONFIG_FILE).exists()  # refused before writing anything
