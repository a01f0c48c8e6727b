"""The nightly history under OUT/monitor/nights/: written by the nightly flow however the
night ends, read by `mammo monitor`, published as a Prefect table artifact."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext

from mammo import contract as c
from mammo.history import NightRecord, night_record, table_rows
from tasks.logs import run_logger
from tasks.storage import join_uri, open_store

LAST = 14  # nights in the artifact


@contextmanager
def night_recorder(data: str, stages: dict[str, Any]) -> Iterator[None]:
    """Record the night run inside the block however it ends (its ``stages`` as they were
    reached); a failure to record is logged and never hides the night's own outcome."""
    started, error = _now(), ""
    try:
        yield
    except BaseException as exc:
        error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:300]
        raise
    finally:
        context = FlowRunContext.get()
        run = context.flow_run if context is not None else None
        logger = run_logger()
        try:
            record = night_record(
                stages,
                started=started,
                finished=_now(),
                flow_run=run.name if run else "",
                flow_run_id=str(run.id) if run else "",
                error=error,
            )
            logger.info("Night recorded: %s", record_night(data, record))
        except Exception as exc:  # noqa: BLE001 - the record is informative
            logger.warning("could not record the night under %s: %s", data, exc)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_night(data: str, record: NightRecord) -> str:
    """Write ``record`` under ``data``; publish the last nights' table; return where."""
    stamp = record.started.replace(":", "").replace("-", "")
    name = f"{c.NIGHTS_DIR}/{stamp}-{record.flow_run_id[:8] or 'local'}.json"
    open_store(data).write_bytes(name, json.dumps(record.to_dict(), indent=2).encode())
    if FlowRunContext.get() is not None:
        create_table_artifact(
            key="nightly-history",
            table=table_rows(read_nights(data, LAST)),
            description=f"The last nights of {data} (newest first); `mammo monitor` prints it",
        )
    return join_uri(open_store(data).uri, name)


def read_nights(data: str, last: int) -> list[NightRecord]:
    """The ``last`` recorded nights under ``data``, oldest first (an unreadable record is
    skipped with a warning)."""
    store = open_store(data)
    names = sorted(f.relpath for f in store.list_files(c.NIGHTS_DIR) if f.relpath.endswith(".json"))
    records = []
    for name in names[-last:] if last > 0 else []:
        try:
            records.append(NightRecord.from_dict(json.loads(store.read_bytes(name))))
        except (ValueError, TypeError) as exc:
            logging.getLogger(__name__).warning("skipped the night record %s: %s", name, exc)
    return records
