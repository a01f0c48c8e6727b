"""Compaction: rewrite shards without their superseded rows.

A shard row is superseded when the manifest no longer names it: its file changed and was
decoded again into a newer shard, or it left the CSV. Such rows only cost space and reading
time. Compaction, under the OUT lock (tasks/lock.py), takes each shard holding superseded
rows through three steps, each of which leaves OUT valid if the process is killed after it:

1. write ``<shard>-c<digest>.parquet`` with the live rows only (a staged, atomic write; the
   name depends only on the content, so a rerun writes the same file);
2. publish the manifest pointing at it (atomic);
3. delete the old shard (and move its decode-quarantine part the same way).

A rerun after a kill at any point finishes the work: rows are told live by the manifest, and
rows held twice are never both in it (finalize_ingest keeps one per image and fingerprint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task

from mammo import contract as c
from mammo.inventory import content_digest
from tasks.ingest import committed_shards
from tasks.logs import run_logger
from tasks.retry import transient_only
from tasks.storage import Store, open_store, read_parquet, write_parquet

_COMPACTED = re.compile(r"-c[0-9a-f]{8}$")  # the suffix of a compacted shard's name


@dataclass(frozen=True)
class ShardUse:
    name: str
    rows: int
    live: int

    @property
    def superseded(self) -> int:
        return self.rows - self.live


def shard_use(out: Store) -> list[ShardUse]:
    """Rows and live rows of every committed shard (live: the manifest points at it)."""
    manifest = read_parquet(out, c.MANIFEST_FILE, [c.IMAGE_ID, c.SHARD]).to_pandas()
    live = manifest[c.SHARD].value_counts()
    uses = []
    for name in committed_shards(out):
        rows = read_parquet(out, _shard(name), [c.IMAGE_ID]).num_rows
        uses.append(ShardUse(name, rows, int(live.get(_shard(name), 0))))
    return uses


def superseded_fraction(out: Store) -> float:
    """Superseded shard rows as a share of all shard rows (0 when there are none)."""
    uses = shard_use(out)
    total = sum(u.rows for u in uses)
    return sum(u.superseded for u in uses) / total if total else 0.0


def rewrite_shard(out: Store, name: str, manifest: pd.DataFrame) -> str | None:
    """Step 1: the live rows of shard ``name`` in a new shard; its name, or None if none."""
    keep = manifest.loc[manifest[c.SHARD] == _shard(name), c.IMAGE_ID]
    table = read_parquet(out, _shard(name), c.SHARD_SCHEMA.names)
    rows = table.filter(pc.is_in(table[c.IMAGE_ID], pa.array(keep.astype("int64"))))
    if rows.num_rows == 0:
        return None
    digest = content_digest(rows.select([c.IMAGE_ID, c.FINGERPRINT]).to_pandas(), "compacted")
    new = f"{_COMPACTED.sub('', name)}-c{digest[:8]}"
    write_parquet(out, _shard(new), rows.select(c.SHARD_SCHEMA.names).cast(c.SHARD_SCHEMA))
    return new


def _move_quarantine(out: Store, name: str, new: str | None) -> None:
    """Step 3 for the shard's decode-quarantine part: its rows still in quarantine.parquet
    follow the shard; the rest go."""
    part = f"{c.SHARD_QUARANTINE_DIR}/{name}.parquet"
    if not out.exists(part):
        return
    table = read_parquet(out, part)
    current = read_parquet(out, c.QUARANTINE_FILE, [c.IMAGE_ID, c.FINGERPRINT]).to_pandas()
    frame = table.to_pandas()
    keys = pd.MultiIndex.from_frame(frame[[c.IMAGE_ID, c.FINGERPRINT]].astype(str))
    wanted = pd.MultiIndex.from_frame(current.astype(str))
    kept = table.filter(pa.array(keys.isin(wanted)))
    if new is not None and kept.num_rows:
        write_parquet(out, f"{c.SHARD_QUARANTINE_DIR}/{new}.parquet", kept)
    out.delete(part)


@task(name="compact-shards", retries=1, retry_condition_fn=transient_only())
def compact_shards(data: str) -> dict[str, int]:
    """Rewrite every shard holding superseded rows; the caller holds OUT's lock."""
    logger = run_logger()
    out = open_store(data)
    before = shard_use(out)
    todo = [u for u in before if u.superseded]
    removed = rewritten = 0
    for use in todo:
        manifest = read_parquet(out, c.MANIFEST_FILE).to_pandas()  # as the last step left it
        moved = manifest[c.SHARD] == _shard(use.name)
        live = int(moved.sum())
        if live == use.rows:
            continue  # an earlier step of this run made it whole again
        new = rewrite_shard(out, use.name, manifest)
        if new == use.name:
            continue
        if live:  # step 2: the manifest names the new shard for the live rows
            manifest.loc[moved, c.SHARD] = _shard(new) if new else None
            table = pa.Table.from_pandas(manifest, schema=c.MANIFEST_SCHEMA, preserve_index=False)
            write_parquet(out, c.MANIFEST_FILE, table)
        _move_quarantine(out, use.name, new)
        out.delete(_shard(use.name))  # step 3
        removed, rewritten = removed + use.rows - live, rewritten + 1
        logger.info("Compacted %s: %d of %d rows kept", use.name, live, use.rows)
    logger.info(
        "Compaction of %s: %d superseded rows removed from %d shards", data, removed, rewritten
    )
    return {"shards_rewritten": rewritten, "rows_removed": removed, "shards": len(before)}


def _shard(name: str) -> str:
    return f"{c.SHARDS_DIR}/{name}.parquet"
