"""Compaction on a real ingest output: superseded rows go, nothing live is lost, a kill at
any step is finished by the next run (real Prefect server and Ray cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows.compact import compact
from flows.ingest import ingest
from mammo import contract as c
from tasks.compact import rewrite_shard, superseded_fraction
from tasks.storage import open_store
from tests.support.data import copy_raw, make_raw

pytestmark = [pytest.mark.integration]


def shard_rows(out: Path) -> pd.DataFrame:
    frames = [
        pq.read_table(p, columns=[c.IMAGE_ID, c.FINGERPRINT]).to_pandas().assign(shard=p.name)
        for p in sorted((out / c.SHARDS_DIR).glob("*.parquet"))
    ]
    return pd.concat(frames, ignore_index=True)


def assert_consistent(out: Path) -> None:
    """Every shard row is in the manifest once, every manifest row in its named shard."""
    manifest = pd.read_parquet(out / c.MANIFEST_FILE)
    rows = shard_rows(out)
    assert len(rows) == len(manifest) and not rows[c.IMAGE_ID].duplicated().any()
    named = manifest.set_index(c.IMAGE_ID)[c.SHARD]
    for image_id, shard in zip(rows[c.IMAGE_ID], rows["shard"], strict=True):
        assert named[image_id] == f"{c.SHARDS_DIR}/{shard}"


@pytest.fixture
def superseded(
    prefect_server: str, ray_cluster: dict[str, object], tmp_path: Path
) -> tuple[Path, Path]:
    """An OUT where 4 images were decoded again after their files changed."""
    raw = copy_raw(make_raw(tmp_path / "source", patients=3, seed=5), tmp_path / "raw")
    out = tmp_path / "out"
    ingest(raw=str(raw), out=str(out), shard_size=4)
    for path in sorted((raw / c.images_dir(c.Subset.TRAIN)).rglob("*.dcm"))[:4]:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    again = ingest(raw=str(raw), out=str(out), shard_size=4)
    assert again["decoded_this_run"] == 4
    return raw, out


def test_compaction_removes_superseded_rows_and_keeps_every_live_one(
    superseded: tuple[Path, Path],
) -> None:
    raw, out = superseded
    before = pd.read_parquet(out / c.MANIFEST_FILE)
    assert superseded_fraction(open_store(str(out))) == pytest.approx(4 / (len(before) + 4))
    done = compact(out=str(out))
    assert done["rows_removed"] == 4
    assert superseded_fraction(open_store(str(out))) == 0.0
    assert_consistent(out)
    after = pd.read_parquet(out / c.MANIFEST_FILE)
    keep = [col for col in after.columns if col != c.SHARD]
    pd.testing.assert_frame_equal(after[keep], before[keep])
    assert compact(out=str(out))["shards_rewritten"] == 0  # nothing left to do
    rerun = ingest(raw=str(raw), out=str(out), shard_size=4)  # still recognised as done
    assert rerun["decoded_this_run"] == 0


def test_a_compaction_killed_between_its_steps_is_finished_by_mammo_compact(
    superseded: tuple[Path, Path], prefect_server: str
) -> None:
    _, out = superseded
    store = open_store(str(out))
    manifest = pd.read_parquet(out / c.MANIFEST_FILE)
    counts = shard_rows(out)["shard"].value_counts()
    live = manifest[c.SHARD].str.removeprefix(f"{c.SHARDS_DIR}/").value_counts()
    partial = [name for name in counts.index if live.get(name, 0) < counts[name]]
    # killed after step 1: the new shard is written, the manifest still names the old one
    assert rewrite_shard(store, partial[0].removesuffix(".parquet"), manifest) is not None
    done = subprocess.run(  # the next run, as a user types it
        [str(Path(sys.executable).parent / "mammo"), "compact", "--out", str(out)],
        env={**os.environ, "PREFECT_API_URL": prefect_server},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "superseded rows removed" in done.stdout
    assert_consistent(out)
