"""Compaction flow: rewrite OUT's shards without superseded rows, under OUT's lock.

mammo compact --out OUT
"""

from __future__ import annotations

from prefect import flow

from tasks.compact import compact_shards
from tasks.lock import out_lock
from tasks.settings import Settings, default_out
from tasks.storage import absolute_uri


@flow(name="compact")
def compact(out: str = "") -> dict[str, int]:
    """Rewrite every shard that holds rows the manifest no longer names; resumable."""
    out = absolute_uri(out or default_out())
    with out_lock(out, Settings.from_env()):
        return compact_shards(out)


if __name__ == "__main__":
    from flows.cli import main

    main(["compact", *__import__("sys").argv[1:]])
